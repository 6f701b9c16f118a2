/**
 * Inverted dropout with a recomputed mask (see shaders/dropout.wgsl):
 * y = x · [u ≥ p] / (1 − p); backward dx += dy · [u ≥ p] / (1 − p).
 * The mask depends only on (seed, element index): deterministic across hosts.
 */
import code from '../../../shaders/dropout.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import type { Tensor } from '../tensor';
import { grid1d } from './add';

export function dropout(e: Engine, x: Tensor, p: number, seed: number): Tensor {
  if (p <= 0) return x;
  if (p >= 1) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
  const n = x.size;
  const grid = grid1d(e, n);
  const u = params(n, seed >>> 0, { f: p }, grid[0]);
  const y = e.empty(x.shape, 'dropout');
  e.dispatch(code, 'dropout_forward', u, [{ tensor: x }, { tensor: y, write: true }], grid);
  if (e.tape && x.requiresGrad) {
    y.requiresGrad = true;
    e.tape.record('dropout', () => {
      if (!y.grad) return;
      e.dispatch(code, 'dropout_backward', u, [{ tensor: y.grad }, { tensor: x.gradOrZeros(), write: true }], grid);
    });
  }
  return y;
}

/** Float64 reference with the same hash (for tests). */
export function dropoutMaskCpu(n: number, p: number, seed: number): Float64Array {
  const pcg = (v: number) => {
    const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
    const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
    return ((word >>> 22) ^ word) >>> 0;
  };
  const out = new Float64Array(n);
  const s = pcg(seed >>> 0);
  for (let i = 0; i < n; i++) {
    const u = (pcg((i ^ s) >>> 0) >>> 8) / 16777216;
    out[i] = u >= p ? 1 / (1 - p) : 0;
  }
  return out;
}
