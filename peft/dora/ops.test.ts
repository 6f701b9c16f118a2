import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../../tests/helpers/gpu';
import { checkOp, maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import { doraNorm, doraNormCpu, doraRowSqNorm, doraScale, doraScaleCpu, doraScaleRows } from './ops';
import wgsl from './dora.wgsl?raw';

const positive = (n: number, r: () => number) => Float32Array.from({ length: n }, () => 0.5 + r());

describe('dora ops', () => {
  it('dora.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'dora.wgsl');
  });

  for (const [O, I, R] of [
    [1, 1, 1],
    [5, 7, 3],
    [32, 64, 8],
    [172, 64, 8],
    [64, 172, 4],
    [70, 9, 16],
  ]) {
    it(`doraNorm O=${O} I=${I} R=${R} matches ‖W + s·BA‖ per row (float64)`, async () => {
      const e = await gpuEngine();
      const r = rng(O * 31 + I * 7 + R);
      const W = randn(O * I, r, 0.3),
        A = randn(R * I, r, 0.3),
        B = randn(O * R, r, 0.2);
      const s = 1.7;
      e.beginScope();
      const Wt = e.upload(W, [O, I]),
        At = e.upload(A, [R, I]),
        Bt = e.upload(B, [O, R]);
      const w2 = doraRowSqNorm(e, Wt);
      const got = await e.read(doraNorm(e, w2, Wt, At, Bt, s));
      const want = doraNormCpu(W, A, B, s, O, I, R);
      for (let o = 0; o < O; o++) expect(Math.abs(got[o] - want[o])).toBeLessThan(1e-5 * (1 + want[o]));
      // B = 0 gives the plain row norms (DoRA's magnitude init).
      const z = await e.read(doraNorm(e, w2, Wt, At, e.zeros([O, R]), s));
      expect(maxAbsDiff(z, doraNormCpu(W, A, new Float32Array(O * R), s, O, I, R))).toBeLessThan(1e-5);
      e.endScope();
    });
  }

  for (const [M, O] of [
    [1, 1],
    [3, 5],
    [7, 64],
    [33, 172],
  ]) {
    it(`doraScale case A (y = b + g(V − b)) M=${M} O=${O}: forward and gradients of V and m`, async () => {
      const e = await gpuEngine();
      const r = rng(M * 13 + O);
      for (const withBias of [false, true]) {
        await checkOp(e, {
          name: `dora_scale A${withBias ? '+bias' : ''}`,
          inputs: [
            { name: 'V', shape: [M, O], data: randn(M * O, r), grad: true },
            { name: 'm', shape: [O], data: positive(O, r), grad: true },
            { name: 'n', shape: [O], data: positive(O, r) },
            { name: 'bias', shape: [O], data: randn(O, r) },
          ],
          gpu: (e, [V, m, n, b]) => doraScale(e, { V, m, n, bias: withBias ? b : null }),
          cpu: ([V, m, n, b]) => doraScaleCpu(V, m, n, O, null, null, withBias ? b : null),
          samples: 10,
        });
      }
    });

    it(`doraScale case B (y = R + (g−1)U + gV) M=${M} O=${O}: gradients of V, m, R and U`, async () => {
      const e = await gpuEngine();
      const r = rng(M * 17 + O);
      await checkOp(e, {
        name: 'dora_scale B',
        inputs: [
          { name: 'V', shape: [M, O], data: randn(M * O, r), grad: true },
          { name: 'm', shape: [O], data: positive(O, r), grad: true },
          { name: 'n', shape: [O], data: positive(O, r) },
          { name: 'R', shape: [M, O], data: randn(M * O, r), grad: true },
          { name: 'U', shape: [M, O], data: randn(M * O, r), grad: true },
        ],
        gpu: (e, [V, m, n, R, U]) => doraScale(e, { V, m, n, R, U }),
        cpu: ([V, m, n, R, U]) => doraScaleCpu(V, m, n, O, R, U, null),
        samples: 10,
      });
    });
  }

  it('doraScaleRows scales each row of W by m/n (merge)', async () => {
    const e = await gpuEngine();
    const r = rng(5);
    const O = 13,
      I = 9;
    const W = randn(O * I, r),
      m = positive(O, r),
      n = positive(O, r);
    e.beginScope();
    const Wt = e.upload(W, [O, I]);
    doraScaleRows(e, Wt, e.upload(m, [O]), e.upload(n, [O]));
    const got = await e.read(Wt);
    const want = Array.from(W, (w, i) => (w * m[Math.floor(i / I)]) / n[Math.floor(i / I)]);
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-6);
    e.endScope();
  });
});
