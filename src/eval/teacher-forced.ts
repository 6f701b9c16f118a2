/**
 * Token accuracy of a model on encoded examples (LLaMA-Factory's
 * ComputeAccuracy, which it reports as `accuracy` after an evaluation pass
 * without generation): one teacher-forced forward per batch, the argmax of the
 * logits at every position, scored by computeTokenAccuracy (argmax at t
 * against the label at t + 1, masked positions ignored, mean per example then
 * over examples).
 *
 * Batches are right-padded with an attention mask, so padding never changes
 * the logits of real positions; the argmax is taken on the CPU from the
 * logits read back one batch at a time ([B, T, V] floats).
 */
import type { EncodedExample } from '../data/sft';
import type { LlamaModel } from '../model/llama';
import { argmaxRows, computeTokenAccuracy, type TokenAccuracy } from './token-accuracy';

export async function teacherForcedTokenAccuracy(
  model: LlamaModel,
  examples: readonly EncodedExample[],
  opts: { batchSize: number; padId: number; signal?: AbortSignal },
): Promise<TokenAccuracy> {
  const e = model.e;
  const V = model.config.vocabSize;
  const preds: Int32Array[] = [];
  const labels: number[][] = [];
  for (let i = 0; i < examples.length; i += opts.batchSize) {
    if (opts.signal?.aborted) break;
    const batch = examples.slice(i, i + opts.batchSize);
    const B = batch.length;
    const T = Math.max(...batch.map((x) => x.inputIds.length));
    const ids = new Int32Array(B * T).fill(opts.padId);
    const mask = new Int32Array(B * T);
    const taskIds = new Int32Array(B);
    batch.forEach((x, b) => {
      ids.set(x.inputIds, b * T);
      mask.fill(1, b * T, b * T + x.inputIds.length);
      taskIds[b] = x.taskId ?? 0;
    });
    e.beginScope();
    try {
      const logits = model.forward(ids, B, { attentionMask: mask, taskIds });
      const arg = argmaxRows(await e.read(logits), B * T, V);
      batch.forEach((x, b) => {
        preds.push(arg.slice(b * T, b * T + x.inputIds.length));
        labels.push(x.labels);
      });
    } finally {
      e.endScope();
    }
  }
  return computeTokenAccuracy(preds, labels);
}
