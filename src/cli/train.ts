/**
 * `peft-studio train <config.yaml> [key=value ...]` and `peft-studio export`:
 * the YAML (LLaMA-Factory / PEFT-Factory keys) is validated by the one
 * schema, the model and data are loaded, the method attaches, the trainer
 * runs with a progress bar, and the adapter is written to output_dir in HF
 * PEFT layout (the merged model too with export_merged).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type { Engine } from '../engine/engine';
import { ConfigError } from '../errors';
import { validateConfig, type ExperimentConfig } from '../config/schema';
import { parseConfigText } from '../config/yaml';
import { sourceFor, LocalFolderSource } from '../hub/node';
import type { LlamaModel } from '../model/llama';
import type { FileSource } from '../hub/source';
import { seededRandom } from '../model/generate';
import { resolveMethod } from '../methods/registry';
import { methodForAdapter, readAdapter } from '../methods/adapter-io';
import { finishTraining, mergedModelFiles, predictionCosts, writePredictionFiles } from '../run/finish';
import { createTrainer, padIdOf, prepareExperiment, type Prepared } from '../run/experiment';
import { loadExperimentData, loadPredictionData } from '../data/node';
import { runPredictions } from '../eval/run-predict';
import type { AttachedMethod } from '../methods/types';
import type { LogEntry } from '../train/trainer';
import { FolderRunStore } from '../train/node-store';

export function loadConfigFile(file: string, overrides: string[]): ExperimentConfig {
  if (!existsSync(file)) throw new ConfigError(`Config file ${file} does not exist.`);
  const raw = parseConfigText(readFileSync(file, 'utf8'), overrides, file);
  return validateConfig(raw, file);
}

export type { Prepared } from '../run/experiment';

/** Model + tokenizer + the configured method (with adapter_name_or_path loaded). */
export async function prepare(e: Engine, config: ExperimentConfig, log: (s: string) => void, onProgress?: (p: { file: string; loaded: number; total: number }) => void): Promise<Prepared> {
  const endpoint = config.endpoint ?? undefined;
  const adapter = config.adapter_name_or_path ? sourceFor(String(config.adapter_name_or_path), { endpoint }) : undefined;
  return prepareExperiment(e, config, { model: sourceFor(String(config.model_name_or_path), { endpoint }), adapter }, { log, onProgress });
}

function progress(total: number): { onStep: (s: number) => void; onLog: (l: LogEntry) => void } {
  const tty = process.stderr.isTTY;
  let last = '';
  return {
    onStep: (s) => {
      if (!tty) return;
      const pct = Math.floor((100 * s) / total);
      process.stderr.write(`\r[${'#'.repeat(Math.floor(pct / 5)).padEnd(20, '.')}] ${s}/${total} ${last}`);
      if (s === total) process.stderr.write('\n');
    },
    onLog: (l) => {
      const parts = [`step ${l.current_steps}/${l.total_steps}`];
      if (l.loss !== undefined) parts.push(`loss ${l.loss.toFixed(4)}`, `lr ${l.lr?.toExponential(2)}`, `grad_norm ${l.grad_norm?.toFixed(3)}`, `${l.tokens_per_s} tok/s`);
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
export async function runConfig(e: Engine, config: ExperimentConfig, log: (s: string) => void = (s) => process.stderr.write(s + '\n')): Promise<Record<string, unknown>> {
  const out = String(config.output_dir);
  if (!config.do_train && !config.do_predict) throw new ConfigError('Nothing to do: set do_train and/or do_predict to true.');
  if (config.do_train && existsSync(out) && readdirSync(out).length > 0 && !config.overwrite_output_dir && !config.resume_from_checkpoint) {
    throw new ConfigError(`output_dir ${out} is not empty. Set overwrite_output_dir: true, or resume_from_checkpoint: true to continue it.`);
  }
  const { model, tokenizer, method } = await prepare(e, config, log);
  const store = new FolderRunStore(out);
  let summary: Record<string, unknown> = {};
  let costs = predictionCosts(method, undefined, 0);
  if (config.do_train) {
    // Registry keys (sst2, sst2,cola, key[split], dataset_info entries) or an Alpaca .jsonl file.
    const data = await loadExperimentData(tokenizer, config, padIdOf(tokenizer));
    for (const line of data.lines) log(line);
    const resume = config.resume_from_checkpoint === true ? true : typeof config.resume_from_checkpoint === 'string' ? path.basename(config.resume_from_checkpoint) : false;
    const trainer = createTrainer(e, { model, tokenizer, method }, data, config, store, resume);
    log(`${resolveMethod(config).name}: ${trainer.trainableCount().toLocaleString()} trainable of ${model.numParams().toLocaleString()} parameters; ${trainer.totalSteps} steps`);
    await trainer.run(progress(trainer.totalSteps));
    const results = await finishTraining(trainer, method, store, baseSource(config), e.pool.peak);
    summary = { ...results };
    costs = predictionCosts(method, results, e.pool.peak);
    trainer.dispose();
    log(`adapter written to ${out}`);
  }
  if (config.do_predict) {
    const { sets, lines } = await loadPredictionData(tokenizer, config);
    for (const line of lines) log(line);
    if (!config.do_train) costs.peakBytes = e.pool.peak;
    const r = await runPredictions(model, tokenizer, config, sets, costs, { log });
    await writePredictionFiles(store, r.files);
    summary = { ...summary, predict: r.results };
    log(`predictions written to ${path.join(out, 'generated_predictions.jsonl')}`);
  }
  if (config.export_merged) await exportMerged(model, method, config, log);
  else method.detach();
  // Free the GPU for the next run in this process (a grid runs many).
  model.dispose();
  await e.sync();
  return summary;
}

/** `peft-studio export <config.yaml>`: the adapter in output_dir (or adapter_name_or_path) merged into the base. */
export async function exportCommand(e: Engine, file: string, overrides: string[]): Promise<void> {
  const config = loadConfigFile(file, overrides);
  if (!config.adapter_name_or_path) config.adapter_name_or_path = String(config.output_dir);
  const log = (s: string) => process.stderr.write(s + '\n');
  const { model, method } = await prepare(e, config, log);
  await exportMerged(model, method, config, log);
}

async function exportMerged(model: LlamaModel, method: AttachedMethod, config: ExperimentConfig, log: (s: string) => void): Promise<void> {
  if (!method.merge) throw new ConfigError(`finetuning_type ${config.finetuning_type} cannot be merged into the base weights; use the adapter folder.`);
  const dir = String(config.export_dir ?? path.join(String(config.output_dir), 'merged'));
  const folder = new FolderRunStore(dir);
  for (const [name, data] of Object.entries(await mergedModelFiles(model, method, baseSource(config)))) await folder.writeFile(name, data);
  log(`merged model written to ${dir}`);
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
