/**
 * Residual add: out = a + b (same shapes).
 *
 * Backward, with upstream dout: da += dout, db += dout.
 */
import code from '../../../shaders/add.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import type { Tensor } from '../tensor';

/** Threads per workgroup of the elementwise kernels (add, swiglu, rope, embedding). */
export const ELEMENTWISE_WG = 256;

/**
 * Workgroup grid covering `n` threads of `wg` per workgroup: 1-D while it fits
 * in maxComputeWorkgroupsPerDimension (65535 by default), else 2-D. Kernels
 * recover the flat index as gid.x + gid.y * num_workgroups.x * wg.
 */
export function grid1d(e: Engine, n: number, wg = ELEMENTWISE_WG): [number, number] {
  const maxPerDim = e.ctx.limits.maxComputeWorkgroupsPerDimension;
  const groups = Math.ceil(n / wg);
  if (groups <= maxPerDim) return [groups, 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y];
}

export function sameShape(op: string, a: Tensor, b: Tensor, an = 'a', bn = 'b'): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new Error(`${op}: ${an} [${a.shape}] and ${bn} [${b.shape}] must have the same shape (no broadcasting)`);
  }
}

/** dx += dout, elementwise over n values. */
export function accumulateKernel(e: Engine, dx: Tensor, dout: Tensor, n: number): void {
  const [entry, m] = n % 4 === 0 ? ['add_backward4', n / 4] : ['add_backward', n];
  e.dispatch(code, entry, params(m), [{ tensor: dout }, { tensor: dx, write: true }], grid1d(e, m));
}

/**
 * Elementwise kernels come in scalar and vec4 entry points (`<name>` and
 * `<name>4`, the latter taking n / 4 vec4s): vec4 when n % 4 == 0. On
 * SwiftShader a storage access costs about the same at any width, so the vec4
 * kernels run ~3x faster; on GPUs they are at least as fast.
 */
export function elementwise(entry: string, n: number): [string, number] {
  return n % 4 === 0 ? [`${entry}4`, n / 4] : [entry, n];
}

export interface AddOptions {
  /**
   * Write into this tensor instead of a new one. It may be `a` or `b` itself
   * (in-place residual add, dst += src): that runs the accumulate kernel and
   * is not differentiable.
   */
  out?: Tensor;
  name?: string;
}

export function add(e: Engine, a: Tensor, b: Tensor, opts: AddOptions = {}): Tensor {
  sameShape('add', a, b);
  const n = a.size;
  const out = opts.out;
  if (out && out.size !== n) throw new Error(`add ${opts.name ?? ''}: out has ${out.size} values, inputs ${n}`);
  if (out && (out.buffer === a.buffer || out.buffer === b.buffer)) {
    if (e.tape && needsGrad(a, b)) {
      throw new Error(`add ${opts.name ?? ''}: in-place add (out is an input) is not differentiable; use a new output while recording a tape`);
    }
    // out += the other input; for a + a in place, out += a copy of itself.
    const src = out.buffer === a.buffer ? b : a;
    if (src.buffer === out.buffer) {
      const tmp = e.empty(out.shape);
      e.copy(tmp, out);
      accumulateKernel(e, out, tmp, n);
      tmp.dispose();
    } else {
      accumulateKernel(e, out, src, n);
    }
    return out;
  }
  const y = out ?? e.empty(a.shape, opts.name);
  const [entry, m] = elementwise('add_forward', n);
  e.dispatch(code, entry, params(m), [{ tensor: a }, { tensor: b }, { tensor: y, write: true }], grid1d(e, m));
  if (e.tape && needsGrad(a, b)) {
    y.requiresGrad = true;
    e.tape.record('add', () => {
      const dout = y.grad;
      if (!dout) return;
      if (a.requiresGrad) accumulateKernel(e, a.gradOrZeros(), dout, n);
      if (b.requiresGrad) accumulateKernel(e, b.gradOrZeros(), dout, n);
    });
  }
  return y;
}

/** Float64 CPU reference: out = a + b. */
export function addCpu(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}
