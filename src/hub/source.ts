/**
 * Where model and dataset files come from. A FileSource hands out whole files
 * by repo-relative path ("config.json", "sst2/train-00000-of-00001.parquet");
 * the Hub, a local folder and a browser directory handle all look alike.
 */
import { ConfigError, HubError, ModelFormatError } from '../errors';

/** A file larger than PEFT Studio reads for its kind (GetOptions.maxBytes). */
export class FileTooLargeError extends ModelFormatError {
  override name = 'FileTooLargeError';
  constructor(
    message: string,
    readonly url: string,
  ) {
    super(message);
  }
}

export interface FileProgress {
  /** Repo-relative path of the file being read. */
  file: string;
  loaded: number;
  /** Total bytes, or 0 when the size is not known in advance. */
  total: number;
  /** The bytes came from the source's cache (IndexedDB in a browser), not over the network. */
  cached?: true;
}

export type ProgressCallback = (p: FileProgress) => void;

export interface GetOptions {
  /**
   * Refuse a file larger than this (a FileTooLargeError) before reading it
   * where the size is known in advance (a local file's size, Content-Length),
   * else as soon as the bytes read pass it (a gzip bomb stops here).
   */
  maxBytes?: number;
}

/**
 * The documented caps on JSON files read from a model or adapter (README,
 * Models): far above real files (Llama 3's tokenizer.json is 9 MB, Gemma's
 * 33 MB; config.json files are a few KB), so a hostile 3 GiB config.json is
 * refused before it is read.
 */
export const JSON_LIMITS = {
  'config.json': 1 << 20,
  'adapter_config.json': 1 << 20,
  'generation_config.json': 1 << 20,
  'model.safetensors.index.json': 32 << 20,
  'tokenizer.json': 128 << 20,
  'tokenizer_config.json': 32 << 20,
  'special_tokens_map.json': 1 << 20,
  'chat_template.jinja': 4 << 20,
} as const;

/** The cap of a JSON file by its name (the last path segment); other JSON files: 32 MiB. */
export function jsonLimit(path: string): number {
  const base = path.split('/').pop()!;
  return Object.prototype.hasOwnProperty.call(JSON_LIMITS, base) ? JSON_LIMITS[base as keyof typeof JSON_LIMITS] : 32 << 20;
}

const mib = (n: number) => (n >= 1 << 20 ? `${+(n / (1 << 20)).toFixed(1)} MiB` : `${n} bytes`);

/** The error for a file above its cap; `size` is the declared or read-so-far size. */
export function fileTooLarge(id: string, path: string, size: number, max: number, soFar = false): FileTooLargeError {
  return new FileTooLargeError(
    `${id}/${path} is ${soFar ? 'more than ' : ''}${mib(size)}, above the ${mib(max)} PEFT Studio reads for this file; it is not a real ${path.split('/').pop()} (or it is damaged). Check the file, or download it again.`,
    `${id}/${path}`,
  );
}

export interface FileSource {
  /** Stable, human-readable: "hub:<endpoint>/<repo>@<revision>", "local:<dir>", ... */
  readonly id: string;
  /** The whole file. Missing files throw HubError with status 404 (see isNotFound). */
  get(path: string, onProgress?: ProgressCallback, opts?: GetOptions): Promise<Uint8Array>;
  has(path: string): Promise<boolean>;
  /**
   * Bytes [start, end) of a file and its whole size, where the source can read
   * part of a file (local folders can): a safetensors header is checked before
   * a multi-gigabyte file is read.
   */
  readRange?(path: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number }>;
  /**
   * The bytes of each [start, end) range of a file, in order (ascending, not
   * overlapping), where the source reads a file best front to back in one pass
   * (the Hub: one streamed request, cached on the way). Progress is in bytes
   * of the file.
   */
  readRanges?(path: string, ranges: readonly (readonly [number, number])[], onProgress?: ProgressCallback): AsyncIterable<Uint8Array>;
  /** Names of the top-level folders, where the source can list them (a local folder can); used to find an adapter in a sub-folder. */
  listDirs?(): Promise<string[]>;
  /** Where the local copy of a downloaded file is cached (the file to delete when its content is bad), or null. */
  cachedCopy?(path: string): Promise<string | null>;
}

/** For an error about a file's content: " … delete <cached copy> to download it again." when it came from a download cache, else "". */
export async function cacheHint(source: FileSource, path: string): Promise<string> {
  const where = await source.cachedCopy?.(path).catch(() => null);
  return where ? ` It was read from the download cache: delete ${where} to download it again.` : '';
}

/** True for the "no such file" error of every FileSource. */
export function isNotFound(err: unknown): boolean {
  return err instanceof HubError && err.status === 404;
}

/** Reads a file as UTF-8 JSON (at most jsonLimit(path) bytes); a parse error names the source and the file. */
export async function getJson<T = unknown>(source: FileSource, path: string): Promise<T> {
  const bytes = await getCapped(source, path, jsonLimit(path));
  const text = new TextDecoder().decode(bytes);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ConfigError(
      `${source.id}: ${path} is not valid JSON (${(e as Error).message}). Check the file or download it again.${await cacheHint(source, path)}`,
    );
  }
}

// Hub repo ids: "name" or "namespace/name", letters, digits, "-", "_", ".";
// no "--" or ".." runs, no leading/trailing "-" or ".", at most 96 characters.
const REPO_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$/;

/** Throws ConfigError unless `repo` is a valid Hub repo id. */
export function validateRepoId(repo: string): string {
  const bad = (why: string): never => {
    throw new ConfigError(
      `"${repo}" is not a Hub repo id (${why}). Use "name" or "namespace/name", e.g. "HuggingFaceTB/SmolLM2-135M", or a local folder path.`,
    );
  };
  if (typeof repo !== 'string' || repo.length === 0) bad('empty');
  if (/^[a-z][a-z0-9+.-]*:/i.test(repo)) bad('it is a URL; set the endpoint instead and pass only the repo id');
  const parts = repo.split('/');
  if (parts.length > 2) bad('more than one "/"');
  if (repo.length > 96) bad('longer than 96 characters');
  for (const p of parts) {
    if (!REPO_PART.test(p)) bad('only letters, digits, "-", "_" and "." are allowed, not at the start or end of a part');
    if (p.includes('--') || p.includes('..')) bad('"--" and ".." are not allowed');
  }
  return repo;
}

/**
 * Throws ConfigError unless `path` is a plain relative path inside a repo or
 * folder: "/"-separated, no empty, "." or ".." segments, no backslashes or
 * control characters. This is what keeps a source inside its root.
 */
export function validateFilePath(path: string): string {
  const bad = (why: string): never => {
    throw new ConfigError(`"${path}" is not a valid file path inside a repo (${why}). Use a relative path such as "config.json" or "original/tok512.bin".`);
  };
  if (typeof path !== 'string' || path.length === 0) bad('empty');
  if (path.includes('\\')) bad('backslash');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(path)) bad('control character');
  if (path.startsWith('/')) bad('absolute');
  if (/^[a-z][a-z0-9+.-]*:/i.test(path)) bad('it is a URL');
  for (const seg of path.split('/')) {
    if (seg === '') bad('empty segment');
    if (seg === '.' || seg === '..') bad(`"${seg}" segment`);
  }
  return path;
}

/** source.get with a size cap that holds even for a source that ignores GetOptions. */
export async function getCapped(source: FileSource, path: string, maxBytes: number, onProgress?: ProgressCallback): Promise<Uint8Array> {
  const bytes = await source.get(path, onProgress, { maxBytes });
  if (bytes.byteLength > maxBytes) throw fileTooLarge(source.id, path, bytes.byteLength, maxBytes);
  return bytes;
}

/** Thrown by readStream when a stream passes its maxBytes (the caller names the file). */
export class StreamTooLargeError extends Error {
  constructor(readonly loaded: number) {
    super(`more than ${loaded} bytes`);
  }
}

/**
 * Reads a byte stream to the end, reporting progress. With a known `total`
 * the bytes go straight into one buffer (no second copy at the end). Past
 * `maxBytes` the stream is cancelled (StreamTooLargeError).
 */
export async function readStream(
  stream: ReadableStream<Uint8Array>,
  file: string,
  total: number,
  onProgress?: ProgressCallback,
  maxBytes = Infinity,
): Promise<Uint8Array> {
  const reader = stream.getReader();
  let out: Uint8Array | null = total > 0 ? new Uint8Array(total) : null;
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (out && loaded + value.byteLength <= out.byteLength) {
      out.set(value, loaded);
    } else {
      // Unknown or wrong total (a compressed body decodes to more bytes): collect.
      if (out) {
        chunks.push(out.subarray(0, loaded));
        out = null;
      }
      chunks.push(value);
    }
    loaded += value.byteLength;
    if (loaded > maxBytes) {
      await reader.cancel().catch(() => {});
      throw new StreamTooLargeError(loaded);
    }
    onProgress?.({ file, loaded, total });
  }
  if (out) return loaded === out.byteLength ? out : out.subarray(0, loaded);
  return concat(chunks, loaded);
}

export function concat(chunks: Uint8Array[], length = chunks.reduce((a, c) => a + c.byteLength, 0)): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
