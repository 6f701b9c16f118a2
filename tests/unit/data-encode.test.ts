/**
 * Registry examples → tokens: truncation that keeps label words whole (and
 * reports what it cut), task ids, max_samples, the val split, prediction
 * prompts, and the CLI pipeline (loadExperimentData / loadPredictionData)
 * from a Hub-layout folder, the test Hub, custom entries and Alpaca files.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { validateConfig, type ExperimentConfig } from '../../src/config/schema';
import { ConfigError } from '../../src/errors';
import { LocalFolderSource } from '../../src/hub/node';
import { loadTokenizer, type Tokenizer } from '../../src/model/tokenizer';
import { datasetEntry, renderExample, type DatasetEntry, type Rendered } from '../../src/data/registry';
import { describeReport, encodeForPrediction, encodeMany, encodeRendered, encodeTrainingSet, sampleExamples, taskIdLookup } from '../../src/data/encode';
import { loadExperimentData, loadPredictionData } from '../../src/data/node';
import { IGNORE_INDEX } from '../../src/data/sft';
import { encodeTurn } from '../../src/data/template';
import { storiesDir } from '../helpers/models';
import { testHubRoot, useHubServer } from '../helpers/hub-server';

let tok: Tokenizer;
beforeAll(async () => {
  tok = await loadTokenizer(new LocalFolderSource(storiesDir()));
});

const sst2 = () => datasetEntry('sst2');
const longSentence = 'the film is a slow , sprawling and deeply strange journey through a world of half remembered dreams '.repeat(4);

function rendered(entry: DatasetEntry, row: Record<string, unknown>): Rendered {
  return renderExample(entry, row);
}

describe('truncation to cutoff_len', () => {
  it('never cuts a label word: the prompt is cut from its end and the response kept whole', () => {
    const r = rendered(sst2(), { sentence: longSentence, label: 1 });
    const { source, target } = encodeTurn(tok, { prompt: r.user, response: r.response }, null);
    expect(source.length).toBeGreaterThan(60);
    const L = 32;
    const { example, cut } = encodeRendered(tok, sst2(), r, { cutoffLen: L });
    expect(cut).toBe('prompt');
    expect(example!.inputIds).toHaveLength(L);
    // The last |target| ids are the response (label word + EOS), all labelled.
    expect(example!.inputIds.slice(L - target.length)).toEqual(target);
    expect(example!.labels.slice(L - target.length)).toEqual(target);
    expect(example!.labels.slice(0, L - target.length).every((x) => x === IGNORE_INDEX)).toBe(true);
    expect(tok.decode(target, { skipSpecialTokens: true }).trim()).toBe('positive');
    // LLaMA-Factory's rule alone would also keep it here; the guarantee matters when the response is long.
  });

  it('drops (and counts) an example whose response leaves no room for the prompt, instead of cutting the answer', () => {
    const gsm = datasetEntry('gsm8k');
    const r = rendered(gsm, { question: 'What is 2 + 3?', answer: 'Two plus three is five, because 2 + 3 = 5 and that is all there is to it.\n#### 5' });
    const { target } = encodeTurn(tok, { prompt: r.user, response: r.response }, null);
    const tight = encodeRendered(tok, gsm, r, { cutoffLen: target.length });
    expect(tight).toEqual({ example: null, cut: 'dropped' });
    const fits = encodeRendered(tok, gsm, r, { cutoffLen: target.length + 1 });
    expect(fits.cut).toBe('prompt');
    expect(fits.example!.inputIds.slice(1)).toEqual(target);
  });

  it('cuts generation responses by the LLaMA-Factory rule and counts them apart', () => {
    const conala = datasetEntry('conala');
    const long = rendered(conala, { intent: 'x', rewritten_intent: longSentence, snippet: 'print(1)\n'.repeat(80), question_id: 1 });
    const short = rendered(conala, { intent: 'x', rewritten_intent: 'add one', snippet: 'x + 1', question_id: 2 });
    const { examples, report } = encodeMany(tok, conala, [long, short, long], { cutoffLen: 200, taskId: 3 });
    expect(report).toEqual({ examples: 3, promptTruncated: 0, responseTruncated: 2, dropped: 0 });
    expect(examples.map((e) => e.inputIds.length)).toEqual([200, examples[1].inputIds.length, 200]);
    expect(examples[1].inputIds.length).toBeLessThan(200);
    expect(examples.every((e) => e.taskId === 3)).toBe(true);
    expect(describeReport(report, 200)).toBe('3 examples; 2 responses truncated to cutoff_len 200');
  });

  it('reports prompt truncation and drops in one line', () => {
    const e = sst2();
    const rs = [rendered(e, { sentence: longSentence, label: 0 }), rendered(e, { sentence: 'fine', label: 1 })];
    const { report } = encodeMany(tok, e, rs, { cutoffLen: 160 });
    expect(report).toEqual({ examples: 2, promptTruncated: 1, responseTruncated: 0, dropped: 0 });
    expect(describeReport({ ...report, dropped: 1 }, 40)).toBe(
      '2 examples; 1 prompts truncated to cutoff_len 40; 1 dropped (the response leaves no room for the prompt within cutoff_len 40; raise cutoff_len)',
    );
  });
});

describe('training and prediction sets', () => {
  const rows = (n: number) => Array.from({ length: n }, (_, i) => rendered(sst2(), { sentence: `sentence number ${i}`, label: i % 2 }));

  it('encodes parts with their task ids, then splits val_size off with the seed', () => {
    const set = encodeTrainingSet(
      tok,
      [
        { entry: sst2(), rendered: rows(6), taskId: 0 },
        { entry: datasetEntry('cola'), rendered: rows(4).map((r) => ({ ...r })), taskId: 1 },
      ],
      { cutoffLen: 64, valSize: 2, seed: 42, padId: 0 },
    );
    expect(set.train).toHaveLength(8);
    expect(set.val).toHaveLength(2);
    expect([...set.train, ...set.val].filter((e) => e.taskId === 1)).toHaveLength(4);
    expect(set.report.examples).toBe(10);
    expect(Object.keys(set.reports)).toEqual(['sst2', 'cola']);
    const again = encodeTrainingSet(
      tok,
      [
        { entry: sst2(), rendered: rows(6), taskId: 0 },
        { entry: datasetEntry('cola'), rendered: rows(4), taskId: 1 },
      ],
      { cutoffLen: 64, valSize: 2, seed: 42, padId: 0 },
    );
    expect(again.val).toEqual(set.val);
    expect(() =>
      encodeTrainingSet(
        tok,
        [
          { entry: sst2(), rendered: rows(2), taskId: 0 },
          { entry: sst2(), rendered: rows(2), taskId: 1 },
        ],
        { cutoffLen: 64, valSize: 0, seed: 1, padId: 0, packing: true },
      ),
    ).toThrow(/different MTP tasks/);
  });

  it('prediction prompts are the training source ids (the template up to the answer)', () => {
    const r = rows(1)[0];
    const [p] = encodeForPrediction(tok, sst2(), [r], { cutoffLen: 256, taskId: 2 }).examples;
    const { source } = encodeTurn(tok, { prompt: r.user, response: r.response }, null);
    expect(p.inputIds).toEqual(source);
    expect(tok.decode(p.inputIds, { skipSpecialTokens: true }).endsWith('Assistant:')).toBe(true);
    expect(p).toMatchObject({ key: 'sst2', taskId: 2, truncated: false, rendered: { label: 'negative' } });
  });

  it("renders the user turn with the tokenizer's chat template when it has one", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ps-chat-'));
    try {
      const config = JSON.parse(readFileSync(path.join(storiesDir(), 'tokenizer_config.json'), 'utf8'));
      writeFileSync(path.join(dir, 'tokenizer.json'), readFileSync(path.join(storiesDir(), 'tokenizer.json')));
      const template =
        "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";
      writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: template }));
      const chat = await loadTokenizer(new LocalFolderSource(dir));
      const r = rows(1)[0];
      const [p] = encodeForPrediction(chat, sst2(), [r], { cutoffLen: 256 }).examples;
      expect(chat.decode(p.inputIds)).toBe(`<|user|>${sst2().instruction}\nsentence number 0\n<|assistant|>`);
      const { example } = encodeRendered(chat, sst2(), r, { cutoffLen: 256 });
      const target = example!.inputIds.filter((_, i) => example!.labels[i] !== IGNORE_INDEX);
      expect(chat.decode(target, { skipSpecialTokens: true })).toBe('negative\n');
      expect(target.at(-1)).toBe(chat.eosTokenId);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('max_samples takes the first N, or a seeded random N', () => {
    const items = Array.from({ length: 10 }, (_, i) => i);
    expect(sampleExamples(items, 3)).toEqual([0, 1, 2]);
    expect(sampleExamples(items, null)).toEqual(items);
    const a = sampleExamples(items, 3, 7);
    expect(a).toHaveLength(3);
    expect(sampleExamples(items, 3, 7)).toEqual(a);
    expect(sampleExamples(items, 10, 7).sort((x, y) => x - y)).toEqual(items);
  });

  it('maps datasets to MTP task ids: aligned ids, key:id pairs (covering _eval), default 0, clear errors', () => {
    const aligned = taskIdLookup(['sst2', 'cola'], ['sst2_eval'], ['0', '1']);
    expect([aligned('sst2'), aligned('cola'), aligned('sst2_eval'), aligned('cola[validation]')]).toEqual([0, 1, 0, 1]);
    const pairs = taskIdLookup(['sst2', 'cola'], ['cola_eval'], ['cola:4']);
    expect([pairs('sst2'), pairs('cola'), pairs('cola_eval')]).toEqual([0, 4, 4]);
    expect(taskIdLookup(['sst2'], [], null)('sst2')).toBe(0);
    expect(() => taskIdLookup(['sst2', 'cola'], [], ['1'])).toThrow(/1 ids for 2 datasets/);
    expect(() => taskIdLookup(['sst2'], [], ['rte:1'])).toThrow(/names "rte", which is not in dataset/);
    expect(() => taskIdLookup(['sst2'], [], ['sst2:-1'])).toThrow(ConfigError);
  });
});

describe('the CLI pipeline (node.ts)', () => {
  const hub = useHubServer();
  const datasets = () => path.join(testHubRoot(), 'datasets');
  const cfg = (over: Record<string, unknown>): ExperimentConfig =>
    validateConfig({ model_name_or_path: 'stories260K', output_dir: 'unused', template: 'default', cutoff_len: 256, ...over });
  let tmp: string;
  beforeAll(() => {
    tmp = mkdtempSync(path.join(tmpdir(), 'ps-data-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('dataset: sst2 from a Hub-layout folder (dataset_dir), max_samples and val_size', async () => {
    const d = await loadExperimentData(tok, cfg({ dataset: 'sst2', dataset_dir: datasets(), max_samples: 10, val_size: 2 }), 0, { cacheDir: null });
    expect(d.train).toHaveLength(8);
    expect(d.val).toHaveLength(2);
    expect(d.report).toEqual({ examples: 10, promptTruncated: 0, responseTruncated: 0, dropped: 0 });
    expect(d.lines[0]).toMatch(/^data: sst2 \(train\) from local:.*nyu-mll\/glue .*sst2\/train-00000-of-00001\.parquet: 10 examples$/);
    expect(d.lines.at(-1)).toBe('data: 8 train, 2 val examples');
    // Every target ends with a label word and EOS.
    for (const ex of [...d.train, ...d.val]) {
      const target = ex.inputIds.filter((_, i) => ex.labels[i] !== IGNORE_INDEX);
      expect(['negative', 'positive']).toContain(tok.decode(target, { skipSpecialTokens: true }).trim());
    }
  });

  it('reads the Hub (the test server) with eval_dataset as the validation set, task ids, and several datasets', async () => {
    const d = await loadExperimentData(
      tok,
      cfg({ dataset: 'sst2,cola', eval_dataset: 'cola_eval', dataset_task_ids: 'sst2:0,cola:1', max_samples: 3, endpoint: hub.url }),
      0,
      { cacheDir: null },
    );
    expect(d.train.map((e) => e.taskId)).toEqual([0, 0, 0, 1, 1, 1]);
    expect(d.val.map((e) => e.taskId)).toEqual([1, 1, 1]);
    expect(d.lines.some((l) => l.startsWith('data: cola_eval (validation) from hub:'))).toBe(true);
  });

  it('shuffle_samples draws a seeded subset instead of the head', async () => {
    const head = await loadExperimentData(tok, cfg({ dataset: 'copa', max_samples: 4, endpoint: hub.url }), 0, { cacheDir: null });
    const drawn = await loadExperimentData(tok, cfg({ dataset: 'copa', max_samples: 4, shuffle_samples: true, endpoint: hub.url }), 0, { cacheDir: null });
    const again = await loadExperimentData(tok, cfg({ dataset: 'copa', max_samples: 4, shuffle_samples: true, endpoint: hub.url }), 0, { cacheDir: null });
    expect(drawn.train).toEqual(again.train);
    expect(drawn.train).not.toEqual(head.train);
  });

  it('custom entries from dataset_info, their files next to the JSON', async () => {
    writeFileSync(path.join(tmp, 'qa.jsonl'), '{"q": "Capital of France?", "a": "Paris"}\n{"q": "2 + 2?", "a": "4"}\n');
    writeFileSync(
      path.join(tmp, 'info.json'),
      JSON.stringify({
        tiny_qa: {
          task: 'generation',
          metric: 'generation',
          instruction: 'Answer briefly.',
          split: 'train',
          formatter: 'columns',
          columns: { prompt: 'q', response: 'a' },
          sources: [{ type: 'file', splits: { train: ['qa.jsonl'] } }],
        },
      }),
    );
    const d = await loadExperimentData(tok, cfg({ dataset: 'tiny_qa', dataset_info: path.join(tmp, 'info.json') }), 0, { cacheDir: null });
    expect(d.train).toHaveLength(2);
    expect(tok.decode(d.train[0].inputIds, { skipSpecialTokens: true })).toContain('Answer briefly.\nCapital of France?');
    // Registered only for the run.
    await expect(loadExperimentData(tok, cfg({ dataset: 'tiny_qa' }), 0, { cacheDir: null })).rejects.toThrow(/Unknown dataset "tiny_qa"/);
    // A LLaMA-Factory dataset_info.json is named for what it is.
    writeFileSync(path.join(tmp, 'lf.json'), JSON.stringify({ mine: { file_name: 'qa.jsonl' } }));
    await expect(loadExperimentData(tok, cfg({ dataset: 'sst2', dataset_info: path.join(tmp, 'lf.json') }), 0)).rejects.toThrow(
      /LLaMA-Factory \/ PEFT-Factory dataset_info\.json/,
    );
  });

  it('still trains on an Alpaca .jsonl file', async () => {
    const d = await loadExperimentData(tok, cfg({ dataset: 'examples/data/tiny_stories_alpaca.jsonl', val_size: 2 }), 0);
    expect(d.val).toHaveLength(2);
    expect(d.lines[0]).toMatch(/^data: \d+ train, 2 val examples/);
  });

  it("predicts on each dataset's _eval entry when eval_dataset is unset", async () => {
    const { sets, lines } = await loadPredictionData(tok, cfg({ dataset: 'sst2', do_predict: true, max_samples: 3, endpoint: hub.url }), { cacheDir: null });
    expect(sets.map((s) => s.entry.key)).toEqual(['sst2_eval']);
    expect(sets[0].examples.map((e) => e.rendered.label)).toEqual(['positive', 'negative', 'positive']);
    expect(lines[0]).toMatch(/^data: sst2_eval \(validation\)/);
  });

  it('max_predict_samples reads only the examples it predicts, the same ones as slicing afterwards (with and without shuffle)', async () => {
    const ids = async (over: Record<string, unknown>) =>
      (await loadPredictionData(tok, cfg({ dataset: 'sst2', do_predict: true, endpoint: hub.url, ...over }), { cacheDir: null })).sets[0].examples.map((e) =>
        e.inputIds.join(' '),
      );
    const all = await ids({ max_samples: 6 });
    expect(await ids({ max_samples: 6, max_predict_samples: 2 })).toEqual(all.slice(0, 2));
    const shuffled = await ids({ max_samples: 6, shuffle_samples: true });
    expect(await ids({ max_samples: 6, shuffle_samples: true, max_predict_samples: 2 })).toEqual(shuffled.slice(0, 2));
    // No max_samples: the first rows, never a shuffle.
    expect(await ids({ shuffle_samples: true, max_predict_samples: 3 })).toEqual(await ids({ max_samples: 3 }));
  });

  it('asks for a registry entry for a data file that is not Alpaca .jsonl', async () => {
    await expect(loadExperimentData(tok, cfg({ dataset: 'my_reviews.csv' }), 0)).rejects.toThrow(
      /needs a registry entry that says which columns are the prompt and the response/,
    );
  });

  it('names what it tried when the data is nowhere', async () => {
    await expect(loadExperimentData(tok, cfg({ dataset: 'qnli', dataset_dir: datasets(), endpoint: hub.url }), 0, { cacheDir: null })).rejects.toThrow(
      /dataset "qnli" \(split train\): no source could be read\.\n {2}- Hub repo nyu-mll\/glue: qnli\/train-00000-of-00001\.parquet not found/,
    );
  });
});
