/**
 * GaLore's AdamW (galore_torch.AdamW with correct_bias, METHODS.md §11): the
 * moment update on a projected gradient, and the unprojected full step. No
 * autograd (an optimizer op). It differs from torch AdamW (./adamw.ts) in two
 * places: eps is added to sqrt(v) before the bias correction, and weight
 * decay is applied after the update.
 *
 * For a gradient x (the projected Ĝ of a GaLore weight, or G of any other
 * parameter), t the 1-based step, clip the GPU clip coefficient:
 *   g = x · gradScale · clip[0]
 *   m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
 *   N = m / (√v + eps)
 *   step = lr · √(1 − β2^t) / (1 − β1^t)
 * galoreMoments writes N over x (the caller projects it back: p ← p − step ·
 * scale · project_back(N), then p ← p (1 − lr·wd)); galoreAdamwStep does the
 * whole unprojected step in place: p ← (p − step · N) (1 − lr·wd).
 */
import code from './galore_adamw.wgsl?raw';
import { params } from 'peft-studio/engine/engine';
import type { Engine } from 'peft-studio/engine/engine';
import type { Tensor } from 'peft-studio/engine/tensor';

export interface GaloreAdamOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** t, 1-based (after the increment). */
  step: number;
  /** Multiplies the gradient (host-side). Default 1. */
  gradScale?: number;
}

const WG = 256;

function elementGrid(e: Engine, n: number): { nx: number; grid: [number, number] } {
  const groups = Math.ceil(n / WG);
  const nx = Math.max(1, Math.min(groups, e.ctx.limits.maxComputeWorkgroupsPerDimension));
  return { nx, grid: [nx, Math.ceil(groups / nx)] };
}

/** step = lr · √(1 − β2^t) / (1 − β1^t), in float64. */
export function galoreStepSize(o: GaloreAdamOptions): number {
  checkStep(o.step);
  return (o.lr * Math.sqrt(1 - Math.pow(o.beta2, o.step))) / (1 - Math.pow(o.beta1, o.step));
}

function checkStep(step: number): void {
  if (!(Number.isInteger(step) && step >= 1)) throw new Error(`GaLore AdamW: step ${step} must be an integer >= 1`);
}

function args(n: number, nx: number, o: GaloreAdamOptions): ArrayBuffer {
  return params(
    n,
    nx,
    0,
    0,
    { f: 1 - o.beta1 },
    { f: o.beta2 },
    { f: 1 - o.beta2 },
    { f: o.eps },
    { f: galoreStepSize(o) },
    { f: 1 - o.lr * o.weightDecay },
    { f: o.gradScale ?? 1 },
    { f: 0 },
  );
}

/** Moments of the (projected) gradient `x`, updated in place; x is overwritten with N = m / (√v + eps). */
export function galoreMoments(e: Engine, x: Tensor, m: Tensor, v: Tensor, clip: Tensor, o: GaloreAdamOptions): void {
  const n = x.size;
  if (m.size !== n || v.size !== n) throw new Error(`galoreMoments '${x.name}': x ${x.shape}, m ${m.shape}, v ${v.shape} must have the same size`);
  const { nx, grid } = elementGrid(e, n);
  e.dispatch(
    code,
    'galore_moments',
    args(n, nx, o),
    [{ tensor: clip }, { tensor: x, write: true }, { tensor: m, write: true }, { tensor: v, write: true }],
    grid,
  );
}

/** The unprojected GaLore AdamW step on `param`, in place (moments too). */
export function galoreAdamwStep(e: Engine, param: Tensor, grad: Tensor, m: Tensor, v: Tensor, clip: Tensor, o: GaloreAdamOptions): void {
  const n = param.size;
  if (grad.size !== n || m.size !== n || v.size !== n) {
    throw new Error(`galoreAdamwStep '${param.name}': param ${param.shape}, grad ${grad.shape}, m ${m.shape}, v ${v.shape} must have the same size`);
  }
  const { nx, grid } = elementGrid(e, n);
  e.dispatch(
    code,
    'galore_adamw',
    args(n, nx, o),
    [{ tensor: grad }, { tensor: clip }, { tensor: param, write: true }, { tensor: m, write: true }, { tensor: v, write: true }],
    grid,
  );
}

/** Float64 reference of galoreMoments: updates m, v and returns N. */
export function galoreMomentsCpu(x: ArrayLike<number>, m: Float64Array, v: Float64Array, clip: number, o: GaloreAdamOptions): Float64Array {
  const N = new Float64Array(x.length);
  const s = (o.gradScale ?? 1) * clip;
  for (let i = 0; i < x.length; i++) {
    const g = x[i] * s;
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
    N[i] = m[i] / (Math.sqrt(v[i]) + o.eps);
  }
  return N;
}

/** Float64 reference of galoreAdamwStep, in place. */
export function galoreAdamwCpu(param: Float64Array, grad: ArrayLike<number>, m: Float64Array, v: Float64Array, clip: number, o: GaloreAdamOptions): void {
  const N = galoreMomentsCpu(grad, m, v, clip, o);
  const step = galoreStepSize(o);
  for (let i = 0; i < param.length; i++) {
    param[i] -= step * N[i];
    param[i] -= o.lr * o.weightDecay * param[i];
  }
}
