/**
 * Float64 CPU singular value decomposition for SVD-initialised methods
 * (PiSSA §8, SVFT §10).
 *
 * Layout: W is row-major rows×cols. Results are thin: with k the number of
 * triplets returned,
 *   U  rows×k  row-major (column j = left singular vector j)
 *   S  k       descending, ≥ 0
 *   V  cols×k  row-major (column j = right singular vector j)
 * so W ≈ U diag(S) Vᵀ, i.e. W[i][c] = Σ_j U[i*k+j] · S[j] · V[c*k+j].
 * (V is torch's `Vh.T` / `svd_lowrank`'s V; `Vh[:r]` of torch is Vᵀ here.)
 *
 * Sign convention (SVD vectors are defined up to a shared sign per triplet):
 * each left vector's largest-magnitude component is positive, so results are
 * deterministic. PiSSA's W_res = W − U_r S_r V_rᵀ does not depend on it.
 *
 * Exact path, all triplets (`svdFull`): Householder QR reduces the tall side
 * to a square R; the eigenvectors of RᵀR precondition R, and one-sided
 * (Hestenes) Jacobi sweeps polish the columns of R·V₀ until they are
 * orthogonal to working precision (2–3 sweeps).
 * Exact path, top r (`svdTopR(…, -1)`): eigenvectors of the smaller Gram
 * matrix, then one Rayleigh–Ritz step on W (svdFull when r > min(rows, cols)/2).
 * Randomized path (`svdTopR(…, iters ≥ 0)`): torch.svd_lowrank's algorithm
 * (Halko et al. 2011, alg. 4.4): a seeded Gaussian sketch Ω (cols×q), Q =
 * orth(W Ω), then `iters` subspace iterations Q = orth(W orth(Wᵀ Q)), and the
 * exact SVD of the small q×cols matrix QᵀW. q = r + oversample (torch: q = r).
 */

export interface SvdResult {
  /** rows×k, row-major. */
  U: Float64Array;
  /** k singular values, descending. */
  S: Float64Array;
  /** cols×k, row-major. */
  V: Float64Array;
  /** Number of triplets (columns of U and V). */
  k: number;
}

export interface SvdOptions {
  /** Seed of the Gaussian sketch (randomized path). Default 0. */
  seed?: number;
  /** Extra sketch columns beyond r (randomized path). Default 0, as torch.svd_lowrank(q=r). */
  oversample?: number;
}

type Matrix = Float64Array | Float32Array;

/** Thin SVD of a rows×cols matrix: k = min(rows, cols) triplets. */
export function svdFull(W: Matrix, rows: number, cols: number): SvdResult {
  checkShape(W, rows, cols);
  if (rows >= cols) return svdTall(W, rows, cols);
  // Wide: SVD of Wᵀ (cols×rows, tall) and swap the roles of U and V.
  const t = svdTall(transpose(W, rows, cols), cols, rows);
  const out = { U: t.V, S: t.S, V: t.U, k: t.k };
  fixSigns(out, rows, cols);
  return out;
}

/**
 * The top-r singular triplets. iters = -1: exact (PEFT's exact PiSSA init: torch.linalg.svd
 * truncated); iters ≥ 0: randomized subspace iteration with that many power
 * iterations (PEFT's "pissa_niter_<iters>", torch.svd_lowrank(q=r)).
 */
export function svdTopR(W: Matrix, rows: number, cols: number, r: number, iters: number, opts: SvdOptions = {}): SvdResult {
  checkShape(W, rows, cols);
  const kmax = Math.min(rows, cols);
  if (!Number.isInteger(r) || r < 1 || r > kmax) throw new RangeError(`svdTopR: rank r=${r} must be an integer in [1, min(rows, cols)=${kmax}].`);
  if (!Number.isInteger(iters) || iters < -1)
    throw new RangeError(`svdTopR: iters=${iters} must be -1 (exact) or a non-negative integer (subspace iterations).`);
  const A = W instanceof Float64Array ? W : Float64Array.from(W);
  if (iters === -1) return exactTopR(A, rows, cols, r);

  const q = Math.min(kmax, r + Math.max(0, opts.oversample ?? 0));
  const gauss = gaussian(opts.seed ?? 0);
  // Column-major sketch blocks: Y (rows×q) and Z (cols×q), column j contiguous.
  const omega = new Float64Array(cols * q);
  for (let i = 0; i < omega.length; i++) omega[i] = gauss();
  let Y = mulA(A, rows, cols, omega, q); // W Ω
  orthonormalize(Y, rows, q);
  for (let it = 0; it < iters; it++) {
    const Z = mulAt(A, rows, cols, Y, q); // Wᵀ Q
    orthonormalize(Z, cols, q);
    Y = mulA(A, rows, cols, Z, q); // W Q'
    orthonormalize(Y, rows, q);
  }
  return rayleighRitz(A, rows, cols, Y, q, r);
}

/**
 * Exact top-r: eigenvectors of the smaller Gram matrix (WᵀW or WWᵀ, Householder
 * tridiagonalisation + implicit QL), then one Rayleigh–Ritz step on W itself,
 * which removes the Gram matrix's squaring of the error from the top triplets.
 * Several times faster than the full Jacobi SVD when r ≪ min(rows, cols).
 */
function exactTopR(A: Float64Array, rows: number, cols: number, r: number): SvdResult {
  const kmax = Math.min(rows, cols);
  if (2 * r > kmax) return truncate(svdFull(A, rows, cols), rows, cols, r);
  const tall = rows >= cols;
  const n = kmax;
  // G (n×n, symmetric, full storage) = WᵀW (tall) or WWᵀ (wide).
  const G = new Float64Array(n * n);
  // Dot products of contiguous rows (of Wᵀ when tall): register accumulation, no read-modify-write of G.
  const X = tall ? transpose(A, rows, cols) : A;
  const len = tall ? rows : cols;
  for (let a = 0; a < n; a++) {
    const ao = a * len;
    for (let b = a; b < n; b++) {
      const bo = b * len;
      let s = 0;
      for (let c = 0; c < len; c++) s += X[ao + c] * X[bo + c];
      G[a * n + b] = s;
    }
  }
  for (let a = 0; a < n; a++) for (let b = a + 1; b < n; b++) G[b * n + a] = G[a * n + b];
  const d = symmetricEigen(G, n); // G now holds eigenvectors, column j at G[j*n ..]
  const order = Array.from({ length: n }, (_, j) => j)
    .sort((a, b) => d[b] - d[a])
    .slice(0, r);
  const top = new Float64Array(n * r);
  order.forEach((j, k) => top.set(G.subarray(j * n, j * n + n), k * n));
  // Y: an orthonormal basis of the left singular subspace (rows×r, column-major).
  const Y = tall ? mulA(A, rows, cols, top, r) : top;
  orthonormalize(Y, rows, r);
  return rayleighRitz(A, rows, cols, Y, r, r);
}

/**
 * Given an orthonormal rows×q basis Q (column-major), the SVD of the small
 * q×cols matrix QᵀW, lifted back: U = Q U_b. Returns the top r triplets.
 */
function rayleighRitz(A: Float64Array, rows: number, cols: number, Y: Float64Array, q: number, r: number): SvdResult {
  // B = Qᵀ W (q×cols, row-major): row j = Σ_i Q[i,j] W[i,:].
  const Bm = mulAt(A, rows, cols, Y, q); // column-major cols×q = (QᵀW)ᵀ, i.e. row-major q×cols
  const small = svdFull(Bm, q, cols); // U_b q×q', V cols×q'
  const kb = small.k;
  // U = Q U_b (rows×kb).
  const U = new Float64Array(rows * kb);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < q; j++) {
      const qij = Y[j * rows + i];
      if (qij === 0) continue;
      for (let c = 0; c < kb; c++) U[i * kb + c] += qij * small.U[j * kb + c];
    }
  }
  const out = { U, S: small.S, V: small.V, k: kb };
  fixSigns(out, rows, cols);
  return truncate(out, rows, cols, r);
}

// ---------------------------------------------------------------------------

function checkShape(W: Matrix, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 1 || cols < 1) throw new RangeError(`svd: shape ${rows}×${cols} must be positive integers.`);
  if (W.length !== rows * cols) throw new RangeError(`svd: matrix has ${W.length} values, expected rows·cols = ${rows}·${cols} = ${rows * cols}.`);
}

function transpose(W: Matrix, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let c = 0; c < cols; c++) t[c * rows + i] = W[i * cols + c];
  return t;
}

function truncate(s: SvdResult, rows: number, cols: number, r: number): SvdResult {
  if (r === s.k) return s;
  const U = new Float64Array(rows * r);
  const V = new Float64Array(cols * r);
  for (let i = 0; i < rows; i++) for (let j = 0; j < r; j++) U[i * r + j] = s.U[i * s.k + j];
  for (let i = 0; i < cols; i++) for (let j = 0; j < r; j++) V[i * r + j] = s.V[i * s.k + j];
  return { U, S: s.S.slice(0, r), V, k: r };
}

/** Make each left vector's largest-|·| component positive (flip U and V columns together). */
function fixSigns(s: SvdResult, rows: number, cols: number): void {
  const k = s.k;
  for (let j = 0; j < k; j++) {
    let best = 0;
    for (let i = 0; i < rows; i++) if (Math.abs(s.U[i * k + j]) > Math.abs(best)) best = s.U[i * k + j];
    if (best >= 0) continue;
    for (let i = 0; i < rows; i++) s.U[i * k + j] = -s.U[i * k + j];
    for (let i = 0; i < cols; i++) s.V[i * k + j] = -s.V[i * k + j];
  }
}

/** Thin SVD of a tall matrix (rows ≥ cols): Householder QR, then Jacobi on R. */
function svdTall(W: Matrix, m: number, n: number): SvdResult {
  // A column-major m×n copy; Householder QR in place (R in the upper triangle,
  // reflectors v_j below the diagonal with v_j[j] implicit 1, factors in tau).
  const A = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let c = 0; c < n; c++) A[c * m + i] = W[i * n + c];
  const useQr = m > n;
  const tau = new Float64Array(n);
  if (useQr) householderQr(A, m, n, tau);
  // R (n×n) column-major, as the working matrix for one-sided Jacobi.
  const R = new Float64Array(n * n);
  if (useQr) {
    for (let c = 0; c < n; c++) for (let i = 0; i <= c; i++) R[c * n + i] = A[c * m + i];
  } else {
    R.set(A);
  }
  const { sigma, Ur, V } = jacobi(R, n);
  // U = Q [Ur; 0]: apply reflectors H_0 … H_{n-1} (Q = H_0 H_1 … H_{n-1}) to the
  // padded columns, last reflector first. Column-major m×n.
  const Ucm = new Float64Array(m * n);
  for (let c = 0; c < n; c++) for (let i = 0; i < n; i++) Ucm[c * m + i] = Ur[c * n + i];
  if (useQr) {
    for (let j = n - 1; j >= 0; j--) {
      const t = tau[j];
      if (t === 0) continue;
      for (let c = 0; c < n; c++) {
        const col = c * m;
        let dot = Ucm[col + j];
        for (let i = j + 1; i < m; i++) dot += A[j * m + i] * Ucm[col + i];
        dot *= t;
        Ucm[col + j] -= dot;
        for (let i = j + 1; i < m; i++) Ucm[col + i] -= dot * A[j * m + i];
      }
    }
  }
  const U = new Float64Array(m * n);
  for (let c = 0; c < n; c++) for (let i = 0; i < m; i++) U[i * n + c] = Ucm[c * m + i];
  const Vr = new Float64Array(n * n);
  for (let c = 0; c < n; c++) for (let i = 0; i < n; i++) Vr[i * n + c] = V[c * n + i];
  const out = { U, S: sigma, V: Vr, k: n };
  fixSigns(out, m, n);
  return out;
}

/** In-place Householder QR of a column-major m×n matrix (m > n), LAPACK dgeqr2 layout. */
function householderQr(A: Float64Array, m: number, n: number, tau: Float64Array): void {
  for (let j = 0; j < n; j++) {
    const col = j * m;
    let norm2 = 0;
    for (let i = j + 1; i < m; i++) norm2 += A[col + i] * A[col + i];
    const alpha = A[col + j];
    if (norm2 === 0) {
      tau[j] = 0;
      continue;
    }
    const beta = -Math.sign(alpha || 1) * Math.sqrt(alpha * alpha + norm2);
    tau[j] = (beta - alpha) / beta;
    const scale = 1 / (alpha - beta);
    for (let i = j + 1; i < m; i++) A[col + i] *= scale;
    A[col + j] = beta;
    // Apply H_j = I − τ v vᵀ to the remaining columns.
    for (let c = j + 1; c < n; c++) {
      const cc = c * m;
      let dot = A[cc + j];
      for (let i = j + 1; i < m; i++) dot += A[col + i] * A[cc + i];
      dot *= tau[j];
      A[cc + j] -= dot;
      for (let i = j + 1; i < m; i++) A[cc + i] -= dot * A[col + i];
    }
  }
}

/**
 * One-sided Jacobi on a column-major n×n matrix G (overwritten): rotate column
 * pairs until all are mutually orthogonal (|a_p·a_q| ≤ ε‖a_p‖‖a_q‖). Then
 * G = U Σ Vᵀ with σ_j = ‖a_j‖, u_j = a_j/σ_j. Returns sorted, column-major.
 */
function jacobi(G0: Float64Array, n: number): { sigma: Float64Array; Ur: Float64Array; V: Float64Array } {
  // Precondition: with V₀ the eigenvectors of GᵀG, the columns of G V₀ are
  // orthogonal up to rounding, so the Jacobi sweeps below only polish (2–3
  // sweeps instead of ~15 on a flat spectrum).
  const V = gramEigenvectors(G0, n);
  const G = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const gj = j * n;
    for (let c = 0; c < n; c++) {
      const v = V[j * n + c];
      if (v === 0) continue;
      const gc = c * n;
      for (let i = 0; i < n; i++) G[gj + i] += G0[gc + i] * v;
    }
  }
  const norms = new Float64Array(n);
  const eps = 2.220446049250313e-16;
  const tol = n * eps;
  for (let sweep = 0; sweep < 80; sweep++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      const col = j * n;
      for (let i = 0; i < n; i++) s += G[col + i] * G[col + i];
      norms[j] = s;
    }
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      const cp = p * n;
      for (let q = p + 1; q < n; q++) {
        const alpha = norms[p];
        const beta = norms[q];
        if (alpha === 0 || beta === 0) continue;
        const cq = q * n;
        let gamma = 0;
        for (let i = 0; i < n; i++) gamma += G[cp + i] * G[cq + i];
        if (Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < n; i++) {
          const gp = G[cp + i];
          const gq = G[cq + i];
          G[cp + i] = c * gp - s * gq;
          G[cq + i] = s * gp + c * gq;
          const vp = V[cp + i];
          const vq = V[cq + i];
          V[cp + i] = c * vp - s * vq;
          V[cq + i] = s * vp + c * vq;
        }
        norms[p] = alpha - t * gamma;
        norms[q] = beta + t * gamma;
      }
    }
    if (!rotated) break;
  }
  // σ_j = ‖a_j‖ (recomputed), sort descending.
  const sig = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += G[j * n + i] * G[j * n + i];
    sig[j] = Math.sqrt(s);
  }
  const order = Array.from({ length: n }, (_, j) => j).sort((a, b) => sig[b] - sig[a]);
  const sigma = new Float64Array(n);
  const Ur = new Float64Array(n * n);
  const Vs = new Float64Array(n * n);
  const small = (sig[order[0]] || 0) * n * eps;
  const deficient: number[] = [];
  for (let k = 0; k < n; k++) {
    const j = order[k];
    sigma[k] = sig[j];
    Vs.set(V.subarray(j * n, j * n + n), k * n);
    if (sig[j] > small && sig[j] > 0) {
      for (let i = 0; i < n; i++) Ur[k * n + i] = G[j * n + i] / sig[j];
    } else {
      deficient.push(k);
    }
  }
  // Numerically zero singular values: any orthonormal completion of U is valid.
  if (deficient.length) completeBasis(Ur, n, n, deficient);
  return { sigma, Ur, V: Vs };
}

/** Eigenvectors of GᵀG for a column-major n×n G, as a column-major n×n matrix (column j = eigenvector j). */
function gramEigenvectors(G: Float64Array, n: number): Float64Array {
  // Z[k][j] lives at Z[j*n + k]; start from the symmetric Gram matrix.
  const Z = new Float64Array(n * n);
  for (let a = 0; a < n; a++) {
    for (let b = a; b < n; b++) {
      let s = 0;
      const ga = a * n;
      const gb = b * n;
      for (let i = 0; i < n; i++) s += G[ga + i] * G[gb + i];
      Z[a * n + b] = s;
      Z[b * n + a] = s;
    }
  }
  symmetricEigen(Z, n);
  return Z;
}

/**
 * Eigen-decomposition of a symmetric n×n matrix Z (full storage), in place:
 * Z becomes the eigenvectors (column j at Z[j*n ..]), the eigenvalues are
 * returned, unsorted. Householder tridiagonalisation followed by the implicit
 * QL algorithm (EISPACK tred2/tql2), written for column-major storage so every
 * inner loop runs over contiguous memory.
 */
function symmetricEigen(Z: Float64Array, n: number): Float64Array {
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  tridiagonalize(Z, n, d, e);
  tridiagonalQl(Z, n, d, e);
  return d;
}

/** Householder reduction of the symmetric matrix in Z to tridiagonal (d, e); Z becomes the transform. */
function tridiagonalize(Z: Float64Array, n: number, d: Float64Array, e: Float64Array): void {
  const at = (k: number, j: number) => j * n + k; // element (k, j)
  for (let j = 0; j < n; j++) d[j] = Z[at(n - 1, j)];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0;
    let h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = Z[at(i - 1, j)];
        Z[at(i, j)] = 0;
        Z[at(j, i)] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j];
        Z[at(j, i)] = f;
        const cj = j * n;
        g = e[j] + Z[cj + j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          g += Z[cj + k] * d[k];
          e[k] += Z[cj + k] * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        const cj = j * n;
        for (let k = j; k <= i - 1; k++) Z[cj + k] -= f * e[k] + g * d[k];
        d[j] = Z[at(i - 1, j)];
        Z[at(i, j)] = 0;
      }
    }
    d[i] = h;
  }
  // Accumulate the transformations.
  for (let i = 0; i < n - 1; i++) {
    Z[at(n - 1, i)] = Z[at(i, i)];
    Z[at(i, i)] = 1;
    const h = d[i + 1];
    const ci1 = (i + 1) * n;
    if (h !== 0) {
      for (let k = 0; k <= i; k++) d[k] = Z[ci1 + k] / h;
      for (let j = 0; j <= i; j++) {
        const cj = j * n;
        let g = 0;
        for (let k = 0; k <= i; k++) g += Z[ci1 + k] * Z[cj + k];
        for (let k = 0; k <= i; k++) Z[cj + k] -= g * d[k];
      }
    }
    for (let k = 0; k <= i; k++) Z[ci1 + k] = 0;
  }
  for (let j = 0; j < n; j++) {
    d[j] = Z[at(n - 1, j)];
    Z[at(n - 1, j)] = 0;
  }
  Z[at(n - 1, n - 1)] = 1;
  e[0] = 0;
}

/** Implicit QL iterations on the tridiagonal (d, e), accumulating rotations into Z's columns. */
function tridiagonalQl(Z: Float64Array, n: number, d: Float64Array, e: Float64Array): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  let f = 0;
  let tst1 = 0;
  const eps = 2.220446049250313e-16;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n - 1 && Math.abs(e[m]) > eps * tst1) m++;
    if (m > l) {
      for (let iter = 0; iter < 200; iter++) {
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1];
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          const ci = i * n;
          const ci1 = (i + 1) * n;
          for (let k = 0; k < n; k++) {
            const zh = Z[ci1 + k];
            const zi = Z[ci + k];
            Z[ci1 + k] = s * zi + c * zh;
            Z[ci + k] = c * zi - s * zh;
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
        if (!(Math.abs(e[l]) > eps * tst1)) break;
      }
    }
    d[l] = d[l] + f;
    e[l] = 0;
  }
}

/** Fill the listed columns of a column-major m×k matrix with unit vectors orthogonal to all others. */
function completeBasis(Q: Float64Array, m: number, k: number, cols: number[]): void {
  const filled = new Set<number>(Array.from({ length: k }, (_, j) => j).filter((j) => !cols.includes(j)));
  let e = 0;
  for (const j of cols) {
    for (; e < m; e++) {
      const v = new Float64Array(m);
      v[e] = 1;
      for (let pass = 0; pass < 2; pass++) {
        for (const f of filled) {
          let d = 0;
          for (let i = 0; i < m; i++) d += Q[f * m + i] * v[i];
          for (let i = 0; i < m; i++) v[i] -= d * Q[f * m + i];
        }
      }
      let nrm = 0;
      for (let i = 0; i < m; i++) nrm += v[i] * v[i];
      nrm = Math.sqrt(nrm);
      if (nrm > 1e-6) {
        for (let i = 0; i < m; i++) Q[j * m + i] = v[i] / nrm;
        filled.add(j);
        e++;
        break;
      }
    }
  }
}

/** Y = A X: A row-major rows×cols, X column-major cols×q → Y column-major rows×q. Row-outer so each row of A is read once. */
function mulA(A: Float64Array, rows: number, cols: number, X: Float64Array, q: number): Float64Array {
  const Y = new Float64Array(rows * q);
  for (let i = 0; i < rows; i++) {
    const ao = i * cols;
    for (let j = 0; j < q; j++) {
      const xo = j * cols;
      let s = 0;
      for (let c = 0; c < cols; c++) s += A[ao + c] * X[xo + c];
      Y[j * rows + i] = s;
    }
  }
  return Y;
}

/** Z = Aᵀ Y: A row-major rows×cols, Y column-major rows×q → Z column-major cols×q. Row-outer so each row of A is read once. */
function mulAt(A: Float64Array, rows: number, cols: number, Y: Float64Array, q: number): Float64Array {
  const Z = new Float64Array(cols * q);
  for (let i = 0; i < rows; i++) {
    const ao = i * cols;
    for (let j = 0; j < q; j++) {
      const y = Y[j * rows + i];
      if (y === 0) continue;
      const zo = j * cols;
      for (let c = 0; c < cols; c++) Z[zo + c] += A[ao + c] * y;
    }
  }
  return Z;
}

/** Orthonormalise the q columns of a column-major m×q matrix in place (modified Gram–Schmidt, twice). */
function orthonormalize(Y: Float64Array, m: number, q: number): void {
  const dead: number[] = [];
  for (let j = 0; j < q; j++) {
    const cj = j * m;
    let before = 0;
    for (let i = 0; i < m; i++) before += Y[cj + i] * Y[cj + i];
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        if (dead.includes(p)) continue;
        const cp = p * m;
        let d = 0;
        for (let i = 0; i < m; i++) d += Y[cp + i] * Y[cj + i];
        for (let i = 0; i < m; i++) Y[cj + i] -= d * Y[cp + i];
      }
    }
    let nrm = 0;
    for (let i = 0; i < m; i++) nrm += Y[cj + i] * Y[cj + i];
    nrm = Math.sqrt(nrm);
    if (nrm <= 1e-12 * Math.sqrt(before) || nrm === 0) {
      Y.fill(0, cj, cj + m);
      dead.push(j);
    } else {
      for (let i = 0; i < m; i++) Y[cj + i] /= nrm;
    }
  }
  if (dead.length) completeBasis(Y, m, q, dead);
}

/** Seeded standard normal generator (mulberry32 + Box–Muller). */
function gaussian(seed: number): () => number {
  let a = (seed >>> 0) ^ 0x9e3779b9;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    let u = 0;
    while (u === 0) u = uniform();
    const v = uniform();
    const rad = Math.sqrt(-2 * Math.log(u));
    spare = rad * Math.sin(2 * Math.PI * v);
    return rad * Math.cos(2 * Math.PI * v);
  };
}
