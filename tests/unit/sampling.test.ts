import { describe, it, expect } from 'vitest';
import { sampleToken, seededRandom } from '../../src/model/generate';

describe('sampling', () => {
  const logits = Float32Array.from([1, 3, 2, 0.5, 2.9]);
  it('greedy at temperature 0 picks the argmax', () => {
    expect(sampleToken(logits, { maxNewTokens: 1, temperature: 0 }, seededRandom(1))).toBe(1);
  });
  it('top-k 1 is greedy at any temperature', () => {
    const r = seededRandom(5);
    for (let i = 0; i < 20; i++) expect(sampleToken(logits, { maxNewTokens: 1, temperature: 5, topK: 1 }, r)).toBe(1);
  });
  it('top-k 2 only ever picks the two largest', () => {
    const r = seededRandom(7);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(sampleToken(logits, { maxNewTokens: 1, temperature: 1, topK: 2 }, r));
    expect([...seen].sort()).toEqual([1, 4]);
  });
  it('top-p keeps the smallest set reaching p', () => {
    // softmax of [1,3,2,0.5,2.9]: p(1)=.39, p(4)=.35, p(2)=.14 ... top-p 0.7 keeps {1, 4}
    const r = seededRandom(9);
    const seen = new Set<number>();
    for (let i = 0; i < 300; i++) seen.add(sampleToken(logits, { maxNewTokens: 1, temperature: 1, topP: 0.7 }, r));
    expect([...seen].sort()).toEqual([1, 4]);
  });
  it('sampling frequencies follow softmax(logits / T) and the seed fixes the sequence', () => {
    const r = seededRandom(11);
    const counts = new Array(5).fill(0);
    const n = 20000;
    for (let i = 0; i < n; i++) counts[sampleToken(logits, { maxNewTokens: 1, temperature: 2 }, r)]++;
    const ex = Array.from(logits, (l) => Math.exp(l / 2));
    const z = ex.reduce((a, b) => a + b);
    ex.forEach((v, i) => expect(Math.abs(counts[i] / n - v / z)).toBeLessThan(0.015));
    const a = seededRandom(3),
      b = seededRandom(3);
    const sa = Array.from({ length: 10 }, () => sampleToken(logits, { maxNewTokens: 1, temperature: 1 }, a));
    const sb = Array.from({ length: 10 }, () => sampleToken(logits, { maxNewTokens: 1, temperature: 1 }, b));
    expect(sa).toEqual(sb);
  });
});
