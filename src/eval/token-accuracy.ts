/**
 * Teacher-forced token accuracy (LLaMA-Factory's ComputeAccuracy, reported as
 * `compute_accuracy`): for each example, the argmax of the logits at position
 * t predicts the token at t + 1,
 *
 *   acc_b = mean over { t : labels[b][t+1] ≠ −100 } of [argmax_t = labels[b][t+1]]
 *   token_accuracy = mean over examples b of acc_b
 *
 * (a mean per example, then over examples: short examples weigh as much as
 * long ones). An example without any labelled position has no accuracy and
 * is left out of the mean (LLaMA-Factory's np.mean of an empty slice would
 * make the whole result NaN); `count` says how many examples were averaged.
 * Argmax ties go to the lowest token id (torch.argmax's first maximum).
 */
import { argmaxCpu } from '../engine/ops/argmax';
import { PeftStudioError } from '../errors';

export const IGNORE_INDEX = -100;

export interface TokenAccuracy {
  token_accuracy: number;
  /** Examples with at least one labelled position. */
  count: number;
}

/** Row-wise argmax of logits [rows, vocab] on the host (first maximum on ties): the GPU op's reference. */
export const argmaxRows = argmaxCpu;

/**
 * predIds[b][t] = argmax of the logits at position t of example b; labels[b]
 * the same length, −100 where unlabelled (prompt, padding).
 */
export function computeTokenAccuracy(predIds: readonly ArrayLike<number>[], labels: readonly ArrayLike<number>[]): TokenAccuracy {
  if (predIds.length !== labels.length) {
    throw new PeftStudioError(`Token accuracy: ${predIds.length} prediction rows but ${labels.length} label rows; they must pair up one to one.`);
  }
  let sum = 0,
    count = 0;
  predIds.forEach((pred, b) => {
    const lab = labels[b];
    if (pred.length !== lab.length) {
      throw new PeftStudioError(
        `Token accuracy: example ${b} has ${pred.length} predicted positions but ${lab.length} labels; pass the argmax at every input position.`,
      );
    }
    let hit = 0,
      valid = 0;
    for (let t = 0; t + 1 < lab.length; t++) {
      if (lab[t + 1] === IGNORE_INDEX) continue;
      valid++;
      if (pred[t] === lab[t + 1]) hit++;
    }
    if (valid > 0) {
      sum += hit / valid;
      count++;
    }
  });
  if (count === 0) throw new PeftStudioError('Token accuracy: no example has a labelled position (every label is -100); nothing to score.');
  return { token_accuracy: sum / count, count };
}

/** computeTokenAccuracy from logits [batch, seq, vocab] and labels [batch, seq]. */
export function computeTokenAccuracyFromLogits(logits: ArrayLike<number>, labels: ArrayLike<number>, batch: number, seq: number, vocab: number): TokenAccuracy {
  if (labels.length !== batch * seq) throw new RangeError(`computeTokenAccuracyFromLogits: ${labels.length} labels for ${batch} × ${seq}`);
  const ids = argmaxRows(logits, batch * seq, vocab);
  const preds: Int32Array[] = [],
    labs: ArrayLike<number>[] = [];
  for (let b = 0; b < batch; b++) {
    preds.push(ids.subarray(b * seq, (b + 1) * seq));
    labs.push(Array.prototype.slice.call(labels, b * seq, (b + 1) * seq) as number[]);
  }
  return computeTokenAccuracy(preds, labs);
}
