/**
 * One helper checks every op (tinygrad / torchlette style):
 *  - forward: the WGSL result against the float64 CPU reference (atol + rtol);
 *  - backward: the WGSL gradients of L = sum(out * R), R random, against
 *    central finite differences of the float64 CPU reference, on sampled entries.
 */
import { expect } from 'vitest';
import type { Engine } from '../../src/engine/engine';
import { Tape } from '../../src/engine/tape';
import type { Tensor } from '../../src/engine/tensor';

export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function randn(n: number, r: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12),
      v = r();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

export interface OpInput {
  name: string;
  shape: number[];
  data: Float32Array | Int32Array;
  /** Differentiable input: gradient checked. Integer inputs (ids, labels) are not. */
  grad?: boolean;
  int?: boolean;
}

export interface CheckOpSpec {
  name: string;
  inputs: OpInput[];
  /** Run the op on GPU tensors (same order as inputs). */
  gpu: (e: Engine, xs: Tensor[]) => Tensor;
  /** The float64 reference on plain arrays (same order as inputs). */
  cpu: (xs: Float64Array[]) => Float64Array;
  atol?: number;
  rtol?: number;
  /** Finite-difference tolerance (relative to max |grad|). */
  gradTol?: number;
  /** Entries sampled per input for finite differences. */
  samples?: number;
  eps?: number;
  seed?: number;
  /** Skip the R weighting (for scalar losses). */
  scalarOut?: boolean;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export async function checkOp(e: Engine, spec: CheckOpSpec): Promise<{ fwdErr: number; gradErr: number }> {
  const r = rng(spec.seed ?? 1234);
  const atol = spec.atol ?? 1e-4,
    rtol = spec.rtol ?? 1e-4;
  e.beginScope();
  try {
    const xs = spec.inputs.map((inp) => {
      const t = e.upload(inp.data, inp.shape, inp.name);
      t.requiresGrad = !!inp.grad;
      return t;
    });
    const tape = new Tape();
    e.tape = tape;
    const out = spec.gpu(e, xs);
    e.tape = null;
    const got = await e.read(out);
    const x64 = spec.inputs.map((inp) => Float64Array.from(inp.data));
    const want = spec.cpu(x64);
    expect(got.length, `${spec.name}: output size`).toBe(want.length);
    let fwdErr = 0;
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i] - want[i]);
      fwdErr = Math.max(fwdErr, d);
      if (d > atol + rtol * Math.abs(want[i]) || !Number.isFinite(got[i])) {
        throw new Error(`${spec.name}: forward NOT OK at ${i}: got ${got[i]}, want ${want[i]} (|diff| ${d})`);
      }
    }
    // Backward: L = sum(out * R)
    const R = spec.scalarOut ? new Float64Array(want.length).fill(1) : Float64Array.from(randn(want.length, r));
    let gradErr = 0;
    if (spec.inputs.some((i) => i.grad)) {
      tape.backward(out, Float32Array.from(R));
      const h = spec.eps ?? 1e-3;
      const objective = (xv: Float64Array[]) => {
        const y = spec.cpu(xv);
        let s = 0;
        for (let i = 0; i < y.length; i++) s += y[i] * R[i];
        return s;
      };
      for (let k = 0; k < spec.inputs.length; k++) {
        if (!spec.inputs[k].grad) continue;
        const g = xs[k].grad ? await e.read(xs[k].grad!) : new Float32Array(xs[k].size);
        const n = g.length;
        const picks = new Set<number>();
        const want = Math.min(n, spec.samples ?? 24);
        picks.add(0);
        picks.add(n - 1);
        while (picks.size < want) picks.add(Math.floor(r() * n));
        let gmax = 0;
        for (const v of g) gmax = Math.max(gmax, Math.abs(v));
        const tol = (spec.gradTol ?? 2e-3) * Math.max(1, gmax);
        for (const i of picks) {
          const xp = x64.map((a) => a.slice());
          const xm = x64.map((a) => a.slice());
          xp[k][i] += h;
          xm[k][i] -= h;
          const fd = (objective(xp) - objective(xm)) / (2 * h);
          const d = Math.abs(fd - g[i]);
          gradErr = Math.max(gradErr, d / Math.max(1, gmax));
          if (d > tol || !Number.isFinite(g[i])) {
            throw new Error(`${spec.name}: grad of ${spec.inputs[k].name} NOT OK at ${i}: gpu ${g[i]}, finite difference ${fd} (|diff| ${d}, tol ${tol})`);
          }
        }
      }
    }
    return { fwdErr, gradErr };
  } finally {
    e.tape = null;
    e.endScope();
  }
}
