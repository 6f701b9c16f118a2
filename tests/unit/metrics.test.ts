import { describe, expect, it } from 'vitest';
import { headlineMetric, metricsFor, predictionVerdict, TASK_KINDS, type TaskKind } from '../../src/eval/metrics';
import { computeQaMetrics, normalizeQa, qaF1 } from '../../src/eval/qa';
import { ConfigError } from '../../src/errors';

describe('metricsFor: one family per task kind, flat stable keys', () => {
  it('classification (binary adds binary_f1)', () => {
    const m = metricsFor('classification', ['positive', 'nope'], ['positive', 'negative'], ['negative', 'positive']);
    expect(Object.keys(m).sort()).toEqual(['accuracy', 'binary_f1', 'count', 'invalid', 'macro_f1']);
    // positive TP 1 → 1; negative FN 1 → 0
    expect(m).toEqual({ accuracy: 0.5, macro_f1: 0.5, binary_f1: 1, invalid: 1, count: 2 });
    const three = metricsFor('classification', ['a'], ['a'], ['a', 'b', 'c']);
    expect(Object.keys(three).sort()).toEqual(['accuracy', 'count', 'invalid', 'macro_f1']);
  });

  it('regression, math, qa, generation', () => {
    expect(Object.keys(metricsFor('regression', ['1', '2'], ['1', '3'])).sort()).toEqual(['count', 'invalid', 'pearson', 'spearman']);
    expect(metricsFor('regression', ['x', '2'], ['1', '3'], [], { regression: { worst: 5 } }).pearson).toBe(-1);
    expect(metricsFor('math-gsm8k', ['#### 3'], ['#### 3'])).toEqual({ numeric_accuracy: 1, invalid: 0, count: 1 });
    expect(metricsFor('math-svamp', ['(1 + 2) = 3'], ['( 1.0 + 2.0 ) = 3.0'])).toEqual({ numeric_accuracy: 1, equation_consistency: 1, invalid: 0, count: 1 });
    expect(Object.keys(metricsFor('qa', ['x'], ['x'])).sort()).toEqual(['count', 'exact_match', 'f1']);
    expect(Object.keys(metricsFor('generation', ['a b'], ['a b'])).sort()).toEqual(['bleu-4', 'count', 'rouge-1', 'rouge-2', 'rouge-l']);
  });

  it("accepts the dataset registry's metric family names; qa takes several gold answers", () => {
    expect(metricsFor('gsm8k', ['#### 3'], ['#### 4'])).toEqual(metricsFor('math-gsm8k', ['#### 3'], ['#### 4']));
    expect(metricsFor('svamp', ['3'], ['( 1 + 2 ) = 3']).numeric_accuracy).toBe(1);
    expect(metricsFor('exact_match', ['the Army'], [['U.S. Army', 'Army']])).toEqual({ exact_match: 1, f1: 1, count: 1 });
    expect(() => metricsFor('generation', ['a'], [['a', 'b']])).toThrow(/only the qa/);
  });

  it('unknown kind is a named error', () => {
    expect(() => metricsFor('summarisation' as TaskKind, ['a'], ['a'])).toThrow(ConfigError);
    expect(TASK_KINDS).toContain('math-svamp');
  });
});

describe('qa (ReCoRD, SQuAD rules)', () => {
  it('normalises case, punctuation, articles and whitespace', () => {
    expect(normalizeQa('  The  U.S. Army!  ')).toBe('us army');
  });

  it('hand-worked EM and token F1, best over gold answers', () => {
    // "barack obama" vs "obama": overlap 1, P = 1/2, R = 1 → F = 2/3
    expect(qaF1('Barack Obama', 'Obama')).toBeCloseTo(2 / 3, 12);
    const m = computeQaMetrics(['Barack Obama', 'the Army', 'Paris'], ['Obama', ['U.S. Army', 'Army'], 'London']);
    expect(m.exact_match).toBeCloseTo(1 / 3, 12);
    expect(m.f1).toBeCloseTo((2 / 3 + 1 + 0) / 3, 12);
  });
});

describe('headlineMetric: PSCP performance P in [0, 1]', () => {
  it('per task kind', () => {
    expect(headlineMetric('classification', { accuracy: 0.9, macro_f1: 0.7 })).toEqual({ key: 'macro_f1', value: 0.7 });
    expect(headlineMetric('generation', { 'rouge-l': 42 })).toEqual({ key: 'rouge-l', value: 0.42 });
    expect(headlineMetric('regression', { pearson: -0.3 })).toEqual({ key: 'pearson', value: 0 });
    expect(headlineMetric('math-svamp', { numeric_accuracy: 0.25 })).toEqual({ key: 'numeric_accuracy', value: 0.25 });
    expect(() => headlineMetric('classification', { accuracy: 1 })).toThrow(ConfigError);
  });
});

describe('predictionVerdict: the predictions browser judges a row as the metric does', () => {
  it('math rows by their number, not their text (the label is the whole reference answer)', () => {
    const gold = 'Natalia sold 48/2 = 24 clips in May.\n#### 72';
    expect(predictionVerdict('gsm8k', [], 'She sold 48 + 24 clips.\n#### 72', gold)).toBe('correct');
    expect(predictionVerdict('gsm8k', [], '#### 71', gold)).toBe('wrong');
    expect(predictionVerdict('gsm8k', [], 'seventy-two', gold)).toBe('invalid');
    expect(predictionVerdict('svamp', [], '( 78.0 - 22.0 )', '( 78.0 - 22.0 ) = 56.0')).toBe('correct');
    expect(predictionVerdict('svamp', [], '78.0 + 22.0', '( 78.0 - 22.0 ) = 56.0')).toBe('wrong');
  });
  it('classification rows by label word; other rows by normalised text', () => {
    expect(predictionVerdict('classification', ['negative', 'positive'], ' Positive ', 'positive')).toBe('correct');
    expect(predictionVerdict('classification', ['negative', 'positive'], 'negative', 'positive')).toBe('wrong');
    expect(predictionVerdict('classification', ['negative', 'positive'], 'great', 'positive')).toBe('invalid');
    expect(predictionVerdict('generation', [], 'print(x)', 'print(x)')).toBe('correct');
  });
});
