/**
 * A block of W columns of a matrix Z [R, F], starting at column `offset`,
 * repeated over a batch of B: out [B, R, W], out[b, j, w] = Z[j, offset + w].
 * Prefix tuning (METHODS.md §13) reads each layer's keys and values this way
 * out of its prefix matrix Z [n_v, N·2·Hkv·D]: layer ℓ's keys are the block at
 * offset 2ℓ·W, its values the block at (2ℓ+1)·W, with W = Hkv·D.
 *
 * Backward: dZ[j, offset + w] += Σ_b dout[b, j, w] (the broadcast over the
 * batch sums its gradients).
 */
import code from '../../../shaders/prefix_slice.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import type { Tensor } from '../tensor';
import { grid1d } from './add';

export interface PrefixSliceOptions {
  /** First column of the block. */
  offset: number;
  /** Columns in the block. */
  width: number;
  /** Copies along a new leading batch dimension. */
  batch: number;
  name?: string;
}

export function prefixSlice(e: Engine, z: Tensor, o: PrefixSliceOptions): Tensor {
  if (z.shape.length !== 2) throw new Error(`prefixSlice: z must be a matrix [R, F], got [${z.shape}]`);
  const [R, F] = z.shape;
  const { offset, width: W, batch: B } = o;
  if (!(Number.isInteger(offset) && Number.isInteger(W) && offset >= 0 && W >= 1 && offset + W <= F)) {
    throw new Error(`prefixSlice: columns [${offset}, ${offset + W}) are outside 0..${F} of z [${z.shape}]`);
  }
  if (!(Number.isInteger(B) && B >= 1)) throw new Error(`prefixSlice: batch must be a positive integer, got ${B}`);
  const out = e.empty([B, R, W], o.name ?? 'prefix_slice');
  const args = params(B, R, W, F, offset);
  e.dispatch(code, 'prefix_slice_forward', args, [{ tensor: z }, { tensor: out, write: true }], grid1d(e, B * R * W));
  if (e.tape && z.requiresGrad) {
    out.requiresGrad = true;
    e.tape.record('prefix_slice', () => {
      const g = out.grad;
      if (!g) return;
      e.dispatch(code, 'prefix_slice_backward', args, [{ tensor: g }, { tensor: z.gradOrZeros(), write: true }], grid1d(e, R * W));
    });
  }
  return out;
}

/** Float64 reference of prefixSlice. */
export function prefixSliceCpu(z: ArrayLike<number>, R: number, F: number, o: Omit<PrefixSliceOptions, 'name'>): Float64Array {
  const { offset, width: W, batch: B } = o;
  const out = new Float64Array(B * R * W);
  for (let b = 0; b < B; b++) for (let j = 0; j < R; j++) for (let w = 0; w < W; w++) out[(b * R + j) * W + w] = z[j * F + offset + w];
  return out;
}
