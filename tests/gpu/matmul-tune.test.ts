/**
 * The matmul autotuner: a call of an unknown shape class runs the default
 * kernel and is timed at settle(); the fastest kernel that can run the class
 * is then used for every call of it, and the table survives in the Node JSON
 * file (a second tuner opened on the same file chooses without timing).
 * Results through the chosen kernel equal the float64 reference. A packed
 * (f16 / bf16) B is its own class per dtype, timed among the kernels that
 * read it packed.
 */
import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gpuEngine } from '../helpers/gpu';
import { randn, rng } from '../helpers/check-op';
import { matmul, matmulCpu, matmulVariants } from '../../src/engine/ops/matmul';
import { MatmulTuner, adapterKey, autotuneEnabled, shapeClass } from '../../src/engine/matmul-tune';
import { nodeTuneStore } from '../../src/gpu/node';
import { roundToHalves, roundedF32 } from '../../src/engine/ops/packed';

describe('matmul autotune', () => {
  it('times each kernel of a new shape class once, uses the winner, and keeps the table in a JSON file', async () => {
    const e = await gpuEngine();
    const dir = mkdtempSync(path.join(tmpdir(), 'tune-'));
    const file = path.join(dir, 'matmul-autotune.json');
    try {
      const tuner = await MatmulTuner.open(e, nodeTuneStore(file), { budgetMs: 5 });
      e.matmulTuner = tuner;
      const [M, N, K] = [48, 40, 36];
      const r = rng(5);
      const Ad = randn(M * K, r),
        Bd = randn(N * K, r);
      const run = async () => {
        e.beginScope();
        const y = await e.read(matmul(e, e.upload(Ad, [M, K]), e.upload(Bd, [N, K]), { transB: true }));
        e.endScope();
        const want = matmulCpu(Ad, Bd, M, N, K, { transB: true });
        let err = 0;
        for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(y[i] - want[i]));
        return err;
      };
      expect(await run()).toBeLessThan(1e-4);
      expect(tuner.pendingCount).toBe(1);
      await tuner.settle(e);
      expect(tuner.pendingCount).toBe(0);
      const variants = matmulVariants(e, M, N, K, { transB: true });
      expect(variants).toEqual(['v4', 'v3', 'v1', 'v5', 'v6']);
      const entry = tuner.table.get(shapeClass(M, N, K, { transB: true }, variants))!;
      expect(Object.keys(entry.ms).sort()).toEqual([...variants].sort());
      for (const v of variants) expect(entry.ms[v]!).toBeGreaterThan(0);
      expect(entry.ms[entry.variant]).toBe(Math.min(...variants.map((v) => entry.ms[v]!)));
      // The winner runs the call now, with the same result.
      expect(await run()).toBeLessThan(1e-4);
      expect(tuner.pendingCount).toBe(0);

      const saved = JSON.parse(readFileSync(file, 'utf8'));
      expect(saved[adapterKey(e.ctx.adapterInfo)][shapeClass(M, N, K, { transB: true }, variants)].variant).toBe(entry.variant);
      const again = await MatmulTuner.open(e, nodeTuneStore(file));
      expect(again.choose(M, N, K, { transB: true }, variants)).toBe(entry.variant);
      expect(again.pendingCount).toBe(0);
    } finally {
      e.matmulTuner = null;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('tunes a packed B per dtype, among the kernels that read it packed (v4, v5, v6), apart from f32', async () => {
    const e = await gpuEngine();
    const tuner = new MatmulTuner(adapterKey(e.ctx.adapterInfo), null, { budgetMs: 2 });
    e.matmulTuner = tuner;
    const entries: string[] = [];
    try {
      const [M, N, K] = [40, 24, 20];
      const r = rng(7);
      const Xd = randn(M * K, r),
        Wd = randn(N * K, r);
      const run = async (dtype: 'f32' | 'bf16') => {
        e.beginScope();
        const W = dtype === 'f32' ? e.upload(Wd, [N, K]) : e.uploadPacked(roundToHalves(Wd, dtype), [N, K], dtype);
        entries.length = 0;
        const y = await e.read(matmul(e, e.upload(Xd, [M, K]), W, { transB: true }));
        e.endScope();
        expect(entries, dtype).toEqual(['matmul']); // in the kernel, no f32 copy of W
        const want = matmulCpu(Xd, roundedF32(Wd, dtype), M, N, K, { transB: true });
        let err = 0;
        for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(y[i] - want[i]));
        return err;
      };
      e.timer = { wrap: (name) => void entries.push(name) };
      // bf16 and f32 only: each packed dtype compiles its own kernels (seconds for v4 on SwiftShader); f16's run in packed.test.ts.
      for (const dtype of ['bf16', 'f32'] as const) expect(await run(dtype)).toBeLessThan(1e-4);
      // One class per dtype: the same shape.
      expect(tuner.pendingCount).toBe(2);
      e.timer = null;
      await tuner.settle(e);
      const packedVariants = matmulVariants(e, M, N, K, { transB: true }, 'bf16');
      expect(packedVariants).toEqual(['v4', 'v5', 'v6']);
      expect(matmulVariants(e, M, N, K, { transB: true }, 'f16')).toEqual(packedVariants);
      const entry = tuner.table.get(shapeClass(M, N, K, { transB: true }, packedVariants, 'bf16'))!;
      expect(Object.keys(entry.ms).sort()).toEqual(['v4', 'v5', 'v6']);
      expect(entry.ms[entry.variant]).toBe(Math.min(...packedVariants.map((v) => entry.ms[v]!)));
      expect(tuner.table.get(shapeClass(M, N, K, { transB: true }, matmulVariants(e, M, N, K, { transB: true })))).toBeDefined();
      expect(tuner.table.size).toBe(2);
      // f16 has a class of its own.
      expect(shapeClass(M, N, K, { transB: true }, packedVariants, 'f16')).not.toBe(shapeClass(M, N, K, { transB: true }, packedVariants, 'bf16'));
      // The winners run the calls now, still packed in the kernel, with the same results.
      e.timer = { wrap: (name) => void entries.push(name) };
      for (const dtype of ['bf16', 'f32'] as const) expect(await run(dtype)).toBeLessThan(1e-4);
      expect(tuner.pendingCount).toBe(0);
    } finally {
      e.matmulTuner = null;
      e.timer = null;
    }
  });

  it('is off by default on CPU adapters and on for GPUs', () => {
    const swiftshader = { vendor: 'google', architecture: 'swiftshader', device: 'swiftshader-device-subzero-', description: 'SwiftShader driver 5.0.0' };
    const gpu = { vendor: 'nvidia', architecture: 'ampere', device: '', description: '' };
    expect(autotuneEnabled(swiftshader)).toBe(false);
    expect(autotuneEnabled(swiftshader, 'on')).toBe(true);
    expect(autotuneEnabled(gpu)).toBe(true);
    expect(autotuneEnabled(gpu, 'off')).toBe(false);
  });
});
