import { describe, expect, it } from 'vitest';
import { evaluateArithmetic } from '../../src/eval/arithmetic';
import { computeGsm8kMetrics, computeSvampMetrics, gsm8kAnswer, parseSvampPrediction, svampGold } from '../../src/eval/math';
import { ConfigError } from '../../src/errors';

const value = (s: string) => {
  const r = evaluateArithmetic(s);
  return 'value' in r ? r.value : null;
};

describe('evaluateArithmetic', () => {
  it('precedence, associativity, unary signs, decimals', () => {
    expect(value('2 + 3 * 4')).toBe(14);
    expect(value('(2 + 3) * 4')).toBe(20);
    expect(value('8 / 4 / 2')).toBe(1);
    expect(value('10 - 4 - 3')).toBe(3);
    expect(value('-3 - -2')).toBe(-1);
    expect(value('+(1.5 * .5)')).toBe(0.75);
    expect(value('( ( 4.0 - 2.0 ) + 3.0 )')).toBe(5);
    expect(value('7.')).toBe(7);
  });

  it('rejects everything that is not arithmetic (no eval)', () => {
    for (const bad of [
      '',
      ' ',
      '2 ^ 3',
      '1,000 + 1',
      'alert(1)',
      'process.exit()',
      '(1 + 2',
      '1 + 2)',
      '1 2',
      '2 * * 3',
      '50%',
      '3 x 4',
      '1 / 0',
      '1 / (2 - 2)',
    ]) {
      expect(value(bad), bad).toBeNull();
    }
    expect(evaluateArithmetic('2 ^ 3')).toMatchObject({ error: expect.stringContaining('unexpected "^"') });
  });

  it('deep nesting is an error, not a stack overflow', () => {
    const deep = '('.repeat(5000) + '1' + ')'.repeat(5000);
    expect(value(deep)).toBeNull();
    expect(value('('.repeat(50) + '1' + ')'.repeat(50))).toBe(1);
  });
});

describe('GSM8K numeric accuracy', () => {
  it('reads the number after the last ####', () => {
    expect(gsm8kAnswer('5 + 3 = 8\n#### 8')).toBe(8);
    expect(gsm8kAnswer('#### 1,000')).toBe(1000);
    expect(gsm8kAnswer('#### 50%')).toBe(50);
    expect(gsm8kAnswer('#### $12.50 dollars')).toBe(12.5);
    expect(gsm8kAnswer('#### -3')).toBe(-3);
    expect(gsm8kAnswer('#### 2\nmore #### 7')).toBe(7);
    expect(gsm8kAnswer('The answer is 8')).toBeNull();
    expect(gsm8kAnswer('#### 18kg')).toBeNull();
    expect(gsm8kAnswer('####')).toBeNull();
  });

  it('hand-worked batch', () => {
    const preds = [
      'so 5+3=8.\n#### 8', // correct
      '#### 1,000', // correct (commas removed)
      'The answer is 8', // invalid: no marker
      '#### 7.0000001', // correct: |diff| = 1e-7 < 1e-6
      '#### 7.00001', // wrong: |diff| = 1e-5
      '<think>#### 3</think>#### 4', // correct: after </think>
      '#### 9', // wrong
      '', // invalid: empty
    ];
    const golds = ['#### 8', '#### 1000', '#### 8', '#### 7', '#### 7', '#### 4', '#### 8', '#### 2'];
    expect(computeGsm8kMetrics(preds, golds)).toEqual({ numeric_accuracy: 4 / 8, invalid: 2, count: 8 });
  });

  it('a gold answer without #### is a data error', () => {
    expect(() => computeGsm8kMetrics(['#### 1'], ['1'])).toThrow(ConfigError);
  });
});

describe('SVAMP: the predicted equation against the gold answer', () => {
  it('reads the first non-empty line, its left-hand side and its stated result', () => {
    expect(parseSvampPrediction('( 76.0 - 25.0 ) = 51.0')).toEqual({ value: 51, stated: 51 });
    expect(parseSvampPrediction('\n\n(100 - 49) = 50\n(2 + 2) = 4')).toEqual({ value: 51, stated: 50 });
    expect(parseSvampPrediction('51')).toEqual({ value: 51, stated: null });
    expect(parseSvampPrediction('The answer is 51')).toEqual({ value: null, stated: null });
    expect(svampGold('( 76.0 - 25.0 ) = 51.0')).toBe(51);
    expect(svampGold('51.0')).toBe(51);
  });

  it('hand-worked batch: value of the expression decides, not the stated number', () => {
    const gold = '( 76.0 - 25.0 ) = 51.0';
    const preds = [
      '( 76.0 - 25.0 ) = 51.0', // correct, consistent
      '(76 - 25) = 50', // correct (expression = 51), inconsistent
      '(76 + 25) = 101', // wrong, consistent
      '(1 + 1) = 51', // wrong although it states the gold number
      '51', // correct, no stated result
      'The answer is 51', // invalid
      '', // invalid
      '(1 / 0) = 51', // invalid: division by zero
      '\n(100 - 49) = 51\n(2+2)=4', // correct, consistent
    ];
    const m = computeSvampMetrics(
      preds,
      preds.map(() => gold),
    );
    expect(m).toEqual({ numeric_accuracy: 4 / 9, equation_consistency: 3 / 9, invalid: 3, count: 9 });
  });

  it('a gold answer without a number is a data error', () => {
    expect(() => computeSvampMetrics(['1'], ['( 1 + 1 ) = two'])).toThrow(ConfigError);
  });
});
