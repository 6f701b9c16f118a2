/**
 * Regression scored from generated numbers (STS-B: a similarity score 0–5).
 *
 * - A prediction is the text after the last `</think>`, stripped; it must be
 *   one decimal number (`3`, `3.8`, `.5`, `-1`, `4e-1`) and nothing else.
 *   Anything else is *unparseable*: it is counted in `invalid` and scored as
 *   the dataset's worst score (the bottom of its range, 0 for STS-B), so that
 *   a model cannot improve its correlation by refusing to answer.
 *   (PEFT-Factory's script substitutes −1.)
 * - Pearson r = Σ(x−x̄)(y−ȳ) / √(Σ(x−x̄)² Σ(y−ȳ)²).
 * - Spearman ρ = Pearson r of the ranks, ties taking the average of the ranks
 *   they span (scipy.stats.spearmanr, rankdata method "average").
 * - A correlation is undefined when either side is constant (or there is one
 *   example); it is reported as 0, "no measurable association" (scipy gives
 *   NaN, which JSON cannot hold).
 */
import { ConfigError } from '../errors';
import { checkPairs } from './classification';
import { answerText } from './text';

export interface RegressionOptions {
  /** Score given to an unparseable prediction: the dataset's worst score (STS-B: 0). */
  worst?: number;
}

export interface RegressionMetrics {
  pearson: number;
  spearman: number;
  invalid: number;
  count: number;
}

const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

/** The number a generation states, or null when it is not exactly one number. */
export function parseScore(text: string): number | null {
  const s = answerText(text).trim();
  if (!NUMBER.test(s)) return null;
  const v = Number(s);
  return Number.isFinite(v) ? v : null;
}

export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  if (n !== y.length) throw new RangeError(`pearson: ${n} and ${y.length} values`);
  if (n < 2) return 0;
  let mx = 0,
    my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0,
    sxx = 0,
    syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i] - mx,
      dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx === 0 || syy === 0) return 0;
  // Clamp the last-ulp overshoot of perfectly (anti)correlated data.
  return Math.max(-1, Math.min(1, sxy / Math.sqrt(sxx * syy)));
}

/** 1-based ranks, tied values sharing the mean of the ranks they occupy. */
export function averageRanks(x: ArrayLike<number>): Float64Array {
  const n = x.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => x[a] - x[b]);
  const ranks = new Float64Array(n);
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && x[order[j + 1]] === x[order[i]]) j++;
    // Positions i..j (0-based) hold ranks i+1..j+1; their mean is (i + j)/2 + 1.
    const r = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[order[k]] = r;
    i = j + 1;
  }
  return ranks;
}

export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  return pearson(averageRanks(x), averageRanks(y));
}

export function computeRegressionMetrics(preds: readonly string[], labels: readonly string[], options: RegressionOptions = {}): RegressionMetrics {
  checkPairs(preds, labels, 'Regression metrics');
  const worst = options.worst ?? 0;
  const gold = labels.map((l, i) => {
    const v = parseScore(l);
    if (v === null) throw new ConfigError(`Gold label ${i} (${JSON.stringify(l)}) is not a number. A regression dataset's responses must be decimal scores.`);
    return v;
  });
  let invalid = 0;
  const pred = preds.map((p) => {
    const v = parseScore(p);
    if (v === null) {
      invalid++;
      return worst;
    }
    return v;
  });
  return { pearson: pearson(pred, gold), spearman: spearman(pred, gold), invalid, count: labels.length };
}
