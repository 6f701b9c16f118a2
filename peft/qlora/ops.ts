/**
 * NF4 weights (bitsandbytes 4-bit NormalFloat, blocksize 64, optional double
 * quantization of the absmax statistics), METHODS.md §5 and Appendix B.
 *
 * A quantized linear W [N, K] (out × in) is one u32 GPU buffer, the state
 * (layout in peft/qlora/nf4.wgsl and `nf4Layout`). It is dequantized inside the
 * matmul kernels and never materialised in f32:
 *
 *   forward   Y  = X Ŵᵀ (+ bias)       X [M, K] → Y [M, N]
 *   backward  dX += dY Ŵ               (Ŵ and the state get no gradient)
 *   Ŵ[i] = NF4[q_i] · absmax_{i/64},  absmax_j = D[qabsmax_j] · absmax2_{j/256} + offset
 *
 * `quantizeNf4Cpu` is the quantizer, in float32 exactly as the spec (QLoRA
 * uses it). `quantizeNf4` runs the same arithmetic on the GPU without a
 * readback; it matches the CPU word for word where f32 division is correctly
 * rounded (SwiftShader, tested), but WGSL allows 2.5 ulp for division, so on
 * other GPUs a value within an ulp of a code midpoint may take the
 * neighbouring code (equally near). `nf4LinearCpu` is the float64 reference of
 * the matmul over the dequantized weights.
 */
import code from './nf4.wgsl?raw';
import { grid1d } from 'peft-studio/engine/ops/add';
import { matmulCpu, sumRowsKernel } from 'peft-studio/engine/ops/matmul';
import { params } from 'peft-studio/engine/engine';
import type { Engine } from 'peft-studio/engine/engine';
import type { Tensor } from 'peft-studio/engine/tensor';

/** The 16 NF4 code values (bitsandbytes), index 0…15. */
export const NF4_CODE = Float32Array.of(
  -1.0,
  -0.6961928009986877,
  -0.5250730514526367,
  -0.39491748809814453,
  -0.28444138169288635,
  -0.18477343022823334,
  -0.09105003625154495,
  0.0,
  0.07958029955625534,
  0.16093020141124725,
  0.24611230194568634,
  0.33791524171829224,
  0.44070982933044434,
  0.5626170039176941,
  0.7229568362236023,
  1.0,
);

export const NF4_BLOCK = 64;
export const DQ_BLOCK = 256;

const f32 = Math.fround;

/** torch.linspace(start, end, steps) in float32 (METHODS.md Appendix B). */
function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const s = f32(start),
    e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const out = new Float32Array(steps);
  const half = Math.floor(steps / 2);
  for (let k = 0; k < steps; k++) out[k] = k < half ? f32(s + f32(k * step)) : f32(e - f32((steps - 1 - k) * step));
  return out;
}

let dynamicCache: Float32Array | null = null;

/**
 * bitsandbytes' signed 8-bit dynamic code, create_dynamic_map(signed=True,
 * max_exponent_bits=7, total_bits=8): for i = 0…6 the 2^i midpoints of
 * linspace(0.1, 1, 2^i + 1) scaled by ±10^(i−6), plus 0 and 1, sorted (256 values).
 */
export function dynamicCode8(): Float32Array {
  if (dynamicCache) return dynamicCache;
  const vals: number[] = [];
  // 10^(i−6) as Python writes it (JS's 10 ** -5 is one ulp off), cast to fp32 as torch does.
  const pow10 = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
  for (let i = 0; i < 7; i++) {
    const b = linspaceF32(0.1, 1.0, 2 ** i + 1);
    const scale = f32(pow10[i]);
    for (let k = 0; k + 1 < b.length; k++) {
      const mid = f32(f32(b[k] + b[k + 1]) / 2);
      vals.push(f32(scale * mid), f32(-scale * mid));
    }
  }
  vals.push(0, 1);
  vals.sort((a, b) => a - b);
  dynamicCache = Float32Array.from(vals);
  return dynamicCache;
}

/** Nearest code of a sorted table: the number of midpoints (c_k + c_{k+1})/2 strictly below u (ties → lower index). */
function nearestIndex(mids: Float32Array, u: number): number {
  let lo = 0,
    hi = mids.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (mids[m] < u) lo = m + 1;
    else hi = m;
  }
  return lo;
}

function midpoints(table: Float32Array): Float32Array {
  const m = new Float32Array(table.length - 1);
  for (let k = 0; k < m.length; k++) m[k] = f32(f32(table[k] + table[k + 1]) * 0.5);
  return m;
}

const NF4_MIDS = midpoints(NF4_CODE);

/** Word offsets of the parts of a state buffer (see peft/qlora/nf4.wgsl). */
export interface Nf4Layout {
  /** Values (out · in). */
  n: number;
  /** 64-blocks (absmax values). */
  nb: number;
  /** Code words (8 indices each). */
  nw: number;
  /** Double-quantized absmax (8-bit codes, absmax2, offset) or f32 absmax. */
  double: boolean;
  /** First word of qabsmax (double) or of the f32 absmax (single). */
  qa: number;
  /** First word of absmax2 (double only). */
  a2: number;
  /** 256-blocks of the absmax vector (double only). */
  nb2: number;
  /** Word of the offset (double only). */
  off: number;
  /** Total words. */
  words: number;
}

export function nf4Layout(n: number, double: boolean): Nf4Layout {
  const nb = Math.ceil(n / NF4_BLOCK),
    nw = Math.ceil(n / 8),
    qa = nw;
  if (!double) return { n, nb, nw, double, qa, a2: 0, nb2: 0, off: 0, words: nw + nb };
  const nb2 = Math.ceil(nb / DQ_BLOCK);
  const a2 = qa + Math.ceil(nb / 4);
  return { n, nb, nw, double, qa, a2, nb2, off: a2 + nb2, words: a2 + nb2 + 1 };
}

/** Bit position of element e (0…7) of a code word: element 2j in the high nibble of byte j. */
export function nibbleShift(e: number): number {
  return ((e >> 1) << 3) + ((1 - (e & 1)) << 2);
}

/**
 * Float32 reference quantizer (METHODS.md §5), returning the state words.
 * The double-quantization offset is the fp32 mean of the absmax vector,
 * summed sequentially in fp32 (the GPU kernel sums in the same order; torch's
 * own mean may differ in the last bit, which only shifts the stored offset).
 */
export function quantizeNf4Cpu(w: ArrayLike<number>, double = true): Uint32Array {
  const L = nf4Layout(w.length, double);
  const s = new Uint32Array(L.words);
  const absmax = new Float32Array(L.nb);
  for (let j = 0; j < L.nb; j++) {
    let m = 0;
    for (let i = j * NF4_BLOCK; i < Math.min(L.n, (j + 1) * NF4_BLOCK); i++) m = Math.max(m, Math.abs(f32(w[i])));
    absmax[j] = m;
  }
  for (let i = 0; i < L.n; i++) {
    const a = absmax[i >> 6];
    const u = a > 0 ? Math.min(1, Math.max(-1, f32(f32(w[i]) / a))) : 0;
    s[i >> 3] |= nearestIndex(NF4_MIDS, u) << nibbleShift(i & 7);
  }
  const sf = new Float32Array(s.buffer);
  if (!double) {
    sf.set(absmax, L.qa);
    return s;
  }
  let sum = 0;
  for (let j = 0; j < L.nb; j++) sum = f32(sum + absmax[j]);
  const offset = f32(sum / L.nb);
  sf[L.off] = offset;
  const D = dynamicCode8(),
    dMids = midpoints(D);
  for (let k = 0; k < L.nb2; k++) {
    let m = 0;
    for (let j = k * DQ_BLOCK; j < Math.min(L.nb, (k + 1) * DQ_BLOCK); j++) m = Math.max(m, Math.abs(f32(absmax[j] - offset)));
    sf[L.a2 + k] = m;
  }
  for (let j = 0; j < L.nb; j++) {
    const m2 = sf[L.a2 + (j >> 8)];
    const u = m2 > 0 ? Math.min(1, Math.max(-1, f32(f32(absmax[j] - offset) / m2))) : 0;
    s[L.qa + (j >> 2)] |= nearestIndex(dMids, u) << ((j & 3) * 8);
  }
  return s;
}

/** The absmax vector of a state (fp32: D[q] · absmax2 + offset with double quantization). */
export function nf4AbsmaxCpu(state: Uint32Array, L: Nf4Layout): Float32Array {
  const sf = new Float32Array(state.buffer, state.byteOffset, state.length);
  const out = new Float32Array(L.nb);
  if (!L.double) {
    out.set(sf.subarray(L.qa, L.qa + L.nb));
    return out;
  }
  const D = dynamicCode8();
  for (let j = 0; j < L.nb; j++) {
    const q = (state[L.qa + (j >> 2)] >>> ((j & 3) * 8)) & 0xff;
    out[j] = f32(f32(D[q] * sf[L.a2 + (j >> 8)]) + sf[L.off]);
  }
  return out;
}

/** Ŵ in fp32, flattened (the dequantization of §5). */
export function dequantizeNf4Cpu(state: Uint32Array, n: number, double = true): Float32Array {
  const L = nf4Layout(n, double);
  if (state.length !== L.words) throw new Error(`dequantizeNf4Cpu: state has ${state.length} words, ${L.words} expected for n = ${n}`);
  const absmax = nf4AbsmaxCpu(state, L);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f32(NF4_CODE[(state[i >> 3] >>> nibbleShift(i & 7)) & 15] * absmax[i >> 6]);
  return out;
}

/**
 * The state in bitsandbytes' own layout: packed codes as uint8 [(n+1)/2]
 * (element 2k in the high nibble), qabsmax uint8 [nb], absmax2 fp32, offset
 * (or the fp32 absmax without double quantization).
 */
export function nf4BnbTensors(state: Uint32Array, n: number, double = true) {
  const L = nf4Layout(n, double);
  const bytes = new Uint8Array(state.buffer, state.byteOffset, state.byteLength);
  const sf = new Float32Array(state.buffer, state.byteOffset, state.length);
  const codes = bytes.slice(0, Math.ceil(n / 2));
  if (!double) return { codes, absmax: sf.slice(L.qa, L.qa + L.nb) };
  return { codes, qabsmax: bytes.slice(L.qa * 4, L.qa * 4 + L.nb), absmax2: sf.slice(L.a2, L.a2 + L.nb2), offset: sf[L.off] };
}

/** Float64 reference: Y = X Ŵᵀ (+ bias) for X [M, K] and the dequantized Ŵ [N, K]. */
export function nf4LinearCpu(x: ArrayLike<number>, wDeq: ArrayLike<number>, M: number, N: number, K: number, bias?: ArrayLike<number>): Float64Array {
  return matmulCpu(x, wDeq, M, N, K, { transB: true, bias });
}

// ---- GPU -------------------------------------------------------------------

/** A frozen linear held as NF4 on the GPU. */
export interface Nf4Weight {
  /** The state buffer (u32 words). */
  state: Tensor;
  /** out (N) and in (K). */
  outF: number;
  inF: number;
  layout: Nf4Layout;
}

const codeTables = new WeakMap<Engine, Tensor>();

/** The dynamic 8-bit code D on the GPU, one per engine (1 KiB, never freed). */
function dynamicCodeTensor(e: Engine): Tensor {
  let t = codeTables.get(e);
  if (!t || t.disposed) {
    t = e.persist(e.upload(dynamicCode8(), [256], 'nf4.dynamic_code'));
    codeTables.set(e, t);
  }
  return t;
}

function layoutParams(L: Nf4Layout, M: number, N: number, K: number, o: { beta?: boolean; bias?: boolean; alpha?: number } = {}): ArrayBuffer {
  return params(M, N, K, L.n, L.qa, L.a2, L.off, L.nb, o.beta ? 1 : 0, o.bias ? 1 : 0, { f: o.alpha ?? 1 }, 0);
}

/** Upload a state made on the host (quantizeNf4Cpu). */
export function nf4Upload(e: Engine, state: Uint32Array, outF: number, inF: number, double = true, name = 'nf4'): Nf4Weight {
  const layout = nf4Layout(outF * inF, double);
  if (state.length !== layout.words) throw new Error(`nf4Upload ${name}: state has ${state.length} words, ${layout.words} expected for [${outF}, ${inF}]`);
  dynamicCodeTensor(e); // allocated now rather than inside the first forward
  return { state: e.persist(e.upload(state, [layout.words], name)), outF, inF, layout };
}

/**
 * Quantize an f32 weight [out, in] on the GPU (the arithmetic of
 * quantizeNf4Cpu; exact where f32 division is, see the header). The state is
 * persistent; the input is left untouched.
 */
export function quantizeNf4(e: Engine, w: Tensor, double = true, name = 'nf4'): Nf4Weight {
  if (w.shape.length !== 2) throw new Error(`quantizeNf4 ${name}: expected a 2-D weight [out, in], got [${w.shape}]`);
  const [outF, inF] = w.shape;
  const L = nf4Layout(outF * inF, double);
  const state = e.persist(e.zeros([L.words], name));
  const absmax = e.empty([L.nb], `${name}.absmax`);
  const D = dynamicCodeTensor(e);
  const u = layoutParams(L, 0, outF, inF);
  e.dispatch(code, 'quant_absmax', u, [{ tensor: w }, { tensor: absmax, write: true }], grid1d(e, L.nb, 64));
  const b = [{ tensor: w }, { tensor: absmax }, { tensor: D }, { tensor: state, write: true }];
  e.dispatch(code, 'quant_codes', u, b, grid1d(e, L.nw, 64));
  if (double) {
    e.dispatch(code, 'dq_offset', u, b, [1]);
    e.dispatch(code, 'dq_absmax2', u, b, grid1d(e, L.nb2, 64));
    e.dispatch(code, 'dq_codes', u, b, grid1d(e, Math.ceil(L.nb / 4), 64));
  } else {
    e.copyRegion(state, L.qa, absmax, 0, L.nb);
  }
  absmax.dispose();
  return { state, outF, inF, layout: L };
}

/** Y = alpha · X Ŵᵀ (+ bias) (+ Y when accumulate) for X [..., K]. Raw kernel, no autograd. */
export function nf4ForwardKernel(
  e: Engine,
  Y: Tensor,
  X: Tensor,
  w: Nf4Weight,
  M: number,
  o: { alpha?: number; accumulate?: boolean; bias?: Tensor | null } = {},
): void {
  const N = w.outF,
    K = w.inF;
  // 8×8 blocks in steps of a word (K % 8 == 0) or a half-word (K % 4 == 0); else element-wise 4×4.
  const entry = K % 8 === 0 ? 'nf4_forward_k8' : K % 4 === 0 ? 'nf4_forward_k4' : 'nf4_forward_any';
  const block = K % 4 === 0 ? 8 : 4;
  const bindings = [{ tensor: X }, { tensor: w.state }, { tensor: dynamicCodeTensor(e) }, { tensor: o.bias ?? X }, { tensor: Y, write: true }];
  e.dispatch(
    code,
    entry,
    layoutParams(w.layout, M, N, K, { beta: o.accumulate, bias: !!o.bias, alpha: o.alpha }),
    bindings,
    grid1d(e, Math.ceil(M / block) * Math.ceil(N / block), 64),
    { DQ: w.layout.double ? 1 : 0 },
  );
}

/** dX = alpha · dY Ŵ (+ dX when accumulate) for dY [M, N]. Raw kernel. */
export function nf4BackwardKernel(e: Engine, dX: Tensor, dY: Tensor, w: Nf4Weight, M: number, o: { alpha?: number; accumulate?: boolean } = {}): void {
  const N = w.outF,
    K = w.inF;
  // 8 rows × a code word (or half-word), 4 n per step (vec4 rows of dY); else element-wise 4×4.
  const vec = N % 4 === 0;
  const entry = vec && K % 8 === 0 ? 'nf4_backward_k8' : vec && K % 4 === 0 ? 'nf4_backward_k4' : 'nf4_backward_any';
  const threads =
    entry === 'nf4_backward_k8' ? Math.ceil(M / 8) * (K / 8) : entry === 'nf4_backward_k4' ? Math.ceil(M / 8) * (K / 4) : Math.ceil(M / 4) * Math.ceil(K / 4);
  e.dispatch(
    code,
    entry,
    layoutParams(w.layout, M, N, K, { beta: o.accumulate, alpha: o.alpha }),
    [{ tensor: dY }, { tensor: w.state }, { tensor: dynamicCodeTensor(e) }, { tensor: dX, write: true }],
    grid1d(e, threads, 64),
    { DQ: w.layout.double ? 1 : 0 },
  );
}

export interface Nf4LinearOptions {
  bias?: Tensor | null;
  alpha?: number;
  /** Write into this tensor; with `accumulate`, Y += result. */
  out?: Tensor;
  accumulate?: boolean;
  name?: string;
}

/**
 * y = alpha · x Ŵᵀ (+ bias) for x [..., in] → [..., out]. Records dx += alpha · dy Ŵ
 * on the tape when x requires grad (and the bias gradient when the bias does).
 */
export function nf4Linear(e: Engine, x: Tensor, w: Nf4Weight, o: Nf4LinearOptions = {}): Tensor {
  const K = x.shape[x.shape.length - 1];
  if (K !== w.inF) throw new Error(`nf4Linear ${o.name ?? ''}: input has ${K} features, the weight [${w.outF}, ${w.inF}] expects ${w.inF}`);
  const M = x.size / K;
  const y = o.out ?? e.empty([...x.shape.slice(0, -1), w.outF], o.name);
  if (y.size !== M * w.outF) throw new Error(`nf4Linear ${o.name ?? ''}: out has ${y.size} values, expected ${M * w.outF}`);
  nf4ForwardKernel(e, y, x, w, M, { alpha: o.alpha, accumulate: o.accumulate, bias: o.bias });
  const bias = o.bias;
  if (e.tape && (x.requiresGrad || bias?.requiresGrad)) {
    y.requiresGrad = true;
    const alpha = o.alpha ?? 1;
    e.tape.record('nf4_linear', () => {
      const dy = y.grad;
      if (!dy) return;
      if (x.requiresGrad) nf4BackwardKernel(e, x.gradOrZeros(), dy, w, M, { alpha, accumulate: true });
      if (bias?.requiresGrad) sumRowsKernel(e, bias.gradOrZeros(), dy, M, w.outF, true);
    });
  }
  return y;
}

/** GPU bytes held by a quantized weight (its pooled buffer). */
export function nf4Bytes(w: Nf4Weight): number {
  return w.state.buffer.size;
}
