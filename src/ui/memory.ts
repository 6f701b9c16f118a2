/**
 * Training memory on the GPU, estimated before a step runs (the Model panel
 * and `peft-studio bench` show the measured peak of the buffer pool beside
 * it). Bytes, with B batch, S = cutoff_len tokens, n virtual tokens, T = S + n
 * positions the decoder layers run on, P key/value prefix rows, L layers,
 * C hidden, F FFN, Hq / Hkv heads of head dim D, V vocabulary:
 *
 *   resident     what the model holds with the method attached: base weights
 *                in their stored format (f32, packed f16/bf16, NF4), the
 *                method's frozen and trainable tensors (and the optimizer
 *                state of tensors that update themselves, GaLore's). Measured
 *                by the caller after attaching (the pool's bytes in use; after
 *                a countOnly attach corrected by MethodMemory.residentChange);
 *                without it, the weights' stored bytes (weightBytes) plus 4
 *                per trainable parameter.
 *   trainable    4 per trainable parameter (its gradient) + 8 per parameter
 *                the trainer's AdamW updates (m and v)
 *   activations  what the tape keeps, below
 *
 * One decoder layer's forward outputs at B·T positions, all f32 (norm outputs,
 * q/k/v, their RoPE copies, the attention output, o, the residual sums, gate,
 * up, their SwiGLU product, down), values per position:
 *
 *   layer = 6C + 3F + 3·Hq·D + 3·Hkv·D
 *
 * each with a gradient of its size (none in the layers before the method's
 * first trainable tensor, MethodMemory.gradientFromLayer), plus what the
 * backward keeps without a gradient (attention max / sum, 2·Hq per position;
 * two RMSNorm rstd). With a key/value prefix the layer also concatenates the
 * P prefix rows before its keys and values: 2 · B·(P + T)·Hkv·D and their
 * gradients. The method's own tensors come from AttachedMethod.memory
 * (src/methods/types.ts: MethodMemory), by layer or outside the layers. The
 * tape keeps all of it until the step ends, so the stored path holds every
 * layer's; recomputation keeps each layer's output (L·B·T·C) and two boundary
 * gradients, and holds one layer's activations and gradients at a time (the
 * largest layer's).
 *
 * A method's scratch from its own optimizer update (ActivationTensor.update)
 * adds to the stored path's peak, not to a recomputed one's.
 *
 * Outside the layers: the input embeddings (B·S·C), with virtual tokens the
 * [B, T, C] sequence the layers start from and the real tokens sliced back out
 * of their output (both with gradients), the final norm and its gradient, the
 * logits and their gradient (2·B·S·V), and per token the ids, positions, key
 * mask, labels, the loss's per-token values and log-sum-exp.
 *
 * Every tensor is counted at its size in the pool (src/gpu/pool.ts rounds a
 * buffer up to its size class: up to 1/8 above the request).
 */
import { bucketSize } from '../gpu/pool';
import type { MethodInfo } from '../methods/select';
import type { MethodMemory } from '../methods/types';
import type { ModelSummary, TrainableCount } from '../worker/api';
import { countConfig } from './config-form';

/** What the estimate reads of a model: its shape (a ModelSummary, or a ModelConfig with numParams). */
export type MemoryModel = Pick<
  ModelSummary,
  'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'vocabSize' | 'headDim' | 'numParams' | 'weightBytes'
>;

export interface MemoryEstimate {
  weights: number;
  trainable: number;
  activations: number;
  total: number;
}

export interface MemoryInputs {
  /** Trainable parameters of the method. */
  trainable: number;
  /** Of those, the parameters the trainer's AdamW updates (two moments each); default all. The rest update themselves (TrainableParam.update) with state that is resident. */
  adamw?: number;
  batch: number;
  /** Tokens per sequence (cutoff_len). */
  seq: number;
  /** gradient_checkpointing: recompute each decoder layer in the backward. */
  recompute?: boolean;
  /** Bytes on the GPU with the method attached, measured (see the file comment); default the stored weight bytes plus 4 per trainable parameter. */
  residentBytes?: number;
  /** Virtual tokens the method prepends to every sequence (LlamaModel.virtualTokens()). */
  virtualTokens?: number;
  /** What the method's forward keeps (AttachedMethod.memory). */
  memory?: MethodMemory;
}

export function estimateTrainingBytes(m: MemoryModel, x: MemoryInputs): MemoryEstimate {
  const C = m.hiddenSize,
    F = m.intermediateSize,
    L = m.numLayers,
    Hq = m.numHeads,
    Hkv = m.numKvHeads,
    V = m.vocabSize;
  const D = m.headDim ?? C / Hq;
  const B = x.batch,
    S = x.seq,
    T = S + (x.virtualTokens ?? 0),
    P = x.memory?.kvPrefixTokens ?? 0;
  /** Pool bytes of one f32 (or i32) tensor of `values`, and of one with its gradient. */
  const one = (values: number) => (values > 0 ? bucketSize(4 * values) : 0);
  const withGrad = (values: number) => 2 * one(values);

  // One decoder layer of the base model: its outputs, and what the backward adds (their gradients).
  let forward = one(B * T * 2 * Hq) + 2 * one(B * T);
  for (const w of [C, Hq * D, Hkv * D, Hkv * D, Hq * D, Hkv * D, Hq * D, C, C, C, F, F, F, C, C]) forward += one(B * T * w);
  let gradients = forward - one(B * T * 2 * Hq) - 2 * one(B * T);
  if (P > 0) {
    forward += 2 * one(B * (P + T) * Hkv * D) + one(B * (P + T));
    gradients += 2 * one(B * (P + T) * Hkv * D);
  }
  // Layers before the method's first trainable tensor get no gradients.
  const first = Math.min(L, Math.max(0, x.memory?.gradientFromLayer ?? 0));

  // The method's tensors, by layer and outside the layers.
  const layers = Array.from({ length: L }, (_, l) => forward + (l >= first ? gradients : 0));
  let outside = 0,
    update = 0;
  for (const t of x.memory?.activations ?? []) {
    const values = (t.perToken ?? 0) * B * T + (t.perSequence ?? 0) * B + (t.fixed ?? 0);
    const bytes = (t.grad === false ? one(values) : withGrad(values)) * (t.count ?? 1);
    if (t.update) update += bytes;
    else if (t.layer !== undefined && t.layer >= 0 && t.layer < L) layers[t.layer] += bytes;
    else outside += bytes;
  }
  const kept = x.recompute ? L * one(B * T * C) + 2 * one(B * T * C) + Math.max(...layers) : layers.reduce((a, b) => a + b, 0);

  let head = one(B * S * C) + withGrad(B * S * C) + one(B * S) + withGrad(B * S * V) + 6 * one(B * S);
  if (T > S) head += withGrad(B * T * C) + withGrad(B * S * C);

  // The method's own update comes after the backward: on top of the stored activations (the pool gets them
  // back when the step is submitted), past a recomputed step's peak (its layers' activations are gone by then).
  const activations = kept + head + outside + (x.recompute ? 0 : update);
  // Unmeasured: the base weights as stored (packed f16 / bf16 at 2 bytes) plus the trainable values.
  const weights = x.residentBytes ?? (m.weightBytes ?? 4 * m.numParams) + 4 * x.trainable;
  const trainable = 4 * x.trainable + 8 * (x.adamw ?? x.trainable);
  return { weights, trainable, activations, total: weights + trainable + activations };
}

/**
 * The estimate for an experiment's settings (batch, cutoff_len,
 * gradient_checkpointing) from a trainable-parameter count of its method on
 * the model: what the Model panel shows for the form, and the Train screen
 * beside a run's measured peak.
 */
export function estimateForConfig(m: MemoryModel, count: TrainableCount, config: Record<string, unknown>): MemoryEstimate {
  return estimateTrainingBytes(m, {
    trainable: count.trainable,
    batch: Number(config.per_device_train_batch_size) || 1,
    seq: Number(config.cutoff_len) || 1,
    recompute: config.gradient_checkpointing === true,
    residentBytes: count.residentBytes,
    adamw: count.adamw,
    virtualTokens: count.virtualTokens,
    memory: count.memory,
  });
}

/**
 * The estimate for a run's config (RunInfo.config), or null when the page's
 * count does not describe it: the count was made for other method options
 * (`countKey`: StudioState.countTargetKey when it was made) or the loaded model
 * is not the run's. The Train screen shows it beside the measured peak.
 */
export function estimateForRun(
  m: MemoryModel & Pick<ModelSummary, 'repo'>,
  count: TrainableCount,
  countKey: string,
  config: Record<string, unknown>,
  methods: MethodInfo[],
): MemoryEstimate | null {
  if (m.repo !== config.model_name_or_path || countKey !== JSON.stringify(countConfig(config, methods))) return null;
  return estimateForConfig(m, count, config);
}
