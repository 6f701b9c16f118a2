/**
 * Concatenation along the sequence: [B, P, ...] ++ [B, L, ...] -> [B, P+L, ...]
 * with W elements per position (virtual tokens before embeddings, per-layer
 * key/value prefixes). Forward and backward are buffer copies; the backward
 * accumulates each slice of the gradient into its input.
 */
import type { Engine } from '../engine';
import type { Tensor } from '../tensor';
import { accumulateKernel } from './add';

export function concatSeq(e: Engine, a: Tensor, b: Tensor, B: number, P: number, L: number, W: number): Tensor {
  const out = e.empty([B, P + L, ...a.shape.slice(2)], 'concat');
  for (let i = 0; i < B; i++) {
    e.copyRegion(out, i * (P + L) * W, a, i * P * W, P * W);
    e.copyRegion(out, (i * (P + L) + P) * W, b, i * L * W, L * W);
  }
  if (e.tape && (a.requiresGrad || b.requiresGrad)) {
    out.requiresGrad = true;
    e.tape.record('concat', () => {
      const g = out.grad;
      if (!g) return;
      // Copy each slice of the gradient out, then accumulate it (other ops may have written there).
      for (const [src, off, len, rows] of [
        [a, 0, P, P],
        [b, P, L, L],
      ] as const) {
        if (!src.requiresGrad) continue;
        const tmp = e.empty(src.shape, 'concat.grad');
        for (let i = 0; i < B; i++) e.copyRegion(tmp, i * rows * W, g, (i * (P + L) + off) * W, len * W);
        accumulateKernel(e, src.gradOrZeros(), tmp, src.size);
      }
    });
  }
  return out;
}

/**
 * The positions [start, start + len) of each sequence: [B, L, ...] -> [B, len, ...]
 * (the real tokens after virtual ones). The backward scatters the gradient
 * back into those positions of the input's gradient.
 */
export function sliceSeq(e: Engine, x: Tensor, B: number, L: number, start: number, len: number, W: number): Tensor {
  if (start < 0 || len < 0 || start + len > L) throw new Error(`sliceSeq: [${start}, ${start + len}) is outside 0..${L}`);
  const out = e.empty([B, len, ...x.shape.slice(2)], 'slice');
  for (let i = 0; i < B; i++) e.copyRegion(out, i * len * W, x, (i * L + start) * W, len * W);
  if (e.tape && x.requiresGrad) {
    out.requiresGrad = true;
    e.tape.record('slice', () => {
      const g = out.grad;
      if (!g) return;
      const tmp = e.zeros(x.shape, 'slice.grad');
      for (let i = 0; i < B; i++) e.copyRegion(tmp, (i * L + start) * W, g, i * len * W, len * W);
      accumulateKernel(e, x.gradOrZeros(), tmp, x.size);
    });
  }
  return out;
}

/** Float64 reference of sliceSeq. */
export function sliceSeqCpu(x: ArrayLike<number>, B: number, L: number, start: number, len: number, W: number): Float64Array {
  const out = new Float64Array(B * len * W);
  for (let i = 0; i < B; i++) for (let j = 0; j < len * W; j++) out[i * len * W + j] = x[(i * L + start) * W + j];
  return out;
}

/** Float64 reference of concatSeq. */
export function concatSeqCpu(a: ArrayLike<number>, b: ArrayLike<number>, B: number, P: number, L: number, W: number): Float64Array {
  const out = new Float64Array(B * (P + L) * W);
  for (let i = 0; i < B; i++) {
    for (let j = 0; j < P * W; j++) out[i * (P + L) * W + j] = a[i * P * W + j];
    for (let j = 0; j < L * W; j++) out[(i * (P + L) + P) * W + j] = b[i * L * W + j];
  }
  return out;
}
