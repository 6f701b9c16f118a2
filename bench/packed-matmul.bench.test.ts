/**
 * The packed-B matmul against the f32 one on the same shapes, interleaved so
 * that load on a shared machine hits both alike: x Wᵀ (a linear's forward,
 * TB = 1) and dY W (its dX, TB = 0), for stories260K's and SmolLM2-135M's
 * linear shapes, through the default kernel (v4). Then each kernel the
 * autotuner chooses among for a packed B (v4, v5, v6), f32 / bf16 / f16, on
 * SmolLM2-135M's q_proj (576 x 576) and Llama-3.2-1B's up_proj (8192 x 2048).
 * Prints ms per call (median of rounds). On SwiftShader these times say
 * nothing about a real GPU (v5's workgroup memory and v6's shuffles are
 * emulated on the CPU); run it there to see them. The per-kernel test takes
 * ~25 min on SwiftShader (the 1B shape's v6 calls take ~20 s each).
 *
 *   npx vitest run -c bench/vitest.bench.config.ts bench/packed-matmul
 */
import { test } from 'vitest';
import { acquireDevice } from '../src/gpu/device';
import { nodeGpu } from '../src/gpu/node';
import { Engine } from '../src/engine/engine';
import { matmulKernel, matmulVariants, type MatmulVariant } from '../src/engine/ops/matmul';
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

test('per kernel (v4, v5, v6): packed vs f32 B operand, ms per call', async () => {
  const e = new Engine(await acquireDevice(nodeGpu(), { timestamps: false }));
  const out: Record<string, Record<string, number>> = {};
  for (const [name, M, N, K] of [
    ['smollm2 q_proj', 256, 576, 576],
    ['llama3.2-1b up_proj', 64, 8192, 2048],
  ] as const) {
    e.beginScope();
    const W = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i));
    const Bs = {
      f32: e.upload(W, [N, K]),
      bf16: e.uploadPacked(roundToHalves(W, 'bf16'), [N, K], 'bf16'),
      f16: e.uploadPacked(roundToHalves(W, 'f16'), [N, K], 'f16'),
    };
    const X = e.upload(
      Float32Array.from({ length: M * Math.max(N, K) }, (_, i) => Math.cos(i)),
      [M * Math.max(N, K)],
    );
    const Y = e.empty([M * Math.max(N, K)]);
    for (const layout of ['x·Wᵀ', 'dY·W'] as const) {
      const o = layout === 'x·Wᵀ' ? { transB: true } : {};
      const [m, n, k] = layout === 'x·Wᵀ' ? [M, N, K] : [M, K, N];
      const variants = matmulVariants(e, m, n, k, o, 'bf16');
      const row: Record<string, number> = {};
      for (const variant of variants as MatmulVariant[]) {
        const t: Record<string, number[]> = { f32: [], bf16: [], f16: [] };
        const call = (B: (typeof Bs)['f32']) => matmulKernel(e, Y, X, B, m, n, k, { ...o, variant });
        let once = 0;
        for (const B of Object.values(Bs)) {
          call(B);
          await e.sync();
          const t0 = performance.now();
          call(B);
          await e.sync();
          once = Math.max(once, performance.now() - t0);
        }
        const calls = Math.max(1, Math.min(5, Math.floor(300 / once)));
        for (let r = 0; r < 5; r++) {
          for (const [dt, B] of Object.entries(Bs)) {
            const t0 = performance.now();
            for (let i = 0; i < calls; i++) call(B);
            await e.sync();
            t[dt].push((performance.now() - t0) / calls);
          }
        }
        const med = (a: number[]) => +a.sort((x, y) => x - y)[a.length >> 1].toFixed(2);
        for (const dt of Object.keys(t)) row[`${variant} ${dt}`] = med(t[dt]);
      }
      out[`${layout} ${name} M${m} N${n} K${k}`] = row;
      console.log(layout, name, JSON.stringify(row));
    }
    e.endScope();
  }
  console.log(JSON.stringify(out, null, 1));
});

/**
 * Decoding shapes (few rows of x Wᵀ): gemv against v4, f32 and bf16 B, for a
 * 32k-vocabulary head on C 256 and Llama-3.2-1B's q_proj (2048 x 2048) and
 * up_proj (8192 x 2048), M = 1, 4 and 8. ms per call, median of 5 rounds.
 */
test('decoding: gemv vs v4, ms per call', async () => {
  const e = new Engine(await acquireDevice(nodeGpu(), { timestamps: false }));
  const out: Record<string, Record<string, number>> = {};
  for (const [name, N, K] of [
    ['32k head', 32000, 256],
    ['1b q_proj', 2048, 2048],
    ['1b up_proj', 8192, 2048],
  ] as const) {
    e.beginScope();
    const W = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i));
    const Bs = { f32: e.upload(W, [N, K]), bf16: e.uploadPacked(roundToHalves(W, 'bf16'), [N, K], 'bf16') };
    for (const M of [1, 4, 8]) {
      const X = e.upload(
        Float32Array.from({ length: M * K }, (_, i) => Math.cos(i)),
        [M * K],
      );
      const Y = e.empty([M * N]);
      const row: Record<string, number> = {};
      for (const [dt, B] of Object.entries(Bs)) {
        const t: Record<string, number[]> = { v4: [], gemv: [] };
        const call = (variant: MatmulVariant) => matmulKernel(e, Y, X, B, M, N, K, { transB: true, variant });
        let once = 0;
        for (const v of ['v4', 'gemv'] as const) {
          call(v);
          await e.sync();
          const t0 = performance.now();
          call(v);
          await e.sync();
          once = Math.max(once, performance.now() - t0);
        }
        const calls = Math.max(1, Math.min(10, Math.floor(300 / once)));
        for (let r = 0; r < 5; r++) {
          for (const v of r % 2 ? (['gemv', 'v4'] as const) : (['v4', 'gemv'] as const)) {
            const t0 = performance.now();
            for (let i = 0; i < calls; i++) call(v);
            await e.sync();
            t[v].push((performance.now() - t0) / calls);
          }
        }
        const med = (a: number[]) => +a.sort((x, y) => x - y)[a.length >> 1].toFixed(2);
        for (const v of Object.keys(t)) row[`${v} ${dt}`] = med(t[v]);
      }
      out[`${name} M${M} N${N} K${K}`] = row;
      console.log(name, `M${M}`, JSON.stringify(row));
    }
    e.endScope();
  }
  console.log(JSON.stringify(out, null, 1));
});
