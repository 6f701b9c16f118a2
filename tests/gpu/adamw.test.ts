import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { randn, rng } from '../helpers/check-op';
import { adamwCpu, adamwStep, clipCoefficient, sumSquares, sumSquaresCpu } from '../../src/engine/ops/adamw';
import type { AdamWOptions } from '../../src/engine/ops/adamw';

/** allclose: |got - want| <= rtol |want| + 1e-7 max|want| (the atol covers values that cancel to ~0). */
function expectClose(name: string, got: Float32Array, want: Float64Array, rtol = 1e-5) {
  let scale = 0;
  for (const w of want) scale = Math.max(scale, Math.abs(w));
  const atol = 1e-7 * scale;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= rtol * Math.abs(want[i]) + atol)) {
      throw new Error(`${name}: NOT OK at ${i}: got ${got[i]}, want ${want[i]} (|diff| ${d}, atol ${atol})`);
    }
  }
}

describe('adamw', () => {
  const lrs = [1e-3, 5e-4, 2e-3];
  for (const n of [1, 1000, 70_001]) {
    for (const weightDecay of [0, 0.01]) {
      it(`n${n} wd${weightDecay}: 3 steps with a changing lr match torch's formula`, async () => {
        const e = await gpuEngine();
        const r = rng(n + weightDecay * 1000);
        e.beginScope();
        const p0 = randn(n, r);
        const P = Float64Array.from(p0),
          M = new Float64Array(n),
          Vv = new Float64Array(n);
        const param = e.upload(p0, [n]);
        const m = e.zeros([n]);
        const v = e.zeros([n]);
        const grad = e.empty([n]);
        for (let t = 1; t <= 3; t++) {
          const g = randn(n, r, t === 2 ? 10 : 0.1);
          e.write(grad, g);
          const o: AdamWOptions = { lr: lrs[t - 1], beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay, step: t, gradScale: t === 3 ? 0.5 : undefined };
          adamwStep(e, param, grad, m, v, o);
          adamwCpu(P, g, M, Vv, o);
        }
        expectClose('param', await e.read(param), P);
        expectClose('m', await e.read(m), M);
        expectClose('v', await e.read(v), Vv);
        e.endScope();
      });
    }
  }

  it('gradient norm clipping on the GPU: sumSquares over two tensors, clipCoefficient, gradScaleTensor', async () => {
    const e = await gpuEngine();
    const r = rng(11);
    e.beginScope();
    const ga = randn(300, r, 2),
      gb = randn(77, r, 2);
    const total = sumSquares(e, e.upload(ga, [300]));
    sumSquares(e, e.upload(gb, [77]), { out: total, accumulate: true });
    const maxNorm = 1.5;
    const coef = clipCoefficient(e, total, maxNorm);
    const norm = Math.sqrt(sumSquaresCpu(ga) + sumSquaresCpu(gb));
    const wantCoef = Math.min(1, maxNorm / (norm + 1e-6));
    expect(Math.abs((await e.read(total))[0] - norm * norm) / (norm * norm)).toBeLessThan(1e-5);
    expect(Math.abs((await e.read(coef))[0] - wantCoef)).toBeLessThan(1e-6);
    // a big max norm leaves the gradient alone
    expect((await e.read(clipCoefficient(e, total, 1e6)))[0]).toBe(1);

    const p0 = randn(300, r);
    const param = e.upload(p0, [300]),
      m = e.zeros([300]),
      v = e.zeros([300]);
    const o: AdamWOptions = { lr: 1e-2, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1, step: 1, gradScale: 2, gradScaleTensor: coef };
    adamwStep(e, param, e.upload(ga, [300]), m, v, o);
    const P = Float64Array.from(p0),
      M = new Float64Array(300),
      V = new Float64Array(300);
    adamwCpu(P, ga, M, V, { ...o, gradScaleValue: wantCoef });
    expectClose('param', await e.read(param), P);
    expectClose('m', await e.read(m), M, 1e-5);
    e.endScope();
  });

  for (const n of [1, 255, 257, 100_003]) {
    it(`sumSquares n${n}: matches float64 and is bitwise deterministic`, async () => {
      const e = await gpuEngine();
      e.beginScope();
      const x = randn(n, rng(n), 3);
      const t = e.upload(x, [n]);
      const a = (await e.read(sumSquares(e, t)))[0];
      const b = (await e.read(sumSquares(e, t)))[0];
      const want = sumSquaresCpu(x);
      expect(Math.abs(a - want) / want).toBeLessThan(1e-5);
      expect(b).toBe(a);
      e.endScope();
    });
  }
});
