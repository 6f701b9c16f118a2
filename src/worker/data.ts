/**
 * A config's data in the worker: registry keys go through the same
 * functions as the CLI's (src/data/pipeline.ts, which src/data/node.ts uses
 * too), so a config gives the same encoded examples, hence the same losses,
 * in both hosts. What differs is only where files come from:
 *
 *   registry keys   the Hub (config.endpoint) through the browser's file
 *                   cache (hubResolver), like models
 *   an Alpaca file  a .jsonl the user picked, handed over by name
 *
 * A browser cannot read dataset_dir or dataset_info (local paths): those are
 * refused with a sentence saying what to do instead.
 */
import type { ExperimentConfig } from '../config/schema';
import { encodeForPrediction, encodeTrainingSet } from '../data/encode';
import {
  datasetKeys,
  registryPredictionSets,
  registryTrainingData,
  renderedSet,
  type DataSources,
  type PredictionSet,
  type RenderedSet,
} from '../data/pipeline';
import type { DatasetEntry } from '../data/entry';
import type { Rendered } from '../data/formatters';
import { hasDataset, hubResolver, listDatasets, parseDatasetInfo } from '../data/registry';
import { decodeClassLabels, readParquet } from '../data/parquet';
import { formatOf } from '../data/raw';
import { decodeText, parseDelimited, parseJsonArray, parseJsonl } from '../data/tabular';
import { alpacaToExample, buildSftDatasets, readAlpacaJsonl, splitTrainVal, takeMaxSamples, type SftDatasets, type SftExample } from '../data/sft';
import { ConfigError, HubError } from '../errors';
import type { FileCache } from '../hub/cache';
import type { FileSource, ProgressCallback } from '../hub/source';
import type { Tokenizer } from '../model/tokenizer';
import { isLocalDataFile } from '../run/share-link';

/** User data files by name (what `dataset:` in the config names). */
export type DataFiles = Map<string, Uint8Array>;

export interface DataHost {
  files: DataFiles;
  cache?: FileCache;
  onProgress?: ProgressCallback;
  /** Keys of entries made from picked files (their dataset_info is the studio's own). */
  userKeys?: ReadonlySet<string>;
}

export interface ExperimentData extends SftDatasets {
  /** Summary lines, as the CLI logs them. */
  lines: string[];
}

/** The config's dataset is a picked Alpaca file (not a registry key). */
export function isUserFile(config: ExperimentConfig, files: DataFiles): boolean {
  const spec = String(config.dataset ?? '').trim();
  return files.has(spec) && !hasDataset(spec);
}

function checkBrowserKeys(config: ExperimentConfig, host: DataHost): void {
  const keys = [...datasetKeys(config.dataset), ...datasetKeys(config.eval_dataset)].map((k) => k.replace(/\[.*\]$/, ''));
  // dataset_info naming the studio's own entries (a picked file and its mapping) is what the export writes.
  if (config.dataset_info === USER_DATASET_INFO && keys.some((k) => host.userKeys?.has(k))) return;
  if (config.dataset_dir)
    throw new ConfigError(
      `dataset_dir '${config.dataset_dir}' is a folder on a computer; the studio reads registry datasets from the Hub. Unset dataset_dir, or run this config with peft-studio train.`,
    );
  if (config.dataset_info)
    throw new ConfigError(
      `dataset_info '${config.dataset_info}' is a local file; custom registry entries run with peft-studio train. In the studio, pick a .jsonl file in Data.`,
    );
}

/** Examples of a picked Alpaca .jsonl file. */
export function userExamples(name: string, files: DataFiles): SftExample[] {
  const bytes = files.get(name);
  if (!bytes) {
    throw new ConfigError(
      isLocalDataFile(name)
        ? `dataset '${name}' is a file on the computer where this experiment was set up; a link cannot carry it. Pick the file in Data.`
        : `dataset '${name}' is neither a built-in dataset nor a file picked in Data.`,
    );
  }
  if (!/\.jsonl$/i.test(name)) {
    throw new ConfigError(
      `${name}: a data file must be Alpaca JSON Lines (.jsonl, {"instruction", "input", "output"} per line); for other formats write a registry entry and use peft-studio train.`,
    );
  }
  return readAlpacaJsonl(new TextDecoder().decode(bytes), name).map(alpacaToExample);
}

/** The browser's sources: the Hub through the file cache, picked files by name. */
function browserSources(config: ExperimentConfig, host: DataHost, lines: string[]): DataSources {
  return {
    resolver: hubResolver({ endpoint: String(config.endpoint), cache: host.cache, files: filesSource(host.files) }),
    onProgress: host.onProgress,
    log: (s) => lines.push(s),
  };
}

/** Training and validation examples of a config (loadExperimentData's rules). */
export async function loadExperimentData(tok: Tokenizer, config: ExperimentConfig, padId: number, host: DataHost): Promise<ExperimentData> {
  const spec = String(config.dataset ?? '').trim();
  if (!spec) throw new ConfigError('dataset is not set: pick a built-in dataset or a .jsonl file in Data.');
  const lines: string[] = [];
  if (isUserFile(config, host.files) || (!hasDataset(spec) && isLocalDataFile(spec))) {
    const d = buildSftDatasets(tok, userExamples(spec, host.files), config, padId);
    lines.push(
      `data: ${d.train.length} train, ${d.val.length} val examples${d.truncated ? `, ${d.truncated} truncated to cutoff_len ${config.cutoff_len}` : ''}${d.dropped ? `, ${d.dropped} dropped by packing` : ''}`,
    );
    return { ...d, lines };
  }
  checkBrowserKeys(config, host);
  const d = await registryTrainingData(tok, config, padId, browserSources(config, host, lines));
  return { train: d.train, val: d.val, truncated: d.truncated, dropped: d.dropped, lines };
}

export type { PredictionSet };

/**
 * Prompts to predict: eval_dataset's keys, else each dataset key's `_eval`
 * entry (loadPredictionData's rules). A picked Alpaca file has no `_eval`
 * entry: its val_size split is predicted instead, scored as generation
 * (ROUGE, BLEU) against the reference answers.
 */
export async function loadPredictionData(tok: Tokenizer, config: ExperimentConfig, host: DataHost): Promise<{ sets: PredictionSet[]; lines: string[] }> {
  const lines: string[] = [];
  if (isUserFile(config, host.files) && !config.eval_dataset) return { sets: [userPredictionSet(tok, config, host.files)], lines };
  const own = datasetKeys(config.dataset).filter((k) => host.userKeys?.has(k));
  if (own.length && !config.eval_dataset) return { sets: [await mappedPredictionSet(tok, config, host, own, lines)], lines };
  checkBrowserKeys(config, host);
  const trainKeys = isUserFile(config, host.files) ? [] : datasetKeys(config.dataset);
  const sets = await registryPredictionSets(tok, config, trainKeys, browserSources(config, host, lines));
  return { sets, lines };
}

/** The validation split of a picked file (the same max_samples and val_size split as training), as a generation task. */
function userPredictionSet(tok: Tokenizer, config: ExperimentConfig, files: DataFiles): PredictionSet {
  const name = String(config.dataset);
  if (config.packing)
    throw new ConfigError(
      'With packing the validation split is over packed blocks, which have no single prompt: set packing: false, or eval_dataset, to evaluate.',
    );
  const items = takeMaxSamples(userExamples(name, files), config.max_samples);
  const { val } = splitTrainVal(items.length, config.val_size, config.seed);
  if (!val.length) throw new ConfigError('This run has no validation split: set val_size (e.g. 4 or 0.1) in Data, or eval_dataset.');
  const entry: DatasetEntry = { key: name, task: 'generation', metric: 'generation', instruction: '', split: 'validation', formatter: 'columns', sources: [] };
  const rendered: Rendered[] = val.map((i) => {
    const ex = items[i];
    return { instruction: '', prompt: ex.prompt, query: '', user: ex.prompt, response: ex.response, label: ex.response, system: ex.system };
  });
  return {
    entry,
    examples: encodeForPrediction(tok, entry, rendered, { cutoffLen: config.cutoff_len, template: config.template, addBos: config.template_bos !== false })
      .examples,
    origin: name,
  };
}

/**
 * The validation split of picked files with a column mapping: the rendered
 * examples split with the seed as training splits its encoded ones (the same
 * indices as long as encoding dropped none, which is checked).
 */
async function mappedPredictionSet(tok: Tokenizer, config: ExperimentConfig, host: DataHost, keys: string[], lines: string[]): Promise<PredictionSet> {
  if (config.packing)
    throw new ConfigError(
      'With packing the validation split is over packed blocks, which have no single prompt: set packing: false, or eval_dataset, to evaluate.',
    );
  const parts: RenderedSet[] = [];
  for (const k of keys) parts.push(await renderedSet(k, config, browserSources(config, host, lines), true, 0));
  const set = encodeTrainingSet(tok, parts, {
    cutoffLen: config.cutoff_len,
    template: config.template,
    addBos: config.template_bos !== false,
    trainOnPrompt: config.train_on_prompt,
    seed: config.seed,
    padId: 0,
    valSize: config.val_size,
  });
  if (set.report.dropped)
    throw new ConfigError(
      `Encoding dropped ${set.report.dropped} examples, so the validation split cannot be mapped back to rows: set eval_dataset to evaluate.`,
    );
  const all = parts.flatMap((p) => p.rendered);
  const { val } = splitTrainVal(all.length, config.val_size, config.seed);
  if (!val.length) throw new ConfigError('This run has no validation split: set val_size (e.g. 4 or 0.1) in Data, or eval_dataset.');
  const entry = parts[0].entry;
  return {
    entry,
    examples: encodeForPrediction(
      tok,
      entry,
      val.map((i) => all[i]),
      { cutoffLen: config.cutoff_len, template: config.template, addBos: config.template_bos !== false },
    ).examples,
    origin: parts[0].origin,
  };
}

/** Built-in datasets for the Data screen's list (training entries; `_eval` / `_test` ones are found by key). */
export function datasetCatalogue(): { key: string; task: string; description?: string }[] {
  return listDatasets()
    .filter((e) => !/_(eval|test)$/.test(e.key))
    .map((e) => ({ key: e.key, task: e.task, description: e.description }));
}

/** Rendered training examples of the config's dataset, for the Data screen's preview. */
export async function previewExamples(config: ExperimentConfig, host: DataHost): Promise<SftExample[]> {
  if (isUserFile(config, host.files) || isLocalDataFile(String(config.dataset ?? ''))) {
    return takeMaxSamples(userExamples(String(config.dataset), host.files), config.max_samples);
  }
  checkBrowserKeys(config, host);
  const out: SftExample[] = [];
  for (const k of datasetKeys(config.dataset)) {
    for (const r of (await renderedSet(k, config, browserSources(config, host, []), true, 0)).rendered)
      out.push({ prompt: r.user, response: r.response, system: r.system });
  }
  return out;
}

// ---------------------------------------------------------------------------
// A user's file in any table format, with a column mapping: it becomes a
// custom registry entry (the `columns` formatter), written as dataset_info.json
// beside the file so the exported config runs with `peft-studio train`.

/** The file name of the custom entries the studio writes next to a run's data file. */
export const USER_DATASET_INFO = 'dataset_info.json';

export interface ColumnMapping {
  prompt: string;
  query?: string;
  response: string;
  /** The first line of every user turn (DATASETS.md's instruction). */
  instruction?: string;
}

/** Rows of a picked file, whatever its format (the registry's readers). */
export async function readUserTable(name: string, files: DataFiles, maxRows?: number): Promise<Record<string, unknown>[]> {
  const bytes = files.get(name);
  if (!bytes) throw new ConfigError(`The file ${name} is not loaded here: pick it in Data.`);
  const format = formatOf(name, {});
  switch (format) {
    case 'parquet': {
      const t = await readParquet(bytes, name, { maxRows });
      return decodeClassLabels(t.rows, t.features, name);
    }
    case 'jsonl':
      return parseJsonl(decodeText(bytes), name);
    case 'json':
      return parseJsonArray(decodeText(bytes), name);
    case 'csv':
    case 'tsv':
      return parseDelimited(decodeText(bytes), { delimiter: format === 'csv' ? ',' : '\t', quote: format === 'csv' ? '"' : null, header: true }, name);
    default:
      throw new ConfigError(`${name}: use a .parquet, .jsonl, .json, .csv or .tsv file.`);
  }
}

/** A registry key for a file: "my data.csv" → "my_data". */
export function userDatasetKey(name: string): string {
  const base =
    name
      .replace(/\.[^.]+$/, '')
      .toLowerCase()
      .replace(/[^a-z0-9_]+/g, '_')
      .replace(/^_+|_+$/g, '') || 'data';
  return /^[a-z]/.test(base) ? base : `data_${base}`;
}

/** The custom entry for a picked file and its mapping (validated as any dataset_info entry). */
export function userEntry(name: string, mapping: ColumnMapping): DatasetEntry {
  const key = userDatasetKey(name);
  const columns = { prompt: mapping.prompt, response: mapping.response, ...(mapping.query ? { query: mapping.query } : {}) };
  const raw = {
    [key]: {
      task: 'generation',
      metric: 'generation',
      instruction: mapping.instruction ?? '',
      split: 'train',
      formatter: 'columns',
      columns,
      sources: [{ type: 'file', splits: { train: [name] } }],
      description: `${name}, picked in the studio`,
    },
  };
  return parseDatasetInfo(raw, USER_DATASET_INFO)[0];
}

/** dataset_info.json text for entries (the shape parseDatasetInfo reads back). */
export function datasetInfoJson(entries: DatasetEntry[]): string {
  return JSON.stringify(Object.fromEntries(entries.map(({ key, ...rest }) => [key, rest])), null, 2) + '\n';
}

/** Picked files as the FileSource file-type registry sources read from. */
export function filesSource(files: DataFiles): FileSource {
  return {
    id: 'picked files',
    async get(path) {
      const f = files.get(path);
      if (!f) throw new HubError(`${path} was not picked in Data.`, `picked:${path}`, 404);
      return f;
    },
    async has(path) {
      return files.has(path);
    },
  };
}
