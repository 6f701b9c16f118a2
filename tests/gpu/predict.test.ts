/** Batched prediction with generation: same text as one-at-a-time greedy generation, label-word stopping, order kept. */
import { describe, it, expect, beforeAll } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { storiesDir } from '../helpers/models';
import { LocalFolderSource } from '../../src/hub/node';
import { loadModel } from '../../src/model/load';
import { generate } from '../../src/model/generate';
import { labelWordComplete, normalizeAnswer, predict, predictionsJsonl } from '../../src/eval/predict';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import type { Tokenizer } from '../../src/model/tokenizer';

describe('label words', () => {
  it('normalise as METRICS.md says: after the last </think>, trimmed, lower-case', () => {
    expect(normalizeAnswer('  Positive\n')).toBe('positive');
    expect(normalizeAnswer('<think>maybe negative</think> Negative')).toBe('negative');
  });
  it('a label word is complete only when no other label word extends it', () => {
    expect(labelWordComplete('positive', ['negative', 'positive'])).toBe(true);
    expect(labelWordComplete('posit', ['negative', 'positive'])).toBe(false);
    expect(labelWordComplete('entailment', ['entailment', 'entailment_strict'])).toBe(false);
    expect(labelWordComplete(' A', ['A', 'B', 'C', 'D'])).toBe(true);
    expect(labelWordComplete('<think>A', ['A', 'B'])).toBe(false);
    expect(labelWordComplete('', ['A', 'B'])).toBe(false);
  });
});

describe('predict (stories260K)', () => {
  let e: Engine, model: LlamaModel, tok: Tokenizer;
  beforeAll(async () => {
    e = await gpuEngine();
    ({ model, tokenizer: tok } = (await loadModel(e, new LocalFolderSource(storiesDir()))) as { model: LlamaModel; tokenizer: Tokenizer });
  });

  it('batched predictions equal greedy generation of each prompt alone, in input order', async () => {
    const prompts = ['Once upon a time', 'Lily', 'The cat sat on the', 'Tom and his dog went'];
    const examples = prompts.map((p) => ({ prompt: p, promptIds: tok.encode(p), label: 'x' }));
    const r = await predict(model, tok, examples, { batchSize: 3, maxNewTokens: 6 });
    expect(r.rows.map((x) => x.prompt)).toEqual(prompts);
    for (let i = 0; i < prompts.length; i++) {
      const ids = await generate(model, examples[i].promptIds, { maxNewTokens: 6, stopIds: tok.eosTokenId !== null ? [tok.eosTokenId] : [] });
      const toks = ids.at(-1) === tok.eosTokenId ? ids.slice(0, -1) : ids;
      expect(r.rows[i].predict).toBe(tok.decode(toks, { skipSpecialTokens: true }));
    }
    expect(r.generatedTokens).toBeGreaterThan(0);
    expect(r.msPerToken).toBeGreaterThan(0);
    const lines = predictionsJsonl(r.rows)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(Object.keys(lines[0])).toEqual(['prompt', 'predict', 'label']);
  });

  it('stops a sequence as soon as it is a complete label word', async () => {
    // Use the model's own greedy continuation's first word as the "label word".
    const ids = tok.encode('Once upon a time');
    const free = await predict(model, tok, [{ prompt: 'p', promptIds: ids, label: '' }], { batchSize: 1, maxNewTokens: 8 });
    const firstWord = free.rows[0].predict.trim().split(/\s+/)[0];
    const r = await predict(model, tok, [{ prompt: 'p', promptIds: ids, label: '' }], { batchSize: 1, maxNewTokens: 8, labelWords: [firstWord, 'zzz'] });
    expect(r.rows[0].predict.trim()).toBe(firstWord);
    expect(r.generatedTokens).toBeLessThan(free.generatedTokens);
  });
});
