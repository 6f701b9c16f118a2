/**
 * A first estimate of training memory on the GPU, before anything runs (the
 * Train screen shows the measured peak from the buffer pool). All f32:
 *
 *   weights      4·P
 *   trainable    16·T        (value, gradient, AdamW m and v)
 *   activations  4·B·S·(L·(10·d + 3·f + h·S) + 2·V)
 *
 * with P parameters, T trainable, batch B, sequence S = cutoff_len, L layers,
 * hidden d, FFN f, h heads, vocabulary V. Per layer the backward keeps about
 * ten d-wide tensors (norm inputs, q/k/v, attention output, residuals), three
 * f-wide ones (gate, up, their product) and the h·S attention probabilities per
 * token; the head keeps logits and their gradient.
 */
import type { ModelSummary } from '../worker/api';

export interface MemoryEstimate {
  weights: number;
  trainable: number;
  activations: number;
  total: number;
}

export function estimateTrainingBytes(m: ModelSummary, trainable: number, batch: number, seq: number): MemoryEstimate {
  const weights = 4 * m.numParams;
  const train = 16 * trainable;
  const perToken = m.numLayers * (10 * m.hiddenSize + 3 * m.intermediateSize + m.numHeads * seq) + 2 * m.vocabSize;
  const activations = 4 * batch * seq * perToken;
  return { weights, trainable: train, activations, total: weights + train + activations };
}
