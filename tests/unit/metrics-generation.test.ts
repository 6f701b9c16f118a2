import { describe, expect, it } from 'vitest';
import { bleu4, computeGenerationMetrics, generationScores, lcsLength, rougeL, rougeN } from '../../src/eval/generation';
import { bleuTokens, rougeTokens } from '../../src/eval/text';

describe('tokenisation', () => {
  it('ROUGE: jieba-style word tokens', () => {
    expect(rougeTokens("It's 3.14-ish. Yes!")).toEqual(['It', "'", 's', '3.14', '-', 'ish', '.', 'Yes', '!']);
    expect(rougeTokens('def add(a, b):\n    return a+b')).toEqual(['def', 'add', '(', 'a', ',', 'b', ')', ':', 'return', 'a', '+', 'b']);
    expect(rougeTokens('v1.2.3 a--b 50% x_y')).toEqual(['v1.2', '.', '3', 'a', '--', 'b', '50%', 'x', '_', 'y']);
    expect(rougeTokens('我是人 ok')).toEqual(['我', '是', '人', 'ok']);
    expect(rougeTokens(' \n\t')).toEqual([]);
  });

  it('BLEU: characters (code points), spaces included', () => {
    expect(bleuTokens('a b')).toEqual(['a', ' ', 'b']);
    expect(bleuTokens('😀x')).toEqual(['😀', 'x']);
  });
});

describe('ROUGE (rouge-chinese definitions)', () => {
  const pred = 'the cat sat on the mat'.split(' ');
  const ref = 'the cat is on the mat'.split(' ');

  it('ROUGE-1 / ROUGE-2 over distinct n-grams, ROUGE-L over the LCS (hand-worked)', () => {
    // unigram sets {the, cat, sat, on, mat} and {the, cat, is, on, mat}: overlap 4 of 5 each
    expect(rougeN(pred, ref, 1)).toMatchObject({ precision: 0.8, recall: 0.8 });
    expect(rougeN(pred, ref, 1).f).toBeCloseTo(0.8, 12);
    // bigram sets: 5 each, shared {the cat, on the, the mat}
    expect(rougeN(pred, ref, 2).f).toBeCloseTo(0.6, 12);
    // LCS "the cat on the mat" = 5 of 6 tokens on both sides
    expect(lcsLength(pred, ref)).toBe(5);
    expect(rougeL(pred, ref).f).toBeCloseTo(5 / 6, 12);
  });

  it('a repeated n-gram counts once', () => {
    const p = ['the', 'the', 'the'], r = ['the', 'cat'];
    // sets {the} vs {the, cat}: P = 1, R = 1/2, F = 2/3
    expect(rougeN(p, r, 1).f).toBeCloseTo(2 / 3, 12);
    expect(rougeN(p, r, 2).f).toBe(0);
    // LCS 1: P = 1/3, R = 1/2, F = 2·(1/6)/(5/6) = 0.4
    expect(rougeL(p, r).f).toBeCloseTo(0.4, 12);
  });
});

describe('BLEU-4 (NLTK sentence_bleu, smoothing method 3)', () => {
  it('hand-worked: equal lengths, one zero precision smoothed to 1/2', () => {
    // 'abcd' vs 'abce': p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1 → 1/(2¹·1); BP = 1 (c = r)
    expect(bleu4([...'abcd'], [...'abce'])).toBeCloseTo(((3 / 4) * (2 / 3) * (1 / 2) * (1 / 2)) ** 0.25, 12);
  });

  it('hand-worked: short prediction, brevity penalty and two smoothed orders', () => {
    // 'ab' vs 'abc': p1 = 1, p2 = 1, p3 = 0/max(1, 0) → 1/2, p4 → 1/4; BP = exp(1 − 3/2)
    expect(bleu4([...'ab'], [...'abc'])).toBeCloseTo(Math.exp(-0.5) * (1 * 1 * 0.5 * 0.25) ** 0.25, 12);
  });

  it('no common character or an empty prediction scores 0', () => {
    expect(bleu4([...'xyz'], [...'abc'])).toBe(0);
    expect(bleu4([], [...'abc'])).toBe(0);
    expect(bleu4([...'abcd'], [...'abcd'])).toBe(1);
  });

  it('an exact match shorter than 4 characters does not score 1 (no 4-gram: p4 smoothed to 1/2)', () => {
    expect(bleu4([...'abc'], [...'abc'])).toBeCloseTo(0.5 ** 0.25, 12);
  });
});

describe('computeGenerationMetrics', () => {
  it('averages per-example scores ×100; empty predictions score 0', () => {
    const m = computeGenerationMetrics(['the cat sat on the mat', ''], ['the cat is on the mat', 'anything']);
    expect(m['rouge-1']).toBeCloseTo((80 + 0) / 2, 10);
    expect(m['rouge-2']).toBeCloseTo((60 + 0) / 2, 10);
    expect(m['rouge-l']).toBeCloseTo((100 * (5 / 6) + 0) / 2, 10);
    expect(m.count).toBe(2);
  });

  it('matches values printed by LLaMA-Factory\'s code path (jieba + rouge-chinese + NLTK method3)', () => {
    // Produced by running jieba 0.42 (HMM, empty dictionary: no Latin entries),
    // rouge_chinese.Rouge().get_scores and nltk sentence_bleu(list(label), list(pred),
    // SmoothingFunction().method3) exactly as ComputeSimilarity calls them, ×100.
    // rouge-chinese divides by P + R + 1e-8, hence the 1e-5 tolerance.
    const cases: [string, string, Record<string, number>][] = [
      ['the cat sat on the mat', 'the cat is on the mat', { 'rouge-1': 79.99999950000002, 'rouge-2': 59.999999500000015, 'rouge-l': 83.33333283333334, 'bleu-4': 78.39204411491599 }],
      ["It's 3.14-ish. Yes!", 'it is 3.14 ish', { 'rouge-1': 30.769230343195268, 'rouge-2': 0, 'rouge-l': 30.769230343195268, 'bleu-4': 33.38080021677297 }],
      ['def add(a, b):\n    return a+b', 'def add(x, y):\n    return x + y', { 'rouge-1': 79.99999950000002, 'rouge-2': 36.36363586363637, 'rouge-l': 66.66666616666667, 'bleu-4': 66.98280323968864 }],
      ['v1.2.3 a--b 50% x_y', 'v1.2.3 a b 50 % x y', { 'rouge-1': 73.68421002770083, 'rouge-2': 35.294117148788935, 'rouge-l': 73.68421002770083, 'bleu-4': 57.77966168512882 }],
      [' ', 'a b', { 'rouge-1': 0, 'rouge-2': 0, 'rouge-l': 0, 'bleu-4': 4.784824825520547 }],
    ];
    for (const [p, l, want] of cases) {
      const got = generationScores(p, l);
      for (const k of Object.keys(want)) expect(got[k as keyof typeof got], `${k} of ${JSON.stringify(p)}`).toBeCloseTo(want[k], 5);
    }
  });
});
