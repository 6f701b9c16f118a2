/**
 * Inverted dropout with a recomputed mask (see shaders/dropout.wgsl):
 * y = x · [u ≥ p] / (1 − p); backward dx += dy · [u ≥ p] / (1 − p).
 * The mask depends only on (seed, element index): deterministic across hosts.
 *
 * Methods call `trainingDropout` with a call-site name; the seed of each mask
 * is then a hash of (run seed, micro-batch, call site, n-th call at that site
 * in this forward), all of which a resumed run knows, so kill-and-resume gives
 * the masks, and the losses, of an uninterrupted run.
 */
import code from '../../../shaders/dropout.wgsl?raw';
import { params } from '../engine';
import type { Engine } from '../engine';
import type { Tape } from '../tape';
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

/**
 * Dropout in a training forward (a tape is recording), the identity otherwise.
 * `site` names the call site uniquely within the model (e.g. the module path
 * plus the method's tensor name); the mask's seed is dropoutSeed(tape, site).
 */
export function trainingDropout(e: Engine, x: Tensor, p: number, site: string): Tensor {
  if (!(p > 0) || !e.tape) return x;
  return dropout(e, x, p, dropoutSeed(e.tape, site));
}

/** The seed of the next draw at `site` in the forward this tape records. */
export function dropoutSeed(tape: Tape, site: string): number {
  return streamSeed(tape.seed, tape.microBatch, site, tape.nextDraw(site));
}

/** A u32 hash of (run seed, micro-batch, call site, occurrence): murmur3's finaliser over each word in turn. */
export function streamSeed(seed: number, microBatch: number, site: string, occurrence: number): number {
  // FNV-1a of the site name.
  let s = 0x811c9dc5;
  for (let i = 0; i < site.length; i++) s = Math.imul(s ^ site.charCodeAt(i), 0x01000193) >>> 0;
  let h = 0x9e3779b9;
  for (const w of [seed >>> 0, microBatch >>> 0, s, occurrence >>> 0]) h = fmix32((h ^ w) >>> 0) + 0x7f4a7c15;
  return h >>> 0;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
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
