/**
 * One experiment, host-agnostic: a validated config plus the places its files
 * come from (a FileSource for the model, one for an adapter, the examples the
 * host has read) becomes model + tokenizer + attached method + encoded data +
 * Trainer. The CLI (src/cli/train.ts) and the studio's worker
 * (src/worker/studio.ts) both go through here, so the same config and seed
 * give the same losses in Node and in the browser: the only differences
 * between the hosts are the GPU, where files are read from and where the run
 * is stored, all injected.
 */
import type { Engine } from '../engine/engine';
import { effectiveEvalSteps, type ExperimentConfig } from '../config/schema';
import { alpacaToExample, buildSftDatasets, readAlpacaJsonl, type SftDatasets, type SftExample } from '../data/sft';
import { AdapterLimitError, ConfigError } from '../errors';
import type { FileSource, ProgressCallback } from '../hub/source';
import { readAdapter } from '../methods/adapter-io';
import { resolveMethod } from '../methods/registry';
import type { AttachedMethod } from '../methods/types';
import { seededRandom } from '../model/generate';
import type { LlamaModel } from '../model/llama';
import { baseDtypeOf, loadModel } from '../model/load';
import type { Tokenizer } from '../model/tokenizer';
import type { RunStore } from '../train/store';
import { Trainer, type TrainOptions } from '../train/trainer';

export interface Prepared {
  model: LlamaModel;
  tokenizer: Tokenizer;
  method: AttachedMethod;
}

export interface ExperimentSources {
  /** Files of model_name_or_path (config, weights, tokenizer). */
  model: FileSource;
  /** Files of adapter_name_or_path, when the config sets it. */
  adapter?: FileSource;
}

/**
 * Attach the configured method to a loaded model. Initialisation draws from
 * seededRandom(seed), so the same seed gives the same initial adapter in
 * every host.
 */
export async function attachMethod(e: Engine, model: LlamaModel, config: ExperimentConfig, tokenizer?: Tokenizer): Promise<AttachedMethod> {
  const method = resolveMethod(config).attach({ e, model, config, random: seededRandom(Number(config.seed)), tokenizer });
  await method.ready;
  const problem = splitWeightProblem(e, model, method);
  if (problem) {
    method.detach();
    throw new AdapterLimitError(problem);
  }
  return method;
}

/**
 * A weight beyond one GPU binding is held in row blocks (src/model/load.ts),
 * which the kernels read only frozen (the embedding gather and x Wᵀ). A method
 * that trains such a weight would fail inside a kernel at the first step; this
 * names it before any step runs. (A split linear with a bias: LlamaModel.)
 */
function splitWeightProblem(e: Engine, model: LlamaModel, method: AttachedMethod): string | null {
  const limit = `this GPU's binding limit (${e.maxBindingBytes.toLocaleString('en-US')} bytes)`;
  const trained = method.trainable().find((p) => p.tensor.blocks);
  if (trained) {
    return (
      `${trained.tensor.name} (${trained.tensor.shape.join(' × ')}) is larger than ${limit}, so it is held in row blocks, which cannot be trained. ` +
      'Choose a method that keeps it frozen, or a GPU whose maxStorageBufferBindingSize holds it.'
    );
  }
  return null;
}

/** Model + tokenizer + the configured method (with adapter_name_or_path loaded). */
export async function prepareExperiment(
  e: Engine,
  config: ExperimentConfig,
  sources: ExperimentSources,
  opts: { log?: (s: string) => void; onProgress?: ProgressCallback } = {},
): Promise<Prepared> {
  const { model, tokenizer } = await loadModel(e, sources.model, { onProgress: opts.onProgress, baseDtype: baseDtypeOf(config) });
  if (!tokenizer) throw new ConfigError(`${sources.model.id} has no tokenizer (tokenizer.json); training needs one.`);
  // What base_dtype (or the file's dtype under auto) gave: the only place a user sees it took effect.
  opts.log?.(`model: ${sources.model.id}, base weights ${model.loadedWeightDtype} on the GPU (${(model.weightBytes() / 1e6).toFixed(2)} MB)`);
  const method = await attachMethod(e, model, config, tokenizer);
  if (config.adapter_name_or_path) {
    if (!sources.adapter) throw new ConfigError(`adapter_name_or_path ${config.adapter_name_or_path} is set but no source for it was given.`);
    method.importAdapter(await readAdapter(sources.adapter));
    opts.log?.(`loaded adapter ${config.adapter_name_or_path}`);
  }
  return { model, tokenizer, method };
}

/** Alpaca JSON Lines (instruction / input / output) → examples. */
export function examplesFromJsonl(text: string, source: string): SftExample[] {
  return readAlpacaJsonl(text, source).map(alpacaToExample);
}

/** The id batches are padded with: pad, else EOS, else 0. */
export function padIdOf(tokenizer: Tokenizer): number {
  return tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
}

/** Examples → encoded train / validation sets, by the config's template, cutoff_len, packing, max_samples and val_size. */
export function encodeDatasets(tokenizer: Tokenizer, config: ExperimentConfig, examples: readonly SftExample[]): SftDatasets {
  return buildSftDatasets(tokenizer, examples, config as never, padIdOf(tokenizer));
}

/** LLaMA-Factory: a step count below 1 is a fraction of the total steps. */
export function stepsOf(value: number, total: number): number {
  return value > 0 && value < 1 ? Math.max(1, Math.ceil(value * total)) : Math.round(value);
}

/** Optimizer steps of a run: max_steps when > 0, else epochs × ⌈⌈train / batch⌉ / accumulation⌉. */
export function totalStepsOf(config: ExperimentConfig, trainCount: number): number {
  const bs = Number(config.per_device_train_batch_size),
    accum = Number(config.gradient_accumulation_steps);
  return Number(config.max_steps) > 0 ? Number(config.max_steps) : Math.ceil(Number(config.num_train_epochs) * Math.ceil(Math.ceil(trainCount / bs) / accum));
}

/**
 * Steps between evaluations during training (0: never), as HF's eval_strategy:
 * 'no' never, 'steps' every eval_steps (unset: logging_steps), 'epoch' every
 * optimizer steps of one epoch. The trainer also evaluates after the last step.
 */
export function evalEvery(config: ExperimentConfig, trainCount: number, total: number): number {
  if (config.eval_strategy === 'steps') return stepsOf(effectiveEvalSteps(config), total);
  if (config.eval_strategy === 'epoch') {
    const bs = Number(config.per_device_train_batch_size),
      accum = Number(config.gradient_accumulation_steps);
    return Math.ceil(Math.ceil(trainCount / bs) / accum);
  }
  return 0;
}

/** The config's TrainingArguments as the trainer takes them. */
export function trainOptions(
  config: ExperimentConfig,
  data: Pick<SftDatasets, 'train' | 'val'>,
  padId: number,
  resume: boolean | string = false,
): TrainOptions {
  const total = totalStepsOf(config, data.train.length);
  return {
    batchSize: Number(config.per_device_train_batch_size),
    gradAccum: Number(config.gradient_accumulation_steps),
    learningRate: Number(config.learning_rate),
    weightDecay: Number(config.weight_decay),
    beta1: Number(config.adam_beta1),
    beta2: Number(config.adam_beta2),
    eps: Number(config.adam_epsilon),
    epochs: Number(config.num_train_epochs),
    maxSteps: Number(config.max_steps),
    scheduler: config.lr_scheduler_type,
    warmupRatio: Number(config.warmup_ratio),
    warmupSteps: Number(config.warmup_steps),
    loggingSteps: stepsOf(Number(config.logging_steps), total),
    saveSteps: stepsOf(Number(config.save_steps), total),
    evalSteps: data.val.length ? evalEvery(config, data.train.length, total) : 0,
    maxGradNorm: Number(config.max_grad_norm),
    seed: Number(config.seed),
    padId,
    resume,
    gradientCheckpointing: config.gradient_checkpointing === true,
  };
}

/** The trainer of a prepared experiment, writing checkpoints and its log to `store`. */
export function createTrainer(
  e: Engine,
  prepared: Prepared,
  data: SftDatasets,
  config: ExperimentConfig,
  store: RunStore,
  resume: boolean | string = false,
): Trainer {
  // Shifted targets (target t = labels[t + 1]): a run where none is a label would train on nothing and log loss 0.
  const targets = data.train.reduce((a, x) => a + x.labels.slice(1).filter((l) => l !== -100).length, 0);
  if (data.train.length > 0 && targets === 0) {
    throw new ConfigError(
      `No trainable tokens: after cutoff_len ${config.cutoff_len}, none of the ${data.train.length} training examples keeps a response token to learn` +
        `${config.train_on_prompt ? '' : ' (the prompt is masked: train_on_prompt is false)'}. Raise cutoff_len so that each example keeps its response, or check that the dataset's responses are not empty.`,
    );
  }
  return new Trainer(e, prepared.model, prepared.method, data.train, data.val, trainOptions(config, data, padIdOf(prepared.tokenizer), resume), store);
}
