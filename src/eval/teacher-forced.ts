/**
 * Token accuracy of a model on encoded examples (LLaMA-Factory's
 * ComputeAccuracy, which it reports as `accuracy` after an evaluation pass
 * without generation): one teacher-forced forward per batch, the argmax of the
 * logits at every scored position, scored by computeTokenAccuracy (argmax at t
 * against the label at t + 1, masked positions ignored, mean per example then
 * over examples).
 *
 * Batches are right-padded with an attention mask, so padding never changes
 * the logits of real positions. Only positions t whose label t + 1 is scored
 * go through the head (the prompt's do not): their final hidden states are
 * gathered into [M, C], the head runs on row chunks that fit one binding
 * (src/model/logits.ts) and each chunk is reduced to its argmax on the GPU
 * before the next, so neither [B, T, V] logits nor their readback exist: M
 * indices come back per batch.
 */
import type { EncodedExample } from '../data/sft';
import { argmax } from '../engine/ops/argmax';
import type { LlamaModel } from '../model/llama';
import { forEachLogitChunk } from '../model/logits';
import { IGNORE_INDEX, computeTokenAccuracy, type TokenAccuracy } from './token-accuracy';

export async function teacherForcedTokenAccuracy(
  model: LlamaModel,
  examples: readonly EncodedExample[],
  opts: { batchSize: number; padId: number; signal?: AbortSignal },
): Promise<TokenAccuracy> {
  const e = model.e;
  const C = model.config.hiddenSize;
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
    // Rows b·T + t of the scored positions, in order; -1 marks a position that is not scored.
    const rows: number[] = [];
    const batchPreds = batch.map((x, b) => {
      ids.set(x.inputIds, b * T);
      mask.fill(1, b * T, b * T + x.inputIds.length);
      taskIds[b] = x.taskId ?? 0;
      for (let t = 0; t + 1 < Math.min(x.labels.length, x.inputIds.length); t++) if (x.labels[t + 1] !== IGNORE_INDEX) rows.push(b * T + t);
      return new Int32Array(x.inputIds.length).fill(-1);
    });
    if (rows.length > 0) {
      e.beginScope();
      try {
        const h = model.hidden(ids, B, { attentionMask: mask, taskIds });
        // Gather the scored rows, one copy per run of consecutive rows (an answer is one run).
        const x = e.empty([rows.length, C], 'scored_hidden');
        for (let k = 0; k < rows.length;) {
          let n = 1;
          while (k + n < rows.length && rows[k + n] === rows[k] + n) n++;
          e.copyRegion(x, k * C, h, rows[k] * C, n * C);
          k += n;
        }
        const out = e.empty([rows.length], 'argmax');
        forEachLogitChunk(model, x, (logits, start) => {
          argmax(e, logits, { out, at: start });
        });
        const arg = await e.readInt(out);
        rows.forEach((r, k) => (batchPreds[Math.floor(r / T)][r % T] = arg[k]));
      } finally {
        e.endScope();
      }
    }
    batch.forEach((x, b) => {
      preds.push(batchPreds[b]);
      labels.push(x.labels);
    });
  }
  return computeTokenAccuracy(preds, labels);
}
