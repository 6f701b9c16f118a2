import { describe, expect, it } from 'vitest';
import { averageRanks, computeRegressionMetrics, parseScore, pearson, spearman } from '../../src/eval/regression';
import { ConfigError } from '../../src/errors';

describe('regression metrics (STS-B)', () => {
  it('parses exactly one number', () => {
    expect(parseScore(' 3.8\n')).toBe(3.8);
    expect(parseScore('<think>4?</think>2')).toBe(2);
    expect(parseScore('.5')).toBe(0.5);
    expect(parseScore('4.')).toBe(4);
    expect(parseScore('4e-1')).toBeCloseTo(0.4, 15);
    for (const bad of ['', 'four', '3.8 out of 5', '3,5', 'nan', 'inf', '1e999']) expect(parseScore(bad)).toBeNull();
  });

  it('average ranks for ties (scipy rankdata "average")', () => {
    // sorted: 1 (rank 1), 2 (rank 2), 3, 3, 3 (ranks 3, 4, 5 → 4 each)
    expect(Array.from(averageRanks([3, 1, 3, 3, 2]))).toEqual([4, 1, 4, 4, 2]);
  });

  it('Pearson and Spearman on a hand-worked example with an unparseable prediction', () => {
    // 'n/a' → the worst score 0: pred = [4, 3, 0, 1.5], gold = [5, 3, 1, 2]
    // means 2.125 and 2.75; deviations [1.875, .875, −2.125, −.625] and [2.25, .25, −1.75, −.75]
    // Σdxdy = 8.625, Σdx² = 9.1875, Σdy² = 8.75
    const m = computeRegressionMetrics(['4.0', '3', 'n/a', '1.5'], ['5.0', '3.0', '1.0', '2.0'], { worst: 0 });
    expect(m.pearson).toBeCloseTo(8.625 / Math.sqrt(9.1875 * 8.75), 12);
    expect(m.spearman).toBe(1); // same order on both sides
    expect(m.invalid).toBe(1);
    expect(m.count).toBe(4);
  });

  it('ties in the predictions', () => {
    // pred = [2, 2, 3, 0] (last unparseable → 0), gold = [1, 2, 3, 4]
    // ranks pred [2.5, 2.5, 4, 1], gold [1, 2, 3, 4]: Σdxdy = −1.5, Σdx² = 4.5, Σdy² = 5
    const m = computeRegressionMetrics(['2', '2', '3', 'x'], ['1', '2', '3', '4']);
    expect(m.spearman).toBeCloseTo(-1.5 / Math.sqrt(4.5 * 5), 12);
    // values: mean 1.75, deviations [.25, .25, 1.25, −1.75]: Σdxdy = −2.5, Σdx² = 4.75
    expect(m.pearson).toBeCloseTo(-2.5 / Math.sqrt(4.75 * 5), 12);
  });

  it('the worst score is the one given for the dataset', () => {
    // worst 5 instead of 0 flips the sign of the example above: pred = [2, 2, 3, 5]
    const m = computeRegressionMetrics(['2', '2', '3', 'x'], ['1', '2', '3', '4'], { worst: 5 });
    expect(m.spearman).toBeGreaterThan(0.9);
  });

  it('all predictions unparseable: constant predictions, correlation reported as 0', () => {
    const m = computeRegressionMetrics(['', 'high', '?'], ['1', '2', '3']);
    expect(m).toEqual({ pearson: 0, spearman: 0, invalid: 3, count: 3 });
  });

  it('perfect and anti-correlation stay within [-1, 1]', () => {
    const x = [0.1, 0.7, 0.2, 0.9, 0.3];
    expect(pearson(x, x)).toBe(1);
    expect(
      pearson(
        x,
        x.map((v) => -3 * v + 1),
      ),
    ).toBe(-1);
    expect(
      spearman(
        x,
        x.map((v) => v ** 3),
      ),
    ).toBe(1);
    expect(pearson([1], [2])).toBe(0);
  });

  it('rejects a gold label that is not a number', () => {
    expect(() => computeRegressionMetrics(['1'], ['similar'])).toThrow(ConfigError);
  });
});
