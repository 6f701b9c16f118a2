/**
 * Where model and dataset files come from. A FileSource hands out whole files
 * by repo-relative path ("config.json", "sst2/train-00000-of-00001.parquet");
 * the Hub, a local folder and a browser directory handle all look alike.
 */
import { ConfigError, HubError } from '../errors';

export interface FileProgress {
  /** Repo-relative path of the file being read. */
  file: string;
  loaded: number;
  /** Total bytes, or 0 when the size is not known in advance. */
  total: number;
}

export type ProgressCallback = (p: FileProgress) => void;

export interface FileSource {
  /** Stable, human-readable: "hub:<endpoint>/<repo>@<revision>", "local:<dir>", ... */
  readonly id: string;
  /** The whole file. Missing files throw HubError with status 404 (see isNotFound). */
  get(path: string, onProgress?: ProgressCallback): Promise<Uint8Array>;
  has(path: string): Promise<boolean>;
  /** Names of the top-level folders, where the source can list them (a local folder can); used to find an adapter in a sub-folder. */
  listDirs?(): Promise<string[]>;
}

/** True for the "no such file" error of every FileSource. */
export function isNotFound(err: unknown): boolean {
  return err instanceof HubError && err.status === 404;
}

/** Reads a file as UTF-8 JSON; a parse error names the source and the file. */
export async function getJson<T = unknown>(source: FileSource, path: string): Promise<T> {
  const bytes = await source.get(path);
  const text = new TextDecoder().decode(bytes);
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new ConfigError(`${source.id}: ${path} is not valid JSON (${(e as Error).message}). Check the file or download it again.`);
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

/**
 * Reads a byte stream to the end, reporting progress. With a known `total`
 * the bytes go straight into one buffer (no second copy at the end).
 */
export async function readStream(
  stream: ReadableStream<Uint8Array>,
  file: string,
  total: number,
  onProgress?: ProgressCallback,
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
