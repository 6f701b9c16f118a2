/**
 * The matmul autotuner: a call of an unknown shape class runs the default
 * kernel and is timed at settle(); the fastest kernel that can run the class
 * is then used for every call of it, and the table survives in the Node JSON
 * file (a second tuner opened on the same file chooses without timing).
 * Results through the chosen kernel equal the float64 reference.
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

  it('is off by default on CPU adapters and on for GPUs', () => {
    const swiftshader = { vendor: 'google', architecture: 'swiftshader', device: 'swiftshader-device-subzero-', description: 'SwiftShader driver 5.0.0' };
    const gpu = { vendor: 'nvidia', architecture: 'ampere', device: '', description: '' };
    expect(autotuneEnabled(swiftshader)).toBe(false);
    expect(autotuneEnabled(swiftshader, 'on')).toBe(true);
    expect(autotuneEnabled(gpu)).toBe(true);
    expect(autotuneEnabled(gpu, 'off')).toBe(false);
  });
});
