import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { rmsnorm, rmsnormCpu } from '../../src/engine/ops/rmsnorm';
import { Tape } from '../../src/engine/tape';
import wgsl from '../../shaders/rmsnorm.wgsl?raw';

describe('rmsnorm', () => {
  it('rmsnorm.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'rmsnorm.wgsl');
  });

  // [rows, C]: size 1, odd C, C below / above / not a multiple of the workgroup,
  // and enough rows for the chunked (two-kernel) dw reduction.
  const shapes: [number, number][] = [
    [1, 1],
    [1, 7],
    [3, 64],
    [5, 33],
    [2, 300],
    [37, 19],
    [130, 8],
    [9, 4],
    [70, 260],
  ];
  for (const [rows, C] of shapes) {
    it(`rows ${rows} C ${C}`, async () => {
      const e = await gpuEngine();
      const r = rng(rows * 1000 + C);
      const eps = 1e-5;
      await checkOp(e, {
        name: 'rmsnorm',
        inputs: [
          { name: 'x', shape: [rows, C], data: randn(rows * C, r), grad: true },
          { name: 'w', shape: [C], data: randn(C, r, 0.5).map((v) => v + 1), grad: true },
        ],
        gpu: (e, [x, w]) => rmsnorm(e, x, w, eps),
        cpu: ([x, w]) => rmsnormCpu(x, w, rows, C, eps),
        samples: 10,
      });
    });
  }

  it('3-D input [B, T, C]', async () => {
    const e = await gpuEngine();
    const r = rng(77);
    const [B, T, C] = [2, 3, 10];
    await checkOp(e, {
      name: 'rmsnorm 3d',
      inputs: [
        { name: 'x', shape: [B, T, C], data: randn(B * T * C, r), grad: true },
        { name: 'w', shape: [C], data: randn(C, r), grad: true },
      ],
      gpu: (e, [x, w]) => rmsnorm(e, x, w, 1e-6),
      cpu: ([x, w]) => rmsnormCpu(x, w, B * T, C, 1e-6),
      samples: 8,
    });
  });

  it('frozen weight: dx only, one dispatch; dw is deterministic', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const [rows, C] = [70, 12];
    const xd = randn(rows * C, rng(5));
    const run = async (wGrad: boolean) => {
      const x = e.upload(xd, [rows, C]);
      const w = e.upload(randn(C, rng(6)), [C]);
      x.requiresGrad = true;
      w.requiresGrad = wGrad;
      const tape = new Tape();
      e.tape = tape;
      const y = rmsnorm(e, x, w, 1e-5);
      e.tape = null;
      const before = e.dispatchCount;
      tape.backward(y, randn(rows * C, rng(7)));
      return { dispatches: e.dispatchCount - before, dw: w.grad ? await e.read(w.grad) : null };
    };
    const frozen = await run(false);
    expect(frozen.dispatches).toBe(1);
    expect(frozen.dw).toBeNull();
    const a = await run(true);
    const b = await run(true);
    expect(Array.from(a.dw!)).toEqual(Array.from(b.dw!));
    e.endScope();
  });
});
