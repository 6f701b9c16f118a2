/**
 * The packed-B matmul against the f32 one on the same shapes, interleaved so
 * that load on a shared machine hits both alike: x Wᵀ (a linear's forward,
 * TB = 1) and dY W (its dX, TB = 0), for stories260K's and SmolLM2-135M's
 * linear shapes. Prints ms per call (median of rounds).
 *
 *   npx vitest run -c bench/vitest.bench.config.ts bench/packed-matmul
 */
import { test } from 'vitest';
import { acquireDevice } from '../src/gpu/device';
import { nodeGpu } from '../src/gpu/node';
import { Engine } from '../src/engine/engine';
import { matmulKernel } from '../src/engine/ops/matmul';
import { roundToHalves } from '../src/engine/ops/packed';

test('packed vs f32 B operand, ms per call', async () => {
  const e = new Engine(await acquireDevice(nodeGpu(), { timestamps: false }));
  const out: Record<string, { f32: number; bf16: number; f16: number }> = {};
  for (const [M, N, K] of [
    [512, 64, 64],
    [512, 172, 64],
    [512, 64, 172],
    [512, 512, 64],
    [256, 1536, 576],
  ]) {
    const W = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i));
    const Wf = e.persist(e.upload(W, [N, K]));
    const Wb = e.persist(e.uploadPacked(roundToHalves(W, 'bf16'), [N, K], 'bf16'));
    const Wh = e.persist(e.uploadPacked(roundToHalves(W, 'f16'), [N, K], 'f16'));
    const X = e.persist(
      e.upload(
        Float32Array.from({ length: M * Math.max(N, K) }, (_, i) => Math.cos(i)),
        [M * Math.max(N, K)],
      ),
    );
    const Y = e.persist(e.empty([M * Math.max(N, K)]));
    for (const layout of ['x·Wᵀ', 'dY·W'] as const) {
      const t: Record<string, number[]> = { f32: [], bf16: [], f16: [] };
      const call = (B: typeof Wf) => (layout === 'x·Wᵀ' ? matmulKernel(e, Y, X, B, M, N, K, { transB: true }) : matmulKernel(e, Y, X, B, M, K, N, {}));
      for (const B of [Wf, Wb, Wh]) {
        call(B);
        await e.sync();
      }
      for (let r = 0; r < 7; r++) {
        for (const [k, B] of [
          ['f32', Wf],
          ['bf16', Wb],
          ['f16', Wh],
        ] as const) {
          const t0 = performance.now();
          for (let i = 0; i < 5; i++) call(B);
          await e.sync();
          t[k].push((performance.now() - t0) / 5);
        }
      }
      const med = (a: number[]) => +a.sort((x, y) => x - y)[a.length >> 1].toFixed(2);
      out[`${layout} M${M} N${N} K${K}`] = { f32: med(t.f32), bf16: med(t.bf16), f16: med(t.f16) };
    }
  }
  console.log(JSON.stringify(out, null, 1));
});
