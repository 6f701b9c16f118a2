/**
 * The language-model loss of one micro-batch: the summed token cross-entropy
 * of the shifted targets (-100 = not trained).
 *
 * The logits [N, V] of a large vocabulary can exceed one storage binding
 * (Qwen2.5's 151,936 tokens × 256 positions × 4 B = 156 MB against the
 * 128 MiB most adapters give). Then the head and the loss run on row chunks of
 * the final hidden states: loss = Σ_chunks CE(head(x[rows])), which is the same
 * sum; each chunk's logits fit a binding and the backward of the row slices
 * adds every chunk's gradient into x.
 */
import type { Engine } from '../engine/engine';
import type { Tensor } from '../engine/tensor';
import { add } from '../engine/ops/add';
import { sliceSeq } from '../engine/ops/concat';
import { crossEntropy } from '../engine/ops/cross_entropy';
import type { ForwardOptions, LlamaModel } from '../model/llama';

export interface LossBatch {
  ids: Int32Array;
  targets: Int32Array;
  B: number;
  T: number;
}

/** Rows of logits [rows, V] that fit one binding (at least 1). */
export function logitRowsPerBinding(e: Engine, vocabSize: number): number {
  return Math.max(1, Math.floor(e.maxBindingBytes / (vocabSize * 4)));
}

export function languageModelLoss(e: Engine, model: LlamaModel, mb: LossBatch, opts: ForwardOptions = {}): Tensor {
  const V = model.config.vocabSize,
    C = model.config.hiddenSize,
    N = mb.B * mb.T;
  const rows = logitRowsPerBinding(e, V);
  if (rows >= N) return crossEntropy(e, model.forward(mb.ids, mb.B, opts).reshape([N, V]), mb.targets, { reduction: 'sum' });
  const x = model.hidden(mb.ids, mb.B, opts).reshape([1, N, C]);
  let loss: Tensor | null = null;
  for (let start = 0; start < N; start += rows) {
    const len = Math.min(rows, N - start);
    const logits = model.head(sliceSeq(e, x, 1, N, start, len, C)).reshape([len, V]);
    const part = crossEntropy(e, logits, mb.targets.subarray(start, start + len), { reduction: 'sum' });
    loss = loss ? add(e, loss, part) : part;
  }
  return loss!;
}
