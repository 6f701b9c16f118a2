/**
 * SVFT spectral step (METHODS.md §10.1). Legend: T rows, n spectral size
 * (columns of U, rows of V), k positions of the sparse pattern.
 *
 * For z = x Vᵀ [T, n]:
 *   out[t, i] = s[i] z[t, i] + σ(g) Σ_{q: row_q = i} δ_q z[t, col_q]
 * i.e. out = z (diag(s) + σ(g) M)ᵀ, M = scatter(δ at (row_idx, col_idx)).
 * The layer is then y = out Uᵀ (+ bias), so W' = U (diag(s) + σ(g) M) V.
 *
 * Backward with dy = ∂L/∂out, P_q = Σ_t dy[t, row_q] z[t, col_q]:
 *   dz[t, j] += s[j] dy[t, j] + σ Σ_{q: col_q = j} δ_q dy[t, row_q]
 *   dδ_q += σ P_q,   dg += σ(1 − σ) Σ_q δ_q P_q
 * s (σ of the SVD) is frozen: no gradient.
 */
import code from './svft.wgsl?raw';
import { params } from 'peft-studio/engine/engine';
import type { Engine } from 'peft-studio/engine/engine';
import type { Tensor } from 'peft-studio/engine/tensor';
import { grid1d } from 'peft-studio/engine/ops/add';

const WG = 64;

/** Sparse positions of M (sorted row-major) and the packed i32 layout the kernels read. */
export interface SvftPattern {
  n: number;
  k: number;
  rows: Int32Array;
  cols: Int32Array;
  /** rowPtr [n+1] | col [k] | colPtr [n+1] | perm [k] | row [k]. */
  packed: Int32Array;
}

/** Sort (row, col) pairs row-major, drop duplicates, and pack the CSR / CSC views. */
export function svftPattern(n: number, rows: ArrayLike<number>, cols: ArrayLike<number>): SvftPattern {
  if (rows.length !== cols.length) throw new Error(`svftPattern: ${rows.length} rows but ${cols.length} cols`);
  const flat = new Float64Array(rows.length);
  for (let q = 0; q < rows.length; q++) {
    const i = rows[q],
      j = cols[q];
    if (!(Number.isInteger(i) && Number.isInteger(j) && i >= 0 && j >= 0 && i < n && j < n)) {
      throw new Error(`svftPattern: position (${i}, ${j}) is outside the ${n}×${n} matrix`);
    }
    flat[q] = i * n + j;
  }
  flat.sort();
  const uniq: number[] = [];
  for (let q = 0; q < flat.length; q++) if (q === 0 || flat[q] !== flat[q - 1]) uniq.push(flat[q]);
  const k = uniq.length;
  const R = new Int32Array(k),
    C = new Int32Array(k);
  uniq.forEach((f, q) => {
    R[q] = Math.floor(f / n);
    C[q] = f % n;
  });
  const packed = new Int32Array(2 * n + 2 + 3 * k);
  // rowPtr
  for (let q = 0; q < k; q++) packed[R[q] + 1]++;
  for (let i = 0; i < n; i++) packed[i + 1] += packed[i];
  packed.set(C, n + 1);
  // colPtr and the positions grouped by column (ascending row within a column).
  const cp = n + 1 + k;
  for (let q = 0; q < k; q++) packed[cp + C[q] + 1]++;
  for (let j = 0; j < n; j++) packed[cp + j + 1] += packed[cp + j];
  const fill = Int32Array.from(packed.subarray(cp, cp + n));
  const pp = 2 * n + 2 + k;
  for (let q = 0; q < k; q++) packed[pp + fill[C[q]]++] = q;
  packed.set(R, 2 * n + 2 + 2 * k);
  return { n, k, rows: R, cols: C, packed };
}

/** The pattern on the GPU (one i32 buffer). */
export function uploadSvftPattern(e: Engine, pat: SvftPattern, name = 'svft.pattern'): Tensor {
  return e.upload(pat.packed, [pat.packed.length], name);
}

function dims(z: Tensor, pat: SvftPattern, delta: Tensor): { T: number; n: number; k: number } {
  const n = z.shape[z.shape.length - 1];
  if (n !== pat.n) throw new Error(`svftSpectral: z has ${n} columns, the pattern is ${pat.n}×${pat.n}`);
  if (delta.size !== pat.k) throw new Error(`svftSpectral: δ has ${delta.size} values for ${pat.k} pattern positions`);
  return { T: z.size / n, n, k: pat.k };
}

/**
 * out = z (diag(s) + σ(gate) M)ᵀ. `patT` is the uploaded `pat`; gate is a [1]
 * tensor (σ is taken on the GPU). Differentiable in z, δ and gate.
 */
export function svftSpectral(e: Engine, z: Tensor, s: Tensor, delta: Tensor, gate: Tensor, pat: SvftPattern, patT: Tensor, name = 'svft.z'): Tensor {
  const { T, n, k } = dims(z, pat, delta);
  const u = params(T, n, k, 0);
  const out = e.empty(z.shape, name);
  e.dispatch(
    code,
    'svft_forward',
    u,
    [{ tensor: z }, { tensor: s }, { tensor: delta }, { tensor: gate }, { tensor: patT }, { tensor: out, write: true }],
    grid1d(e, T * n, WG),
  );
  if (e.tape && (z.requiresGrad || delta.requiresGrad || gate.requiresGrad)) {
    out.requiresGrad = true;
    e.tape.record('svft', () => {
      const dy = out.grad;
      if (!dy) return;
      if (z.requiresGrad) {
        e.dispatch(
          code,
          'svft_backward_z',
          u,
          [{ tensor: dy }, { tensor: s }, { tensor: delta }, { tensor: gate }, { tensor: patT }, { tensor: z.gradOrZeros(), write: true }],
          grid1d(e, T * n, WG),
        );
      }
      if (delta.requiresGrad || gate.requiresGrad) {
        const prod = e.empty([k], 'svft.prod');
        const dDelta = delta.requiresGrad ? delta.gradOrZeros() : e.empty([k], 'svft.ddelta_unused');
        e.dispatch(
          code,
          'svft_backward_delta',
          u,
          [{ tensor: dy }, { tensor: z }, { tensor: gate }, { tensor: patT }, { tensor: prod, write: true }, { tensor: dDelta, write: true }],
          grid1d(e, k, WG),
        );
        if (gate.requiresGrad) {
          e.dispatch(code, 'svft_backward_gate', u, [{ tensor: delta }, { tensor: gate }, { tensor: prod }, { tensor: gate.gradOrZeros(), write: true }], [1]);
        }
        prod.dispose();
        if (!delta.requiresGrad) dDelta.dispose();
      }
    });
  }
  return out;
}

/** Merge helper (no autograd): (diag(s) + σ(gate) M) V for V [n, C]. */
export function svftScaleRows(e: Engine, V: Tensor, s: Tensor, delta: Tensor, gate: Tensor, pat: SvftPattern, patT: Tensor): Tensor {
  const [n, C] = V.shape;
  if (n !== pat.n || V.shape.length !== 2) throw new Error(`svftScaleRows: V [${V.shape}] does not have ${pat.n} rows`);
  const out = e.empty([n, C], 'svft.scaled_v');
  e.dispatch(
    code,
    'svft_merge_rows',
    params(C, n, pat.k, 0),
    [{ tensor: V }, { tensor: s }, { tensor: delta }, { tensor: gate }, { tensor: patT }, { tensor: out, write: true }],
    grid1d(e, n * C, WG),
  );
  return out;
}

// ---- float64 CPU reference ------------------------------------------------------

export function sigmoid(g: number): number {
  return 1 / (1 + Math.exp(-g));
}

/** out = z (diag(s) + σ(g) M)ᵀ, float64. */
export function svftSpectralCpu(z: ArrayLike<number>, s: ArrayLike<number>, delta: ArrayLike<number>, gate: number, pat: SvftPattern): Float64Array {
  const n = pat.n,
    T = z.length / n,
    sg = sigmoid(gate);
  const out = new Float64Array(z.length);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < n; i++) out[t * n + i] = s[i] * z[t * n + i];
    for (let q = 0; q < pat.k; q++) out[t * n + pat.rows[q]] += sg * delta[q] * z[t * n + pat.cols[q]];
  }
  return out;
}
