/**
 * The Node host's file sources: a folder cache for Hub downloads, local model
 * folders, and sourceFor() for the CLI's --model argument. Only Node entry
 * points import this file; the browser bundle never sees node:fs.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { constants as fsConstants, readFileSync, statSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import { homedir } from 'node:os';
import * as path from 'node:path';
import { ConfigError, HubError } from '../errors';
import { clampRange, type CacheMeta, type CacheVerify, type CacheWriter, type FileCache } from './cache';
import { DEFAULT_ENDPOINT, DEFAULT_STALL_TIMEOUT_MS, HubSource, normalizeEndpoint, tokenRefusal, type RepoKind } from './hub-source';
import { fileTooLarge, validateFilePath, validateRepoId, type FileSource, type GetOptions, type ProgressCallback } from './source';

const CHUNK = 16 << 20;

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

/**
 * Reads a whole file into one Uint8Array (fs.readFile stops at 2 GiB),
 * reporting progress every 16 MiB.
 */
export async function readFileBytes(file: string, name = file, onProgress?: ProgressCallback): Promise<Uint8Array> {
  const fh = await fs.open(file, fsConstants.O_RDONLY);
  try {
    const { size } = await fh.stat();
    const out = new Uint8Array(size);
    let loaded = 0;
    while (loaded < size) {
      const { bytesRead } = await fh.read(out, loaded, Math.min(CHUNK, size - loaded), loaded);
      if (bytesRead === 0) break; // shrank while reading
      loaded += bytesRead;
      onProgress?.({ file: name, loaded, total: size });
    }
    if (size === 0) onProgress?.({ file: name, loaded: 0, total: 0 });
    return loaded === size ? out : out.subarray(0, loaded);
  } finally {
    await fh.close();
  }
}

/** Bytes [start, end) of an open file, fewer where it ends first (a positioned read: nothing else is read). */
async function readAt(fh: fs.FileHandle, start: number, end: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(Math.max(0, end - start));
  let at = 0;
  while (at < bytes.length) {
    const { bytesRead } = await fh.read(bytes, at, bytes.length - at, start + at);
    if (bytesRead === 0) break;
    at += bytesRead;
  }
  return bytes.subarray(0, at);
}

/** Writes through a temporary file and a rename, so readers never see half a file. */
async function writeAtomic(file: string, bytes: Uint8Array | string): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await fs.writeFile(tmp, bytes);
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
}

export interface NodeFolderCacheOptions {
  /**
   * 'sha256' (default): a file is hashed (streaming, 16 MiB at a time) the
   * first time this process reads it, whole or a range, and is a miss when
   * the hash is not its meta's; 'size' only compares sizes.
   */
  verify?: CacheVerify;
}

/** The partial record of a download in progress (`<h>.part.json`); the bytes written are `<h>.part` itself. */
interface PartMeta {
  key: string;
  etag: string | null;
  size: number;
}

/** Appends are gathered into writes of this many bytes. */
const WRITE_BATCH = 1 << 20;

/**
 * A folder of `<sha256(key)>.bin` + `<sha256(key)>.json` (the CacheMeta,
 * written last). An entry whose data does not match its meta is deleted and
 * read as a miss. A download in progress is `<h>.part` (the bytes so far)
 * and `<h>.part.json` (its ETag and size), renamed into place at commit; a
 * later process resumes it. `<h>.lock` (the writer's pid) keeps two
 * processes from appending to the same `.part`; a lock whose process is gone
 * is taken over.
 */
export class NodeFolderCache implements FileCache {
  readonly dir: string;
  private readonly verify: CacheVerify;
  /** Entries hashed by this process ("key size mtime"), so a range read does not hash the file again. */
  private readonly verified = new Set<string>();

  constructor(dir: string, opts: NodeFolderCacheOptions = {}) {
    this.dir = path.resolve(dir);
    this.verify = opts.verify ?? 'sha256';
  }

  /** @internal the files of an entry */
  paths(key: string): { data: string; meta: string; part: string; partMeta: string; lock: string } {
    const h = path.join(this.dir, createHash('sha256').update(key).digest('hex'));
    return { data: `${h}.bin`, meta: `${h}.json`, part: `${h}.part`, partMeta: `${h}.part.json`, lock: `${h}.lock` };
  }

  private async readMeta(file: string, key?: string): Promise<CacheMeta | undefined> {
    let meta: CacheMeta;
    try {
      meta = JSON.parse(await fs.readFile(file, 'utf8')) as CacheMeta;
    } catch (e) {
      if (errno(e) !== 'ENOENT') await fs.rm(file, { force: true }); // damaged meta
      return undefined;
    }
    if (typeof meta?.size !== 'number' || typeof meta.key !== 'string' || (key !== undefined && meta.key !== key)) return undefined;
    return meta;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const p = this.paths(key);
    const meta = await this.readMeta(p.meta, key);
    if (!meta) return undefined;
    let bytes: Uint8Array;
    try {
      const st = await fs.stat(p.data);
      if (st.size !== meta.size) {
        await this.delete(key);
        return undefined;
      }
      bytes = await readFileBytes(p.data);
    } catch (e) {
      if (errno(e) === 'ENOENT') {
        await this.delete(key);
        return undefined;
      }
      throw e;
    }
    if (bytes.byteLength !== meta.size || (this.verify === 'sha256' && meta.sha256 && sha256(bytes) !== meta.sha256)) {
      await this.delete(key);
      return undefined;
    }
    return bytes;
  }

  async getRange(key: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number } | undefined> {
    const p = this.paths(key);
    const meta = await this.readMeta(p.meta, key);
    if (!meta) return undefined;
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(p.data, fsConstants.O_RDONLY);
    } catch (e) {
      if (errno(e) !== 'ENOENT') throw e;
      await this.delete(key);
      return undefined;
    }
    try {
      const st = await fh.stat();
      const stamp = `${key} ${st.size} ${st.mtimeMs}`;
      if (st.size !== meta.size || (this.verify === 'sha256' && meta.sha256 && !this.verified.has(stamp) && (await hashFile(fh, st.size)) !== meta.sha256)) {
        await fh.close().catch(() => {});
        await this.delete(key);
        return undefined;
      }
      this.verified.add(stamp);
      const [s, e] = clampRange(start, end, st.size);
      return { bytes: await readAt(fh, s, e), size: st.size };
    } finally {
      await fh.close().catch(() => {});
    }
  }

  async has(key: string): Promise<boolean> {
    const p = this.paths(key);
    const meta = await this.readMeta(p.meta, key);
    if (!meta) return false;
    const st = await fs.stat(p.data).catch(() => null);
    return !!st && st.size === meta.size;
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    const p = this.paths(key);
    await fs.mkdir(this.dir, { recursive: true });
    await fs.rm(p.meta, { force: true });
    await writeAtomic(p.data, bytes);
    const meta: CacheMeta = { key, size: bytes.byteLength, sha256: sha256(bytes), storedAt: Date.now() };
    await writeAtomic(p.meta, JSON.stringify(meta));
    // A partial download of the same file is of no use now (unless another process is still writing it).
    if (await takeLock(p.lock)) {
      await fs.rm(p.partMeta, { force: true });
      await fs.rm(p.part, { force: true });
      await fs.rm(p.lock, { force: true });
    }
  }

  /** The writer of `key`'s download, or undefined while another live process writes it. */
  async writer(key: string): Promise<CacheWriter | undefined> {
    const p = this.paths(key);
    await fs.mkdir(this.dir, { recursive: true });
    if (!(await takeLock(p.lock))) return undefined;
    try {
      let part: PartMeta | undefined;
      try {
        const m = JSON.parse(await fs.readFile(p.partMeta, 'utf8')) as PartMeta;
        if (m?.key === key && Number.isSafeInteger(m.size) && m.size >= 0 && (m.etag === null || typeof m.etag === 'string')) part = m;
      } catch {
        part = undefined;
      }
      const st = part ? await fs.stat(p.part).catch(() => null) : null;
      const written = st && part ? Math.min(st.size, part.size) : 0;
      return new NodeWriter(this, key, p, written > 0 ? part! : null, written);
    } catch (e) {
      await fs.rm(p.lock, { force: true });
      throw e;
    }
  }

  /** @internal A committed entry was hashed as it was written: its first read need not hash it again. */
  markVerified(key: string, size: number, mtimeMs: number): void {
    this.verified.add(`${key} ${size} ${mtimeMs}`);
  }

  location(key: string): string {
    const p = this.paths(key);
    return `${p.data} (and ${path.basename(p.meta)} beside it)`;
  }

  async delete(key: string): Promise<void> {
    const p = this.paths(key);
    await fs.rm(p.meta, { force: true });
    await fs.rm(p.data, { force: true });
  }

  async list(): Promise<string[]> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    const keys: string[] = [];
    for (const n of names.filter((n) => /^[0-9a-f]{64}\.json$/.test(n))) {
      const meta = await this.readMeta(path.join(this.dir, n));
      if (meta && (await this.has(meta.key))) keys.push(meta.key);
    }
    return keys.sort();
  }

  /** Removes this cache's files (partial downloads and stale temporaries too), nothing else in the folder. */
  async clear(): Promise<void> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    await Promise.all(
      names.filter((n) => /^[0-9a-f]{64}\.(bin|json|part|part\.json|lock)(\..*\.tmp)?$/.test(n)).map((n) => fs.rm(path.join(this.dir, n), { force: true })),
    );
  }
}

/** Creates `lock` holding this pid; false when a live process holds it (a dead one's lock is taken over). */
async function takeLock(lock: string): Promise<boolean> {
  for (let tries = 0; tries < 2; tries++) {
    try {
      await fs.writeFile(lock, String(process.pid), { flag: 'wx' });
      return true;
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
    }
    const pid = Number(await fs.readFile(lock, 'utf8').catch(() => ''));
    if (pid === process.pid) return false; // this process writes it already
    if (Number.isSafeInteger(pid) && pid > 0 && alive(pid)) return false;
    await fs.rm(lock, { force: true });
  }
  return false;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errno(e) === 'EPERM';
  }
}

/** The hex SHA-256 of an open file's first `size` bytes, read 16 MiB at a time. */
async function hashFile(fh: fs.FileHandle, size: number, hash = createHash('sha256')): Promise<string> {
  await hashInto(fh, size, hash);
  return hash.digest('hex');
}

async function hashInto(fh: fs.FileHandle, size: number, hash: Hash): Promise<void> {
  const buf = new Uint8Array(Math.min(CHUNK, Math.max(1, size)));
  for (let at = 0; at < size;) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - at), at);
    if (bytesRead === 0) throw new Error(`the file ended at ${at} of ${size} bytes`);
    hash.update(buf.subarray(0, bytesRead));
    at += bytesRead;
  }
}

/**
 * A download into NodeFolderCache: appended to `<h>.part` and hashed as it
 * goes (a resumed one hashes the kept bytes first), renamed to `<h>.bin` with
 * its meta at commit.
 */
class NodeWriter implements CacheWriter {
  readonly etag: string | null;
  readonly size: number;
  private fh: fs.FileHandle | null = null;
  private hash: Hash | null = null;
  private pos = 0;
  private total = 0;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private done = false;

  constructor(
    private readonly cache: NodeFolderCache,
    private readonly key: string,
    private readonly p: ReturnType<NodeFolderCache['paths']>,
    part: PartMeta | null,
    readonly written: number,
  ) {
    this.etag = part?.etag ?? null;
    this.size = part?.size ?? 0;
  }

  async read(start: number, end: number): Promise<Uint8Array> {
    const [s, e] = clampRange(start, end, this.written);
    const fh = this.fh ?? (await fs.open(this.p.part, fsConstants.O_RDONLY));
    try {
      const out = await readAt(fh, s, e);
      if (out.length < e - s) throw new Error(`${this.p.part} ended at ${s + out.length} of ${this.written} bytes`);
      return out;
    } finally {
      if (fh !== this.fh) await fh.close();
    }
  }

  async begin(offset: number, etag: string | null, size: number): Promise<void> {
    if (offset !== 0 && offset !== this.written) throw new Error(`a download resumes at 0 or at ${this.written}, not ${offset}`);
    // An older complete entry of this key is being replaced: it stops being one first.
    await fs.rm(this.p.meta, { force: true });
    await writeAtomic(this.p.partMeta, JSON.stringify({ key: this.key, etag, size } satisfies PartMeta));
    this.fh = await fs.open(this.p.part, offset > 0 ? 'r+' : 'w+');
    await this.fh.truncate(offset);
    this.hash = createHash('sha256');
    if (offset > 0) await hashInto(this.fh, offset, this.hash);
    this.pos = offset;
    this.total = size;
  }

  async append(bytes: Uint8Array): Promise<void> {
    this.pending.push(bytes.slice());
    this.pendingBytes += bytes.byteLength;
    if (this.pendingBytes >= WRITE_BATCH) await this.flush();
  }

  private async flush(): Promise<void> {
    if (!this.pendingBytes) return;
    const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    for (let at = 0; at < buf.byteLength;) {
      const { bytesWritten } = await this.fh!.write(buf, at, buf.byteLength - at, this.pos);
      at += bytesWritten;
      this.pos += bytesWritten;
    }
    this.hash!.update(buf);
  }

  async commit(): Promise<void> {
    await this.flush();
    if (this.pos !== this.total) throw new Error(`the download of ${this.key} wrote ${this.pos} of ${this.total} bytes`);
    await this.fh!.sync();
    await this.fh!.close();
    this.fh = null;
    await fs.rename(this.p.part, this.p.data);
    const meta: CacheMeta = { key: this.key, size: this.total, sha256: this.hash!.digest('hex'), storedAt: Date.now() };
    await writeAtomic(this.p.meta, JSON.stringify(meta));
    await fs.rm(this.p.partMeta, { force: true });
    const st = await fs.stat(this.p.data);
    this.cache.markVerified(this.key, st.size, st.mtimeMs);
    await this.release();
  }

  async close(): Promise<void> {
    try {
      if (this.fh) await this.flush();
    } finally {
      await this.fh?.close().catch(() => {});
      this.fh = null;
      await this.release();
    }
  }

  async discard(): Promise<void> {
    await this.fh?.close().catch(() => {});
    this.fh = null;
    await fs.rm(this.p.partMeta, { force: true });
    await fs.rm(this.p.part, { force: true });
    await this.release();
  }

  private async release(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await fs.rm(this.p.lock, { force: true });
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * A model or dataset folder on disk in Hub layout (config.json, *.safetensors,
 * tokenizer.json ...). Symlinks are followed (huggingface_hub snapshots are
 * symlinks into its blob store); "..", absolute paths and URLs are refused.
 */
export class LocalFolderSource implements FileSource {
  readonly id: string;
  readonly dir: string;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
    this.id = `local:${this.dir}`;
  }

  private resolve(file: string): string {
    validateFilePath(file);
    return path.join(this.dir, ...file.split('/'));
  }

  async get(file: string, onProgress?: ProgressCallback, opts: GetOptions = {}): Promise<Uint8Array> {
    const full = this.resolve(file);
    try {
      if (opts.maxBytes !== undefined) {
        const st = await fs.stat(full);
        if (st.isFile() && st.size > opts.maxBytes) throw fileTooLarge(this.id, file, st.size, opts.maxBytes);
      }
      return await readFileBytes(full, file, onProgress);
    } catch (e) {
      if (e instanceof HubError || (e as Error).name === 'FileTooLargeError') throw e;
      const code = errno(e);
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
        throw new HubError(`${file} was not found in ${this.dir} (${full}). Check the folder and the file name.`, full, 404);
      }
      throw new HubError(`Could not read ${full}: ${(e as Error).message}. Check its permissions.`, full);
    }
  }

  async has(file: string): Promise<boolean> {
    const st = await fs.stat(this.resolve(file)).catch(() => null);
    return !!st && st.isFile();
  }

  async readRange(file: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number }> {
    const full = this.resolve(file);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(full, fsConstants.O_RDONLY);
    } catch (e) {
      const code = errno(e);
      if (code === 'ENOENT' || code === 'ENOTDIR')
        throw new HubError(`${file} was not found in ${this.dir} (${full}). Check the folder and the file name.`, full, 404);
      throw new HubError(`Could not read ${full}: ${(e as Error).message}. Check its permissions.`, full);
    }
    try {
      const { size } = await fh.stat();
      return { bytes: await readAt(fh, start, Math.max(start, Math.min(end, size))), size };
    } catch (e) {
      throw new HubError(`Could not read ${full}: ${(e as Error).message}. Check that it is a file.`, full);
    } finally {
      await fh.close();
    }
  }

  async listDirs(): Promise<string[]> {
    const entries = await fs.readdir(this.dir, { withFileTypes: true }).catch(() => []);
    return entries
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
  }
}

/** Caps on local text files read whole (the README lists them): V8 strings stop near 512 MiB anyway. */
export const TEXT_FILE_LIMITS = { config: 4 << 20, datasetInfo: 32 << 20, dataset: 512 << 20 } as const;

/**
 * A local text file read whole, after checking that it is a file no larger
 * than `maxBytes`: a 3 GiB "config.yaml" or a folder given as a file is a
 * ConfigError naming `what`, not a RangeError or EISDIR trace.
 */
export function readTextFile(file: string, maxBytes: number, what: string): string {
  const st = statSync(file, { throwIfNoEntry: false });
  if (!st) throw new ConfigError(`${what}: ${file} does not exist.`);
  if (!st.isFile()) throw new ConfigError(`${what}: ${file} is ${st.isDirectory() ? 'a folder' : 'not a regular file'}; give a file.`);
  if (st.size > maxBytes) {
    throw new ConfigError(
      `${what}: ${file} is ${st.size} bytes, above the ${maxBytes} bytes PEFT Studio reads for it; it is not a ${what} file (or split it).`,
    );
  }
  return readFileSync(file, 'utf8');
}

/** Endpoints the user named on the command line (--endpoint); HF_ENDPOINT and the default Hub are trusted too. */
const trustedEndpoints = new Set<string>();

/** The CLI calls this for --endpoint: HF_TOKEN may go there (if https, or http to loopback). */
export function trustEndpoint(endpoint: string): void {
  trustedEndpoints.add(normalizeEndpoint(endpoint));
}

const warnedEndpoints = new Set<string>();

/**
 * HF_TOKEN for a request to `endpoint` (default HF_ENDPOINT, else the Hub), or
 * undefined when it must not go there: an endpoint that only a config file
 * named, or plain http to another machine. A withheld token is said once per
 * endpoint on stderr.
 */
export function hubToken(endpoint: string | null | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const token = env.HF_TOKEN || undefined;
  if (!token) return undefined;
  const target = endpoint || env.HF_ENDPOINT || DEFAULT_ENDPOINT;
  let refusal: string | null;
  try {
    refusal = tokenRefusal(target, [...trustedEndpoints, ...(env.HF_ENDPOINT ? [env.HF_ENDPOINT] : [])]);
  } catch {
    return undefined; // not a valid endpoint: HubSource names the problem
  }
  if (refusal) {
    if (!warnedEndpoints.has(target)) process.stderr.write(`peft-studio: HF_TOKEN: ${refusal}.\n`);
    warnedEndpoints.add(target);
    return undefined;
  }
  return token;
}

/**
 * The stall timeout of Hub downloads: HF_HUB_DOWNLOAD_TIMEOUT seconds (huggingface_hub's
 * variable) when set, else 30 s. A value that is not a positive number is a ConfigError.
 */
export function hubStallTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.HF_HUB_DOWNLOAD_TIMEOUT;
  if (v === undefined || v === '') return DEFAULT_STALL_TIMEOUT_MS;
  const s = Number(v);
  if (!(s > 0) || !Number.isFinite(s))
    throw new ConfigError(`HF_HUB_DOWNLOAD_TIMEOUT=${JSON.stringify(v)} is not a positive number of seconds (the stall timeout of Hub downloads; default 30).`);
  return s * 1000;
}

/** PEFT_STUDIO_CACHE, or ~/.cache/peft-studio. */
export function defaultCacheDir(): string {
  return process.env.PEFT_STUDIO_CACHE || path.join(homedir(), '.cache', 'peft-studio');
}

export interface SourceForOptions {
  kind?: RepoKind;
  /** Default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  revision?: string;
  /** Cache root; Hub files go to <cacheDir>/hub. Default defaultCacheDir(). */
  cacheDir?: string;
  /** Replaces the folder cache; null turns caching off. */
  cache?: FileCache | null;
  fetch?: typeof fetch;
  /** Default hubToken(endpoint): HF_TOKEN where it may go. */
  token?: string;
}

function looksLikePath(arg: string): boolean {
  return /^(\.{1,2}([/\\]|$)|[/\\~]|[A-Za-z]:[/\\])/.test(arg) || arg.includes('\\');
}

/**
 * The CLI's model (or dataset) argument: a folder that exists on disk is read
 * from disk; anything else must be a Hub repo id, fetched through the cache.
 */
export function sourceFor(arg: string, opts: SourceForOptions = {}): FileSource {
  if (typeof arg !== 'string' || arg.trim() === '') {
    throw new ConfigError('No model given. Pass a Hub repo id (e.g. "HuggingFaceTB/SmolLM2-135M") or a local folder.');
  }
  const expanded = arg === '~' || arg.startsWith('~/') ? path.join(homedir(), arg.slice(1)) : arg;
  const st = statSync(expanded, { throwIfNoEntry: false });
  if (st?.isDirectory()) return new LocalFolderSource(expanded);
  if (st) {
    throw new ConfigError(`"${arg}" is a file, not a folder. Pass the folder that holds config.json (or a Hub repo id).`);
  }
  if (looksLikePath(arg)) {
    throw new ConfigError(`The folder "${arg}" does not exist (${path.resolve(expanded)}). Check the path, or pass a Hub repo id.`);
  }
  try {
    validateRepoId(arg);
  } catch (e) {
    throw new ConfigError(`"${arg}" is neither a folder on disk nor a Hub repo id. ${(e as Error).message}`);
  }
  const cache = opts.cache === null ? undefined : (opts.cache ?? new NodeFolderCache(path.join(opts.cacheDir ?? defaultCacheDir(), 'hub')));
  const endpoint = opts.endpoint ?? (process.env.HF_ENDPOINT || DEFAULT_ENDPOINT);
  return new HubSource({
    endpoint,
    repo: arg,
    revision: opts.revision,
    kind: opts.kind ?? 'model',
    cache,
    fetch: opts.fetch,
    token: opts.token ?? hubToken(endpoint),
    stallTimeoutMs: hubStallTimeoutMs(),
  });
}
