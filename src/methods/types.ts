/**
 * The PEFT method interface. A method is a folder under peft/ with a
 * config.ts (its options, the same OptionSpec schema built-in keys use) and a
 * method.ts exporting a `PeftMethod`. It attaches to the model only through
 * the model's insertion points (`model.attach(hooks)`, `model.param(...)`,
 * `model.addBias(...)`), never by editing src/model.
 */
import type { OptionSpec } from '../config/schema';
import type { Engine } from '../engine/engine';
import type { Tensor } from '../engine/tensor';
import type { LinearLayer } from '../eval/flops';
import type { ModelConfig } from '../model/config';
import type { LlamaModel } from '../model/llama';

export interface HostTensor {
  shape: number[];
  data: Float32Array;
  /** How it is stored in safetensors (default F32); I64 for index buffers (SVFT). */
  dtype?: 'F32' | 'I64';
}

/** One trainable tensor and its optimizer group. */
export interface TrainableParam {
  /** Export-style name, unique within the run (checkpoint key). */
  name: string;
  tensor: Tensor;
  /** Multiplies the base learning rate (LoRA+ B matrices). Default 1. */
  lrScale?: number;
  /** Whether weight decay applies (HF: not for biases and norm weights). Default: the HF name rule. */
  decay?: boolean;
  /**
   * Optimizer hook (GaLore): replaces the trainer's AdamW update for this
   * tensor (the trainer then allocates no AdamW moments for it: the method
   * keeps its own state, see `state`). Called after clipping with the clip
   * factor as a [1] tensor. May return a Promise (GaLore reads the gradient
   * back for its SVD at projector refreshes); the trainer awaits it before
   * the next tensor's update and before it clears the gradient.
   */
  update?: (u: OptimizerUpdate) => void | Promise<void>;
  /** Extra optimizer state to checkpoint (name → tensor), for custom updates. */
  state?: () => Map<string, Tensor>;
}

export interface OptimizerUpdate {
  e: Engine;
  grad: Tensor;
  /** Clip factor min(1, max_grad_norm / norm), [1] on the GPU. */
  clip: Tensor;
  /** Learning rate for this step (schedule and lrScale applied). */
  lr: number;
  /** 1-based optimizer step. */
  step: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface MethodContext {
  e: Engine;
  model: LlamaModel;
  /** The validated experiment config (snake_case keys as in YAML). */
  config: Record<string, unknown>;
  /** Seeded uniform [0, 1) generator for initialisation. */
  random: () => number;
  /** The model's tokenizer, when the host has one (prompt tuning's TEXT init); encode adds special tokens (BOS). */
  tokenizer?: { encode(text: string): number[] };
  /**
   * Attached only to count trainable parameters (trainable(), then detach()):
   * skip work that does not change the count and would change the base model
   * for whoever attaches next (QLoRA's quantization, PiSSA's SVD).
   */
  countOnly?: boolean;
}

/** What forwardFlops (src/eval/flops.ts) hands a method: the probe and the config. */
export interface FlopsContext {
  model: ModelConfig;
  /** The decoder's linear layers, as LlamaModel.linearNames() orders them. */
  linears: LinearLayer[];
  batch: number;
  seq: number;
  /** The experiment config (the method reads its own keys, e.g. with readOptions). */
  config: Record<string, unknown>;
}

/** A method's share of one forward pass (src/eval/flops.ts counts the base model around it). */
export interface MethodFlops {
  /** FLOPs of the method's own work on the probe (its matmuls, prefix attention, encoders). */
  flops: number;
  /** Tokens the method prepends to the sequence (the base model then runs on seq + virtualTokens). */
  virtualTokens?: number;
  /** Linear layers whose base matmul the method replaces (SVFT): not counted as base work. */
  replaced?: string[];
}

/**
 * One tensor a method's forward makes and the backward keeps until the step
 * ends (or, inside a decoder layer under gradient checkpointing, until that
 * layer's recomputed backward is done), for the memory estimate
 * (src/ui/memory.ts). f32 values: perToken · B · T + perSequence · B + fixed,
 * with B the batch and T the positions the decoder layers run on (cutoff_len
 * plus the virtual tokens).
 */
export interface ActivationTensor {
  perToken?: number;
  perSequence?: number;
  fixed?: number;
  /** The decoder layer whose hooks make it; absent: made once per forward outside the layers (inputEmbeds, beginForward). */
  layer?: number;
  /** The backward gives it a gradient of its size (default true). */
  grad?: boolean;
  /** How many alike (default 1). */
  count?: number;
  /**
   * Made by its own optimizer update (TrainableParam.update), after the
   * backward: it adds to the stored activations, which the pool gets back only
   * when the step is submitted, but not to a recomputed step's peak (one
   * layer's backward), which is over by then.
   */
  update?: boolean;
}

/**
 * What a method adds to a training step's GPU memory that the estimate
 * cannot see from outside. The estimate already counts its tensors held at
 * attach time (measured), a gradient and AdamW moments per trainable value
 * (none for tensors with their own `update`: their state is resident), and
 * the base model's activations over the longer sequence virtual tokens make
 * (ModelHooks.virtualTokens). Default: nothing.
 */
export interface MethodMemory {
  /** Key/value rows each decoder layer's attention gets before the sequence's (ModelHooks.kvPrefix): the keys and values the layer concatenates. */
  kvPrefixTokens?: number;
  /**
   * Tensors its hooks make in the forward and the backward keeps (intermediates,
   * per-forward copies of its tensors), and scratch its backward or its own
   * update makes, which the pool gets back only when the step's commands are
   * submitted.
   */
  activations?: ActivationTensor[];
  /**
   * The first decoder layer whose activations get gradients (default 0): the
   * layers before it see no trainable tensor, so the backward gives theirs
   * none (an adapter after layer 0's MLP: 1; LoRA on layers 8 and up: 8).
   */
  gradientFromLayer?: number;
  /**
   * Attached with `countOnly`: how many bytes the pool will hold beyond
   * (negative: below) what it holds now once the skipped work is done (QLoRA's
   * quantization replaces the f32 or 16-bit linears by NF4 blocks), so that the
   * estimate from a count sees the resident bytes of training.
   */
  residentChange?: number;
}

export interface AdapterFiles {
  /** adapter_config.json content. */
  config: Record<string, unknown>;
  /** Tensors of adapter_model.safetensors, by export key. */
  tensors: Map<string, HostTensor>;
  /**
   * Folder layout (adapter-files.ts): 'peft' (default) is HF PEFT's; 'adapters'
   * is the Adapters library's (adapter_config.json, pytorch_adapter.bin,
   * adapter.safetensors), used by the bottleneck adapters.
   */
  layout?: 'peft' | 'adapters';
  /** Adapters layout: the adapter's name (the <n> of its tensor keys). */
  adapterName?: string;
}

export interface AttachedMethod {
  /** Settles when asynchronous initialisation (an SVD after a GPU readback: PiSSA, SVFT) is done. */
  ready?: Promise<void>;
  /** Extra adapter folders to write beside the main one (PiSSA's pissa_init/, pissa_converted/). */
  extraAdapters?(): Promise<Map<string, AdapterFiles>>;
  trainable(): TrainableParam[];
  /** The adapter in its interchange layout (HF PEFT for LoRA). */
  exportAdapter(): Promise<AdapterFiles>;
  /** Load tensors written by exportAdapter (or by Python PEFT). */
  importAdapter(files: AdapterFiles): void;
  /** What its forward keeps for the backward beyond the base model's activations (see MethodMemory); default nothing. */
  memory?(): MethodMemory;
  /** Fold the adapter into the base weights, when the math allows. */
  merge?(): Promise<void>;
  /** Remove the hooks and free the method's tensors. */
  detach(): void;
}

export interface PeftMethod {
  /** The finetuning_type value that selects it (= its folder name). */
  name: string;
  /** Display name ("LoRA", "Prefix tuning"); default: name. */
  label?: string;
  /** The family it is listed under ("LoRA family"); default "Plug-ins". */
  family?: string;
  /** One line: what it trains and how (forms, `peft-studio methods`). */
  description: string;
  /** Position in lists (built-ins: their METHODS.md section); default after those. */
  order?: number;
  /**
   * Every option it reads, in the order its form shows them: its own specs
   * (config.ts) and shared ones (peft-studio/methods/options) it uses.
   * Default: the specs config.ts exports.
   */
  options?: readonly OptionSpec[];
  /** Keys of `options` that the schema allows unset but this method needs (num_virtual_tokens). */
  required?: readonly string[];
  /**
   * LLaMA-Factory selects some methods with a flag on another finetuning_type
   * (QLoRA: lora + quantization_bit 4). With `select`, finetuning_type
   * `finetuning_type` and `key` set (not null / false) select this method;
   * `value` is what a form writes to pick it. `key` must be one of `options`.
   */
  select?: { finetuning_type: string; key: string; value: unknown };
  /** finetuning_type's default (LLaMA-Factory: lora); at most one method says so. */
  isDefault?: boolean;
  /** Rules between its keys and others (each a "key: problem and fix" sentence); run on every config. */
  configProblems?(config: Record<string, unknown>): string[];
  /** What it adds to one forward pass (PSCP's FLOPs term); { flops: 0 } for a method that adds nothing. */
  flops(ctx: FlopsContext): MethodFlops;
  attach(ctx: MethodContext): AttachedMethod;
  /** The HF PEFT `peft_type` its adapter_config.json carries (LORA, OFT, ...), if any. */
  peftType?: string;
  /** Experiment-config keys equivalent to an adapter_config.json (for loading an adapter folder). */
  configFromAdapter?(adapterConfig: Record<string, unknown>): Record<string, unknown> | null;
}

/**
 * HF PEFT target matching: an entry t matches module path p iff p == t or p
 * ends with "." + t; 'all' (LLaMA-Factory) or 'all-linear' is every linear
 * projection except lm_head.
 */
export function matchTargets(modulePaths: string[], target: unknown): string[] {
  if (target === undefined || target === null) return modulePaths.filter((p) => /\.(q_proj|v_proj)$/.test(p));
  const list =
    typeof target === 'string'
      ? target
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : (target as string[]);
  if (list.length === 1 && (list[0] === 'all' || list[0] === 'all-linear')) return modulePaths.filter((p) => !p.endsWith('lm_head'));
  return modulePaths.filter((p) => list.some((t) => p === t || p.endsWith('.' + t)));
}

/** The decoder layer a module path belongs to ("model.layers.3.mlp.down_proj" → 3); undefined outside the layers (lm_head). */
export function layerOf(modulePath: string): number | undefined {
  const m = /(?:^|\.)layers\.(\d+)\./.exec(modulePath);
  return m ? Number(m[1]) : undefined;
}

/** The first decoder layer among module paths: MethodMemory.gradientFromLayer of a method on those linears (past the last layer when none is in one). */
export function firstLayerOf(modulePaths: Iterable<string>): number {
  let first = Infinity;
  for (const p of modulePaths) first = Math.min(first, layerOf(p) ?? Infinity);
  return first;
}

/** Float32 uniform(-bound, bound) from a seeded generator. */
export function uniform(n: number, bound: number, random: () => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (random() * 2 - 1) * bound;
  return a;
}

/** Standard normals from a seeded uniform generator (Box–Muller, both outputs used: cos, then sin). */
export function gaussian(random: () => number): () => number {
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const u = Math.max(random(), 1e-300),
      w = random();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * w);
    return r * Math.cos(2 * Math.PI * w);
  };
}

/** Float32 N(0, std²) draws (nn.Embedding's default init at std 1). */
export function normal(n: number, std: number, random: () => number): Float32Array {
  const g = gaussian(random);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = std * g();
  return a;
}
