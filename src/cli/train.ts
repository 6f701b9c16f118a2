/**
 * `peft-studio train <config.yaml> [key=value ...]` and `peft-studio export`:
 * the YAML (LLaMA-Factory / PEFT-Factory keys) is validated by the one
 * schema, the model and data are loaded, the method attaches, the trainer
 * runs with a progress bar, and the adapter is written to output_dir in HF
 * PEFT layout (the merged model too with export_merged).
 */
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Engine } from '../engine/engine';
import { ConfigError, NotMergeableError } from '../errors';
import { validateConfig, type ExperimentConfig } from '../config/schema';
import { parseConfigText } from '../config/yaml';
import { sourceFor, LocalFolderSource, readTextFile, TEXT_FILE_LIMITS } from '../hub/node';
import type { LlamaModel } from '../model/llama';
import type { FileSource } from '../hub/source';
import { seededRandom } from '../model/generate';
import { resolveMethod } from '../methods/registry';
import { methodForAdapter, readAdapter } from '../methods/adapter-io';
import { finishTraining, mergedModelFiles, predictionCosts } from '../run/finish';
import { createTrainer, padIdOf, prepareExperiment, type Prepared } from '../run/experiment';
import { checkDataKeys, loadExperimentData, loadPredictionData } from '../data/node';
import { runPredictions, type TrainingCosts } from '../eval/run-predict';
import type { AttachedMethod } from '../methods/types';
import type { LogEntry } from '../train/trainer';
import { FolderRunStore, LOCK_FILE, lockOutputDir } from '../train/node-store';
import { ONNX_FILE_NAMES, ONNX_OPSET, mergedOnnxFiles, parseOnnxWeightTypes } from '../export/onnx/folder';
import { ensureWritableDir } from './paths';

export function loadConfigFile(file: string, overrides: string[]): ExperimentConfig {
  if (!existsSync(file)) throw new ConfigError(`Config file ${file} does not exist.`);
  const raw = parseConfigText(readTextFile(file, TEXT_FILE_LIMITS.config, 'config'), overrides, file);
  return validateConfig(raw, file);
}

export type { Prepared } from '../run/experiment';

/** Model + tokenizer + the configured method (with adapter_name_or_path loaded). */
export async function prepare(
  e: Engine,
  config: ExperimentConfig,
  log: (s: string) => void,
  onProgress?: (p: { file: string; loaded: number; total: number }) => void,
): Promise<Prepared> {
  const endpoint = config.endpoint ?? undefined;
  const adapter = config.adapter_name_or_path ? sourceFor(String(config.adapter_name_or_path), { endpoint }) : undefined;
  return prepareExperiment(e, config, { model: sourceFor(String(config.model_name_or_path), { endpoint }), adapter }, { log, onProgress });
}

function progress(total: number, log: (s: string) => void): { onStep: (s: number) => void; onLog: (l: LogEntry) => void; onWarning: (m: string) => void } {
  const tty = process.stderr.isTTY;
  let last = '';
  return {
    onWarning: (m) => log(`warning: ${m}`),
    onStep: (s) => {
      if (!tty) return;
      const pct = Math.floor((100 * s) / total);
      process.stderr.write(`\r[${'#'.repeat(Math.floor(pct / 5)).padEnd(20, '.')}] ${s}/${total} ${last}`);
      if (s === total) process.stderr.write('\n');
    },
    onLog: (l) => {
      const parts = [`step ${l.current_steps}/${l.total_steps}`];
      if (l.loss !== undefined)
        parts.push(`loss ${l.loss.toFixed(4)}`, `lr ${l.lr?.toExponential(2)}`, `grad_norm ${l.grad_norm?.toFixed(3)}`, `${l.tokens_per_s} tok/s`);
      if (l.eval_loss !== undefined) parts.push(`eval_loss ${l.eval_loss.toFixed(4)}`);
      last = parts.slice(1).join(' ');
      if (!tty) process.stderr.write(parts.join(' ') + '\n');
    },
  };
}

export async function trainCommand(e: Engine, file: string, overrides: string[]): Promise<Record<string, unknown>> {
  return runConfig(e, loadConfigFile(file, overrides));
}

/**
 * One experiment from a validated config: train (do_train) and write the
 * adapter, then predict (do_predict) and write generated_predictions.jsonl and
 * predict_results.json. predict_results.json is written last: a grid treats
 * its presence as "this cell is done".
 */
export async function runConfig(
  e: Engine,
  configIn: ExperimentConfig,
  log: (s: string) => void = (s) => process.stderr.write(s + '\n'),
): Promise<Record<string, unknown>> {
  let config = configIn;
  const out = String(config.output_dir);
  if (!config.do_train && !config.do_predict) throw new ConfigError('Nothing to do: set do_train and/or do_predict to true.');
  // A bad ONNX weight type fails now, not after training.
  if (config.export_merged && config.export_format === 'onnx') parseOnnxWeightTypes(config.export_onnx_dtypes);
  // Every dataset / eval_dataset key resolves before a model is loaded, a step trained or a folder made.
  checkDataKeys(config);
  // Before the model loads: a path that cannot hold files fails now, with a sentence (and /proc/<new> never spins).
  const existed = existsSync(out);
  await ensureWritableDir(out, 'output_dir');
  // The lock of a killed run does not make a folder non-empty.
  if (config.do_train && existed && readdirSync(out).some((n) => n !== LOCK_FILE) && !config.overwrite_output_dir && !config.resume_from_checkpoint) {
    throw new ConfigError(`output_dir ${out} is not empty. Set overwrite_output_dir: true, or resume_from_checkpoint: true to continue it.`);
  }
  // Predict-only with an adapter: the adapter says which method and options it was trained with.
  const record = !config.do_train && config.adapter_name_or_path ? await adapterRecord(config, log) : null;
  if (record) config = record.config;
  if (config.export_merged) await ensureWritableDir(exportDirOf(config), 'export_dir');
  // Before any model is loaded: no other run may write into output_dir.
  const unlock = await lockOutputDir(out);
  try {
    return await runLocked(e, config, record, out, log);
  } finally {
    await unlock();
  }
}

async function runLocked(
  e: Engine,
  config: ExperimentConfig,
  record: AdapterRecord | null,
  out: string,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  const store = new FolderRunStore(out, { keep: config.save_total_limit ?? null });
  const swept = await store.sweep();
  if (swept.length) log(`removed ${swept.length} unfinished write(s) of an interrupted run: ${swept.join(', ')}`);
  const { model, tokenizer, method } = await prepare(e, config, log);
  let summary: Record<string, unknown> = {};
  let costs: TrainingCosts = { ...predictionCosts(method, undefined, 0), peakSource: 'training (this run)' };
  if (config.do_train) {
    // Registry keys (sst2, sst2,cola, key[split], dataset_info entries) or an Alpaca .jsonl file.
    const data = await loadExperimentData(tokenizer, config, padIdOf(tokenizer));
    for (const line of data.lines) log(line);
    const resume =
      config.resume_from_checkpoint === true ? true : typeof config.resume_from_checkpoint === 'string' ? path.basename(config.resume_from_checkpoint) : false;
    const trainer = createTrainer(e, { model, tokenizer, method }, data, config, store, resume);
    log(
      `${resolveMethod(config).name}: ${trainer.trainableCount().toLocaleString()} trainable of ${model.numParams().toLocaleString()} parameters; ${trainer.totalSteps} steps`,
    );
    await trainer.run(progress(trainer.totalSteps, log));
    const results = await finishTraining(trainer, method, store, baseSource(config), e.pool.peak);
    summary = { ...results };
    costs = { ...predictionCosts(method, results, e.pool.peak), peakSource: 'training (this run)' };
    trainer.dispose();
    log(`adapter written to ${out}`);
  }
  if (config.do_predict) {
    const { sets, lines } = await loadPredictionData(tokenizer, config);
    for (const line of lines) log(line);
    if (!config.do_train) {
      // PSCP's memory term is the training peak: the one recorded with the adapter when there is one.
      if (record?.peakBytes) {
        costs = { ...costs, peakBytes: record.peakBytes, trainTokensPerSecond: record.trainTokensPerSecond, peakSource: `training (${record.peakFile})` };
      } else {
        costs = {
          ...costs,
          peakBytes: e.pool.peak,
          peakSource: config.adapter_name_or_path
            ? 'prediction (no training peak recorded with the adapter: all_results.json has no peak_gpu_bytes)'
            : 'prediction (no training)',
        };
      }
      log(`PSCP memory term: ${(costs.peakBytes / 1e9).toFixed(6)} GB, peak of ${costs.peakSource}`);
    }
    // Each set's files are written as soon as they exist; predict_results.json last (it marks a finished run).
    const r = await runPredictions(model, tokenizer, config, sets, costs, { log, outputDir: out, write: (name, data) => store.writeFile(name, data) });
    summary = { ...summary, predict: r.results };
  }
  if (config.export_merged) await exportMerged(model, method, config, log);
  else method.detach();
  // Free the GPU for the next run in this process (a grid runs many).
  model.dispose();
  await e.sync();
  return summary;
}

export interface AdapterRecord {
  /** The config with the method and options of the adapter's adapter_config.json. */
  config: ExperimentConfig;
  /** Peak training GPU bytes recorded with the adapter (all_results.json peak_gpu_bytes), if any. */
  peakBytes: number | null;
  peakFile: string;
  trainTokensPerSecond: number | null;
}

/**
 * What an adapter folder says about itself: its method and options
 * (adapter_config.json, read by the method that loads its peft_type, so a
 * predict-only config needs no lora_target or rank), and the training run
 * that produced it (all_results.json beside it, as `train` writes it: the
 * peak GPU bytes PSCP's memory term needs, and the training tokens/s).
 */
export async function adapterRecord(config: ExperimentConfig, log: (s: string) => void): Promise<AdapterRecord> {
  const dir = String(config.adapter_name_or_path);
  const source = existsSync(dir) ? new LocalFolderSource(dir) : sourceFor(dir, { endpoint: config.endpoint ?? undefined });
  const files = await readAdapter(source);
  const { method, config: options } = methodForAdapter(files.config);
  const changed = Object.entries(options).filter(([k, v]) => JSON.stringify(config[k]) !== JSON.stringify(v));
  const merged = validateConfig({ ...config, ...options }, `${dir}/adapter_config.json`);
  log(
    `adapter ${dir}: method ${method.name} and its options from adapter_config.json` +
      (changed.length ? ` (${changed.map(([k, v]) => `${k} ${JSON.stringify(config[k])} → ${JSON.stringify(v)}`).join(', ')})` : ' (as configured)'),
  );
  let peakBytes: number | null = null,
    trainTokensPerSecond: number | null = null;
  const peakFile = `${dir.replace(/\/+$/, '')}/all_results.json`;
  if (await source.has('all_results.json')) {
    try {
      const r = JSON.parse(new TextDecoder().decode(await source.get('all_results.json'))) as Record<string, unknown>;
      if (typeof r.peak_gpu_bytes === 'number' && r.peak_gpu_bytes > 0) peakBytes = r.peak_gpu_bytes;
      if (typeof r.train_tokens_per_s === 'number') trainTokensPerSecond = r.train_tokens_per_s;
    } catch (err) {
      throw new ConfigError(
        `${peakFile} is not JSON (${(err as Error).message}); it should be the all_results.json that training wrote beside the adapter, or be removed.`,
      );
    }
  }
  return { config: merged, peakBytes, peakFile, trainTokensPerSecond };
}

/** `peft-studio export <config.yaml>`: the adapter in output_dir (or adapter_name_or_path) merged into the base. */
export async function exportCommand(e: Engine, file: string, overrides: string[]): Promise<void> {
  const config = loadConfigFile(file, overrides);
  const adapter = String(config.adapter_name_or_path ?? config.output_dir);
  const log = (s: string) => process.stderr.write(s + '\n');
  await ensureWritableDir(exportDirOf(config), 'export_dir');
  // Attach first, load the adapter second: a method that cannot merge is told so before any adapter file is read.
  const { model, method } = await prepare(e, { ...config, adapter_name_or_path: null }, log);
  if (!method.merge) throw new NotMergeableError(String(config.finetuning_type), config.export_format === 'onnx' ? 'onnx' : 'safetensors');
  method.importAdapter(await readAdapter(sourceFor(adapter, { endpoint: config.endpoint ?? undefined })));
  log(`loaded adapter ${adapter}`);
  await exportMerged(model, method, config, log);
}

const exportDirOf = (config: ExperimentConfig): string =>
  String(config.export_dir ?? path.join(String(config.output_dir), config.export_format === 'onnx' ? 'onnx' : 'merged'));

/** The merged model as an HF folder (safetensors) or as the transformers.js ONNX folder (export_format: onnx). */
async function exportMerged(model: LlamaModel, method: AttachedMethod, config: ExperimentConfig, log: (s: string) => void): Promise<void> {
  const onnx = config.export_format === 'onnx';
  if (!method.merge) throw new NotMergeableError(String(config.finetuning_type), onnx ? 'onnx' : 'safetensors');
  const weightTypes = onnx ? parseOnnxWeightTypes(config.export_onnx_dtypes) : [];
  const dir = exportDirOf(config);
  const files = onnx ? await mergedOnnxFiles(model, method, baseSource(config), weightTypes) : await mergedModelFiles(model, method, baseSource(config));
  // As a unit published by config.json: a kill part way leaves no config.json beside a mix of old and new files.
  await new FolderRunStore(dir).writeFiles(files, 'config.json' in files ? 'config.json' : Object.keys(files)[0]);
  log(`merged model written to ${dir}${onnx ? ` (ONNX opset ${ONNX_OPSET}: ${weightTypes.map((t) => ONNX_FILE_NAMES[t]).join(', ')})` : ''}`);
}

function baseSource(config: ExperimentConfig): FileSource {
  return sourceFor(String(config.model_name_or_path), { endpoint: config.endpoint ?? undefined });
}

/** For logits/generate --adapter: attach the method an adapter folder names and load it. */
export async function attachAdapterFolder(e: Engine, model: LlamaModel, dir: string, endpoint?: string): Promise<AttachedMethod> {
  const files = await readAdapter(existsSync(dir) ? new LocalFolderSource(dir) : sourceFor(dir, { endpoint }));
  const { method, config } = methodForAdapter(files.config);
  const attached = method.attach({ e, model, config, random: seededRandom(0) });
  await attached.ready;
  attached.importAdapter(files);
  return attached;
}
