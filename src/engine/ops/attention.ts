/**
 * Causal self-attention with grouped-query heads, as HF LLaMA's eager path
 * computes it: softmax(scale * Q K^T + mask) V with scale = 1/sqrt(D).
 *
 * Legend: B batch, T queries, S keys, Hq query heads, Hkv key/value heads
 * (Hq a multiple of Hkv; query head h uses kv head floor(h / (Hq / Hkv))),
 * D head dim, P = prefixLen, qo = queryOffset.
 *   q [B, T, Hq, D], k and v [B, S, Hkv, D] -> out [B, T, Hq, D].
 *
 * Masking rule (keys indexed s = 0..S-1, queries i = 0..T-1): query i sees key s iff
 *     keyMask[b, s] != 0  and  (s < P  or  s <= qo + i)
 * - keyMask (Int32 [B, S], 1 = attend, 0 = padding) hides padding keys;
 * - the first P keys (per-layer prefix tokens of prefix-tuning) are seen by
 *   every query, without causality;
 * - the other keys are causal, query i sitting at absolute key position qo + i.
 *   Default qo = S - T: the T queries are the last T key positions (plain
 *   training has S = T, qo = 0; with a KV cache of S keys the T new queries are
 *   the last T; with P prefix keys and S = P + T, qo = P). Equivalently, with
 *   qo' = qo - P, query i sees non-prefix key P + j iff j <= qo' + i.
 * A query row that sees no key at all outputs 0 (not NaN, not HF's uniform
 * average over masked keys) and gets zero gradients.
 *
 * Forward keeps, per query row, the logsumexp L of its scaled scores; backward
 * recomputes P = exp(scale q.k - L) (FlashAttention-2):
 *   Delta_i = dO_i . o_i,  ds_is = p_is (dO_i . v_s - Delta_i)
 *   dq_i = scale sum_s ds_is k_s,  dk_s = scale sum_i ds_is q_i,  dv_s = sum_i p_is dO_i
 * with dk, dv summed over the query heads of each kv group. Three kernels
 * (Delta; dq per query block; dk+dv per key block), every gradient element
 * written by exactly one thread: deterministic, no float atomics.
 *
 * D is a pipeline override constant (one pipeline per head dim), D <= 128. The
 * tile sizes BQ (queries) and BK (keys) are override constants too, picked per
 * kernel as the largest that fit the device's maxComputeWorkgroupStorageSize
 * (16 KiB is enough for D = 128) — see `attentionTiles`.
 */
import code from '../../../shaders/attention.wgsl?raw';
import codeRow from '../../../shaders/attention_v2.wgsl?raw';
import { grid1d } from './add';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import type { Tensor } from '../tensor';

export const ATTENTION_MAX_HEAD_DIM = 128;
/** Accumulator entries per thread (see attention.wgsl). */
const ACC = 8;

export interface AttentionOptions {
  /** Int32 [B, S]: 1 = attend, 0 = padding key. */
  keyMask?: Tensor | null;
  /** Absolute key index of query 0; default S - T. */
  queryOffset?: number;
  /** Number of leading keys visible to every query (prefix tokens); default 0. */
  prefixLen?: number;
  /** Score scale; default 1 / sqrt(D). */
  scale?: number;
  /** Workgroup memory budget for tile selection; default the device limit (tests use it to try 16 KiB). */
  workgroupBytes?: number;
  /** Force a kernel family (tests); default `attentionKernel(D, S)`. */
  kernel?: AttentionKernel;
  name?: string;
}

export interface AttentionDims {
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  D: number;
}

/** Per kernel: queries per tile, keys per tile, threads per workgroup. */
export interface AttentionTile {
  BQ: number;
  BK: number;
  WG: number;
}

export interface AttentionTiles {
  forward: AttentionTile;
  dq: AttentionTile;
  dkdv: AttentionTile;
}

/**
 * 'row': attention_v2.wgsl, one thread per query row (forward, dq) or key row
 * (dk/dv), no barriers; 'tiled': attention.wgsl, flash-style workgroup tiles.
 */
export type AttentionKernel = 'row' | 'tiled';

/** Head dims served by the row kernels (a row is two vec4 registers) and the most keys they take. */
export const ATTENTION_ROW_HEAD_DIMS = [4, 8];
export const ATTENTION_ROW_MAX_S = 512;
/** Rows per thread of the row kernels (RR, RK in attention_v2.wgsl). */
const ROW_BLOCK = 4;

/**
 * Row kernels for small heads over short sequences, where a tile holds too
 * little work to pay for its barriers (SwiftShader: ~1 us per thread per
 * barrier). Measured on SwiftShader at B 8, T 64, Hq 8, Hkv 4, D 8:
 * forward tiled ~25 ms, row ~6 ms. Tiled everywhere else (long sequences
 * reuse each K/V tile across a block of queries).
 */
export function attentionKernel(D: number, S: number): AttentionKernel {
  return ATTENTION_ROW_HEAD_DIMS.includes(D) && S <= ATTENTION_ROW_MAX_S ? 'row' : 'tiled';
}

const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * Tile sizes per kernel: the first candidate (clamped to the problem size)
 * whose workgroup arrays fit `budget` bytes and whose accumulator tile fits
 * 256 * ACC entries; then 64 threads instead of 256 when the accumulator tile
 * fits 64 * ACC (small heads: fewer idle threads, and barriers are what cost
 * most on CPU Vulkan). Bytes of the workgroup arrays (f32, see attention.wgsl):
 *   forward: Qs BQ*D, KVs BK*D, Ss BQ*BK, rowM/rowL/rowA 3*BQ
 *   dq:      Qs, dOs 2*BQ*D, KVs BK*D, Ss BQ*BK, rowLse/rowDelta 2*BQ
 *   dkdv:    Ks, Vs 2*BK*D, Qs, dOs 2*BQ*D, Ss, dSs 2*BQ*BK, rowLse/rowDelta 2*BQ
 */
export function attentionTiles(D: number, T: number, S: number, budget: number): AttentionTiles {
  const capQ = Math.max(4, nextPow2(T));
  const capK = Math.max(4, nextPow2(S));
  const slack = 16 * 8; // alignment padding per array, generously
  const pick = (what: string, cands: [number, number][], bytes: (bq: number, bk: number) => number, accRows: (bq: number, bk: number) => number) => {
    for (const [q, k] of cands) {
      const BQ = Math.min(q, capQ),
        BK = Math.min(k, capK);
      const acc = accRows(BQ, BK) * D;
      if (4 * bytes(BQ, BK) + slack <= budget && acc <= 256 * ACC) return { BQ, BK, WG: acc <= 64 * ACC ? 64 : 256 };
    }
    throw new Error(`attention ${what}: no tile size fits head dim ${D} in ${budget} bytes of workgroup memory`);
  };
  const big: [number, number][] = [
    [32, 32],
    [32, 16],
    [16, 16],
    [16, 8],
    [8, 8],
    [8, 4],
    [4, 4],
  ];
  return {
    forward: pick(
      'forward',
      big,
      (q, k) => q * D + k * D + q * k + 3 * q,
      (q) => q,
    ),
    dq: pick(
      'dq',
      big,
      (q, k) => 2 * q * D + k * D + q * k + 2 * q,
      (q) => q,
    ),
    // [BQ, BK] candidates; larger key blocks first (they are the reused operand here).
    dkdv: pick(
      'dkdv',
      big.map(([a, b]) => [b, a] as [number, number]),
      (q, k) => 2 * k * D + 2 * q * D + 2 * q * k + 2 * q,
      (_q, k) => k,
    ),
  };
}

/** Threads of the row kernels' forward and dq: blocks of ROW_BLOCK query rows per (batch, kv head). */
function rowBlockThreads(d: AttentionDims): number {
  return d.B * d.Hkv * Math.ceil((d.T * d.Hq) / d.Hkv / ROW_BLOCK);
}

function attentionParams(d: AttentionDims, P: number, qo: number, hasMask: boolean, scale: number, writeK = 0, writeV = 0) {
  return params(d.B, d.T, d.S, d.Hq, d.Hkv, P, { i: qo }, hasMask ? 1 : 0, { f: scale }, writeK, writeV, 0);
}

interface Resolved {
  kernel: AttentionKernel;
  P: number;
  qo: number;
  scale: number;
  tiles: AttentionTiles;
}

function resolve(e: Engine, d: AttentionDims, o: AttentionOptions): Resolved {
  const kernel = o.kernel ?? attentionKernel(d.D, d.S);
  if (kernel === 'row' && !ATTENTION_ROW_HEAD_DIMS.includes(d.D)) {
    throw new Error(`attention: the row kernels take head dims ${ATTENTION_ROW_HEAD_DIMS.join(', ')}; got D = ${d.D}`);
  }
  return {
    kernel,
    P: o.prefixLen ?? 0,
    qo: o.queryOffset ?? d.S - d.T,
    scale: o.scale ?? 1 / Math.sqrt(d.D),
    tiles: attentionTiles(d.D, d.T, d.S, o.workgroupBytes ?? e.ctx.limits.maxComputeWorkgroupStorageSize),
  };
}

/**
 * out = attention(q, k, v); stats [B, T, Hq, 2] receives L (logsumexp) in
 * [.., 0]; [.., 1] is scratch for the backward's Delta. No autograd.
 */
export function attentionForward(e: Engine, out: Tensor, stats: Tensor, q: Tensor, k: Tensor, v: Tensor, d: AttentionDims, o: AttentionOptions = {}): void {
  const r = resolve(e, d, o);
  const args = attentionParams(d, r.P, r.qo, !!o.keyMask, r.scale);
  const bindings = [{ tensor: q }, { tensor: k }, { tensor: v }, { tensor: o.keyMask ?? q }, { tensor: out, write: true }, { tensor: stats, write: true }];
  if (r.kernel === 'row') {
    e.dispatch(codeRow, 'attention_forward_row', args, bindings, grid1d(e, rowBlockThreads(d), 64), { D: d.D });
    return;
  }
  const { BQ, BK, WG } = r.tiles.forward;
  e.dispatch(code, 'attention_forward', args, bindings, [Math.ceil(d.T / BQ), d.Hq, d.B], { D: d.D, BQ, BK, WG });
}

/**
 * Accumulate dq, dk, dv (each may be null to skip it) from dout, given the
 * forward's out and stats (whose Delta half this overwrites). No autograd.
 */
export function attentionBackward(
  e: Engine,
  dq: Tensor | null,
  dk: Tensor | null,
  dv: Tensor | null,
  dout: Tensor,
  out: Tensor,
  stats: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  d: AttentionDims,
  o: AttentionOptions = {},
): void {
  if (!dq && !dk && !dv) return;
  const r = resolve(e, d, o);
  const rows = d.B * d.T * d.Hq;
  e.dispatch(code, 'attention_backward_delta', params(rows), [{ tensor: out }, { tensor: dout }, { tensor: stats, write: true }], [Math.ceil(rows / 64)], {
    D: d.D,
  });
  const mask = o.keyMask ?? q;
  if (r.kernel === 'row') {
    if (dq) {
      e.dispatch(
        codeRow,
        'attention_backward_dq_row',
        attentionParams(d, r.P, r.qo, !!o.keyMask, r.scale),
        [{ tensor: q }, { tensor: k }, { tensor: v }, { tensor: mask }, { tensor: dout }, { tensor: stats }, { tensor: dq, write: true }],
        grid1d(e, rowBlockThreads(d), 64),
        { D: d.D },
      );
    }
    if (dk || dv) {
      const dummy = !dk || !dv ? e.empty([4], 'attention.dummy') : null;
      e.dispatch(
        codeRow,
        'attention_backward_dkdv_row',
        attentionParams(d, r.P, r.qo, !!o.keyMask, r.scale, dk ? 1 : 0, dv ? 1 : 0),
        [
          { tensor: q },
          { tensor: k },
          { tensor: v },
          { tensor: mask },
          { tensor: dout },
          { tensor: stats },
          { tensor: dk ?? dummy!, write: true },
          { tensor: dv ?? dummy!, write: true },
        ],
        grid1d(e, d.B * d.Hkv * Math.ceil(d.S / ROW_BLOCK), 64),
        { D: d.D },
      );
      dummy?.dispose();
    }
    return;
  }
  if (dq) {
    const { BQ, BK, WG } = r.tiles.dq;
    e.dispatch(
      code,
      'attention_backward_dq',
      attentionParams(d, r.P, r.qo, !!o.keyMask, r.scale),
      [{ tensor: q }, { tensor: k }, { tensor: v }, { tensor: mask }, { tensor: dout }, { tensor: stats }, { tensor: dq, write: true }],
      [Math.ceil(d.T / BQ), d.Hq, d.B],
      { D: d.D, BQ, BK, WG },
    );
  }
  if (dk || dv) {
    const { BQ, BK, WG } = r.tiles.dkdv;
    // A skipped gradient still needs a distinct writable binding: a 1-element dummy, never written.
    const dummy = !dk || !dv ? e.empty([1], 'attention.dummy') : null;
    e.dispatch(
      code,
      'attention_backward_dkdv',
      attentionParams(d, r.P, r.qo, !!o.keyMask, r.scale, dk ? 1 : 0, dv ? 1 : 0),
      [
        { tensor: q },
        { tensor: k },
        { tensor: v },
        { tensor: mask },
        { tensor: dout },
        { tensor: stats },
        { tensor: dk ?? dummy!, write: true },
        { tensor: dv ?? dummy!, write: true },
      ],
      [Math.ceil(d.S / BK), d.Hkv, d.B],
      { D: d.D, BQ, BK, WG },
    );
    dummy?.dispose();
  }
}

/** Check shapes and options; returns the dims. */
export function attentionDims(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions = {}): AttentionDims {
  const fail = (msg: string) => {
    throw new Error(`attention${o.name ? ` ${o.name}` : ''}: ${msg}`);
  };
  if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4) {
    fail(`q, k, v must be 4-D ([B, T, Hq, D] and [B, S, Hkv, D]); got q ${q.shape}, k ${k.shape}, v ${v.shape}`);
  }
  const [B, T, Hq, D] = q.shape;
  const [Bk, S, Hkv, Dk] = k.shape;
  if (Bk !== B || Dk !== D || v.shape.join() !== k.shape.join()) fail(`k ${k.shape} and v ${v.shape} must both be [B=${B}, S, Hkv, D=${D}]`);
  if (Hkv < 1 || Hq % Hkv !== 0) fail(`query heads ${Hq} must be a multiple of kv heads ${Hkv}`);
  if (D > ATTENTION_MAX_HEAD_DIM) fail(`head dim ${D} is above the supported ${ATTENTION_MAX_HEAD_DIM}`);
  if (o.keyMask && o.keyMask.size !== B * S) fail(`keyMask must be Int32 [B=${B}, S=${S}]; got ${o.keyMask.shape}`);
  const P = o.prefixLen ?? 0;
  if (!Number.isInteger(P) || P < 0 || P > S) fail(`prefixLen ${P} must be an integer in [0, S=${S}]`);
  if (o.queryOffset !== undefined && !Number.isInteger(o.queryOffset)) fail(`queryOffset ${o.queryOffset} must be an integer`);
  return { B, T, S, Hq, Hkv, D };
}

/** Attention with autograd: see the file comment for shapes and the masking rule. */
export function attention(e: Engine, q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions = {}): Tensor {
  const d = attentionDims(q, k, v, o);
  const out = e.empty([d.B, d.T, d.Hq, d.D], o.name);
  const stats = e.empty([d.B, d.T, d.Hq, 2], o.name ? `${o.name}.stats` : 'attention.stats');
  attentionForward(e, out, stats, q, k, v, d, o);
  if (!(e.tape && needsGrad(q, k, v))) {
    stats.dispose(); // returned to the pool once the forward is submitted
  } else {
    out.requiresGrad = true;
    e.tape.record('attention', () => {
      const dout = out.grad;
      if (!dout) return;
      attentionBackward(
        e,
        q.requiresGrad ? q.gradOrZeros() : null,
        k.requiresGrad ? k.gradOrZeros() : null,
        v.requiresGrad ? v.gradOrZeros() : null,
        dout,
        out,
        stats,
        q,
        k,
        v,
        d,
        o,
      );
    });
  }
  return out;
}

export interface AttentionCpuOptions {
  keyMask?: ArrayLike<number>;
  queryOffset?: number;
  prefixLen?: number;
  scale?: number;
}

/** Float64 reference, same layouts and masking rule; returns out [B, T, Hq, D]. */
export function attentionCpu(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  B: number,
  T: number,
  S: number,
  Hq: number,
  Hkv: number,
  D: number,
  o: AttentionCpuOptions = {},
): Float64Array {
  const P = o.prefixLen ?? 0;
  const qo = o.queryOffset ?? S - T;
  const scale = o.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  const out = new Float64Array(B * T * Hq * D);
  const x = new Float64Array(S);
  const seen = new Uint8Array(S);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < T; i++) {
      for (let h = 0; h < Hq; h++) {
        const g = Math.floor(h / G);
        const qoff = ((b * T + i) * Hq + h) * D;
        let m = -Infinity;
        for (let s = 0; s < S; s++) {
          seen[s] = (!o.keyMask || o.keyMask[b * S + s] !== 0) && (s < P || s <= qo + i) ? 1 : 0;
          if (!seen[s]) continue;
          const koff = ((b * S + s) * Hkv + g) * D;
          let dot = 0;
          for (let c = 0; c < D; c++) dot += q[qoff + c] * k[koff + c];
          x[s] = dot * scale;
          m = Math.max(m, x[s]);
        }
        if (m === -Infinity) continue; // no visible key: output 0
        let l = 0;
        for (let s = 0; s < S; s++) if (seen[s]) l += x[s] = Math.exp(x[s] - m);
        for (let s = 0; s < S; s++) {
          if (!seen[s]) continue;
          const koff = ((b * S + s) * Hkv + g) * D;
          const w = x[s] / l;
          for (let c = 0; c < D; c++) out[qoff + c] += w * v[koff + c];
        }
      }
    }
  }
  return out;
}
