import { beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { ConfigError } from '../../src/errors';
import { LocalFolderSource } from '../../src/hub/node';
import { loadTokenizer, type ChatMessage, type Tokenizer } from '../../src/model/tokenizer';
import { validateConfig } from '../../src/config/schema';
import {
  alpacaToExample,
  buildSftDatasets,
  collate,
  countValidTargets,
  encodeExample,
  encodePrompt,
  greedyKnapsack,
  IGNORE_INDEX,
  inferSeqlen,
  mulberry32,
  packExamples,
  readAlpacaJsonl,
  seededShuffle,
  shiftLabels,
  splitTrainVal,
  takeMaxSamples,
  type EncodedExample,
} from '../../src/data/sft';
import { encodeTurn, specialPrefix } from '../../src/data/template';
import { testHubRoot } from '../helpers/hub-server';

const X = IGNORE_INDEX;

function errorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('readAlpacaJsonl', () => {
  it('reads rows, skipping blank lines; CRLF and a BOM are fine', () => {
    const text =
      '\uFEFF{"instruction": "Add.", "input": "1 2", "output": "3"}\r\n\r\n' +
      '{"instruction": "Greet.", "output": "Hi", "system": "Be brief.", "extra": 1}\n' +
      '{"instruction": "", "input": null, "output": ""}\n';
    expect(readAlpacaJsonl(text, 'a.jsonl')).toEqual([
      { instruction: 'Add.', input: '1 2', output: '3' },
      { instruction: 'Greet.', output: 'Hi', system: 'Be brief.' },
      { instruction: '', output: '' },
    ]);
  });

  it('names the line of broken JSON, a missing field or a wrong type', () => {
    const ok = '{"instruction": "a", "output": "b"}';
    expect(errorOf(() => readAlpacaJsonl(`${ok}\n{"instruction": "a", "output": }\n`, 'd.jsonl')).message).toMatch(
      /^d\.jsonl, line 2: not valid JSON \(.*\)\. Each line must be one JSON object\.$/,
    );
    expect(errorOf(() => readAlpacaJsonl(`${ok}\n\n{"instruction": "a", "response": "b"}`, 'd.jsonl')).message).toBe(
      'd.jsonl, line 3: missing field "output". Alpaca rows need "instruction" and "output" (and optionally "input", "system"); found "instruction", "response".',
    );
    expect(errorOf(() => readAlpacaJsonl('{"output": "b"}', 'd.jsonl')).message).toMatch(/^d\.jsonl, line 1: missing field "instruction"/);
    expect(errorOf(() => readAlpacaJsonl('{"instruction": "a", "output": 3}', 'd.jsonl')).message).toBe(
      'd.jsonl, line 1: field "output" must be a string, got 3.',
    );
    expect(errorOf(() => readAlpacaJsonl('{"instruction": "a", "input": ["x"], "output": "b"}', 'd.jsonl')).message).toBe(
      'd.jsonl, line 1: field "input" must be a string, got ["x"].',
    );
    expect(errorOf(() => readAlpacaJsonl('[1, 2]', 'd.jsonl')).message).toMatch(/^d\.jsonl, line 1: expected a JSON object/);
  });

  it('joins instruction and input with a newline, leaving out an empty input', () => {
    expect(alpacaToExample({ instruction: 'Translate.', input: 'Hallo', output: 'Hello' })).toEqual({ prompt: 'Translate.\nHallo', response: 'Hello' });
    expect(alpacaToExample({ instruction: 'Translate.', input: '', output: 'Hello' })).toEqual({ prompt: 'Translate.', response: 'Hello' });
    expect(alpacaToExample({ instruction: 'Q', output: 'A', system: 'S' })).toEqual({ prompt: 'Q', response: 'A', system: 'S' });
  });

  it('takes the first max_samples rows', () => {
    expect(takeMaxSamples([1, 2, 3, 4], 2)).toEqual([1, 2]);
    expect(takeMaxSamples([1, 2, 3], null)).toEqual([1, 2, 3]);
    expect(takeMaxSamples([1, 2], 10)).toEqual([1, 2]);
  });
});

describe('inferSeqlen (LLaMA-Factory truncation), by hand', () => {
  it.each([
    // [source, target, budget] → [source kept, target kept]
    [10, 3, 20, 10, 3], // 2·3 < 20: target whole, source fits
    [100, 3, 20, 17, 3], // 2·3 < 20: target whole, source cut to 20 − 3
    [5, 30, 20, 5, 15], // 2·5 < 20: target cut to 20 − 5
    [30, 30, 20, 10, 10], // both long: target ⌊20·30/60⌋ = 10
    [40, 12, 20, 16, 4], // both long: target ⌊20·12/52⌋ = ⌊4.6⌋ = 4
    [10, 10, 20, 10, 10], // 2·10 = 20 is not < 20: ⌊20·10/20⌋ = 10
    [24, 7, 10, 8, 2], // ⌊10·7/31⌋ = ⌊2.26⌋ = 2
    [3, 2, 100, 3, 2], // no cut
  ])('source %i, target %i, budget %i → %i, %i', (s, t, L, es, et) => {
    expect(inferSeqlen(s, t, L)).toEqual([es, et]);
  });
});

describe('greedyKnapsack', () => {
  it('fills each knapsack with the longest item that fits', () => {
    // sorted [2,3,5,7,9], capacity 10: [9] (nothing fits 1), [7,3], [5,2]
    expect(greedyKnapsack([5, 3, 7, 2, 9], 10)).toEqual([[9], [7, 3], [5, 2]]);
    expect(greedyKnapsack([4, 4, 4, 4], 8)).toEqual([
      [4, 4],
      [4, 4],
    ]);
    expect(greedyKnapsack([], 8)).toEqual([]);
  });
});

describe('SFT encoding with the stories260K tokenizer', () => {
  let tok: Tokenizer;
  const enc = (s: string) => tok.encode(s, { addSpecialTokens: false });
  let BOS: number;
  let EOS: number;
  beforeAll(async () => {
    tok = await loadTokenizer(new LocalFolderSource(path.join(testHubRoot(), 'models', 'stories260K')));
    BOS = tok.bosTokenId!;
    EOS = tok.eosTokenId!;
  });

  const ex = { prompt: 'Tell a story', response: 'Once upon a time' };

  it("renders LLaMA-Factory's default template: BOS, prompt masked, response + EOS labelled", () => {
    expect(tok.chatTemplate).toBeNull();
    expect(specialPrefix(tok)).toEqual([BOS]);
    const source = [BOS, ...enc('Human: Tell a story'), EOS, ...enc('\nAssistant:')];
    const target = [...enc('Once upon a time'), EOS, ...enc('\n')];
    expect(encodeTurn(tok, ex, null)).toEqual({ source, target });
    const e = encodeExample(tok, ex, { cutoffLen: 2048 });
    expect(e.truncated).toBe(false);
    expect(e.inputIds).toEqual([...source, ...target]);
    expect(e.labels).toEqual([...source.map(() => X), ...target]);
    expect(e.inputIds[0]).toBe(BOS);
    // The answer is followed by EOS, and EOS is a target.
    const firstTarget = source.length;
    expect(e.labels[firstTarget + enc('Once upon a time').length]).toBe(EOS);
    expect(tok.decode(e.labels.filter((y) => y !== X))).toBe('Once upon a time</s> \n');
    expect(countValidTargets(e.labels)).toBe(target.length);
  });

  it('labels the prompt too with train_on_prompt, and adds the system block', () => {
    const e = encodeExample(tok, ex, { cutoffLen: 2048, trainOnPrompt: true });
    expect(e.labels).toEqual(e.inputIds);
    const s = encodeExample(tok, { ...ex, system: 'Be kind.' }, { cutoffLen: 2048 });
    const source = [BOS, ...enc('System: Be kind.'), EOS, ...enc('\n'), ...enc('Human: Tell a story'), EOS, ...enc('\nAssistant:')];
    expect(s.inputIds.slice(0, source.length)).toEqual(source);
    expect(s.labels.slice(0, source.length).every((y) => y === X)).toBe(true);
  });

  it('renders the alpaca and empty templates; addBos: false is LLaMA-Factory exact', () => {
    const a = encodeTurn(tok, ex, 'alpaca');
    expect(a.source).toEqual([
      BOS,
      ...enc('Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n'),
      ...enc('### Instruction:\nTell a story\n\n### Response:\n'),
    ]);
    expect(a.target).toEqual([...enc('Once upon a time'), EOS, ...enc('\n\n')]);
    expect(encodeTurn(tok, ex, 'empty')).toEqual({ source: [BOS, ...enc('Tell a story')], target: enc('Once upon a time') });
    expect(encodeTurn(tok, ex, 'default', false).source[0]).not.toBe(BOS);
  });

  it('refuses chat and unknown templates with a fix', () => {
    expect(errorOf(() => encodeExample(tok, ex, { template: 'chat', cutoffLen: 64 })).message).toMatch(
      /needs a tokenizer with a chat template.*Use template: default/,
    );
    expect(errorOf(() => encodeExample(tok, ex, { template: 'llama3', cutoffLen: 64 })).message).toBe(
      "Unknown template 'llama3'. Use one of: default, alpaca, empty, chat.",
    );
  });

  it('truncates by the LLaMA-Factory rule (source 24, target 7 tokens)', () => {
    const { source, target } = encodeTurn(tok, ex, null);
    expect([source.length, target.length]).toEqual([24, 7]);
    const cases: [number, number, number][] = [
      // cutoff, source kept, target kept (computed by hand with inferSeqlen's rule)
      [31, 24, 7], // fits
      [30, 23, 7], // 2·7 < 30: target whole, source cut by one
      [20, 13, 7], // 2·7 < 20
      [14, 11, 3], // 2·7 = 14 is not < 14, nor 2·24: target ⌊14·7/31⌋ = ⌊3.16⌋ = 3
      [10, 8, 2], // ⌊10·7/31⌋ = 2
      [1, 1, 0], // ⌊1·7/31⌋ = 0
    ];
    for (const [cutoff, s, t] of cases) {
      const e = encodeExample(tok, ex, { cutoffLen: cutoff });
      expect(e.inputIds).toEqual([...source.slice(0, s), ...target.slice(0, t)]);
      expect(e.labels).toEqual([...source.slice(0, s).map(() => X), ...target.slice(0, t)]);
      expect(e.truncated).toBe(cutoff < 31);
    }
  });

  it('encodes generation prompts as the source, truncated against the reference answer', () => {
    const { source } = encodeTurn(tok, ex, null);
    expect(encodePrompt(tok, { prompt: ex.prompt }, { cutoffLen: 2048 })).toEqual(source);
    // No answer: the empty answer renders as EOS "\n" (3 tokens); 2·3 < 10 keeps them, the source gets 7.
    expect(encodeTurn(tok, { ...ex, response: '' }, null).target).toEqual([EOS, ...enc('\n')]);
    expect(encodePrompt(tok, { prompt: ex.prompt }, { cutoffLen: 10 })).toEqual(source.slice(0, 7));
    // With the 7-token answer: ⌊10·7/31⌋ = 2 for it, 8 for the source.
    expect(encodePrompt(tok, ex, { cutoffLen: 10 })).toEqual(source.slice(0, 8));
  });

  it('builds train/val sets in LLaMA-Factory order', () => {
    // 23 source tokens; responses of 7, 13 and 37 tokens.
    const cat = 'Once upon a time there was a cat.';
    const examples = Array.from({ length: 20 }, (_, i) => ({ prompt: `Story ${i}`, response: ['Yes.', cat, cat.repeat(3)][i % 3] }));
    const base = { model_name_or_path: 'm', output_dir: 'o', dataset: 'd', cutoff_len: 48, val_size: 0.2, max_samples: 15 };
    const plain = buildSftDatasets(tok, examples, validateConfig(base), tok.padTokenId!);
    expect([plain.train.length, plain.val.length]).toEqual([12, 3]);
    expect(plain.truncated).toBeGreaterThan(0);
    for (const e of [...plain.train, ...plain.val]) expect(e.inputIds.length).toBeLessThanOrEqual(48);
    const again = buildSftDatasets(tok, examples, validateConfig(base), tok.padTokenId!);
    expect(again).toEqual(plain);

    const packed = buildSftDatasets(tok, examples, validateConfig({ ...base, cutoff_len: 64, packing: true, val_size: 0 }), tok.padTokenId!);
    expect(packed.dropped).toBe(0);
    expect(packed.val).toEqual([]);
    for (const b of packed.train) expect(b.inputIds.length).toBe(64);
    expect(packed.train.length).toBeLessThan(15);
    const tokens = (xs: EncodedExample[]) => xs.reduce((n, b) => n + b.labels.filter((y) => y !== X).length, 0);
    const unpacked = buildSftDatasets(tok, examples, validateConfig({ ...base, cutoff_len: 63, val_size: 0 }), tok.padTokenId!);
    expect(tokens(packed.train)).toBe(tokens(unpacked.train));
  });
});

describe('encoding with a chat template (stub tokenizer: one id per character)', () => {
  /** ids = char codes; EOS = 1; a ChatML-like template. */
  function stubTokenizer(endWithEos: boolean): Tokenizer {
    const render = (messages: ChatMessage[], gen: boolean) =>
      messages.map((m) => `<${m.role}>${m.content}${m.role === 'assistant' && endWithEos ? '\u0001' : ''}\n`).join('') + (gen ? '<assistant>' : '');
    const encode = (s: string) => [...s].map((c) => c.charCodeAt(0));
    return {
      encode: (s) => encode(s),
      decode: (ids) => String.fromCharCode(...Array.from(ids)),
      tokenToId: () => null,
      bosTokenId: null,
      eosTokenId: 1,
      padTokenId: 0,
      vocabSize: 256,
      chatTemplate: '{{ stub }}',
      applyChatTemplate: ((messages: ChatMessage[], opts: { addGenerationPrompt?: boolean; tokenize?: boolean } = {}) => {
        const text = render(messages, opts.addGenerationPrompt ?? false);
        return opts.tokenize === false ? text : encode(text);
      }) as Tokenizer['applyChatTemplate'],
    };
  }
  const codes = (s: string) => [...s].map((c) => c.charCodeAt(0));

  it('splits the rendering at the generation prompt; the template EOS stays', () => {
    const tok = stubTokenizer(true);
    const e = encodeExample(tok, { prompt: 'hi', response: 'yo', system: 'S' }, { cutoffLen: 100 });
    const source = codes('<system>S\n<user>hi\n<assistant>');
    expect(e.inputIds).toEqual([...source, ...codes('yo'), 1, ...codes('\n')]);
    expect(e.labels).toEqual([...source.map(() => X), ...codes('yo'), 1, ...codes('\n')]);
  });

  it('appends EOS when the chat template writes none', () => {
    const tok = stubTokenizer(false);
    const e = encodeExample(tok, { prompt: 'hi', response: 'yo' }, { template: 'chat', cutoffLen: 100 });
    expect(e.inputIds).toEqual([...codes('<user>hi\n<assistant>'), ...codes('yo\n'), 1]);
  });
});

describe('collate, shiftLabels, countValidTargets', () => {
  const a = { inputIds: [1, 5, 6], labels: [X, X, 6] };
  const b = { inputIds: [1, 7, 8, 9, 10, 11, 12, 13, 14], labels: [X, X, X, 9, 10, 11, 12, 13, 2] };
  const c = { inputIds: [1], labels: [X] };

  it('right-pads to the longest rounded up to a multiple of 8', () => {
    const batch = collate([a, b, c], { padId: 0 });
    expect([batch.B, batch.T]).toEqual([3, 16]);
    const row = (arr: Int32Array, i: number) => Array.from(arr.subarray(i * 16, (i + 1) * 16));
    expect(row(batch.inputIds, 0)).toEqual([1, 5, 6, ...Array(13).fill(0)]);
    expect(row(batch.attentionMask, 0)).toEqual([1, 1, 1, ...Array(13).fill(0)]);
    expect(row(batch.labels, 0)).toEqual([X, X, 6, ...Array(13).fill(X)]);
    expect(row(batch.inputIds, 1)).toEqual([...b.inputIds, ...Array(7).fill(0)]);
    expect(row(batch.labels, 1)).toEqual([...b.labels, ...Array(7).fill(X)]);
    expect(row(batch.attentionMask, 2)).toEqual([1, ...Array(15).fill(0)]);
    expect(batch.positionIds).toBeUndefined();
    expect(collate([a], { padId: 0 }).T).toBe(8);
    expect(collate([{ inputIds: Array(8).fill(3), labels: Array(8).fill(3) }], { padId: 0 }).T).toBe(8);
    expect(collate([a, b], { padId: 2, padToMultipleOf: 1 }).T).toBe(9);
    expect(() => collate([], { padId: 0 })).toThrow(RangeError);
    expect(() => collate([{ inputIds: [1, 2], labels: [1] }], { padId: 0 })).toThrow(/2 input ids but 1 labels/);
  });

  it('shifts labels for next-token prediction: target t = labels[t+1], last -100', () => {
    const labels = Int32Array.from([X, 5, 6, 7, /* row 2 */ X, X, 9, X]);
    expect(Array.from(shiftLabels(labels, 2, 4))).toEqual([5, 6, 7, X, X, 9, X, X]);
    expect(() => shiftLabels(labels, 3, 4)).toThrow(RangeError);
  });

  it('counts valid targets as Σ labels[..., 1:] ≠ -100 (position 0 of a row never counts)', () => {
    const labels = [5, X, 7, 8, /* row 2 */ 9, 10, X, X];
    expect(countValidTargets(labels, 4)).toBe(3);
    expect(countValidTargets(labels, 4)).toBe(Array.from(shiftLabels(labels, 2, 4)).filter((y) => y !== X).length);
    expect(countValidTargets([3, 4, X, 6])).toBe(2);
    const batch = collate([a, b, c], { padId: 0 });
    expect(countValidTargets(batch.labels, batch.T)).toBe(1 + 6 + 0);
  });
});

describe('packExamples', () => {
  const ex = (n: number, id: number): EncodedExample => ({ inputIds: Array(n).fill(id), labels: [X, ...Array(n - 1).fill(id)] });

  it('packs greedily into blocks of cutoff_len (capacity cutoff_len − 1), padding with label -100', () => {
    // lengths 5,3,7,2,9 and one of 11 (> 10, dropped); cutoff_len 11 → capacity 10
    const examples = [ex(5, 50), ex(3, 30), ex(7, 70), ex(2, 20), ex(9, 90), ex(11, 110)];
    const { blocks, dropped } = packExamples(examples, 11, { padId: 0 });
    expect(dropped).toBe(1);
    expect(blocks.map((b) => b.inputIds)).toEqual([
      [...Array(9).fill(90), 0, 0],
      [...Array(7).fill(70), ...Array(3).fill(30), 0],
      [...Array(5).fill(50), ...Array(2).fill(20), 0, 0, 0, 0],
    ]);
    expect(blocks[1].labels).toEqual([X, ...Array(6).fill(70), X, 30, 30, X]);
    expect(blocks[1].positionIds).toEqual([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0]);
    expect(blocks[1].attentionMask).toEqual(Array(11).fill(1));
    expect(blocks[1].boundaries).toEqual([0, 7, 10]);
    const batch = collate(blocks, { padId: 0 });
    expect(batch.T).toBe(16);
    expect(Array.from(batch.positionIds!.subarray(16, 32))).toEqual([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 0, 0, 0, 0, 0]);
    expect(Array.from(batch.attentionMask.subarray(16, 32))).toEqual([...Array(11).fill(1), ...Array(5).fill(0)]);
  });

  it('takes the last-seen example among equal lengths, and packs within chunks of batchSize', () => {
    const { blocks } = packExamples([ex(4, 1), ex(4, 2), ex(4, 3)], 9, { padId: 0 });
    expect(blocks.map((b) => b.inputIds.slice(0, 8))).toEqual([
      [3, 3, 3, 3, 2, 2, 2, 2],
      [1, 1, 1, 1, 0, 0, 0, 0],
    ]);
    const chunked = packExamples([ex(4, 1), ex(4, 2), ex(4, 3)], 9, { padId: 0, batchSize: 1 });
    expect(chunked.blocks).toHaveLength(3);
  });
});

describe('seeded shuffle and the validation split', () => {
  it('mulberry32 gives pinned values (the same in every host)', () => {
    const r = mulberry32(42);
    expect([r(), r(), r()]).toEqual([0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
  });

  it('shuffles deterministically by seed', () => {
    const xs = Array.from({ length: 10 }, (_, i) => i);
    expect(seededShuffle(xs, 42)).toEqual([0, 7, 3, 5, 2, 1, 8, 9, 4, 6]);
    expect(seededShuffle(xs, 42)).toEqual(seededShuffle(xs, 42));
    expect(seededShuffle(xs, 43)).not.toEqual(seededShuffle(xs, 42));
    expect([...seededShuffle(xs, 7)].sort((p, q) => p - q)).toEqual(xs);
    expect(xs).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(seededShuffle(['a', 'b', 'c'], 1)).toHaveLength(3);
  });

  it('splits by fraction (⌈f·n⌉) or count, disjoint and complete', () => {
    const check = (n: number, v: number, nVal: number) => {
      const { train, val } = splitTrainVal(n, v, 42);
      expect(val).toHaveLength(nVal);
      expect([...train, ...val].sort((p, q) => p - q)).toEqual(Array.from({ length: n }, (_, i) => i));
    };
    check(10, 0.2, 2);
    check(10, 0.05, 1);
    check(101, 0.1, 11);
    check(10, 3, 3);
    expect(splitTrainVal(5, 0, 42)).toEqual({ train: [0, 1, 2, 3, 4], val: [] });
    expect(splitTrainVal(10, 0.2, 42)).toEqual(splitTrainVal(10, 0.2, 42));
    expect(splitTrainVal(10, 0.2, 42)).toEqual({ train: [3, 5, 2, 1, 8, 9, 4, 6], val: [0, 7] });
    expect(errorOf(() => splitTrainVal(10, 10, 42)).message).toMatch(/takes 10 of 10 examples for validation and leaves none for training/);
    expect(errorOf(() => splitTrainVal(10, 2.5, 42)).message).toMatch(/neither a fraction below 1 nor a whole count/);
  });
});
