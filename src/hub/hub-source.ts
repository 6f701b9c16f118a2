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
 */
import { ConfigError, HubError } from '../errors';
import { cacheKey, type FileCache } from './cache';
import { fileTooLarge, readStream, StreamTooLargeError, validateFilePath, validateRepoId, type FileSource, type GetOptions, type ProgressCallback } from './source';

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

  constructor(opts: HubSourceOptions) {
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

    const res = await this.request(url, path, 'GET');
    if (!res.ok) throw this.httpError(res, url, path);

    const length = Number(res.headers.get('content-length') ?? NaN);
    const encoding = res.headers.get('content-encoding');
    // A compressed body decodes to a different size than Content-Length says.
    const total = Number.isSafeInteger(length) && length >= 0 && (!encoding || encoding === 'identity') ? length : 0;
    // Refused before a byte of the body is read; a compressed body is cut off as it decodes past the cap.
    if (total > maxBytes) {
      await res.body?.cancel().catch(() => {});
      throw fileTooLarge(this.id, path, total, maxBytes);
    }
    let bytes: Uint8Array;
    try {
      bytes = res.body ? await readStream(res.body, path, total, onProgress, maxBytes) : new Uint8Array(await res.arrayBuffer());
    } catch (e) {
      if (e instanceof StreamTooLargeError) throw fileTooLarge(this.id, path, e.loaded, maxBytes, true);
      throw new HubError(
        `Download of ${path} from ${this.repo} was interrupted (${(e as Error).message}) at ${url}. Check the connection and try again.`,
        url,
      );
    }
    if (total > 0 && bytes.byteLength < total) {
      throw new HubError(
        `Download of ${path} from ${this.repo} is truncated: ${bytes.byteLength} of ${total} bytes (Content-Length) from ${url}. Try again.`,
        url,
      );
    }
    if (!res.body) onProgress?.({ file: path, loaded: bytes.byteLength, total: bytes.byteLength });

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

  async has(path: string): Promise<boolean> {
    const url = this.url(path);
    if (this.cache?.has && (await this.cache.has(this.cacheKey(path)))) return true;
    const res = await this.request(url, path, 'HEAD');
    if (res.ok) return true;
    if (res.status === 404 && res.headers.get('x-error-code') !== 'RepoNotFound') return false;
    throw this.httpError(res, url, path);
  }

  private async request(url: string, path: string, method: 'GET' | 'HEAD'): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    try {
      return await this.fetchFn(url, { method, headers });
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
      return new HubError(
        `${what} was not found (HTTP 404) at ${url}. Check the file name and the revision.`,
        url,
        404,
      );
    }
    return new HubError(`Fetching ${what} failed: HTTP ${res.status} ${res.statusText} at ${url}. Try again later.`, url, res.status);
  }
}
