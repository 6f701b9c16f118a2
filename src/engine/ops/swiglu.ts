/**
 * SwiGLU gating of the LLaMA MLP: out = silu(gate) * up, elementwise,
 * silu(g) = g sigmoid(g) = g / (1 + e^-g).
 *
 * Backward (s = sigmoid(g)):
 *   dgate += dout * up * s (1 + g (1 - s))
 *   dup   += dout * g s
 * One kernel writes both gradients; if only one input needs a gradient (or
 * gate and up are the same tensor, whose gradients would alias) the
 * single-output kernels run instead.
 */
import code from '../../../shaders/swiglu.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import type { Tensor } from '../tensor';
import { elementwise, grid1d, sameShape } from './add';

export function swiglu(e: Engine, gate: Tensor, up: Tensor, name?: string): Tensor {
  sameShape('swiglu', gate, up, 'gate', 'up');
  const n = gate.size;
  const out = e.empty(gate.shape, name);
  const run = (entry: string, bindings: { tensor: Tensor; write?: boolean }[]) => {
    const [name4, m] = elementwise(entry, n);
    e.dispatch(code, name4, params(m), bindings, grid1d(e, m));
  };
  run('swiglu_forward', [{ tensor: gate }, { tensor: up }, { tensor: out, write: true }]);
  if (e.tape && needsGrad(gate, up)) {
    out.requiresGrad = true;
    e.tape.record('swiglu', () => {
      const dout = out.grad;
      if (!dout) return;
      const ins = [{ tensor: dout }, { tensor: gate }, { tensor: up }];
      if (gate.requiresGrad && up.requiresGrad && gate !== up) {
        run('swiglu_backward', [...ins, { tensor: gate.gradOrZeros(), write: true }, { tensor: up.gradOrZeros(), write: true }]);
        return;
      }
      if (gate.requiresGrad) {
        run('swiglu_backward_gate', [...ins, { tensor: gate.gradOrZeros(), write: true }]);
      }
      if (up.requiresGrad) {
        run('swiglu_backward_up', [...ins, { tensor: up.gradOrZeros(), write: true }]);
      }
    });
  }
  return out;
}

/** Float64 CPU reference: out = g / (1 + e^-g) * u. */
export function swigluCpu(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const out = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    out[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
  return out;
}
