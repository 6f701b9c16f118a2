/** prefixSlice: a column block of Z broadcast over a batch, against the float64 reference and finite differences. */
import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { prefixSlice, prefixSliceCpu } from '../../src/engine/ops/prefix_slice';
import wgsl from '../../shaders/prefix_slice.wgsl?raw';

describe('prefixSlice', () => {
  it('prefix_slice.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'prefix_slice.wgsl');
  });

  // [R, F], offset, width, batch: odd sizes, first / middle / last block, batch 1 and > 1.
  const cases: [number, number, number, number, number][] = [
    [1, 5, 0, 5, 1],
    [3, 20, 0, 5, 2],
    [5, 21, 7, 7, 3],
    [7, 30, 24, 6, 1],
    [2, 300, 257, 43, 2],
  ];
  for (const [R, F, offset, width, batch] of cases) {
    it(`Z [${R}, ${F}], columns ${offset}+${width}, batch ${batch}`, async () => {
      const e = await gpuEngine();
      const r = rng(R * F + offset + batch);
      await checkOp(e, {
        name: 'prefixSlice',
        inputs: [{ name: 'z', shape: [R, F], data: randn(R * F, r), grad: true }],
        gpu: (e, [z]) => prefixSlice(e, z, { offset, width, batch }),
        cpu: ([z]) => prefixSliceCpu(z, R, F, { offset, width, batch }),
        samples: 12,
      });
    });
  }

  it('rejects a block outside the matrix', async () => {
    const e = await gpuEngine();
    const z = e.upload(new Float32Array(12), [3, 4]);
    expect(() => prefixSlice(e, z, { offset: 2, width: 3, batch: 1 })).toThrow(/outside 0..4/);
    z.dispose();
  });
});
