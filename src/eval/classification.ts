/**
 * Classification cast as generation (METRICS.md): the model generates a label
 * word and is scored on it.
 *
 * - Both sides are normalised: the text after the last `</think>`, stripped,
 *   lower-cased (label words too: MMLU's "A" and a generated "a" agree).
 * - A prediction that is not one of the label words is *invalid*: it is an
 *   error for its gold class (a false negative there) and never a class of its
 *   own, so it cannot add a class to the macro average. (PEFT-Factory's
 *   trainer-side f1 adds an "__unknown__" class, which changes the average;
 *   its offline script maps an invalid prediction to the *other* binary label,
 *   which rewards it with a true positive or true negative elsewhere.)
 * - Per class c over the label set:  F1_c = 2·TP / (2·TP + FP + FN),
 *   and F1_c = 0 when 2·TP + FP + FN = 0 (the class is neither gold nor
 *   predicted anywhere): sklearn's f1_score(labels=label_words,
 *   zero_division=0). Macro-F1 is the unweighted mean over *all* label words,
 *   so a class absent from a small evaluation slice pulls it down; that is
 *   the price of a fixed denominator that does not depend on the slice.
 * - Binary tasks (two label words) also report binary F1 = F1 of the second
 *   label word (the positive class: positive, acceptable, True, ...).
 * - Accuracy is exact match after normalisation (an invalid prediction is
 *   simply wrong).
 * Values are fractions in [0, 1]; `invalid` and `count` are counts.
 */
import { ConfigError, PeftStudioError } from '../errors';
import { normalizeAnswer } from './text';

export interface ClassStats {
  label: string;
  /** Gold examples of the class. */
  support: number;
  tp: number;
  fp: number;
  fn: number;
  precision: number;
  recall: number;
  f1: number;
}

export interface ClassificationMetrics {
  accuracy: number;
  macro_f1: number;
  /** F1 of the second label word; only for two label words. */
  binary_f1?: number;
  /** Predictions that are none of the label words. */
  invalid: number;
  count: number;
  /** Per label word, in the order given. */
  per_class: ClassStats[];
}

/** F1 from counts, 0 when the class is neither gold nor predicted (zero_division = 0). */
export function f1FromCounts(tp: number, fp: number, fn: number): number {
  const d = 2 * tp + fp + fn;
  return d === 0 ? 0 : (2 * tp) / d;
}

/** The normalised label words, checked to be distinct and non-empty. */
export function normalizedLabelWords(labelWords: readonly string[]): string[] {
  if (labelWords.length < 2) {
    throw new ConfigError(
      `Classification needs at least two label words, got ${JSON.stringify(labelWords)}. Give the dataset's label words (e.g. negative, positive).`,
    );
  }
  const words = labelWords.map(normalizeAnswer);
  words.forEach((w, i) => {
    if (!w) throw new ConfigError(`Label word ${i} (${JSON.stringify(labelWords[i])}) is empty after normalisation. Remove it from the label words.`);
    const j = words.indexOf(w);
    if (j !== i) {
      throw new ConfigError(
        `Label words ${JSON.stringify(labelWords[j])} and ${JSON.stringify(labelWords[i])} are the same after lower-casing and stripping; make them distinct.`,
      );
    }
  });
  return words;
}

export function checkPairs(preds: readonly unknown[], labels: readonly unknown[], what: string): void {
  if (preds.length !== labels.length) {
    throw new PeftStudioError(`${what}: ${preds.length} predictions but ${labels.length} labels; they must pair up one to one.`);
  }
  if (preds.length === 0) throw new PeftStudioError(`${what}: no examples to score; the evaluation set is empty.`);
}

export function computeClassificationMetrics(preds: readonly string[], labels: readonly string[], labelWords: readonly string[]): ClassificationMetrics {
  checkPairs(preds, labels, 'Classification metrics');
  const words = normalizedLabelWords(labelWords);
  const index = new Map(words.map((w, i) => [w, i]));
  const K = words.length;
  const tp = new Array<number>(K).fill(0);
  const fp = new Array<number>(K).fill(0);
  const fn = new Array<number>(K).fill(0);
  const support = new Array<number>(K).fill(0);
  let correct = 0;
  let invalid = 0;
  labels.forEach((raw, i) => {
    const g = index.get(normalizeAnswer(raw));
    if (g === undefined) {
      throw new ConfigError(
        `Gold label ${i} (${JSON.stringify(raw)}) is not one of the label words ${JSON.stringify(labelWords)}. ` +
          'Check the dataset entry: its label words must cover every gold response.',
      );
    }
    support[g]++;
    const p = index.get(normalizeAnswer(preds[i]));
    if (p === undefined) {
      invalid++;
      fn[g]++;
    } else if (p === g) {
      correct++;
      tp[g]++;
    } else {
      fp[p]++;
      fn[g]++;
    }
  });
  const per_class: ClassStats[] = words.map((label, c) => ({
    label,
    support: support[c],
    tp: tp[c],
    fp: fp[c],
    fn: fn[c],
    precision: tp[c] + fp[c] === 0 ? 0 : tp[c] / (tp[c] + fp[c]),
    recall: tp[c] + fn[c] === 0 ? 0 : tp[c] / (tp[c] + fn[c]),
    f1: f1FromCounts(tp[c], fp[c], fn[c]),
  }));
  const out: ClassificationMetrics = {
    accuracy: correct / labels.length,
    macro_f1: per_class.reduce((s, c) => s + c.f1, 0) / K,
    invalid,
    count: labels.length,
    per_class,
  };
  if (K === 2) out.binary_f1 = per_class[1].f1;
  return out;
}
