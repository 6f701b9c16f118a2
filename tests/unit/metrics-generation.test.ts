import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bleu4, computeGenerationMetrics, generationScores, lcsLength, pyRound4, rougeL, rougeN } from '../../src/eval/generation';
import { bleuTokens, cutSentences, jiebaCut, rougeTokens, rougeWords } from '../../src/eval/text';

const here = path.dirname(fileURLToPath(import.meta.url));
/** rouge-chinese's F: 2·(P·R)/(P + R + 1e-8). */
const F = (p: number, r: number) => 2 * ((p * r) / (p + r + 1e-8));

describe('tokenisation', () => {
  it('ROUGE: jieba-style word tokens', () => {
    expect(rougeTokens("It's 3.14-ish. Yes!")).toEqual(['It', "'", 's', '3.14', '-', 'ish', '.', 'Yes', '!']);
    expect(rougeTokens('def add(a, b):\n    return a+b')).toEqual(['def', 'add', '(', 'a', ',', 'b', ')', ':', 'return', 'a', '+', 'b']);
    expect(rougeTokens('v1.2.3 a--b 50% x_y')).toEqual(['v1.2', '.', '3', 'a', '--', 'b', '50%', 'x', '_', 'y']);
    expect(rougeTokens('我是人 ok')).toEqual(['我', '是', '人', 'ok']);
    expect(rougeTokens(' \n\t')).toEqual([]);
  });

  it('ROUGE: jieba dictionary words with symbols stay whole (C++, C#, c++, c#, AT&T), even inside a Latin run', () => {
    expect(rougeTokens('C++ C# c++ c# AT&T')).toEqual(['C++', 'C#', 'c++', 'c#', 'AT&T']);
    // jieba: the route takes the dictionary word; the characters before it go to finalseg as one buffer.
    expect(rougeTokens('abc++ x c#d AT&Tx')).toEqual(['ab', 'c++', 'x', 'c#', 'd', 'AT&T', 'x']);
    // Not dictionary words: split as Latin runs and symbols.
    expect(rougeTokens('F# AT&t C+')).toEqual(['F', '#', 'AT', '&', 't', 'C', '+']);
  });

  it('jieba.cut keeps whitespace tokens ("\\r\\n" as one) and rouge-chinese turns whitespace-only sentences into empty words', () => {
    expect(jiebaCut('a\r\n b')).toEqual(['a', '\r\n', ' ', 'b']);
    // A line of only whitespace: one empty word between the lines' words.
    expect(rougeWords('a\n \nb')).toEqual(['a', '', 'b']);
    expect(rougeWords('a\n\n\nb')).toEqual(['a', '', '', 'b']);
    // "?" ends a sentence; followed by a newline, the space between them is a sentence of its own.
    expect(cutSentences('What ? \n It')).toEqual(['What ?', ' ', ' It']);
    expect(rougeWords('What?\nIt')).toEqual(['What', '?', '', 'It']);
    expect(rougeWords('Why? ok')).toEqual(['Why', '?', 'ok']);
    expect(rougeWords(' \n\t')).toBeNull();
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
    expect(rougeN(pred, ref, 1).f).toBe(F(0.8, 0.8));
    expect(rougeN(pred, ref, 1).f).toBeCloseTo(0.8, 8);
    // bigram sets: 5 each, shared {the cat, on the, the mat}
    expect(rougeN(pred, ref, 2).f).toBe(F(0.6, 0.6));
    // LCS "the cat on the mat" = 5 of 6 tokens on both sides
    expect(lcsLength(pred, ref)).toBe(5);
    expect(rougeL(pred, ref).f).toBe(F(5 / 6, 5 / 6));
  });

  it('a repeated n-gram counts once', () => {
    const p = ['the', 'the', 'the'],
      r = ['the', 'cat'];
    // sets {the} vs {the, cat}: P = 1, R = 1/2, F = 2/3
    expect(rougeN(p, r, 1).f).toBe(F(1, 1 / 2));
    expect(rougeN(p, r, 2).f).toBe(0);
    // LCS 1: P = 1/3, R = 1/2, F = 2·(1/6)/(5/6) = 0.4
    expect(rougeL(p, r).f).toBe(F(1 / 3, 1 / 2));
    expect(rougeL(p, r).f).toBeCloseTo(0.4, 7);
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
  it('rounds each example to 4 decimals (Python round: ties to even) and averages; empty predictions score 0', () => {
    expect(pyRound4(79.99999950000002)).toBe(80);
    expect(pyRound4(83.33333283333334)).toBe(83.3333);
    expect(pyRound4(0.03125)).toBe(0.0312); // an exact binary tie: to even
    expect(pyRound4(0.09375)).toBe(0.0938);
    expect(pyRound4(2.00005)).toBe(2); // 2.00005 is a little below the tie in binary (Python: 2.0)
    const m = computeGenerationMetrics(['the cat sat on the mat', ''], ['the cat is on the mat', 'anything']);
    expect(m['rouge-1']).toBe((80 + 0) / 2);
    expect(m['rouge-2']).toBe((60 + 0) / 2);
    expect(m['rouge-l']).toBe((83.3333 + 0) / 2);
    expect(m.count).toBe(2);
  });

  it('BLEU-4 equals NLTK sentence_bleu(list(label), list(pred), method3) ×100, rounded to 4 decimals', () => {
    // Values printed by NLTK for these pairs, before LLaMA-Factory's rounding.
    const cases: [string, string, number][] = [
      ['the cat sat on the mat', 'the cat is on the mat', 78.39204411491599],
      ["It's 3.14-ish. Yes!", 'it is 3.14 ish', 33.38080021677297],
      ['def add(a, b):\n    return a+b', 'def add(x, y):\n    return x + y', 66.98280323968864],
      ['v1.2.3 a--b 50% x_y', 'v1.2.3 a b 50 % x y', 57.77966168512882],
      [' ', 'a b', 4.784824825520547],
    ];
    for (const [p, l, want] of cases) expect(generationScores(p, l)['bleu-4'], JSON.stringify(p)).toBe(pyRound4(want));
  });

  it("ROUGE equals LLaMA-Factory's compute_metrics (real jieba 0.42.1 + rouge-chinese) on every golden case", () => {
    // tests/golden/rouge/make_rouge_golden.py ran jieba.cut and rouge_chinese.Rouge exactly as
    // ComputeSimilarity calls them: whitespace-only lines, "?" before a newline, C++ / C# / c++ /
    // c# / AT&T, CRLF, Unicode spaces, empty texts, and real CoNaLa snippets and intents.
    const golden = JSON.parse(readFileSync(path.join(here, '..', 'golden', 'rouge', 'rouge_golden.json'), 'utf8')) as {
      cases: {
        name: string;
        predict: string;
        label: string;
        jieba_predict: string[];
        jieba_label: string[];
        'rouge-1': number;
        'rouge-2': number;
        'rouge-l': number;
      }[];
    };
    expect(golden.cases.length).toBeGreaterThanOrEqual(29);
    for (const c of golden.cases) {
      expect(jiebaCut(c.predict), `${c.name}: jieba.cut(predict)`).toEqual(c.jieba_predict);
      expect(jiebaCut(c.label), `${c.name}: jieba.cut(label)`).toEqual(c.jieba_label);
      const got = generationScores(c.predict, c.label);
      for (const k of ['rouge-1', 'rouge-2', 'rouge-l'] as const) expect(got[k], `${c.name}: ${k}`).toBe(c[k]);
    }
  });
});
