/**
 * Extractive-answer metrics (ReCoRD: the entity that replaces @placeholder),
 * as the SuperGLUE ReCoRD scorer (SQuAD v1.1 rules) computes them:
 *
 *   normalise(s) = lower-case, drop ASCII punctuation, drop the words
 *                  a / an / the, collapse whitespace
 *   exact_match  = [normalise(pred) = normalise(gold)]
 *   f1           = token F1 of the normalised words, with multiset overlap:
 *                  P = overlap/|pred|, R = overlap/|gold|, F = 2PR/(P+R)
 *                  (0 when nothing overlaps)
 *
 * each taken as the best over the example's gold answers, then averaged
 * (fractions in [0, 1]). The prediction is the text after the last `</think>`.
 */
import { checkPairs } from './classification';
import { answerText } from './text';

export interface QaMetrics {
  exact_match: number;
  f1: number;
  count: number;
}

const PUNCT = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/g;

export function normalizeQa(s: string): string {
  return s
    .toLowerCase()
    .replace(PUNCT, '')
    .replace(/\b(a|an|the)\b/g, ' ')
    .split(/\s+/)
    .filter(Boolean)
    .join(' ');
}

export function qaF1(pred: string, gold: string): number {
  const p = normalizeQa(pred).split(' ').filter(Boolean);
  const g = normalizeQa(gold).split(' ').filter(Boolean);
  const counts = new Map<string, number>();
  for (const w of g) counts.set(w, (counts.get(w) ?? 0) + 1);
  let overlap = 0;
  for (const w of p) {
    const k = counts.get(w) ?? 0;
    if (k > 0) {
      overlap++;
      counts.set(w, k - 1);
    }
  }
  if (overlap === 0) return 0;
  const precision = overlap / p.length,
    recall = overlap / g.length;
  return (2 * precision * recall) / (precision + recall);
}

/** labels[i]: the gold answer, or every accepted answer of example i. */
export function computeQaMetrics(preds: readonly string[], labels: readonly (string | readonly string[])[]): QaMetrics {
  checkPairs(preds, labels, 'QA metrics');
  let em = 0,
    f1 = 0;
  preds.forEach((raw, i) => {
    const pred = answerText(raw);
    const golds = typeof labels[i] === 'string' ? [labels[i] as string] : (labels[i] as readonly string[]);
    em += Math.max(0, ...golds.map((g) => (normalizeQa(pred) === normalizeQa(g) ? 1 : 0)));
    f1 += Math.max(0, ...golds.map((g) => qaF1(pred, g)));
  });
  return { exact_match: em / preds.length, f1: f1 / preds.length, count: preds.length };
}
