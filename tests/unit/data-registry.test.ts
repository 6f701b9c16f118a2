/**
 * The 27-dataset registry against real rows: every entry loads from the test
 * Hub (../shared/hub served in the Hub's URL layout, parquet mirrors of the
 * real repos) and the rendered text of its first two examples equals the
 * golden file checked in under tests/golden/datasets/ (written with
 * UPDATE_GOLDEN=1 after reading them by eye). The original files (<name>/raw)
 * must render the same text. MNLI, HellaSwag, WinoGrande and APPS have no
 * real rows here: their tests write a few rows in the Hub schema, and their
 * goldens say "synthetic".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalFolderSource } from '../../src/hub/node';
import { nodeResolver } from '../../src/data/node';
import { MemoryCache } from '../../src/hub/cache';
import {
  datasetEntry,
  datasetNames,
  hubResolver,
  labelWords,
  listDatasets,
  loadDatasetRows,
  renderRows,
  type DatasetEntry,
  type LoadedRows,
  type Rendered,
} from '../../src/data/registry';
import { ConfigError } from '../../src/errors';
import { startHubServer, testHubRoot, useHubServer, type HubServer } from '../helpers/hub-server';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const GOLDEN = path.join(repoRoot, 'tests', 'golden', 'datasets');
const UPDATE = process.env.UPDATE_GOLDEN === '1';
const RAW = () => path.join(testHubRoot(), 'datasets');

const hub = useHubServer();

function goldenText(key: string, from: string, rendered: Rendered[], synthetic = false): string {
  const head = `# ${key}: the first ${rendered.length} examples${synthetic ? ' of SYNTHETIC rows written by the test in the Hub schema (no real rows in shared/hub)' : ''}, from ${from}\n`;
  return (
    head +
    rendered
      .map((r, i) => {
        let s = `\n===== example ${i}: user turn =====\n${r.user}\n===== example ${i}: response =====\n${r.response}\n===== example ${i}: label =====\n${r.label}\n`;
        if (r.answers) s += `===== example ${i}: answers =====\n${JSON.stringify(r.answers)}\n`;
        return s;
      })
      .join('')
  );
}

function checkGolden(name: string, text: string): void {
  const file = path.join(GOLDEN, `${name}.txt`);
  if (UPDATE) {
    mkdirSync(GOLDEN, { recursive: true });
    writeFileSync(file, text);
    return;
  }
  if (!existsSync(file)) throw new Error(`No golden file ${file}. Run with UPDATE_GOLDEN=1, read the file, and commit it if it is right.`);
  expect(text).toBe(readFileSync(file, 'utf8'));
}

/** Where a loaded split came from, without the server's port. */
function fromOf(l: LoadedRows): string {
  return l.source.type === 'hub'
    ? `${l.source.repo}${l.source.revision ? `@${l.source.revision}` : ''} ${l.files.join(', ')}`
    : `original files ${l.files.join(', ')}`;
}

// [key, folder of the original files under shared/hub/datasets, their names when they differ from the registry's]
const REAL: [string, string, string[]?][] = [
  ['sst2', 'sst2'],
  ['sst2_eval', 'sst2'],
  ['cola', 'cola'],
  ['cola_eval', 'cola'],
  ['mrpc', 'mrpc'],
  ['mrpc_eval', 'mrpc'],
  ['stsb', 'stsb'],
  ['stsb_eval', 'stsb'],
  ['qnli_eval', 'qnli'],
  ['qqp_eval', 'qqp', ['dev_head9.tsv']],
  ['rte', 'rte'],
  ['rte_eval', 'rte'],
  ['record', 'record', ['train_fewglue32.jsonl']],
  ['multirc', 'multirc', ['train_fewglue32.jsonl']],
  ['multirc_eval', 'multirc'],
  ['boolq', 'boolq', ['train_fewglue32.jsonl']],
  ['boolq_eval', 'boolq'],
  ['wic', 'wic', ['train_fewglue32.jsonl']],
  ['wic_eval', 'wic'],
  ['wsc', 'wsc'],
  ['wsc_eval', 'wsc'],
  ['cb', 'cb', ['train_fewglue32.jsonl']],
  ['cb_eval', 'cb'],
  ['copa', 'copa', ['train_fewglue32.jsonl']],
  ['copa_eval', 'copa'],
  ['mmlu_eval', 'mmlu'],
  ['mmlu[dev]', 'mmlu'],
  ['piqa_eval', 'piqa'],
  ['siqa_eval', 'siqa'],
  ['openbookqa', 'openbookqa'],
  ['openbookqa_eval', 'openbookqa'],
  ['math_qa_eval', 'mathqa'],
  ['gsm8k', 'gsm8k'],
  ['gsm8k_eval', 'gsm8k'],
  ['svamp_eval', 'svamp'],
  ['conala', 'conala'],
  ['conala_eval', 'conala'],
  ['codealpacapy', 'codealpaca'],
];

const SYNTHETIC = ['mnli', 'hellaswag', 'winogrande', 'apps'];

describe('dataset registry: the 27 datasets on real rows', () => {
  it('has the 27 PEFT-Factory datasets, each with a training and an _eval key, and the exact instructions', () => {
    const names = datasetNames();
    expect(names).toHaveLength(27);
    expect(names).toEqual([
      'mnli',
      'qqp',
      'qnli',
      'sst2',
      'stsb',
      'mrpc',
      'rte',
      'cola',
      'record',
      'multirc',
      'boolq',
      'wic',
      'wsc',
      'cb',
      'copa',
      'mmlu',
      'piqa',
      'siqa',
      'hellaswag',
      'winogrande',
      'openbookqa',
      'math_qa',
      'gsm8k',
      'svamp',
      'conala',
      'codealpacapy',
      'apps',
    ]);
    const keys = listDatasets().map((e) => e.key);
    for (const n of names) expect(keys).toEqual(expect.arrayContaining([n, `${n}_eval`]));
    // Every dataset is tested below: on real rows or on synthetic ones.
    const tested = new Set([...REAL.map(([k]) => datasetEntry(k).name), ...SYNTHETIC]);
    expect([...tested].sort()).toEqual([...names].sort());
    // Spot checks of DATASETS.md's strings, including the ones PEFT-Factory drifts on.
    expect(datasetEntry('copa').instruction).toBe(datasetEntry('copa_eval').instruction);
    expect(datasetEntry('copa').instruction).toContain('from the choice pair.');
    expect(datasetEntry('winogrande').instruction).toBe(
      "Based on the sentence and provided options, select the best option that replaces the '_' character in the sentence. Respond only with the corresponding option1 or option2.",
    );
    expect(datasetEntry('siqa').instruction).toContain('choices A, B, and C.');
    expect(datasetEntry('mmlu').instruction).toBe(datasetEntry('openbookqa').instruction);
    expect(datasetEntry('apps').instruction).toBe('Based on the following instruction, generate a valid Python code that answers it.');
    expect(datasetEntry('mnli_eval').split).toBe('validation_mismatched');
    expect(datasetEntry('gsm8k_eval').split).toBe('test');
  });

  it('gives label words in class-id order, the positive class second', () => {
    expect(labelWords(datasetEntry('sst2'))).toEqual(['negative', 'positive']);
    expect(labelWords(datasetEntry('cb_eval'))).toEqual(['entailment', 'contradiction', 'neutral']);
    expect(labelWords(datasetEntry('piqa'))).toEqual(['solution1', 'solution2']);
    expect(labelWords(datasetEntry('hellaswag'))).toEqual(['ending1', 'ending2', 'ending3', 'ending4']);
    expect(labelWords(datasetEntry('math_qa'))).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(labelWords(datasetEntry('stsb'))).toBeNull();
    expect(labelWords(datasetEntry('gsm8k'))).toBeNull();
    expect(datasetEntry('stsb').metric).toBe('regression');
    expect(datasetEntry('svamp').metric).toBe('svamp');
    expect(datasetEntry('record').metric).toBe('exact_match');
    expect(datasetEntry('conala').metric).toBe('generation');
  });

  for (const [key, rawDir, rawFiles] of REAL) {
    it(`${key}: loads from the Hub, renders its golden text, and the original files render the same`, async () => {
      const entry = datasetEntry(key);
      const fromHub = await loadDatasetRows(entry, hubResolver({ endpoint: hub.url }), { maxRows: 2 });
      expect(fromHub.source.type).toBe('hub');
      const rendered = renderRows(fromHub);
      expect(rendered).toHaveLength(2);
      for (const r of rendered) {
        expect(r.user.startsWith(`${entry.instruction}\n`)).toBe(true);
        expect(r.response.length).toBeGreaterThan(0);
        const words = labelWords(entry);
        if (words) expect(words).toContain(r.response);
      }
      checkGolden(key.replace(/\[(.*)\]$/, '.$1'), goldenText(key, fromOf(fromHub), rendered));

      const fromRaw = await loadDatasetRows(entry, new LocalFolderSource(path.join(RAW(), rawDir, 'raw')), { source: 'file', files: rawFiles, maxRows: 2 });
      expect(renderRows(fromRaw)).toEqual(rendered);
    });
  }

  it('the raw-file fallback finds rte/raw (SuperGLUE jsonl), mathqa/raw and codealpaca/raw under dataset_dir as shared/hub/datasets lays them out', async () => {
    // The resolver the CLI uses, restricted to file sources: folders and file names come from the registry alone.
    const resolver = nodeResolver({ datasetDir: RAW(), cacheDir: null });
    for (const [key, file] of [
      ['rte', 'train.jsonl'],
      ['rte_eval', 'val.jsonl'],
      ['math_qa_eval', 'dev.json'],
      ['codealpacapy', 'code_alpaca_2k.json'],
    ]) {
      const entry = datasetEntry(key);
      const fromRaw = await loadDatasetRows(entry, resolver, { source: 'file', maxRows: 2 });
      expect(fromRaw.files, key).toEqual([file]);
      const fromHub = await loadDatasetRows(entry, hubResolver({ endpoint: hub.url }), { maxRows: 2 });
      expect(renderRows(fromRaw), key).toEqual(renderRows(fromHub));
    }
  });

  describe('the four datasets without real rows (synthetic rows in the Hub schema)', () => {
    let dir: string;
    let synthHub: HubServer;
    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), 'ps-synth-'));
      const jsonl = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
      // nyu-mll/glue mnli: premise, hypothesis, label (ClassLabel ids 0 entailment, 1 neutral, 2 contradiction), idx.
      writeFileSync(
        path.join(dir, 'mnli.jsonl'),
        jsonl([
          { premise: 'SYNTHETIC: The cat sat on the warm mat all afternoon.', hypothesis: 'A cat was sitting.', label: 0, idx: 0 },
          { premise: 'SYNTHETIC: The shop closes at noon on Sundays.', hypothesis: 'The shop is open all night on Sundays.', label: 2, idx: 1 },
        ]),
      );
      // Rowan/hellaswag: ind, activity_label, ctx_a, ctx_b, ctx, endings (list), source_id, split, split_type, label (string).
      writeFileSync(
        path.join(dir, 'hellaswag.jsonl'),
        jsonl([
          {
            ind: 0,
            activity_label: 'Baking',
            ctx_a: 'SYNTHETIC: A man cracks two eggs into a bowl.',
            ctx_b: 'he',
            ctx: 'SYNTHETIC: A man cracks two eggs into a bowl. he',
            endings: ['whisks them with a fork.', 'throws the bowl at a wall.', 'paints the eggs blue.', 'sings to the oven.'],
            source_id: 'synthetic~0',
            split: 'train',
            split_type: 'indomain',
            label: '0',
          },
          {
            ind: 1,
            activity_label: 'Running',
            ctx_a: 'SYNTHETIC: A woman ties her shoes at the start line.',
            ctx_b: 'She',
            ctx: 'SYNTHETIC: A woman ties her shoes at the start line. She',
            endings: ['eats the shoes.', 'flies away.', 'starts running when the whistle blows.', 'falls asleep.'],
            source_id: 'synthetic~1',
            split: 'train',
            split_type: 'indomain',
            label: '2',
          },
        ]),
      );
      // allenai/winogrande winogrande_xl: sentence (with _), option1, option2, answer ("1" / "2").
      writeFileSync(
        path.join(dir, 'winogrande.jsonl'),
        jsonl([
          { sentence: 'SYNTHETIC: The trophy did not fit in the suitcase because the _ was too big.', option1: 'trophy', option2: 'suitcase', answer: '1' },
          { sentence: 'SYNTHETIC: The trophy did not fit in the suitcase because the _ was too small.', option1: 'trophy', option2: 'suitcase', answer: '2' },
        ]),
      );
      // codeparrot/apps ships train.jsonl / test.jsonl: served in the Hub layout so the registry's own source is used.
      const apps = path.join(dir, 'hub', 'datasets', 'codeparrot', 'apps');
      mkdirSync(apps, { recursive: true });
      mkdirSync(path.join(dir, 'hub', 'models'), { recursive: true });
      const appsRows = jsonl([
        {
          problem_id: 0,
          question: 'SYNTHETIC: Read two integers a and b and print their sum.',
          solutions: JSON.stringify(['a, b = map(int, input().split())\nprint(a + b)', 'print(sum(map(int, input().split())))']),
          input_output: '{"inputs": ["1 2\\n"], "outputs": ["3\\n"]}',
          difficulty: 'introductory',
          url: 'synthetic',
          starter_code: '',
        },
        {
          problem_id: 1,
          question: 'SYNTHETIC: Print the word hello.',
          solutions: JSON.stringify(["print('hello')"]),
          input_output: '{"inputs": [""], "outputs": ["hello\\n"]}',
          difficulty: 'introductory',
          url: 'synthetic',
          starter_code: '',
        },
      ]);
      writeFileSync(path.join(apps, 'train.jsonl'), appsRows);
      writeFileSync(path.join(apps, 'test.jsonl'), appsRows);
      synthHub = await startHubServer({ root: path.join(dir, 'hub') });
    });
    afterAll(async () => {
      await synthHub?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    for (const name of ['mnli', 'hellaswag', 'winogrande']) {
      it(`${name}: synthetic rows in the Hub schema render their golden text`, async () => {
        const entry = datasetEntry(name);
        const hubSource = entry.sources[0];
        expect(hubSource.type).toBe('hub');
        const l = await loadDatasetRows(entry, new LocalFolderSource(dir), { source: { type: 'file', splits: { [entry.split]: [`${name}.jsonl`] } } });
        const rendered = renderRows(l);
        for (const r of rendered) expect(labelWords(entry)).toContain(r.response);
        checkGolden(`${name}.synthetic`, goldenText(name, `${name}.jsonl (the ${hubSource.type === 'hub' ? hubSource.repo : ''} schema)`, rendered, true));
      });
    }

    it('apps: synthetic rows through the registry source (codeparrot/apps jsonl); training expands one example per solution', async () => {
      const entry = datasetEntry('apps');
      const l = await loadDatasetRows(entry, hubResolver({ endpoint: synthHub.url }));
      expect(l.source.type === 'hub' && l.source.repo).toBe('codeparrot/apps');
      const rendered = renderRows(l);
      checkGolden('apps.synthetic', goldenText('apps', fromOf(l), rendered, true));
      expect(rendered[0].answers).toHaveLength(2);
      // Training: PEFT-Factory's duplication per solution (3 examples from 2 problems); evaluation keeps one per problem.
      const train = renderRows(l, { training: true });
      expect(train.map((r) => r.response)).toEqual([
        'a, b = map(int, input().split())\nprint(a + b)',
        'print(sum(map(int, input().split())))',
        "print('hello')",
      ]);
      const ev = renderRows(await loadDatasetRows(datasetEntry('apps_eval'), hubResolver({ endpoint: synthHub.url })), { training: true });
      expect(ev).toHaveLength(2);
    });
  });

  it('ReCoRD: training repeats a query once per answer entity; evaluation keeps all answers on one example', async () => {
    const l = await loadDatasetRows(datasetEntry('record'), hubResolver({ endpoint: hub.url }), { maxRows: 2 });
    const ev = renderRows(l);
    expect(ev[1].answers).toEqual(['West Brom', 'West Bromwich Albion']);
    expect(ev[1].label).toBe('West Brom');
    const train = renderRows(l, { training: true });
    expect(train.map((r) => r.response)).toEqual(['Olimpija Ljubljana', 'West Brom', 'West Bromwich Albion']);
    expect(train[0].user).not.toContain('@highlight');
  });

  it('reads whole splits: the row counts of mirrors.json, ClassLabel names as label words', async () => {
    const entry = datasetEntry('cb_eval');
    const l = await loadDatasetRows(entry, hubResolver({ endpoint: hub.url }));
    expect(l.rows).toHaveLength(56);
    const counts: Record<string, number> = {};
    for (const r of renderRows(l)) counts[r.response] = (counts[r.response] ?? 0) + 1;
    expect(counts).toEqual({ entailment: 23, contradiction: 28, neutral: 5 });
  });

  it('caches Hub files like models: a second load makes no request', async () => {
    const cache = new MemoryCache();
    hub.reset();
    const entry = datasetEntry('copa_eval');
    const a = await loadDatasetRows(entry, hubResolver({ endpoint: hub.url, cache }));
    const first = hub.count('copa/validation');
    expect(first).toBeGreaterThan(0);
    const b = await loadDatasetRows(entry, hubResolver({ endpoint: hub.url, cache }));
    expect(hub.count('copa/validation')).toBe(first);
    expect(b.rows).toEqual(a.rows);
  });

  it('selects splits with key[split], and names the closest key for a typo', () => {
    expect(datasetEntry('sst2[validation]').split).toBe('validation');
    expect(() => datasetEntry('sst2[dev]')).toThrow(/no split "dev".*train, validation/);
    expect(() => datasetEntry('sst-2')).toThrow(ConfigError);
    expect(() => datasetEntry('sst-2')).toThrow(/Did you mean "sst2"/);
  });

  it('says which sources it tried when none has the split', async () => {
    const entry: DatasetEntry = datasetEntry('qnli'); // train is not in the mirror
    await expect(loadDatasetRows(entry, hubResolver({ endpoint: hub.url }))).rejects.toThrow(/qnli\/train-00000-of-00001\.parquet not found/);
  });
});
