/**
 * Files of a Hugging Face Hub repo, fetched the way huggingface_hub and
 * transformers.js do:
 *
 *   {endpoint}/{repo}/resolve/{revision}/{path}            (models)
 *   {endpoint}/datasets/{repo}/resolve/{revision}/{path}   (datasets)
 *
 * The revision is one URL segment, percent-encoded ("refs/convert/parquet" ->
 * "refs%2Fconvert%2Fparquet"); each path segment is percent-encoded on its own.
 * Bodies are streamed for progress and checked against Content-Length.
 *
 * A download is kept (returned and cached) only when it is whole: its size
 * matches the server's (Content-Length, Content-Range's total, X-Linked-Size)
 * and it is not an HTML page standing in for another file (a proxy's login or
 * error page). A connection that sends no bytes for `stallTimeoutMs` (30 s by
 * default) is dropped; network errors, HTTP 5xx / 429, stalls and cut-off
 * bodies are retried a few times with exponential backoff, and where the
 * server honours Range the retry asks only for the missing bytes (If-Range
 * with the ETag, so a file that changed meanwhile is fetched whole again).
 * See ./transfer.ts.
 *
 * Weights never need to be in memory whole: readRange reads part of a file
 * (from the cache when it holds the file, else with an HTTP Range request),
 * and readRanges streams the parts of a file a loader wants in one pass,
 * writing the whole file into the cache on the way and resuming a download
 * an earlier process left half done (the cache's partial record).
 */
import { ConfigError, HubError } from '../errors';
import { cacheKey, type CacheWriter, type FileCache } from './cache';
import { concat, fileTooLarge, validateFilePath, validateRepoId, type FileSource, type GetOptions, type ProgressCallback } from './source';
import { HttpBody, type TransferHost } from './transfer';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

export type RepoKind = 'model' | 'dataset';

export interface HubSourceOptions {
  /** Default https://huggingface.co; a mirror or a local test server works the same. */
  endpoint?: string;
  repo: string;
  /** Branch, tag or commit; default "main". */
  revision?: string;
  kind: RepoKind;
  cache?: FileCache;
  fetch?: typeof fetch;
  /** A Hub access token for private or gated repos (sent as a Bearer token). */
  token?: string;
  /** Drop a connection that sends no bytes for this long (ms); default 30 000 (DEFAULT_STALL_TIMEOUT_MS). */
  stallTimeoutMs?: number;
  /** Retries of a transient failure (network error, HTTP 5xx or 429, a stall, a cut-off body); default 3. */
  retries?: number;
  /** The first retry's delay (ms), doubled for each next one; default 500. */
  retryDelayMs?: number;
}

export const DEFAULT_STALL_TIMEOUT_MS = 30_000;

/** Hosts whose traffic never leaves the machine: plain http to them cannot leak a token. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Why a Hub token must not go to this endpoint, or null when it may: the
 * endpoint is the default Hub or one the user named (flag or environment, in
 * `trusted`), never one that only a config file or share link named, and it is
 * https, or http to loopback only.
 */
export function tokenRefusal(endpoint: string, trusted: readonly string[]): string | null {
  const url = new URL(normalizeEndpoint(endpoint));
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    return `the Hub token is not sent to ${url.origin}: it is plain http to another machine (use https, or http only to localhost)`;
  }
  const own = normalizeEndpoint(endpoint);
  if (own !== DEFAULT_ENDPOINT && !trusted.map(normalizeEndpoint).includes(own)) {
    return `the Hub token is not sent to ${own}: only a config or link names it; to trust it, give it with --endpoint or HF_ENDPOINT`;
  }
  return null;
}

export function normalizeEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new HubError(`"${endpoint}" is not a valid Hub endpoint URL. Use e.g. "https://huggingface.co" or "http://127.0.0.1:8080".`, endpoint);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new HubError(`Hub endpoint "${endpoint}" must be an http(s) URL, e.g. "https://huggingface.co".`, endpoint);
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new HubError(`Hub endpoint "${endpoint}" must not carry a query, fragment or credentials; pass a token with the token option.`, endpoint);
  }
  return url.href.replace(/\/+$/, '');
}

export class HubSource implements FileSource {
  readonly id: string;
  readonly endpoint: string;
  readonly repo: string;
  readonly revision: string;
  readonly kind: RepoKind;
  private readonly cache: FileCache | undefined;
  private readonly fetchFn: typeof fetch;
  private readonly token: string | undefined;
  readonly stallTimeoutMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  /** What HttpBody uses of this source. */
  private readonly transfer: TransferHost;
  /** The size of each file as readRange last saw it on the server. */
  private readonly seen = new Map<string, number>();

  constructor(opts: HubSourceOptions) {
    this.stallTimeoutMs = opts.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    this.retries = opts.retries ?? 3;
    this.retryDelayMs = opts.retryDelayMs ?? 500;
    if (!(this.stallTimeoutMs > 0) || !Number.isInteger(this.retries) || this.retries < 0 || !(this.retryDelayMs >= 0)) {
      throw new ConfigError(
        `Hub download settings: the stall timeout must be > 0 ms (got ${this.stallTimeoutMs}) and retries a whole number ≥ 0 (got ${this.retries}).`,
      );
    }
    this.endpoint = normalizeEndpoint(opts.endpoint ?? DEFAULT_ENDPOINT);
    this.repo = validateRepoId(opts.repo);
    this.revision = opts.revision ?? 'main';
    if (typeof this.revision !== 'string' || this.revision.length === 0 || this.revision.split('/').includes('..')) {
      throw new ConfigError(`"${this.revision}" is not a valid revision. Use a branch, tag or commit such as "main".`);
    }
    if (opts.kind !== 'model' && opts.kind !== 'dataset') {
      throw new ConfigError(`Hub repo kind must be "model" or "dataset", not ${JSON.stringify(opts.kind)}.`);
    }
    this.kind = opts.kind;
    this.cache = opts.cache;
    // Calling the global fetch unbound ("Illegal invocation" in browsers) is avoided by the arrow.
    this.fetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    // Never over plain http to another machine, whoever passed the token.
    const refusal = opts.token ? tokenRefusal(this.endpoint, [this.endpoint]) : null;
    if (refusal) console.warn(`peft-studio: ${refusal}.`);
    this.token = refusal ? undefined : opts.token;
    this.id = `hub:${this.endpoint}/${this.kind === 'dataset' ? 'datasets/' : ''}${this.repo}@${this.revision}`;
    this.transfer = {
      repo: this.repo,
      id: this.id,
      stallTimeoutMs: this.stallTimeoutMs,
      retries: this.retries,
      retryDelayMs: this.retryDelayMs,
      request: (url, path, method, headers, signal) => this.request(url, path, method, headers, signal),
      httpError: (res, url, path) => this.httpError(res, url, path),
      htmlError: (url, path) => this.htmlError(url, path),
    };
  }

  /** The resolve URL of a file in this repo. */
  url(path: string): string {
    validateFilePath(path);
    const repo = this.repo.split('/').map(encodeURIComponent).join('/');
    const file = path.split('/').map(encodeURIComponent).join('/');
    const prefix = this.kind === 'dataset' ? 'datasets/' : '';
    return `${this.endpoint}/${prefix}${repo}/resolve/${encodeURIComponent(this.revision)}/${file}`;
  }

  cacheKey(path: string): string {
    return cacheKey(this.endpoint, this.kind === 'dataset' ? `datasets/${this.repo}` : this.repo, this.revision, path);
  }

  async get(path: string, onProgress?: ProgressCallback, opts: GetOptions = {}): Promise<Uint8Array> {
    const url = this.url(path);
    const key = this.cacheKey(path);
    const maxBytes = opts.maxBytes ?? Infinity;
    if (this.cache) {
      const hit = await this.cache.get(key);
      if (hit && hit.byteLength > maxBytes) throw fileTooLarge(this.id, path, hit.byteLength, maxBytes);
      if (hit) {
        onProgress?.({ file: path, loaded: hit.byteLength, total: hit.byteLength, cached: true });
        return hit;
      }
    }

    const bytes = await this.download(url, path, maxBytes, onProgress);
    if (this.cache) {
      try {
        await this.cache.put(key, bytes);
      } catch (e) {
        // A full disk or quota must not fail the load; the file is in memory.
        console.warn(`peft-studio: could not cache ${url}: ${(e as Error).message}`);
      }
    }
    return bytes;
  }

  /** Where the cached copy of `path` is (for an error about its content: the file to delete), or null when not cached. */
  async cachedCopy(path: string): Promise<string | null> {
    const key = this.cacheKey(path);
    if (!this.cache?.location || !(await (this.cache.has?.(key) ?? true))) return null;
    return this.cache.location(key);
  }

  /**
   * The whole body of `url`, with retries and Range resumption; throws
   * HubError (or FileTooLargeError) and never returns a short, long or HTML
   * stand-in body.
   */
  private async download(url: string, path: string, maxBytes: number, onProgress?: ProgressCallback): Promise<Uint8Array> {
    let chunks: Uint8Array[] = [];
    let loaded = 0;
    let events = 0;
    // A file that changed on the server mid-download is taken whole again.
    const body = new HttpBody(this.transfer, url, path, {
      maxBytes,
      onRestart: () => {
        chunks = [];
        loaded = 0;
      },
    });
    try {
      for (let c = await body.next(); c; c = await body.next()) {
        chunks.push(c);
        loaded += c.byteLength;
        onProgress?.({ file: path, loaded, total: body.size });
        events++;
      }
    } finally {
      body.close();
    }
    // The last event says "done" (loaded = total) also when the size was not announced.
    if (body.size !== loaded || events === 0) onProgress?.({ file: path, loaded, total: loaded });
    return concat(chunks, loaded);
  }

  /**
   * Bytes [start, end) of a file (fewer past its end) and its size: from the
   * cache when it holds the whole file, else with one HTTP Range request (a
   * server that ignores Range is read only up to `end`, then cut off). The
   * bytes are not cached; the file's size is kept, so that readRanges notices
   * a file that changed between the headers and the download.
   */
  async readRange(path: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number }> {
    const url = this.url(path);
    if (this.cache?.getRange) {
      const hit = await this.cache.getRange(this.cacheKey(path), start, end);
      if (hit) return hit;
    }
    const body = new HttpBody(this.transfer, url, path, { from: start, to: Math.max(start, end) });
    try {
      await body.open();
      const out = new Uint8Array(Math.max(0, (body.size ? Math.min(end, body.size) : end) - start));
      let at = 0;
      for (let c = await body.next(); c; c = await body.next()) {
        if (at + c.byteLength > out.byteLength) break; // the size the server announced was wrong: a short read, the caller says so
        out.set(c, at);
        at += c.byteLength;
      }
      if (body.size) this.seen.set(path, body.size);
      return { bytes: at === out.byteLength ? out : out.subarray(0, at), size: body.size };
    } finally {
      body.close();
    }
  }

  /**
   * The bytes of each [start, end) range of a file, in order (ascending, not
   * overlapping), the file read once front to back: from the cache when it
   * holds the whole file, else streamed from the Hub in one request, each
   * range passed on as soon as its last byte arrived. With a cache the whole
   * file is written into it on the way (one chunk at a time), resuming the
   * partial download an interrupted load left (If-Range: a file that changed
   * since is downloaded from the start); without one, the download stops
   * after the last range. The host holds one range plus a chunk, never the
   * file. A cache that fails to write (quota, full disk) only warns: the
   * load goes on uncached. Progress is in bytes of the file.
   */
  async *readRanges(path: string, ranges: readonly (readonly [number, number])[], onProgress?: ProgressCallback): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < ranges.length; i++) {
      const [s, e] = ranges[i];
      if (!(s >= 0 && e >= s) || (i > 0 && s < ranges[i - 1][1])) throw new Error(`readRanges(${path}): ranges must be ascending and not overlap`);
    }
    const key = this.cacheKey(path);
    let todo = ranges;
    if (this.cache?.getRange && (await (this.cache.has?.(key) ?? true))) {
      let size = -1;
      let i = 0;
      for (; i < ranges.length; i++) {
        const hit = await this.cache.getRange(key, ranges[i][0], ranges[i][1]);
        if (!hit) break; // damaged (and deleted): the rest comes from the Hub
        size = hit.size;
        onProgress?.({ file: path, loaded: Math.min(ranges[i][1], size), total: size, cached: true });
        yield hit.bytes;
      }
      if (i === ranges.length) {
        // The last event says "done", once.
        if (size >= 0 && Math.min(ranges.at(-1)![1], size) !== size) onProgress?.({ file: path, loaded: size, total: size, cached: true });
        return;
      }
      todo = ranges.slice(i);
    }
    yield* this.streamRanges(path, key, todo, onProgress);
  }

  /**
   * Downloads `path` into the cache, streaming (resuming an interrupted
   * download), without holding it in memory. False when nothing was cached:
   * no cache that takes streamed writes, another process is writing the
   * file, or the cache refused it (a warning says why).
   */
  async cacheFile(path: string, onProgress?: ProgressCallback): Promise<boolean> {
    if (!this.cache?.writer) return false;
    for await (const _ of this.readRanges(path, [], onProgress)) void _;
    return (await this.cache.has?.(this.cacheKey(path))) ?? false;
  }

  private async *streamRanges(
    path: string,
    key: string,
    ranges: readonly (readonly [number, number])[],
    onProgress?: ProgressCallback,
  ): AsyncGenerator<Uint8Array> {
    const url = this.url(path);
    let writer = await this.openWriter(key, url);
    if (!writer && ranges.length === 0) return;
    const seen = this.seen.get(path);
    // Resume only bytes of a file of the size whose headers were checked, and only with a validator: the server
    // answers If-Range with the missing bytes when the file is still the one the partial download began, else whole.
    // (A partial as long as the file, cut before its commit, is fetched again: a 416 would not check its ETag.)
    const resumable = !!writer && writer.written > 0 && writer.written < writer.size && !!writer.etag && (!seen || seen === writer.size);
    let body = new HttpBody(this.transfer, url, path, resumable ? { from: writer!.written, ifRange: writer!.etag } : {});
    try {
      await body.open();
      // The headers were checked on the file of this size. (ETags are not compared across requests: a CDN behind the
      // Hub's redirect may tag the same bytes differently; If-Range, which the server evaluates, guards the resume.)
      if (seen && body.size && seen !== body.size) {
        throw new HubError(`${path} in ${this.repo} changed on the server while it was being loaded (${url}). Load it again.`, url);
      }
      if (writer && !body.size) writer = await this.dropWriter(writer, url, new Error('the server does not say how large the file is'));
      if (writer) {
        try {
          await writer.begin(body.pos, body.etag, body.size);
        } catch (e) {
          writer = await this.dropWriter(writer, url, e as Error);
        }
      }
      if (!writer && body.pos > 0) {
        // The kept bytes are out of reach after all: from the start.
        body.close();
        body = new HttpBody(this.transfer, url, path);
        await body.open();
      }
      /** Bytes [0, from) come from the partial download in the cache, the rest from the body. */
      const from = body.pos;
      /** The last chunk from the body and its file offset (it may hold the start of the next range). */
      const cur: { bytes: Uint8Array | null; at: number } = { bytes: null, at: from };
      const pull = async (): Promise<boolean> => {
        const c = await body.next();
        if (!c) return false;
        if (writer) {
          try {
            await writer.append(c);
          } catch (e) {
            writer = await this.dropWriter(writer, url, e as Error);
          }
        }
        cur.bytes = c;
        cur.at = body.pos - c.byteLength;
        onProgress?.({ file: path, loaded: body.pos, total: body.size });
        return true;
      };
      for (const [s, wantEnd] of ranges) {
        const e = body.size ? Math.min(wantEnd, body.size) : wantEnd;
        const out = new Uint8Array(Math.max(0, e - s));
        let at = s;
        if (at < Math.min(from, e)) {
          out.set(await writer!.read(at, Math.min(from, e)));
          at = Math.min(from, e);
        }
        while (at < e) {
          const c = cur.bytes;
          if (!c || cur.at + c.byteLength <= at) {
            if (!(await pull())) break; // the file ended early: a short range, the caller names it
            continue;
          }
          const off = at - cur.at;
          const n = Math.min(c.byteLength - off, e - at);
          out.set(c.subarray(off, off + n), at - s);
          at += n;
        }
        yield at - s === out.byteLength ? out : out.subarray(0, at - s);
      }
      // The rest of the file goes into the cache; without one it is not downloaded.
      while (writer && (await pull()));
      if (writer) {
        const w: CacheWriter = writer;
        writer = null;
        try {
          await w.commit();
        } catch (e) {
          await this.dropWriter(w, url, e as Error);
        }
      }
      // The last event says "done", once (without a cache the download stopped after the last range).
      if (!body.size || body.pos !== body.size) onProgress?.({ file: path, loaded: body.size || body.pos, total: body.size || body.pos });
    } finally {
      body.close();
      // Interrupted: the partial download stays for the next load to resume.
      await writer?.close().catch(() => {});
    }
  }

  private async openWriter(key: string, url: string): Promise<CacheWriter | null> {
    if (!this.cache?.writer) return null;
    try {
      return (await this.cache.writer(key)) ?? null;
    } catch (e) {
      console.warn(`peft-studio: could not cache ${url}: ${(e as Error).message}; loading it without the cache.`);
      return null;
    }
  }

  /** A cache that cannot take the file (quota, full disk) does not fail the load: it goes on uncached. */
  private async dropWriter(w: CacheWriter, url: string, e: Error): Promise<null> {
    console.warn(`peft-studio: could not cache ${url}: ${e.message}; loading it without the cache.`);
    await w.discard().catch(() => {});
    return null;
  }

  private htmlError(url: string, path: string): HubError {
    return new HubError(
      `The server sent an HTML page instead of ${path} (from ${this.repo} at ${url}): a login, captive-portal or error page, not the file. ` +
        'It was not kept. Check the endpoint and your network (proxy, sign-in), then try again.',
      url,
    );
  }

  async has(path: string): Promise<boolean> {
    const url = this.url(path);
    if (this.cache?.has && (await this.cache.has(this.cacheKey(path)))) return true;
    const res = await this.request(url, path, 'HEAD');
    if (res.ok) return true;
    if (res.status === 404 && res.headers.get('x-error-code') !== 'RepoNotFound') return false;
    throw this.httpError(res, url, path);
  }

  private async request(url: string, path: string, method: 'GET' | 'HEAD', extra: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { ...extra };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    try {
      return await this.fetchFn(url, { method, headers, signal });
    } catch (e) {
      const cause = (e as Error).message + ((e as { cause?: Error }).cause ? `: ${(e as { cause: Error }).cause.message}` : '');
      throw new HubError(
        `Network error fetching ${path} from ${this.kind} repo ${this.repo} (${url}): ${cause}. ` +
          `Check the connection and the endpoint ${this.endpoint}; a server in another origin must allow CORS.`,
        url,
      );
    }
  }

  private httpError(res: Response, url: string, path: string): HubError {
    const code = res.headers.get('x-error-code');
    const what = `${path} in ${this.kind} repo ${this.repo} (revision ${this.revision})`;
    if (code === 'RepoNotFound' || ((res.status === 401 || res.status === 403) && code !== 'GatedRepo')) {
      return new HubError(
        `${this.kind === 'dataset' ? 'Dataset' : 'Model'} repo ${this.repo} was not found or is private (HTTP ${res.status}) at ${url}. ` +
          'Check the repo id; for a private repo pass a Hub token.',
        url,
        res.status,
      );
    }
    if (code === 'GatedRepo') {
      return new HubError(`${this.repo} is gated (HTTP ${res.status}) at ${url}. Accept its license on the Hub and pass a Hub token.`, url, res.status);
    }
    if (res.status === 404) {
      return new HubError(`${what} was not found (HTTP 404) at ${url}. Check the file name and the revision.`, url, 404);
    }
    return new HubError(`Fetching ${what} failed: HTTP ${res.status} ${res.statusText} at ${url}. Try again later.`, url, res.status);
  }
}
