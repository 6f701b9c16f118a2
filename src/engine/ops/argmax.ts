/**
 * Row-wise argmax of x [N, V] (or [..., V]) into int32 indices: the first
 * maximum on ties (torch.argmax). No backward. Greedy scoring reads N indices
 * back instead of N·V logits (Qwen2.5: 4 bytes a row instead of 608 KB).
 *
 * `out` and `at` let row chunks of one batch write into one index tensor
 * (out[at + n]), read back once.
 */
import code from '../../../shaders/argmax.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import type { Tensor } from '../tensor';

export interface ArgmaxOptions {
  /** Write into this int32 tensor at row `at` instead of a new [N] tensor. */
  out?: Tensor;
  at?: number;
}

export function argmax(e: Engine, x: Tensor, o: ArgmaxOptions = {}): Tensor {
  const V = x.shape[x.shape.length - 1];
  const N = x.size / V;
  const at = o.at ?? 0;
  const out = o.out ?? e.empty([N], 'argmax');
  if (at + N > out.size) throw new Error(`argmax: rows [${at}, ${at + N}) do not fit the output [${out.shape}]`);
  const nx = Math.min(N, e.ctx.limits.maxComputeWorkgroupsPerDimension);
  e.dispatch(code, 'argmax_rows', params(N, V, nx, at), [{ tensor: x }, { tensor: out, write: true }], [nx, Math.ceil(N / nx)], {
    WG: V >= 4096 ? 256 : 64,
  });
  return out;
}

/** Reference: row-wise argmax of logits [rows, vocab] on the host (first maximum on ties). */
export function argmaxCpu(logits: ArrayLike<number>, rows: number, vocab: number): Int32Array {
  if (logits.length !== rows * vocab) throw new RangeError(`argmax: ${logits.length} logits for ${rows} rows × ${vocab}`);
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const o = r * vocab;
    let best = 0;
    for (let v = 1; v < vocab; v++) if (logits[o + v] > logits[o + best]) best = v;
    out[r] = best;
  }
  return out;
}
