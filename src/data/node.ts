/**
 * The CLI's data pipeline (Node only): config keys → rows from the Hub
 * (through the Hub file cache, like models) or local files → encoded
 * training, validation and prediction examples.
 *
 * Where a registry entry's files come from, per source (first found wins):
 *   hub source   <dataset_dir>/<org>/<repo>/<file> when dataset_dir holds it
 *                (a Hub-layout copy such as shared/hub/datasets), else
 *                {endpoint}/datasets/<repo>/resolve/<revision>/<file>, cached
 *                in <cache>/hub (PEFT_STUDIO_CACHE, default ~/.cache/peft-studio)
 *   file source  <dataset_dir>/<dir> when the source names a dir, else
 *                <dataset_dir>/<name>/raw for built-in entries and
 *                <dataset_dir> (or the dataset_info file's folder) for custom ones
 *
 * `dataset` and `eval_dataset` are comma-separated registry keys (`key[split]`
 * picks another split), or one Alpaca-format .jsonl file (LLaMA-Factory's
 * instruction / input / output rows).
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import type { ExperimentConfig } from '../config/schema';
import { ConfigError } from '../errors';
import { HubSource } from '../hub/hub-source';
import { defaultCacheDir, hubStallTimeoutMs, hubToken, LocalFolderSource, NodeFolderCache, readTextFile, TEXT_FILE_LIMITS } from '../hub/node';
import type { FileCache } from '../hub/cache';
import { isNotFound, type FileSource, type GetOptions, type ProgressCallback } from '../hub/source';
import type { Tokenizer } from '../model/tokenizer';
import { BUILTIN_ENTRIES } from './builtin';
import { baseName, type DatasetEntry, type SourceSpec } from './entry';
import type { TruncationReport } from './encode';
import { datasetKeys, registryPredictionSets, registryTrainingData, type DataConfig, type DataSources, type PredictionSet } from './pipeline';
import { datasetEntry, hasDataset, parseDatasetInfo, registerDatasets, unregisterDataset, type SourceResolver } from './registry';
import { alpacaToExample, buildSftDatasets, readAlpacaJsonl, type EncodedExample, type SftDatasets } from './sft';

/** A local copy first, the Hub second: `has` and `get` try `first`, then `second`. */
export class FallbackSource implements FileSource {
  readonly id: string;
  constructor(
    readonly first: FileSource,
    readonly second: FileSource,
  ) {
    this.id = `${first.id} (else ${second.id})`;
  }
  async has(p: string): Promise<boolean> {
    return (await this.first.has(p)) || this.second.has(p);
  }
  async get(p: string, onProgress?: ProgressCallback, opts?: GetOptions): Promise<Uint8Array> {
    try {
      return await this.first.get(p, onProgress, opts);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      return this.second.get(p, onProgress, opts);
    }
  }
}

export interface NodeDataOptions {
  /** Hub endpoint (config.endpoint); default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string | null;
  /** config.dataset_dir. */
  datasetDir?: string | null;
  /** Base folder of custom entries' files (the dataset_info file's folder). */
  customDir?: string | null;
  /** Cache root (Hub files go to <cacheDir>/hub); null turns caching off. */
  cacheDir?: string | null;
  cache?: FileCache;
  fetch?: typeof fetch;
  token?: string;
}

const isDir = (p: string): boolean => statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false;

/** The resolver loadDatasetRows uses in Node (see the file comment). */
export function nodeResolver(opts: NodeDataOptions = {}): SourceResolver {
  const cache = opts.cache ?? (opts.cacheDir === null ? undefined : new NodeFolderCache(path.join(opts.cacheDir ?? defaultCacheDir(), 'hub')));
  const endpoint = opts.endpoint || process.env.HF_ENDPOINT || undefined;
  const token = opts.token ?? hubToken(endpoint);
  return (spec: SourceSpec, entry: DatasetEntry): FileSource | null => {
    if (spec.type === 'hub') {
      const hub = new HubSource({
        endpoint,
        repo: spec.repo,
        revision: spec.revision,
        kind: 'dataset',
        cache,
        fetch: opts.fetch,
        token,
        stallTimeoutMs: hubStallTimeoutMs(),
      });
      const local = opts.datasetDir ? path.join(opts.datasetDir, ...spec.repo.split('/')) : null;
      return local && isDir(local) ? new FallbackSource(new LocalFolderSource(local), hub) : hub;
    }
    const custom = !isBuiltin(entry);
    const base = custom ? (opts.customDir ?? opts.datasetDir ?? process.cwd()) : opts.datasetDir;
    if (spec.dir && path.isAbsolute(spec.dir)) return new LocalFolderSource(spec.dir);
    if (!base) return null;
    const dir = spec.dir ? path.join(base, spec.dir) : custom ? base : path.join(base, baseName(entry), 'raw');
    return isDir(dir) ? new LocalFolderSource(dir) : null;
  };
}

function isBuiltin(entry: DatasetEntry): boolean {
  return BUILTIN_ENTRIES.some((e) => e.key === entry.key);
}

/** LLaMA-Factory / PEFT-Factory's own dataset_info.json (file_name, hf_hub_url, ... per entry), which is not ours. */
function looksLikeLlamaFactory(text: string): boolean {
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    const items = v && typeof v === 'object' && !Array.isArray(v) ? Object.values(v) : [];
    return (
      items.length > 0 &&
      items.every((x) => !!x && typeof x === 'object' && ['file_name', 'hf_hub_url', 'ms_hub_url', 'script_url', 'om_hub_url'].some((k) => k in (x as object)))
    );
  } catch {
    return false;
  }
}

/**
 * Registers the custom entries of config.dataset_info (or
 * <dataset_dir>/dataset_info.json when it exists); returns the folder their
 * relative file paths start from, and a function that unregisters them.
 */
export function registerConfiguredDatasets(config: Pick<ExperimentConfig, 'dataset_info' | 'dataset_dir'>): {
  customDir: string | null;
  keys: string[];
  unregister: () => void;
} {
  const none = { customDir: null, keys: [], unregister: () => {} };
  let file = config.dataset_info;
  let text: string;
  if (file) {
    if (!existsSync(file)) throw new ConfigError(`dataset_info: the file ${file} does not exist. Give the path of a JSON file of dataset entries.`);
    text = readTextFile(file, TEXT_FILE_LIMITS.datasetInfo, 'dataset_info');
    if (looksLikeLlamaFactory(text)) {
      throw new ConfigError(
        `dataset_info: ${file} is a LLaMA-Factory / PEFT-Factory dataset_info.json (file_name / hf_hub_url entries). PEFT Studio's entries name their sources and formatter (README, Datasets); PEFT-Factory's 27 datasets are built in under the same keys.`,
      );
    }
  } else {
    // LLaMA-Factory keeps its own dataset_info.json in dataset_dir: that one is not ours and is skipped.
    const guess = config.dataset_dir ? path.join(config.dataset_dir, 'dataset_info.json') : null;
    if (!guess || !existsSync(guess)) return none;
    text = readTextFile(guess, TEXT_FILE_LIMITS.datasetInfo, 'dataset_info');
    if (looksLikeLlamaFactory(text)) return none;
    file = guess;
  }
  const entries = parseDatasetInfo(text, file);
  registerDatasets(entries);
  const keys = entries.map((e) => e.key);
  return { customDir: config.dataset_dir ?? path.dirname(path.resolve(file)), keys, unregister: () => keys.forEach(unregisterDataset) };
}

function isAlpacaFile(spec: string): boolean {
  return /\.jsonl$/i.test(spec) && !hasDataset(spec);
}

/**
 * The registry entry of an Alpaca .jsonl file named in eval_dataset
 * (LLaMA-Factory's instruction / input / output [/ system] rows): a
 * generation set scored with ROUGE / BLEU, keyed by the file's name (the
 * predict_<key>/ folder), read from the file's own folder.
 */
export function alpacaFileEntry(file: string, key: string): DatasetEntry {
  return {
    key,
    name: key,
    task: 'generation',
    metric: 'generation',
    instruction: '',
    split: 'train',
    formatter: 'alpaca',
    sources: [{ type: 'file', dir: path.dirname(path.resolve(file)), format: 'jsonl', splits: { train: [path.basename(file)] } }],
    description: `Alpaca rows of ${file}`,
  };
}

/**
 * Registers the entries a run's data keys need besides the built-in ones:
 * dataset_info's custom entries, and one entry per Alpaca .jsonl file in
 * eval_dataset (its key replaces the path in the returned config). Every
 * key of dataset and eval_dataset is checked here, before a model is loaded
 * or a step trained: an unknown key or a missing file is a ConfigError that
 * names it.
 */
export function registerRunDatasets<C extends Pick<ExperimentConfig, 'dataset' | 'eval_dataset' | 'dataset_info' | 'dataset_dir'>>(
  config: C,
): { config: C; customDir: string | null; unregister: () => void } {
  const reg = registerConfiguredDatasets(config);
  const added: string[] = [];
  const unregister = () => {
    added.forEach(unregisterDataset);
    reg.unregister();
  };
  try {
    const evalKeys = datasetKeys(config.eval_dataset).map((spec) => {
      if (!/\.jsonl$/i.test(spec) || hasDataset(spec)) return spec;
      if (!existsSync(spec)) {
        throw new ConfigError(
          `eval_dataset '${spec}': the file does not exist. Give an Alpaca-format .jsonl file ({"instruction", "input", "output"} per line) or a registry key such as sst2_eval.`,
        );
      }
      let key =
        path
          .basename(spec)
          .replace(/[^\w.-]/g, '_')
          .replace(/^[^A-Za-z0-9]+/, '') || 'eval.jsonl';
      for (let i = 2; hasDataset(key); i++) key = `${path.basename(spec, path.extname(spec))}-${i}.jsonl`.replace(/[^\w.-]/g, '_');
      registerDatasets([alpacaFileEntry(spec, key)]);
      added.push(key);
      return key;
    });
    const trainKeys = isAlpacaFile(String(config.dataset ?? '')) ? [] : datasetKeys(config.dataset);
    // Unknown keys throw here, with the closest known key.
    for (const k of [...trainKeys, ...evalKeys]) datasetEntry(k);
    const eval_dataset = evalKeys.length ? evalKeys.join(',') : config.eval_dataset;
    return { config: { ...config, eval_dataset }, customDir: reg.customDir, unregister };
  } catch (err) {
    unregister();
    throw err;
  }
}

/** registerRunDatasets for a check only: every data key of a config resolves (or a ConfigError says which does not). */
export function checkDataKeys(config: Pick<ExperimentConfig, 'dataset' | 'eval_dataset' | 'dataset_info' | 'dataset_dir'>): void {
  registerRunDatasets(config).unregister();
}

export { datasetKeys, type DataConfig, type PredictionSet, type RenderedSet } from './pipeline';

export interface ExperimentData extends SftDatasets {
  train: EncodedExample[];
  val: EncodedExample[];
  /** Totals over the training datasets (and eval_dataset when it gives val). */
  report: TruncationReport | null;
  /** Summary lines for the log. */
  lines: string[];
}

/**
 * The training and validation examples of a config: `dataset` (registry keys
 * or one Alpaca .jsonl) encoded, max_samples per dataset, then val_size
 * split off with the seed, or, when eval_dataset is set, eval_dataset
 * encoded as the validation set (LLaMA-Factory). The rules are
 * src/data/pipeline.ts's, shared with the studio; this adds the Node sources.
 */
export async function loadExperimentData(
  tok: Tokenizer,
  config: DataConfig,
  padId: number,
  opts: NodeDataOptions & { log?: (s: string) => void } = {},
): Promise<ExperimentData> {
  const spec = String(config.dataset ?? '').trim();
  if (!spec) throw new ConfigError('dataset: give a registry key (e.g. sst2, or sst2,cola) or an Alpaca-format .jsonl file.');
  const lines: string[] = [];
  if (isAlpacaFile(spec)) {
    if (!existsSync(spec))
      throw new ConfigError(
        `dataset '${spec}': the file does not exist. Give an Alpaca-format .jsonl file ({"instruction", "input", "output"} per line) or a registry key such as sst2.`,
      );
    const rows = readAlpacaJsonl(readTextFile(spec, TEXT_FILE_LIMITS.dataset, 'dataset'), spec).map(alpacaToExample);
    const d = buildSftDatasets(tok, rows, config, padId);
    lines.push(
      `data: ${d.train.length} train, ${d.val.length} val examples${d.truncated ? `, ${d.truncated} truncated to cutoff_len ${config.cutoff_len}` : ''}${d.dropped ? `, ${d.dropped} dropped by packing` : ''}`,
    );
    return { ...d, report: null, lines };
  }
  if (/\.(json|csv|tsv|parquet|txt)$/i.test(spec) && !hasDataset(spec)) {
    throw new ConfigError(
      `dataset '${spec}': a data file other than an Alpaca .jsonl needs a registry entry that says which columns are the prompt and the response. Write one in a dataset_info JSON file (README, Datasets) and give its key as dataset.`,
    );
  }
  const reg = registerRunDatasets(config);
  try {
    const d = await registryTrainingData(tok, reg.config, padId, nodeSources(reg.config, opts, reg.customDir, lines));
    return { ...d, lines };
  } finally {
    reg.unregister();
  }
}

/**
 * Prompts for do_predict: eval_dataset's keys, or, when it is unset, the
 * `_eval` entry of each `dataset` key (sst2 → sst2_eval). max_samples and
 * shuffle_samples apply per dataset.
 */
export async function loadPredictionData(
  tok: Tokenizer,
  config: DataConfig,
  opts: NodeDataOptions & { log?: (s: string) => void } = {},
): Promise<{ sets: PredictionSet[]; lines: string[] }> {
  const lines: string[] = [];
  const reg = registerRunDatasets(config);
  try {
    const trainKeys = isAlpacaFile(String(config.dataset ?? '')) ? [] : datasetKeys(config.dataset);
    const sets = await registryPredictionSets(tok, reg.config, trainKeys, nodeSources(reg.config, opts, reg.customDir, lines));
    return { sets, lines };
  } finally {
    reg.unregister();
  }
}

/** The Node sources of a config: dataset_dir first, then the Hub (config.endpoint) through the file cache. */
function nodeSources(config: DataConfig, opts: NodeDataOptions, customDir: string | null, lines: string[]): DataSources {
  const resolver = nodeResolver({
    ...opts,
    endpoint: opts.endpoint ?? config.endpoint,
    datasetDir: opts.datasetDir ?? config.dataset_dir,
    customDir: opts.customDir ?? customDir,
  });
  return { resolver, log: (s) => lines.push(s) };
}
