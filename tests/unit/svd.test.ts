import { describe, expect, it } from 'vitest';
import { svdFull, svdTopR, type SvdResult } from '../../src/methods/svd';

function lcg(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 4294967296 - 0.5;
  };
}

function randomMatrix(rows: number, cols: number, seed: number): Float64Array {
  const r = lcg(seed);
  return Float64Array.from({ length: rows * cols }, () => r());
}

/** Random orthonormal columns (rows×k, row-major) by Gram–Schmidt. */
function randomOrthonormal(rows: number, k: number, seed: number): Float64Array {
  const M = randomMatrix(rows, k, seed);
  for (let j = 0; j < k; j++) {
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        let d = 0;
        for (let i = 0; i < rows; i++) d += M[i * k + p] * M[i * k + j];
        for (let i = 0; i < rows; i++) M[i * k + j] -= d * M[i * k + p];
      }
    }
    let n = 0;
    for (let i = 0; i < rows; i++) n += M[i * k + j] ** 2;
    for (let i = 0; i < rows; i++) M[i * k + j] /= Math.sqrt(n);
  }
  return M;
}

/** W = P diag(s) Qᵀ with known singular values s. */
function withSpectrum(rows: number, cols: number, s: number[], seed: number): Float64Array {
  const k = s.length;
  const P = randomOrthonormal(rows, k, seed);
  const Q = randomOrthonormal(cols, k, seed + 1);
  const W = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let c = 0; c < cols; c++) {
      let v = 0;
      for (let j = 0; j < k; j++) v += P[i * k + j] * s[j] * Q[c * k + j];
      W[i * cols + c] = v;
    }
  return W;
}

function transposed(W: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let c = 0; c < cols; c++) t[c * rows + i] = W[i * cols + c];
  return t;
}

function reconstruct(s: SvdResult, rows: number, cols: number): Float64Array {
  const W = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let c = 0; c < cols; c++) {
      let v = 0;
      for (let j = 0; j < s.k; j++) v += s.U[i * s.k + j] * s.S[j] * s.V[c * s.k + j];
      W[i * cols + c] = v;
    }
  return W;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** max |XᵀX − I| for X rows×k row-major. */
function orthoError(X: Float64Array, rows: number, k: number): number {
  let m = 0;
  for (let a = 0; a < k; a++)
    for (let b = 0; b < k; b++) {
      let d = 0;
      for (let i = 0; i < rows; i++) d += X[i * k + a] * X[i * k + b];
      m = Math.max(m, Math.abs(d - (a === b ? 1 : 0)));
    }
  return m;
}

describe('svdFull (exact, float64)', () => {
  for (const [rows, cols] of [
    [1, 1],
    [1, 7],
    [7, 1],
    [5, 5],
    [13, 6],
    [6, 13],
    [40, 24],
    [24, 40],
    [64, 172],
  ]) {
    it(`${rows}×${cols}: reconstruction, orthogonality, descending S`, () => {
      const W = randomMatrix(rows, cols, rows * 100 + cols);
      const s = svdFull(W, rows, cols);
      const k = Math.min(rows, cols);
      expect(s.k).toBe(k);
      expect(s.U.length).toBe(rows * k);
      expect(s.V.length).toBe(cols * k);
      expect(maxAbsDiff(reconstruct(s, rows, cols), W)).toBeLessThan(1e-12);
      expect(orthoError(s.U, rows, k)).toBeLessThan(1e-12);
      expect(orthoError(s.V, cols, k)).toBeLessThan(1e-12);
      for (let j = 1; j < k; j++) expect(s.S[j]).toBeLessThanOrEqual(s.S[j - 1]);
      expect(s.S[k - 1]).toBeGreaterThanOrEqual(0);
    });
  }

  it('recovers a known spectrum, including exact zeros (rank-deficient)', () => {
    const spec = [10, 5, 2.5, 1, 1e-3, 0, 0];
    const W = withSpectrum(30, 20, spec, 7);
    const s = svdFull(W, 30, 20);
    for (let j = 0; j < spec.length; j++) expect(Math.abs(s.S[j] - spec[j])).toBeLessThan(1e-12);
    for (let j = spec.length; j < 20; j++) expect(s.S[j]).toBeLessThan(1e-12);
    // Zero singular values still get orthonormal vectors (completed basis).
    expect(orthoError(s.U, 30, 20)).toBeLessThan(1e-10);
    expect(orthoError(s.V, 20, 20)).toBeLessThan(1e-10);
    expect(maxAbsDiff(reconstruct(s, 30, 20), W)).toBeLessThan(1e-12);
  });

  it('handles the zero matrix and Float32 input', () => {
    const z = svdFull(new Float64Array(12), 4, 3);
    expect(Array.from(z.S)).toEqual([0, 0, 0]);
    expect(orthoError(z.U, 4, 3)).toBeLessThan(1e-12);
    const W32 = Float32Array.from(randomMatrix(9, 4, 3));
    const s = svdFull(W32, 9, 4);
    expect(maxAbsDiff(reconstruct(s, 9, 4), W32)).toBeLessThan(1e-12);
  });

  it('sign convention: each left vector has its largest-magnitude entry positive', () => {
    const s = svdFull(randomMatrix(11, 8, 5), 11, 8);
    for (let j = 0; j < s.k; j++) {
      let best = 0;
      for (let i = 0; i < 11; i++) if (Math.abs(s.U[i * s.k + j]) > Math.abs(best)) best = s.U[i * s.k + j];
      expect(best).toBeGreaterThan(0);
    }
  });

  it('rejects wrong sizes with a message naming the shape', () => {
    expect(() => svdFull(new Float64Array(5), 2, 3)).toThrow(/2·3 = 6/);
    expect(() => svdTopR(new Float64Array(6), 2, 3, 3, -1)).toThrow(/rank r=3/);
    expect(() => svdTopR(new Float64Array(6), 2, 3, 1, -2)).toThrow(/iters=-2/);
  });
});

describe('svdTopR', () => {
  const rows = 96;
  const cols = 64;
  // Decaying spectrum as in trained weights: σ_j = 0.9^j.
  const spec = Array.from({ length: 64 }, (_, j) => 0.9 ** j);
  const W = withSpectrum(rows, cols, spec, 11);

  it('exact (iters = -1) equals svdFull truncated to r, tall and wide, also with a tight gap at r', () => {
    for (const [rr, cc, Wm] of [
      [rows, cols, W],
      [cols, rows, transposed(W, rows, cols)],
    ] as const) {
      for (const r of [1, 8, 20]) {
        const top = svdTopR(Wm, rr, cc, r, -1);
        const full = svdFull(Wm, rr, cc);
        expect(top.k).toBe(r);
        for (let j = 0; j < r; j++) expect(Math.abs(top.S[j] - spec[j])).toBeLessThan(1e-12);
        expect(orthoError(top.U, rr, r)).toBeLessThan(1e-12);
        expect(orthoError(top.V, cc, r)).toBeLessThan(1e-12);
        // Same triplets, same signs (the sign convention fixes them).
        for (let i = 0; i < rr; i++) for (let j = 0; j < r; j++) expect(Math.abs(top.U[i * r + j] - full.U[i * full.k + j])).toBeLessThan(1e-9);
        for (let i = 0; i < cc; i++) for (let j = 0; j < r; j++) expect(Math.abs(top.V[i * r + j] - full.V[i * full.k + j])).toBeLessThan(1e-9);
      }
    }
    // σ_8 = 1, σ_9 = 0.999: the rank-8 truncation is still recovered to ~1e-10.
    const tight = withSpectrum(50, 30, [4, 3, 2.5, 2, 1.6, 1.3, 1.1, 1, 0.999, 0.5, 0.1], 21);
    const a = svdTopR(tight, 50, 30, 8, -1);
    const b = svdFull(tight, 50, 30);
    const b8 = {
      U: Float64Array.from({ length: 50 * 8 }, (_, x) => b.U[Math.floor(x / 8) * b.k + (x % 8)]),
      S: b.S.slice(0, 8),
      V: Float64Array.from({ length: 30 * 8 }, (_, x) => b.V[Math.floor(x / 8) * b.k + (x % 8)]),
      k: 8,
    };
    expect(maxAbsDiff(reconstruct(a, 50, 30), reconstruct(b8, 50, 30))).toBeLessThan(1e-10);
    // The zero matrix (a zero gradient, for GaLore): S = 0 with orthonormal vectors.
    const z = svdTopR(new Float64Array(60 * 20), 60, 20, 4, -1);
    expect(Array.from(z.S)).toEqual([0, 0, 0, 0]);
    expect(orthoError(z.U, 60, 4)).toBeLessThan(1e-12);
    expect(orthoError(z.V, 20, 4)).toBeLessThan(1e-12);
    // Rank-deficient beyond r: still exact.
    const lowRank = withSpectrum(40, 25, [3, 2, 1], 5);
    const c = svdTopR(lowRank, 40, 25, 3, -1);
    expect(maxAbsDiff(reconstruct(c, 40, 25), lowRank)).toBeLessThan(1e-12);
  });

  it('randomized with subspace iterations agrees with the exact top-r', () => {
    const r = 8;
    const exact = svdTopR(W, rows, cols, r, -1);
    const rand = svdTopR(W, rows, cols, r, 16, { seed: 3 });
    expect(orthoError(rand.U, rows, r)).toBeLessThan(1e-12);
    expect(orthoError(rand.V, cols, r)).toBeLessThan(1e-12);
    // Singular values: power iteration converges like (σ_{r+1}/σ_j)^(2·iters+1).
    for (let j = 0; j < r; j++) expect(Math.abs(rand.S[j] - exact.S[j]) / exact.S[j]).toBeLessThan(1e-3);
    // The rank-r approximations (what PiSSA puts into B·A) agree.
    const diff = maxAbsDiff(reconstruct(rand, rows, cols), reconstruct(exact, rows, cols));
    expect(diff).toBeLessThan(5e-3);
    // More iterations → closer.
    const rand32 = svdTopR(W, rows, cols, r, 32, { seed: 3 });
    expect(maxAbsDiff(reconstruct(rand32, rows, cols), reconstruct(exact, rows, cols))).toBeLessThan(diff);
    // With a clear gap after r, the randomized result is exact to rounding.
    const gapped = withSpectrum(rows, cols, [5, 4, 3, 2, 1.5, 1.2, 1.1, 1, 1e-3, 1e-3, 1e-4], 13);
    const a = svdTopR(gapped, rows, cols, 8, 4, { seed: 1 });
    const b = svdTopR(gapped, rows, cols, 8, -1);
    expect(maxAbsDiff(a.S, b.S)).toBeLessThan(1e-10);
    expect(maxAbsDiff(reconstruct(a, rows, cols), reconstruct(b, rows, cols))).toBeLessThan(1e-10);
  });

  it('iters = 0 is a plain range finder; the result is seeded and deterministic', () => {
    const a = svdTopR(W, rows, cols, 4, 0, { seed: 9 });
    const b = svdTopR(W, rows, cols, 4, 0, { seed: 9 });
    const c = svdTopR(W, rows, cols, 4, 0, { seed: 10 });
    expect(Array.from(a.S)).toEqual(Array.from(b.S));
    expect(Array.from(a.S)).not.toEqual(Array.from(c.S));
    // Rayleigh–Ritz values never exceed the true ones.
    for (let j = 0; j < 4; j++) expect(a.S[j]).toBeLessThanOrEqual(spec[j] + 1e-12);
  });

  it('oversampling sharpens the randomized estimate; wide matrices and r = min(rows, cols) work', () => {
    const exact = svdTopR(W, rows, cols, 8, -1);
    const plain = svdTopR(W, rows, cols, 8, 2, { seed: 4 });
    const over = svdTopR(W, rows, cols, 8, 2, { seed: 4, oversample: 8 });
    expect(maxAbsDiff(over.S, exact.S)).toBeLessThan(maxAbsDiff(plain.S, exact.S));
    const Wt = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let c = 0; c < cols; c++) Wt[c * rows + i] = W[i * cols + c];
    const wide = svdTopR(Wt, cols, rows, 8, 16, { seed: 4 });
    for (let j = 0; j < 8; j++) expect(Math.abs(wide.S[j] - exact.S[j]) / exact.S[j]).toBeLessThan(1e-2);
    const all = svdTopR(randomMatrix(10, 6, 1), 10, 6, 6, 3);
    expect(maxAbsDiff(reconstruct(all, 10, 6), randomMatrix(10, 6, 1))).toBeLessThan(1e-12);
  });
});
