/**
 * The safetensors format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes: N, u64 little-endian][N bytes: JSON header, may end in spaces][data]
 *
 * The header maps tensor names to {dtype, shape, data_offsets: [begin, end]}
 * (offsets relative to the start of the data section) plus an optional
 * "__metadata__" map of strings. The data section is fully covered by the
 * tensors: no holes, no overlaps, nothing after the last tensor.
 *
 * Every float dtype is read into a Float32Array (the engine's element type);
 * integer dtypes too (exact up to 2^24). Validation follows the reference Rust
 * crate, and every failure is a ModelFormatError that names the file, the
 * problem and what to do about it.
 */
import { ModelFormatError } from '../errors';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

/** Bytes per element of every dtype the format defines. */
export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/** The reference implementation refuses headers above 100 MB; so do we. */
export const MAX_HEADER_BYTES = 100_000_000;

/** One header entry; offsets are relative to the start of the data section. */
export interface SafetensorsTensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** N, the JSON header's length in bytes. */
  headerLength: number;
  /** 8 + N: where the data section starts in the file. */
  dataStart: number;
  /** Bytes of the data section the tensors cover (the largest end offset). */
  dataLength: number;
  /** In header order. */
  tensors: Map<string, SafetensorsTensorInfo>;
  metadata: Record<string, string>;
}

export interface LoadedTensor {
  /** The dtype stored in the file; `data` is always float32. */
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, LoadedTensor>;
  metadata: Record<string, string>;
}

export interface ParseOptions {
  /** Convert only the tensors this accepts (the header is still checked whole). */
  filter?: (tensorName: string) => boolean;
  /**
   * Always copy F32 data. By default an aligned F32 tensor is a view into
   * `bytes` (no second copy of the weights in memory), so it aliases the file.
   */
  copy?: boolean;
}

const REDOWNLOAD = 'Download the file again; if it still fails, it is not a valid safetensors file.';

function fail(file: string, problem: string, fix = REDOWNLOAD): never {
  throw new ModelFormatError(`${file}: ${problem}. ${fix}`);
}

function isDtype(x: unknown): x is SafetensorsDtype {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, x);
}

/**
 * Reads the 8-byte length prefix and returns 8 + N, the number of bytes a
 * caller must read from the start of the file to parse the header (for
 * range reads of large files). `fileSize`, when known, is checked too.
 */
export function safetensorsHeaderSize(prefix: Uint8Array, name: string, fileSize?: number): number {
  if (prefix.byteLength < 8) {
    fail(name, `file is truncated: ${prefix.byteLength} bytes, less than the 8-byte header length`);
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const lo = view.getUint32(0, true);
  const hi = view.getUint32(4, true);
  if (hi !== 0 || lo > MAX_HEADER_BYTES) {
    const n = BigInt(hi) * 2n ** 32n + BigInt(lo);
    fail(
      name,
      `header length ${n} is absurd (more than ${MAX_HEADER_BYTES} bytes); the first 8 bytes are not a safetensors header length`,
      'Check that this is a .safetensors file (not a PyTorch .bin, a Git LFS pointer or an HTML error page) and download it again.',
    );
  }
  if (fileSize !== undefined && 8 + lo > fileSize) {
    fail(
      name,
      `header length ${lo} is larger than the file (${fileSize} bytes)`,
      'The file is truncated or not a safetensors file (a Git LFS pointer?); download it again.',
    );
  }
  return 8 + lo;
}

/**
 * Parses and validates the header. `bytes` must hold at least the first
 * 8 + N bytes of the file (see safetensorsHeaderSize); `fileSize` is the size
 * of the whole file, by default `bytes.byteLength` (the whole file in hand).
 */
export function parseSafetensorsHeader(bytes: Uint8Array, name: string, fileSize: number = bytes.byteLength): SafetensorsHeader {
  const dataStart = safetensorsHeaderSize(bytes, name, fileSize);
  const headerLength = dataStart - 8;
  if (bytes.byteLength < dataStart) {
    fail(name, `only ${bytes.byteLength} bytes given but the header needs ${dataStart}`, 'Pass at least the first 8 + N bytes.');
  }

  let json: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, dataStart));
    json = JSON.parse(text);
  } catch (e) {
    fail(name, `the ${headerLength}-byte header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    fail(name, 'the header is not a JSON object');
  }

  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> = {};

  for (const [key, raw] of Object.entries(json as Record<string, unknown>)) {
    if (key === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
        fail(name, '"__metadata__" is not an object of strings');
      }
      // Strings only, as the reference crate (HashMap<String, String>): a nested value is not re-serialised (a
      // 100 MB header of nested arrays would overflow the stack in JSON.stringify).
      const bad = Object.entries(raw as Record<string, unknown>).find(([, v]) => typeof v !== 'string');
      if (bad)
        fail(name, `"__metadata__" value "${bad[0]}" is ${Array.isArray(bad[1]) ? 'a list' : bad[1] === null ? 'null' : `a ${typeof bad[1]}`}, not a string`);
      metadata = { ...(raw as Record<string, string>) };
      continue;
    }
    if (raw === null || typeof raw !== 'object') fail(name, `tensor "${key}" has no {dtype, shape, data_offsets} entry`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (!isDtype(dtype)) {
      fail(
        name,
        `tensor "${key}" has unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`,
        'Convert the checkpoint to F32, F16 or BF16 safetensors.',
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(name, `tensor "${key}" has shape ${JSON.stringify(shape)}, not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]) {
      fail(name, `tensor "${key}" has data_offsets ${JSON.stringify(offsets)} out of range (need [begin, end], 0 <= begin <= end)`);
    }
    const [begin, end] = offsets as [number, number];
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    const expected = elements * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(expected) || expected !== end - begin) {
      fail(name, `tensor "${key}" (${dtype} ${JSON.stringify(shape)}) needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    tensors.set(key, { dtype, shape: [...(shape as number[])], dataOffsets: [begin, end] });
  }

  // The data section must be covered exactly: sort by offset, walk it.
  const byOffset = [...tensors.entries()].sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0] || a[1].dataOffsets[1] - b[1].dataOffsets[1]);
  let dataLength = 0;
  for (const [, t] of byOffset) dataLength = Math.max(dataLength, t.dataOffsets[1]);
  if (dataLength > dataSize) {
    const last = byOffset.find(([, t]) => t.dataOffsets[1] === dataLength)![0];
    fail(
      name,
      `file is truncated: tensor "${last}" ends at byte ${dataStart + dataLength} but the file has ${fileSize} bytes`,
      'The download was cut short; delete the file (or the cache entry) and download it again.',
    );
  }
  let cursor = 0;
  let previous = '(start of data)';
  for (const [key, t] of byOffset) {
    const [begin, end] = t.dataOffsets;
    if (begin < cursor) {
      fail(name, `tensor "${key}" at data_offsets [${begin}, ${end}] overlaps "${previous}" (which ends at ${cursor})`);
    }
    if (begin > cursor) {
      fail(name, `offsets are not contiguous: ${begin - cursor} bytes unused between "${previous}" and "${key}"`);
    }
    cursor = end;
    previous = key;
  }
  if (cursor < dataSize) {
    fail(name, `offsets are not contiguous: ${dataSize - cursor} bytes after the last tensor "${previous}" belong to no tensor`);
  }

  return { headerLength, dataStart, dataLength, tensors, metadata };
}

/** Parses a whole file in memory and converts its tensors to float32. */
export function parseSafetensors(bytes: Uint8Array, name: string, opts: ParseOptions = {}): SafetensorsFile {
  const header = parseSafetensorsHeader(bytes, name);
  const tensors = new Map<string, LoadedTensor>();
  for (const [key, info] of header.tensors) {
    if (opts.filter && !opts.filter(key)) continue;
    const [begin, end] = info.dataOffsets;
    const raw = bytes.subarray(header.dataStart + begin, header.dataStart + end);
    tensors.set(key, { dtype: info.dtype, shape: info.shape, data: decodeTensorData(raw, info.dtype, opts.copy ?? false) });
  }
  return { tensors, metadata: header.metadata };
}

// ---------------------------------------------------------------------------
// dtype conversion (all hosts that run WebGPU are little-endian, as is the format)

let f16Table: Float32Array | null = null;
let e4m3Table: Float32Array | null = null;

/** IEEE half -> float: (-1)^s * 2^(e-15) * (1 + m/1024), subnormal 2^-14 * m/1024. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** float -> IEEE half bits, round to nearest even (as numpy/torch do). */
export function f32ToF16(x: number): number {
  return f32BitsToF16(new Uint32Array(new Float32Array([x]).buffer)[0]);
}

/** f32ToF16 on the float's bits (bulk conversions read a Uint32Array view: no allocation per value). */
export function f32BitsToF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // underflows to signed zero
    mant |= 0x800000; // implicit 1
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && h & 1)) h += 1;
    return sign | h; // may round up into the smallest normal, which is correct
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h += 1; // may carry into the exponent / to inf: correct
  return sign | h;
}

/** float -> bfloat16 bits, round to nearest even; NaN stays NaN. */
export function f32ToBf16(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float8 e4m3fn (no infinities; S.1111.111 is NaN): bias 7, 3 mantissa bits. */
function e4m3ToF32(b: number): number {
  const s = b & 0x80 ? -1 : 1;
  const e = (b >> 3) & 0xf;
  const m = b & 7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return s * m * 2 ** -9;
  return s * (1 + m / 8) * 2 ** (e - 7);
}

function halfTable(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16ToF32(i);
  }
  return f16Table;
}

/** A typed view of `raw`, over a copy when `raw` is not aligned to the element size. */
function alignedView<T>(raw: Uint8Array, bytes: number, make: (buf: ArrayBuffer, off: number, len: number) => T): T {
  const n = raw.byteLength / bytes;
  if (raw.byteOffset % bytes === 0 && raw.buffer instanceof ArrayBuffer) return make(raw.buffer, raw.byteOffset, n);
  return make(Uint8Array.prototype.slice.call(raw).buffer, 0, n);
}

/**
 * Converts one tensor's bytes (exactly its data_offsets range) to float32.
 * Usable on bytes fetched by range, without the rest of the file.
 */
export function decodeTensorData(raw: Uint8Array, dtype: SafetensorsDtype, copy = true): Float32Array {
  const n = raw.byteLength / DTYPE_BYTES[dtype];
  switch (dtype) {
    case 'F32': {
      if (!copy && raw.byteOffset % 4 === 0 && raw.buffer instanceof ArrayBuffer) {
        return new Float32Array(raw.buffer, raw.byteOffset, n);
      }
      // Uint8Array's slice copies; a Node Buffer's slice() would be a view of its whole pool.
      return new Float32Array(Uint8Array.prototype.slice.call(raw).buffer);
    }
    case 'F16': {
      const table = halfTable();
      const h = alignedView(raw, 2, (b, o, l) => new Uint16Array(b, o, l));
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[h[i]];
      return out;
    }
    case 'BF16': {
      // bfloat16 is the top half of a float32: shift the bits into place.
      const h = alignedView(raw, 2, (b, o, l) => new Uint16Array(b, o, l));
      const bits = new Uint32Array(n);
      for (let i = 0; i < n; i++) bits[i] = h[i] << 16;
      return new Float32Array(bits.buffer);
    }
    case 'F64':
      return Float32Array.from(alignedView(raw, 8, (b, o, l) => new Float64Array(b, o, l)));
    case 'F8_E5M2': {
      // e5m2 is the top byte of an IEEE half.
      const table = halfTable();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[raw[i] << 8];
      return out;
    }
    case 'F8_E4M3': {
      if (!e4m3Table) {
        e4m3Table = new Float32Array(256);
        for (let i = 0; i < 256; i++) e4m3Table[i] = e4m3ToF32(i);
      }
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = e4m3Table[raw[i]];
      return out;
    }
    case 'I64':
      return Float32Array.from(
        alignedView(raw, 8, (b, o, l) => new BigInt64Array(b, o, l)),
        Number,
      );
    case 'U64':
      return Float32Array.from(
        alignedView(raw, 8, (b, o, l) => new BigUint64Array(b, o, l)),
        Number,
      );
    case 'I32':
      return Float32Array.from(alignedView(raw, 4, (b, o, l) => new Int32Array(b, o, l)));
    case 'U32':
      return Float32Array.from(alignedView(raw, 4, (b, o, l) => new Uint32Array(b, o, l)));
    case 'I16':
      return Float32Array.from(alignedView(raw, 2, (b, o, l) => new Int16Array(b, o, l)));
    case 'U16':
      return Float32Array.from(alignedView(raw, 2, (b, o, l) => new Uint16Array(b, o, l)));
    case 'I8':
      return Float32Array.from(new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength));
    case 'U8':
    case 'BOOL':
      return Float32Array.from(raw);
  }
}

// ---------------------------------------------------------------------------
// writing

export interface TensorToWrite {
  shape: number[];
  data: Float32Array;
  /** Stored dtype; F32 by default. F16/BF16 round to nearest even; I64 needs integer values (index buffers). */
  dtype?: 'F32' | 'F16' | 'BF16' | 'I64';
}

/**
 * Writes a safetensors file: tensors in the given order, contiguous, header
 * padded with spaces so the data section starts on an 8-byte boundary.
 * `metadata` goes to "__metadata__" (HF PEFT writes {"format": "pt"}).
 */
export function serializeSafetensors(tensors: Record<string, TensorToWrite> | Map<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new ModelFormatError(`safetensors metadata "${k}" must be a string, got ${typeof v}.`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const [key, t] of entries) {
    if (key === '__metadata__') {
      throw new ModelFormatError('A tensor cannot be named "__metadata__" (reserved by safetensors); rename it.');
    }
    const dtype = t.dtype ?? 'F32';
    if (!['F32', 'F16', 'BF16', 'I64'].includes(dtype)) {
      throw new ModelFormatError(`Tensor "${key}": cannot write dtype ${dtype}; use F32, F16, BF16 or I64.`);
    }
    if (dtype === 'I64' && !t.data.every((v) => Number.isInteger(v))) {
      throw new ModelFormatError(`Tensor "${key}": I64 data must hold integers.`);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new ModelFormatError(`Tensor "${key}": shape ${JSON.stringify(t.shape)} is not a list of non-negative integers.`);
    }
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (elements !== t.data.length) {
      throw new ModelFormatError(
        `Tensor "${key}": shape ${JSON.stringify(t.shape)} has ${elements} elements but its data has ${t.data.length}; fix the shape or the data.`,
      );
    }
    const size = elements * DTYPE_BYTES[dtype];
    header[key] = { dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }

  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.byteLength) / 8) * 8 - 8;
  const out = new Uint8Array(8 + padded + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, padded, true);
  view.setUint32(4, 0, true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.byteLength, 8 + padded);

  let at = 8 + padded;
  for (const [, t] of entries) {
    const dtype = t.dtype ?? 'F32';
    if (dtype === 'F32') {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
      at += t.data.byteLength;
    } else if (dtype === 'I64') {
      for (let i = 0; i < t.data.length; i++, at += 8) view.setBigInt64(at, BigInt(t.data[i]), true);
    } else {
      const convert = dtype === 'F16' ? f32ToF16 : f32ToBf16;
      for (let i = 0; i < t.data.length; i++, at += 2) view.setUint16(at, convert(t.data[i]), true);
    }
  }
  return out;
}
