/**
 * RMSNorm over the last dimension. Legend: R rows (leading dims flattened),
 * C channels.
 *
 *   rstd[r] = 1 / sqrt(mean_c x[r,c]^2 + eps),   y[r,c] = x[r,c] rstd[r] w[c]
 *
 * Backward (g = dy * w, a[r] = sum_c g[r,c] x[r,c]):
 *   dx[r,c] += rstd[r] g[r,c] - x[r,c] rstd[r]^3 a[r] / C
 *   dw[c]   += sum_r dy[r,c] x[r,c] rstd[r]
 * The forward keeps rstd for the backward (llm.c). dw is reduced over rows
 * deterministically (chunked partial sums, then a fixed-order sum), never with
 * float atomics.
 */
import code from '../../../shaders/rmsnorm.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import type { Tensor } from '../tensor';
import { grid1d } from './add';

/** Rows per dw partial-sum chunk, at least; chunks are capped so the partial buffer stays small. */
const MIN_ROWS_PER_CHUNK = 16;
const MAX_CHUNKS = 256;

/** Workgroup size for the per-row kernels: the power of two >= C, within 32..256. */
function rowWorkgroup(C: number): number {
  let wg = 32;
  while (wg < C && wg < 256) wg *= 2;
  return wg;
}

/**
 * Rows up to this many channels run one thread per row (v2: no barriers, see
 * rmsnorm.wgsl); longer rows one workgroup per row with a tree reduction (v1).
 * Measured on SwiftShader, 512 rows x 64, forward: v1 22-30 ms, v2 ~0.7-1.1 ms
 * (a vec4 form of v2 measured the same, 1.2 ms, and was dropped).
 */
export const RMSNORM_ROW_THREAD_MAX_C = 256;

function rmsParams(rows: number, C: number, eps: number, rowsPerChunk = 0, nChunks = 0, direct = 0): ArrayBuffer {
  return params(rows, C, { f: eps }, rowsPerChunk, nChunks, direct);
}

/** y = rmsnorm(x) * w over rows of C; writes y and rstd. No autograd. */
export function rmsnormForwardKernel(e: Engine, y: Tensor, rstd: Tensor, x: Tensor, w: Tensor, rows: number, C: number, eps: number): void {
  const bindings = [{ tensor: x }, { tensor: w }, { tensor: y, write: true }, { tensor: rstd, write: true }];
  if (C <= RMSNORM_ROW_THREAD_MAX_C) {
    e.dispatch(code, 'rmsnorm_forward_row', rmsParams(rows, C, eps), bindings, grid1d(e, rows, 64));
    return;
  }
  e.dispatch(code, 'rmsnorm_forward', rmsParams(rows, C, eps), bindings, grid1d(e, rows, 1), { WG: rowWorkgroup(C) });
}

/** dx += d rmsnorm / dx applied to dy. */
export function rmsnormBackwardKernel(e: Engine, dx: Tensor, dy: Tensor, x: Tensor, w: Tensor, rstd: Tensor, rows: number, C: number): void {
  const bindings = [{ tensor: dy }, { tensor: x }, { tensor: w }, { tensor: rstd }, { tensor: dx, write: true }];
  if (C <= RMSNORM_ROW_THREAD_MAX_C) {
    e.dispatch(code, 'rmsnorm_backward_row', rmsParams(rows, C, 0), bindings, grid1d(e, rows, 64));
    return;
  }
  e.dispatch(code, 'rmsnorm_backward', rmsParams(rows, C, 0), bindings, grid1d(e, rows, 1), { WG: rowWorkgroup(C) });
}

/** dw[c] += sum_r dy[r,c] x[r,c] rstd[r], deterministic. */
export function rmsnormBackwardDwKernel(e: Engine, dw: Tensor, dy: Tensor, x: Tensor, rstd: Tensor, rows: number, C: number): void {
  const nChunks = Math.max(1, Math.min(MAX_CHUNKS, Math.floor(rows / MIN_ROWS_PER_CHUNK)));
  const rowsPerChunk = Math.ceil(rows / nChunks);
  if (nChunks === 1) {
    e.dispatch(
      code,
      'rmsnorm_backward_dw_partial',
      rmsParams(rows, C, 0, rowsPerChunk, 1, 1),
      [{ tensor: dy }, { tensor: x }, { tensor: rstd }, { tensor: dw, write: true }],
      [Math.ceil(C / 64), 1],
    );
    return;
  }
  const partial = e.empty([nChunks, C], 'rmsnorm.dw_partial');
  const p = rmsParams(rows, C, 0, rowsPerChunk, nChunks, 0);
  e.dispatch(
    code,
    'rmsnorm_backward_dw_partial',
    p,
    [{ tensor: dy }, { tensor: x }, { tensor: rstd }, { tensor: partial, write: true }],
    [Math.ceil(C / 64), nChunks],
  );
  e.dispatch(code, 'rmsnorm_backward_dw_reduce', p, [{ tensor: partial }, { tensor: dw, write: true }], [Math.ceil(C / 64)]);
  partial.dispose();
}

/** y = x / rms(x) * w over the last dimension of x; w has shape [C]. */
export function rmsnorm(e: Engine, x: Tensor, w: Tensor, eps: number, name?: string): Tensor {
  const C = x.shape[x.shape.length - 1];
  if (w.size !== C) throw new Error(`rmsnorm ${name ?? ''}: weight has ${w.size} values, input's last dimension is ${C}`);
  const rows = x.size / C;
  const y = e.empty(x.shape, name);
  const rstd = e.empty([rows], name ? `${name}.rstd` : 'rmsnorm.rstd');
  rmsnormForwardKernel(e, y, rstd, x, w, rows, C, eps);
  if (e.tape && needsGrad(x, w)) {
    y.requiresGrad = true;
    e.tape.record('rmsnorm', () => {
      const dy = y.grad;
      if (!dy) return;
      if (x.requiresGrad) rmsnormBackwardKernel(e, x.gradOrZeros(), dy, x, w, rstd, rows, C);
      if (w.requiresGrad) rmsnormBackwardDwKernel(e, w.gradOrZeros(), dy, x, rstd, rows, C);
    });
  } else {
    rstd.dispose();
  }
  return y;
}

/** Float64 CPU reference: y = x rstd w, rstd = 1/sqrt(mean(x^2) + eps), per row of C. */
export function rmsnormCpu(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, C: number, eps: number): Float64Array {
  const y = new Float64Array(rows * C);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[r * C + c] ** 2;
    const rstd = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = x[r * C + c] * rstd * w[c];
  }
  return y;
}
