/**
 * The dataset registry: PEFT-Factory's 27 datasets (builtin.ts) plus custom
 * entries, and the API the trainer, the predict/eval code and the UI use.
 * Browser-safe (no node: imports); the CLI glue is in ./node.ts.
 *
 * API
 *
 *   listDatasets(): DatasetEntry[]
 *       Every entry: built-in (`sst2`, `sst2_eval`, …, `mnli_test`) then custom.
 *   datasetEntry(key): DatasetEntry
 *       One entry; `key[split]` selects another split of its sources
 *       (`sst2[validation]`, `mmlu[dev]`). Unknown keys throw ConfigError with
 *       the closest key.
 *   datasetNames(): string[]                the 27 built-in dataset names
 *   labelWords(entry): string[] | null      the words a classification entry's
 *       model emits, in class-id order (the binary positive class is the
 *       second); null for other tasks
 *   parseDatasetInfo(json, origin): DatasetEntry[]
 *       Validates custom entries (a JSON object key → entry, entry shape in
 *       entry.ts); every problem is reported at once.
 *   registerDatasets(entries) / unregisterDataset(key)
 *
 *   loadDatasetRows(entry, files, opts?): Promise<LoadedRows>     (load.ts)
 *       `files`: a FileSource holding the files (HubSource of the repo, a
 *       local folder), or a resolver spec → FileSource; opts: source, split,
 *       files, maxRows. Rows are in the Hub schema with ClassLabel ids as names.
 *   renderExample(entry, row, source?): Rendered
 *       One row → {instruction, prompt, query, user, response, label,
 *       answers?}: `user` is the user turn (instruction, prompt, query joined
 *       by "\n"), `response` the assistant turn, `label` the gold value the
 *       metrics compare with (label word, STS-B score, GSM8K / SVAMP number,
 *       ReCoRD's first answer with all in `answers`, the reference text for
 *       generation), null when the row is unlabeled.
 *   hubResolver({endpoint, cache, fetch, token, files}): SourceResolver
 *       The browser's resolver (hub sources via HubSource; file sources from
 *       a picked folder). Node: nodeResolver in ./node.ts.
 *   toSftExample(rendered): SftExample      {prompt: user turn, response}
 *   renderRows(loaded, {training}): Rendered[]
 *       Every row of a load; with training and `entry.expand` one example per
 *       gold answer (ReCoRD, APPS).
 *
 *   Encoding (encode.ts): encodeRendered, encodeTrainingSet,
 *   encodeForPrediction, TruncationReport; the whole configured pipeline for
 *   the CLI is loadExperimentData in node.ts.
 */
import { ConfigError } from '../errors';
import { closest } from '../config/schema';
import { BUILTIN_DATASET_NAMES, BUILTIN_ENTRIES } from './builtin';
import { entryLabelWords, validateEntry, type DatasetEntry, type SourceSpec } from './entry';
import { FORMATTER_NAMES, expandFormatted, formatRow, renderFormatted, type Rendered } from './formatters';
import type { LoadedRows } from './load';
import type { SftExample } from './sft';
import type { TableRow } from './tabular';

export type { DatasetEntry, SourceSpec, HubSourceSpec, FileSourceSpec, TaskKind, MetricFamily, ColumnMap } from './entry';
export type { Rendered } from './formatters';
export { loadDatasetRows, hubResolver, type LoadOptions, type LoadedRows, type SourceResolver } from './load';
export { baseName } from './entry';

const builtin = new Map<string, DatasetEntry>(BUILTIN_ENTRIES.map((e) => [e.key, validateEntry(e, e.key, FORMATTER_NAMES, 'built-in dataset')]));
const custom = new Map<string, DatasetEntry>();

export function listDatasets(): DatasetEntry[] {
  return [...builtin.values(), ...custom.values()];
}

export function datasetNames(): string[] {
  return [...BUILTIN_DATASET_NAMES];
}

/**
 * `key`, `key[split]`, or `key[split[start:end]]` with HF datasets' row-slice
 * syntax (`svamp_eval[test[:700]]`: the first 700 rows of the test split;
 * `[700:]` the rest), so one split can be divided between training and
 * prediction without overlap.
 */
export function parseDatasetKey(spec: string): { key: string; split?: string; rowSlice?: { start?: number; end?: number } } {
  const m = /^\s*([^[\]\s]+)\s*(?:\[\s*([^[\]\s:]+)\s*(?:\[\s*(\d*)\s*:\s*(\d*)\s*\])?\s*\])?\s*$/.exec(spec);
  if (!m)
    throw new ConfigError(
      `"${spec}" is not a dataset key. Use a registry key such as sst2, key[split] such as sst2[validation], or key[split[start:end]] such as svamp_eval[test[:700]].`,
    );
  if (!m[2]) return { key: m[1] };
  if (m[3] === undefined) return { key: m[1], split: m[2] };
  const rowSlice = { ...(m[3] ? { start: Number(m[3]) } : {}), ...(m[4] ? { end: Number(m[4]) } : {}) };
  if (rowSlice.start !== undefined && rowSlice.end !== undefined && rowSlice.end <= rowSlice.start) {
    throw new ConfigError(`"${spec}": the row slice [${m[3]}:${m[4]}] is empty (end must be greater than start).`);
  }
  return { key: m[1], split: m[2], rowSlice };
}

export function hasDataset(spec: string): boolean {
  try {
    return builtin.has(parseDatasetKey(spec).key) || custom.has(parseDatasetKey(spec).key);
  } catch {
    return false;
  }
}

export function datasetEntry(spec: string): DatasetEntry {
  const { key, split, rowSlice } = parseDatasetKey(spec);
  const e = custom.get(key) ?? builtin.get(key);
  if (!e) {
    const near = closest(key, [...builtin.keys(), ...custom.keys()]);
    throw new ConfigError(
      `Unknown dataset "${key}".${near ? ` Did you mean "${near}"?` : ''} Built-in datasets: ${BUILTIN_DATASET_NAMES.join(', ')} (and <name>_eval); custom entries come from dataset_info.`,
    );
  }
  if (!split) return e;
  const splits = [...new Set(e.sources.flatMap((s) => Object.keys(s.splits)))];
  if (!splits.includes(split)) throw new ConfigError(`dataset "${key}" has no split "${split}". Its sources have: ${splits.join(', ')}.`);
  return { ...e, split, expand: split === e.split ? e.expand : undefined, ...(rowSlice ? { rowSlice } : {}) };
}

export function labelWords(entry: DatasetEntry): string[] | null {
  return entryLabelWords(entry);
}

/**
 * Custom entries from JSON text or a parsed object: `{ "key": entry, ... }`,
 * or a list of entries with their `key`. `origin` (a file name) prefixes
 * every error.
 */
export function parseDatasetInfo(json: string | unknown, origin: string): DatasetEntry[] {
  let v: unknown = json;
  if (typeof json === 'string') {
    try {
      v = JSON.parse(json);
    } catch (e) {
      throw new ConfigError(`${origin}: not valid JSON (${(e as Error).message}).`);
    }
  }
  const items: [string, unknown][] = Array.isArray(v)
    ? v.map((x, i) => {
        const k = x && typeof x === 'object' ? (x as { key?: unknown }).key : undefined;
        if (typeof k !== 'string') throw new ConfigError(`${origin}: item ${i} has no "key"; in a list every entry names its key.`);
        return [k, x];
      })
    : v !== null && typeof v === 'object'
      ? Object.entries(v as Record<string, unknown>)
      : [];
  if (!items.length) throw new ConfigError(`${origin}: expected a JSON object of dataset entries, {"my_data": {...}}, with at least one entry.`);
  const problems: string[] = [];
  const out: DatasetEntry[] = [];
  for (const [k, x] of items) {
    if (builtin.has(k)) {
      problems.push(`${origin}: "${k}" is a built-in dataset; give the custom entry another key.`);
      continue;
    }
    try {
      out.push(validateEntry(x, k, FORMATTER_NAMES, `${origin}: dataset`));
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems.push(e.message);
    }
  }
  if (problems.length) throw new ConfigError(problems.join('\n'));
  return out;
}

export function registerDatasets(entries: readonly DatasetEntry[]): void {
  for (const e of entries) {
    if (builtin.has(e.key)) throw new ConfigError(`"${e.key}" is a built-in dataset; give the custom entry another key.`);
    custom.set(e.key, validateEntry(e, e.key, FORMATTER_NAMES, 'dataset'));
  }
}

export function unregisterDataset(key: string): boolean {
  return custom.delete(key);
}

/** The entry as a source sees it: the source's formatter / columns replace the entry's. */
function forSource(entry: DatasetEntry, source?: SourceSpec): DatasetEntry {
  if (!source || (!source.formatter && !source.columns)) return entry;
  return { ...entry, formatter: source.formatter ?? entry.formatter, columns: source.columns ?? entry.columns };
}

export function renderExample(entry: DatasetEntry, row: TableRow, source?: SourceSpec, where = `dataset "${entry.key}"`): Rendered {
  const e = forSource(entry, source);
  return renderFormatted(e, formatRow(e, row, where));
}

export function renderRows(loaded: LoadedRows, opts: { training?: boolean } = {}): Rendered[] {
  const e = forSource(loaded.entry, loaded.source);
  const out: Rendered[] = [];
  loaded.rows.forEach((row, i) => {
    const f = formatRow(e, row, `${loaded.origin}, row ${i}`);
    if (opts.training) out.push(...expandFormatted(e, f));
    else out.push(renderFormatted(e, f));
  });
  return out;
}

/** A rendered example in the SFT form sft.ts / the trainer encode (prompt = the whole user turn). */
export function toSftExample(r: Rendered): SftExample {
  return r.system ? { prompt: r.user, response: r.response, system: r.system } : { prompt: r.user, response: r.response };
}
