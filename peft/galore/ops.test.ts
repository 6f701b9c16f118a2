/**
 * GaLore's AdamW kernels against their float64 references (METHODS.md §11):
 * 3 steps with a changing lr, weight decay and a GPU clip factor, on sizes
 * 1, odd, not a multiple of 256 and above 65 535 elements. An optimizer op:
 * no backward to check.
 */
import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../../tests/helpers/gpu';
import { randn, rng } from '../../tests/helpers/check-op';
import { galoreAdamwCpu, galoreAdamwStep, galoreMoments, galoreMomentsCpu, galoreStepSize, type GaloreAdamOptions } from './ops';

/** allclose: |got − want| ≤ rtol |want| + 1e-7 max|want|. */
function expectClose(name: string, got: Float32Array, want: Float64Array, rtol = 2e-5) {
  let scale = 0;
  for (const w of want) scale = Math.max(scale, Math.abs(w));
  const atol = 1e-7 * scale;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    worst = Math.max(worst, d);
    if (!(d <= rtol * Math.abs(want[i]) + atol)) throw new Error(`${name}: NOT OK at ${i}: got ${got[i]}, want ${want[i]} (|diff| ${d})`);
  }
  return worst;
}

const lrs = [1e-3, 5e-4, 2e-3];
const clips = [1, 0.25, 0.7];

describe('galore_adamw', () => {
  for (const n of [1, 1000, 70_001]) {
    for (const weightDecay of [0, 0.1]) {
      it(`galore_adamw n${n} wd${weightDecay}: 3 steps match §11 in float64`, async () => {
        const e = await gpuEngine();
        const r = rng(n + 17 * weightDecay);
        e.beginScope();
        const p0 = randn(n, r);
        const P = Float64Array.from(p0),
          M = new Float64Array(n),
          Vv = new Float64Array(n);
        const param = e.upload(p0, [n]);
        const m = e.zeros([n]),
          v = e.zeros([n]);
        const grad = e.empty([n]),
          clip = e.empty([1]);
        for (let t = 1; t <= 3; t++) {
          const g = randn(n, r, t === 2 ? 10 : 0.1);
          e.write(grad, g);
          e.write(clip, [clips[t - 1]]);
          const o: GaloreAdamOptions = { lr: lrs[t - 1], beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay, step: t, gradScale: t === 3 ? 0.5 : undefined };
          galoreAdamwStep(e, param, grad, m, v, clip, o);
          galoreAdamwCpu(P, g, M, Vv, Math.fround(clips[t - 1]), o);
        }
        expectClose('param', await e.read(param), P);
        expectClose('m', await e.read(m), M);
        expectClose('v', await e.read(v), Vv);
        e.endScope();
      });
    }
    it(`galore_moments n${n}: N = m / (√v + eps) written over x, moments in place`, async () => {
      const e = await gpuEngine();
      const r = rng(n + 5);
      e.beginScope();
      const M = new Float64Array(n),
        Vv = new Float64Array(n);
      const m = e.zeros([n]),
        v = e.zeros([n]);
      const x = e.empty([n]),
        clip = e.empty([1]);
      let want: Float64Array = new Float64Array(n);
      for (let t = 1; t <= 3; t++) {
        const g = randn(n, r, t === 2 ? 3 : 0.01);
        e.write(x, g);
        e.write(clip, [clips[t - 1]]);
        const o: GaloreAdamOptions = { lr: lrs[t - 1], beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: t };
        galoreMoments(e, x, m, v, clip, o);
        want = galoreMomentsCpu(g, M, Vv, Math.fround(clips[t - 1]), o);
      }
      expectClose('N', await e.read(x), want);
      expectClose('m', await e.read(m), M);
      expectClose('v', await e.read(v), Vv);
      e.endScope();
    });
  }

  it('eps sits outside the bias correction (differs from torch AdamW at small v)', () => {
    // One step from zero moments, g tiny: torch gives lr·g/(|g| + eps) (mhat/√vhat = sign),
    // GaLore gives lr·√(1−β2)/(1−β1)·(1−β1)g/(√(1−β2)|g| + eps).
    const o: GaloreAdamOptions = { lr: 1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 };
    const g = 1e-8;
    const p = new Float64Array(1);
    galoreAdamwCpu(p, [g], new Float64Array(1), new Float64Array(1), 1, o);
    const galore = -p[0];
    const torch = g / (g + o.eps);
    expect(galoreStepSize(o)).toBeCloseTo(Math.sqrt(0.001) / 0.1, 12);
    expect(galore).toBeCloseTo((Math.sqrt(0.001) * g) / (Math.sqrt(0.001) * g + o.eps), 12);
    expect(Math.abs(galore - torch)).toBeGreaterThan(0.1);
  });
});
