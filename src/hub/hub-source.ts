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
 */
import { ConfigError, HubError } from '../errors';
import { cacheKey, type FileCache } from './cache';
import { concat, fileTooLarge, validateFilePath, validateRepoId, type FileSource, type GetOptions, type ProgressCallback } from './source';

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

/** HTTP statuses worth another try: the server or a proxy is overloaded or restarting. */
const TRANSIENT = new Set([408, 429, 500, 502, 503, 504]);

/** One failed attempt that may be retried; `final` is the error to throw when no retry is left. */
class Attempt extends Error {
  constructor(
    readonly final: Error,
    readonly retryAfterMs = 0,
  ) {
    super(final.message);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether bytes of a file that is not a web page are an HTML document (a login or error page served in its place). */
function looksLikeHtml(path: string, head: Uint8Array, contentType: string | null): boolean {
  if (/\.html?$/i.test(path)) return false;
  if (contentType && /^\s*text\/html\b/i.test(contentType)) return true;
  const text = new TextDecoder().decode(head.subarray(0, 256)).trimStart().toLowerCase();
  return text.startsWith('<!doctype html') || text.startsWith('<html');
}

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
        onProgress?.({ file: path, loaded: hit.byteLength, total: hit.byteLength });
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
    const chunks: Uint8Array[] = [];
    let loaded = 0;
    /** The full size the server announced, once known (0: unknown). */
    let expected = 0;
    let etag: string | null = null;
    let ranges = false;
    let streamed = false;
    for (let attempt = 0; ; attempt++) {
      try {
        const resume = loaded > 0 && ranges;
        if (loaded > 0 && !resume) {
          chunks.length = 0;
          loaded = 0;
        }
        const headers: Record<string, string> = {};
        if (resume) {
          headers.Range = `bytes=${loaded}-`;
          if (etag) headers['If-Range'] = etag;
        }
        const ctrl = new AbortController();
        let timer: ReturnType<typeof setTimeout> | undefined;
        let stalled = false;
        const arm = () => {
          clearTimeout(timer);
          timer = setTimeout(() => {
            stalled = true;
            ctrl.abort();
          }, this.stallTimeoutMs);
        };
        const stallError = () =>
          new HubError(
            `Download of ${path} from ${this.repo} stalled: no data for ${this.stallTimeoutMs / 1000} s (${loaded} bytes received) at ${url}. ` +
              'Check the connection and try again (the stall timeout is HF_HUB_DOWNLOAD_TIMEOUT, in seconds, in the CLI).',
            url,
          );
        arm();
        try {
          let res: Response;
          try {
            res = await this.request(url, path, 'GET', headers, ctrl.signal);
          } catch (e) {
            throw new Attempt(stalled ? stallError() : (e as Error));
          }
          if (!res.ok) {
            await res.body?.cancel().catch(() => {});
            const err = this.httpError(res, url, path);
            if (!TRANSIENT.has(res.status)) throw err;
            const after = Number(res.headers.get('retry-after'));
            throw new Attempt(err, Number.isFinite(after) && after > 0 ? Math.min(after, 60) * 1000 : 0);
          }
          const encoding = res.headers.get('content-encoding');
          const identity = !encoding || encoding === 'identity';
          const length = Number(res.headers.get('content-length') ?? NaN);
          let start = 0;
          if (res.status === 206) {
            // Content-Range: bytes a-b/total. Anything but our offset: start over.
            const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
            start = m ? Number(m[1]) : -1;
            if (m && m[3] !== '*') expected = Number(m[3]);
            if (start !== loaded) {
              await res.body?.cancel().catch(() => {});
              ranges = false;
              throw new Attempt(
                new HubError(`The Hub answered a resumed download of ${path} with the wrong range (${res.headers.get('content-range')}) at ${url}.`, url),
              );
            }
          } else {
            // A whole body (the server ignored Range, or the file changed: If-Range).
            chunks.length = 0;
            loaded = 0;
            const linked = Number(res.headers.get('x-linked-size') ?? NaN);
            expected = identity && Number.isSafeInteger(length) && length >= 0 ? length : Number.isSafeInteger(linked) && linked >= 0 ? linked : 0;
            etag = res.headers.get('etag');
            ranges = (res.headers.get('accept-ranges') ?? '').toLowerCase() === 'bytes' && identity;
          }
          // Refused before a byte of the body is read; a compressed body is cut off as it decodes past the cap.
          if (expected > maxBytes) {
            await res.body?.cancel().catch(() => {});
            throw fileTooLarge(this.id, path, expected, maxBytes);
          }
          const contentType = res.headers.get('content-type');
          if (!res.body) {
            const all = new Uint8Array(await res.arrayBuffer());
            chunks.push(all);
            loaded += all.byteLength;
          } else {
            streamed = true;
            const reader = res.body.getReader();
            try {
              for (;;) {
                let r: ReadableStreamReadResult<Uint8Array>;
                try {
                  r = await reader.read();
                } catch (e) {
                  throw new Attempt(
                    stalled
                      ? stallError()
                      : new HubError(
                          `Download of ${path} from ${this.repo} was interrupted (${(e as Error).message}) at ${url} after ${loaded} bytes. Check the connection and try again.`,
                          url,
                        ),
                  );
                }
                if (r.done) break;
                arm();
                if (loaded === 0 && looksLikeHtml(path, r.value, contentType)) throw this.htmlError(url, path);
                chunks.push(r.value);
                loaded += r.value.byteLength;
                if (loaded > maxBytes) throw fileTooLarge(this.id, path, loaded, maxBytes, true);
                onProgress?.({ file: path, loaded, total: expected });
              }
            } finally {
              reader.cancel().catch(() => {});
            }
          }
          if (loaded === 0 || !res.body) {
            if (looksLikeHtml(path, concat(chunks, loaded), contentType)) throw this.htmlError(url, path);
          }
        } finally {
          clearTimeout(timer);
        }
        if (expected > 0 && loaded < expected) {
          throw new Attempt(
            new HubError(
              `Download of ${path} from ${this.repo} is truncated: ${loaded} of ${expected} bytes (the size the server announced) from ${url}. Try again.`,
              url,
            ),
          );
        }
        if (expected > 0 && loaded > expected) {
          throw new HubError(
            `Download of ${path} from ${this.repo} has ${loaded} bytes where the server announced ${expected} (Content-Length / X-Linked-Size) at ${url}; it was not kept. Try again.`,
            url,
          );
        }
        // The last event says "done" (loaded = total) also when the size was not announced.
        if (expected !== loaded || !streamed) onProgress?.({ file: path, loaded, total: loaded });
        return concat(chunks, loaded);
      } catch (e) {
        if (!(e instanceof Attempt)) throw e;
        if (attempt >= this.retries) throw e.final;
        await sleep(Math.max(e.retryAfterMs, this.retryDelayMs * 2 ** attempt));
      }
    }
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
