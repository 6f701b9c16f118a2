/**
 * The data pipeline's rules, host-agnostic: registry keys → rendered rows →
 * encoded training / validation sets and prediction prompts. The CLI
 * (src/data/node.ts: local folders, the Node Hub cache) and the studio's worker
 * (src/worker/data.ts: the Hub through the browser cache, picked files) differ
 * only in the SourceResolver they pass, so a config gives the same encoded
 * examples, hence the same losses, in both hosts.
 */
import type { ExperimentConfig } from '../config/schema';
import { ConfigError } from '../errors';
import type { ProgressCallback } from '../hub/source';
import type { Tokenizer } from '../model/tokenizer';
import type { DatasetEntry } from './entry';
import { describeReport, encodeForPrediction, encodeTrainingSet, sampleExamples, taskIdLookup, type PredictExample, type TruncationReport } from './encode';
import type { Rendered } from './formatters';
import { datasetEntry, hasDataset, loadDatasetRows, renderRows, type SourceResolver } from './registry';
import type { EncodedExample } from './sft';

export type DataConfig = Pick<
  ExperimentConfig,
  | 'dataset'
  | 'eval_dataset'
  | 'max_predict_samples'
  | 'dataset_dir'
  | 'dataset_info'
  | 'dataset_task_ids'
  | 'shuffle_samples'
  | 'cutoff_len'
  | 'template'
  | 'template_bos'
  | 'train_on_prompt'
  | 'packing'
  | 'max_samples'
  | 'val_size'
  | 'seed'
  | 'endpoint'
>;

/** Where rows come from, and where the summary lines go. */
export interface DataSources {
  resolver: SourceResolver;
  onProgress?: ProgressCallback;
  log: (line: string) => void;
}

export interface RenderedSet {
  entry: DatasetEntry;
  rendered: Rendered[];
  origin: string;
  taskId: number;
}

/** Comma-separated keys of a config value. */
export function datasetKeys(value: string | null | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Loads and renders one key (max_samples and shuffle_samples applied). */
export async function renderedSet(key: string, config: DataConfig, src: DataSources, training: boolean, taskId: number): Promise<RenderedSet> {
  const entry = datasetEntry(key);
  const shuffle = config.shuffle_samples && config.max_samples !== null;
  // Without shuffling only the first max_samples rows are needed (expansion only adds examples).
  const loaded = await loadDatasetRows(entry, src.resolver, {
    maxRows: shuffle || config.max_samples === null ? undefined : config.max_samples,
    onProgress: src.onProgress,
  });
  const all = renderRows(loaded, { training });
  const rendered = sampleExamples(all, config.max_samples, shuffle ? config.seed : null);
  src.log(
    `data: ${key} (${loaded.split}) from ${loaded.origin}: ${rendered.length} examples${rendered.length < all.length ? ` of ${all.length}` : ''}${taskId ? `, task id ${taskId}` : ''}`,
  );
  return { entry, rendered, origin: loaded.origin, taskId };
}

export interface RegistryData {
  train: EncodedExample[];
  val: EncodedExample[];
  truncated: number;
  dropped: number;
  report: TruncationReport;
}

/**
 * Training and validation examples of registry keys: `dataset` encoded with
 * max_samples per dataset, then val_size split off with the seed, or, when
 * eval_dataset is set, eval_dataset encoded as the validation set
 * (LLaMA-Factory).
 */
export async function registryTrainingData(tok: Tokenizer, config: DataConfig, padId: number, src: DataSources): Promise<RegistryData> {
  const keys = datasetKeys(config.dataset);
  const evalKeys = datasetKeys(config.eval_dataset);
  const taskId = taskIdLookup(keys, evalKeys, config.dataset_task_ids);
  const parts: RenderedSet[] = [];
  for (const k of keys) parts.push(await renderedSet(k, config, src, true, taskId(k)));
  const encodeOpts = {
    cutoffLen: config.cutoff_len,
    template: config.template,
    addBos: config.template_bos !== false,
    trainOnPrompt: config.train_on_prompt,
    packing: config.packing,
    seed: config.seed,
    padId,
  };
  const set = encodeTrainingSet(tok, parts, { ...encodeOpts, valSize: evalKeys.length ? 0 : config.val_size });
  src.log(`data: ${describeReport(set.report, config.cutoff_len)}`);
  let val = set.val;
  let report = set.report;
  if (evalKeys.length) {
    const evalParts: RenderedSet[] = [];
    for (const k of evalKeys) evalParts.push(await renderedSet(k, config, src, false, taskId(k)));
    const ev = encodeTrainingSet(tok, evalParts, { ...encodeOpts, valSize: 0 });
    val = ev.train;
    src.log(`eval data: ${describeReport(ev.report, config.cutoff_len)}`);
    report = { ...report, dropped: report.dropped + ev.report.dropped };
  }
  src.log(`data: ${set.train.length} train, ${val.length} val examples${set.packingDropped ? `, ${set.packingDropped} dropped by packing` : ''}`);
  return { train: set.train, val, truncated: report.promptTruncated + report.responseTruncated, dropped: report.dropped + set.packingDropped, report };
}

export interface PredictionSet {
  entry: DatasetEntry;
  examples: PredictExample[];
  origin: string;
}

/**
 * Prompts for prediction: eval_dataset's keys, or, when it is unset, the
 * `_eval` entry of each `trainKeys` key (sst2 → sst2_eval).
 */
export async function registryPredictionSets(tok: Tokenizer, config: DataConfig, trainKeys: string[], src: DataSources): Promise<PredictionSet[]> {
  let keys = datasetKeys(config.eval_dataset);
  if (!keys.length) {
    keys = trainKeys.map((k) => `${k.replace(/\[.*\]$/, '')}_eval`);
    const missing = keys.filter((k) => !hasDataset(k));
    if (!keys.length || missing.length) {
      throw new ConfigError(
        `Prediction needs eval_dataset (registry keys such as sst2_eval)${missing.length ? `; ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not in the registry` : ''}.`,
      );
    }
  }
  const taskId = taskIdLookup(trainKeys, keys, config.dataset_task_ids);
  // Only the first max_predict_samples examples are predicted: read and encode no more than those. Taking the
  // first N of max_samples' (shuffled) order is the same as taking the first min(N, max_samples) of it.
  const cap = config.max_predict_samples ?? null;
  const readConfig =
    cap === null
      ? config
      : config.max_samples === null
        ? { ...config, max_samples: cap, shuffle_samples: false }
        : { ...config, max_samples: Math.min(config.max_samples, cap) };
  const sets: PredictionSet[] = [];
  for (const k of keys) {
    const r = await renderedSet(k, readConfig, src, false, taskId(k));
    const p = encodeForPrediction(tok, r.entry, r.rendered, {
      cutoffLen: config.cutoff_len,
      template: config.template,
      addBos: config.template_bos !== false,
      taskId: r.taskId,
    });
    if (p.truncated) src.log(`predict data: ${k}: ${p.truncated} prompts truncated to cutoff_len ${config.cutoff_len}`);
    sets.push({ entry: r.entry, examples: p.examples, origin: r.origin });
  }
  return sets;
}
