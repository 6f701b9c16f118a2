import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { attention, attentionCpu, attentionTiles, attentionKernel } from '../../src/engine/ops/attention';
import type { AttentionKernel } from '../../src/engine/ops/attention';
import type { OpInput } from '../helpers/check-op';
import { Tape } from '../../src/engine/tape';

interface Case {
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  D: number;
  mask?: (b: number, s: number) => number;
  queryOffset?: number;
  prefixLen?: number;
  workgroupBytes?: number;
  samples?: number;
  kernel?: AttentionKernel;
}

async function run(name: string, c: Case) {
  const e = await gpuEngine();
  const r = rng(c.B * 7919 + c.T * 104729 + c.S * 31 + c.D * 17 + c.Hq);
  const inputs: OpInput[] = [
    { name: 'q', shape: [c.B, c.T, c.Hq, c.D], data: randn(c.B * c.T * c.Hq * c.D, r), grad: true },
    { name: 'k', shape: [c.B, c.S, c.Hkv, c.D], data: randn(c.B * c.S * c.Hkv * c.D, r), grad: true },
    { name: 'v', shape: [c.B, c.S, c.Hkv, c.D], data: randn(c.B * c.S * c.Hkv * c.D, r), grad: true },
  ];
  if (c.mask) {
    const m = new Int32Array(c.B * c.S);
    for (let b = 0; b < c.B; b++) for (let s = 0; s < c.S; s++) m[b * c.S + s] = c.mask(b, s);
    inputs.push({ name: 'mask', shape: [c.B, c.S], data: m, int: true });
  }
  const opts = { queryOffset: c.queryOffset, prefixLen: c.prefixLen };
  return checkOp(e, {
    name,
    inputs,
    gpu: (e, [q, k, v, mask]) => attention(e, q, k, v, { ...opts, keyMask: mask, workgroupBytes: c.workgroupBytes, kernel: c.kernel }),
    cpu: ([q, k, v, mask]) => attentionCpu(q, k, v, c.B, c.T, c.S, c.Hq, c.Hkv, c.D, { ...opts, keyMask: mask }),
    samples: c.samples ?? 10,
  });
}

describe('attention', () => {
  // Compiling a kernel on SwiftShader costs ~0.5 ms per float of workgroup
  // memory (Dawn's zero-init), so most cases cap the budget (`wg`) to get small
  // tiles — which also gives many tiles per row. Same D and budget reuse pipelines.
  const SMALL = 2048;
  const cases: [string, Case][] = [
    ['scalar', { B: 1, T: 1, S: 1, Hq: 1, Hkv: 1, D: 1 }],
    ['stories-like GQA causal, device budget', { B: 2, T: 5, S: 5, Hq: 4, Hkv: 2, D: 8 }],
    ['decode 3 new queries on a cache', { B: 1, T: 3, S: 21, Hq: 2, Hkv: 1, D: 8, workgroupBytes: SMALL }],
    ['long sequence, GQA', { B: 1, T: 67, S: 67, Hq: 2, Hkv: 1, D: 8, workgroupBytes: SMALL }],
    [
      'odd D, multi-tile, left and right padding',
      {
        B: 3,
        T: 41,
        S: 41,
        Hq: 2,
        Hkv: 2,
        D: 7,
        workgroupBytes: SMALL,
        mask: (b, s) => (b === 1 ? +(s >= 6) : b === 2 ? +(s < 30) : 1),
      },
    ],
    [
      'prefix keys with padding',
      {
        B: 2,
        T: 9,
        S: 13,
        Hq: 4,
        Hkv: 1,
        D: 7,
        prefixLen: 4,
        workgroupBytes: SMALL,
        mask: (b, s) => +(b === 0 || s < 4 || s >= 6),
      },
    ],
    [
      'D=8 (row kernels), padding and prefix keys, GQA',
      {
        B: 3,
        T: 11,
        S: 15,
        Hq: 4,
        Hkv: 2,
        D: 8,
        prefixLen: 4,
        workgroupBytes: SMALL,
        mask: (b, s) => (b === 1 ? +(s >= 2) : b === 2 ? +(s < 12) : 1),
      },
    ],
    [
      'D=4 (row kernels), left padding, 3 query heads per kv head',
      {
        B: 2,
        T: 33,
        S: 33,
        Hq: 6,
        Hkv: 2,
        D: 4,
        workgroupBytes: 4096,
        mask: (b, s) => +(b === 0 || s >= 5),
      },
    ],
    ['prefix keys on a decode step', { B: 1, T: 2, S: 11, Hq: 2, Hkv: 2, D: 8, prefixLen: 3, workgroupBytes: SMALL }],
    [
      'rows with no visible key (queryOffset < 0) and a fully padded batch',
      {
        B: 2,
        T: 6,
        S: 6,
        Hq: 2,
        Hkv: 1,
        D: 8,
        queryOffset: -2,
        workgroupBytes: SMALL,
        mask: (b) => +(b === 0),
      },
    ],
    ['generation T=1 on a KV cache, D=64', { B: 2, T: 1, S: 37, Hq: 3, Hkv: 1, D: 64, workgroupBytes: 4608, samples: 8 }],
    ['D=128 in 16 KiB of workgroup memory', { B: 1, T: 19, S: 23, Hq: 2, Hkv: 1, D: 128, workgroupBytes: 16384, samples: 6 }],
  ];
  // Cases the row kernels (attention_v2.wgsl) serve by default also run through the tiled ones.
  for (const [name, c] of cases) {
    const kernels: AttentionKernel[] = attentionKernel(c.D, c.S) === 'row' ? ['row', 'tiled'] : ['tiled'];
    for (const kernel of kernels) {
      it(`${name} (${kernel})`, async () => {
        const res = await run(name, { ...c, kernel });
        expect(res.fwdErr).toBeLessThan(1e-4);
      });
    }
  }

  it('fully masked rows output exactly 0 and get zero gradients', async () => {
    const e = await gpuEngine();
    const [B, T, S, H, D] = [1, 4, 4, 1, 8];
    e.beginScope();
    const r = rng(5);
    const q = e.upload(randn(B * T * H * D, r), [B, T, H, D]);
    const k = e.upload(randn(B * S * H * D, r), [B, S, H, D]);
    const v = e.upload(randn(B * S * H * D, r), [B, S, H, D]);
    q.requiresGrad = true;
    const mask = e.upload(new Int32Array([0, 0, 1, 1]), [B, S]);
    const tape = new Tape();
    e.tape = tape;
    const out = attention(e, q, k, v, { keyMask: mask, workgroupBytes: 2048 });
    e.tape = null;
    tape.backward(out);
    const o = await e.read(out);
    const dq = await e.read(q.grad!);
    // queries 0 and 1 see only keys 0..1, both padding
    for (let i = 0; i < 2 * D; i++) {
      expect(o[i]).toBe(0);
      expect(dq[i]).toBe(0);
    }
    for (const x of o) expect(Number.isFinite(x)).toBe(true);
    e.endScope();
  });

  it('backward accumulates, skips frozen inputs, and is deterministic', async () => {
    const e = await gpuEngine();
    const [B, T, S, Hq, Hkv, D] = [2, 9, 9, 4, 2, 8];
    e.beginScope();
    const r = rng(77);
    const qd = randn(B * T * Hq * D, r),
      kd = randn(B * S * Hkv * D, r),
      vd = randn(B * S * Hkv * D, r);
    const grads = async (preset: number, trainQ: boolean) => {
      const q = e.upload(qd, [B, T, Hq, D]);
      const k = e.upload(kd, [B, S, Hkv, D]);
      const v = e.upload(vd, [B, S, Hkv, D]);
      const xs = trainQ ? [q, k, v] : [k, v];
      for (const x of xs) {
        x.requiresGrad = true;
        e.write(x.gradOrZeros(), new Float32Array(x.size).fill(preset));
      }
      const tape = new Tape();
      e.tape = tape;
      const out = attention(e, q, k, v, { workgroupBytes: 2048 });
      e.tape = null;
      const before = e.dispatchCount;
      tape.backward(out);
      const n = e.dispatchCount - before;
      if (!trainQ) expect(q.grad).toBeNull();
      return { n, dq: trainQ ? await e.read(q.grad!) : null, dk: await e.read(k.grad!), dv: await e.read(v.grad!) };
    };
    const frozen = await grads(0, false);
    expect(frozen.n).toBe(2); // Delta + dk/dv, no dq kernel
    const a = await grads(0, true);
    const b = await grads(0.5, true);
    const c = await grads(0, true);
    expect(a.n).toBe(3);
    for (const key of ['dq', 'dk', 'dv'] as const) {
      const x = a[key]!,
        y = b[key]!,
        z = c[key]!;
      for (let i = 0; i < x.length; i++) {
        expect(y[i]).toBeCloseTo(x[i] + 0.5, 5);
        expect(z[i]).toBe(x[i]);
      }
    }
    for (let i = 0; i < a.dk.length; i++) expect(frozen.dk[i]).toBe(a.dk[i]);
    e.endScope();
  });

  it('tile choice fits the workgroup memory budget', () => {
    for (const D of [1, 7, 8, 64, 100, 128]) {
      for (const budget of [16384, 32768]) {
        const t = attentionTiles(D, 512, 512, budget);
        const f = t.forward,
          q = t.dq,
          kv = t.dkdv;
        expect(4 * (f.BQ * D + f.BK * D + f.BQ * f.BK + 3 * f.BQ)).toBeLessThanOrEqual(budget);
        expect(4 * (2 * q.BQ * D + q.BK * D + q.BQ * q.BK + 2 * q.BQ)).toBeLessThanOrEqual(budget);
        expect(4 * (2 * kv.BK * D + 2 * kv.BQ * D + 2 * kv.BQ * kv.BK + 2 * kv.BQ)).toBeLessThanOrEqual(budget);
        // each thread owns at most 8 accumulator entries
        expect(f.BQ * D).toBeLessThanOrEqual(8 * f.WG);
        expect(q.BQ * D).toBeLessThanOrEqual(8 * q.WG);
        expect(kv.BK * D).toBeLessThanOrEqual(8 * kv.WG);
      }
    }
    expect(attentionTiles(64, 1, 300, 16384).forward.BQ).toBe(4);
  });
});
