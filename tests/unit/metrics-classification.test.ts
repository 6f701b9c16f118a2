import { describe, expect, it } from 'vitest';
import { computeClassificationMetrics } from '../../src/eval/classification';
import { answerText, normalizeAnswer } from '../../src/eval/text';
import { ConfigError, PeftStudioError } from '../../src/errors';

const SST2 = ['negative', 'positive'];
const CB = ['entailment', 'contradiction', 'neutral'];

describe('normalisation', () => {
  it('takes the text after the last </think>, strips and lower-cases', () => {
    expect(normalizeAnswer('<think>maybe negative</think>\n\n Positive \n')).toBe('positive');
    expect(normalizeAnswer('<think>a</think>x</think>  Yes')).toBe('yes');
    expect(normalizeAnswer('  A\n')).toBe('a');
    expect(answerText('no think block')).toBe('no think block');
  });
});

describe('computeClassificationMetrics', () => {
  it('binary task with invalid and empty predictions (hand-worked)', () => {
    const preds = ['positive', 'Negative ', 'neutral', '', '<think>hmm</think>\n\npositive', 'POSITIVE'];
    const golds = ['positive', 'negative', 'positive', 'negative', 'negative', 'positive'];
    // pairs (pred → gold): pos→pos TP+, neg→neg TP−, invalid→pos FN+, invalid(empty)→neg FN−,
    // pos→neg FP+ and FN−, pos→pos TP+.
    // positive: TP 2, FP 1, FN 1 → F1 = 4 / (4 + 1 + 1) = 2/3
    // negative: TP 1, FP 0, FN 2 → F1 = 2 / (2 + 0 + 2) = 1/2
    const m = computeClassificationMetrics(preds, golds, SST2);
    expect(m.accuracy).toBeCloseTo(3 / 6, 12);
    expect(m.per_class.map((c) => c.f1)).toEqual([0.5, 2 / 3]);
    expect(m.macro_f1).toBeCloseTo((2 / 3 + 1 / 2) / 2, 12);
    expect(m.binary_f1).toBeCloseTo(2 / 3, 12);
    expect(m.invalid).toBe(2);
    expect(m.count).toBe(6);
    expect(m.per_class[1]).toMatchObject({ label: 'positive', support: 3, tp: 2, fp: 1, fn: 1, precision: 2 / 3, recall: 2 / 3 });
  });

  it('an invalid prediction is an error for its gold class, never a class of its own', () => {
    // Three golds, one of each class word; a third "class" of invalid outputs
    // would add a 0-F1 class to the average (PEFT-Factory's trainer-side f1 does).
    const m = computeClassificationMetrics(['negative', 'positive', 'dunno'], ['negative', 'positive', 'positive'], SST2);
    // negative: TP 1 → 1; positive: TP 1, FN 1 → 2/3
    expect(m.macro_f1).toBeCloseTo((1 + 2 / 3) / 2, 12);
    expect(m.per_class).toHaveLength(2);
  });

  it('all predictions invalid', () => {
    const m = computeClassificationMetrics(['maybe', '', '???'], ['negative', 'positive', 'positive'], SST2);
    expect(m).toMatchObject({ accuracy: 0, macro_f1: 0, binary_f1: 0, invalid: 3, count: 3 });
  });

  it('a class absent from gold and predictions scores 0 and stays in the average (zero_division = 0)', () => {
    const m = computeClassificationMetrics(['entailment', 'contradiction', 'entailment'], ['entailment', 'contradiction', 'contradiction'], CB);
    // entailment TP 1 FP 1 → 2/3; contradiction TP 1 FN 1 → 2/3; neutral 0/0/0 → 0
    expect(m.per_class.map((c) => c.f1)).toEqual([2 / 3, 2 / 3, 0]);
    expect(m.macro_f1).toBeCloseTo(4 / 9, 12);
    expect(m.accuracy).toBeCloseTo(2 / 3, 12);
    expect(m.binary_f1).toBeUndefined();
  });

  it('a class predicted but absent from gold scores 0', () => {
    const m = computeClassificationMetrics(['neutral', 'contradiction'], ['entailment', 'contradiction'], CB);
    // neutral: FP 1 → 0; entailment: FN 1 → 0; contradiction: TP 1 → 1
    expect(m.per_class.map((c) => c.f1)).toEqual([0, 1, 0]);
    expect(m.macro_f1).toBeCloseTo(1 / 3, 12);
    expect(m.invalid).toBe(0);
  });

  it('perfect predictions; label words compared case-insensitively (MMLU A–D)', () => {
    const m = computeClassificationMetrics(['a', ' B\n', 'c', 'D'], ['A', 'B', 'C', 'D'], ['A', 'B', 'C', 'D']);
    expect(m).toMatchObject({ accuracy: 1, macro_f1: 1, invalid: 0 });
  });

  it('binary F1 uses the second label word as the positive class', () => {
    // Predict everything "False": True (positive) has TP 0 → binary F1 0, while False has F1 2/3.
    const m = computeClassificationMetrics(['False', 'False', 'False'], ['False', 'True', 'False'], ['False', 'True']);
    expect(m.binary_f1).toBe(0);
    expect(m.per_class[0].f1).toBeCloseTo(4 / 5, 12); // TP 2, FP 1 → 4 / (4 + 1)
    expect(m.macro_f1).toBeCloseTo(0.4, 12);
  });

  it('rejects bad inputs with named errors', () => {
    expect(() => computeClassificationMetrics(['x'], ['neutral'], SST2)).toThrow(ConfigError);
    expect(() => computeClassificationMetrics(['x'], ['negative'], ['True', 'true'])).toThrow(/same after lower-casing/);
    expect(() => computeClassificationMetrics(['x'], ['negative'], ['negative'])).toThrow(ConfigError);
    expect(() => computeClassificationMetrics(['x', 'y'], ['negative'], SST2)).toThrow(PeftStudioError);
    expect(() => computeClassificationMetrics([], [], SST2)).toThrow(/no examples/);
  });
});
