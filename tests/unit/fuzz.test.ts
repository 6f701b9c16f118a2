/**
 * Fuzz suite (fast-check) over every untrusted input the project parses:
 * safetensors headers, config.json, YAML experiment configs, adapter .bin
 * (torch zip), share links and dataset lines. Each property feeds generated
 * and mutated inputs to the real parser and requires:
 *
 *   - it returns, or throws a named error (a PeftStudioError subclass);
 *     nothing else (no TypeError, RangeError, stack overflow);
 *   - no case takes more than CASE_MS (no hangs);
 *   - no case grows ArrayBuffer memory by more than 4 × its input size plus
 *     the output the input really describes (safetensors and torch zip: the
 *     decoded float32 tensors, themselves at most 4 × the input) + 1 MiB slack.
 *
 * FUZZ_RUNS sets the cases per property: 500 in `npm test` (seconds), 10000
 * for a nightly-size run (`FUZZ_RUNS=10000 npx vitest run tests/unit/fuzz.test.ts`).
 * FUZZ_SEED replays a run (fast-check prints the seed and path of a failure).
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { deflateSync, strToU8 } from 'fflate';
import { PeftStudioError } from '../../src/errors';
import { validateConfig } from '../../src/config/schema';
import { parseConfigText } from '../../src/config/yaml';
import { parseModelConfig } from '../../src/model/config';
import { checkWeights, expectedWeights } from '../../src/model/weights';
import { DTYPE_BYTES, parseSafetensors, serializeSafetensors } from '../../src/model/safetensors';
import { pickleTensorDict, readTorchZip, writeStoredZip, writeTorchZip } from '../../src/methods/torch-zip';
import { decodeShareData, encodeShareData } from '../../src/run/share-link';
import { readAlpacaJsonl } from '../../src/data/sft';
import { parseDelimited, parseJsonArray, parseJsonl } from '../../src/data/tabular';
import '../../src/methods/registry';

const RUNS = Number(process.env.FUZZ_RUNS ?? 500);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const CASE_MS = 2000;
const params = { numRuns: RUNS, seed: SEED, endOnFailure: true };
// A nightly run of 10,000 cases per property takes minutes on a loaded CPU.
const TIMEOUT = Math.max(120_000, RUNS * 60);

/** Counts of what happened, for the nightly report. */
const tally: Record<string, { ok: number; named: Record<string, number> }> = {};

/**
 * Runs one case: a named error or a value; within CASE_MS; ArrayBuffer growth
 * ≤ 4 × input + `described` (the bytes of output the input legitimately asks for) + 1 MiB.
 */
function check<T>(what: string, inputBytes: number, f: () => T, described: (r: T) => number = () => 0): void {
  const t = (tally[what] ??= { ok: 0, named: {} });
  const before = process.memoryUsage().arrayBuffers;
  const t0 = performance.now();
  let result: T | undefined;
  try {
    result = f();
    t.ok++;
  } catch (e) {
    if (!(e instanceof PeftStudioError)) {
      throw new Error(`${what}: not a named error: ${(e as Error)?.name}: ${(e as Error)?.message}\n${(e as Error)?.stack}`);
    }
    t.named[e.name] = (t.named[e.name] ?? 0) + 1;
  }
  const ms = performance.now() - t0;
  if (ms > CASE_MS) throw new Error(`${what}: one case took ${ms.toFixed(0)} ms (input ${inputBytes} bytes)`);
  const grown = process.memoryUsage().arrayBuffers - before;
  const allowed = 4 * inputBytes + (result === undefined ? 0 : described(result)) + (1 << 20);
  if (grown > allowed) throw new Error(`${what}: ArrayBuffers grew by ${grown} bytes for a ${inputBytes}-byte input (allowed ${allowed})`);
}

/** Random edits of a byte string: flips, overwrites, truncation, insertion, duplication. */
const mutation = (len: number) =>
  fc.array(
    fc.oneof(
      fc.record({ op: fc.constant('flip' as const), at: fc.nat(Math.max(len - 1, 0)), bit: fc.nat(7) }),
      fc.record({ op: fc.constant('set' as const), at: fc.nat(Math.max(len - 1, 0)), v: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ op: fc.constant('cut' as const), at: fc.nat(len) }),
      fc.record({ op: fc.constant('insert' as const), at: fc.nat(len), bytes: fc.uint8Array({ maxLength: 16 }) }),
      fc.record({ op: fc.constant('dup' as const), at: fc.nat(len), n: fc.integer({ min: 1, max: 64 }) }),
    ),
    { minLength: 1, maxLength: 6 },
  );

type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; v: number }
  | { op: 'cut'; at: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'dup'; at: number; n: number };

function mutate(src: Uint8Array, ms: Mutation[]): Uint8Array {
  let b = src.slice();
  for (const m of ms) {
    const at = Math.min(m.at, b.length);
    if (m.op === 'flip' && at < b.length) b[at] ^= 1 << m.bit;
    else if (m.op === 'set' && at < b.length) b[at] = m.v;
    else if (m.op === 'cut') b = b.slice(0, at);
    else if (m.op === 'insert') b = Uint8Array.from([...b.subarray(0, at), ...m.bytes, ...b.subarray(at)]);
    else if (m.op === 'dup') b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at, at + m.n), ...b.subarray(at)]);
  }
  return b;
}

const enc = new TextEncoder();
const decodedBytes = (tensors: Map<string, { data: Float32Array }>) => [...tensors.values()].reduce((a, t) => a + t.data.byteLength, 0);

// ---------------------------------------------------------------------------
// Generators.

const dims = fc.array(fc.oneof(fc.integer({ min: 0, max: 6 }), fc.constantFrom(2 ** 31, 2 ** 53, 1e9, -1, 0.5)), { maxLength: 4 });
const weird = fc.oneof(fc.constant(null), fc.boolean(), fc.string({ maxLength: 8 }), fc.double(), fc.constant([]), fc.constant({}));

/** A safetensors header as JSON text: plausible entries, wrong types, odd offsets, deep or odd metadata. */
const headerJson = fc.dictionary(
  fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('__metadata__', '__proto__', 'constructor', 'model.norm.weight')),
  fc.oneof(
    fc.record({
      dtype: fc.oneof(fc.constantFrom(...(Object.keys(DTYPE_BYTES) as string[])), fc.string({ maxLength: 5 })),
      shape: dims,
      data_offsets: fc.oneof(fc.tuple(fc.nat(64), fc.nat(64)), fc.array(fc.oneof(fc.nat(2 ** 40), fc.double()), { maxLength: 3 })),
    }),
    fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(fc.string({ maxLength: 6 }), fc.nat(), fc.constant([[[1]]]))),
    weird,
  ),
  { maxKeys: 8 },
);

/** Bytes of a safetensors file around a header: length prefix right, wrong or absurd; data of some length. */
const safetensorsFile = fc
  .tuple(headerJson, fc.nat(96), fc.oneof(fc.constant(0), fc.integer({ min: -8, max: 8 }), fc.constant(2 ** 32 + 1)), fc.boolean())
  .map(([h, dataLen, lenDelta, pad]) => {
    const json = enc.encode(JSON.stringify(h) + (pad ? '   ' : ''));
    const out = new Uint8Array(8 + json.length + dataLen);
    const dv = new DataView(out.buffer);
    const n = json.length + lenDelta;
    dv.setUint32(0, n >>> 0, true);
    dv.setUint32(4, Math.floor(Math.max(n, 0) / 2 ** 32), true);
    out.set(json, 8);
    for (let i = 0; i < dataLen; i++) out[8 + json.length + i] = (i * 37) & 255;
    return out;
  });

const validSafetensors = serializeSafetensors(
  new Map([
    ['a', { shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) }],
    ['b', { shape: [4], data: Float32Array.of(0.5, -1, 2, 8), dtype: 'F16' as const }],
    ['c', { shape: [0], data: new Float32Array(0) }],
    ['d', { shape: [1, 2], data: Float32Array.of(3, 4), dtype: 'BF16' as const }],
  ]),
  { format: 'pt' },
);

const configBase: Record<string, unknown> = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 16,
  intermediate_size: 22,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 37,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  max_position_embeddings: 64,
};
const configKeys = [
  ...Object.keys(configBase),
  'head_dim',
  'rope_scaling',
  'rope_parameters',
  'attention_bias',
  'mlp_bias',
  'sliding_window',
  'use_sliding_window',
  'bos_token_id',
  'eos_token_id',
  'hidden_act',
  '__proto__',
];
const configValue = fc.oneof(
  fc.integer({ min: -4, max: 64 }),
  fc.constantFrom(0, 1e9, 2 ** 53, 1e308, -1, 0.5, 1024, 65536, 4194304),
  fc.double(),
  weird,
  fc.constantFrom('llama', 'mistral', 'qwen2', '__proto__', 'constructor', 'silu', 'gelu'),
  fc.record(
    {
      rope_type: fc.constantFrom('llama3', 'linear', 'default', 'yarn'),
      factor: fc.oneof(fc.double(), fc.constantFrom(0, -1, 8)),
      low_freq_factor: fc.double(),
      high_freq_factor: fc.double(),
      original_max_position_embeddings: fc.integer(),
    },
    { requiredKeys: [] },
  ),
  fc.array(fc.integer({ min: -2, max: 100 }), { maxLength: 3 }),
);
const configJson = fc.oneof(
  fc.dictionary(fc.constantFrom(...configKeys), configValue, { maxKeys: 2 }).map((over) => ({ ...configBase, ...over })),
  fc.dictionary(fc.constantFrom(...configKeys), configValue, { maxKeys: 8 }).map((over) => ({ ...configBase, ...over })),
  fc.jsonValue({ maxDepth: 3 }),
);

const exampleYaml = [
  'model_name_or_path: stories260K',
  'stage: sft',
  'do_train: true',
  'finetuning_type: lora',
  'lora_rank: 8',
  'lora_alpha: 16',
  'lora_target: q_proj,v_proj',
  'dataset: examples/data/tiny_stories_alpaca.jsonl',
  'template: default',
  'cutoff_len: 64',
  'val_size: 4',
  'output_dir: saves/x',
  'per_device_train_batch_size: 4',
  'learning_rate: 5.0e-3',
  'lr_scheduler_type: cosine',
  'num_train_epochs: 3.0',
  'logging_steps: 1',
  'save_steps: 3',
  'seed: 42',
].join('\n');
const yamlLine = fc.oneof(
  fc
    .tuple(
      fc.constantFrom(
        'lora_rank',
        'cutoff_len',
        'max_steps',
        'learning_rate',
        'galore_rank',
        'seed',
        'finetuning_type',
        'output_dir',
        '__proto__',
        'endpoint',
        'val_size',
        'resume_from_checkpoint',
        'lora_dropout',
      ),
      fc.oneof(
        fc.integer().map(String),
        fc.double().map(String),
        fc.string({ maxLength: 10 }).map((s) => JSON.stringify(s)),
        fc.constantFrom('[1, 2]', '{a: 1}', 'null', '~', 'yes', '1e400', '.nan', '*a', '&a 5', '!!binary aGk=', '|', '>-'),
      ),
    )
    .map(([k, v]) => `${k}: ${v}`),
  fc.string({ maxLength: 30 }),
  fc.constantFrom(
    'a: &a [1,1,1,1,1,1,1,1,1,1]',
    'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]',
    'c: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]',
    '---',
    '%YAML 1.2',
    '? complex',
    '- list',
    '\t',
    'x: !!js/function "f"',
  ),
);

// ---------------------------------------------------------------------------

describe(`fuzz (${RUNS} cases per property${SEED === undefined ? '' : `, seed ${SEED}`})`, () => {
  it(
    'safetensors: generated headers and mutated files',
    () => {
      fc.assert(
        fc.property(
          fc.oneof(
            safetensorsFile,
            mutation(validSafetensors.length).map((m) => mutate(validSafetensors, m)),
          ),
          (bytes) => {
            check(
              'safetensors',
              bytes.length,
              () => parseSafetensors(bytes, 'fuzz.safetensors', { copy: true }),
              (r) => decodedBytes(r.tensors),
            );
            // Decoded float32 never exceeds 4 × the input (1-byte dtypes are the worst case).
            try {
              expect(decodedBytes(parseSafetensors(bytes, 'fuzz.safetensors', { copy: true }).tensors)).toBeLessThanOrEqual(4 * bytes.length);
            } catch (e) {
              if (!(e instanceof PeftStudioError)) throw e;
            }
          },
        ),
        params,
      );
    },
    TIMEOUT,
  );

  it(
    'config.json: generated and arbitrary JSON; accepted configs stay within the documented limits',
    () => {
      fc.assert(
        fc.property(configJson, (json) => {
          const text = JSON.stringify(json) ?? 'null';
          let c: ReturnType<typeof parseModelConfig> | undefined;
          check('config.json', text.length, () => (c = parseModelConfig(JSON.parse(text), 'fuzz/config.json')));
          if (!c) return;
          // An accepted config asks for a bounded model (MODEL_LIMITS: at most 1,024 layers of 16 tensors)...
          expect(expectedWeights(c).size).toBeLessThanOrEqual(2 + 1024 * 16 + 1);
          // ...and weights of another shape are a named error, never a crash.
          check('config.json vs weights', text.length, () =>
            checkWeights(
              c!,
              new Map([
                ['model.embed_tokens.weight', [3, 3]],
                ['model.layers.0.mlp.up_proj.weight', [1]],
              ]),
              'fuzz',
            ),
          );
        }),
        params,
      );
    },
    TIMEOUT,
  );

  it(
    'YAML configs: lines of a real config, mutated, with hostile lines mixed in',
    () => {
      const lines = exampleYaml.split('\n');
      fc.assert(
        fc.property(
          fc.oneof(
            fc.array(fc.oneof(fc.constantFrom(...lines), yamlLine), { minLength: 1, maxLength: 24 }),
            fc.tuple(fc.subarray(lines), fc.array(yamlLine, { maxLength: 1 })).map(([a, b]) => ['model_name_or_path: m', 'output_dir: o', ...a, ...b]),
          ),
          fc.array(
            fc
              .tuple(
                fc.constantFrom('lora_rank', 'cutoff_len', 'max_steps', '__proto__', 'x', 'template'),
                fc.oneof(fc.string({ maxLength: 8 }), fc.integer().map(String)),
              )
              .map(([k, v]) => `${k}=${v}`),
            { maxLength: 3 },
          ),
          (ls, overrides) => {
            const text = ls.join('\n');
            check('yaml', text.length, () => validateConfig(parseConfigText(text, overrides, 'fuzz.yaml'), 'fuzz.yaml'));
          },
        ),
        params,
      );
    },
    TIMEOUT,
  );

  it(
    'adapter .bin (torch zip): mutated real files and generated views (strides, offsets, sizes)',
    () => {
      const valid = writeTorchZip(
        new Map([
          ['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', { shape: [2, 4], data: Float32Array.from({ length: 8 }, (_, i) => i / 8) }],
          ['base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight', { shape: [4, 2], data: new Float32Array(8) }],
        ]),
        'pytorch_adapter',
      );
      const view = fc
        .record({
          shape: fc.array(fc.oneof(fc.integer({ min: 0, max: 8 }), fc.constantFrom(1 << 15, 1 << 20, 2 ** 31)), { maxLength: 3 }),
          stride: fc.array(fc.oneof(fc.integer({ min: 0, max: 8 }), fc.constantFrom(1 << 20)), { maxLength: 3 }),
          numel: fc.integer({ min: 0, max: 16 }),
          stored: fc.integer({ min: 0, max: 16 }),
        })
        .map(({ shape, stride, numel, stored }) => {
          const st = stride.slice(0, shape.length);
          while (st.length < shape.length) st.push(1);
          const pkl = pickleTensorDict([['w', { shape, numel, stride: st }]]);
          return writeStoredZip([
            ['a/data.pkl', pkl],
            ['a/byteorder', enc.encode('little')],
            ['a/data/0', new Uint8Array(stored * 4)],
            ['a/version', enc.encode('3\n')],
          ]);
        });
      fc.assert(
        fc.property(
          fc.oneof(
            view,
            mutation(valid.length).map((m) => mutate(valid, m)),
          ),
          (bytes) => {
            check(
              'adapter.bin',
              bytes.length,
              () => readTorchZip(bytes, 'fuzz/pytorch_adapter.bin'),
              (r) => decodedBytes(r),
            );
          },
        ),
        params,
      );
    },
    TIMEOUT,
  );

  it(
    'share links: random text, mutated real links, and encoded arbitrary configs',
    () => {
      const real = encodeShareData(validateConfig({ model_name_or_path: 'org/m', output_dir: 'out', dataset: 'sst2', lora_rank: 4, max_steps: 5 }));
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64url');
      const link = fc.oneof(
        fc.string({ maxLength: 64 }),
        fc.tuple(fc.constantFrom('1.', '2.', '0.', '3.', ''), fc.string({ unit: fc.constantFrom(...alphabet), maxLength: 200 })).map(([v, s]) => v + s),
        fc.array(fc.tuple(fc.nat(real.length - 1), fc.constantFrom(...alphabet)), { minLength: 1, maxLength: 4 }).map((edits) => {
          const c = real.split('');
          for (const [i, ch] of edits) c[i] = ch;
          return c.join('');
        }),
        fc.nat(real.length).map((n) => real.slice(0, n)),
        fc.jsonValue({ maxDepth: 3 }).map((j) => `1.${b64(deflateSync(strToU8(JSON.stringify(j) ?? 'null')))}`),
        fc
          .dictionary(
            fc.constantFrom(
              'model_name_or_path',
              'output_dir',
              'dataset',
              'endpoint',
              'cutoff_len',
              'export_dir',
              'dataset_dir',
              'lora_rank',
              '__proto__',
              'finetuning_type',
            ),
            fc.oneof(
              fc.string({ maxLength: 20 }),
              fc.integer(),
              fc.double(),
              weird,
              fc.constantFrom('org/m', 'https://u:p@h.co', '/etc', '../x', 'http://127.0.0.1:1'),
            ),
          )
          .map((d) => `1.${b64(deflateSync(strToU8(JSON.stringify({ model_name_or_path: 'org/m', output_dir: 'o', ...d }))))}`),
      );
      fc.assert(
        fc.property(link, (data) => {
          check('share link', data.length, () => decodeShareData(data));
        }),
        params,
      );
    },
    TIMEOUT,
  );

  it(
    'dataset lines: Alpaca .jsonl, .jsonl tables, JSON arrays, CSV/TSV',
    () => {
      const line = fc.oneof(
        fc.jsonValue({ maxDepth: 3 }).map((j) => JSON.stringify(j) ?? ''),
        fc.record({ instruction: weird, input: weird, output: weird, system: weird }, { requiredKeys: [] }).map((r) => JSON.stringify(r)),
        fc.constantFrom(
          '{"instruction": "a", "output": "b"}',
          '{"__proto__": {"instruction": "x"}, "output": "y"}',
          '{"instruction": "a"',
          '\uFEFF{}',
          '"x"',
          'a,b,"c',
          '"a""b",c',
          '\t\t',
          '[1,2',
        ),
        fc.string({ maxLength: 40 }),
      );
      fc.assert(
        fc.property(fc.array(line, { maxLength: 12 }), fc.constantFrom(',', '\t', ';'), (ls, delimiter) => {
          const text = ls.join('\n');
          check('alpaca jsonl', text.length, () => readAlpacaJsonl(text, 'fuzz.jsonl'));
          check('jsonl table', text.length, () => parseJsonl(text, 'fuzz.jsonl'));
          check('json array', text.length, () => parseJsonArray(`[${ls.join(',')}]`, 'fuzz.json'));
          check('delimited', text.length, () => parseDelimited(text, { delimiter }, 'fuzz.csv'));
        }),
        params,
      );
    },
    TIMEOUT,
  );

  it('report', () => {
    // Printed for the nightly run's record: accepted inputs and named errors by class, per input kind.
    for (const [what, t] of Object.entries(tally)) {
      const named = Object.entries(t.named)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      console.log(`fuzz ${what}: ${t.ok} accepted, ${Object.values(t.named).reduce((a, b) => a + b, 0)} named errors (${named})`);
    }
    expect(Object.keys(tally).length).toBeGreaterThanOrEqual(7);
  });
});
