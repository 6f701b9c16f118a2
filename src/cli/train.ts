/**
 * `peft-studio train <config.yaml> [key=value ...]` and `peft-studio export`:
 * the YAML (LLaMA-Factory / PEFT-Factory keys) is validated by the one
 * schema, the model and data are loaded, the method attaches, the trainer
 * runs with a progress bar, and the adapter is written to output_dir in HF
 * PEFT layout (the merged model too with export_merged).
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import type { Engine } from '../engine/engine';
import { ConfigError } from '../errors';
import { validateConfig, effectiveEvalSteps, type ExperimentConfig } from '../config/schema';
import { parseConfigText } from '../config/yaml';
import { readAlpacaJsonl, alpacaToExample, buildSftDatasets } from '../data/sft';
import { sourceFor, LocalFolderSource } from '../hub/node';
import { loadModel } from '../model/load';
import type { LlamaModel } from '../model/llama';
import type { Tokenizer } from '../model/tokenizer';
import { seededRandom } from '../model/generate';
import { serializeSafetensors } from '../model/safetensors';
import { resolveMethod } from '../methods/registry';
import { adapterFileMap, methodForAdapter, readAdapter } from '../methods/adapter-io';
import type { AttachedMethod } from '../methods/types';
import { Trainer, type LogEntry } from '../train/trainer';
import { FolderRunStore } from '../train/node-store';

export function loadConfigFile(file: string, overrides: string[]): ExperimentConfig {
  if (!existsSync(file)) throw new ConfigError(`Config file ${file} does not exist.`);
  const raw = parseConfigText(readFileSync(file, 'utf8'), overrides, file);
  return validateConfig(raw, file);
}

function stepsOf(value: number, total: number): number {
  // LLaMA-Factory: a value below 1 is a fraction of the total steps.
  return value > 0 && value < 1 ? Math.max(1, Math.ceil(value * total)) : Math.round(value);
}

export interface Prepared {
  model: LlamaModel;
  tokenizer: Tokenizer;
  method: AttachedMethod;
}

/** Model + tokenizer + the configured method (with adapter_name_or_path loaded). */
export async function prepare(e: Engine, config: ExperimentConfig, log: (s: string) => void, onProgress?: (p: { file: string; loaded: number; total: number }) => void): Promise<Prepared> {
  const source = sourceFor(String(config.model_name_or_path), { endpoint: config.endpoint ?? undefined });
  const { model, tokenizer } = await loadModel(e, source, { onProgress });
  const method = resolveMethod(config).attach({ e, model, config, random: seededRandom(Number(config.seed)) });
  await method.ready;
  if (config.adapter_name_or_path) {
    const files = await readAdapter(sourceFor(String(config.adapter_name_or_path), { endpoint: config.endpoint ?? undefined }));
    method.importAdapter(files);
    log(`loaded adapter ${config.adapter_name_or_path}`);
  }
  return { model, tokenizer: tokenizer!, method };
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
  const config = loadConfigFile(file, overrides);
  const log = (s: string) => process.stderr.write(s + '\n');
  const out = String(config.output_dir);
  if (existsSync(out) && readdirSync(out).length > 0 && !config.overwrite_output_dir && !config.resume_from_checkpoint) {
    throw new ConfigError(`output_dir ${out} is not empty. Set overwrite_output_dir: true, or resume_from_checkpoint: true to continue it.`);
  }
  const { model, tokenizer, method } = await prepare(e, config, log);
  const ds = String(config.dataset ?? '');
  if (!ds.endsWith('.jsonl') || !existsSync(ds)) {
    throw new ConfigError(`dataset '${ds}': give a local .jsonl file of alpaca rows ({"instruction", "input", "output"}); the dataset registry comes later.`);
  }
  const rows = readAlpacaJsonl(readFileSync(ds, 'utf8'), ds).map(alpacaToExample);
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  const data = buildSftDatasets(tokenizer, rows, config as never, padId);
  log(`data: ${data.train.length} train, ${data.val.length} val examples${data.truncated ? `, ${data.truncated} truncated to cutoff_len ${config.cutoff_len}` : ''}${data.dropped ? `, ${data.dropped} dropped by packing` : ''}`);
  const bs = Number(config.per_device_train_batch_size), accum = Number(config.gradient_accumulation_steps);
  const total = Number(config.max_steps) > 0 ? Number(config.max_steps) : Math.ceil(Number(config.num_train_epochs) * Math.ceil(Math.ceil(data.train.length / bs) / accum));
  const trainer = new Trainer(e, model, method, data.train, data.val, {
    batchSize: bs, gradAccum: accum, learningRate: Number(config.learning_rate), weightDecay: Number(config.weight_decay),
    beta1: Number(config.adam_beta1), beta2: Number(config.adam_beta2), eps: Number(config.adam_epsilon),
    epochs: Number(config.num_train_epochs), maxSteps: Number(config.max_steps), scheduler: config.lr_scheduler_type,
    warmupRatio: Number(config.warmup_ratio), warmupSteps: Number(config.warmup_steps),
    loggingSteps: stepsOf(Number(config.logging_steps), total), saveSteps: stepsOf(Number(config.save_steps), total),
    evalSteps: data.val.length ? stepsOf(effectiveEvalSteps(config), total) : 0,
    maxGradNorm: Number(config.max_grad_norm), seed: Number(config.seed), padId,
    resume: config.resume_from_checkpoint === true ? true : typeof config.resume_from_checkpoint === 'string' ? path.basename(config.resume_from_checkpoint) : false,
  }, new FolderRunStore(out));
  log(`${resolveMethod(config).name}: ${trainer.trainableCount().toLocaleString()} trainable of ${model.numParams().toLocaleString()} parameters; ${trainer.totalSteps} steps`);
  const t0 = performance.now();
  const result = await trainer.run(progress(trainer.totalSteps));
  const files = await method.exportAdapter();
  if (files.config.export_format === 'hf_model') {
    // full / GaLore: the trained weights are a whole HF model folder.
    await writeModelFolder(out, files.tensors, config);
  } else {
    for (const [name, data] of Object.entries(adapterFileMap(files))) await new FolderRunStore(out).writeFile(name, data);
  }
  for (const [sub, extra] of (await method.extraAdapters?.()) ?? []) {
    for (const [name, data] of Object.entries(adapterFileMap(extra))) await new FolderRunStore(path.join(out, sub)).writeFile(name, data);
  }
  const last = [...result.log].reverse().find((l) => l.loss !== undefined);
  const evalLast = [...result.log].reverse().find((l) => l.eval_loss !== undefined);
  const summary = {
    train_loss: last?.loss, eval_loss: evalLast?.eval_loss, global_step: result.steps,
    train_runtime: (performance.now() - t0) / 1000, trainable_params: trainer.trainableCount(), peak_gpu_bytes: e.pool.peak,
  };
  await fs.writeFile(path.join(out, 'all_results.json'), JSON.stringify(summary, null, 2) + '\n');
  if (config.export_merged) await exportMerged(e, model, method, config, log);
  trainer.dispose();
  log(`adapter written to ${out}`);
  return summary;
}

/** `peft-studio export <config.yaml>`: the adapter in output_dir (or adapter_name_or_path) merged into the base. */
export async function exportCommand(e: Engine, file: string, overrides: string[]): Promise<void> {
  const config = loadConfigFile(file, overrides);
  if (!config.adapter_name_or_path) config.adapter_name_or_path = String(config.output_dir);
  const log = (s: string) => process.stderr.write(s + '\n');
  const { model, method } = await prepare(e, config, log);
  await exportMerged(e, model, method, config, log);
}

async function exportMerged(e: Engine, model: LlamaModel, method: AttachedMethod, config: ExperimentConfig, log: (s: string) => void): Promise<void> {
  if (!method.merge) throw new ConfigError(`finetuning_type ${config.finetuning_type} cannot be merged into the base weights; use the adapter folder.`);
  await method.merge();
  const dir = String(config.export_dir ?? path.join(String(config.output_dir), 'merged'));
  await fs.mkdir(dir, { recursive: true });
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of model.params) tensors.set(name, { shape: t.shape, data: await e.read(t) });
  await writeModelFolder(dir, tensors, config);
  log(`merged model written to ${dir}`);
}

/** model.safetensors plus the base model's config and tokenizer files (unchanged). */
async function writeModelFolder(dir: string, tensors: Map<string, { shape: number[]; data: Float32Array }>, config: ExperimentConfig): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await new FolderRunStore(dir).writeFile('model.safetensors', serializeSafetensors(tensors, { format: 'pt' }));
  const base = sourceFor(String(config.model_name_or_path), { endpoint: config.endpoint ?? undefined });
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    if (await base.has(f)) await fs.writeFile(path.join(dir, f), await base.get(f));
  }
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
