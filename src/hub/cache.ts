/**
 * A byte cache for Hub files. Keys are `endpoint|repo|revision|path`
 * (see cacheKey). An entry is written data first, its meta record (size,
 * optional SHA-256) last, so an interrupted write leaves no meta and reads as
 * a miss; a read whose bytes do not match the meta is a miss and the entry is
 * deleted.
 *
 * This file is browser-safe; the Node folder cache lives in ./node.ts.
 */
import * as idb from 'idb-keyval';

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
}

/** How much a read checks: the size always, the SHA-256 too with 'sha256'. */
export type CacheVerify = 'size' | 'sha256';

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new Error('crypto.subtle is not available (a secure context is needed)');
  const digest = await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** In memory; for tests and for sessions that should not touch storage. */
export class MemoryCache implements FileCache {
  private entries = new Map<string, Uint8Array>();
  async get(key: string) {
    return this.entries.get(key);
  }
  async put(key: string, bytes: Uint8Array) {
    this.entries.set(key, bytes.slice());
  }
  async has(key: string) {
    return this.entries.has(key);
  }
  async delete(key: string) {
    this.entries.delete(key);
  }
  async list() {
    return [...this.entries.keys()];
  }
  async clear() {
    this.entries.clear();
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
}

const DATA = 'data:';
const META = 'meta:';

/**
 * IndexedDB through idb-keyval: `data:<key>` holds the bytes, `meta:<key>`
 * the CacheMeta, written after the data. IndexedDB is only opened on first use.
 */
export class IdbCache implements FileCache {
  private kv: KeyValueStore | null;
  private readonly verify: CacheVerify;

  constructor(private readonly opts: IdbCacheOptions = {}) {
    this.kv = opts.store ?? null;
    this.verify = opts.verify ?? 'size';
  }

  private store(): KeyValueStore {
    this.kv ??= idbKeyValueStore(this.opts.dbName ?? 'peft-studio', this.opts.storeName ?? 'hub-files');
    return this.kv;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const kv = this.store();
    const meta = (await kv.get(META + key)) as CacheMeta | undefined;
    if (!meta || typeof meta.size !== 'number') {
      // Data without meta is an interrupted write.
      return undefined;
    }
    const data = await kv.get(DATA + key);
    const bytes = data instanceof Uint8Array ? data : data instanceof ArrayBuffer ? new Uint8Array(data) : undefined;
    if (!bytes || bytes.byteLength !== meta.size || (this.verify === 'sha256' && meta.sha256 && (await sha256Hex(bytes)) !== meta.sha256)) {
      await this.delete(key);
      return undefined;
    }
    return bytes;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const kv = this.store();
    await kv.del(META + key);
    // Structured clone copies a view's whole buffer: store exactly the bytes.
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
    await kv.set(DATA + key, own);
    const meta: CacheMeta = { key, size: bytes.byteLength, storedAt: Date.now() };
    if (this.verify === 'sha256') meta.sha256 = await sha256Hex(bytes);
    await kv.set(META + key, meta);
  }

  async has(key: string): Promise<boolean> {
    const meta = (await this.store().get(META + key)) as CacheMeta | undefined;
    return !!meta && typeof meta.size === 'number';
  }

  async delete(key: string): Promise<void> {
    const kv = this.store();
    await kv.del(META + key);
    await kv.del(DATA + key);
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
