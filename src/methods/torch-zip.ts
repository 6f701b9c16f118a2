/**
 * torch.save's zip serialization (torch ≥ 1.6) for one shape of object: a
 * dict {name: tensor} of dense CPU tensors — what the Adapters library writes
 * as pytorch_adapter.bin (METHODS.md §2.2). Writer and reader.
 *
 * Container: an uncompressed ("stored") zip whose entries share one top-level
 * folder <a>/ (torch names it after the file's stem):
 *
 *   <a>/data.pkl     protocol-2 pickle of the dict (below)
 *   <a>/byteorder    "little"
 *   <a>/data/<k>     raw bytes of storage k (little-endian float32 here)
 *   <a>/version      "3\n"
 *
 * Every entry's data starts on a 64-byte boundary, as torch aligns it: the
 * local header's extra field is padded with a block of id 0x4246 ("FB") —
 * readers find the data through the header lengths, so the padding is inert.
 *
 * data.pkl: each tensor is pickled as the call
 *   torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, collections.OrderedDict())
 * where `storage` is a persistent id ("storage", torch.FloatStorage, "<k>", "cpu", numel) that
 * the loader resolves to <a>/data/<k>. The writer emits only opcodes torch's
 * weights_only unpickler accepts (PROTO, EMPTY_DICT, MARK, BINUNICODE, GLOBAL,
 * BINPUT/BINGET, BININT*, TUPLE*, EMPTY_TUPLE, BINPERSID, NEWFALSE, REDUCE,
 * SETITEM(S), STOP).
 *
 * The reader is not a pickle VM: it interprets that data-only subset (plus the
 * protocol-4 framing opcodes FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE),
 * and "calls" exactly two globals — _rebuild_tensor_v2 (builds a tensor
 * record from the storage bytes) and collections.OrderedDict (an empty map);
 * the only other globals it knows are storage classes, as persistent-id
 * payloads. Any other opcode or global is a ModelFormatError. Nothing in the
 * file is ever executed.
 */
import { ModelFormatError } from '../errors';
import { decodeTensorData, type SafetensorsDtype } from '../model/safetensors';

export interface TorchTensor {
  shape: number[];
  data: Float32Array;
}

/** Data alignment of zip entries, as torch writes them. */
export const TORCH_ZIP_ALIGN = 64;

// ---------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zip requires.

let crcTable: Uint32Array | null = null;

export function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------
// Stored zip

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
/** Extra-field id torch uses for its alignment padding ("FB"). */
const PAD_EXTRA_ID = 0x4246;
/** DOS date 1980-01-01 (the epoch of the format), time 00:00: the archive is reproducible. */
const DOS_DATE = (0 << 9) | (1 << 5) | 1;

/** A stored zip with each entry's data aligned to `align` bytes. */
export function writeStoredZip(entries: [string, Uint8Array][], align = TORCH_ZIP_ALIGN): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBytes = enc.encode(name);
    const crc = crc32(data);
    // Local header is 30 bytes + name + extra; the extra block (if any) is at least 4 bytes (id + length).
    const base = offset + 30 + nameBytes.length;
    let pad = (align - (base % align)) % align;
    if (pad > 0 && pad < 4) pad += align;
    const local = new Uint8Array(30 + nameBytes.length + pad);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, SIG_LOCAL, true);
    lv.setUint16(4, 20, true); // version needed: 2.0
    lv.setUint16(6, 0, true); // flags
    lv.setUint16(8, 0, true); // method: stored
    lv.setUint16(10, 0, true); // time
    lv.setUint16(12, DOS_DATE, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, nameBytes.length, true);
    lv.setUint16(28, pad, true);
    local.set(nameBytes, 30);
    if (pad > 0) {
      lv.setUint16(30 + nameBytes.length, PAD_EXTRA_ID, true);
      lv.setUint16(32 + nameBytes.length, pad - 4, true);
      // padding bytes: torch writes 'Z'; any value is inert.
      local.fill(0x5a, 34 + nameBytes.length);
    }
    const cd = new Uint8Array(46 + nameBytes.length);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, SIG_CENTRAL, true);
    cv.setUint16(4, 20, true); // made by
    cv.setUint16(6, 20, true); // needed
    cv.setUint16(8, 0, true);
    cv.setUint16(10, 0, true);
    cv.setUint16(12, 0, true);
    cv.setUint16(14, DOS_DATE, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, nameBytes.length, true);
    // extra 0, comment 0, disk 0, internal 0, external 0
    cv.setUint32(42, offset, true);
    cd.set(nameBytes, 46);
    parts.push(local, data);
    central.push(cd);
    offset += local.length + data.length;
  }
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  if (offset + cdSize > 0xffffffff || entries.length > 0xffff) {
    throw new ModelFormatError(
      `A torch zip of ${entries.length} entries and ${offset} bytes needs zip64, which this writer does not produce; save fewer or smaller tensors per file.`,
    );
  }
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, SIG_EOCD, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  const out = new Uint8Array(offset + cdSize + 22);
  let p = 0;
  for (const part of [...parts, ...central, eocd]) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}

export interface ZipEntry {
  name: string;
  /** Byte offset of the entry's data in the archive. */
  dataOffset: number;
  size: number;
  crc: number;
}

/**
 * The entries of a zip whose entries are all stored (torch's files are). Reads
 * the central directory (zip64 end records included); compressed, encrypted or
 * spanned archives are a ModelFormatError.
 */
export function readStoredZip(bytes: Uint8Array, what: string): ZipEntry[] {
  const bad = (why: string): never => {
    throw new ModelFormatError(
      `${what} is not a torch zip checkpoint: ${why}. Save it with torch.save (torch ≥ 1.6, the default zip format) or use adapter.safetensors.`,
    );
  };
  try {
    return readZipRecords(bytes, bad);
  } catch (e) {
    // Any record field read past the end of the buffer: a damaged or truncated archive.
    if (e instanceof RangeError) bad('a zip record runs past the end of the file (truncated or damaged)');
    throw e;
  }
}

function readZipRecords(bytes: Uint8Array, bad: (why: string) => never): ZipEntry[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 22) bad('too short for a zip archive');
  // The end record is the last 22 bytes plus a comment of at most 65535 bytes.
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 0xffff); i--) {
    if (dv.getUint32(i, true) === SIG_EOCD && i + 22 + dv.getUint16(i + 20, true) === bytes.length) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) bad(bytes[0] === 0x80 ? 'it is a legacy (pre-1.6) pickle file, not a zip' : 'no zip end-of-central-directory record');
  let count = dv.getUint16(eocd + 10, true);
  let cdSize = dv.getUint32(eocd + 12, true);
  let cdOffset = dv.getUint32(eocd + 16, true);
  if (dv.getUint16(eocd + 4, true) !== 0 || dv.getUint16(eocd + 6, true) !== 0) bad('a multi-disk archive');
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // zip64: the locator sits right before the end record and points at the zip64 end record.
    const loc = eocd - 20;
    if (loc < 0 || dv.getUint32(loc, true) !== SIG_EOCD64_LOCATOR) bad('zip64 sizes without a zip64 locator');
    const rec = Number(dv.getBigUint64(loc + 8, true));
    if (rec + 56 > bytes.length || dv.getUint32(rec, true) !== SIG_EOCD64) bad('a broken zip64 end record');
    count = Number(dv.getBigUint64(rec + 32, true));
    cdSize = Number(dv.getBigUint64(rec + 40, true));
    cdOffset = Number(dv.getBigUint64(rec + 48, true));
  }
  if (cdOffset + cdSize > bytes.length) bad('the central directory lies past the end of the file (truncated download?)');
  const dec = new TextDecoder();
  const entries: ZipEntry[] = [];
  let p = cdOffset;
  for (let n = 0; n < count; n++) {
    if (p + 46 > bytes.length || dv.getUint32(p, true) !== SIG_CENTRAL) bad(`central directory entry ${n} is malformed`);
    const flags = dv.getUint16(p + 8, true);
    const method = dv.getUint16(p + 10, true);
    const crc = dv.getUint32(p + 16, true);
    let csize = dv.getUint32(p + 20, true);
    let size = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    let localOffset = dv.getUint32(p + 42, true);
    const name = dec.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    if (flags & 1) bad(`entry ${name} is encrypted`);
    if (method !== 0) bad(`entry ${name} is compressed (method ${method}); torch writes stored entries`);
    // zip64 extended information: the 0xFFFFFFFF fields, in order size, csize, offset.
    let q = p + 46 + nameLen;
    const qEnd = q + extraLen;
    while (q + 4 <= qEnd) {
      const id = dv.getUint16(q, true),
        len = dv.getUint16(q + 2, true);
      if (id === 0x0001) {
        let r = q + 4;
        if (size === 0xffffffff) {
          size = Number(dv.getBigUint64(r, true));
          r += 8;
        }
        if (csize === 0xffffffff) {
          csize = Number(dv.getBigUint64(r, true));
          r += 8;
        }
        if (localOffset === 0xffffffff) {
          localOffset = Number(dv.getBigUint64(r, true));
          r += 8;
        }
      }
      q += 4 + len;
    }
    if (csize !== size) bad(`entry ${name} has different stored and original sizes`);
    if (localOffset + 30 > bytes.length || dv.getUint32(localOffset, true) !== SIG_LOCAL) bad(`entry ${name} has no local header`);
    const dataOffset = localOffset + 30 + dv.getUint16(localOffset + 26, true) + dv.getUint16(localOffset + 28, true);
    if (dataOffset + size > bytes.length) bad(`entry ${name} runs past the end of the file (truncated download?)`);
    entries.push({ name, dataOffset, size, crc });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

// ---------------------------------------------------------------------------
// Pickle (protocol 2 writer, data-only reader)

/** Opcodes, by pickletools' names. */
const OP = {
  MARK: 0x28,
  STOP: 0x2e,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  NONE: 0x4e,
  BINPERSID: 0x51,
  REDUCE: 0x52,
  BINUNICODE: 0x58,
  EMPTY_LIST: 0x5d,
  BUILD: 0x62,
  GLOBAL: 0x63,
  BINGET: 0x68,
  LONG_BINGET: 0x6a,
  BINPUT: 0x71,
  LONG_BINPUT: 0x72,
  SETITEM: 0x73,
  TUPLE: 0x74,
  SETITEMS: 0x75,
  EMPTY_DICT: 0x7d,
  EMPTY_TUPLE: 0x29,
  PROTO: 0x80,
  LONG1: 0x8a,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  NEWTRUE: 0x88,
  NEWFALSE: 0x89,
  SHORT_BINUNICODE: 0x8c,
  STACK_GLOBAL: 0x93,
  MEMOIZE: 0x94,
  FRAME: 0x95,
} as const;
const OP_NAME = new Map<number, string>(Object.entries(OP).map(([k, v]) => [v, k]));

class PickleWriter {
  private out: number[] = [];
  private memo = new Map<string, number>();
  private enc = new TextEncoder();

  byte(b: number): void {
    this.out.push(b);
  }
  u32(v: number): void {
    this.out.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  /** Python's save_long: the smallest of BININT1, BININT2, BININT, LONG1. */
  int(v: number): void {
    if (!Number.isSafeInteger(v)) throw new ModelFormatError(`Cannot pickle ${v}: not an integer.`);
    if (v >= 0 && v < 0x100) this.out.push(OP.BININT1, v);
    else if (v >= 0 && v < 0x10000) this.out.push(OP.BININT2, v & 0xff, v >>> 8);
    else if (v >= -0x80000000 && v < 0x80000000) {
      this.byte(OP.BININT);
      this.u32(v | 0);
    } else {
      // LONG1: little-endian two's complement, minimal length.
      const bytes: number[] = [];
      let x = BigInt(v);
      while (true) {
        const b = Number(x & 0xffn);
        bytes.push(b);
        x >>= 8n;
        if ((x === 0n && (b & 0x80) === 0) || (x === -1n && (b & 0x80) !== 0)) break;
      }
      this.out.push(OP.LONG1, bytes.length, ...bytes);
    }
  }
  /** Repeated strings and globals: BINGET of the first occurrence's memo slot. */
  private memoized(key: string, emit: () => void): void {
    const slot = this.memo.get(key);
    if (slot !== undefined) {
      if (slot < 0x100) this.out.push(OP.BINGET, slot);
      else {
        this.byte(OP.LONG_BINGET);
        this.u32(slot);
      }
      return;
    }
    emit();
    const n = this.memo.size;
    this.memo.set(key, n);
    if (n < 0x100) this.out.push(OP.BINPUT, n);
    else {
      this.byte(OP.LONG_BINPUT);
      this.u32(n);
    }
  }
  str(s: string, memo = false): void {
    const emit = () => {
      const b = this.enc.encode(s);
      this.byte(OP.BINUNICODE);
      this.u32(b.length);
      for (const x of b) this.out.push(x);
    };
    if (memo) this.memoized(`s:${s}`, emit);
    else emit();
  }
  global(module: string, name: string): void {
    this.memoized(`g:${module}.${name}`, () => {
      this.byte(OP.GLOBAL);
      for (const x of this.enc.encode(`${module}\n${name}\n`)) this.out.push(x);
    });
  }
  /** Python's save_tuple for protocol 2: TUPLE1..3 for short tuples, MARK … TUPLE otherwise. */
  intTuple(xs: number[]): void {
    if (xs.length === 0) return this.byte(OP.EMPTY_TUPLE);
    if (xs.length > 3) this.byte(OP.MARK);
    for (const x of xs) this.int(x);
    this.byte(xs.length === 1 ? OP.TUPLE1 : xs.length === 2 ? OP.TUPLE2 : xs.length === 3 ? OP.TUPLE3 : OP.TUPLE);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

/**
 * data.pkl for {name: tensor}, storage k = the k-th tensor (offset 0; contiguous unless `stride` is given: the
 * fuzz and bounds tests write views).
 */
export function pickleTensorDict(entries: [string, { shape: number[]; numel: number; stride?: number[] }][]): Uint8Array {
  const w = new PickleWriter();
  w.byte(OP.PROTO);
  w.byte(2);
  w.byte(OP.EMPTY_DICT);
  // Python memoizes the dict; its slot is never read back here, so it is not taken.
  const BATCH = 1000;
  for (let start = 0; start < entries.length; start += BATCH) {
    const batch = entries.slice(start, start + BATCH);
    if (batch.length > 1) w.byte(OP.MARK);
    batch.forEach(([key, t], j) => {
      const k = start + j;
      w.str(key);
      w.global('torch._utils', '_rebuild_tensor_v2');
      w.byte(OP.MARK);
      // persistent id ("storage", torch.FloatStorage, "<k>", "cpu", numel)
      w.byte(OP.MARK);
      w.str('storage', true);
      w.global('torch', 'FloatStorage');
      w.str(String(k));
      w.str('cpu', true);
      w.int(t.numel);
      w.byte(OP.TUPLE);
      w.byte(OP.BINPERSID);
      w.int(0); // storage_offset
      w.intTuple(t.shape);
      w.intTuple(t.stride ?? contiguousStrides(t.shape));
      w.byte(OP.NEWFALSE); // requires_grad
      w.global('collections', 'OrderedDict'); // backward_hooks = OrderedDict()
      w.byte(OP.EMPTY_TUPLE);
      w.byte(OP.REDUCE);
      w.byte(OP.TUPLE);
      w.byte(OP.REDUCE);
    });
    w.byte(batch.length > 1 ? OP.SETITEMS : OP.SETITEM);
  }
  w.byte(OP.STOP);
  return w.bytes();
}

export function contiguousStrides(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** A torch.save'd dict of float32 tensors, in the given order. `archive` is the top-level folder (torch: the file's stem). */
export function writeTorchZip(tensors: Map<string, TorchTensor> | [string, TorchTensor][], archive = 'archive'): Uint8Array {
  const list = tensors instanceof Map ? [...tensors.entries()] : tensors;
  const enc = new TextEncoder();
  const entries: [string, Uint8Array][] = [];
  const meta: [string, { shape: number[]; numel: number }][] = [];
  for (const [key, t] of list) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) throw new ModelFormatError(`Tensor ${key}: shape [${t.shape}] holds ${numel} values, data has ${t.data.length}.`);
    meta.push([key, { shape: t.shape, numel }]);
  }
  entries.push([`${archive}/data.pkl`, pickleTensorDict(meta)]);
  entries.push([`${archive}/byteorder`, enc.encode('little')]);
  list.forEach(([, t], k) => {
    // Float32Array bytes are little-endian on every host WebGPU runs on; write them explicitly anyway.
    const b = new Uint8Array(t.data.length * 4);
    const dv = new DataView(b.buffer);
    for (let i = 0; i < t.data.length; i++) dv.setFloat32(i * 4, t.data[i], true);
    entries.push([`${archive}/data/${k}`, b]);
  });
  entries.push([`${archive}/version`, enc.encode('3\n')]);
  return writeStoredZip(entries);
}

// --- reader ------------------------------------------------------------------

interface Global {
  kind: 'global';
  module: string;
  name: string;
}
interface StorageRef {
  kind: 'storage';
  dtype: SafetensorsDtype;
  key: string;
  numel: number;
}
interface TensorRec {
  kind: 'tensor';
  storage: StorageRef;
  offset: number;
  size: number[];
  stride: number[];
}
interface DictVal {
  kind: 'dict';
  map: Map<unknown, unknown>;
}
const MARK = Symbol('mark');
type Val = null | boolean | number | string | Val[] | Global | StorageRef | TensorRec | DictVal | typeof MARK;

/** torch storage classes → element dtype. */
const STORAGE_DTYPES: Record<string, SafetensorsDtype> = { FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16' };

function isObj<K extends string>(v: Val, kind: K): v is Extract<Val, { kind: K }> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && (v as { kind?: string }).kind === kind;
}

/**
 * The opcode names of a pickle, in order (pickletools-style, for tests and
 * error messages). Stops at STOP; unknown opcodes are reported by name "?xx".
 */
export function pickleOpcodes(bytes: Uint8Array): string[] {
  const ops: string[] = [];
  walkPickle(bytes, 'data.pkl', (op) => {
    ops.push(OP_NAME.get(op) ?? `?${op.toString(16)}`);
    return true;
  });
  return ops;
}

/**
 * Decode one opcode at a time; `visit` gets the opcode and a reader of its
 * argument bytes. Returns at STOP.
 */
function walkPickle(bytes: Uint8Array, what: string, visit: (op: number, arg: ArgReader) => boolean): void {
  const r = new ArgReader(bytes, what);
  while (r.pos < bytes.length) {
    const op = bytes[r.pos++];
    const start = r.pos;
    if (!visit(op, r)) return;
    // When the visitor did not consume the argument, skip it by the opcode's layout.
    if (r.pos === start) r.skipArg(op);
    if (op === OP.STOP) return;
  }
  throw new ModelFormatError(`${what}: the pickle ends without a STOP opcode (truncated file?).`);
}

class ArgReader {
  pos = 0;
  private dv: DataView;
  private dec = new TextDecoder('utf-8', { fatal: true });
  constructor(
    private bytes: Uint8Array,
    private what: string,
  ) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(n: number): void {
    if (this.pos + n > this.bytes.length) throw new ModelFormatError(`${this.what}: the pickle is truncated at byte ${this.pos}.`);
  }
  u8(): number {
    this.need(1);
    return this.bytes[this.pos++];
  }
  u16(): number {
    this.need(2);
    const v = this.dv.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(): number {
    this.need(4);
    const v = this.dv.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = Number(this.dv.getBigUint64(this.pos, true));
    this.pos += 8;
    return v;
  }
  utf8(n: number): string {
    this.need(n);
    const s = this.dec.decode(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw new ModelFormatError(`${this.what}: a GLOBAL opcode has no newline-terminated name.`);
    const s = new TextDecoder().decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
  long1(): number {
    const n = this.u8();
    this.need(n);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(this.bytes[this.pos + i]);
    if (n > 0 && this.bytes[this.pos + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
    this.pos += n;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new ModelFormatError(`${this.what}: integer ${v} is too large for a tensor size.`);
    }
    return Number(v);
  }
  skipArg(op: number): void {
    switch (op) {
      case OP.PROTO:
      case OP.BININT1:
      case OP.BINGET:
      case OP.BINPUT:
        this.u8();
        break;
      case OP.BININT2:
        this.u16();
        break;
      case OP.BININT:
      case OP.LONG_BINGET:
      case OP.LONG_BINPUT:
        this.u32();
        break;
      case OP.FRAME:
        this.u64();
        break;
      case OP.BINUNICODE:
        this.utf8(this.u32());
        break;
      case OP.SHORT_BINUNICODE:
        this.utf8(this.u8());
        break;
      case OP.LONG1:
        this.long1();
        break;
      case OP.GLOBAL:
        this.line();
        this.line();
        break;
      default:
        if (!OP_NAME.has(op))
          throw new ModelFormatError(
            `${this.what}: pickle opcode 0x${op.toString(16)} at byte ${this.pos - 1} is outside the tensor-dict subset this reader accepts.`,
          );
    }
  }
}

/**
 * Interpret data.pkl: the root must be a dict (or collections.OrderedDict) of
 * str → tensor. Returns the tensor records in file order.
 */
export function unpickleTensorDict(bytes: Uint8Array, what = 'data.pkl'): [string, TensorRec][] {
  const stack: Val[] = [];
  const memo = new Map<number, Val>();
  let result: Val | undefined;
  const fail = (why: string): never => {
    throw new ModelFormatError(`${what}: ${why}. Only a dict of plain float tensors (torch.save(state_dict)) is read; nothing in the file is executed.`);
  };
  const pop = (): Val => {
    if (stack.length === 0) fail('the pickle pops an empty stack');
    const v = stack.pop()!;
    if (v === MARK) fail('a MARK where a value was expected');
    return v;
  };
  const popMark = (): Val[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) fail('an opcode needs a MARK that is not there');
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const top = (): Val => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) fail('the pickle reads an empty stack');
    return stack[stack.length - 1];
  };
  const setItems = (d: Val, items: Val[]) => {
    if (!isObj(d, 'dict')) fail('SETITEM(S) on something that is not a dict');
    const map = (d as DictVal).map;
    for (let i = 0; i + 1 < items.length; i += 2) map.set(items[i], items[i + 1]);
  };
  const call = (fn: Val, args: Val): Val => {
    if (!isObj(fn, 'global')) return fail('REDUCE of something that is not a global');
    const g = fn as Global;
    if (!Array.isArray(args)) return fail(`${g.module}.${g.name} called without an argument tuple`);
    if (g.module === 'collections' && g.name === 'OrderedDict') {
      if (args.length !== 0) fail('collections.OrderedDict called with arguments');
      return { kind: 'dict', map: new Map() };
    }
    if (g.module === 'torch._utils' && g.name === '_rebuild_tensor_v2') {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      const [storage, offset, size, stride] = args;
      if (!isObj(storage, 'storage')) fail('_rebuild_tensor_v2 without a storage persistent id');
      const ints = (v: Val) => Array.isArray(v) && v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0);
      if (typeof offset !== 'number' || !ints(size) || !ints(stride) || (size as number[]).length !== (stride as number[]).length) {
        fail('_rebuild_tensor_v2 with a malformed offset, size or stride');
      }
      const hooks = args[5];
      if (args.length > 5 && !(isObj(hooks, 'dict') && (hooks as DictVal).map.size === 0)) fail('a tensor with backward hooks');
      if (args.length > 6 && !(isObj(args[6], 'dict') && (args[6] as DictVal).map.size === 0)) fail('a tensor with extra metadata');
      return { kind: 'tensor', storage: storage as StorageRef, offset: offset as number, size: size as number[], stride: stride as number[] };
    }
    return fail(`it calls ${g.module}.${g.name}`);
  };
  walkPickle(bytes, what, (op, r) => {
    switch (op) {
      case OP.PROTO: {
        const v = r.u8();
        if (v < 2 || v > 5) fail(`pickle protocol ${v}`);
        break;
      }
      case OP.FRAME:
        r.u64();
        break;
      case OP.MARK:
        stack.push(MARK);
        break;
      case OP.EMPTY_DICT:
        stack.push({ kind: 'dict', map: new Map() });
        break;
      case OP.EMPTY_TUPLE:
        stack.push([]);
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.BININT1:
        stack.push(r.u8());
        break;
      case OP.BININT2:
        stack.push(r.u16());
        break;
      case OP.BININT:
        stack.push(r.i32());
        break;
      case OP.LONG1:
        stack.push(r.long1());
        break;
      case OP.BINUNICODE:
        stack.push(r.utf8(r.u32()));
        break;
      case OP.SHORT_BINUNICODE:
        stack.push(r.utf8(r.u8()));
        break;
      case OP.GLOBAL: {
        const module = r.line();
        const name = r.line();
        stack.push(checkGlobal(module, name, fail));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop(),
          module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL without two strings');
        stack.push(checkGlobal(module as string, name as string, fail));
        break;
      }
      case OP.BINPUT:
        memo.set(r.u8(), top());
        break;
      case OP.LONG_BINPUT:
        memo.set(r.u32(), top());
        break;
      case OP.MEMOIZE:
        memo.set(memo.size, top());
        break;
      case OP.BINGET:
      case OP.LONG_BINGET: {
        const i = op === OP.BINGET ? r.u8() : r.u32();
        if (!memo.has(i)) fail(`BINGET of memo slot ${i}, which was never stored`);
        stack.push(memo.get(i)!);
        break;
      }
      case OP.TUPLE:
        stack.push(popMark());
        break;
      case OP.TUPLE1:
        stack.push([pop()]);
        break;
      case OP.TUPLE2: {
        const b = pop(),
          a = pop();
        stack.push([a, b]);
        break;
      }
      case OP.TUPLE3: {
        const c = pop(),
          b = pop(),
          a = pop();
        stack.push([a, b, c]);
        break;
      }
      case OP.BINPERSID: {
        // ("storage", <storage class>, key, location, numel)
        const pid = pop();
        if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage') fail('a persistent id that is not a torch storage');
        const [, cls, key, , numel] = pid as Val[];
        if (!isObj(cls, 'global') || (cls as Global).module !== 'torch' || !Object.prototype.hasOwnProperty.call(STORAGE_DTYPES, (cls as Global).name))
          fail('a storage of an unsupported class');
        if (typeof key !== 'string' || typeof numel !== 'number') fail('a malformed storage persistent id');
        stack.push({ kind: 'storage', dtype: STORAGE_DTYPES[(cls as Global).name], key: key as string, numel: numel as number });
        break;
      }
      case OP.REDUCE: {
        const args = pop(),
          fn = pop();
        stack.push(call(fn, args));
        break;
      }
      case OP.BUILD: {
        // OrderedDict state (e.g. a state_dict's _metadata): dropped, it carries no tensors.
        const state = pop();
        if (!isObj(top(), 'dict') || !(state === null || isObj(state, 'dict'))) fail('BUILD on an object other than a dict');
        break;
      }
      case OP.SETITEM: {
        const v = pop(),
          k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case OP.STOP:
        result = pop();
        break;
      default:
        fail(`opcode ${OP_NAME.get(op) ?? '0x' + op.toString(16)} at byte ${r.pos - 1}`);
    }
    return true;
  });
  if (!isObj(result!, 'dict')) fail('the root object is not a dict');
  const out: [string, TensorRec][] = [];
  for (const [k, v] of (result as DictVal).map) {
    if (typeof k !== 'string') fail('a key that is not a string');
    if (!isObj(v as Val, 'tensor')) fail(`entry '${k}' is not a tensor`);
    out.push([k as string, v as TensorRec]);
  }
  return out;
}

function checkGlobal(module: string, name: string, fail: (why: string) => never): Global {
  const ok =
    (module === 'torch._utils' && name === '_rebuild_tensor_v2') ||
    (module === 'collections' && name === 'OrderedDict') ||
    (module === 'torch' && Object.hasOwn(STORAGE_DTYPES, name));
  if (!ok) fail(`it refers to ${module}.${name}`);
  return { kind: 'global', module, name };
}

/**
 * Read a torch zip checkpoint holding a dict of float tensors (float32, or
 * float16 / bfloat16 converted to float32). Strided views are gathered into
 * contiguous row-major data.
 */
export function readTorchZip(bytes: Uint8Array, what = 'pytorch_adapter.bin'): Map<string, TorchTensor> {
  // A plain view: Node's Buffer.slice() does not copy, and decoding relies on slice() copying.
  bytes = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries = readStoredZip(bytes, what);
  const pkl = entries.find((x) => x.name.endsWith('/data.pkl') && x.name.split('/').length === 2);
  if (!pkl) throw new ModelFormatError(`${what} has no <archive>/data.pkl entry: it is a zip but not a torch checkpoint.`);
  const root = pkl.name.slice(0, -'data.pkl'.length);
  const byName = new Map(entries.map((x) => [x.name, x]));
  const entryBytes = (x: ZipEntry) => bytes.subarray(x.dataOffset, x.dataOffset + x.size);
  const bo = byName.get(`${root}byteorder`);
  const order = bo ? new TextDecoder().decode(entryBytes(bo)).trim() : 'little';
  if (order !== 'little' && order !== 'big') throw new ModelFormatError(`${what}: byteorder is '${order}', expected little or big.`);
  const pklBytes = entryBytes(pkl);
  if (crc32(pklBytes) !== pkl.crc) throw new ModelFormatError(`${what}: data.pkl fails its CRC check (corrupt file).`);
  const recs = unpickleTensorDict(pklBytes, `${what}/data.pkl`);
  const storages = new Map<string, Float32Array>();
  const out = new Map<string, TorchTensor>();
  let elements = 0;
  for (const [key, t] of recs) {
    let data = storages.get(t.storage.key);
    if (!data) {
      const entry = byName.get(`${root}data/${t.storage.key}`);
      if (!entry) throw new ModelFormatError(`${what}: tensor ${key} names storage ${t.storage.key}, but ${root}data/${t.storage.key} is missing.`);
      let raw = entryBytes(entry);
      if (crc32(raw) !== entry.crc) throw new ModelFormatError(`${what}: storage ${t.storage.key} fails its CRC check (corrupt file).`);
      const width = t.storage.dtype === 'F32' ? 4 : 2;
      if (raw.length !== t.storage.numel * width) {
        throw new ModelFormatError(`${what}: storage ${t.storage.key} has ${raw.length} bytes, expected ${t.storage.numel} × ${width}.`);
      }
      if (order === 'big') {
        raw = raw.slice();
        for (let i = 0; i < raw.length; i += width) raw.subarray(i, i + width).reverse();
      }
      data = decodeTensorData(raw, t.storage.dtype);
      storages.set(t.storage.key, data);
    }
    const numel = t.size.reduce((a, b) => a * b, 1);
    // Bounded by the file's real size before allocating: a view (stride 0, overlapping strides) can describe 2^30
    // elements in a 700-byte file. Every element of a saved adapter has at least 2 bytes in the file, so all
    // tensors together never hold more elements than the file has bytes (the output is at most 4x the input).
    elements += numel;
    if (!Number.isSafeInteger(elements) || elements > bytes.length) {
      throw new ModelFormatError(
        `${what}: tensor ${key} [${t.size.join(', ')}] (stride [${t.stride.join(', ')}]) describes ${numel} values, more than the ${bytes.length}-byte file can hold; a strided or stride-0 view this large is not an adapter. Save the adapter with contiguous tensors (e.g. PEFT's save_pretrained).`,
      );
    }
    if (numel > 0) {
      const last = t.offset + t.size.reduce((a, n, d) => a + (n - 1) * t.stride[d], 0);
      if (t.offset < 0 || last >= data.length) throw new ModelFormatError(`${what}: tensor ${key} reads past the end of storage ${t.storage.key}.`);
    }
    const values = new Float32Array(numel);
    // Gather: element (i0, i1, ...) sits at offset + Σ i_d stride_d of the storage.
    const idx = new Array<number>(t.size.length).fill(0);
    for (let n = 0; n < numel; n++) {
      let off = t.offset;
      for (let d = 0; d < idx.length; d++) off += idx[d] * t.stride[d];
      if (off >= data.length) throw new ModelFormatError(`${what}: tensor ${key} reads past the end of storage ${t.storage.key}.`);
      values[n] = data[off];
      for (let d = idx.length - 1; d >= 0; d--) {
        if (++idx[d] < t.size[d]) break;
        idx[d] = 0;
      }
    }
    out.set(key, { shape: [...t.size], data: values });
  }
  return out;
}
