/** SVFT spectral step (peft/svft/ops.ts) against its float64 reference. */
import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../../tests/helpers/gpu';
import { checkOp, maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import { svftPattern, svftScaleRows, svftSpectral, svftSpectralCpu, sigmoid, uploadSvftPattern } from './ops';
import wgsl from './svft.wgsl?raw';

function band(n: number, d: number) {
  const rows: number[] = [],
    cols: number[] = [];
  for (let i = 0; i < n; i++) for (let j = Math.max(0, i - d); j <= Math.min(n - 1, i + d); j++) (rows.push(i), cols.push(j));
  return { rows, cols };
}

function randomPositions(n: number, k: number, r: () => number) {
  const rows: number[] = [],
    cols: number[] = [];
  for (let q = 0; q < k; q++) (rows.push(Math.floor(r() * n)), cols.push(Math.floor(r() * n)));
  return { rows, cols };
}

describe('svft ops', () => {
  it('svft.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'svft.wgsl');
  });

  it('pattern: sorted row-major, de-duplicated, CSR and CSC views agree', () => {
    const p = svftPattern(3, [2, 0, 1, 0, 2], [0, 2, 1, 2, 2]);
    expect(p.k).toBe(4);
    expect(Array.from(p.rows)).toEqual([0, 1, 2, 2]);
    expect(Array.from(p.cols)).toEqual([2, 1, 0, 2]);
    // rowPtr | col | colPtr | perm | row
    expect(Array.from(p.packed)).toEqual([0, 1, 2, 4, /* col */ 2, 1, 0, 2, /* colPtr */ 0, 1, 2, 4, /* perm */ 2, 1, 0, 3, /* row */ 0, 1, 2, 2]);
    expect(() => svftPattern(3, [3], [0])).toThrow(/outside the 3×3/);
  });

  // [label, T, n, positions]
  const cases: [string, number, number, { rows: number[]; cols: number[] }][] = [
    ['banded d=1', 5, 6, band(6, 1)],
    ['diagonal (plain)', 3, 7, band(7, 0)],
    ['banded d=2, many rows', 70, 9, band(9, 2)],
    ['random with duplicates', 4, 5, randomPositions(5, 9, rng(3))],
    ['n = 1', 6, 1, band(1, 1)],
    ['n = 40', 11, 40, band(40, 1)],
  ];
  for (const [label, T, n, pos] of cases) {
    it(`svftSpectral ${label} (T${T}, n${n})`, async () => {
      const e = await gpuEngine();
      const pat = svftPattern(n, pos.rows, pos.cols);
      const r = rng(T * 13 + n);
      await checkOp(e, {
        name: 'svftSpectral',
        inputs: [
          { name: 'z', shape: [T, n], data: randn(T * n, r), grad: true },
          { name: 's', shape: [n], data: Float32Array.from(randn(n, r), Math.abs) },
          { name: 'delta', shape: [pat.k], data: randn(pat.k, r, 0.5), grad: true },
          { name: 'gate', shape: [1], data: Float32Array.of(0.3), grad: true },
        ],
        gpu: (e, [z, s, d, g]) => svftSpectral(e, z, s, d, g, pat, uploadSvftPattern(e, pat)),
        cpu: ([z, s, d, g]) => svftSpectralCpu(z, s, d, g[0], pat),
        samples: 16,
      });
    });
  }

  it('merge rows: (diag(s) + σ(g) M) V', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const n = 6,
      C = 5;
    const pat = svftPattern(n, band(n, 1).rows, band(n, 1).cols);
    const r = rng(21);
    const V = randn(n * C, r),
      s = randn(n, r),
      d = randn(pat.k, r),
      g = 0.7;
    const got = await e.read(svftScaleRows(e, e.upload(V, [n, C]), e.upload(s, [n]), e.upload(d, [pat.k]), e.upload([g], [1]), pat, uploadSvftPattern(e, pat)));
    const want = new Float64Array(n * C);
    for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) want[i * C + c] = s[i] * V[i * C + c];
    for (let q = 0; q < pat.k; q++) for (let c = 0; c < C; c++) want[pat.rows[q] * C + c] += sigmoid(g) * d[q] * V[pat.cols[q] * C + c];
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-5);
    e.endScope();
  });
});
