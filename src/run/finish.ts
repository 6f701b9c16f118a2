/**
 * What happens after training, for both hosts: the CLI (output_dir through
 * FolderRunStore) and the studio's worker (a run in IndexedDB through
 * IdbRunStore) call the same functions, so the files of a finished run are the
 * same in both.
 *
 * - The trained weights: the adapter folder (HF PEFT or Adapters layout), or a
 *   whole HF model folder for methods that train base weights (full, GaLore),
 *   plus any extra adapters a method writes into sub-folders.
 * - all_results.json with the HF Trainer's meanings: train_loss is the mean
 *   training loss over every optimizer step (HF: tr_loss / global_step), not
 *   the last logged value; train_runtime is the wall time of training in
 *   seconds; train_tokens_per_s is input tokens over the time spent in
 *   optimizer steps (evaluation and checkpoint writes excluded).
 * - A merged model folder: model.safetensors plus the base model's config and
 *   tokenizer files, with the bias flags a BitFit merge needs. Merged weights
 *   are written in the dtype the base was held in (a BF16 base gives a BF16
 *   model, as merge_and_unload does); full / GaLore weights train in f32 and
 *   are written as F32; config.json's torch_dtype says which.
 * - Prediction files, predict_results.json last: a grid reads its presence as
 *   "this cell is done".
 */
import type { AttachedMethod } from '../methods/types';
import { adapterFileMap } from '../methods/adapter-files';
import type { FileSource } from '../hub/source';
import type { LlamaModel } from '../model/llama';
import { configWithBiasFlags } from '../model/bias-flags';
import { serializeSafetensors } from '../model/safetensors';
import type { TrainingCosts } from '../eval/run-predict';
import type { RunStore } from '../train/store';
import type { LogEntry, TrainStats } from '../train/trainer';

/** Files of the base model copied beside a full or merged model.safetensors. */
export const BASE_MODEL_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'] as const;

/** all_results.json of a training run. */
export interface TrainResults {
  /** Mean training loss over all optimizer steps of the run (resumed runs included, from the log). */
  train_loss?: number;
  /** The last evaluation's loss. */
  eval_loss?: number;
  global_step: number;
  epoch?: number;
  /** Wall seconds of training in this process (evaluation and checkpoints included, as HF counts it). */
  train_runtime: number;
  /** Input tokens per second of optimizer steps (evaluation excluded); null when no step ran here. */
  train_tokens_per_s: number | null;
  train_steps_per_second: number | null;
  trainable_params: number;
  peak_gpu_bytes: number;
}

/**
 * Mean loss over steps 1..N from the log's windows: each logged loss is the
 * mean of the steps since the previous logged loss, so weight it by their count.
 */
export function meanTrainLoss(log: readonly LogEntry[]): number | undefined {
  let sum = 0,
    steps = 0,
    prev = 0;
  for (const l of log) {
    if (l.loss === undefined) continue;
    const n = l.current_steps - prev;
    if (n <= 0) continue;
    sum += l.loss * n;
    steps += n;
    prev = l.current_steps;
  }
  return steps ? sum / steps : undefined;
}

export function trainResults(
  trainer: { step: number; log: readonly LogEntry[]; stats: TrainStats; trainableCount(): number },
  peakBytes: number,
): TrainResults {
  const { stats, log } = trainer;
  const evalLast = [...log].reverse().find((l) => l.eval_loss !== undefined);
  const trainSeconds = stats.trainMs / 1000;
  return {
    train_loss: round(meanTrainLoss(log)),
    eval_loss: evalLast?.eval_loss,
    global_step: trainer.step,
    epoch: log.at(-1)?.epoch,
    train_runtime: round(stats.runMs / 1000, 4)!,
    train_tokens_per_s: stats.steps && trainSeconds > 0 ? round(stats.tokens / trainSeconds, 3)! : null,
    train_steps_per_second: stats.steps && stats.runMs > 0 ? round(stats.steps / (stats.runMs / 1000), 3)! : null,
    trainable_params: trainer.trainableCount(),
    peak_gpu_bytes: peakBytes,
  };
}

/** PSCP's training inputs for do_predict / Evaluate: from a finished run's results, else the method and a measured peak. */
export function predictionCosts(method: AttachedMethod, results: Partial<TrainResults> | undefined, fallbackPeakBytes: number): TrainingCosts {
  return {
    trainableParams: results?.trainable_params ?? method.trainable().reduce((a, p) => a + p.tensor.size, 0),
    // PSCP's memory term is the peak measured while training (the pool's peak).
    peakBytes: results?.peak_gpu_bytes || fallbackPeakBytes,
    trainTokensPerSecond: results?.train_tokens_per_s ?? null,
  };
}

/** The file dtype of each merged / trained tensor, and its config.json torch_dtype. */
export type ModelFileDtype = 'F32' | 'F16' | 'BF16';
const TORCH_DTYPE: Record<ModelFileDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * model.safetensors (every tensor in `dtype`) and the base model's config and
 * tokenizer files: an HF model folder. config.json's torch_dtype is set to
 * `dtype` when it said otherwise, so transformers loads the weights as they are.
 */
export async function modelFolderFiles(
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  base: FileSource,
  dtype: ModelFileDtype = 'F32',
): Promise<Record<string, Uint8Array>> {
  const typed = new Map([...tensors].map(([name, t]) => [name, { shape: t.shape, data: t.data, dtype }]));
  const files: Record<string, Uint8Array> = { 'model.safetensors': serializeSafetensors(typed, { format: 'pt' }) };
  for (const f of BASE_MODEL_FILES) if (await base.has(f)) files[f] = await base.get(f);
  if (files['config.json']) {
    // BitFit on llama: the merged biases need attention_bias / mlp_bias set.
    const text = configWithBiasFlags(new TextDecoder().decode(files['config.json']), tensors.keys());
    const cfg = JSON.parse(text ?? new TextDecoder().decode(files['config.json'])) as Record<string, unknown>;
    const torchDtype = TORCH_DTYPE[dtype];
    const stale = cfg.torch_dtype !== undefined ? cfg.torch_dtype !== torchDtype : dtype !== 'F32';
    if (stale) cfg.torch_dtype = torchDtype;
    if (stale || text !== null) files['config.json'] = new TextEncoder().encode(stale ? JSON.stringify(cfg, null, 2) + '\n' : text!);
  }
  return files;
}

/** The trained weights as files: the adapter folder (or a whole model folder), and sub-folders of extra adapters. */
export async function trainedFiles(method: AttachedMethod, base: FileSource): Promise<Record<string, Uint8Array | string>> {
  const exported = await method.exportAdapter();
  // full / GaLore: the trained weights are a whole HF model folder.
  const files: Record<string, Uint8Array | string> =
    exported.config.export_format === 'hf_model' ? await modelFolderFiles(exported.tensors, base) : adapterFileMap(exported);
  for (const [sub, extra] of (await method.extraAdapters?.()) ?? []) {
    for (const [name, data] of Object.entries(adapterFileMap(extra))) files[`${sub}/${name}`] = data;
  }
  return files;
}

/** Write the trained weights and all_results.json into the run; returns the results. */
export async function finishTraining(
  trainer: Parameters<typeof trainResults>[0],
  method: AttachedMethod,
  store: RunStore,
  base: FileSource,
  peakBytes: number,
): Promise<TrainResults> {
  const files = await trainedFiles(method, base);
  // As a unit, published by its marker file: a kill part way leaves no adapter_config.json (config.json) beside other files.
  await store.writeFiles(files, 'adapter_config.json' in files ? 'adapter_config.json' : 'config.json');
  const results = trainResults(trainer, peakBytes);
  await store.writeFile('all_results.json', JSON.stringify(results, null, 2) + '\n');
  return results;
}

/**
 * Merge the method into the base weights and return the merged model folder.
 * The model's base weights are changed: the caller disposes of it or reloads.
 */
export async function mergedModelFiles(model: LlamaModel, method: AttachedMethod, base: FileSource): Promise<Record<string, Uint8Array>> {
  // As transformers' merge_and_unload + save_pretrained: the merged model keeps the dtype its base weights were held in.
  const held = model.loadedWeightDtype;
  const dtype: ModelFileDtype = held === 'bf16' ? 'BF16' : held === 'f16' ? 'F16' : 'F32';
  await method.merge!();
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of model.params) tensors.set(name, { shape: t.shape, data: await model.e.read(t) });
  return modelFolderFiles(tensors, base, dtype);
}

/** Prediction files into the run, predict_results.json last (its presence marks a finished cell). */
export async function writePredictionFiles(store: RunStore, files: Record<string, string>): Promise<void> {
  const names = Object.keys(files).sort((a, b) => Number(a === 'predict_results.json') - Number(b === 'predict_results.json'));
  for (const name of names) await store.writeFile(name, files[name]);
}

function round(x: number | undefined, digits = 6): number | undefined {
  if (x === undefined) return undefined;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
