/**
 * The GPU op of my-method: y = x ⊙ (1 + s), s [C] over the last dimension of
 * x, with its tape closure for backward (kernel.wgsl) and a float64 CPU
 * reference for the tests. Backward: dx += dy ⊙ (1 + s), ds += Σ_rows dy ⊙ x.
 */
import code from './kernel.wgsl?raw';
import { params, type Engine } from 'peft-studio/engine/engine';
import { grid1d } from 'peft-studio/engine/ops/add';
import { needsGrad } from 'peft-studio/engine/tape';
import type { Tensor } from 'peft-studio/engine/tensor';

export function channelScale(e: Engine, x: Tensor, s: Tensor, name?: string): Tensor {
  const C = x.shape.at(-1)!;
  if (s.size !== C) throw new Error(`channelScale: s has ${s.size} values, x's last dimension is ${C} (x [${x.shape}])`);
  const n = x.size;
  const y = e.empty(x.shape, name ?? 'channel_scale');
  e.dispatch(code, 'scale_forward', params(n, C), [{ tensor: x }, { tensor: s }, { tensor: y, write: true }], grid1d(e, n));
  if (e.tape && needsGrad(x, s)) {
    y.requiresGrad = true;
    e.tape.record('channel_scale', () => {
      const dy = y.grad;
      if (!dy) return;
      if (x.requiresGrad)
        e.dispatch(code, 'scale_backward_x', params(n, C), [{ tensor: dy }, { tensor: s }, { tensor: x.gradOrZeros(), write: true }], grid1d(e, n));
      if (s.requiresGrad)
        e.dispatch(code, 'scale_backward_s', params(n, C), [{ tensor: dy }, { tensor: x }, { tensor: s.gradOrZeros(), write: true }], grid1d(e, C));
    });
  }
  return y;
}

/** Float64 reference of channelScale. */
export function channelScaleCpu(x: ArrayLike<number>, s: ArrayLike<number>): Float64Array {
  const C = s.length;
  return Float64Array.from({ length: x.length }, (_, i) => x[i] * (1 + s[i % C]));
}
