/** LayerNorm (weight + bias) against the float64 reference and finite differences, on odd sizes and both kernel variants. */
import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { layernorm, layernormCpu } from '../../src/engine/ops/layernorm';
import { Tape } from '../../src/engine/tape';
import wgsl from '../../shaders/layernorm.wgsl?raw';

describe('layernorm', () => {
  it('layernorm.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'layernorm.wgsl');
  });

  // [rows, C]: one channel (output = bias), odd C, C above the row-thread limit
  // (workgroup kernels), and enough rows for the two-kernel dw/db reduction.
  const shapes: [number, number][] = [
    [1, 1],
    [3, 7],
    [5, 33],
    [2, 300],
    [37, 19],
    [70, 12],
    [40, 260],
  ];
  for (const [rows, C] of shapes) {
    it(`rows ${rows} C ${C}`, async () => {
      const e = await gpuEngine();
      const r = rng(rows * 31 + C);
      // An offset mean tests the two-pass variance.
      const x = randn(rows * C, r).map((v) => v * 2 + 3);
      await checkOp(e, {
        name: 'layernorm',
        inputs: [
          { name: 'x', shape: [rows, C], data: x, grad: true },
          { name: 'w', shape: [C], data: randn(C, r, 0.5).map((v) => v + 1), grad: true },
          { name: 'b', shape: [C], data: randn(C, r, 0.5), grad: true },
        ],
        gpu: (e, [x, w, b]) => layernorm(e, x, w, b),
        cpu: ([x, w, b]) => layernormCpu(x, w, b, rows, C),
        samples: 10,
      });
    });
  }

  it('3-D input, custom eps', async () => {
    const e = await gpuEngine();
    const r = rng(5);
    const [B, T, C] = [2, 3, 10];
    await checkOp(e, {
      name: 'layernorm 3d',
      inputs: [
        { name: 'x', shape: [B, T, C], data: randn(B * T * C, r), grad: true },
        { name: 'w', shape: [C], data: randn(C, r), grad: true },
        { name: 'b', shape: [C], data: randn(C, r), grad: true },
      ],
      gpu: (e, [x, w, b]) => layernorm(e, x, w, b, 1e-3),
      cpu: ([x, w, b]) => layernormCpu(x, w, b, B * T, C, 1e-3),
      samples: 8,
    });
  });

  it('frozen weight and bias: dx only; with trainable ones, dw and db are deterministic', async () => {
    const e = await gpuEngine();
    const [rows, C] = [70, 12];
    const xd = randn(rows * C, rng(1));
    const run = async (paramGrad: boolean) => {
      e.beginScope();
      const x = e.upload(xd, [rows, C]);
      const w = e.upload(randn(C, rng(2)), [C]);
      const b = e.upload(randn(C, rng(3)), [C]);
      x.requiresGrad = true;
      w.requiresGrad = b.requiresGrad = paramGrad;
      const tape = new Tape();
      e.tape = tape;
      const y = layernorm(e, x, w, b);
      e.tape = null;
      tape.backward(y, randn(rows * C, rng(4)));
      const out = { dx: await e.read(x.grad!), dw: w.grad ? await e.read(w.grad) : null, db: b.grad ? await e.read(b.grad) : null };
      e.endScope();
      return out;
    };
    const frozen = await run(false);
    expect(frozen.dw).toBeNull();
    expect(frozen.db).toBeNull();
    const a = await run(true),
      b = await run(true);
    expect(Array.from(a.dx)).toEqual(Array.from(frozen.dx));
    expect(Array.from(a.dw!)).toEqual(Array.from(b.dw!));
    expect(Array.from(a.db!)).toEqual(Array.from(b.db!));
  });
});
