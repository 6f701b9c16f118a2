/**
 * The experiment config: one option schema that drives validation, YAML, the
 * shareable URL form and the UI form.
 *
 * Keys follow LLaMA-Factory / PEFT-Factory (and the HF TrainingArguments they
 * pass through), so a config written here runs there unchanged; defaults are
 * theirs unless the help text says otherwise. The validated config keeps the
 * snake_case keys of the YAML file.
 *
 * Conventions:
 * - An option without a `default` is required.
 * - A nullable option's null means "unset"; its help says what unset does.
 * - `string-list` accepts a comma-separated string (LLaMA-Factory style,
 *   `lora_target: q_proj,v_proj`) or a YAML list; it is validated to string[].
 * - `countOrRatio` (HF `save_steps`, LLaMA-Factory `val_size`): a value ≥ 1 is
 *   a count and must be an integer; a value below 1 is a fraction.
 *
 * PEFT methods add their own options with registerOptions(group, specs) from
 * their peft/<name>/config.ts; a method name is added to the finetuning_type
 * choices with registerFinetuningType(name).
 */
import { ConfigError } from '../errors';
import { DEFAULT_ENDPOINT } from '../hub/hub-source';

export type OptionType = 'int' | 'float' | 'bool' | 'string' | 'enum' | 'string-list';

export interface OptionSpec {
  key: string;
  type: OptionType;
  /** Absent: the option is required. */
  default?: unknown;
  min?: number;
  max?: number;
  exclusiveMin?: boolean;
  exclusiveMax?: boolean;
  choices?: readonly string[];
  help: string;
  group: string;
  nullable?: boolean;
  /** Also accepts true/false (resume_from_checkpoint: a path or a flag). */
  acceptsBool?: boolean;
  /** Numbers: ≥ 1 is an integer count, below 1 a fraction (see above). */
  countOrRatio?: boolean;
  /** Enums: other spellings accepted and stored as the choice they name. */
  aliases?: Readonly<Record<string, string>>;
}

/** Other spellings of a dtype (transformers' torch_dtype, PyTorch's names), as parseBaseDtype accepts them. */
const DTYPE_SPELLINGS: Record<string, string> = { fp32: 'float32', float: 'float32', fp16: 'float16', half: 'float16', bf16: 'bfloat16' };
export const DTYPE_ALIASES: Readonly<Record<string, string>> = Object.fromEntries([
  ...Object.entries(DTYPE_SPELLINGS).flatMap(([a, d]) => [
    [a, d],
    [`torch.${a}`, d],
  ]),
  ...['float32', 'float16', 'bfloat16'].map((d) => [`torch.${d}`, d]),
]);

// The installed methods (src/methods/registry.ts registers every folder under
// peft/ and every plug-in); mutable so that registration extends the choices.
const finetuningTypes: string[] = [];

/**
 * Prompt templates built into src/data/template.ts. 'chat' renders with the
 * tokenizer's own chat template. Kept here (not imported from src/data) so the
 * schema has no dependency on the tokenizer stack.
 */
const templateNames: string[] = ['default', 'alpaca', 'empty', 'chat'];

export const modelOptions = [
  { key: 'model_name_or_path', type: 'string', group: 'model', help: 'Base model: a Hub repo id (owner/name) or a local folder in Hub layout.' },
  {
    key: 'adapter_name_or_path',
    type: 'string',
    default: null,
    nullable: true,
    group: 'model',
    help: 'An adapter to load before training or evaluation (Hub repo id or folder). Unset: start from a fresh adapter.',
  },
  {
    key: 'base_dtype',
    type: 'enum',
    default: 'auto',
    choices: ['auto', 'float32', 'float16', 'bfloat16'],
    aliases: DTYPE_ALIASES,
    group: 'model',
    help: "How the frozen base weights are held on the GPU: auto keeps the checkpoint's dtype (F16 / BF16 stay 16-bit, half the memory of float32); float16 / bfloat16 round to that dtype; float32 unpacks everything. Trainable tensors are always float32.",
  },
  {
    key: 'torch_dtype',
    type: 'enum',
    default: null,
    nullable: true,
    choices: ['auto', 'float32', 'float16', 'bfloat16'],
    aliases: DTYPE_ALIASES,
    group: 'model',
    help: 'The transformers spelling of base_dtype (used when base_dtype is auto).',
  },
  {
    key: 'endpoint',
    type: 'string',
    default: DEFAULT_ENDPOINT,
    group: 'model',
    help: 'Hub endpoint for models and datasets (a PEFT Studio option; LLaMA-Factory reads HF_ENDPOINT instead).',
  },
] as const satisfies readonly OptionSpec[];

export const methodOptions = [
  { key: 'stage', type: 'enum', default: 'sft', choices: ['sft'], group: 'method', help: 'Training stage. Only supervised fine-tuning (sft) is supported.' },
  {
    key: 'do_train',
    type: 'bool',
    default: true,
    group: 'method',
    help: 'Train. (HF default is false; LLaMA-Factory configs set it explicitly, and so does toYaml.)',
  },
  // The method folder that says `isDefault` becomes the default when it registers (registerFinetuningType); null only before any method is installed.
  {
    key: 'finetuning_type',
    type: 'enum',
    default: null,
    nullable: true,
    choices: finetuningTypes as readonly string[],
    group: 'method',
    help: 'The PEFT method: the name of a folder under peft/ (or of a plug-in), or the LLaMA-Factory finetuning_type plus the flag that selects it.',
  },
] as const satisfies readonly OptionSpec[];

export const datasetOptions = [
  {
    key: 'dataset',
    type: 'string',
    default: null,
    nullable: true,
    group: 'dataset',
    help: 'Training data: a registry name (e.g. sst2) or a path to an Alpaca-style .jsonl file. Required when do_train is true.',
  },
  {
    key: 'eval_dataset',
    type: 'string',
    default: null,
    nullable: true,
    group: 'dataset',
    help: 'Evaluation / prediction data (registry name or .jsonl). Unset: the val_size split of dataset.',
  },
  {
    key: 'template',
    type: 'enum',
    default: null,
    nullable: true,
    choices: templateNames as readonly string[],
    group: 'dataset',
    help: "Prompt template: default (LLaMA-Factory's 'Human: …\\nAssistant:'), alpaca, empty, or chat (the tokenizer's chat template). Unset: chat when the tokenizer has a chat template, else default.",
  },
  {
    key: 'template_bos',
    type: 'bool',
    default: true,
    group: 'dataset',
    help: "Plain templates (default, alpaca, empty) start with the tokenizer's BOS, as the model saw in pre-training (default true). false: no BOS, token for token as LLaMA-Factory's plain templates (its default template has an empty prefix). No effect on chat.",
  },
  {
    key: 'cutoff_len',
    type: 'int',
    default: 2048,
    min: 1,
    max: 131072,
    group: 'dataset',
    help: 'Maximum tokens per example (prompt + response); longer examples are truncated by the LLaMA-Factory rule.',
  },
  {
    key: 'max_samples',
    type: 'int',
    default: null,
    nullable: true,
    min: 1,
    max: 1e9,
    group: 'dataset',
    help: 'Use only the first N examples of each dataset. Unset: all.',
  },
  {
    key: 'val_size',
    type: 'float',
    default: 0,
    min: 0,
    countOrRatio: true,
    max: 1e9,
    group: 'dataset',
    help: 'Validation split taken from dataset: a fraction in [0, 1) or a count of examples (integer ≥ 1). 0: no split.',
  },
  {
    key: 'packing',
    type: 'bool',
    default: false,
    group: 'dataset',
    help: 'Pack several examples into each cutoff_len block (greedy knapsack, as LLaMA-Factory).',
  },
  { key: 'train_on_prompt', type: 'bool', default: false, group: 'dataset', help: 'Also compute the loss on prompt tokens (default: response tokens only).' },
  {
    key: 'dataset_dir',
    type: 'string',
    default: null,
    nullable: true,
    group: 'dataset',
    help: "A local folder of dataset files, read before the Hub: Hub-layout copies (<dataset_dir>/<org>/<repo>/<file>) or original files (<dataset_dir>/<name>/raw/, e.g. GLUE's .tsv); custom entries' relative paths start here too. Unset: the Hub only.",
  },
  {
    key: 'dataset_info',
    type: 'string',
    default: null,
    nullable: true,
    group: 'dataset',
    help: "A JSON file of custom dataset registry entries (the built-in entries' shape; see README, Datasets). Unset: <dataset_dir>/dataset_info.json when that file exists.",
  },
  {
    key: 'dataset_task_ids',
    type: 'string-list',
    default: null,
    nullable: true,
    group: 'dataset',
    help: 'Multitask prompt tuning: the task id of each dataset, as ids aligned with dataset (0,1) or key:id pairs (sst2:0,cola:1). Unset: every task 0.',
  },
  {
    key: 'shuffle_samples',
    type: 'bool',
    default: false,
    group: 'dataset',
    help: 'With max_samples, take a random subset (shuffled with seed) instead of the first N examples of each dataset.',
  },
] as const satisfies readonly OptionSpec[];

export const outputOptions = [
  { key: 'output_dir', type: 'string', group: 'output', help: 'Where checkpoints, the adapter, logs and predictions are written.' },
  { key: 'overwrite_output_dir', type: 'bool', default: false, group: 'output', help: 'Allow writing into a non-empty output_dir.' },
  {
    key: 'logging_steps',
    type: 'float',
    default: 10,
    min: 0,
    exclusiveMin: true,
    countOrRatio: true,
    max: 1e9,
    group: 'output',
    help: 'Log every N optimizer steps (a fraction below 1: of the total steps). HF default is 500; PEFT Studio uses 10.',
  },
  {
    key: 'save_steps',
    type: 'float',
    default: 500,
    min: 0,
    exclusiveMin: true,
    countOrRatio: true,
    max: 1e9,
    group: 'output',
    help: 'Save a checkpoint every N optimizer steps (a fraction below 1: of the total steps).',
  },
  {
    key: 'save_total_limit',
    type: 'int',
    default: null,
    nullable: true,
    min: 1,
    max: 1e6,
    group: 'output',
    help: 'Keep at most this many checkpoints (oldest deleted). Unset: keep all.',
  },
  { key: 'run_name', type: 'string', default: null, nullable: true, group: 'output', help: 'A name for the run in logs and the UI.' },
] as const satisfies readonly OptionSpec[];

export const exportOptions = [
  {
    key: 'export_dir',
    type: 'string',
    default: null,
    nullable: true,
    group: 'output',
    help: 'Where `peft-studio export` writes the model (default: <output_dir>/merged, or <output_dir>/onnx with export_format onnx).',
  },
  {
    key: 'export_merged',
    type: 'bool',
    default: false,
    group: 'output',
    help: 'After training (and in `peft-studio export`), also write the base model with the adapter merged, as an HF model folder (methods that can merge).',
  },
  {
    key: 'export_format',
    type: 'enum',
    default: 'safetensors',
    choices: ['safetensors', 'onnx'],
    group: 'output',
    help: 'Merged model format: safetensors (an HF model folder) or onnx (the folder transformers.js and onnxruntime-web load: onnx/model.onnx with a key/value cache, config.json, tokenizer files).',
  },
  {
    key: 'export_onnx_dtypes',
    type: 'string-list',
    default: 'fp32',
    group: 'output',
    help: 'ONNX weight types to write besides fp32, named as transformers.js names them: fp16 (onnx/model_fp16.onnx), q8 (onnx/model_quantized.onnx, int8 weights).',
  },
] as const satisfies readonly OptionSpec[];

export const trainOptions = [
  { key: 'per_device_train_batch_size', type: 'int', default: 8, min: 1, max: 4096, group: 'train', help: 'Examples per micro-batch.' },
  {
    key: 'gradient_accumulation_steps',
    type: 'int',
    default: 1,
    min: 1,
    max: 65536,
    group: 'train',
    help: 'Micro-batches per optimizer step; the loss is averaged over all valid tokens of the step.',
  },
  { key: 'learning_rate', type: 'float', default: 5e-5, min: 0, max: 100, group: 'train', help: 'Peak learning rate of AdamW.' },
  {
    key: 'weight_decay',
    type: 'float',
    default: 0,
    min: 0,
    max: 100,
    group: 'train',
    help: 'Decoupled weight decay (not applied to biases and norm weights).',
  },
  { key: 'adam_beta1', type: 'float', default: 0.9, min: 0, max: 1, exclusiveMax: true, group: 'train', help: 'AdamW β1.' },
  { key: 'adam_beta2', type: 'float', default: 0.999, min: 0, max: 1, exclusiveMax: true, group: 'train', help: 'AdamW β2.' },
  { key: 'adam_epsilon', type: 'float', default: 1e-8, min: 0, max: 1, group: 'train', help: 'AdamW ε.' },
  {
    key: 'optim',
    type: 'enum',
    default: 'adamw_torch',
    choices: ['adamw_torch', 'adamw_torch_fused'],
    group: 'train',
    help: 'Optimizer (both are torch AdamW; GaLore is selected with use_galore).',
  },
  { key: 'num_train_epochs', type: 'float', default: 3, min: 0, max: 1e6, group: 'train', help: 'Epochs (may be fractional). Ignored when max_steps > 0.' },
  { key: 'max_steps', type: 'int', default: -1, min: -1, max: 1e9, group: 'train', help: 'Total optimizer steps; overrides num_train_epochs when > 0.' },
  {
    key: 'lr_scheduler_type',
    type: 'enum',
    default: 'linear',
    choices: ['linear', 'cosine', 'constant', 'constant_with_warmup'],
    group: 'train',
    help: 'Learning-rate schedule (transformers get_scheduler).',
  },
  {
    key: 'warmup_ratio',
    type: 'float',
    default: 0,
    min: 0,
    max: 1,
    group: 'train',
    help: 'Warmup as a fraction of the total steps (used when warmup_steps is 0).',
  },
  { key: 'warmup_steps', type: 'int', default: 0, min: 0, max: 1e9, group: 'train', help: 'Warmup steps; overrides warmup_ratio when > 0.' },
  {
    key: 'max_grad_norm',
    type: 'float',
    default: 1,
    min: 0,
    max: 1e6,
    group: 'train',
    help: 'Clip the global gradient L2 norm to this value (0: no clipping).',
  },
  {
    key: 'gradient_checkpointing',
    type: 'bool',
    default: false,
    group: 'train',
    help: "Recompute each decoder layer's activations during the backward instead of keeping them: activation memory of one layer instead of all, for about one more forward pass of time.",
  },
  {
    key: 'seed',
    type: 'int',
    default: 42,
    min: 0,
    max: 4294967295,
    group: 'train',
    help: 'Seed for initialisation, shuffling, the validation split and dropout.',
  },
  {
    key: 'resume_from_checkpoint',
    type: 'string',
    default: null,
    nullable: true,
    acceptsBool: true,
    group: 'train',
    help: 'Resume training: true for the newest checkpoint in output_dir, or a checkpoint path. Unset/false: start fresh.',
  },
  {
    key: 'bf16',
    type: 'bool',
    default: false,
    group: 'train',
    help: 'Accepted for LLaMA-Factory configs; PEFT Studio computes in fp32 (results differ from bf16 runs at bf16 precision).',
  },
] as const satisfies readonly OptionSpec[];

export const evalOptions = [
  { key: 'do_eval', type: 'bool', default: false, group: 'eval', help: 'Evaluate on the validation data after training.' },
  { key: 'per_device_eval_batch_size', type: 'int', default: 8, min: 1, max: 4096, group: 'eval', help: 'Examples per evaluation batch.' },
  {
    key: 'eval_strategy',
    type: 'enum',
    default: 'no',
    choices: ['no', 'steps', 'epoch'],
    group: 'eval',
    help: 'When to evaluate during training: never, every eval_steps, or after every epoch (and after the last step).',
  },
  {
    key: 'eval_steps',
    type: 'float',
    default: null,
    nullable: true,
    min: 0,
    exclusiveMin: true,
    countOrRatio: true,
    max: 1e9,
    group: 'eval',
    help: 'Evaluate every N optimizer steps with eval_strategy: steps (a fraction below 1: of the total steps). Unset: logging_steps, as HF.',
  },
] as const satisfies readonly OptionSpec[];

/** PSCP constants (METRICS.md, src/eval/pscp.ts): PSCP = P · Π (1 + M/C)^(−β). */
export const pscpOptions = [
  {
    key: 'pscp_cp',
    type: 'float',
    default: 5e8,
    min: 0,
    exclusiveMin: true,
    max: 1e15,
    group: 'eval',
    help: 'PSCP C_p: trainable-parameter scale (PEFT-Bench default 5e8).',
  },
  {
    key: 'pscp_cf',
    type: 'float',
    default: 10,
    min: 0,
    exclusiveMin: true,
    max: 1e9,
    group: 'eval',
    help: 'PSCP C_f: inference-compute scale in TFLOPs of one 1×512 forward (default 10).',
  },
  {
    key: 'pscp_cm',
    type: 'float',
    default: 94,
    min: 0,
    exclusiveMin: true,
    max: 1e9,
    group: 'eval',
    help: 'PSCP C_m: peak training memory scale in GB (default 94).',
  },
  {
    key: 'pscp_bp',
    type: 'float',
    default: 1,
    min: 0,
    max: 100,
    group: 'eval',
    help: 'PSCP β_p: exponent of the parameter penalty (default 1; the PEFT-Bench paper table uses 2).',
  },
  {
    key: 'pscp_bf',
    type: 'float',
    default: 1,
    min: 0,
    max: 100,
    group: 'eval',
    help: 'PSCP β_f: exponent of the compute penalty (default 1; the paper table uses 2).',
  },
  {
    key: 'pscp_bm',
    type: 'float',
    default: 1,
    min: 0,
    max: 100,
    group: 'eval',
    help: 'PSCP β_m: exponent of the memory penalty (default 1; the paper table uses 2).',
  },
] as const satisfies readonly OptionSpec[];

export const predictOptions = [
  { key: 'do_predict', type: 'bool', default: false, group: 'predict', help: 'Run prediction on eval_dataset (or the validation split).' },
  { key: 'predict_with_generate', type: 'bool', default: false, group: 'predict', help: 'Predict by generating text (needed for generation metrics).' },
  { key: 'do_sample', type: 'bool', default: true, group: 'predict', help: 'Sample when generating (false: greedy). LLaMA-Factory default true.' },
  { key: 'temperature', type: 'float', default: 0.95, nullable: true, min: 0, max: 100, group: 'predict', help: 'Sampling temperature. Unset: 1.' },
  { key: 'top_p', type: 'float', default: 0.7, nullable: true, min: 0, max: 1, group: 'predict', help: 'Nucleus sampling mass. Unset: 1.' },
  {
    key: 'top_k',
    type: 'int',
    default: 50,
    nullable: true,
    min: 0,
    max: 1e6,
    group: 'predict',
    help: 'Keep the k most likely tokens when sampling. Unset or 0: all.',
  },
  { key: 'max_new_tokens', type: 'int', default: 1024, min: 1, max: 1048576, group: 'predict', help: 'Maximum tokens generated per example.' },
  {
    key: 'max_predict_samples',
    type: 'int',
    default: null,
    nullable: true,
    min: 1,
    max: 1e9,
    group: 'predict',
    help: 'Predict on at most the first N examples of each eval dataset (after max_samples). Unset: all. A PEFT Studio key, for quick benchmark grids.',
  },
  { key: 'repetition_penalty', type: 'float', default: 1, min: 0, exclusiveMin: true, max: 100, group: 'predict', help: 'Repetition penalty (1: none).' },
] as const satisfies readonly OptionSpec[];

const noEffect = 'Accepted for LLaMA-Factory / PEFT-Factory configs; no effect in PEFT Studio.';

/** Keys that appear in PEFT-Factory's example configs and mean nothing here. */
export const compatOptions = [
  { key: 'trust_remote_code', type: 'bool', default: false, group: 'compat', help: noEffect },
  { key: 'flash_attn', type: 'string', default: 'auto', group: 'compat', help: noEffect },
  { key: 'use_cache', type: 'bool', default: true, group: 'compat', help: noEffect },
  { key: 'overwrite_cache', type: 'bool', default: false, group: 'compat', help: noEffect },
  { key: 'preprocessing_num_workers', type: 'int', default: null, nullable: true, min: 1, max: 1024, group: 'compat', help: noEffect },
  { key: 'dataloader_num_workers', type: 'int', default: 0, min: 0, max: 1024, group: 'compat', help: noEffect },
  { key: 'save_only_model', type: 'bool', default: false, group: 'compat', help: noEffect },
  { key: 'plot_loss', type: 'bool', default: false, group: 'compat', help: noEffect },
  { key: 'include_num_input_tokens_seen', type: 'bool', default: false, group: 'compat', help: noEffect },
  { key: 'load_best_model_at_end', type: 'bool', default: false, group: 'compat', help: noEffect },
  { key: 'push_to_hub', type: 'bool', default: false, group: 'compat', help: noEffect },
  { key: 'push_to_hub_organization', type: 'string', default: null, nullable: true, group: 'compat', help: noEffect },
  { key: 'report_to', type: 'string-list', default: 'none', group: 'compat', help: noEffect },
  { key: 'ddp_timeout', type: 'int', default: 1800, min: 0, max: 1e9, group: 'compat', help: noEffect },
] as const satisfies readonly OptionSpec[];

export const builtinOptions = [
  ...modelOptions,
  ...methodOptions,
  ...datasetOptions,
  ...outputOptions,
  ...exportOptions,
  ...trainOptions,
  ...evalOptions,
  ...pscpOptions,
  ...predictOptions,
  ...compatOptions,
] as const;

// ---------------------------------------------------------------------------
// The typed config, derived from the specs (one source of truth).

type BaseValue<S extends OptionSpec> = S['type'] extends 'int' | 'float'
  ? number
  : S['type'] extends 'bool'
    ? boolean
    : S['type'] extends 'string-list'
      ? string[]
      : S['type'] extends 'enum'
        ? S extends { choices: readonly (infer C extends string)[] }
          ? C
          : string
        : string;

/** The validated value of one option. */
export type OptionValue<S extends OptionSpec> =
  BaseValue<S> | (S extends { nullable: true } ? null : never) | (S extends { acceptsBool: true } ? boolean : never);

/** The validated config of a list of specs: snake_case keys as in YAML. */
export type ConfigOf<L extends readonly OptionSpec[]> = { [S in L[number] as S['key']]: OptionValue<S> };

/**
 * A validated experiment config: every built-in key present (defaults filled
 * in), typed; options registered by methods are present too, as unknown.
 */
export type ExperimentConfig = ConfigOf<typeof builtinOptions> & Record<string, unknown>;

// ---------------------------------------------------------------------------
// The registry.

const registry = new Map<string, OptionSpec>();

/**
 * Adds (or, within the same group, replaces) options. A method folder calls
 * this with its own specs; re-registering a key of the same group replaces it
 * (the method folder owns its options), a key of another group is an error.
 */
export function registerOptions(group: string, specs: readonly OptionSpec[]): void {
  for (const spec of specs) {
    if (spec.group !== group) {
      throw new ConfigError(`Option '${spec.key}' declares group '${spec.group}' but was registered under '${group}'. Make them the same.`);
    }
    const prev = registry.get(spec.key);
    if (prev && prev.group !== group) {
      throw new ConfigError(`Option '${spec.key}' of group '${group}' is already defined by group '${prev.group}'. Rename it.`);
    }
    checkSpec(spec);
    registry.set(spec.key, spec);
  }
}

/**
 * Adds a method name to the finetuning_type choices (idempotent). The method
 * registered with `isDefault` becomes finetuning_type's default (LLaMA-Factory's
 * is LoRA's folder; the registry passes the folder that says so).
 */
export function registerFinetuningType(name: string, isDefault = false): void {
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(name)) {
    throw new ConfigError(`Method name '${name}' is not valid: use lowercase letters, digits, '-' and '_' (e.g. 'my-adapter').`);
  }
  if (!finetuningTypes.includes(name)) finetuningTypes.push(name);
  if (isDefault) {
    const spec = registry.get('finetuning_type');
    if (spec && spec.default === null) registry.set('finetuning_type', { ...spec, default: name, nullable: false });
  }
}

/**
 * Rules between options that the schema itself does not know (a method's
 * required options, flags that select two methods at once): the method
 * registry adds one; validateConfig runs them after every key checked out.
 */
const configChecks: ((config: Record<string, unknown>) => string[])[] = [];
export function registerConfigCheck(check: (config: Record<string, unknown>) => string[]): void {
  if (!configChecks.includes(check)) configChecks.push(check);
}

/** Adds a prompt template name to the template choices (idempotent). */
export function registerTemplateName(name: string): void {
  if (!templateNames.includes(name)) templateNames.push(name);
}

export function optionSpec(key: string): OptionSpec | undefined {
  return registry.get(key);
}

/** Every known option, in registration order (built-ins first). */
export function allOptions(): OptionSpec[] {
  return [...registry.values()];
}

export function knownKeys(): string[] {
  return [...registry.keys()];
}

/** Group names in first-registration order. */
export function optionGroups(): string[] {
  return [...new Set(allOptions().map((s) => s.group))];
}

function checkSpec(spec: OptionSpec): void {
  if (!/^[a-z][a-z0-9_]*$/.test(spec.key)) throw new ConfigError(`Option key '${spec.key}' must be snake_case (a-z, 0-9, _).`);
  // finetuning_type's choices start empty: registerFinetuningType fills them as methods install.
  if (spec.type === 'enum' && !(spec.choices === finetuningTypes || spec.choices?.length))
    throw new ConfigError(`Option '${spec.key}' is an enum without choices.`);
  if (spec.default !== undefined) {
    const problem = checkValue(spec, spec.default).problem;
    if (problem) throw new ConfigError(`Default of option '${spec.key}' is invalid: ${problem}`);
  }
}

for (const spec of builtinOptions) registerOptions(spec.group, [spec]);

// ---------------------------------------------------------------------------
// Validation.

/** A config with one or more problems; `problems` lists them one per entry. */
export class ConfigValidationError extends ConfigError {
  override name = 'ConfigValidationError';
  constructor(
    readonly problems: string[],
    source?: string,
  ) {
    super(
      `${source ? `${source}: ` : ''}${problems.length === 1 ? 'invalid config' : `${problems.length} problems in the config`}:\n` +
        problems.map((p) => `  - ${p}`).join('\n'),
    );
  }
}

/** Levenshtein edit distance (insert, delete, substitute: cost 1). */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** The closest candidate within a third of the word's length (at least 2 edits), or undefined. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `the list ${JSON.stringify(v)}`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'object') return `a mapping ${JSON.stringify(v)}`;
  return `the ${typeof v} ${String(v)}`;
}

function expected(spec: OptionSpec): string {
  const base = {
    int: 'an integer',
    float: 'a number',
    bool: 'true or false',
    string: 'a string',
    enum: `one of ${spec.choices?.join(', ')}`,
    'string-list': 'a list of names (comma-separated string or YAML list)',
  }[spec.type];
  return base + (spec.acceptsBool ? ' or true/false' : '') + (spec.nullable ? ' or null' : '');
}

/**
 * The range of a numeric option without its own bound (a plug-in's): every
 * number in a config, YAML or share link is bounded, so no option can ask for
 * 1e300 steps or a rank of 2^40. Built-in options all declare their own max
 * (tests/unit/config-schema.test.ts checks it).
 */
export const NUMERIC_LIMIT = 1e9;

function bounds(spec: OptionSpec): { min: number; max: number; exclusiveMin: boolean; exclusiveMax: boolean } {
  return {
    min: spec.min ?? -NUMERIC_LIMIT,
    max: spec.max ?? NUMERIC_LIMIT,
    exclusiveMin: spec.min !== undefined && !!spec.exclusiveMin,
    exclusiveMax: spec.max !== undefined && !!spec.exclusiveMax,
  };
}

/** 1e9 rather than 1000000000 for powers of ten. */
const num = (n: number): string =>
  Math.abs(n) >= 1e6 && Number.isInteger(Math.log10(Math.abs(n))) ? `${n < 0 ? '-' : ''}1e${Math.log10(Math.abs(n))}` : String(n);

function rangeText(spec: OptionSpec): string {
  const b = bounds(spec);
  return `${b.exclusiveMin ? '>' : '≥'} ${num(b.min)} and ${b.exclusiveMax ? '<' : '≤'} ${num(b.max)}`;
}

const enumHints: Record<string, string> = {
  template: " LLaMA-Factory's model-specific templates (llama3, qwen, ...) are not built in: use 'chat' to render with the model's own chat template.",
  finetuning_type: ' A custom method must be registered (its folder under peft/) before the config is validated.',
};

/** Checks and normalises one value (string-list → string[]). */
export function checkValue(spec: OptionSpec, v: unknown): { value?: unknown; problem?: string } {
  const k = spec.key;
  if (v === null || v === undefined) {
    return spec.nullable ? { value: null } : { problem: `${k}: must be set (expected ${expected(spec)}), got null.` };
  }
  if (spec.acceptsBool && typeof v === 'boolean') return { value: v };
  const wrongType = (hint = ''): { problem: string } => ({ problem: `${k}: expected ${expected(spec)}, got ${describe(v)}.${hint}` });
  switch (spec.type) {
    case 'int':
    case 'float': {
      if (typeof v !== 'number') {
        const hint = typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v)) ? ' Write the number without quotes.' : '';
        return wrongType(hint);
      }
      if (!Number.isFinite(v)) return wrongType();
      if (spec.type === 'int' && !Number.isInteger(v)) return wrongType();
      const b = bounds(spec);
      const below = b.exclusiveMin ? v <= b.min : v < b.min;
      const above = b.exclusiveMax ? v >= b.max : v > b.max;
      if (below || above) return { problem: `${k}: ${v} is out of range; it must be ${rangeText(spec)}.` };
      if (spec.countOrRatio && v >= 1 && !Number.isInteger(v)) {
        return { problem: `${k}: ${v} is neither a fraction below 1 nor a whole count (an integer ≥ 1).` };
      }
      return { value: v };
    }
    case 'bool':
      if (typeof v !== 'boolean') {
        const hint = typeof v === 'string' && /^(yes|no|on|off|true|false|y|n)$/i.test(v) ? ' Write true or false without quotes.' : '';
        return wrongType(hint);
      }
      return { value: v };
    case 'string':
      if (typeof v !== 'string') return wrongType(typeof v === 'number' || typeof v === 'boolean' ? ' Quote it in YAML if it is a name.' : '');
      return { value: v };
    case 'enum': {
      if (typeof v !== 'string') return wrongType();
      if (spec.aliases && Object.prototype.hasOwnProperty.call(spec.aliases, v)) return { value: spec.aliases[v] };
      if (!spec.choices!.includes(v)) {
        const near = closest(v, spec.choices!);
        const hint = near ? ` Did you mean '${near}'?` : (enumHints[k] ?? '');
        return { problem: `${k}: '${v}' is not one of ${spec.choices!.join(', ')}.${hint}` };
      }
      return { value: v };
    }
    case 'string-list': {
      const list =
        typeof v === 'string'
          ? v
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : v;
      if (!Array.isArray(list) || !list.every((x) => typeof x === 'string' && x.trim() !== '')) return wrongType();
      if (list.length === 0) return { problem: `${k}: the list is empty; name at least one entry.` };
      return { value: list.map((x: string) => x.trim()) };
    }
  }
}

/**
 * Validates a raw config (YAML mapping, CLI overrides, URL form) against every
 * registered option: fills defaults, normalises string lists and collects every
 * problem (unknown keys with the closest known key, wrong types, out-of-range
 * values, enum values not among the choices, missing required keys, and the
 * cross-option rules below) into one ConfigValidationError.
 */
export function validateConfig(raw: Record<string, unknown>, source?: string): ExperimentConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigValidationError([`the config must be a mapping of key: value, got ${describe(raw)}.`], source);
  }
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  const known = knownKeys();
  for (const key of Object.keys(raw)) {
    if (registry.has(key)) continue;
    const near = closest(key, known);
    problems.push(`Unknown key '${key}'${near ? ` — did you mean '${near}'?` : '. It is not a PEFT Studio or LLaMA-Factory option; remove it.'}`);
  }
  for (const spec of registry.values()) {
    const given = Object.prototype.hasOwnProperty.call(raw, spec.key);
    if (!given || raw[spec.key] === undefined) {
      if (spec.default === undefined) {
        problems.push(`Missing required key '${spec.key}': ${spec.help}`);
        continue;
      }
      out[spec.key] = checkValue(spec, spec.default).value;
      continue;
    }
    const { value, problem } = checkValue(spec, raw[spec.key]);
    if (problem) problems.push(problem);
    else out[spec.key] = value;
  }
  if (problems.length === 0) problems.push(...crossChecks(out));
  if (problems.length) throw new ConfigValidationError(problems, source);
  return out as ExperimentConfig;
}

/** Rules between options (LLaMA-Factory rejects the same combinations). */
function crossChecks(c: Record<string, unknown>): string[] {
  const p: string[] = [];
  if (c.do_train && c.dataset === null) p.push('dataset: required when do_train is true (a registry name such as sst2, or a .jsonl path).');
  if (!c.do_train && !c.do_eval && !c.do_predict) p.push('Nothing to do: set do_train, do_eval or do_predict to true.');
  if (c.eval_strategy !== 'no' && c.val_size === 0 && c.eval_dataset === null) {
    p.push(`eval_strategy: '${c.eval_strategy}' needs validation data; set val_size (e.g. 0.1) or eval_dataset.`);
  }
  if (c.base_dtype !== 'auto' && c.torch_dtype !== null && c.torch_dtype !== 'auto' && c.torch_dtype !== c.base_dtype) {
    p.push(`base_dtype: '${c.base_dtype}' and torch_dtype: '${c.torch_dtype}' disagree; set one of them.`);
  }
  if (c.packing && c.predict_with_generate) p.push('packing: cannot pack examples when predicting with generation; set packing: false.');
  for (const check of configChecks) p.push(...check(c));
  return p;
}

/** The effective eval_steps: the configured value, or logging_steps when unset (HF TrainingArguments). */
export function effectiveEvalSteps(config: Pick<ExperimentConfig, 'eval_steps' | 'logging_steps'>): number {
  return config.eval_steps ?? config.logging_steps;
}
