/**
 * Elementwise products with gradients to both inputs:
 *   mul(a, b)     y = a ⊙ b, same shapes (LSTM gates, MTP's P* ⊙ (cols·rows));
 *   mulVec(x, v)  y = x ⊙ v with v [C] broadcast over every row of x [..., C]
 *                 (IA3's learned scaling vectors, channel scaling).
 * Backward: da += dout ⊙ b, db += dout ⊙ a; dx += dout ⊙ v, dv += Σ_rows dout ⊙ x.
 */
import code from '../../../shaders/mul.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import type { Tensor } from '../tensor';
import { grid1d, sameShape } from './add';

export function mul(e: Engine, a: Tensor, b: Tensor, name?: string): Tensor {
  sameShape('mul', a, b);
  const n = a.size;
  const y = e.empty(a.shape, name ?? 'mul');
  e.dispatch(code, 'mul_forward', params(n, 1), [{ tensor: a }, { tensor: b }, { tensor: y, write: true }], grid1d(e, n));
  if (e.tape && needsGrad(a, b)) {
    y.requiresGrad = true;
    e.tape.record('mul', () => {
      const dout = y.grad;
      if (!dout) return;
      // a ⊙ a: both terms land in the same gradient, one after the other.
      if (a.requiresGrad)
        e.dispatch(code, 'mul_backward', params(n, 1), [{ tensor: dout }, { tensor: b }, { tensor: a.gradOrZeros(), write: true }], grid1d(e, n));
      if (b.requiresGrad)
        e.dispatch(code, 'mul_backward', params(n, 1), [{ tensor: dout }, { tensor: a }, { tensor: b.gradOrZeros(), write: true }], grid1d(e, n));
    });
  }
  return y;
}

export function mulVec(e: Engine, x: Tensor, v: Tensor, name?: string): Tensor {
  const C = x.shape.at(-1)!;
  if (v.size !== C) throw new Error(`mulVec: v has ${v.size} values, x's last dimension is ${C} (x [${x.shape}])`);
  const n = x.size;
  const y = e.empty(x.shape, name ?? 'mulvec');
  e.dispatch(code, 'mulvec_forward', params(n, C), [{ tensor: x }, { tensor: v }, { tensor: y, write: true }], grid1d(e, n));
  if (e.tape && needsGrad(x, v)) {
    y.requiresGrad = true;
    e.tape.record('mulvec', () => {
      const dout = y.grad;
      if (!dout) return;
      if (x.requiresGrad)
        e.dispatch(code, 'mulvec_backward_x', params(n, C), [{ tensor: dout }, { tensor: v }, { tensor: x.gradOrZeros(), write: true }], grid1d(e, n));
      if (v.requiresGrad)
        e.dispatch(code, 'mulvec_backward_v', params(n, C), [{ tensor: dout }, { tensor: x }, { tensor: v.gradOrZeros(), write: true }], grid1d(e, C));
    });
  }
  return y;
}

/** Float64 references. */
export function mulCpu(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from({ length: a.length }, (_, i) => a[i] * b[i]);
}

export function mulVecCpu(x: ArrayLike<number>, v: ArrayLike<number>): Float64Array {
  const C = v.length;
  return Float64Array.from({ length: x.length }, (_, i) => x[i] * v[i % C]);
}
