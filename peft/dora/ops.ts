/**
 * DoRA ops (METHODS.md §6), kernels in peft/dora/dora.wgsl. Legend: M tokens,
 * O output features, I input features, R LoRA rank, s LoRA scale.
 *
 *   doraNorm:  n_o = ‖W_o + s (BA)_o‖₂, detached (no tape), via
 *              n_o² = ‖W_o‖² + 2s B_o·(AWᵀ)_{:,o} + s² B_o (AAᵀ) B_oᵀ,
 *              which never forms the [O, I] matrix BA.
 *   doraScale: y = Rr + (g − 1) ⊙ (U − β) + g ⊙ V,  g = m / n (per column o)
 *              backward: dRr += dy, dU += (g − 1) dy, dV += g dy,
 *                        dm_o += Σ_t dy (U − β + V) / n_o; n and β get none.
 *   doraScaleRows: W[o, :] *= m_o / n_o (merge).
 */
import code from './dora.wgsl?raw';
import { params } from 'peft-studio/engine/engine';
import type { Engine } from 'peft-studio/engine/engine';
import type { Tensor } from 'peft-studio/engine/tensor';
import { accumulateKernel, grid1d, sameShape } from 'peft-studio/engine/ops/add';
import { matmulKernel } from 'peft-studio/engine/ops/matmul';

/** w2[o] = Σ_i W[o, i]² for W [O, I]. No autograd. */
export function doraRowSqNorm(e: Engine, W: Tensor): Tensor {
  const [O, I] = W.shape;
  const out = e.empty([O], 'dora.w2');
  e.dispatch(code, 'dora_row_sqnorm', params(O, I, 0, 0, { f: 0 }), [{ tensor: W }, { tensor: out, write: true }], grid1d(e, O, 64));
  return out;
}

/**
 * n [O] = ‖W_o + s (BA)_o‖₂ from w2 = doraRowSqNorm(W), W [O, I], A [R, I],
 * B [O, R]. Never recorded on the tape: DoRA treats the norm as a constant.
 */
export function doraNorm(e: Engine, w2: Tensor, W: Tensor, A: Tensor, B: Tensor, s: number): Tensor {
  const [O, I] = W.shape;
  const R = A.shape[0];
  if (A.shape[1] !== I || B.shape[0] !== O || B.shape[1] !== R || w2.size !== O) {
    throw new Error(`doraNorm: shapes W [${W.shape}], A [${A.shape}], B [${B.shape}], w2 [${w2.shape}] do not fit W [O, I], A [R, I], B [O, R], w2 [O]`);
  }
  const C = e.empty([R, O], 'dora.AWt');
  matmulKernel(e, C, A, W, R, O, I, { transB: true });
  const G = e.empty([R, R], 'dora.AAt');
  matmulKernel(e, G, A, A, R, R, I, { transB: true });
  const n = e.empty([O], 'dora.norm');
  e.dispatch(
    code,
    'dora_norm',
    params(O, I, R, 0, { f: s }),
    [{ tensor: w2 }, { tensor: B }, { tensor: C }, { tensor: G }, { tensor: n, write: true }],
    grid1d(e, O, 64),
  );
  C.dispose();
  G.dispose();
  return n;
}

export interface DoraScaleInputs {
  /** Scaled by g: [.., O]. */
  V: Tensor;
  /** Magnitude [O] (trainable). */
  m: Tensor;
  /** Detached norm [O]. */
  n: Tensor;
  /** Added unscaled (case B: the undropped base output). */
  R?: Tensor | null;
  /** Scaled by g − 1 (case B: x_d Wᵀ). */
  U?: Tensor | null;
  /** β [O], subtracted inside the (g − 1) term (case A: the base bias). Receives no gradient. */
  bias?: Tensor | null;
}

/** y = R + (g − 1)(U − β) + g V with g = m / n per output feature (last dim). */
export function doraScale(e: Engine, x: DoraScaleInputs, name = 'dora'): Tensor {
  const { V, m, n } = x;
  const R = x.R ?? null,
    U = x.U ?? null,
    bias = x.bias ?? null;
  const O = V.shape[V.shape.length - 1];
  if (m.size !== O || n.size !== O || (bias && bias.size !== O)) {
    throw new Error(
      `doraScale ${name}: m [${m.shape}], n [${n.shape}]${bias ? `, bias [${bias.shape}]` : ''} must have the ${O} output features of V [${V.shape}]`,
    );
  }
  if (R) sameShape(`doraScale ${name}`, V, R, 'V', 'R');
  if (U) sameShape(`doraScale ${name}`, V, U, 'V', 'U');
  const N = V.size;
  const M = N / O;
  const flags = (R ? 1 : 0) | (U ? 2 : 0) | (bias ? 4 : 0);
  const y = e.empty(V.shape, name);
  e.dispatch(
    code,
    'dora_scale_forward',
    params(N, O, M, flags, { f: 0 }),
    [{ tensor: V }, { tensor: m }, { tensor: n }, { tensor: R ?? V }, { tensor: U ?? V }, { tensor: bias ?? V }, { tensor: y, write: true }],
    grid1d(e, N),
  );
  if (e.tape && (V.requiresGrad || m.requiresGrad || R?.requiresGrad || U?.requiresGrad)) {
    y.requiresGrad = true;
    e.tape.record('dora_scale', () => {
      const dy = y.grad;
      if (!dy) return;
      if (R?.requiresGrad) accumulateKernel(e, R.gradOrZeros(), dy, N);
      const into = (t: Tensor, mode: number) =>
        e.dispatch(
          code,
          'dora_scale_backward_x',
          params(N, O, M, mode, { f: 0 }),
          [{ tensor: dy }, { tensor: m }, { tensor: n }, { tensor: t.gradOrZeros(), write: true }],
          grid1d(e, N),
        );
      if (V.requiresGrad) into(V, 0);
      if (U?.requiresGrad) into(U, 1);
      if (m.requiresGrad) {
        e.dispatch(
          code,
          'dora_scale_backward_m',
          params(O, O, M, flags, { f: 0 }),
          [{ tensor: dy }, { tensor: V }, { tensor: U ?? V }, { tensor: bias ?? V }, { tensor: n }, { tensor: m.gradOrZeros(), write: true }],
          grid1d(e, O, 64),
        );
      }
    });
  }
  return y;
}

/** W[o, :] *= m[o] / n[o], in place (merge). No autograd. */
export function doraScaleRows(e: Engine, W: Tensor, m: Tensor, n: Tensor): void {
  const [O, I] = W.shape;
  e.dispatch(code, 'dora_scale_rows', params(O * I, I, 0, 0, { f: 0 }), [{ tensor: m }, { tensor: n }, { tensor: W, write: true }], grid1d(e, O * I));
}

// ---- float64 CPU references ----------------------------------------------------------------

/** n_o = ‖W_o + s (BA)_o‖₂, formed explicitly. */
export function doraNormCpu(W: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, s: number, O: number, I: number, R: number): Float64Array {
  const n = new Float64Array(O);
  for (let o = 0; o < O; o++) {
    let acc = 0;
    for (let i = 0; i < I; i++) {
      let ba = 0;
      for (let j = 0; j < R; j++) ba += B[o * R + j] * A[j * I + i];
      const w = W[o * I + i] + s * ba;
      acc += w * w;
    }
    n[o] = Math.sqrt(acc);
  }
  return n;
}

/** y = R + (g − 1)(U − β) + g V, g = m / n; absent inputs are zero. */
export function doraScaleCpu(
  V: ArrayLike<number>,
  m: ArrayLike<number>,
  n: ArrayLike<number>,
  O: number,
  R?: ArrayLike<number> | null,
  U?: ArrayLike<number> | null,
  bias?: ArrayLike<number> | null,
): Float64Array {
  const y = new Float64Array(V.length);
  for (let i = 0; i < V.length; i++) {
    const o = i % O;
    const g = m[o] / n[o];
    const u = (U ? U[i] : 0) - (bias ? bias[o] : 0);
    y[i] = (R ? R[i] : 0) + (g - 1) * u + g * V[i];
  }
  return y;
}
