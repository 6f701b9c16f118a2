/**
 * Rotary position embedding (Su et al. 2021) in the HF LLaMA rotate_half
 * layout: head dim D is split in halves and pair (i, i + D/2) is rotated by
 * angle = pos * inv_freq[i], inv_freq[i] = 1 / theta^(2i/D) (then rescaled by
 * rope_scaling). Legend: x is [B, T, H, D]; positions holds B*T absolute
 * positions, so left padding and KV-cache offsets are just other positions.
 *
 *   y[i]      = x[i] cos - x[i+D/2] sin
 *   y[i+D/2]  = x[i+D/2] cos + x[i] sin
 * Backward is the rotation by -angle (the transpose):
 *   dx[i]     += dy[i] cos + dy[i+D/2] sin
 *   dx[i+D/2] += dy[i+D/2] cos - dy[i] sin
 *
 * inv_freq is computed on the CPU in float64 and uploaded as f32; cos and sin
 * are computed in-kernel from the f32 product pos * inv_freq, as HF does.
 */
import code from '../../../shaders/rope.wgsl?raw';
import { ModelFormatError } from '../../errors';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import { Tensor } from '../tensor';
import { grid1d } from './add';

/** config.json `rope_scaling` (HF); `type` is the legacy spelling of `rope_type`. */
export interface RopeScaling {
  rope_type?: string;
  type?: string;
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
  /** Other config keys (rope_theta in rope_parameters, ...) are ignored. */
  [key: string]: unknown;
}

export interface RopeOptions {
  /** rope_theta (base); default 10000. */
  theta?: number;
  scaling?: RopeScaling | null;
  /** Precomputed inverse frequencies [D/2] (see ropeInvFreqTensor); else built from theta/scaling and cached per engine. */
  invFreq?: Tensor;
  name?: string;
}

function need(s: RopeScaling, key: keyof RopeScaling, type: string): number {
  const v = s[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new ModelFormatError(`rope_scaling of type '${type}' needs a numeric '${key}' (got ${JSON.stringify(v)}); check config.json`);
  }
  return v;
}

/**
 * Inverse frequencies, float64, exactly as HF transformers' ROPE_INIT_FUNCTIONS:
 *   default: inv_freq[i] = 1 / theta^(2i/D)
 *   linear:  inv_freq / factor
 *   llama3 (_compute_llama3_parameters): with wavelen = 2 pi / inv_freq,
 *     low_wl = orig_max_pos / low_freq_factor, high_wl = orig_max_pos / high_freq_factor,
 *     wavelen < high_wl          -> inv_freq             (high frequencies kept)
 *     wavelen > low_wl           -> inv_freq / factor    (low frequencies scaled)
 *     otherwise, s = (orig_max_pos / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor),
 *                               -> (1 - s) inv_freq / factor + s inv_freq
 * All three have attention_scaling 1, so cos/sin are used unscaled.
 */
export function ropeInvFreq(headDim: number, theta: number, scaling?: RopeScaling | null): Float64Array {
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
    throw new ModelFormatError(`rope: head_dim must be a positive even integer, got ${headDim}`);
  }
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / theta ** ((2 * i) / headDim);
  const type = scaling ? (scaling.rope_type ?? scaling.type ?? 'default') : 'default';
  if (!scaling || type === 'default') return inv;
  if (type === 'linear') {
    const factor = need(scaling, 'factor', type);
    return inv.map((f) => f / factor);
  }
  if (type === 'llama3') {
    const factor = need(scaling, 'factor', type);
    const lowFF = need(scaling, 'low_freq_factor', type);
    const highFF = need(scaling, 'high_freq_factor', type);
    const oldCtx = need(scaling, 'original_max_position_embeddings', type);
    const lowWl = oldCtx / lowFF;
    const highWl = oldCtx / highFF;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWl) return f;
      if (wavelen > lowWl) return f / factor;
      const s = (oldCtx / wavelen - lowFF) / (highFF - lowFF);
      return ((1 - s) * f) / factor + s * f;
    });
  }
  throw new ModelFormatError(
    `rope_scaling.rope_type '${type}' is not supported (supported: default, linear, llama3); remove rope_scaling or use a model without it`,
  );
}

/** Upload ropeInvFreq as an f32 [D/2] tensor that outlives scopes (a model keeps one). */
export function ropeInvFreqTensor(e: Engine, headDim: number, theta: number, scaling?: RopeScaling | null): Tensor {
  return e.persist(e.upload(Float32Array.from(ropeInvFreq(headDim, theta, scaling)), [headDim / 2], 'rope.inv_freq'));
}

// Uploads flush the encoder, so inv_freq is uploaded once per (engine, config), not per call.
const invFreqCache = new WeakMap<Engine, Map<string, Tensor>>();

function cachedInvFreq(e: Engine, D: number, theta: number, scaling: RopeScaling | null | undefined): Tensor {
  let m = invFreqCache.get(e);
  if (!m) invFreqCache.set(e, (m = new Map()));
  const key = `${D}|${theta}|${JSON.stringify(scaling ?? null)}`;
  let t = m.get(key);
  if (!t || t.disposed) {
    t = ropeInvFreqTensor(e, D, theta, scaling);
    m.set(key, t);
  }
  return t;
}

/** Encode the raw kernel: dst = rope(src) (forward) or dst += rope^T(src) (backward). */
export function ropeKernel(
  e: Engine,
  entry: 'rope_forward' | 'rope_backward',
  dst: Tensor,
  src: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  rows: number,
  H: number,
  D: number,
): void {
  const n = (rows * H * D) / 2;
  e.dispatch(code, entry, params(n, H, D, D / 2), [{ tensor: src }, { tensor: positions }, { tensor: invFreq }, { tensor: dst, write: true }], grid1d(e, n));
}

/**
 * Rotate x [B, T, H, D] (any leading dims; the last two are H, D) by the
 * positions [B*T] (int32). `opts` may be the inverse-frequency tensor itself.
 */
export function rope(e: Engine, x: Tensor, positions: Tensor, opts: RopeOptions | Tensor = {}): Tensor {
  if (opts instanceof Tensor) opts = { invFreq: opts };
  if (x.shape.length < 2) throw new Error(`rope ${opts.name ?? ''}: x must be [..., H, D], got [${x.shape}]`);
  const D = x.shape[x.shape.length - 1];
  const H = x.shape[x.shape.length - 2];
  if (D % 2 !== 0) throw new Error(`rope ${opts.name ?? ''}: head dim ${D} must be even`);
  const rows = x.size / (H * D);
  if (positions.size !== rows) {
    throw new Error(`rope ${opts.name ?? ''}: ${positions.size} positions for ${rows} token rows of x [${x.shape}]; pass one position per (batch, time)`);
  }
  const invFreq = opts.invFreq ?? cachedInvFreq(e, D, opts.theta ?? 10000, opts.scaling);
  if (invFreq.size !== D / 2) throw new Error(`rope ${opts.name ?? ''}: invFreq has ${invFreq.size} values, head dim ${D} needs ${D / 2}`);
  const y = e.empty(x.shape, opts.name);
  ropeKernel(e, 'rope_forward', y, x, positions, invFreq, rows, H, D);
  if (e.tape && needsGrad(x)) {
    y.requiresGrad = true;
    e.tape.record('rope', () => {
      const dy = y.grad;
      if (!dy || !x.requiresGrad) return;
      ropeKernel(e, 'rope_backward', x.gradOrZeros(), dy, positions, invFreq, rows, H, D);
    });
  }
  return y;
}

/**
 * Float64 CPU reference. The angle is the f32 product of the f32 position and
 * the f32 inverse frequency (what the GPU and HF compute); cos/sin in float64.
 */
export function ropeCpu(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  B: number,
  T: number,
  H: number,
  D: number,
  invFreq: ArrayLike<number>,
): Float64Array {
  const half = D / 2;
  const y = new Float64Array(B * T * H * D);
  for (let r = 0; r < B * T; r++) {
    for (let h = 0; h < H; h++) {
      const o = (r * H + h) * D;
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(Math.fround(positions[r]) * Math.fround(invFreq[i]));
        const c = Math.cos(angle),
          s = Math.sin(angle);
        const a = x[o + i],
          b = x[o + i + half];
        y[o + i] = a * c - b * s;
        y[o + i + half] = b * c + a * s;
      }
    }
  }
  return y;
}
