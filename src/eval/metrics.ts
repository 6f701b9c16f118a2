/**
 * One entry point from a task kind to its metric family, with flat, stable
 * keys (what predict_results.json and the grid tables hold):
 *
 *   classification  accuracy, macro_f1, binary_f1 (two label words only), invalid, count
 *   regression      pearson, spearman, invalid, count
 *   math-gsm8k      numeric_accuracy, invalid, count
 *   math-svamp      numeric_accuracy, equation_consistency, invalid, count
 *   qa              exact_match, f1, count           (ReCoRD)
 * The registry's metric family names gsm8k, svamp and exact_match are accepted
 * for math-gsm8k, math-svamp and qa.
 *   generation      rouge-1, rouge-2, rouge-l, bleu-4, count
 *   (token accuracy, from logits: token_accuracy — src/eval/token-accuracy.ts)
 *
 * Scales: accuracies, F1s and exact match are fractions in [0, 1]; Pearson and
 * Spearman in [−1, 1]; ROUGE and BLEU ×100 (as LLaMA-Factory reports them);
 * invalid and count are counts. The definitions are in each family's file.
 *
 * `headlineMetric` names the one number per task that PSCP's P uses
 * (METRICS.md: macro-F1 for classification, the headline metric otherwise),
 * mapped into [0, 1].
 */
import { ConfigError } from '../errors';
import { computeClassificationMetrics } from './classification';
import { computeGenerationMetrics } from './generation';
import { computeGsm8kMetrics, computeSvampMetrics } from './math';
import { computeQaMetrics } from './qa';
import { computeRegressionMetrics, type RegressionOptions } from './regression';
import { normalizeAnswer } from './text';

// The families, for callers that want their detailed results (per-class counts).
export { computeClassificationMetrics, type ClassificationMetrics } from './classification';
export { computeGenerationMetrics, type GenerationMetrics } from './generation';
export { computeGsm8kMetrics, computeSvampMetrics, type Gsm8kMetrics, type SvampMetrics } from './math';
export { computeQaMetrics, type QaMetrics } from './qa';
export { computeRegressionMetrics, type RegressionMetrics, type RegressionOptions } from './regression';
export { computeTokenAccuracy, computeTokenAccuracyFromLogits, type TokenAccuracy } from './token-accuracy';

export const TASK_KINDS = ['classification', 'regression', 'math-gsm8k', 'math-svamp', 'qa', 'generation'] as const;
export type TaskKind = (typeof TASK_KINDS)[number];

/** The dataset registry's metric family names (src/data/entry.ts MetricFamily), accepted as well. */
const ALIASES: Readonly<Record<string, TaskKind>> = { gsm8k: 'math-gsm8k', svamp: 'math-svamp', exact_match: 'qa' };

/** The task kind for a task kind or a registry metric family name. */
export function taskKindOf(name: string): TaskKind {
  const kind = ALIASES[name] ?? name;
  if (!(TASK_KINDS as readonly string[]).includes(kind)) {
    throw new ConfigError(`Unknown task kind ${JSON.stringify(name)}; use one of ${TASK_KINDS.join(', ')} (or gsm8k, svamp, exact_match).`);
  }
  return kind as TaskKind;
}

export interface MetricsOptions {
  /** Regression: the score of an unparseable prediction (the dataset's worst score; STS-B 0). */
  regression?: RegressionOptions;
}

/** Keeps the numeric fields of a family's result (drops per-class detail). */
function flat(result: object): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(result)) if (typeof v === 'number') out[k] = v;
  return out;
}

/**
 * labels[i] is the gold response; for `qa` it may list every accepted answer.
 * labelWords: the dataset's label words (classification only).
 */
export function metricsFor(
  taskKind: TaskKind | 'gsm8k' | 'svamp' | 'exact_match',
  preds: readonly string[],
  labels: readonly (string | readonly string[])[],
  labelWords: readonly string[] = [],
  options: MetricsOptions = {},
): Record<string, number> {
  const kind = taskKindOf(taskKind);
  if (kind === 'qa') return flat(computeQaMetrics(preds, labels));
  const gold = labels.map((l, i) => {
    if (typeof l !== 'string')
      throw new ConfigError(`Label ${i} is a list of answers; only the qa (exact_match) kind accepts several gold answers, not ${kind}.`);
    return l;
  });
  switch (kind) {
    case 'classification':
      return flat(computeClassificationMetrics(preds, gold, labelWords));
    case 'regression':
      return flat(computeRegressionMetrics(preds, gold, options.regression));
    case 'math-gsm8k':
      return flat(computeGsm8kMetrics(preds, gold));
    case 'math-svamp':
      return flat(computeSvampMetrics(preds, gold));
    case 'generation':
      return flat(computeGenerationMetrics(preds, gold));
  }
}

/**
 * PSCP's task performance P in [0, 1] and the metric it comes from:
 * classification macro_f1; regression Pearson, negative values clipped to 0
 * (an anti-correlated predictor has no usable skill); math numeric_accuracy;
 * qa f1; generation rouge-l / 100.
 */
export function headlineMetric(taskKind: TaskKind | 'gsm8k' | 'svamp' | 'exact_match', metrics: Record<string, number>): { key: string; value: number } {
  const kind = taskKindOf(taskKind);
  const key = {
    classification: 'macro_f1',
    regression: 'pearson',
    'math-gsm8k': 'numeric_accuracy',
    'math-svamp': 'numeric_accuracy',
    qa: 'f1',
    generation: 'rouge-l',
  }[kind];
  const v = metrics[key];
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new ConfigError(`The ${kind} metrics have no finite '${key}' (keys: ${Object.keys(metrics).join(', ')}).`);
  const value = kind === 'generation' ? v / 100 : kind === 'regression' ? Math.max(0, v) : v;
  return { key, value: Math.min(1, Math.max(0, value)) };
}

/**
 * One prediction's verdict in the studio's predictions browser. Math sets are judged
 * as their metric judges them (the number after '####', the equation's value): their
 * label is the whole reference answer, so comparing texts would call a right number
 * wrong. Other sets compare normalised texts; a classification answer that is none
 * of the label words is invalid.
 */
export function predictionVerdict(
  family: TaskKind | 'gsm8k' | 'svamp' | 'exact_match',
  labelWords: readonly string[],
  predict: string,
  label: string,
): 'correct' | 'wrong' | 'invalid' {
  const kind = taskKindOf(family);
  if (kind === 'math-gsm8k' || kind === 'math-svamp') {
    const m = metricsFor(kind, [predict], [label]);
    return m.invalid > 0 ? 'invalid' : m.numeric_accuracy === 1 ? 'correct' : 'wrong';
  }
  const p = normalizeAnswer(predict);
  const words = labelWords.map((w) => normalizeAnswer(w));
  return words.length && !words.includes(p) ? 'invalid' : p === normalizeAnswer(label) ? 'correct' : 'wrong';
}
