import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { swiglu, swigluCpu } from '../../src/engine/ops/swiglu';
import { Tape } from '../../src/engine/tape';
import wgsl from '../../shaders/swiglu.wgsl?raw';

describe('swiglu', () => {
  it('swiglu.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'swiglu.wgsl');
  });

  const shapes: number[][] = [[1], [5], [3, 7], [256], [2, 257], [4, 3, 41]];
  for (const shape of shapes) {
    it(`[${shape}]`, async () => {
      const e = await gpuEngine();
      const n = shape.reduce((a, b) => a * b, 1);
      const r = rng(n * 3 + 1);
      await checkOp(e, {
        name: 'swiglu',
        inputs: [
          { name: 'gate', shape, data: randn(n, r, 2), grad: true },
          { name: 'up', shape, data: randn(n, r), grad: true },
        ],
        gpu: (e, [g, u]) => swiglu(e, g, u),
        cpu: ([g, u]) => swigluCpu(g, u),
        samples: 10,
      });
    });
  }

  it('large |gate| stays finite and exact', async () => {
    const e = await gpuEngine();
    const g = Float32Array.from([-1e4, -200, -90, -30, -10, 0, 10, 30, 90, 200, 1e4, -0.5]);
    const u = Float32Array.from(g, (_, i) => 0.5 + 0.1 * i);
    await checkOp(e, {
      name: 'swiglu extreme',
      inputs: [
        { name: 'gate', shape: [g.length], data: g, grad: true },
        { name: 'up', shape: [g.length], data: u, grad: true },
      ],
      gpu: (e, [g, u]) => swiglu(e, g, u),
      cpu: ([g, u]) => swigluCpu(g, u),
      samples: g.length,
    });
  });

  it('one frozen input: one single-output dispatch; gate === up sums both paths', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const gd = randn(9, rng(2));
    const g = e.upload(gd, [9]);
    const u = e.upload(randn(9, rng(3)), [9]);
    g.requiresGrad = true;
    let tape = new Tape();
    e.tape = tape;
    let y = swiglu(e, g, u);
    e.tape = null;
    const before = e.dispatchCount;
    tape.backward(y);
    expect(e.dispatchCount - before).toBe(1);
    expect(u.grad).toBeNull();

    // y = silu(x) x  =>  dy/dx = silu(x) + x silu'(x)
    const x = e.upload(gd, [9]);
    x.requiresGrad = true;
    tape = new Tape();
    e.tape = tape;
    y = swiglu(e, x, x);
    e.tape = null;
    tape.backward(y);
    const dx = await e.read(x.grad!);
    gd.forEach((v, i) => {
      const s = 1 / (1 + Math.exp(-v));
      expect(dx[i]).toBeCloseTo(v * s + v * s * (1 + v * (1 - s)), 5);
    });
    e.endScope();
  });
});
