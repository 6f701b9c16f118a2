/**
 * NF4 (METHODS.md §5, Appendix B): the code tables, the quantizer against the
 * spec and against the expected error of the NF4 code on normal weights, the
 * GPU quantizer against the CPU reference word for word, and the dequantizing
 * matmul kernels (forward X Ŵᵀ, backward dY Ŵ) against a float64 reference.
 */
import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../../tests/helpers/gpu';
import { checkOp, randn, rng } from '../../tests/helpers/check-op';
import { NF4_CODE, dequantizeNf4Cpu, dynamicCode8, nf4BnbTensors, nf4Layout, nf4Linear, nf4LinearCpu, nf4Upload, quantizeNf4, quantizeNf4Cpu } from './ops';

const f32 = Math.fround;

/** Standard normal cdf (erf by Abramowitz-Stegun 7.1.26, |error| < 1.5e-7). */
function Phi(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return x >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}
const phi = (x: number) => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);

/**
 * Expected squared error per value of blockwise NF4 (block 64) on iid N(0, 1):
 * the block maximum a has density 64·2φ(a)·(2Φ(a)−1)^63; given a, the other
 * 63 values are N(0,1) restricted to [−a, a], each rounded to the nearest
 * a·c_k (the maximum itself is exact). Per code cell [l, h] with centre μ:
 * ∫(w−μ)²φ = [Φ − wφ]_l^h + 2μ[φ]_l^h + μ²[Φ]_l^h.
 */
function expectedNf4Mse(): number {
  const mids = Array.from({ length: 15 }, (_, k) => (NF4_CODE[k] + NF4_CODE[k + 1]) / 2);
  const inner = (a: number) => {
    let s = 0;
    for (let k = 0; k < 16; k++) {
      const l = k === 0 ? -a : a * mids[k - 1],
        h = k === 15 ? a : a * mids[k],
        mu = a * NF4_CODE[k];
      const F = (w: number) => Phi(w) - w * phi(w) + 2 * mu * phi(w) + mu * mu * Phi(w);
      s += F(h) - F(l);
    }
    return s; // = E[err² ; |w| < a] · P(|w| < a)
  };
  // (63/64) E_a[ inner(a) / (2Φ(a)−1) ] with the density of a: Simpson on [0, 8].
  const steps = 4000,
    hA = 8 / steps;
  let total = 0;
  for (let i = 0; i <= steps; i++) {
    const a = i * hA;
    const wgt = i === 0 || i === steps ? 1 : i % 2 ? 4 : 2;
    const p = 2 * Phi(a) - 1;
    if (p <= 0) continue;
    const dens = 64 * 2 * phi(a) * p ** 63;
    total += wgt * dens * (inner(a) / p);
  }
  return ((63 / 64) * total * hA) / 3;
}

describe('nf4 tables', () => {
  it('dynamic 8-bit code has the Appendix B anchors', () => {
    const D = dynamicCode8();
    expect(D.length).toBe(256);
    expect(D[0]).toBe(f32(-0.992968738));
    expect(D[255]).toBe(1);
    expect(D[254]).toBe(f32(0.992968738));
    expect(D[253]).toBe(f32(0.978906274));
    expect(D[252]).toBe(0.96484375);
    expect(D.indexOf(0)).toBe(127);
    const pos = Array.from(D).filter((v) => v > 0);
    // fp32(1e-6) · fp32(0.55) rounds to 5.5000004e-7: the anchors hold to fp32 precision.
    [5.5e-7, 3.25e-6, 7.75e-6].forEach((v, i) => expect(Math.abs(pos[i] / v - 1)).toBeLessThan(2e-7));
    for (let i = 1; i < 256; i++) expect(D[i]).toBeGreaterThan(D[i - 1]);
  });
});

describe('nf4 quantizer (CPU reference)', () => {
  it('packs element 2k in the high nibble, picks the nearest code with ties to the lower index', () => {
    // Block 0: absmax 1, so u = w. mid(7,8) = (0 + 0.0795…)/2 exactly is a tie → index 7.
    const tie = f32((NF4_CODE[7] + NF4_CODE[8]) / 2);
    const w = new Float32Array(70);
    w.set([1, -1, tie, f32(tie + 1e-6), 0.3, -0.3, 0.7229568362236023, -0.09105]);
    const st = quantizeNf4Cpu(w, false);
    const { codes, absmax: a } = nf4BnbTensors(st, w.length, false);
    const absmax = a!;
    expect(codes.length).toBe(35);
    expect(codes[0]).toBe((15 << 4) | 0); // 1 → 15 (high), −1 → 0 (low)
    expect(codes[1]).toBe((7 << 4) | 8); // tie → 7, just above → 8
    expect(codes[2]).toBe((11 << 4) | 4); // 0.3 → 0.3379 (11), −0.3 → −0.2844 (4)
    expect(codes[3]).toBe((14 << 4) | 6);
    expect(absmax[0]).toBe(1);
    // Block 1 (elements 64…69) is all zeros: absmax 0, codes 7 (the value 0), dequantized 0.
    expect(absmax[1]).toBe(0);
    expect(codes[32]).toBe(0x77);
    const deq = dequantizeNf4Cpu(st, w.length, false);
    expect(Array.from(deq.subarray(64))).toEqual([0, 0, 0, 0, 0, 0]);
    expect(deq[0]).toBe(1);
    expect(deq[2]).toBe(0);
  });

  it('double quantization: offset = mean(absmax), 8-bit codes per 256-block, sizes as §5', () => {
    const n = 300 * 64 + 5; // 301 blocks: two 256-blocks of absmax
    const w = randn(n, rng(5));
    const st = quantizeNf4Cpu(w, true);
    const L = nf4Layout(n, true);
    expect(L.nb).toBe(301);
    expect(L.nb2).toBe(2);
    const bnb = nf4BnbTensors(st, n, true);
    expect(bnb.codes.length).toBe(Math.ceil(n / 2));
    expect(bnb.qabsmax!.length).toBe(301);
    expect(bnb.absmax2!.length).toBe(2);
    const single = quantizeNf4Cpu(w, false);
    const absmax = nf4BnbTensors(single, n, false).absmax!;
    let mean = 0;
    for (const a of absmax) mean += a;
    mean /= absmax.length;
    expect(Math.abs(bnb.offset! - mean)).toBeLessThan(1e-6);
    // absmax round trip: each error at most half a code step of D times absmax2.
    const deqA = Array.from({ length: 301 }, (_, j) => f32(f32(dynamicCode8()[bnb.qabsmax![j]] * bnb.absmax2![j >> 8]) + bnb.offset!));
    let worst = 0;
    for (let j = 0; j < 301; j++) worst = Math.max(worst, Math.abs(deqA[j] - absmax[j]) / bnb.absmax2![j >> 8]);
    // Nearest-code error ≤ half a gap of D, except at u = −1: D has no −1, so the most
    // negative absmax of a 256-block lands on −0.99297, a full gap (0.00703) away.
    expect(worst).toBeLessThan(0.00704);
    // The NF4 codes are those of the single-quantized state (same absmax before DQ).
    expect(Array.from(st.subarray(0, L.nw))).toEqual(Array.from(single.subarray(0, L.nw)));
  });

  it('round-trip error on N(0,1) weights equals the expected error of the NF4 code (blocksize 64)', () => {
    const n = 1 << 20;
    const w = randn(n, rng(11));
    const want = expectedNf4Mse();
    const mse = (double: boolean) => {
      const d = dequantizeNf4Cpu(quantizeNf4Cpu(w, double), n, double);
      let s = 0;
      for (let i = 0; i < n; i++) s += (w[i] - d[i]) ** 2;
      return s / n;
    };
    const single = mse(false),
      double = mse(true);
    console.log(
      `nf4 round trip on N(0,1): expected MSE ${want.toFixed(6)} (RMS ${Math.sqrt(want).toFixed(4)}); measured ${single.toFixed(6)} single, ${double.toFixed(6)} with double quantization`,
    );
    expect(Math.abs(single / want - 1)).toBeLessThan(0.01);
    // Double quantization perturbs each absmax by < 0.4 %: the error grows by well under 1 %.
    expect(double / single).toBeGreaterThan(0.999);
    expect(double / single).toBeLessThan(1.01);
  });
});

describe('nf4 on the GPU', () => {
  for (const [n, double, zeroBlock] of [
    [1, true, false],
    [7, false, false],
    [64, true, false],
    [130, true, true],
    [17680, true, false],
    [16899, false, true],
    [300 * 64 + 5, true, false],
  ] as const) {
    it(`GPU quantizer equals the CPU reference word for word: n ${n}, double ${double}${zeroBlock ? ', a zero block' : ''}`, async () => {
      const e = await gpuEngine();
      const w = randn(n, rng(n + 3), 0.05);
      if (zeroBlock) w.fill(0, 64, Math.min(n, 128));
      const ref = quantizeNf4Cpu(w, double);
      e.beginScope();
      const W = e.upload(w, [1, n]);
      const q = quantizeNf4(e, W, double);
      const got = new Uint32Array((await e.read(q.state)).buffer);
      q.state.dispose();
      e.endScope();
      let diff = 0;
      for (let i = 0; i < ref.length; i++) if (got[i] !== ref[i]) diff++;
      expect(diff, `words differing of ${ref.length}`).toBe(0);
    });
  }

  it('the kernels decode exactly the CPU dequantization (X = I)', async () => {
    const e = await gpuEngine();
    for (const [N, K] of [
      [24, 16],
      [10, 12],
      [9, 13],
    ]) {
      // k8, k4, element-wise
      const w = randn(N * K, rng(N), 0.2);
      const st = quantizeNf4Cpu(w, true);
      const deq = dequantizeNf4Cpu(st, N * K, true);
      const q = nf4Upload(e, st, N, K, true);
      e.beginScope();
      const I = new Float32Array(K * K);
      for (let k = 0; k < K; k++) I[k * K + k] = 1;
      const y = await e.read(nf4Linear(e, e.upload(I, [K, K]), q)); // y[k, n] = Ŵ[n, k]
      e.endScope();
      q.state.dispose();
      let worst = 0;
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) worst = Math.max(worst, Math.abs(y[k * N + n] - deq[n * K + k]));
      expect(worst).toBeLessThan(1e-7);
    }
  });

  // [M, N, K, double]. Kernels: forward k8 (K % 8 == 0), k4 (K % 4 == 0), any; backward k8
  // (K % 8 == 0, N % 4 == 0), k4 (K % 4 == 0, N % 4 == 0), any. Rows that straddle 64-blocks,
  // partial 8×8 and 4×4 tiles, more than 256 blocks (several absmax2 values).
  const shapes: [number, number, number, boolean][] = [
    [1, 1, 1, true],
    [3, 5, 7, true],
    [5, 13, 70, false],
    [6, 129, 131, true], // any / any
    [7, 9, 64, true],
    [13, 17, 136, true],
    [2, 3, 8, false],
    [9, 130, 136, true], // k8 / any
    [5, 172, 64, true],
    [12, 20, 16, true],
    [17, 36, 72, false],
    [10, 300, 128, true],
    [1, 8, 8, true], // k8 / k8
    [4, 64, 172, true],
    [3, 8, 12, true],
    [11, 20, 20, false],
    [9, 300, 100, true], // k4 / k4
    [6, 9, 20, false], // k4 / any
  ];
  for (const [M, N, K, double] of shapes) {
    it(`X Ŵᵀ and dY Ŵ vs float64: M${M} N${N} K${K} ${double ? 'double' : 'single'} quantization`, async () => {
      const e = await gpuEngine();
      const r = rng(M * 1000 + N * 10 + K);
      const st = quantizeNf4Cpu(randn(N * K, r, 0.5), double);
      const deq = dequantizeNf4Cpu(st, N * K, double);
      const q = nf4Upload(e, st, N, K, double);
      try {
        const res = await checkOp(e, {
          name: 'nf4_linear',
          inputs: [{ name: 'X', shape: [M, K], data: randn(M * K, r), grad: true }],
          gpu: (e, [X]) => nf4Linear(e, X, q),
          cpu: ([X]) => nf4LinearCpu(X, deq, M, N, K),
          samples: 12,
        });
        expect(res.fwdErr).toBeLessThan(1e-4);
      } finally {
        q.state.dispose();
      }
    });
  }

  it('bias, alpha and accumulation into the output; 3-D input', async () => {
    const e = await gpuEngine();
    const r = rng(77);
    for (const [B, T, N, K] of [
      [2, 3, 20, 16],
      [2, 5, 7, 22],
    ]) {
      const M = B * T;
      const st = quantizeNf4Cpu(randn(N * K, r, 0.5), true);
      const deq = dequantizeNf4Cpu(st, N * K, true);
      const q = nf4Upload(e, st, N, K, true);
      const y0 = randn(M * N, r);
      await checkOp(e, {
        name: 'nf4_linear+bias',
        inputs: [
          { name: 'X', shape: [B, T, K], data: randn(M * K, r), grad: true },
          { name: 'b', shape: [N], data: randn(N, r), grad: true },
        ],
        gpu: (e, [X, b]) => {
          const out = e.upload(y0, [B, T, N]);
          return nf4Linear(e, X, q, { bias: b, alpha: 0.5, out, accumulate: true });
        },
        cpu: ([X, b]) => {
          const y = nf4LinearCpu(X, deq, M, N, K);
          return y.map((v, i) => 0.5 * v + b[i % N] + y0[i]);
        },
      });
      q.state.dispose();
    }
  });
});
