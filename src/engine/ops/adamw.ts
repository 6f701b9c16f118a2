/**
 * AdamW (torch.optim.AdamW semantics, amsgrad off), one dispatch per parameter,
 * plus the reductions for global gradient-norm clipping. No autograd here.
 *
 * Step t (1-based), gradient g (times gradScale, and times a GPU scalar when
 * given — the clip coefficient, so clipping needs no readback):
 *   p *= 1 - lr * wd
 *   m  = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
 *   mhat = m / (1 - b1^t)             vhat = v / (1 - b2^t)
 *   p -= lr * mhat / (sqrt(vhat) + eps)
 *
 * Clipping (torch.nn.utils.clip_grad_norm_): total = sum over parameters of
 * sumSquares(grad) (accumulate into one [1] tensor), coef = min(1, maxNorm /
 * (sqrt(total) + 1e-6)) via `clipCoefficient`, then `gradScaleTensor: coef`.
 */
import code from '../../../shaders/adamw.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import type { Tensor } from '../tensor';

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** t, 1-based. */
  step: number;
  /** Multiplies the gradient first (e.g. a host-side clip coefficient or 1 / accumulation steps). */
  gradScale?: number;
  /** A GPU [1] tensor that also multiplies the gradient (e.g. from `clipCoefficient`). */
  gradScaleTensor?: Tensor | null;
}

const WG = 256;

/** Elements over a 2-D grid of 256-thread workgroups: i = (wg.y * nx + wg.x) * 256 + lid. */
function elementGrid(e: Engine, n: number): { nx: number; grid: [number, number] } {
  const groups = Math.ceil(n / WG);
  const nx = Math.max(1, Math.min(groups, e.ctx.limits.maxComputeWorkgroupsPerDimension));
  return { nx, grid: [nx, Math.ceil(groups / nx)] };
}

/** One AdamW step on `param` in place, updating the moments `m` and `v` in place. */
export function adamwStep(e: Engine, param: Tensor, grad: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
  const n = param.size;
  if (grad.size !== n || m.size !== n || v.size !== n) {
    throw new Error(`adamwStep '${param.name}': param ${param.shape}, grad ${grad.shape}, m ${m.shape}, v ${v.shape} must have the same size`);
  }
  if (!(Number.isInteger(o.step) && o.step >= 1)) throw new Error(`adamwStep '${param.name}': step ${o.step} must be an integer >= 1`);
  const bc1 = 1 - Math.pow(o.beta1, o.step);
  const bc2 = 1 - Math.pow(o.beta2, o.step);
  const { nx, grid } = elementGrid(e, n);
  e.dispatch(
    code,
    'adamw_step',
    params(
      n,
      nx,
      o.gradScaleTensor ? 1 : 0,
      0,
      { f: 1 - o.lr * o.weightDecay },
      { f: 1 - o.beta1 },
      { f: o.beta2 },
      { f: 1 - o.beta2 },
      { f: o.eps },
      { f: o.lr / bc1 },
      { f: Math.sqrt(bc2) },
      { f: o.gradScale ?? 1 },
    ),
    [{ tensor: grad }, { tensor: o.gradScaleTensor ?? grad }, { tensor: param, write: true }, { tensor: m, write: true }, { tensor: v, write: true }],
    grid,
  );
}

/**
 * sum_i x_i^2 as a [1] tensor (or into `out`, adding when `accumulate`), by a
 * deterministic two-pass reduction: fixed partition into G <= 256 workgroup
 * partials, then one workgroup sums the partials in a fixed order.
 */
export function sumSquares(e: Engine, x: Tensor, o: { out?: Tensor; accumulate?: boolean } = {}): Tensor {
  const out = o.out ?? e.empty([1], 'sumSquares');
  const n = x.size;
  const G = Math.max(1, Math.min(256, Math.ceil(n / WG)));
  const partial = e.empty([G], 'sumSquares.partial');
  e.dispatch(code, 'sum_squares_partial', params(n, G, 0, 0), [{ tensor: x }, { tensor: partial, write: true }], [G]);
  e.dispatch(code, 'sum_squares_final', params(n, G, o.accumulate ? 1 : 0, 0), [{ tensor: partial }, { tensor: out, write: true }], [1]);
  partial.dispose();
  return out;
}

/** coef [1] = min(1, maxNorm / (sqrt(sumSq) + 1e-6)), torch's clip_grad_norm_ factor. */
export function clipCoefficient(e: Engine, sumSq: Tensor, maxNorm: number): Tensor {
  const coef = e.empty([1], 'clipCoefficient');
  e.dispatch(code, 'clip_coefficient', params({ f: maxNorm }), [{ tensor: sumSq }, { tensor: coef, write: true }], [1]);
  return coef;
}

/** Float64 reference of one step, in place on plain arrays (torch's formula order). */
export function adamwCpu(param: Float64Array, grad: ArrayLike<number>, m: Float64Array, v: Float64Array, o: AdamWOptions & { gradScaleValue?: number }): void {
  const bc1 = 1 - Math.pow(o.beta1, o.step);
  const bc2 = 1 - Math.pow(o.beta2, o.step);
  const scale = (o.gradScale ?? 1) * (o.gradScaleValue ?? 1);
  for (let i = 0; i < param.length; i++) {
    const g = grad[i] * scale;
    param[i] *= 1 - o.lr * o.weightDecay;
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
    const mhat = m[i] / bc1;
    const vhat = v[i] / bc2;
    param[i] -= (o.lr * mhat) / (Math.sqrt(vhat) + o.eps);
  }
}

/** Float64 sum of squares. */
export function sumSquaresCpu(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}
