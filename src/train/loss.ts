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
import { crossEntropy } from '../engine/ops/cross_entropy';
import type { ForwardOptions, LlamaModel } from '../model/llama';
import { forEachLogitChunk } from '../model/logits';

export interface LossBatch {
  ids: Int32Array;
  targets: Int32Array;
  B: number;
  T: number;
}

export function languageModelLoss(e: Engine, model: LlamaModel, mb: LossBatch, opts: ForwardOptions = {}): Tensor {
  let loss: Tensor | null = null;
  forEachLogitChunk(model, model.hidden(mb.ids, mb.B, opts), (logits, start, len) => {
    const part = crossEntropy(e, logits, mb.targets.subarray(start, start + len), { reduction: 'sum' });
    loss = loss ? add(e, loss, part) : part;
    return loss;
  });
  return loss!;
}
