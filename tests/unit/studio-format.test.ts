/** Display formatting of the studio's charts (src/ui/format.ts). */
import { describe, expect, test } from 'vitest';
import { formatTicks } from '../../src/ui/format';

describe('chart tick labels', () => {
  test('a learning rate moving in its fourth digit gets distinct labels (they all read 0.001)', () => {
    expect(formatTicks([0.001, 0.0012, 0.0014, 0.0016])).toEqual(['0.001', '0.0012', '0.0014', '0.0016']);
    expect(formatTicks([0.00098, 0.000985, 0.00099])).toEqual(['9.8e-4', '9.85e-4', '9.9e-4']);
    expect(formatTicks([5e-5, 1e-4, 1.5e-4])).toEqual(['5e-5', '1e-4', '1.5e-4']);
  });

  test('round ticks stay short, large and negative values keep their digits', () => {
    expect(formatTicks([0, 0.5, 1, 1.5, 2])).toEqual(['0', '0.5', '1', '1.5', '2']);
    expect(formatTicks([2.2, 2.25, 2.3])).toEqual(['2.2', '2.25', '2.3']);
    expect(formatTicks([100, 200, 300])).toEqual(['100', '200', '300']);
    expect(formatTicks([1234, 1236])).toEqual(['1234', '1236']);
    expect(formatTicks([-0.1, 0, 0.1])).toEqual(['-0.1', '0', '0.1']);
    expect(formatTicks([2_000_000, 3_000_000])).toEqual(['2e6', '3e6']);
  });

  test('ticks that differ only past 12 digits, and a single tick', () => {
    expect(formatTicks([1, 1 + 1e-14])).toHaveLength(2);
    expect(formatTicks([0.0003])).toEqual(['3e-4']);
    expect(formatTicks([])).toEqual([]);
  });
});
