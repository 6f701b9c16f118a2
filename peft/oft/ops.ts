/**
 * OFT rotations (METHODS.md §9). Legend: nb stored blocks, b block size,
 * m = b(b−1)/2 parameters per block, T rows of the rotated input, F its
 * features (F = r·b), r blocks per row; nR = r, or 1 when one block is shared.
 *
 * oftRotation: θ [nb, m] → R [nb, b, b]. Q = skew(θ) (θ fills the strict upper
 * triangle row-major, Q[j][i] = −Q[i][j]), then either
 *   Cayley–Neumann  R = Σ_{j=0..D} c_j Q^j  (Horner: H_D = c_D I,
 *                   H_m = c_m I + Q H_{m+1}, R = H_0), or
 *   exact Cayley    R = (I − Q)(I + Q)⁻¹ = 2M − I with M = (I + Q)⁻¹.
 * Backward, G = ∂L/∂R:
 *   Horner:  ∂L/∂Q = Σ_m G_m H_{m+1}ᵀ with G_0 = G, G_{m+1} = Qᵀ G_m
 *   exact:   dR = −(I + R) dQ M = −2 M dQ M  ⇒  ∂L/∂Q = −2 Mᵀ G Mᵀ
 *   skew:    ∂L/∂θ_(i,j) = ∂L/∂Q[i][j] − ∂L/∂Q[j][i]
 *
 * blockRotate: y_k = x_k R_k (trans: x_k R_kᵀ) for each block of b features of
 * every row; dx_k += dy_k R_kᵀ, dR_k += Σ_rows x_kᵀ dy_k (summed over the
 * blocks that share R_0 when nR = 1).
 *
 * coftProject: COFT's no-grad projection of each block onto ‖Q_k‖_F ≤ eps.
 */
import code from './oft.wgsl?raw';
import { params } from 'peft-studio/engine/engine';
import type { Engine } from 'peft-studio/engine/engine';
import type { Tensor } from 'peft-studio/engine/tensor';
import { grid1d } from 'peft-studio/engine/ops/add';

const WG = 64;

/** Parameters per block: the strict upper triangle of a b×b matrix. */
export function oftBlockParams(b: number): number {
  return (b * (b - 1)) / 2;
}

/**
 * Coefficients c_0..c_D of the Cayley–Neumann polynomial R = Σ c_j Q^j for
 * `terms` = num_cayley_neumann_terms, as PEFT evaluates it:
 *   ≥0.18: I + 2Q + … + 2Q^{n−2} + Q^{n−1}  (n = 1: I, n = 2: I + 2Q)
 *   0.17:  I + 2Q + … + 2Q^{n−1}
 */
export function cayleyNeumannCoefficients(terms: number, formula: '0.18' | '0.17' = '0.18'): number[] {
  if (!Number.isInteger(terms) || terms < 1) throw new RangeError(`num_cayley_neumann_terms must be an integer ≥ 1, got ${terms}`);
  const c = [1];
  if (formula === '0.17') {
    for (let j = 1; j < terms; j++) c.push(2);
    return c;
  }
  if (terms === 1) return c;
  c.push(2);
  if (terms === 2) return c;
  for (let j = 2; j < terms - 1; j++) c.push(2);
  c.push(1);
  return c;
}

export interface OftRotationOptions {
  /** Block size. */
  b: number;
  /** Polynomial coefficients (cayleyNeumannCoefficients), or null for the exact Cayley transform. */
  coeffs: number[] | null;
  name?: string;
}

function skewDims(theta: Tensor, b: number): { nb: number; m: number } {
  const m = oftBlockParams(b);
  if (theta.shape.length !== 2 || theta.shape[1] !== m) {
    throw new Error(`oftRotation: θ has shape [${theta.shape}], expected [blocks, ${m}] for block size ${b}`);
  }
  return { nb: theta.shape[0], m };
}

/** C = alpha · op(A) op(B) + beta · C + diag · I per b×b block (op(B) = I when B is null). */
function bmm(
  e: Engine,
  C: Tensor,
  A: Tensor,
  B: Tensor | null,
  nb: number,
  b: number,
  o: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number; diag?: number },
) {
  const vec4 = B !== null && b % 4 === 0;
  e.dispatch(
    code,
    vec4 ? 'bmm4' : 'bmm',
    params(nb, b, o.transA ? 1 : 0, o.transB ? 1 : 0, B ? 0 : 1, 0, 0, 0, { f: o.alpha ?? 1 }, { f: o.beta ?? 0 }, { f: o.diag ?? 0 }, 0),
    [{ tensor: A }, { tensor: B ?? A }, { tensor: C, write: true }],
    grid1d(e, vec4 ? nb * (b / 4) * (b / 4) : nb * b * b, WG),
  );
}

function skewBackward(e: Engine, dTheta: Tensor, dQ: Tensor, nb: number, b: number, m: number) {
  e.dispatch(code, 'skew_backward', params(nb, b, m, 0), [{ tensor: dQ }, { tensor: dTheta, write: true }], grid1d(e, nb * b * b, WG));
}

/** R [nb, b, b] from θ [nb, b(b−1)/2]; differentiable in θ. */
export function oftRotation(e: Engine, theta: Tensor, opts: OftRotationOptions): Tensor {
  const b = opts.b;
  const { nb, m } = skewDims(theta, b);
  const n = nb * b * b;
  const R = e.empty([nb, b, b], opts.name ?? 'oft.R');
  const track = !!(e.tape && theta.requiresGrad);

  if (opts.coeffs === null) {
    const work = e.empty([nb, b, b], 'oft.cayley_work');
    const M = e.empty([nb, b, b], 'oft.cayley_inv');
    e.dispatch(
      code,
      'cayley_forward',
      params(nb, b, m, 0),
      [{ tensor: theta }, { tensor: work, write: true }, { tensor: M, write: true }, { tensor: R, write: true }],
      grid1d(e, nb, WG),
    );
    work.dispose();
    if (!track) {
      M.dispose();
      return R;
    }
    R.requiresGrad = true;
    e.tape!.record('oft.cayley', () => {
      const G = R.grad;
      if (!G) return;
      const T1 = e.empty([nb, b, b], 'oft.cayley_t1');
      bmm(e, T1, G, M, nb, b, { transB: true });
      const dQ = e.empty([nb, b, b], 'oft.dQ');
      bmm(e, dQ, M, T1, nb, b, { transA: true, alpha: -2 });
      skewBackward(e, theta.gradOrZeros(), dQ, nb, b, m);
      T1.dispose();
      dQ.dispose();
    });
    return R;
  }

  const c = opts.coeffs;
  const D = c.length - 1;
  const Q = e.empty([nb, b, b], 'oft.Q');
  e.dispatch(code, 'skew_forward', params(nb, b, m, 0), [{ tensor: theta }, { tensor: Q, write: true }], grid1d(e, n, WG));
  if (D === 0) {
    // R = c_0 I, independent of θ.
    bmm(e, R, Q, null, nb, b, { alpha: 0, diag: c[0] });
    Q.dispose();
    return R;
  }
  // H[m] for m = 1..D−1 (kept for the backward); H_D = c_D I is implicit.
  const H: Tensor[] = [];
  let next: Tensor | null = null; // H_{m+1}, null for H_D
  for (let k = D - 1; k >= 0; k--) {
    const Hk = k === 0 ? R : e.empty([nb, b, b], `oft.H${k}`);
    if (next === null) bmm(e, Hk, Q, null, nb, b, { alpha: c[D], diag: c[k] });
    else bmm(e, Hk, Q, next, nb, b, { diag: c[k] });
    if (k > 0) H[k] = Hk;
    next = Hk;
  }
  if (!track) {
    Q.dispose();
    for (const h of H) h?.dispose();
    return R;
  }
  R.requiresGrad = true;
  e.tape!.record('oft.neumann', () => {
    const G = R.grad;
    if (!G) return;
    const dQ = e.zeros([nb, b, b], 'oft.dQ');
    let Gm = G;
    for (let k = 0; k < D; k++) {
      if (k < D - 1) bmm(e, dQ, Gm, H[k + 1], nb, b, { transB: true, beta: 1 });
      else bmm(e, dQ, Gm, null, nb, b, { alpha: c[D], beta: 1 });
      if (k < D - 1) {
        const Gn = e.empty([nb, b, b], 'oft.G');
        bmm(e, Gn, Q, Gm, nb, b, { transA: true });
        if (Gm !== G) Gm.dispose();
        Gm = Gn;
      }
    }
    if (Gm !== G) Gm.dispose();
    skewBackward(e, theta.gradOrZeros(), dQ, nb, b, m);
    dQ.dispose();
  });
  return R;
}

export interface BlockRotateOptions {
  /** Rotate by R_kᵀ instead of R_k (merging: W R_bdᵀ). */
  trans?: boolean;
  /** Write into this tensor instead of a new one. */
  out?: Tensor;
  name?: string;
}

function rotateDims(x: Tensor, R: Tensor): { T: number; F: number; b: number; nR: number } {
  const F = x.shape[x.shape.length - 1];
  if (R.shape.length !== 3 || R.shape[1] !== R.shape[2]) throw new Error(`blockRotate: R has shape [${R.shape}], expected [blocks, b, b]`);
  const b = R.shape[1],
    nR = R.shape[0];
  if (F % b !== 0) throw new Error(`blockRotate: ${F} features do not split into blocks of ${b}`);
  if (nR !== 1 && nR !== F / b) throw new Error(`blockRotate: ${nR} rotation blocks for ${F / b} feature blocks (need ${F / b}, or 1 shared)`);
  return { T: x.size / F, F, b, nR };
}

/** y = x R_bd (block-diagonal R_bd = diag(R_0, …, R_{r−1}), or R_0 repeated when R holds one block). */
export function blockRotate(e: Engine, x: Tensor, R: Tensor, opts: BlockRotateOptions = {}): Tensor {
  const { T, F, b, nR } = rotateDims(x, R);
  const trans = opts.trans ? 1 : 0;
  const y = opts.out ?? e.empty(x.shape, opts.name ?? 'oft.rotated');
  // 4×4 tiles when blocks split into vec4s (then F does too), else one thread per element.
  const vec4 = b % 4 === 0;
  const rotate = (src: Tensor, dst: Tensor, tr: number, acc: number) =>
    e.dispatch(
      code,
      vec4 ? 'rotate_forward4' : 'rotate_forward',
      params(T, F, b, nR, tr, acc, 0, 0),
      [{ tensor: src }, { tensor: R }, { tensor: dst, write: true }],
      grid1d(e, vec4 ? Math.ceil(T / 4) * (F / 4) : T * F, WG),
    );
  rotate(x, y, trans, 0);
  if (e.tape && (x.requiresGrad || R.requiresGrad)) {
    y.requiresGrad = true;
    e.tape.record('oft.rotate', () => {
      const dy = y.grad;
      if (!dy) return;
      if (x.requiresGrad) rotate(dy, x.gradOrZeros(), 1 - trans, 1);
      if (R.requiresGrad) {
        e.dispatch(
          code,
          vec4 ? 'rotate_backward_r4' : 'rotate_backward_r',
          params(T, F, b, nR, trans, 0, 0, 0),
          [{ tensor: x }, { tensor: dy }, { tensor: R.gradOrZeros(), write: true }],
          grid1d(e, vec4 ? nR * (b / 4) * (b / 4) : nR * b * b, WG),
        );
      }
    });
  }
  return y;
}

/** COFT (no grad, in place): θ_k ← θ_k · eps / ‖Q_k‖_F where ‖Q_k‖_F > eps. */
export function coftProject(e: Engine, theta: Tensor, b: number, eps: number): void {
  const { nb, m } = skewDims(theta, b);
  e.dispatch(code, 'coft_project', params(nb, m, { f: eps }, 0), [{ tensor: theta, write: true }], grid1d(e, nb, WG));
}

// ---- float64 CPU references -----------------------------------------------------

/** Q [nb, b, b] from θ [nb, m]. */
export function skewCpu(theta: ArrayLike<number>, nb: number, b: number): Float64Array {
  const m = oftBlockParams(b);
  const Q = new Float64Array(nb * b * b);
  for (let k = 0; k < nb; k++) {
    let p = 0;
    for (let i = 0; i < b; i++) {
      for (let j = i + 1; j < b; j++, p++) {
        const v = theta[k * m + p];
        Q[k * b * b + i * b + j] = v;
        Q[k * b * b + j * b + i] = -v;
      }
    }
  }
  return Q;
}

function matmulSquare(A: Float64Array, B: Float64Array, b: number, ao = 0, bo = 0): Float64Array<ArrayBuffer> {
  const C = new Float64Array(b * b);
  for (let i = 0; i < b; i++) {
    for (let p = 0; p < b; p++) {
      const a = A[ao + i * b + p];
      if (a === 0) continue;
      for (let j = 0; j < b; j++) C[i * b + j] += a * B[bo + p * b + j];
    }
  }
  return C;
}

/** Inverse of a b×b matrix (Gauss–Jordan with partial pivoting), float64. */
export function invertCpu(A: ArrayLike<number>, b: number): Float64Array<ArrayBuffer> {
  const W = Float64Array.from(A);
  const I = new Float64Array(b * b);
  for (let i = 0; i < b; i++) I[i * b + i] = 1;
  for (let p = 0; p < b; p++) {
    let piv = p;
    for (let i = p + 1; i < b; i++) if (Math.abs(W[i * b + p]) > Math.abs(W[piv * b + p])) piv = i;
    if (W[piv * b + p] === 0) throw new Error('invertCpu: singular matrix');
    if (piv !== p) {
      for (let c = 0; c < b; c++) {
        [W[p * b + c], W[piv * b + c]] = [W[piv * b + c], W[p * b + c]];
        [I[p * b + c], I[piv * b + c]] = [I[piv * b + c], I[p * b + c]];
      }
    }
    const inv = 1 / W[p * b + p];
    for (let c = 0; c < b; c++) {
      W[p * b + c] *= inv;
      I[p * b + c] *= inv;
    }
    for (let i = 0; i < b; i++) {
      if (i === p) continue;
      const f = W[i * b + p];
      if (f === 0) continue;
      for (let c = 0; c < b; c++) {
        W[i * b + c] -= f * W[p * b + c];
        I[i * b + c] -= f * I[p * b + c];
      }
    }
  }
  return I;
}

/** R [nb, b, b] from θ: Σ c_j Q^j by explicit powers, or the exact (I − Q)(I + Q)⁻¹. */
export function oftRotationCpu(theta: ArrayLike<number>, nb: number, b: number, coeffs: number[] | null): Float64Array {
  const Q = skewCpu(theta, nb, b);
  const R = new Float64Array(nb * b * b);
  for (let k = 0; k < nb; k++) {
    const o = k * b * b;
    if (coeffs === null) {
      const ImQ = new Float64Array(b * b),
        IpQ = new Float64Array(b * b);
      for (let i = 0; i < b * b; i++) {
        const d = i % (b + 1) === 0 ? 1 : 0;
        ImQ[i] = d - Q[o + i];
        IpQ[i] = d + Q[o + i];
      }
      R.set(matmulSquare(ImQ, invertCpu(IpQ, b), b), o);
      continue;
    }
    let P: Float64Array<ArrayBuffer> = new Float64Array(b * b);
    for (let i = 0; i < b; i++) P[i * b + i] = 1;
    for (let j = 0; j < coeffs.length; j++) {
      if (j > 0) P = matmulSquare(P, Q, b, 0, o);
      for (let i = 0; i < b * b; i++) R[o + i] += coeffs[j] * P[i];
    }
  }
  return R;
}

/** y = x R_bd (or x R_bdᵀ), float64. */
export function blockRotateCpu(x: ArrayLike<number>, R: ArrayLike<number>, T: number, F: number, b: number, nR: number, trans = false): Float64Array {
  const y = new Float64Array(T * F);
  for (let t = 0; t < T; t++) {
    for (let k = 0; k < F / b; k++) {
      const ro = (nR === 1 ? 0 : k) * b * b;
      for (let c = 0; c < b; c++) {
        let s = 0;
        for (let j = 0; j < b; j++) s += x[t * F + k * b + j] * (trans ? R[ro + c * b + j] : R[ro + j * b + c]);
        y[t * F + k * b + c] = s;
      }
    }
  }
  return y;
}

/** COFT projection, float64 (returns the new θ). */
export function coftProjectCpu(theta: ArrayLike<number>, nb: number, b: number, eps: number): Float64Array {
  const m = oftBlockParams(b);
  const out = Float64Array.from(theta);
  for (let k = 0; k < nb; k++) {
    let ss = 0;
    for (let p = 0; p < m; p++) ss += out[k * m + p] ** 2;
    const norm = Math.sqrt(2 * ss);
    if (norm > eps) for (let p = 0; p < m; p++) out[k * m + p] *= eps / norm;
  }
  return out;
}
