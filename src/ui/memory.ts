/**
 * Training memory on the GPU, estimated before a step runs (the Train screen
 * and `peft-studio bench` show the measured peak of the buffer pool beside
 * it). Bytes, with B batch, S = cutoff_len tokens, L layers, C hidden, F FFN,
 * Hq / Hkv heads of head dim D, V vocabulary, T trainable parameters:
 *
 *   resident     what the model holds with the method attached: base weights
 *                in their stored format (f32, packed f16/bf16, NF4), the
 *                method's frozen and trainable tensors. Measured by the
 *                caller after attaching (the pool's bytes in use); without
 *                it, the weights' stored bytes (weightBytes) plus 4 per
 *                trainable parameter.
 *   trainable    12·T       (gradient, AdamW m and v; the value is resident)
 *   activations  4·B·S·(kept + 2·layer + head)
 *
 * One decoder layer's forward outputs, per token, all f32 (norm outputs,
 * q/k/v, their RoPE copies, the attention output and its softmax stats, o,
 * the residual sums, gate, up, their SwiGLU product, down):
 *
 *   layer = 6C + 3F + 3·Hq·D + 3·Hkv·D
 *
 * plus 2 + 2·Hq values the backward keeps without a gradient (RMSNorm rstd,
 * attention max / sum). The backward gives every one of them a gradient of
 * its size, and the tape keeps both until the step ends, so the stored path
 * holds kept = L·(2·layer + 2 + 2·Hq). Recomputation keeps only each layer's
 * input (L·C) and two boundary gradients, and holds one layer's activations
 * and gradients at a time: kept = L·C + 2C + 2·layer. The head holds the final
 * norm, its gradient, the embedding output and the residual gradient (4C), the
 * logits and their gradient (2V).
 *
 * Buffers come from the pool's size classes (see src/gpu/pool.ts: up to
 * 1/8 above the request; 1/16 on average), which the activation term includes.
 */
import type { ModelSummary } from '../worker/api';

export interface MemoryEstimate {
  weights: number;
  trainable: number;
  activations: number;
  total: number;
}

export interface MemoryInputs {
  /** Trainable parameters of the method. */
  trainable: number;
  batch: number;
  /** Tokens per sequence (cutoff_len). */
  seq: number;
  /** gradient_checkpointing: recompute each decoder layer in the backward. */
  recompute?: boolean;
  /** Bytes on the GPU with the method attached, measured (see the file comment); default the stored weight bytes plus 4 per trainable parameter. */
  residentBytes?: number;
}

/** Average rounding of the pool's size classes (steps of 1/8 of a power of two). */
const POOL_ROUNDING = 1 + 1 / 16;

export function estimateTrainingBytes(m: ModelSummary, x: MemoryInputs): MemoryEstimate {
  const C = m.hiddenSize,
    F = m.intermediateSize,
    L = m.numLayers,
    Hq = m.numHeads,
    Hkv = m.numKvHeads;
  const D = m.headDim ?? C / Hq;
  const layer = 6 * C + 3 * F + 3 * Hq * D + 3 * Hkv * D;
  const kept = x.recompute ? L * C + 2 * C + 2 * layer + 2 + 2 * Hq : L * (2 * layer + 2 + 2 * Hq);
  const head = 4 * C + 2 * m.vocabSize;
  const activations = Math.round(4 * x.batch * x.seq * (kept + head) * POOL_ROUNDING);
  // Unmeasured: the base weights as stored (packed f16 / bf16 at 2 bytes) plus the trainable values.
  const weights = x.residentBytes ?? (m.weightBytes ?? 4 * m.numParams) + 4 * x.trainable;
  const trainable = 12 * x.trainable;
  return { weights, trainable, activations, total: weights + trainable + activations };
}
