/**
 * A byte cache for Hub files. Keys are `endpoint|repo|revision|path`
 * (see cacheKey). An entry is written data first, its meta record (size,
 * optional SHA-256) last, so an interrupted write leaves no meta and reads as
 * a miss; a read whose bytes do not match the meta is a miss and the entry is
 * deleted.
 *
 * Large files never need to be in memory whole: a CacheWriter appends a
 * download as it arrives and keeps a partial record (bytes written, the
 * server's ETag and size), so a download cut off by a crash, a closed tab or
 * a lost connection resumes from there in a later process; getRange reads
 * part of a complete entry.
 *
 * This file is browser-safe; the Node folder cache lives in ./node.ts.
 */
import * as idb from 'idb-keyval';
import { concat } from './source';

export interface FileCache {
  /** The cached bytes, or undefined on a miss (including a damaged entry). */
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, bytes: Uint8Array): Promise<void>;
  delete(key: string): Promise<void>;
  /** Whether a complete entry exists, without reading it (HubSource.has uses it). */
  has?(key: string): Promise<boolean>;
  /** Keys of the complete entries. */
  list?(): Promise<string[]>;
  /** Where an entry lives, in words a person can act on (the file to delete), for errors about its content. */
  location?(key: string): string;
  clear(): Promise<void>;
  /**
   * Bytes [start, end) of a complete entry (fewer past its end) and its size,
   * reading only what the range needs; undefined on a miss (a damaged entry is
   * deleted).
   */
  getRange?(key: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number } | undefined>;
  /**
   * A writer for a download of `key` that picks up the partial record an
   * interrupted one left, or undefined when the entry cannot be written now
   * (another process is writing it).
   */
  writer?(key: string): Promise<CacheWriter | undefined>;
}

/**
 * A download on its way into the cache. The caller resumes at `written` when
 * the server still has the same file (its ETag: If-Range), else begins at 0;
 * then appends every byte in order and commits, or closes (keeping the
 * partial record for a later resume), or discards.
 */
export interface CacheWriter {
  /** Bytes of an earlier, interrupted download of this entry that are kept (0: none). */
  readonly written: number;
  /** The ETag and the size the server announced for those bytes. */
  readonly etag: string | null;
  readonly size: number;
  /** Bytes [start, end) of what is written (end <= written). */
  read(start: number, end: number): Promise<Uint8Array>;
  /** Starts at `offset` (0, or `written`: resume) a download of `size` bytes whose ETag is `etag`; records the partial entry. */
  begin(offset: number, etag: string | null, size: number): Promise<void>;
  append(bytes: Uint8Array): Promise<void>;
  /** All `size` bytes are written: the entry becomes complete (meta last). */
  commit(): Promise<void>;
  /** Interrupted: keep what was written and the partial record, for a later resume. */
  close(): Promise<void>;
  /** Forget the partial download. */
  discard(): Promise<void>;
}

/** '|' separates the parts, so '%' and '|' inside a part are escaped: revision 'a|b' and path 'b|c' can never meet. */
const escapePart = (s: string): string => s.replace(/%/g, '%25').replace(/\|/g, '%7C');

export function cacheKey(endpoint: string, repo: string, revision: string, path: string): string {
  return [endpoint, repo, revision, path].map(escapePart).join('|');
}

/** What is stored next to the data of every entry. */
export interface CacheMeta {
  key: string;
  size: number;
  /** Hex SHA-256 of the bytes, when the cache verifies hashes. */
  sha256?: string;
  storedAt: number;
  /** IdbCache: the entry is stored in chunks of this many bytes (the last one shorter); absent in entries stored whole. */
  chunkSize?: number;
  /** IdbCache with verify 'sha256': the hex SHA-256 of each chunk, so a range read checks only the chunks it reads. */
  chunkSha256?: string[];
}

/** How much a read checks: the size always, the SHA-256 too with 'sha256'. */
export type CacheVerify = 'size' | 'sha256';

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new Error('crypto.subtle is not available (a secure context is needed)');
  const digest = await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** [start, end) clamped to a file of `size` bytes. */
export function clampRange(start: number, end: number, size: number): [number, number] {
  const s = Math.min(Math.max(0, start), size);
  return [s, Math.min(Math.max(s, end), size)];
}

/** In memory; for tests and for sessions that should not touch storage. */
export class MemoryCache implements FileCache {
  private entries = new Map<string, Uint8Array>();
  private partials = new Map<string, { etag: string | null; size: number; bytes: Uint8Array }>();
  async get(key: string) {
    return this.entries.get(key);
  }
  async put(key: string, bytes: Uint8Array) {
    this.entries.set(key, bytes.slice());
  }
  async has(key: string) {
    return this.entries.has(key);
  }
  async getRange(key: string, start: number, end: number) {
    const b = this.entries.get(key);
    if (!b) return undefined;
    const [s, e] = clampRange(start, end, b.byteLength);
    return { bytes: b.slice(s, e), size: b.byteLength };
  }
  async writer(key: string): Promise<CacheWriter> {
    const partials = this.partials;
    const entries = this.entries;
    const old = partials.get(key);
    let rec = old ?? { etag: null, size: 0, bytes: new Uint8Array(0) };
    let chunks: Uint8Array[] = [];
    let pos = 0;
    // The partial record holds what was written when the writer closed.
    const flat = () => concat(chunks, pos);
    return {
      written: old?.bytes.byteLength ?? 0,
      etag: old?.etag ?? null,
      size: old?.size ?? 0,
      read: async (start, end) => rec.bytes.slice(start, end),
      async begin(offset, etag, size) {
        entries.delete(key);
        chunks = offset > 0 ? [rec.bytes.subarray(0, offset)] : [];
        pos = offset;
        rec = { etag, size, bytes: rec.bytes.subarray(0, offset) };
        partials.set(key, rec);
      },
      async append(bytes) {
        chunks.push(bytes.slice());
        pos += bytes.byteLength;
      },
      async commit() {
        if (pos !== rec.size) throw new Error(`wrote ${pos} of ${rec.size} bytes`);
        entries.set(key, flat());
        partials.delete(key);
      },
      async close() {
        partials.set(key, { ...rec, bytes: flat() });
      },
      async discard() {
        partials.delete(key);
      },
    };
  }
  async delete(key: string) {
    this.entries.delete(key);
    this.partials.delete(key);
  }
  async list() {
    return [...this.entries.keys()];
  }
  async clear() {
    this.entries.clear();
    this.partials.clear();
  }
}

/** The part of idb-keyval IdbCache uses; injectable so tests can run without IndexedDB. */
export interface KeyValueStore {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown): Promise<void>;
  del(key: string): Promise<void>;
  keys(): Promise<string[]>;
  clear(): Promise<void>;
}

export function idbKeyValueStore(dbName: string, storeName: string): KeyValueStore {
  const store = idb.createStore(dbName, storeName);
  return {
    get: (k) => idb.get(k, store),
    set: (k, v) => idb.set(k, v, store),
    del: (k) => idb.del(k, store),
    keys: async () => (await idb.keys(store)).map(String),
    clear: () => idb.clear(store),
  };
}

export interface IdbCacheOptions {
  dbName?: string;
  storeName?: string;
  verify?: CacheVerify;
  /** Replaces IndexedDB (tests). */
  store?: KeyValueStore;
  /** Bytes per stored chunk (default 16 MiB, IDB_CHUNK_SIZE): the most one IndexedDB value holds, written or read. */
  chunkSize?: number;
}

export const IDB_CHUNK_SIZE = 16 << 20;

const DATA = 'data:';
const META = 'meta:';
const PART = 'part:';
const CHUNK = 'chunk:';

/** Chunk i of an entry: `chunk:<key>|<i>` (the last '|' ends the key, whatever the key holds). */
const chunkKey = (key: string, i: number) => `${CHUNK}${key}|${i}`;

/** The entry key and chunk index of a chunk's store key, or null for other records. */
function parseChunkKey(k: string): { key: string; index: number } | null {
  if (!k.startsWith(CHUNK)) return null;
  const bar = k.lastIndexOf('|');
  const index = Number(k.slice(bar + 1));
  return bar > CHUNK.length - 1 && /^\d+$/.test(k.slice(bar + 1)) ? { key: k.slice(CHUNK.length, bar), index } : null;
}

/** The record of a download in progress: what chunks 0 .. ceil(written / chunkSize) - 1 hold. */
interface PartRecord {
  key: string;
  etag: string | null;
  size: number;
  chunkSize: number;
  written: number;
  /** With verify 'sha256': the hashes of the full chunks written so far. */
  chunkSha256?: string[];
}

const asBytes = (v: unknown): Uint8Array | undefined => (v instanceof Uint8Array ? v : v instanceof ArrayBuffer ? new Uint8Array(v) : undefined);

/**
 * IndexedDB through idb-keyval. An entry is `chunk:<key>|<i>` values of
 * `chunkSize` bytes (the last shorter) and `meta:<key>`, the CacheMeta with
 * the chunk size, written after the chunks; a download in progress keeps
 * `part:<key>` (bytes written, ETag, size), updated after each chunk, so a
 * reload resumes it. A range read fetches only the chunks it overlaps. An
 * entry stored whole by an older version (`data:<key>`, meta without a chunk
 * size) is still read, and rewritten as chunks on its first range read.
 * IndexedDB is only opened on first use.
 */
export class IdbCache implements FileCache {
  private kv: KeyValueStore | null;
  readonly verify: CacheVerify;
  readonly chunkSize: number;

  constructor(private readonly opts: IdbCacheOptions = {}) {
    this.kv = opts.store ?? null;
    this.verify = opts.verify ?? 'size';
    this.chunkSize = opts.chunkSize ?? IDB_CHUNK_SIZE;
    if (!Number.isSafeInteger(this.chunkSize) || this.chunkSize < 1)
      throw new Error(`IdbCache chunkSize must be a positive whole number of bytes, not ${opts.chunkSize}`);
  }

  /** @internal the store (IdbWriter uses it). */
  store(): KeyValueStore {
    this.kv ??= idbKeyValueStore(this.opts.dbName ?? 'peft-studio', this.opts.storeName ?? 'hub-files');
    return this.kv;
  }

  private async meta(key: string): Promise<CacheMeta | undefined> {
    const meta = (await this.store().get(META + key)) as CacheMeta | undefined;
    if (!meta || typeof meta.size !== 'number') return undefined; // data without meta is an interrupted write
    if (meta.chunkSize !== undefined && !(Number.isSafeInteger(meta.chunkSize) && meta.chunkSize > 0)) return undefined;
    return meta;
  }

  /** Chunk i of a complete chunked entry, checked (its length; its SHA-256 with verify 'sha256'), or undefined when damaged. */
  private async chunk(key: string, meta: CacheMeta, i: number): Promise<Uint8Array | undefined> {
    const cs = meta.chunkSize!;
    const v = asBytes(await this.store().get(chunkKey(key, i)));
    if (!v || v.byteLength !== Math.min(cs, meta.size - i * cs)) return undefined;
    const want = meta.chunkSha256?.[i];
    if (this.verify === 'sha256' && want && (await sha256Hex(v)) !== want) return undefined;
    return v;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const meta = await this.meta(key);
    if (!meta) return undefined;
    if (meta.chunkSize === undefined) return this.getWhole(key, meta);
    const out = new Uint8Array(meta.size);
    for (let i = 0; i * meta.chunkSize < meta.size; i++) {
      const c = await this.chunk(key, meta, i);
      if (!c) {
        await this.delete(key);
        return undefined;
      }
      out.set(c, i * meta.chunkSize);
    }
    return out;
  }

  /** An entry stored whole (`data:<key>`, before chunks). */
  private async getWhole(key: string, meta: CacheMeta): Promise<Uint8Array | undefined> {
    const bytes = asBytes(await this.store().get(DATA + key));
    if (!bytes || bytes.byteLength !== meta.size || (this.verify === 'sha256' && meta.sha256 && (await sha256Hex(bytes)) !== meta.sha256)) {
      await this.delete(key);
      return undefined;
    }
    return bytes;
  }

  async getRange(key: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number } | undefined> {
    let meta = await this.meta(key);
    if (meta && meta.chunkSize === undefined) {
      // Stored whole: read once more whole and store as chunks, so that every later range read is bounded.
      const whole = await this.getWhole(key, meta);
      if (!whole) return undefined;
      await this.put(key, whole);
      meta = await this.meta(key);
    }
    if (!meta) return undefined;
    const cs = meta.chunkSize!;
    const [s, e] = clampRange(start, end, meta.size);
    const out = new Uint8Array(e - s);
    for (let i = Math.floor(s / cs); i * cs < e; i++) {
      const c = await this.chunk(key, meta, i);
      if (!c) {
        await this.delete(key);
        return undefined;
      }
      const from = Math.max(s, i * cs);
      const to = Math.min(e, (i + 1) * cs);
      out.set(c.subarray(from - i * cs, to - i * cs), from - s);
    }
    return { bytes: out, size: meta.size };
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const w = await this.writer(key);
    await w.begin(0, null, bytes.byteLength);
    for (let at = 0; at < bytes.byteLength; at += this.chunkSize) await w.append(bytes.subarray(at, at + this.chunkSize));
    await w.commit();
  }

  async writer(key: string): Promise<CacheWriter> {
    const kv = this.store();
    const part = (await kv.get(PART + key)) as PartRecord | undefined;
    let ok =
      !!part &&
      part.key === key &&
      Number.isSafeInteger(part.chunkSize) &&
      part.chunkSize > 0 &&
      Number.isSafeInteger(part.written) &&
      part.written >= 0 &&
      Number.isSafeInteger(part.size) &&
      part.written <= part.size;
    // The last chunk of the partial may be short (a writer that closed mid-chunk): it must hold exactly that many bytes.
    const tail = ok && part!.written % part!.chunkSize ? asBytes(await kv.get(chunkKey(key, Math.floor(part!.written / part!.chunkSize)))) : undefined;
    if (ok && part!.written % part!.chunkSize && tail?.byteLength !== part!.written % part!.chunkSize) ok = false;
    return new IdbWriter(this, key, ok ? part! : null, tail);
  }

  async has(key: string): Promise<boolean> {
    return !!(await this.meta(key));
  }

  async delete(key: string): Promise<void> {
    const kv = this.store();
    await kv.del(META + key);
    await kv.del(DATA + key);
    await kv.del(PART + key);
    await this.deleteChunks(key, 0);
  }

  /** @internal Deletes the chunks of `key` from index `from` on (every one the store holds, strays of interrupted writes too). */
  async deleteChunks(key: string, from: number): Promise<void> {
    const kv = this.store();
    for (const k of await kv.keys()) {
      const c = parseChunkKey(k);
      if (c && c.key === key && c.index >= from) await kv.del(k);
    }
  }

  async list(): Promise<string[]> {
    return (await this.store().keys()).filter((k) => k.startsWith(META)).map((k) => k.slice(META.length));
  }

  location(key: string): string {
    return `the browser's model cache entry ${key} (IndexedDB ${this.opts.dbName ?? 'peft-studio'}/${this.opts.storeName ?? 'hub-files'}; clear it from the studio's storage panel)`;
  }

  async clear(): Promise<void> {
    await this.store().clear();
  }
}

/** A download into IdbCache: a chunk is stored as it fills, then the partial record says so. */
class IdbWriter implements CacheWriter {
  readonly written: number;
  readonly etag: string | null;
  readonly size: number;
  private rec: PartRecord | null = null;
  private buf: Uint8Array | null = null;
  private fill = 0;
  private pos = 0;

  constructor(
    private readonly cache: IdbCache,
    private readonly key: string,
    private readonly part: PartRecord | null,
    /** The partial's short last chunk, if it has one. */
    private readonly tail: Uint8Array | undefined,
  ) {
    this.written = part?.written ?? 0;
    this.etag = part?.etag ?? null;
    this.size = part?.size ?? 0;
  }

  async read(start: number, end: number): Promise<Uint8Array> {
    const cs = this.part!.chunkSize;
    const [s, e] = clampRange(start, end, this.written);
    const out = new Uint8Array(e - s);
    for (let i = Math.floor(s / cs); i * cs < e; i++) {
      const c = asBytes(await this.cache.store().get(chunkKey(this.key, i)));
      const want = Math.min(cs, this.written - i * cs);
      if (!c || c.byteLength < want) throw new Error(`the partial download's chunk ${i} is missing or short`);
      const from = Math.max(s, i * cs);
      const to = Math.min(e, (i + 1) * cs);
      out.set(c.subarray(from - i * cs, to - i * cs), from - s);
    }
    return out;
  }

  async begin(offset: number, etag: string | null, size: number): Promise<void> {
    if (offset !== 0 && offset !== this.written) throw new Error(`a download resumes at 0 or at ${this.written}, not ${offset}`);
    const kv = this.cache.store();
    // An older complete entry of this key is being replaced: it stops being one first.
    await kv.del(META + this.key);
    const resume = offset > 0 && !!this.part;
    const chunkSize = resume ? this.part!.chunkSize : this.cache.chunkSize;
    if (!resume && this.written > 0) await this.cache.deleteChunks(this.key, 0);
    this.buf = new Uint8Array(chunkSize);
    this.fill = resume ? offset % chunkSize : 0;
    if (this.fill) this.buf.set(this.tail!.subarray(0, this.fill));
    this.pos = offset;
    this.rec = { key: this.key, etag, size, chunkSize, written: offset };
    if (this.cache.verify === 'sha256') this.rec.chunkSha256 = resume ? (this.part!.chunkSha256 ?? []).slice(0, Math.floor(offset / chunkSize)) : [];
    await kv.set(PART + this.key, this.rec);
  }

  async append(bytes: Uint8Array): Promise<void> {
    const rec = this.rec!;
    let at = 0;
    while (at < bytes.byteLength) {
      const n = Math.min(bytes.byteLength - at, rec.chunkSize - this.fill);
      this.buf!.set(bytes.subarray(at, at + n), this.fill);
      this.fill += n;
      this.pos += n;
      at += n;
      if (this.fill === rec.chunkSize) {
        await this.storeChunk();
        // The chunk is stored: the partial record may say so (a crash after this resumes past it).
        this.buf = new Uint8Array(rec.chunkSize);
        this.fill = 0;
        rec.written = this.pos;
        await this.cache.store().set(PART + this.key, rec);
      }
    }
  }

  /** Stores the buffer as the chunk that holds `pos - 1`: whole when full (handed over, no copy), else exactly its bytes. */
  private async storeChunk(): Promise<void> {
    const rec = this.rec!;
    const index = Math.floor((this.pos - 1) / rec.chunkSize);
    const value = this.fill === rec.chunkSize ? this.buf! : this.buf!.slice(0, this.fill);
    if (rec.chunkSha256 && this.fill === rec.chunkSize) rec.chunkSha256[index] = await sha256Hex(value);
    await this.cache.store().set(chunkKey(this.key, index), value);
    return;
  }

  async commit(): Promise<void> {
    const rec = this.rec!;
    if (this.pos !== rec.size) throw new Error(`the download of ${this.key} wrote ${this.pos} of ${rec.size} bytes`);
    const kv = this.cache.store();
    const count = Math.ceil(rec.size / rec.chunkSize);
    if (this.fill) {
      const last = this.buf!.slice(0, this.fill);
      if (rec.chunkSha256) rec.chunkSha256[count - 1] = await sha256Hex(last);
      await kv.set(chunkKey(this.key, count - 1), last);
    }
    const meta: CacheMeta = { key: this.key, size: rec.size, storedAt: Date.now(), chunkSize: rec.chunkSize };
    if (rec.chunkSha256) meta.chunkSha256 = rec.chunkSha256;
    await kv.set(META + this.key, meta);
    await kv.del(PART + this.key);
    await kv.del(DATA + this.key);
    await this.cache.deleteChunks(this.key, count);
    this.buf = null;
  }

  async close(): Promise<void> {
    const rec = this.rec;
    if (!rec) return;
    if (this.fill) {
      await this.storeChunk();
      rec.written = this.pos;
      await this.cache.store().set(PART + this.key, rec);
    }
    this.buf = null;
  }

  async discard(): Promise<void> {
    const kv = this.cache.store();
    await kv.del(PART + this.key);
    await this.cache.deleteChunks(this.key, 0);
    this.buf = null;
  }
}
