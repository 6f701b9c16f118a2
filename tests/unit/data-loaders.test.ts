/**
 * Dataset file loaders (csv/tsv, jsonl, json arrays, parquet), the raw-file
 * adapters, and custom registry entries (validation errors).
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { decodeText, parseDelimited, parseDelimitedRecords, parseJsonArray, parseJsonl } from '../../src/data/tabular';
import { classLabelNames, decodeClassLabels, readParquet } from '../../src/data/parquet';
import { canonicalRows, formatOf } from '../../src/data/raw';
import { floatText, gsm8kAnswer, markSpan } from '../../src/data/formatters';
import { datasetEntry, loadDatasetRows, parseDatasetInfo, registerDatasets, renderExample, renderRows, unregisterDataset } from '../../src/data/registry';
import { LocalFolderSource } from '../../src/hub/node';
import { ConfigError, HubError } from '../../src/errors';
import type { FileSource } from '../../src/hub/source';
import { testHubRoot } from '../helpers/hub-server';

/** Files in memory, as a FileSource (missing files: HubError 404, like every source). */
class MemoryFiles implements FileSource {
  readonly id = 'memory:';
  constructor(private readonly files: Record<string, string>) {}
  async has(p: string) {
    return p in this.files;
  }
  async get(p: string) {
    if (!(p in this.files)) throw new HubError(`${p} not found`, p, 404);
    return new TextEncoder().encode(this.files[p]);
  }
}

function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('csv (RFC 4180 quoting)', () => {
  const csv = (t: string, header: boolean | string[] = true) => parseDelimited(t, { delimiter: ',', header }, 'd.csv');

  it('reads quoted fields with commas, doubled quotes and line breaks; CRLF, BOM and blank lines are fine', () => {
    const text = '\uFEFFq,a\r\n"What, exactly?","He said ""hi""\nand left"\r\n\r\nplain,"x"\n';
    expect(csv(text)).toEqual([
      { q: 'What, exactly?', a: 'He said "hi"\nand left' },
      { q: 'plain', a: 'x' },
    ]);
  });

  it('keeps a quote inside an unquoted field, and empty fields', () => {
    expect(csv('a,b,c\n5" tall,,"" \n'.replace('"" ', '""'))).toEqual([{ a: '5" tall', b: '', c: '' }]);
  });

  it('reads headerless files with given names (MMLU, CoLA)', () => {
    expect(csv('Q1,x,y\nQ2,z,w', ['question', 'A', 'B'])).toEqual([
      { question: 'Q1', A: 'x', B: 'y' },
      { question: 'Q2', A: 'z', B: 'w' },
    ]);
  });

  it('names the line of an unclosed quote, junk after a closing quote, or a wrong field count', () => {
    expect(errorOf(() => csv('a,b\n1,2\n3,"never closed\n4,5\n'))).toBe(
      'd.csv, line 3: a quoted field is never closed (no matching "). Close the quote or double the quotes inside the field.',
    );
    expect(errorOf(() => csv('a,b\n"x"y,2\n'))).toMatch(/^d\.csv, line 2: unexpected "y" after a closing quote/);
    // The record of line 2 spans two lines; the bad one starts on line 4.
    expect(errorOf(() => csv('a,b\n"multi\nline",2\n1,2,3\n'))).toBe(
      'd.csv, line 4: 3 fields, but the header has 2 (a, b). If the file has unbalanced quotes (GLUE .tsv files do), read it with quoting off.',
    );
    expect(errorOf(() => csv('a,a\n1,2\n'))).toMatch(/"a" appears twice/);
  });

  it('counts lines across quoted line breaks', () => {
    expect(parseDelimitedRecords('"a\nb",c\nd,e\n', { delimiter: ',' }, 'x').map((r) => r.line)).toEqual([1, 3]);
  });
});

describe('tsv (GLUE: no quoting)', () => {
  it('keeps unbalanced quotes as text with quoting off, as the HF glue loader (QUOTE_NONE)', () => {
    const text = 'Quality\t#1 String\t#2 String\r\n1\tHe said "no.\t"The pie.\r\n';
    expect(parseDelimited(text, { delimiter: '\t', quote: null }, 'dev.tsv')).toEqual([
      { Quality: '1', '#1 String': 'He said "no.', '#2 String': '"The pie.' },
    ]);
    // With csv quoting the same file is broken, and the error says so.
    expect(errorOf(() => parseDelimited(text, { delimiter: '\t' }, 'dev.tsv'))).toMatch(/dev\.tsv, line 2: .*(never closed|after a closing quote)/);
  });

  it('reads the real GLUE quirks: MRPC with a BOM and unbalanced quotes, QQP with CRLF, CoLA without a header', () => {
    const raw = (p: string) => readFileSync(path.join(testHubRoot(), 'datasets', p), 'utf8');
    const mrpc = parseDelimited(raw('mrpc/raw/dev.tsv'), { delimiter: '\t', quote: null }, 'mrpc');
    expect(mrpc).toHaveLength(408);
    expect(Object.keys(mrpc[0])[0]).toBe('Quality');
    expect(mrpc[0]['#2 String']).toBe('"The foodservice pie business does not fit our long-term growth strategy.');
    const qqp = parseDelimited(raw('qqp/raw/dev_head9.tsv'), { delimiter: '\t', quote: null }, 'qqp');
    expect(qqp[0].is_duplicate).toBe('0');
    const cola = parseDelimited(raw('cola/raw/dev.tsv'), { delimiter: '\t', quote: null, header: ['source', 'label', 'original', 'sentence'] }, 'cola');
    expect(cola).toHaveLength(1043);
    expect(cola[0]).toEqual({ source: 'gj04', label: '1', original: '', sentence: 'The sailors rode the breeze clear of the rocks.' });
  });
});

describe('jsonl and json arrays', () => {
  it('reads JSON Lines, skipping blank lines, and names the line of an error', () => {
    expect(parseJsonl('{"a": 1}\r\n\n{"a": 2}\n', 'x.jsonl')).toEqual([{ a: 1 }, { a: 2 }]);
    expect(errorOf(() => parseJsonl('{"a": 1}\n\n{"a": }\n', 'x.jsonl'))).toMatch(
      /^x\.jsonl, line 3: not valid JSON \(.*\)\. Each line of a \.jsonl file must be one JSON object\.$/,
    );
    expect(errorOf(() => parseJsonl('{"a": 1}\n[1, 2]\n', 'x.jsonl'))).toBe('x.jsonl, line 2: expected a JSON object, got [1,2].');
  });

  it('reads a JSON array of objects and says what is wrong otherwise', () => {
    expect(parseJsonArray('[{"a": 1}]', 'x.json')).toEqual([{ a: 1 }]);
    expect(errorOf(() => parseJsonArray('{"a": 1}', 'x.json'))).toMatch(/expected a JSON array of objects .* got an object/);
    expect(errorOf(() => parseJsonArray('[{"a": 1}, 3]', 'x.json'))).toBe('x.json: item 1 of the array is 3, not an object.');
    expect(errorOf(() => parseJsonArray('[{"a": 1},', 'x.json'))).toMatch(/^x\.json: not valid JSON/);
  });

  it('tells formats by extension, or asks for one', () => {
    expect(['a.parquet', 'a.jsonl', 'a.json', 'a.csv', 'a.tsv', 'labels.lst'].map((f) => formatOf(f, {}))).toEqual([
      'parquet',
      'jsonl',
      'json',
      'csv',
      'tsv',
      'lines',
    ]);
    expect(errorOf(() => formatOf('data.bin', {}))).toMatch(/cannot tell the file format/);
  });
});

describe('parquet (hyparquet)', () => {
  const file = (p: string) => new Uint8Array(readFileSync(path.join(testHubRoot(), 'datasets', p)));

  it('reads rows, int64 as numbers, and the ClassLabel names from the huggingface metadata', async () => {
    const t = await readParquet(file('nyu-mll/glue/sst2/validation-00000-of-00001.parquet'), 'sst2');
    expect(t.numRows).toBe(872);
    expect(t.rows[0]).toEqual({ sentence: "it 's a charming and often affecting journey . ", label: 1, idx: 0 });
    expect(classLabelNames(t.features, 'label')).toEqual(['negative', 'positive']);
    expect(decodeClassLabels(t.rows.slice(0, 2), t.features, 'sst2').map((r) => r.label)).toEqual(['positive', 'negative']);
  });

  it('reads only maxRows rows when asked, and struct-of-list columns as objects', async () => {
    const t = await readParquet(file('allenai/openbookqa/main/validation-00000-of-00001.parquet'), 'obqa', { maxRows: 3 });
    expect(t.rows).toHaveLength(3);
    expect(t.numRows).toBe(500);
    expect(t.rows[0].choices).toEqual({ text: ['Deep sea animals', 'fish', 'Long Sea Fish', 'Far Sea Animals'], label: ['A', 'B', 'C', 'D'] });
  });

  it('turns ClassLabel -1 (no label) into null, and refuses an id outside the names', () => {
    const features = { label: { _type: 'ClassLabel' as const, names: ['no', 'yes'] } };
    expect(decodeClassLabels([{ label: -1 }, { label: 1 }], features, 't').map((r) => r.label)).toEqual([null, 'yes']);
    expect(errorOf(() => decodeClassLabels([{ label: 2 }], features, 't'))).toMatch(/label id 2 is outside the 2 ClassLabel names \(no, yes\)/);
  });

  it('says a file is not parquet', async () => {
    await expect(readParquet(new TextEncoder().encode('not parquet at all'), 'x.parquet')).rejects.toThrow(/x\.parquet: not a readable parquet file/);
  });
});

describe('raw adapters and column maps', () => {
  it('label_lines needs line-aligned files', () => {
    const files = [
      { path: 'valid.jsonl', rows: [{ goal: 'g1' }, { goal: 'g2' }] },
      { path: 'valid-labels.lst', rows: [{ text: '1' }] },
    ];
    expect(errorOf(() => canonicalRows(files, { adapter: 'label_lines' }, 'piqa'))).toBe(
      'piqa: valid.jsonl has 2 rows but valid-labels.lst has 1 labels; they must be line-aligned.',
    );
  });

  it('renames columns, maps values by their string form, and parses numbers', () => {
    const rows = canonicalRows(
      [{ path: 't.tsv', rows: [{ Quality: '1', score: '4.750' }] }],
      { rename: { Quality: 'label' }, map: { label: { '0': 'no', '1': 'yes' } }, numeric: ['score'] },
      'w',
    );
    expect(rows).toEqual([{ label: 'yes', score: 4.75 }]);
    expect(errorOf(() => canonicalRows([{ path: 't', rows: [{ label: '7' }] }], { map: { label: { '0': 'no' } } }, 'w'))).toMatch(
      /w, row 0: column "label" has the value "7", which the source's map does not know \(known: 0\)/,
    );
    expect(errorOf(() => canonicalRows([{ path: 't', rows: [{ label: 'x' }] }], { adapter: 'nope' }, 'w'))).toMatch(/unknown adapter "nope"/);
  });

  it('marks WSC spans at their word indices (T5), and reads GSM8K answers and floats', () => {
    expect(markSpan('Mark told Pete. He left.', 'He', 3, '#')).toBe('Mark told Pete. # He # left.');
    expect(markSpan('a b c', 'x', 1, '*')).toBe('a b c'); // no span there: unchanged
    expect(gsm8kAnswer('so 1,000 + 5\n#### 1,005')).toBe('1005');
    expect(gsm8kAnswer('no marker')).toBeNull();
    expect([floatText(5, true), floatText(3.799999952316284, true), floatText(51), floatText(0.5)]).toEqual(['5.0', '3.8', '51.0', '0.5']);
  });
});

describe('rendering', () => {
  it('joins instruction, prompt and query with newlines, leaving out empty parts; label ids go through labelNames', () => {
    const e = datasetEntry('rte');
    const r = renderExample(e, { sentence1: 'A.', sentence2: 'B.', label: 1, idx: 0 });
    expect(r.user).toBe(`${e.instruction}\nA.\nB.`);
    expect(r.response).toBe('not_entailment');
    expect(renderExample(datasetEntry('sst2'), { sentence: 'ok', label: null }).label).toBeNull();
    expect(() => renderExample(datasetEntry('sst2'), { sentence: 'ok', label: 'great' })).toThrow(
      /the label "great" is not a class of "sst2" \(negative, positive\)/,
    );
    expect(() => renderExample(datasetEntry('sst2'), { text: 'ok', label: 0 })).toThrow(/the row has no column "sentence"/);
  });
});

describe('custom entries (dataset_info)', () => {
  const good = {
    reviews: {
      task: 'classification',
      metric: 'classification',
      instruction: 'Is the review negative or positive? Respond only with the class.',
      split: 'train',
      formatter: 'columns',
      columns: { prompt: 'text', response: 'stars' },
      labelNames: ['1', '5'],
      labelWords: ['negative', 'positive'],
      sources: [{ type: 'file', splits: { train: ['reviews.csv'] }, numeric: [] }],
    },
  };

  it('validates, registers and renders a custom entry from a csv file', async () => {
    const entries = parseDatasetInfo(JSON.stringify(good), 'my_info.json');
    expect(entries.map((e) => e.key)).toEqual(['reviews']);
    registerDatasets(entries);
    try {
      const files = new MemoryFiles({ 'reviews.csv': 'text,stars\n"Great, loved it",5\nAwful,1\n' });
      const l = await loadDatasetRows(datasetEntry('reviews'), files);
      expect(renderRows(l).map((r) => [r.user, r.response])).toEqual([
        ['Is the review negative or positive? Respond only with the class.\nGreat, loved it', 'positive'],
        ['Is the review negative or positive? Respond only with the class.\nAwful', 'negative'],
      ]);
    } finally {
      unregisterDataset('reviews');
    }
    expect(() => datasetEntry('reviews')).toThrow(/Unknown dataset "reviews"/);
  });

  it('reports every problem of an entry at once, with the field and the fix', () => {
    const bad = {
      broken: {
        task: 'classify',
        metric: 'classification',
        instruction: 3,
        split: 'train',
        formatter: 'colums',
        columns: { promt: 'text', response: 'y' },
        labelNames: ['a'],
        labelWords: ['x', 'y'],
        sources: [{ type: 'web', splits: { train: [] }, repo: 'a b', formatt: 'x' }],
      },
    };
    const msg = errorOf(() => parseDatasetInfo(bad, 'info.json'));
    for (const part of [
      /problems in info\.json: dataset "broken"/,
      /"task" must be one of classification, regression, math, generation, code, got "classify"/,
      /"instruction" must be a string/,
      /"formatter" must be one of .*got "colums"/,
      /columns: unknown field "promt" — did you mean "prompt"\?/,
      /columns: "prompt" must name a column/,
      /"labelNames" must be a list of at least two/,
      /"labelWords" has 2 words but "labelNames" has 1 classes/,
      /sources\[0\]: unknown field "formatt" — did you mean "format"\?/,
      /sources\[0\]: "type" must be "hub" .* or "file"/,
      /sources\[0\]\.splits\.train: must be a non-empty list of file paths/,
    ]) {
      expect(msg).toMatch(part);
    }
  });

  it('refuses a built-in key, bad JSON, an empty file, a split no source has, and a classification entry without classes', () => {
    expect(errorOf(() => parseDatasetInfo({ sst2: good.reviews }, 'i.json'))).toBe('i.json: "sst2" is a built-in dataset; give the custom entry another key.');
    expect(errorOf(() => parseDatasetInfo('{"a": ', 'i.json'))).toMatch(/^i\.json: not valid JSON/);
    expect(errorOf(() => parseDatasetInfo('{}', 'i.json'))).toMatch(/at least one entry/);
    expect(errorOf(() => parseDatasetInfo({ r: { ...good.reviews, split: 'test' } }, 'i.json'))).toMatch(/no source has the split "test"/);
    const { labelNames: _n, labelWords: _w, ...noClasses } = good.reviews;
    expect(errorOf(() => parseDatasetInfo({ r: noClasses }, 'i.json'))).toMatch(/a classification entry needs "labelNames"/);
  });

  it('a custom entry can point at a Hub-layout folder through a hub source', async () => {
    const [e] = parseDatasetInfo(
      {
        cb_pairs: {
          task: 'classification',
          metric: 'classification',
          instruction: '',
          split: 'validation',
          formatter: 'columns',
          columns: { prompt: 'premise', query: 'hypothesis', response: 'label' },
          labelNames: ['entailment', 'contradiction', 'neutral'],
          sources: [{ type: 'hub', repo: 'aps/super_glue', splits: { validation: ['cb/validation-00000-of-00001.parquet'] } }],
        },
      },
      'i.json',
    );
    const l = await loadDatasetRows(e, new LocalFolderSource(path.join(testHubRoot(), 'datasets', 'aps', 'super_glue')), { maxRows: 1 });
    const r = renderRows(l)[0];
    expect(r.user.startsWith('Valence the void-brain')).toBe(true); // no instruction: the prompt starts the turn
    expect(r.response).toBe('contradiction');
  });
});

describe('decodeText', () => {
  it('drops a BOM', () => {
    expect(decodeText(new Uint8Array([0xef, 0xbb, 0xbf, 0x61]))).toBe('a');
  });
});
