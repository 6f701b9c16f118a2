/**
 * The shape of a dataset registry entry, shared by the built-in registry
 * (builtin.ts) and custom entries a user writes as JSON, and its validation.
 *
 * An entry is plain JSON, so a custom entry file is a JSON object of
 * `key → entry` with exactly this shape (the `key` field may be left out):
 *
 *   {
 *     "my_sentiment": {
 *       "task": "classification", "metric": "classification",
 *       "instruction": "Classify the review as negative or positive. Respond only with the class.",
 *       "split": "train",
 *       "formatter": "columns",
 *       "columns": {"prompt": "text", "response": "label"},
 *       "labelNames": ["neg", "pos"], "labelWords": ["negative", "positive"],
 *       "sources": [{"type": "file", "splits": {"train": ["reviews.csv"], "test": ["reviews_test.csv"]}}]
 *     }
 *   }
 */
import { ConfigError } from '../errors';
import { closest } from '../config/schema';
import { FILE_FORMATS, ADAPTERS, type TableOptions } from './raw';

/** What the model is trained to produce. */
export type TaskKind = 'classification' | 'regression' | 'math' | 'generation' | 'code';

/**
 * Which metrics apply (METRICS.md):
 *   classification  accuracy, macro-F1, binary F1 (second label word positive), invalid count
 *   regression      Pearson / Spearman of the generated number (STS-B)
 *   gsm8k           the number after "####", predicted vs gold
 *   svamp           the predicted equation's value vs the gold answer
 *   exact_match     normalised prediction equals any gold answer (ReCoRD; `answers`)
 *   generation      ROUGE-1/2/L and BLEU-4 against the response (code tasks too)
 */
export type MetricFamily = 'classification' | 'regression' | 'gsm8k' | 'svamp' | 'exact_match' | 'generation';

export const TASK_KINDS: readonly TaskKind[] = ['classification', 'regression', 'math', 'generation', 'code'];
export const METRIC_FAMILIES: readonly MetricFamily[] = ['classification', 'regression', 'gsm8k', 'svamp', 'exact_match', 'generation'];

/** Row columns for the `columns` formatter (LLaMA-Factory's `columns`). */
export interface ColumnMap {
  prompt: string;
  query?: string;
  response: string;
  system?: string;
}

interface SourceBase extends TableOptions {
  /** split name → files; several files of one split are concatenated in order. */
  splits: Record<string, string[]>;
  /** Overrides the entry's formatter for rows of this source (e.g. kinit/peft-factory's inputs/targets). */
  formatter?: string;
  columns?: ColumnMap;
  /** A short note shown in listings (e.g. "unverified file layout"). */
  note?: string;
}

/** Files of a Hub dataset repo: `{endpoint}/datasets/{repo}/resolve/{revision}/{file}`. */
export interface HubSourceSpec extends SourceBase {
  type: 'hub';
  repo: string;
  /** Default "main"; script-based repos keep their parquet on "refs/convert/parquet". */
  revision?: string;
  /** The `datasets` config (subset) the files belong to; informational. */
  config?: string;
}

/**
 * Local files in their original layout. Paths are relative to a data folder
 * (the CLI uses `dataset_dir`/`dir`, default `<dataset_dir>/<name>/raw`), or
 * absolute.
 */
export interface FileSourceSpec extends SourceBase {
  type: 'file';
  /** Folder of the files, relative to dataset_dir (default "<name>/raw") or absolute. */
  dir?: string;
}

export type SourceSpec = HubSourceSpec | FileSourceSpec;

export interface DatasetEntry {
  /** Registry key: "sst2", "sst2_eval", "my_data". */
  key: string;
  /** The dataset's base name ("sst2" for sst2_eval): folder of its raw files, MTP task grouping. Default: key without _eval/_test. */
  name?: string;
  task: TaskKind;
  metric: MetricFamily;
  /** The first line of the user turn (DATASETS.md, exact strings). '' for none. */
  instruction: string;
  /** Which split of the sources this entry reads. */
  split: string;
  /** A formatter of formatters.ts ('columns' maps prompt/query/response columns). */
  formatter: string;
  columns?: ColumnMap;
  /** The column holding the class (classification); default columns.response, or "label". */
  labelColumn?: string;
  /** Class names in id order, for ids without ClassLabel metadata and for checking string labels. */
  labelNames?: string[];
  /** What the model emits for each class, aligned with labelNames. Default: labelNames. */
  labelWords?: string[];
  /** Training: one example per gold answer (ReCoRD, APPS), as PEFT-Factory's preprocessing does. */
  expand?: boolean;
  /** In order of preference; the first whose files are found is used. */
  sources: SourceSpec[];
  /** Rows [start, end) of the split only (from a key like svamp_eval[test[:700]]; not part of custom JSON). */
  rowSlice?: { start?: number; end?: number };
  description?: string;
}

const ENTRY_FIELDS = [
  'key',
  'name',
  'task',
  'metric',
  'instruction',
  'split',
  'formatter',
  'columns',
  'labelColumn',
  'labelNames',
  'labelWords',
  'expand',
  'sources',
  'description',
];
const SOURCE_FIELDS = [
  'type',
  'splits',
  'formatter',
  'columns',
  'note',
  'repo',
  'revision',
  'config',
  'dir',
  'format',
  'header',
  'quote',
  'adapter',
  'rename',
  'map',
  'numeric',
];
const COLUMN_FIELDS = ['prompt', 'query', 'response', 'system'];

/** The base name of a key: "sst2_eval" → "sst2". */
export function baseName(entry: Pick<DatasetEntry, 'key' | 'name'>): string {
  return entry.name ?? entry.key.replace(/_(eval|test)$/, '');
}

/** The label words of a classification entry (labelWords, else labelNames), else null. */
export function entryLabelWords(entry: DatasetEntry): string[] | null {
  if (entry.task !== 'classification') return null;
  return entry.labelWords ?? entry.labelNames ?? null;
}

type Problems = string[];

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function unknownFields(obj: Record<string, unknown>, known: string[], where: string, p: Problems): void {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) {
      const near = closest(k, known);
      p.push(`${where}: unknown field "${k}"${near ? ` — did you mean "${near}"?` : `; known fields: ${known.join(', ')}`}.`);
    }
  }
}

function stringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

function checkColumns(v: unknown, where: string, p: Problems): void {
  if (!isObj(v)) {
    p.push(`${where}: "columns" must be an object like {"prompt": "sentence", "response": "label"}.`);
    return;
  }
  unknownFields(v, COLUMN_FIELDS, `${where}.columns`, p);
  for (const k of ['prompt', 'response'])
    if (typeof v[k] !== 'string' || v[k] === '') p.push(`${where}.columns: "${k}" must name a column (a non-empty string).`);
  for (const k of ['query', 'system']) if (v[k] !== undefined && typeof v[k] !== 'string') p.push(`${where}.columns: "${k}" must be a column name (a string).`);
}

function checkSource(s: unknown, where: string, p: Problems, formatters: readonly string[]): void {
  if (!isObj(s)) {
    p.push(`${where}: a source must be an object with "type" ("hub" or "file") and "splits".`);
    return;
  }
  unknownFields(s, SOURCE_FIELDS, where, p);
  if (s.type !== 'hub' && s.type !== 'file')
    p.push(`${where}: "type" must be "hub" (a Hub dataset repo) or "file" (local files), got ${JSON.stringify(s.type)}.`);
  if (s.type === 'hub' && (typeof s.repo !== 'string' || !/^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/.test(s.repo))) {
    p.push(`${where}: "repo" must be a Hub dataset repo id such as "nyu-mll/glue", got ${JSON.stringify(s.repo)}.`);
  }
  if (s.type === 'file' && s.repo !== undefined) p.push(`${where}: "repo" belongs to hub sources; a file source names only its files.`);
  for (const k of ['revision', 'config', 'dir', 'note']) if (s[k] !== undefined && typeof s[k] !== 'string') p.push(`${where}: "${k}" must be a string.`);
  if (!isObj(s.splits) || Object.keys(s.splits).length === 0) {
    p.push(`${where}: "splits" must map each split to its files, e.g. {"train": ["train.jsonl"], "validation": ["dev.jsonl"]}.`);
  } else {
    for (const [split, files] of Object.entries(s.splits)) {
      if (!stringList(files) || files.length === 0 || files.some((f) => f === '')) p.push(`${where}.splits.${split}: must be a non-empty list of file paths.`);
    }
  }
  if (s.format !== undefined && !FILE_FORMATS.includes(s.format as never))
    p.push(`${where}: "format" must be one of ${FILE_FORMATS.join(', ')}, got ${JSON.stringify(s.format)}.`);
  if (s.header !== undefined && typeof s.header !== 'boolean' && !stringList(s.header))
    p.push(`${where}: "header" must be true, false or a list of column names.`);
  if (s.quote !== undefined && s.quote !== null && (typeof s.quote !== 'string' || s.quote.length !== 1))
    p.push(`${where}: "quote" must be one character or null (no quoting).`);
  if (s.adapter !== undefined && !(typeof s.adapter === 'string' && s.adapter in ADAPTERS))
    p.push(`${where}: "adapter" must be one of ${Object.keys(ADAPTERS).join(', ')}, got ${JSON.stringify(s.adapter)}.`);
  if (s.rename !== undefined && !(isObj(s.rename) && Object.values(s.rename).every((x) => typeof x === 'string')))
    p.push(`${where}: "rename" must map source column names to column names (strings).`);
  if (s.map !== undefined && !(isObj(s.map) && Object.values(s.map).every(isObj)))
    p.push(`${where}: "map" must map a column to {value: replacement}, e.g. {"label": {"0": "negative", "1": "positive"}}.`);
  if (s.numeric !== undefined && !stringList(s.numeric)) p.push(`${where}: "numeric" must be a list of column names.`);
  if (s.formatter !== undefined && !formatters.includes(s.formatter as string))
    p.push(`${where}: unknown formatter ${JSON.stringify(s.formatter)}; known: ${formatters.join(', ')}.`);
  if (s.columns !== undefined) checkColumns(s.columns, where, p);
}

/**
 * Checks one entry (built-in or custom) and returns it typed, with `key`
 * filled in. Every problem is collected into one ConfigError that names the
 * entry, the field and the fix.
 */
export function validateEntry(raw: unknown, key: string, formatters: readonly string[], origin = 'dataset entry'): DatasetEntry {
  const where = `${origin} "${key}"`;
  if (!isObj(raw)) throw new ConfigError(`${where}: must be a JSON object with task, metric, instruction, split, formatter and sources.`);
  const p: Problems = [];
  unknownFields(raw, ENTRY_FIELDS, where, p);
  if (raw.key !== undefined && raw.key !== key)
    p.push(`${where}: "key" is ${JSON.stringify(raw.key)} but the entry is stored under "${key}"; remove "key" or make them equal.`);
  if (!/^[A-Za-z0-9][\w.-]*$/.test(key)) p.push(`${where}: a key is letters, digits, "_", "-" and "." (no spaces, commas or brackets).`);
  if (!TASK_KINDS.includes(raw.task as TaskKind)) p.push(`${where}: "task" must be one of ${TASK_KINDS.join(', ')}, got ${JSON.stringify(raw.task)}.`);
  if (!METRIC_FAMILIES.includes(raw.metric as MetricFamily))
    p.push(`${where}: "metric" must be one of ${METRIC_FAMILIES.join(', ')}, got ${JSON.stringify(raw.metric)}.`);
  if (typeof raw.instruction !== 'string') p.push(`${where}: "instruction" must be a string (use "" for none).`);
  if (typeof raw.split !== 'string' || raw.split === '') p.push(`${where}: "split" must name a split of the sources, e.g. "train".`);
  if (typeof raw.formatter !== 'string' || !formatters.includes(raw.formatter)) {
    p.push(
      `${where}: "formatter" must be one of ${formatters.join(', ')}, got ${JSON.stringify(raw.formatter)}. Use "columns" with a "columns" mapping for your own data.`,
    );
  }
  if (raw.formatter === 'columns' && raw.columns === undefined) p.push(`${where}: the "columns" formatter needs "columns": {"prompt": ..., "response": ...}.`);
  if (raw.columns !== undefined) checkColumns(raw.columns, where, p);
  for (const k of ['name', 'labelColumn', 'description']) if (raw[k] !== undefined && typeof raw[k] !== 'string') p.push(`${where}: "${k}" must be a string.`);
  if (raw.expand !== undefined && typeof raw.expand !== 'boolean') p.push(`${where}: "expand" must be true or false.`);
  for (const k of ['labelNames', 'labelWords']) {
    const v = raw[k];
    if (v === undefined) continue;
    if (!stringList(v) || v.length < 2 || v.some((x) => x.trim() === '')) p.push(`${where}: "${k}" must be a list of at least two non-empty strings.`);
    else if (new Set(v).size !== v.length) p.push(`${where}: "${k}" has duplicates (${v.join(', ')}); each class needs its own word.`);
  }
  if (stringList(raw.labelNames) && stringList(raw.labelWords) && raw.labelNames.length !== raw.labelWords.length) {
    p.push(`${where}: "labelWords" has ${raw.labelWords.length} words but "labelNames" has ${raw.labelNames.length} classes; give one word per class.`);
  }
  if (raw.task === 'classification' && raw.labelNames === undefined && raw.labelWords === undefined) {
    p.push(`${where}: a classification entry needs "labelNames" (the classes, in id order) or "labelWords".`);
  }
  if (raw.task === 'classification' && raw.metric !== undefined && raw.metric !== 'classification' && raw.metric !== 'exact_match') {
    p.push(`${where}: a classification entry is scored with metric "classification", not ${JSON.stringify(raw.metric)}.`);
  }
  if (!Array.isArray(raw.sources) || raw.sources.length === 0) {
    p.push(`${where}: "sources" must be a non-empty list, e.g. [{"type": "file", "splits": {"train": ["train.jsonl"]}}].`);
  } else {
    raw.sources.forEach((s, i) => checkSource(s, `${where}.sources[${i}]`, p, formatters));
    if (typeof raw.split === 'string' && raw.sources.every((s) => isObj(s) && isObj(s.splits) && !Object.hasOwn(s.splits as object, raw.split as string))) {
      p.push(`${where}: no source has the split "${raw.split}"; add it to a source's "splits" or choose another split.`);
    }
  }
  if (p.length) throw new ConfigError(p.length === 1 ? p[0] : `${p.length} problems in ${where}:\n${p.map((x) => `  - ${x}`).join('\n')}`);
  return { ...(raw as unknown as DatasetEntry), key };
}
