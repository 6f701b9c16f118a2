/**
 * Elementwise activations by name, as transformers' ACT2FN spells them (the
 * Adapters library's `non_linearity`, P-tuning's ReLU, prefix projection's
 * tanh, LSTM gates): relu, tanh, sigmoid, silu (= swish), gelu (exact erf),
 * gelu_new (tanh approximation), leakyrelu (slope 0.01).
 *
 * Backward: dx += dout · act'(x) (the forward input is kept).
 */
import code from '../../../shaders/activation.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import type { Tensor } from '../tensor';
import { grid1d } from './add';

export const ACTIVATIONS = ['relu', 'tanh', 'sigmoid', 'silu', 'gelu', 'gelu_new', 'leakyrelu'] as const;
export type ActivationName = (typeof ACTIVATIONS)[number];

/** Aliases the libraries accept: swish = silu, gelu_orig = gelu, leaky_relu = leakyrelu. */
export function activationKind(name: string): ActivationName {
  const n = name.toLowerCase();
  const alias: Record<string, ActivationName> = { swish: 'silu', gelu_orig: 'gelu', leaky_relu: 'leakyrelu' };
  const k = (alias[n] ?? n) as ActivationName;
  if (!ACTIVATIONS.includes(k)) throw new Error(`Unknown activation '${name}': use one of ${ACTIVATIONS.join(', ')} (or swish)`);
  return k;
}

export function activation(e: Engine, x: Tensor, name: string, outName?: string): Tensor {
  const kind = activationKind(name);
  const KIND = ACTIVATIONS.indexOf(kind);
  const n = x.size;
  const y = e.empty(x.shape, outName ?? kind);
  e.dispatch(code, 'activation_forward', params(n), [{ tensor: x }, { tensor: y, write: true }], grid1d(e, n), { KIND });
  if (e.tape && x.requiresGrad) {
    y.requiresGrad = true;
    e.tape.record(kind, () => {
      const dout = y.grad;
      if (!dout) return;
      e.dispatch(code, 'activation_backward', params(n), [{ tensor: dout }, { tensor: x }, { tensor: x.gradOrZeros(), write: true }], grid1d(e, n), { KIND });
    });
  }
  return y;
}

function erf(x: number): number {
  // Float64 erf by its Maclaurin series (|x| < 3) or the continued fraction of erfc.
  const a = Math.abs(x);
  if (a < 3) {
    let sum = 0,
      term = a;
    for (let k = 0; k < 100; k++) {
      const t = term / (2 * k + 1);
      sum += t;
      term *= (-a * a) / (k + 1);
      if (Math.abs(t) < 1e-17) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(a) = exp(-a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
  let f = a;
  for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
  return Math.sign(x) * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f);
}

/** Float64 reference. */
export function activationCpu(x: ArrayLike<number>, name: string): Float64Array {
  const kind = activationKind(name);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    const s = 1 / (1 + Math.exp(-v));
    switch (kind) {
      case 'relu':
        out[i] = Math.max(v, 0);
        break;
      case 'tanh':
        out[i] = Math.tanh(v);
        break;
      case 'sigmoid':
        out[i] = s;
        break;
      case 'silu':
        out[i] = v * s;
        break;
      case 'gelu':
        out[i] = 0.5 * v * (1 + erf(v / Math.SQRT2));
        break;
      case 'gelu_new':
        out[i] = 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
        break;
      case 'leakyrelu':
        out[i] = v > 0 ? v : 0.01 * v;
        break;
    }
  }
  return out;
}
