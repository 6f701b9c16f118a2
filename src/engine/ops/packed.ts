/**
 * Packed 16-bit base weights (f16 / bf16, two per u32; see Tensor) and row
 * blocks of split tensors: unpacking to f32 on the GPU, the host-side
 * rounding that makes packed storage, and the column copies a split logits
 * matmul needs. The kernels that compute with packed weights directly (matmul
 * B operand, embedding gather) live with their ops.
 */
import code from '../../../shaders/packed.wgsl?raw';
import { f32BitsToF16 } from '../../model/safetensors';
import { params, unpackHalves } from '../engine';
import type { Engine } from '../engine';
import type { StorageDtype, Tensor } from '../tensor';
import { grid1d } from './add';

/** The pipeline constant of a packed dtype in the WGSL (DT). */
export function packedConstant(dtype: StorageDtype): number {
  if (dtype === 'f32') throw new Error('packedConstant: f32 is not packed');
  return dtype === 'bf16' ? 1 : 0;
}

/** f32 values → 16-bit bits of `dtype`, round to nearest even (as torch's .to()). */
export function roundToHalves(x: ArrayLike<number>, dtype: Exclude<StorageDtype, 'f32'>): Uint16Array {
  const out = new Uint16Array(x.length);
  // On the bits of one f32 view: no allocation per value.
  const f = x instanceof Float32Array ? x : Float32Array.from(x);
  const u = new Uint32Array(f.buffer, f.byteOffset, f.length);
  if (dtype === 'bf16') {
    // f32ToBf16's arithmetic: round to nearest even; NaN stays NaN.
    for (let i = 0; i < u.length; i++) {
      const b = u[i];
      out[i] = (b & 0x7fffffff) > 0x7f800000 ? ((b >>> 16) | 0x40) & 0xffff : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
    }
    return out;
  }
  for (let i = 0; i < u.length; i++) out[i] = f32BitsToF16(u[i]);
  return out;
}

/** The f32 values a rounding to `dtype` gives (the reference the packed path must match). */
export function roundedF32(x: ArrayLike<number>, dtype: StorageDtype): Float32Array {
  if (dtype === 'f32') return Float32Array.from(x);
  return unpackHalves(roundToHalves(x, dtype), dtype);
}

/**
 * An f32 copy of `t` (a new tensor; `t` is left as is). Packed tensors are
 * unpacked on the GPU; split tensors give split f32 copies of their blocks.
 */
export function toF32(e: Engine, t: Tensor, name = t.name): Tensor {
  if (t.blocks)
    return e.splitTensor(
      t.shape,
      t.blocks.map((b) => toF32(e, b, name)),
      name,
    );
  const out = e.empty(t.shape, name);
  if (!t.packed) {
    e.copy(out, t);
    return out;
  }
  e.dispatch(
    code,
    'unpack',
    params(t.size),
    [
      { tensor: t, packed: true },
      { tensor: out, write: true },
    ],
    grid1d(e, Math.ceil(t.size / 2), 64),
    { DT: packedConstant(t.dtype) },
  );
  return out;
}

/** dst[m, dOff + j] (+)= src[m, sOff + j] for m < M, j < W (row pitches lds, ldd). */
export function copyColumns(
  e: Engine,
  dst: Tensor,
  src: Tensor,
  M: number,
  W: number,
  o: { lds: number; sOff: number; ldd: number; dOff: number; accumulate?: boolean },
): void {
  e.dispatch(
    code,
    'copy_cols',
    params(M, W, o.lds, o.sOff, o.ldd, o.dOff, o.accumulate ? 1 : 0, 0),
    [{ tensor: src }, { tensor: dst, write: true }],
    grid1d(e, M * W, 64),
  );
}

/**
 * Rows per block so that one block of a [rows, C] tensor in `dtype` fits
 * `maxBytes`: a multiple of 4 (a block of the head is then a B with N % 4 == 0,
 * which the v4 / v5 / v6 matmuls read in place, packed or not, instead of
 * through an f32 copy as large as the block again), else even when packed and
 * C is odd (no block ends mid-word).
 */
export function rowsPerBlock(C: number, dtype: StorageDtype, maxBytes: number): number {
  const rowBytes = dtype === 'f32' ? C * 4 : C * 2;
  let rows = Math.floor(maxBytes / rowBytes);
  if (rows >= 4) rows -= rows % 4;
  else if (dtype !== 'f32' && C % 2 === 1) rows -= rows % 2;
  // A packed block of an odd row count with odd C would end mid-word; storageBytes rounds up, so check the real size.
  while (rows > 1 && (dtype === 'f32' ? rows * C * 4 : Math.ceil((rows * C) / 2) * 4) > maxBytes) rows--;
  if (rows < 1) throw new Error(`rowsPerBlock: one row of ${C} ${dtype} values is larger than ${maxBytes} bytes`);
  return rows;
}
