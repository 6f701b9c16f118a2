/**
 * Loading an entry's rows: choose a source, fetch its files for the split
 * through a FileSource (HubSource with its cache, a local folder, a browser
 * directory handle), parse each file by its format, decode ClassLabel ids and
 * reshape to the canonical schema (raw.ts).
 */
import { ConfigError, HubError } from '../errors';
import type { FileCache } from '../hub/cache';
import { HubSource } from '../hub/hub-source';
import type { FileSource, ProgressCallback } from '../hub/source';
import type { DatasetEntry, SourceSpec } from './entry';
import { decodeClassLabels, readParquet } from './parquet';
import { canonicalRows, formatOf, type ParsedFile } from './raw';
import { decodeText, parseDelimited, parseJsonArray, parseJsonl, parseLines, type TableRow } from './tabular';

/** Gives the FileSource that holds a source's files, or null when this host has no way to reach it. */
export type SourceResolver = (spec: SourceSpec, entry: DatasetEntry) => FileSource | null;

/**
 * The browser's resolver: hub sources from the Hub (endpoint, cache, token as
 * for models), file sources from `files` when given (a DirectoryHandleSource
 * of the folder the user picked), else unreachable.
 */
export function hubResolver(opts: { endpoint?: string; cache?: FileCache; fetch?: typeof fetch; token?: string; files?: FileSource } = {}): SourceResolver {
  return (spec) =>
    spec.type === 'hub'
      ? new HubSource({
          endpoint: opts.endpoint,
          repo: spec.repo,
          revision: spec.revision,
          kind: 'dataset',
          cache: opts.cache,
          fetch: opts.fetch,
          token: opts.token,
        })
      : (opts.files ?? null);
}

export interface LoadOptions {
  /**
   * Which source of the entry: its index, 'hub' or 'file' (the first of that
   * type), a Hub repo id, or an explicit source spec (e.g. rows a test writes).
   * Default: the first source whose files are found.
   */
  source?: number | string | SourceSpec;
  /** Default: the entry's split. */
  split?: string;
  /** Replaces the split's file list (e.g. FewGLUE's train_fewglue32.jsonl for train.jsonl). */
  files?: string[];
  /** Read at most this many rows (parquet files are read only that far). */
  maxRows?: number;
  onProgress?: ProgressCallback;
}

export interface LoadedRows {
  entry: DatasetEntry;
  source: SourceSpec;
  split: string;
  files: string[];
  /** Canonical rows (Hub schema, ClassLabel columns as names). */
  rows: TableRow[];
  /** Where they came from, for logs: "hub:…/datasets/nyu-mll/glue@main sst2/train-00000-of-00001.parquet". */
  origin: string;
}

function describeSource(s: SourceSpec): string {
  return s.type === 'hub' ? `Hub repo ${s.repo}${s.revision && s.revision !== 'main' ? `@${s.revision}` : ''}` : `local files${s.dir ? ` in ${s.dir}` : ''}`;
}

/** The candidate sources of an entry for LoadOptions.source. */
function candidates(entry: DatasetEntry, sel: LoadOptions['source']): SourceSpec[] {
  if (sel === undefined) return entry.sources;
  if (typeof sel === 'object') return [sel];
  if (typeof sel === 'number') {
    const s = entry.sources[sel];
    if (!s) throw new ConfigError(`dataset "${entry.key}" has ${entry.sources.length} sources; there is no source ${sel}.`);
    return [s];
  }
  const found = entry.sources.filter((s) => (sel === 'hub' || sel === 'file' ? s.type === sel : s.type === 'hub' && s.repo === sel));
  if (!found.length) {
    throw new ConfigError(`dataset "${entry.key}" has no source "${sel}". Its sources: ${entry.sources.map(describeSource).join('; ')}.`);
  }
  return found;
}

async function parseFile(fs: FileSource, path: string, spec: SourceSpec, maxRows: number | undefined, onProgress?: ProgressCallback): Promise<ParsedFile> {
  const where = `${fs.id} ${path}`;
  const bytes = await fs.get(path, onProgress);
  const format = formatOf(path, spec);
  switch (format) {
    case 'parquet': {
      const t = await readParquet(bytes, where, { maxRows });
      return { path, rows: decodeClassLabels(t.rows, t.features, where) };
    }
    case 'jsonl':
      return { path, rows: parseJsonl(decodeText(bytes), where) };
    case 'json':
      return { path, rows: parseJsonArray(decodeText(bytes), where) };
    case 'csv':
    case 'tsv': {
      const quote = spec.quote !== undefined ? spec.quote : format === 'csv' ? '"' : null;
      return { path, rows: parseDelimited(decodeText(bytes), { delimiter: format === 'csv' ? ',' : '\t', quote, header: spec.header ?? true }, where) };
    }
    case 'lines':
      return { path, rows: parseLines(decodeText(bytes)).map((text) => ({ text })) };
  }
}

async function available(fs: FileSource, files: string[]): Promise<boolean> {
  for (const f of files) {
    try {
      if (!(await fs.has(f))) return false;
    } catch (e) {
      if (e instanceof HubError || e instanceof ConfigError) return false;
      throw e;
    }
  }
  return true;
}

/**
 * Loads the rows of an entry's split. `files` is one FileSource that holds
 * the chosen source's files (a Hub repo, a folder), or a resolver that gives
 * the FileSource of each source; either way the first source (in the entry's
 * order, or LoadOptions.source) whose files are all found is read.
 */
export async function loadDatasetRows(entry: DatasetEntry, files: FileSource | SourceResolver, opts: LoadOptions = {}): Promise<LoadedRows> {
  const split = opts.split ?? entry.split;
  const tried: string[] = [];
  for (const spec of candidates(entry, opts.source)) {
    const list = opts.files ?? spec.splits[split];
    if (!list) {
      tried.push(`${describeSource(spec)}: no split "${split}" (it has ${Object.keys(spec.splits).join(', ')})`);
      continue;
    }
    const fs = typeof files === 'function' ? files(spec, entry) : files;
    if (!fs) {
      tried.push(`${describeSource(spec)}: not reachable here`);
      continue;
    }
    if (!(await available(fs, list))) {
      tried.push(`${describeSource(spec)}: ${list.length === 1 ? list[0] : `${list.length} files (${list[0]}, ...)`} not found in ${fs.id}`);
      continue;
    }
    const parsed: ParsedFile[] = [];
    const slice = entry.rowSlice;
    // With a row slice, the cap counts from the slice's start (and stops at its end).
    let left = slice ? (slice.end ?? (opts.maxRows !== undefined ? (slice.start ?? 0) + opts.maxRows : undefined)) : opts.maxRows;
    for (const path of list) {
      // A row cap is only safe to push into the reader when rows map 1:1 (no adapter reshaping).
      const cap = spec.adapter ? undefined : left;
      const f = await parseFile(fs, path, spec, cap, opts.onProgress);
      parsed.push(f);
      if (left !== undefined && !spec.adapter) {
        left -= f.rows.length;
        if (left <= 0) break;
      }
    }
    let rows = canonicalRows(parsed, spec, `${fs.id} (${entry.key}, split ${split})`);
    if (slice) rows = rows.slice(slice.start ?? 0, slice.end);
    if (opts.maxRows !== undefined) rows = rows.slice(0, opts.maxRows);
    return { entry, source: spec, split, files: parsed.map((f) => f.path), rows, origin: `${fs.id} ${list.length === 1 ? list[0] : `${list.length} files`}` };
  }
  throw new ConfigError(
    `dataset "${entry.key}" (split ${split}): no source could be read.\n${tried.map((t) => `  - ${t}`).join('\n')}\n` +
      'Check the Hub endpoint and connection, or put the files in a local folder (dataset_dir) in Hub layout (<org>/<repo>/<path>) or as the original files (<name>/raw/).',
  );
}
