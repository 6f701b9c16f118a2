import { describe, expect, it } from 'vitest';
import { argmaxRows, computeTokenAccuracy, computeTokenAccuracyFromLogits } from '../../src/eval/token-accuracy';
import { PeftStudioError } from '../../src/errors';

const M = -100;

describe('computeTokenAccuracy (teacher-forced, per example then over examples)', () => {
  it('hand-worked: argmax at t against the label at t + 1, masked positions ignored', () => {
    const preds = [
      [9, 5, 6, 0, 3], // t=1: 5 = 5 ✓, t=2: 6 = 6 ✓, t=3: 0 ≠ 7 ✗ → 2/3
      [4, 1, 1, 1, 1], // t=0: 4 = 4 ✓ (the rest is padding) → 1
      [1, 2, 3, 4, 5], // no labelled position: left out
    ];
    const labels = [
      [M, M, 5, 6, 7],
      [M, 4, M, M, M],
      [M, M, M, M, M],
    ];
    const r = computeTokenAccuracy(preds, labels);
    // mean of per-example means (5/6), not the pooled token rate (3/4)
    expect(r.token_accuracy).toBeCloseTo((2 / 3 + 1) / 2, 12);
    expect(r.count).toBe(2);
  });

  it('the prediction at the last position and the label at position 0 are never compared', () => {
    expect(computeTokenAccuracy([[7, 0]], [[7, 1]]).token_accuracy).toBe(0);
    expect(computeTokenAccuracy([[1, 7]], [[7, 1]]).token_accuracy).toBe(1);
  });

  it('argmax ties go to the lowest token id', () => {
    expect(Array.from(argmaxRows([1, 1, 0, 0, 2, 2, -1, -1, -1], 3, 3))).toEqual([0, 1, 0]);
  });

  it('from logits [batch, seq, vocab]', () => {
    // batch 1, seq 3, vocab 3; argmax per position [2, 0 (tie of 0 and 1), 1]
    const logits = [0, 1, 5, 3, 3, 0, 0, 9, 1];
    // labels at t+1: position 1 → 0 (pred[0] = 2 ✗), position 2 → 0 (pred[1] = 0 ✓)
    expect(computeTokenAccuracyFromLogits(logits, [M, 0, 0], 1, 3, 3).token_accuracy).toBe(0.5);
  });

  it('rejects mismatched shapes and batches without any label', () => {
    expect(() => computeTokenAccuracy([[1, 2]], [[1, 2, 3]])).toThrow(PeftStudioError);
    expect(() => computeTokenAccuracy([[1]], [])).toThrow(PeftStudioError);
    expect(() => computeTokenAccuracy([[1, 2]], [[M, M]])).toThrow(/no example has a labelled position/);
  });
});
