/**
 * The formatting choices the README's Datasets section documents, each on the
 * real rows of ../shared/hub/datasets where it matters: WSC's markers agree
 * with its instruction, COPA keeps its cause/effect question, CoNaLa falls
 * back to `intent` when `rewritten_intent` is empty, STS-B scores are the
 * shortest decimal of their float32, OpenBookQA's five-choice row keeps all
 * five lines; and the plain templates' BOS key (template_bos).
 */
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { LocalFolderSource } from '../../src/hub/node';
import { datasetEntry, loadDatasetRows, renderExample, renderRows } from '../../src/data/registry';
import { floatText } from '../../src/data/formatters';
import { encodeTurn } from '../../src/data/template';
import { validateConfig } from '../../src/config/schema';
import { loadTokenizer } from '../../src/model/tokenizer';
import { testHubRoot } from '../helpers/hub-server';
import { storiesDir } from '../helpers/models';

const DATA = () => path.join(testHubRoot(), 'datasets');
const raw = (dir: string) => new LocalFolderSource(path.join(DATA(), dir, 'raw'));

describe('dataset formatting choices (README, Datasets)', () => {
  it('WSC: the pronoun (span2) is marked * … * and the noun (span1) # … #, as the instruction says', async () => {
    const entry = datasetEntry('wsc_eval');
    expect(entry.instruction).toContain('the pronoun marked with * * is referencing the noun marked with # #');
    const loaded = await loadDatasetRows(entry, raw('wsc'), { source: 'file', maxRows: 8 });
    for (const [i, r] of renderRows(loaded).entries()) {
      const row = loaded.rows[i] as { span1_text: string; span2_text: string };
      expect(r.prompt, `row ${i}`).toContain(`* ${row.span2_text} *`);
      expect(r.prompt, `row ${i}`).toContain(`# ${row.span1_text} #`);
    }
    // Row 0: span1 "anyone" (word 32) is the noun, span2 "him" (word 47) the pronoun.
    expect(renderRows(loaded)[0].prompt).toMatch(/could take his claim away from \* him \* \.$/);
    expect(renderRows(loaded)[0].prompt).toContain('# anyone # who knew');
  });

  it('COPA: the "Question: cause/effect" line stays (PEFT-Factory leaves it out)', async () => {
    const loaded = await loadDatasetRows(datasetEntry('copa_eval'), raw('copa'), { source: 'file', maxRows: 12 });
    const rendered = renderRows(loaded);
    rendered.forEach((r, i) => expect(r.prompt).toMatch(new RegExp(`\\n\\nQuestion: ${(loaded.rows[i] as { question: string }).question}\\n\\nChoice1: `)));
    expect(new Set(loaded.rows.map((r) => r.question))).toEqual(new Set(['cause', 'effect']));
  });

  it('CoNaLa: an empty rewritten_intent falls back to intent (PEFT-Factory would prompt with the instruction alone)', async () => {
    const loaded = await loadDatasetRows(datasetEntry('conala_eval'), raw('conala'), { source: 'file', maxRows: 5 });
    const row = loaded.rows[4] as { intent: string; rewritten_intent: string | null; snippet: string };
    expect(row.rewritten_intent).toBeNull();
    const r = renderRows(loaded)[4];
    expect(r.prompt).toBe(row.intent);
    expect(r.response).toBe(row.snippet);
    expect(renderRows(loaded)[0].prompt).toBe(loaded.rows[0].rewritten_intent);
  });

  it('STS-B: the score is the shortest decimal of its float32, with ".0" on whole numbers', async () => {
    expect(floatText(Math.fround(3.8), true)).toBe('3.8');
    expect(floatText(Math.fround(2.1111111111), true)).toBe('2.1111112'); // 2.111111 is another float32
    expect(floatText(5, true)).toBe('5.0');
    const loaded = await loadDatasetRows(datasetEntry('stsb_eval'), raw('stsb'), { source: 'file', maxRows: 20 });
    for (const r of renderRows(loaded)) {
      expect(r.response).toMatch(/^\d\.\d{1,7}$/);
      expect(Math.fround(Number(r.response))).toBe(Math.fround(Number(r.response)));
    }
  });

  it('OpenBookQA: the train row with five choices (A B C D D) lists all five (PEFT-Factory shows the first four)', async () => {
    const loaded = await loadDatasetRows(datasetEntry('openbookqa'), raw('openbookqa'), { source: 'file' });
    const i = loaded.rows.findIndex((r) => r.id === '12-1145');
    expect(i).toBeGreaterThanOrEqual(0);
    const r = renderExample(datasetEntry('openbookqa'), loaded.rows[i], loaded.source);
    const lines = r.prompt.split('\n\nChoices:\n')[1].split('\n');
    expect(lines.map((l) => l.slice(0, 2))).toEqual(['A:', 'B:', 'C:', 'D:', 'D:']);
  });
});

describe('template_bos: the plain templates with or without BOS', () => {
  const tok = () => loadTokenizer(new LocalFolderSource(storiesDir()));

  it("defaults to true (BOS first); false gives LLaMA-Factory's default template token for token (no BOS)", async () => {
    const base = { model_name_or_path: storiesDir(), output_dir: 'out', dataset: 'sst2' };
    expect(validateConfig(base).template_bos).toBe(true);
    expect(validateConfig({ ...base, template_bos: false }).template_bos).toBe(false);
    const t = await tok();
    const turn = { prompt: 'Hi', response: 'Yo' };
    const withBos = encodeTurn(t, turn, 'default', true);
    const without = encodeTurn(t, turn, 'default', false);
    expect(withBos.source[0]).toBe(t.bosTokenId);
    expect(without.source).toEqual(withBos.source.slice(1));
    // LLaMA-Factory's default template: "Human: {{content}}" EOS "\nAssistant:", each slot tokenized alone.
    const eos = t.eosTokenId!;
    expect(without.source).toEqual([...t.encode('Human: Hi', { addSpecialTokens: false }), eos, ...t.encode('\nAssistant:', { addSpecialTokens: false })]);
    expect(without.target).toEqual([...t.encode('Yo', { addSpecialTokens: false }), eos, ...t.encode('\n', { addSpecialTokens: false })]);
  });
});
