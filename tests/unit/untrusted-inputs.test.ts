/**
 * Small or hostile model files never take huge memory or time, and every
 * disagreement is a named error: config.json sanity limits and own-property
 * checks, weights checked tensor by tensor against the config before any data
 * is converted or uploaded, safetensors headers checked from the first bytes
 * of a (sparse, multi-GiB) file, capped JSON files, capped Hub bodies (a
 * Content-Length above the cap, a gzip bomb), torch-zip views bounded by the
 * file's size. CPU only.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { closeSync, mkdtempSync, openSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { ConfigError, ModelFormatError } from '../../src/errors';
import { HubSource } from '../../src/hub/hub-source';
import { LocalFolderSource } from '../../src/hub/node';
import { JSON_LIMITS } from '../../src/hub/source';
import { MODEL_LIMITS, parseModelConfig } from '../../src/model/config';
import { readConfig, readWeights, streamWeights } from '../../src/model/load';
import { parseSafetensors, serializeSafetensors } from '../../src/model/safetensors';
import { checkWeights, expectedWeights } from '../../src/model/weights';
import { readAdapter } from '../../src/methods/adapter-io';
import { pickleTensorDict, readTorchZip, writeStoredZip } from '../../src/methods/torch-zip';
import { randomWeights, tinyConfig } from '../helpers/models';

const tinyJson = {
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

/** Throws `cls` with a message matching `re`, within `ms` milliseconds. */
async function fails(f: () => unknown, cls: new (...a: never[]) => Error, re: RegExp, ms = 1000): Promise<Error> {
  const t0 = performance.now();
  let err: unknown;
  try {
    await f();
  } catch (e) {
    err = e;
  }
  const took = performance.now() - t0;
  expect(err, `expected ${cls.name} ${re}`).toBeInstanceOf(cls);
  expect((err as Error).message).toMatch(re);
  expect(took, `${(err as Error).message.slice(0, 80)} took ${took.toFixed(0)} ms`).toBeLessThan(ms);
  return err as Error;
}

function folder(files: Record<string, Uint8Array | string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'ps-untrusted-'));
  for (const [f, b] of Object.entries(files)) writeFileSync(path.join(dir, f), b);
  return dir;
}

/** A sparse file of `size` bytes that starts with `head`: nothing is written past it. */
function sparse(file: string, size: number, head: Uint8Array): void {
  const fd = openSync(file, 'w');
  writeSync(fd, head, 0, head.length, 0);
  ftruncateSync(fd, size);
  closeSync(fd);
}

const GiB3 = 3 * 2 ** 30;

describe('config.json: sanity limits, own properties, rope factors', () => {
  it('sizes beyond MODEL_LIMITS fail at once, naming the field and the limit', async () => {
    for (const key of ['num_hidden_layers', 'hidden_size', 'head_dim', 'intermediate_size', 'vocab_size', 'num_attention_heads'] as const) {
      const err = await fails(
        () => parseModelConfig({ ...tinyJson, [key]: 1e9 }, 'evil/config.json'),
        ModelFormatError,
        new RegExp(`field "${key}" is 1000000000, above PEFT Studio's limit of ${MODEL_LIMITS[key]}`),
        50,
      );
      expect(err.message).toMatch(/^evil\/config\.json: /);
    }
  });

  it('model_type is looked up as an own property ("__proto__", "constructor" are not architectures)', async () => {
    for (const t of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      await fails(
        () => parseModelConfig({ ...tinyJson, model_type: t, architectures: undefined }, 'c'),
        ModelFormatError,
        new RegExp(`unsupported model_type "${t}"`),
      );
    }
  });

  it('rope_scaling factors and rope_theta must be positive numbers', async () => {
    for (const bad of [0, -1, 'x']) {
      const raw = JSON.parse(JSON.stringify({ ...tinyJson, rope_scaling: { rope_type: 'linear', factor: bad } }));
      await fails(() => parseModelConfig(raw, 'c'), ModelFormatError, /rope_scaling\.factor is .*, not a positive number/);
    }
    await fails(
      () =>
        parseModelConfig(
          { ...tinyJson, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: -1, high_freq_factor: 4, original_max_position_embeddings: 8192 } },
          'c',
        ),
      ModelFormatError,
      /rope_scaling\.low_freq_factor is -1/,
    );
    await fails(
      () => parseModelConfig({ ...tinyJson, rope_parameters: { rope_type: 'default', rope_theta: 0 }, rope_theta: undefined }, 'c'),
      ModelFormatError,
      /rope_theta is .*not a positive number|rope_theta/,
    );
  });
});

describe('weights against config.json', () => {
  const cfg = tinyConfig();
  const shapes = () => new Map([...randomWeights(cfg)].map(([n, t]) => [n, t.shape]));

  it('every expected tensor with its exact shape passes; an extra tensor is not uploaded and is named', () => {
    const s = shapes();
    s.set('vision_tower.patch_embed.weight', [3, 3]);
    const c = checkWeights(cfg, s, 'src');
    expect(c.ignored).toEqual(['vision_tower.patch_embed.weight']);
    expect(c.use.size).toBe(expectedWeights(cfg).size);
  });

  it('missing tensors, wrong shapes and a wrong layer count are named together', async () => {
    const s = shapes();
    s.delete('model.layers.1.mlp.up_proj.weight');
    s.set('model.layers.0.self_attn.k_proj.weight', [16, 16]);
    s.set('model.layers.2.mlp.up_proj.weight', [22, 16]);
    const err = await fails(() => checkWeights(cfg, s, 'src'), ModelFormatError, /the weights do not match config\.json/);
    expect(err.message).toContain('config.json says num_hidden_layers 2 but the weights hold 3 layer(s)');
    expect(err.message).toContain('1 tensor(s) the config needs are missing: model.layers.1.mlp.up_proj.weight');
    expect(err.message).toContain('model.layers.0.self_attn.k_proj.weight is [16, 16], config.json implies [8, 16]');
  });

  it('attention_bias / mlp_bias without the biases is an error; biases present but not declared are used', async () => {
    const s = shapes();
    const withBias = tinyConfig({ attention_bias: true });
    await fails(
      () => checkWeights(withBias, s, 'src'),
      ModelFormatError,
      /config\.json declares biases \(attention_bias\) but 8 are missing from the weights: model\.layers\.0\.self_attn\.q_proj\.bias/,
    );
    await fails(() => checkWeights(tinyConfig({ mlp_bias: true }), s, 'src'), ModelFormatError, /declares biases \(attention_bias \/ mlp_bias\)/);
    s.set('model.layers.0.self_attn.o_proj.bias', [16]);
    const c = checkWeights(cfg, s, 'src');
    expect(c.undeclaredBiases).toEqual(['model.layers.0.self_attn.o_proj.bias']);
    expect(c.use.has('model.layers.0.self_attn.o_proj.bias')).toBe(true);
    s.set('model.layers.0.self_attn.o_proj.bias', [17]);
    await fails(() => checkWeights(cfg, s, 'src'), ModelFormatError, /o_proj\.bias is \[17\], config\.json implies \[16\]/);
  });

  it('200,000 empty tensors in a header: read in linear time, none converted or uploaded, one warning', async () => {
    // The model's tensors, then 200,000 empty ones (all at the end of the data section): built as text, fast.
    const model = serializeSafetensors(randomWeights(cfg));
    const n = new DataView(model.buffer).getUint32(0, true);
    const head = new TextDecoder().decode(model.subarray(8, 8 + n)).trimEnd();
    const end = model.length - 8 - n;
    const junk = Array.from({ length: 200_000 }, (_, i) => `"junk.${i}":{"dtype":"F32","shape":[0],"data_offsets":[${end},${end}]}`).join(',');
    const json = new TextEncoder().encode(`${head.slice(0, -1)},${junk}}`);
    const file = new Uint8Array(8 + json.length + end);
    new DataView(file.buffer).setUint32(0, json.length, true);
    file.set(json, 8);
    file.set(model.subarray(8 + n), 8 + json.length);
    const dir = folder({ 'config.json': JSON.stringify(tinyJson), 'model.safetensors': file });
    const notes: string[] = [];
    const t0 = performance.now();
    const host = await readWeights(new LocalFolderSource(dir), undefined, await readConfig(new LocalFolderSource(dir)), (m) => notes.push(m));
    // About a second on an idle core (a few JSON parses of a 12 MB header); generous for a loaded CI machine.
    expect(performance.now() - t0).toBeLessThan(60_000);
    expect(host.size).toBe(expectedWeights(cfg).size);
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(
      /200000 tensor\(s\) are not part of this architecture and were not loaded: junk\.0, junk\.1, junk\.2, junk\.3, junk\.4 and 199995 more/,
    );
  });
});

/** A safetensors file from raw tensors (any dtype name, bytes as given). */
function rawSafetensors(tensors: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[]): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] };
    off += t.bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + off);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const t of tensors) {
    out.set(t.bytes, at);
    at += t.bytes.length;
  }
  return out;
}

describe('weight dtypes', () => {
  const cfg = tinyConfig();
  const f32 = (name: string, t: { shape: number[]; data: Float32Array }) => ({ name, dtype: 'F32', shape: t.shape, bytes: new Uint8Array(t.data.buffer) });
  const load = async (dir: string) => {
    const src = new LocalFolderSource(dir);
    for await (const w of streamWeights(src, await readConfig(src), { warn: () => {} })) void w;
  };

  it('an integer or 8-bit float weight (a quantized checkpoint) is refused before any tensor is read; F64 loads; an unused I8 tensor is only ignored', async () => {
    for (const [dtype, size] of [
      ['I8', 1],
      ['U8', 1],
      ['I32', 4],
      ['F8_E4M3', 1],
    ] as const) {
      const tensors = [...randomWeights(cfg)].map(([n, t]) => f32(n, t));
      const i = tensors.findIndex((t) => t.name === 'model.layers.1.mlp.up_proj.weight');
      tensors[i] = { ...tensors[i], dtype, bytes: new Uint8Array(22 * 16 * size) };
      const dir = folder({ 'config.json': JSON.stringify(tinyJson), 'model.safetensors': rawSafetensors(tensors) });
      await fails(
        () => load(dir),
        ModelFormatError,
        new RegExp(
          `1 weight\\(s\\) are not stored as floats: model\\.layers\\.1\\.mlp\\.up_proj\\.weight \\(${dtype}\\)\\. .*use the unquantized F32 / F16 / BF16 checkpoint`,
        ),
      );
    }
    const tensors = [...randomWeights(cfg)].map(([n, t]) => f32(n, t));
    const i = tensors.findIndex((t) => t.name === 'model.norm.weight');
    tensors[i] = { ...tensors[i], dtype: 'F64', bytes: new Uint8Array(Float64Array.from(new Float32Array(tensors[i].bytes.slice().buffer)).buffer) };
    tensors.push({ name: 'model.layers.0.mlp.up_proj.SCB', dtype: 'I8', shape: [22], bytes: new Uint8Array(22) });
    await load(folder({ 'config.json': JSON.stringify(tinyJson), 'model.safetensors': rawSafetensors(tensors) }));
  });
});

describe('file sizes are checked before files are read', () => {
  it('a 3 GiB (sparse) model.safetensors whose first 8 bytes are not a header length is refused without reading it', async () => {
    const dir = folder({ 'config.json': JSON.stringify(tinyJson) });
    sparse(path.join(dir, 'model.safetensors'), GiB3, new TextEncoder().encode('<!DOCTYPE html>'));
    const before = process.memoryUsage().arrayBuffers;
    await fails(
      async () => readWeights(new LocalFolderSource(dir), undefined, await readConfig(new LocalFolderSource(dir))),
      ModelFormatError,
      /header length \d+ is absurd/,
    );
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
  });

  it('a 3 GiB (sparse) file with a valid header that disagrees with config.json fails on the header alone', async () => {
    const n = (GiB3 - 4096) / 4;
    const header = new TextEncoder().encode(
      JSON.stringify({ 'model.embed_tokens.weight': { dtype: 'F32', shape: [n], data_offsets: [0, n * 4] } }).padEnd(4088, ' '),
    );
    const head = new Uint8Array(8 + header.length);
    new DataView(head.buffer).setUint32(0, header.length, true);
    head.set(header, 8);
    const dir = folder({ 'config.json': JSON.stringify(tinyJson) });
    sparse(path.join(dir, 'model.safetensors'), 8 + header.length + n * 4, head);
    const before = process.memoryUsage().arrayBuffers;
    await fails(
      async () => readWeights(new LocalFolderSource(dir), undefined, await readConfig(new LocalFolderSource(dir))),
      ModelFormatError,
      new RegExp(`model\\.embed_tokens\\.weight is \\[${n}\\], config\\.json implies \\[37, 16\\]`),
    );
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
  });

  it(`config.json above ${JSON_LIMITS['config.json']} bytes (a sparse 3 GiB file) is refused before it is read`, async () => {
    const dir = folder({});
    sparse(path.join(dir, 'config.json'), GiB3, new TextEncoder().encode('{"a":"'));
    await fails(() => readConfig(new LocalFolderSource(dir)), ModelFormatError, /config\.json is 3072 MiB, above the 1 MiB PEFT Studio reads for this file/);
  });

  it('model.safetensors.index.json that is not JSON, null, or has no weight_map of .safetensors files', async () => {
    for (const [text, re] of [
      ['{not json', /model\.safetensors\.index\.json is not valid JSON/],
      ['null', /has no "weight_map" object/],
      ['{"weight_map": null}', /has no "weight_map" object/],
      ['{"weight_map": {"a": 5}}', /names 5 as a shard; shards are \.safetensors files/],
      ['{"weight_map": {"a": "../../etc/passwd"}}', /names "\.\.\/\.\.\/etc\/passwd" as a shard/],
      ['{"weight_map": {}}', /has an empty "weight_map"/],
    ] as const) {
      const dir = folder({ 'config.json': JSON.stringify(tinyJson), 'model.safetensors.index.json': text });
      await fails(() => readWeights(new LocalFolderSource(dir)), ModelFormatError, re);
    }
  });

  it('safetensors __metadata__ must hold strings: a 100,000-deep nested value is a named error, not a stack overflow', async () => {
    const deep = '['.repeat(100_000) + ']'.repeat(100_000);
    const json = new TextEncoder().encode(`{"__metadata__":{"a":${deep}}}`);
    const bytes = new Uint8Array(8 + json.length);
    new DataView(bytes.buffer).setUint32(0, json.length, true);
    bytes.set(json, 8);
    await fails(() => parseSafetensors(bytes, 'deep.safetensors'), ModelFormatError, /"__metadata__" value "a" is a list, not a string/);
  });

  it('adapter_config.json that is JSON null is a named error', async () => {
    const dir = folder({ 'adapter_config.json': 'null' });
    await fails(() => readAdapter(new LocalFolderSource(dir)), ConfigError, /adapter_config\.json is null, not a JSON object/);
  });
});

describe('Hub bodies are capped', () => {
  const bomb = gzipSync(Buffer.alloc(64 << 20)); // 64 MiB of zeros in ~64 KiB
  const server = createServer((req, res) => {
    const u = req.url ?? '';
    if (u.includes('/huge/')) {
      res.writeHead(200, { 'content-length': String(GiB3) });
      res.write('{"a":');
      return; // never sends the rest: the client must not wait for it
    }
    if (u.includes('/bomb/')) {
      res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': String(bomb.length) });
      res.end(bomb);
      return;
    }
    res.writeHead(404).end();
  });
  const ready = new Promise<string>((r) => server.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it('a Content-Length above the cap is refused before the body is read', async () => {
    const hub = new HubSource({ endpoint: await ready, repo: 'org/huge', kind: 'model' });
    await fails(() => readConfig(hub), ModelFormatError, /config\.json is 3072 MiB, above the 1 MiB/);
  });

  it('a gzip bomb (64 MiB of zeros in ~64 KiB) stops at the cap while it decodes', async () => {
    expect(bomb.length).toBeLessThan(1 << 20);
    const hub = new HubSource({ endpoint: await ready, repo: 'org/bomb', kind: 'model' });
    const before = process.memoryUsage().arrayBuffers;
    await fails(() => readConfig(hub), ModelFormatError, /config\.json is more than 1(\.\d)? MiB, above the 1 MiB/, 3000);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(32 << 20);
  });
});

describe('pytorch_adapter.bin views are bounded by the file size', () => {
  function torchZip(shape: number[], stride: number[], storage: Float32Array): Uint8Array {
    const pkl = pickleTensorDict([['w', { shape, numel: storage.length, stride }]]);
    const enc = new TextEncoder();
    return writeStoredZip([
      ['a/data.pkl', pkl],
      ['a/byteorder', enc.encode('little')],
      ['a/data/0', new Uint8Array(storage.buffer)],
      ['a/version', enc.encode('3\n')],
    ]);
  }

  it('a stride-0 view of 2^30 elements in a ~700-byte file is refused before anything is allocated', async () => {
    const bytes = torchZip([1 << 15, 1 << 15], [0, 0], Float32Array.of(1));
    expect(bytes.length).toBeLessThan(1024);
    const before = process.memoryUsage().arrayBuffers;
    await fails(
      () => readTorchZip(bytes),
      ModelFormatError,
      /tensor w \[32768, 32768\] \(stride \[0, 0\]\) describes 1073741824 values, more than the \d+-byte file can hold/,
      50,
    );
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1 << 20);
  });

  it('a view that reads past its storage is refused; a small legal strided view (a transpose) still reads', async () => {
    await fails(() => readTorchZip(torchZip([4, 4], [4, 2], new Float32Array(16))), ModelFormatError, /reads past the end of storage 0/);
    const t = readTorchZip(torchZip([2, 3], [1, 2], Float32Array.of(0, 1, 2, 3, 4, 5))).get('w')!;
    expect([...t.data]).toEqual([0, 2, 4, 1, 3, 5]);
  });
});

describe('checkpoint folders', () => {
  it('a stray 2.2 GB (sparse) file in a checkpoint is not read', async () => {
    const { FolderRunStore } = await import('../../src/train/node-store');
    const root = mkdtempSync(path.join(tmpdir(), 'ps-ckpt-'));
    const store = new FolderRunStore(root);
    await store.writeCheckpoint('checkpoint-1', {
      'trainer_state.json': '{"global_step": 1}',
      'trainable.safetensors': serializeSafetensors(new Map([['x', { shape: [1], data: Float32Array.of(1) }]])),
    });
    sparse(path.join(root, 'checkpoint-1', 'core'), 2.2e9, new Uint8Array(1));
    const before = process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    const files = await store.readCheckpoint('checkpoint-1');
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(Object.keys(files!).sort()).toEqual(['trainable.safetensors', 'trainer_state.json']);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
  });
});

describe('own properties only', () => {
  it('a dataset map, rename, adapter or column named like an Object.prototype member is looked up as an own property', async () => {
    const { canonicalRows } = await import('../../src/data/raw');
    const { readAlpacaJsonl } = await import('../../src/data/sft');
    const rows = [JSON.parse('{"label": "constructor", "__proto__": {"x": 1}, "text": "a"}')];
    await fails(
      () => canonicalRows([{ path: 'f.jsonl', rows }], { map: { label: { '0': 'negative' } } }, 'src'),
      ConfigError,
      /column "label" has the value "constructor", which the source's map does not know/,
    );
    const out = canonicalRows([{ path: 'f.jsonl', rows }], { rename: { text: 'prompt' } }, 'src')[0];
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.keys(out).sort()).toEqual(['__proto__', 'label', 'prompt']);
    await fails(() => canonicalRows([{ path: 'f.jsonl', rows }], { adapter: 'constructor' }, 'src'), ConfigError, /unknown adapter "constructor"/);
    await fails(() => readAlpacaJsonl('{"__proto__": {"instruction": "x", "output": "y"}}', 'a.jsonl'), ConfigError, /missing field "instruction"/);
  });
});

describe('local text files', () => {
  it('a 3 GiB (sparse) config.yaml, or a folder given as the dataset file, is a ConfigError before it is read', async () => {
    const { loadConfigFile } = await import('../../src/cli/train');
    const dir = folder({});
    sparse(path.join(dir, 'train.yaml'), GiB3, new TextEncoder().encode('model_name_or_path: x\n'));
    await fails(
      () => loadConfigFile(path.join(dir, 'train.yaml'), []),
      ConfigError,
      /config: .*train\.yaml is 3221225472 bytes, above the 4194304 bytes PEFT Studio reads for it/,
    );
    const { readTextFile, TEXT_FILE_LIMITS } = await import('../../src/hub/node');
    await fails(() => readTextFile(dir, TEXT_FILE_LIMITS.dataset, 'dataset'), ConfigError, /dataset: .* is a folder; give a file/);
  });
});
