/** OFT ops (peft/oft/ops.ts) against their float64 references and METHODS.md §9. */
import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../../tests/helpers/gpu';
import { checkOp, maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import {
  blockRotate,
  blockRotateCpu,
  cayleyNeumannCoefficients,
  coftProject,
  coftProjectCpu,
  oftBlockParams,
  oftRotation,
  oftRotationCpu,
  skewCpu,
} from './ops';
import wgsl from './oft.wgsl?raw';

describe('oft ops', () => {
  it('oft.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'oft.wgsl');
  });

  it('Cayley–Neumann coefficients follow PEFT ≥0.18 and 0.17', () => {
    expect(cayleyNeumannCoefficients(5)).toEqual([1, 2, 2, 2, 1]);
    expect(cayleyNeumannCoefficients(4)).toEqual([1, 2, 2, 1]);
    expect(cayleyNeumannCoefficients(3)).toEqual([1, 2, 1]);
    expect(cayleyNeumannCoefficients(2)).toEqual([1, 2]);
    expect(cayleyNeumannCoefficients(1)).toEqual([1]);
    expect(cayleyNeumannCoefficients(5, '0.17')).toEqual([1, 2, 2, 2, 2]);
    expect(cayleyNeumannCoefficients(1, '0.17')).toEqual([1]);
  });

  it('skew: θ fills the strict upper triangle row-major, Q[j][i] = −Q[i][j]', () => {
    const Q = skewCpu([1, 2, 3, 4, 5, 6], 1, 4);
    expect(Array.from(Q)).toEqual([0, 1, 2, 3, -1, 0, 4, 5, -2, -4, 0, 6, -3, -5, -6, 0]);
  });

  // [nb, b, coefficients or null for exact Cayley, θ scale]
  const rotCases: [number, number, number[] | null, number][] = [
    [3, 4, cayleyNeumannCoefficients(5), 0.3],
    [2, 8, cayleyNeumannCoefficients(5), 0.2],
    [1, 12, cayleyNeumannCoefficients(4, '0.17'), 0.1],
    [2, 8, null, 0.4],
    [2, 5, cayleyNeumannCoefficients(5, '0.17'), 0.3],
    [1, 7, cayleyNeumannCoefficients(3), 0.2],
    [2, 3, cayleyNeumannCoefficients(2), 0.5],
    [1, 6, cayleyNeumannCoefficients(8), 0.2],
    [3, 5, null, 0.5],
    [1, 9, null, 1.0],
    [5, 2, null, 0.7],
  ];
  for (const [nb, b, coeffs, scale] of rotCases) {
    it(`oftRotation nb${nb} b${b} ${coeffs ? `neumann [${coeffs}]` : 'exact'}`, async () => {
      const e = await gpuEngine();
      const m = oftBlockParams(b);
      await checkOp(e, {
        name: 'oftRotation',
        inputs: [{ name: 'theta', shape: [nb, m], data: randn(nb * m, rng(nb * 31 + b), scale), grad: true }],
        gpu: (e, [t]) => oftRotation(e, t, { b, coeffs }),
        cpu: ([t]) => oftRotationCpu(t, nb, b, coeffs),
        samples: 12,
      });
    });
  }

  it('oftRotation with one term is the identity (no gradient)', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const t = e.upload(randn(2 * 6, rng(4)), [2, 6]);
    const R = await e.read(oftRotation(e, t, { b: 4, coeffs: [1] }));
    expect(Array.from(R)).toEqual(Array.from(oftRotationCpu(new Float64Array(12), 2, 4, [1])));
    e.endScope();
  });

  // [T, F, b, shared, trans]
  const rotateCases: [number, number, number, boolean, boolean][] = [
    [5, 8, 4, false, false],
    [3, 12, 3, true, false],
    [1, 6, 6, false, false],
    [7, 10, 5, false, true],
    [4, 9, 3, true, true],
    [130, 4, 2, false, false],
    // vec4 tiles (b % 4 == 0); T not a multiple of 4
    [6, 16, 8, false, false],
    [5, 24, 8, true, false],
    [3, 16, 4, false, true],
    [9, 32, 8, true, true],
    [1, 8, 8, false, false],
    [131, 12, 4, false, false],
  ];
  for (const [T, F, b, shared, trans] of rotateCases) {
    it(`blockRotate T${T} F${F} b${b}${shared ? ' shared' : ''}${trans ? ' transposed' : ''}`, async () => {
      const e = await gpuEngine();
      const nR = shared ? 1 : F / b;
      const r = rng(T * 7 + F + b);
      await checkOp(e, {
        name: 'blockRotate',
        inputs: [
          { name: 'x', shape: [T, F], data: randn(T * F, r), grad: true },
          { name: 'R', shape: [nR, b, b], data: randn(nR * b * b, r), grad: true },
        ],
        gpu: (e, [x, R]) => blockRotate(e, x, R, { trans }),
        cpu: ([x, R]) => blockRotateCpu(x, R, T, F, b, nR, trans),
        samples: 16,
      });
    });
  }

  for (const coeffs of [cayleyNeumannCoefficients(5), null]) {
    it(`θ → R → rotated input, end to end (${coeffs ? 'neumann' : 'exact'}, shared and per-block)`, async () => {
      const e = await gpuEngine();
      for (const shared of [false, true]) {
        const T = 6,
          b = 4,
          r = 3,
          F = r * b,
          nb = shared ? 1 : r,
          m = oftBlockParams(b);
        const g = rng(shared ? 5 : 6);
        await checkOp(e, {
          name: 'oft rotate',
          inputs: [
            { name: 'x', shape: [T, F], data: randn(T * F, g), grad: true },
            { name: 'theta', shape: [nb, m], data: randn(nb * m, g, 0.3), grad: true },
          ],
          gpu: (e, [x, t]) => blockRotate(e, x, oftRotation(e, t, { b, coeffs })),
          cpu: ([x, t]) => blockRotateCpu(x, oftRotationCpu(t, nb, b, coeffs), T, F, b, nb),
          samples: 12,
        });
      }
    });
  }

  it('exact Cayley R is orthogonal; Neumann R(θ) ≈ exact R(−θ) = exact R(θ)ᵀ for small θ', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const nb = 2,
      b = 6,
      m = oftBlockParams(b);
    const th = randn(nb * m, rng(12), 0.02);
    const t = e.upload(th, [nb, m]);
    const Rx = await e.read(oftRotation(e, t, { b, coeffs: null }));
    const Rn = await e.read(oftRotation(e, t, { b, coeffs: cayleyNeumannCoefficients(5, '0.17') }));
    let orth = 0,
      diff = 0;
    for (let k = 0; k < nb; k++) {
      for (let i = 0; i < b; i++) {
        for (let j = 0; j < b; j++) {
          let s = 0;
          for (let p = 0; p < b; p++) s += Rx[k * b * b + p * b + i] * Rx[k * b * b + p * b + j];
          orth = Math.max(orth, Math.abs(s - (i === j ? 1 : 0)));
          diff = Math.max(diff, Math.abs(Rn[k * b * b + i * b + j] - Rx[k * b * b + j * b + i]));
        }
      }
    }
    console.log(`exact Cayley |RᵀR − I| ${orth.toExponential(2)}, |R_neumann(θ) − R_exact(θ)ᵀ| ${diff.toExponential(2)}`);
    expect(orth).toBeLessThan(1e-5);
    expect(diff).toBeLessThan(1e-4);
    e.endScope();
  });

  it('coftProject scales blocks outside the Frobenius ball onto it and leaves the others', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const nb = 4,
      b = 5,
      m = oftBlockParams(b);
    const th = randn(nb * m, rng(3), 0.01);
    for (let p = 0; p < m; p++) th[m + p] *= 1e-4; // block 1 inside the ball
    const eps = 6e-3;
    const t = e.upload(th, [nb, m]);
    coftProject(e, t, b, eps);
    const got = await e.read(t);
    const want = coftProjectCpu(th, nb, b, eps);
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-8);
    expect(Array.from(got.subarray(m, 2 * m))).toEqual(Array.from(th.subarray(m, 2 * m)));
    const Q0 = skewCpu(got.subarray(0, m), 1, b);
    expect(Math.hypot(...Q0)).toBeCloseTo(eps, 7);
    e.endScope();
  });
});
