/** Bounded defaults of the studio's Evaluate (src/eval/budget.ts) with the real stories260K tokenizer and registry entries. */
import { beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { evalBudget, labelWordTokens, EVAL_BUDGET } from '../../src/eval/budget';
import { LocalFolderSource } from '../../src/hub/node';
import { loadTokenizer, type Tokenizer } from '../../src/model/tokenizer';
import { datasetEntry } from '../../src/data/registry';
import { entryLabelWords } from '../../src/data/entry';
import { testHubRoot } from '../helpers/hub-server';

let tok: Tokenizer;
beforeAll(async () => {
  tok = await loadTokenizer(new LocalFolderSource(path.join(testHubRoot(), 'models', 'stories260K')));
});

describe('evaluation budget', () => {
  it('classification: the longest label word (alone or after a space) plus the end token, not 1024', () => {
    const sst2 = datasetEntry('sst2_eval');
    const words = entryLabelWords(sst2)!;
    const longest = Math.max(...words.flatMap((w) => [w, ` ${w}`].map((t) => tok.encode(t, { addSpecialTokens: false }).length)));
    expect(labelWordTokens(tok, words)).toBe(longest + 1);
    const b = evalBudget([sst2], tok);
    expect(b.maxNewTokens).toBe(longest + 1);
    expect(b.maxNewTokens).toBeLessThan(16);
    expect(b.maxPredictSamples).toBe(EVAL_BUDGET.classification.samples);
    expect(b.reason).toMatch(/sst2_eval: a label word/);
  });

  it('several eval sets take the largest need of any; generation families get a paragraph', () => {
    const b = evalBudget([datasetEntry('sst2_eval'), datasetEntry('gsm8k_eval')], tok);
    expect(b.maxNewTokens).toBe(EVAL_BUDGET.gsm8k.newTokens);
    expect(b.maxPredictSamples).toBe(EVAL_BUDGET.classification.samples);
  });
});
