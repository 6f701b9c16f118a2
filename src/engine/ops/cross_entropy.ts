/**
 * Fused softmax cross-entropy with ignore index -100 (torch.nn.functional.cross_entropy).
 * Legend: N rows (tokens), V vocabulary; logits [N, V], labels [N] (Int32).
 *
 *   L_n  = logsumexp_j x_nj - x_n,y_n           for y_n != -100, else 0
 *   mean = sum_n L_n / count,  count = #{n : y_n != -100}   (0 when count = 0)
 *   d x_nj += c_n (softmax_j(x_n) - [j == y_n]),  c_n = dloss / count (mean),
 *             dloss (sum), dloss_n (none); ignored rows get nothing.
 *
 * The count of non-ignored labels is computed on the GPU (a one-workgroup
 * fixed-order reduction that also sums the row losses), so the op never reads
 * back. Labels may be a GPU Int32 tensor or a host Int32Array; host labels are
 * range-checked (a clear error naming the row) and uploaded. On the GPU an
 * out-of-range label (not -100, outside [0, V)) makes its row loss NaN, which
 * poisons the mean loudly rather than silently training on garbage.
 *
 * Forward keeps the per-row logsumexp for backward (llm.c keeps probs; this
 * keeps N floats, not N * V).
 */
import code from '../../../shaders/cross_entropy.wgsl?raw';
import { ConfigError } from '../../errors';
import { params } from '../engine';
import type { Engine } from '../engine';
import type { Tensor } from '../tensor';
import { grid1d } from './add';

export const IGNORE_INDEX = -100;
export type CrossEntropyReduction = 'mean' | 'sum' | 'none';

export interface CrossEntropyOptions {
  /** 'mean' (default): scalar [1] over non-ignored rows; 'sum': scalar [1]; 'none': per-row losses [N], ignored rows 0. */
  reduction?: CrossEntropyReduction;
  name?: string;
}

const MODE: Record<CrossEntropyReduction, number> = { mean: 0, sum: 1, none: 2 };

/** Threads per row: 256 for large vocabularies, 64 when a row is short (fewer idle threads and barriers). */
export function crossEntropyThreads(V: number): number {
  return V >= 4096 ? 256 : 64;
}

/** Rows over a 2-D grid: row = wg.y * nx + wg.x. */
function rowGrid(e: Engine, N: number): { nx: number; grid: [number, number] } {
  const nx = Math.min(N, e.ctx.limits.maxComputeWorkgroupsPerDimension);
  return { nx, grid: [nx, Math.ceil(N / nx)] };
}

/** Throw if a host label is neither -100 nor in [0, V). */
export function checkLabels(labels: ArrayLike<number>, V: number, what = 'crossEntropy'): void {
  for (let n = 0; n < labels.length; n++) {
    const y = labels[n];
    if (y !== IGNORE_INDEX && !(Number.isInteger(y) && y >= 0 && y < V)) {
      throw new ConfigError(
        `${what}: label ${y} at row ${n} is outside the vocabulary [0, ${V}) and is not the ignore index ${IGNORE_INDEX}. ` +
          `Check that the tokenizer matches the model (vocab size ${V}) and that padding labels are -100.`,
      );
    }
  }
}

/**
 * Vocabularies up to this size (and V % 4 == 0) use the v2 kernels of
 * cross_entropy.wgsl: one thread per row for the forward (no barriers), one
 * per vec4 of logits for the backward. Larger V keep one workgroup per row.
 */
export const CE_ROW_MAX_V = 2048;

/**
 * Cross-entropy of logits [N, V] (or [..., V]) against labels [N]. Returns [1]
 * for 'mean' / 'sum', [N] for 'none'. Autograd into logits.
 */
export function crossEntropy(e: Engine, logits: Tensor, labels: Tensor | Int32Array, o: CrossEntropyOptions = {}): Tensor {
  const V = logits.shape[logits.shape.length - 1];
  const N = logits.size / V;
  const reduction = o.reduction ?? 'mean';
  const mode = MODE[reduction];
  if (mode === undefined) throw new ConfigError(`crossEntropy: reduction '${reduction}' is not one of mean, sum, none`);
  let lab: Tensor;
  if (labels instanceof Int32Array) {
    if (labels.length !== N) throw new ConfigError(`crossEntropy: ${labels.length} labels for ${N} rows of logits ${logits.shape}`);
    checkLabels(labels, V);
    lab = e.upload(labels, [N], 'labels');
  } else {
    if (labels.size !== N) throw new ConfigError(`crossEntropy: labels ${labels.shape} do not match the ${N} rows of logits ${logits.shape}`);
    lab = labels;
  }
  const { nx, grid } = rowGrid(e, N);
  const wg = { WG: crossEntropyThreads(V) };
  const losses = e.empty([N], reduction === 'none' ? o.name : 'ce.losses');
  const lse = e.empty([N], 'ce.lse');
  const rowKernels = V % 4 === 0 && V <= CE_ROW_MAX_V;
  const fwdBindings = [{ tensor: logits }, { tensor: lab }, { tensor: losses, write: true }, { tensor: lse, write: true }];
  if (rowKernels) e.dispatch(code, 'cross_entropy_forward_row', params(N, V, nx, mode), fwdBindings, grid1d(e, N, 64));
  else e.dispatch(code, 'cross_entropy_forward', params(N, V, nx, mode), fwdBindings, grid, wg);
  let out = losses;
  let count: Tensor | null = null;
  if (reduction !== 'none') {
    out = e.empty([1], o.name ?? 'ce.loss');
    count = e.empty([1], 'ce.count');
    e.dispatch(
      code,
      'cross_entropy_reduce',
      params(N, V, nx, mode),
      [{ tensor: losses }, { tensor: lab }, { tensor: out, write: true }, { tensor: count, write: true }],
      [1],
      wg,
    );
  }
  if (e.tape && logits.requiresGrad) {
    out.requiresGrad = true;
    e.tape.record('cross_entropy', () => {
      const dloss = out.grad;
      if (!dloss) return;
      const bindings = [
        { tensor: logits },
        { tensor: lab },
        { tensor: lse },
        { tensor: dloss },
        { tensor: count ?? lse },
        { tensor: logits.gradOrZeros(), write: true },
      ];
      if (rowKernels) e.dispatch(code, 'cross_entropy_backward4', params(N, V, nx, mode), bindings, grid1d(e, (N * V) / 4));
      else e.dispatch(code, 'cross_entropy_backward', params(N, V, nx, mode), bindings, grid, wg);
    });
  } else {
    // Nothing will read the saved state: back to the pool once submitted.
    lse.dispose();
    count?.dispose();
    if (out !== losses) losses.dispose();
    if (lab !== labels) lab.dispose();
  }
  return out;
}

/** Float64 reference: [1] for 'mean' / 'sum', per-row [N] for 'none'. */
export function crossEntropyCpu(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  N: number,
  V: number,
  reduction: CrossEntropyReduction = 'mean',
): Float64Array {
  const rows = new Float64Array(N);
  let sum = 0,
    count = 0;
  for (let n = 0; n < N; n++) {
    const y = labels[n];
    if (y === IGNORE_INDEX) continue;
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, logits[n * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[n * V + j] - m);
    rows[n] = m + Math.log(s) - logits[n * V + y];
    sum += rows[n];
    count++;
  }
  if (reduction === 'none') return rows;
  return Float64Array.of(reduction === 'sum' ? sum : count ? sum / count : 0);
}
