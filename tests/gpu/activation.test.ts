/** Activations and elementwise products against float64 references and finite differences. */
import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { ACTIVATIONS, activation, activationCpu, activationKind } from '../../src/engine/ops/activation';
import { mul, mulCpu, mulVec, mulVecCpu } from '../../src/engine/ops/mul';

describe('activation', () => {
  for (const name of ACTIVATIONS) {
    it(`${name}: forward and gradient (odd size, wide range)`, async () => {
      const e = await gpuEngine();
      const r = rng(11);
      // Spread inputs over [-6, 6], away from relu's kink at 0 (finite differences straddle it otherwise).
      const x = randn(517, r, 2.5).map((v) => (Math.abs(v) < 0.05 ? v + 0.1 : v));
      await checkOp(e, {
        name,
        inputs: [{ name: 'x', shape: [11, 47], data: x, grad: true }],
        gpu: (e, [t]) => activation(e, t, name),
        cpu: ([t]) => activationCpu(t, name),
        atol: 2e-6,
      });
    });
  }

  it('large inputs do not overflow (tanh, sigmoid, silu at ±80)', async () => {
    const e = await gpuEngine();
    for (const name of ['tanh', 'sigmoid', 'silu', 'gelu', 'gelu_new']) {
      const x = e.upload(Float32Array.from([-80, -20, 20, 80]), [4]);
      const y = await e.read(activation(e, x, name));
      const want = activationCpu([-80, -20, 20, 80], name);
      for (let i = 0; i < 4; i++) expect(y[i]).toBeCloseTo(want[i], 4);
    }
  });

  it('names: swish is silu; unknown names are rejected with the list', () => {
    expect(activationKind('swish')).toBe('silu');
    expect(() => activationKind('softplus')).toThrow(/relu, tanh/);
  });
});

describe('mul and mulVec', () => {
  it('mul: forward and gradients of both inputs', async () => {
    const e = await gpuEngine();
    const r = rng(5);
    await checkOp(e, {
      name: 'mul',
      inputs: [
        { name: 'a', shape: [7, 13], data: randn(91, r), grad: true },
        { name: 'b', shape: [7, 13], data: randn(91, r), grad: true },
      ],
      gpu: (e, [a, b]) => mul(e, a, b),
      cpu: ([a, b]) => mulCpu(a, b),
    });
  });

  it('mulVec: forward and gradients of x and the broadcast vector', async () => {
    const e = await gpuEngine();
    const r = rng(6);
    await checkOp(e, {
      name: 'mulVec',
      inputs: [
        { name: 'x', shape: [3, 5, 19], data: randn(285, r), grad: true },
        { name: 'v', shape: [19], data: randn(19, r), grad: true },
      ],
      gpu: (e, [x, v]) => mulVec(e, x, v),
      cpu: ([x, v]) => mulVecCpu(x, v),
    });
  });
});
