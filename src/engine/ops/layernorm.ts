/**
 * LayerNorm over the last dimension with weight and bias (torch nn.LayerNorm,
 * biased variance, eps inside the root). Legend: R rows, C channels.
 *
 *   mu = mean_c x,  rstd = 1/sqrt(mean_c (x − mu)² + eps),  xh = (x − mu)·rstd,
 *   y = xh ⊙ w + b
 *
 * Backward (g = dy ⊙ w):
 *   dx += rstd · (g − mean_c g − xh · mean_c(g ⊙ xh))
 *   dw += Σ_rows dy ⊙ xh,   db += Σ_rows dy
 * The forward keeps mu and rstd per row. dw/db are reduced deterministically
 * (chunked partial sums, then a fixed-order sum), as in rmsnorm.ts.
 * Used by the bottleneck adapters' ln_before / ln_after (METHODS.md §17).
 */
import code from '../../../shaders/layernorm.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import type { Tensor } from '../tensor';
import { grid1d } from './add';

/** torch nn.LayerNorm's default eps. */
export const LAYERNORM_EPS = 1e-5;

/** Rows up to this many channels run one thread per row; longer ones a workgroup per row (see layernorm.wgsl). */
export const LAYERNORM_ROW_THREAD_MAX_C = 256;
const MIN_ROWS_PER_CHUNK = 16;
const MAX_CHUNKS = 256;

function rowWorkgroup(C: number): number {
  let wg = 32;
  while (wg < C && wg < 256) wg *= 2;
  return wg;
}

function lnParams(rows: number, C: number, eps: number, rowsPerChunk = 0, nChunks = 0, direct = 0): ArrayBuffer {
  return params(rows, C, { f: eps }, rowsPerChunk, nChunks, direct);
}

export function layernorm(e: Engine, x: Tensor, w: Tensor, b: Tensor, eps = LAYERNORM_EPS, name?: string): Tensor {
  const C = x.shape[x.shape.length - 1];
  if (w.size !== C || b.size !== C)
    throw new Error(`layernorm ${name ?? ''}: weight [${w.shape}] and bias [${b.shape}] must both have ${C} values (x's last dimension)`);
  const rows = x.size / C;
  const y = e.empty(x.shape, name);
  const mu = e.empty([rows], 'layernorm.mu');
  const rstd = e.empty([rows], 'layernorm.rstd');
  const fwd = [{ tensor: x }, { tensor: w }, { tensor: b }, { tensor: y, write: true }, { tensor: mu, write: true }, { tensor: rstd, write: true }];
  if (C <= LAYERNORM_ROW_THREAD_MAX_C) e.dispatch(code, 'layernorm_forward_row', lnParams(rows, C, eps), fwd, grid1d(e, rows, 64));
  else e.dispatch(code, 'layernorm_forward', lnParams(rows, C, eps), fwd, grid1d(e, rows, 1), { WG: rowWorkgroup(C) });
  if (!(e.tape && needsGrad(x, w, b))) {
    mu.dispose();
    rstd.dispose();
    return y;
  }
  y.requiresGrad = true;
  e.tape.record('layernorm', () => {
    const dy = y.grad;
    if (!dy) return;
    if (x.requiresGrad) {
      const bind = [{ tensor: dy }, { tensor: x }, { tensor: w }, { tensor: mu }, { tensor: rstd }, { tensor: x.gradOrZeros(), write: true }];
      if (C <= LAYERNORM_ROW_THREAD_MAX_C) e.dispatch(code, 'layernorm_backward_row', lnParams(rows, C, 0), bind, grid1d(e, rows, 64));
      else e.dispatch(code, 'layernorm_backward', lnParams(rows, C, 0), bind, grid1d(e, rows, 1), { WG: rowWorkgroup(C) });
    }
    if (w.requiresGrad || b.requiresGrad) paramGrads(e, dy, x, mu, rstd, w, b, rows, C);
  });
  return y;
}

/** dw += Σ dy ⊙ xh, db += Σ dy (a frozen one of the two gets a scratch buffer). */
function paramGrads(e: Engine, dy: Tensor, x: Tensor, mu: Tensor, rstd: Tensor, w: Tensor, b: Tensor, rows: number, C: number): void {
  const dw = w.requiresGrad ? w.gradOrZeros() : e.zeros([C], 'layernorm.dw_unused');
  const db = b.requiresGrad ? b.gradOrZeros() : e.zeros([C], 'layernorm.db_unused');
  const nChunks = Math.max(1, Math.min(MAX_CHUNKS, Math.floor(rows / MIN_ROWS_PER_CHUNK)));
  const rowsPerChunk = Math.ceil(rows / nChunks);
  const inputs = [{ tensor: dy }, { tensor: x }, { tensor: mu }, { tensor: rstd }];
  if (nChunks === 1) {
    e.dispatch(
      code,
      'layernorm_backward_params_partial',
      lnParams(rows, C, 0, rowsPerChunk, 1, 1),
      [...inputs, { tensor: dw, write: true }, { tensor: db, write: true }],
      [Math.ceil(C / 64), 1],
    );
  } else {
    const pw = e.empty([nChunks, C], 'layernorm.dw_partial');
    const pb = e.empty([nChunks, C], 'layernorm.db_partial');
    const prm = lnParams(rows, C, 0, rowsPerChunk, nChunks, 0);
    e.dispatch(
      code,
      'layernorm_backward_params_partial',
      prm,
      [...inputs, { tensor: pw, write: true }, { tensor: pb, write: true }],
      [Math.ceil(C / 64), nChunks],
    );
    e.dispatch(
      code,
      'layernorm_backward_params_reduce',
      prm,
      [{ tensor: pw }, { tensor: pb }, { tensor: dw, write: true }, { tensor: db, write: true }],
      [Math.ceil(C / 64)],
    );
    pw.dispose();
    pb.dispose();
  }
  if (!w.requiresGrad) dw.dispose();
  if (!b.requiresGrad) db.dispose();
}

/** Float64 CPU reference. */
export function layernormCpu(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, rows: number, C: number, eps = LAYERNORM_EPS): Float64Array {
  const y = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[r * C + c];
    const mu = s / C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += (x[r * C + c] - mu) ** 2;
    const rstd = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = (x[r * C + c] - mu) * rstd * w[c] + b[c];
  }
  return y;
}
