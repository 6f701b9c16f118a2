/**
 * ONNX export (src/export/onnx) checked by the runtimes a web developer uses:
 * onnxruntime-web (its wasm backend, in Node) must give the logits of
 * `peft-studio logits` within 1e-4, with and without past key/values, for the
 * base model and for a LoRA-merged one (stories260K and a random qwen2 with
 * q/k/v biases, untied head, GQA); transformers.js's text-generation pipeline,
 * pointed at the exported folder with no network, must produce the greedy
 * tokens of `peft-studio generate`.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-web';
import { LocalFolderSource } from '../../src/hub/node';
import { readWeights } from '../../src/model/load';
import { parseModelConfig, type ModelConfig } from '../../src/model/config';
import { serializeSafetensors } from '../../src/model/safetensors';
import { COPIED_FILES, onnxModelFiles } from '../../src/export/onnx/folder';
import { runCli } from '../helpers/cli';
import { storiesDir, writeQwen2TestModel } from '../helpers/models';
import { randn, rng } from '../helpers/check-op';

ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = path.resolve('node_modules/onnxruntime-web/dist') + '/';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'ps-onnx-'));
// export reads no data, but a config must have something to do (do_train, the default, with a dataset).
const DATA = path.resolve('examples/data/tiny_stories_alpaca.jsonl');
const TEXT = 'Once upon a time, there was a little girl';

function writeFolder(dir: string, files: Map<string, Uint8Array>): void {
  for (const [name, data] of files) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), data);
  }
}

/** The base model as an ONNX folder, through the exporter's host-agnostic entry. */
async function exportBase(modelDir: string, out: string): Promise<void> {
  const weights = await readWeights(new LocalFolderSource(modelDir));
  const baseFiles = new Map<string, Uint8Array>();
  for (const f of COPIED_FILES) if (existsSync(path.join(modelDir, f))) baseFiles.set(f, readFileSync(path.join(modelDir, f)));
  writeFolder(out, onnxModelFiles({ configText: readFileSync(path.join(modelDir, 'config.json'), 'utf8'), weights, baseFiles }));
}

/** A LoRA adapter folder (HF PEFT layout) with random A and B, so the merge moves the logits. */
function writeLoraAdapter(dir: string, cfg: ModelConfig, targets: string[], r: number, alpha: number, scaleB: number): void {
  const rand = rng(11);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const { hiddenSize: C, headDim: D, numHeads: Hq, numKvHeads: Hkv, intermediateSize: F } = cfg;
  const dims: Record<string, [number, number]> = {
    q_proj: [Hq * D, C],
    k_proj: [Hkv * D, C],
    v_proj: [Hkv * D, C],
    o_proj: [C, Hq * D],
    gate_proj: [F, C],
    up_proj: [F, C],
    down_proj: [C, F],
  };
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const t of targets) {
      const [outF, inF] = dims[t];
      const mod = `base_model.model.model.layers.${l}.${t.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(t) ? 'mlp' : 'self_attn'}.${t}`;
      tensors.set(`${mod}.lora_A.weight`, { shape: [r, inF], data: randn(r * inF, rand, 1 / Math.sqrt(inF)) });
      tensors.set(`${mod}.lora_B.weight`, { shape: [outF, r], data: randn(outF * r, rand, scaleB) });
    }
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'adapter_model.safetensors'), serializeSafetensors(tensors, { format: 'pt' }));
  writeFileSync(
    path.join(dir, 'adapter_config.json'),
    JSON.stringify({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r,
      lora_alpha: alpha,
      target_modules: targets,
      lora_dropout: 0,
      bias: 'none',
      fan_in_fan_out: false,
      use_rslora: false,
      use_dora: false,
      init_lora_weights: true,
    }),
  );
}

interface Logits {
  input_ids: number[];
  logits_last: number[];
}

async function cliLogits(model: string, adapter?: string): Promise<Logits> {
  const r = await runCli(['logits', '--model', model, '--text', TEXT, ...(adapter ? ['--adapter', adapter] : [])]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

async function cliGreedy(model: string, adapter?: string): Promise<{ prompt_ids: number[]; ids: number[]; text: string }> {
  const r = await runCli(['generate', '--model', model, '--prompt', TEXT, '--max-new-tokens', '40', '--ids', ...(adapter ? ['--adapter', adapter] : [])]);
  expect(r.code, r.stderr).toBe(0);
  const lines = r.stdout.trimEnd().split('\n');
  return { ...JSON.parse(lines.at(-1)!), text: lines.slice(0, -1).join('\n') };
}

const i64 = (v: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims);

/**
 * Logits [T, V] of the new tokens `ids` at positions past.length.., with the
 * past key/values (none: an empty cache) and the present ones to continue with.
 */
async function step(s: ort.InferenceSession, cfg: ModelConfig, ids: number[], pastLen: number, past: Record<string, ort.Tensor> | null) {
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(ids, [1, ids.length]),
    attention_mask: i64(new Array(pastLen + ids.length).fill(1), [1, pastLen + ids.length]),
    position_ids: i64(
      ids.map((_, i) => pastLen + i),
      [1, ids.length],
    ),
  };
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const kv of ['key', 'value']) {
      feeds[`past_key_values.${l}.${kv}`] = past?.[`present.${l}.${kv}`] ?? new ort.Tensor('float32', new Float32Array(0), [1, cfg.numKvHeads, 0, cfg.headDim]);
    }
  }
  const out = await s.run(feeds);
  return { logits: out.logits.data as Float32Array, present: out };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** onnxruntime-web logits vs the CLI's: the whole prompt at once, then prefill + one token at a time through the cache. */
async function checkLogits(label: string, folder: string, cfg: ModelConfig, want: Logits): Promise<void> {
  const s = await ort.InferenceSession.create(readFileSync(path.join(folder, 'onnx/model.onnx')));
  const ids = want.input_ids,
    T = ids.length,
    V = cfg.vocabSize;
  const full = await step(s, cfg, ids, 0, null);
  const dFull = maxDiff(full.logits.subarray((T - 1) * V), want.logits_last);
  // With the cache: T-3 tokens, then 1, 1, 1.
  let { present } = await step(s, cfg, ids.slice(0, T - 3), 0, null);
  let dRows = 0,
    last: ArrayLike<number> = [];
  for (let t = T - 3; t < T; t++) {
    const r = await step(s, cfg, [ids[t]], t, present);
    present = r.present;
    last = r.logits;
    dRows = Math.max(dRows, maxDiff(r.logits, full.logits.subarray(t * V, (t + 1) * V)));
  }
  const dCached = maxDiff(last, want.logits_last);
  console.log(
    `${label}: max |Δlogit| vs peft-studio logits: no cache ${dFull.toExponential(2)}, with cache ${dCached.toExponential(2)}; cached rows vs full ${dRows.toExponential(2)}`,
  );
  expect(dFull).toBeLessThan(1e-4);
  expect(dCached).toBeLessThan(1e-4);
  expect(dRows).toBeLessThan(1e-4);
  await s.release();
}

/**
 * transformers.js as a web developer calls it (README, Export), in Node: the
 * files come from the folder, remote models are off; the runtime is
 * onnxruntime-web's wasm backend (shims/onnxruntime-node hands it over).
 */
async function transformersGreedy(root: string, name: string, stopIds: number[]): Promise<{ ids: number[]; text: string }> {
  const { pipeline, env } = await import('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.localModelPath = root + '/';
  const generator = await pipeline('text-generation', name);
  const gen = { max_new_tokens: 40, do_sample: false, eos_token_id: stopIds };
  const [{ generated_text: text }] = (await generator(TEXT, { ...gen, return_full_text: false })) as { generated_text: string }[];
  const inputs = generator.tokenizer(TEXT);
  const out = (await generator.model.generate({ ...inputs, ...gen })) as { tolist(): bigint[][] };
  const all = out.tolist()[0].map(Number);
  await generator.dispose();
  return { ids: all.slice(inputs.input_ids.dims[1]), text };
}

/** Our stop rule (the CLI stops on eos and bos) minus what transformers.js also stops on. */
const stopIdsOf = (modelDir: string): number[] => {
  const c = JSON.parse(readFileSync(path.join(modelDir, 'config.json'), 'utf8'));
  return [...new Set([c.bos_token_id, ...[c.eos_token_id].flat()].filter((x) => typeof x === 'number'))];
};

describe.each([
  ['stories260K', () => storiesDir(), ['q_proj', 'v_proj']],
  [
    'qwen2 (q/k/v bias, untied, GQA 6/2)',
    (dir: string) => (writeQwen2TestModel(path.join(dir, 'qwen2')), path.join(dir, 'qwen2')),
    ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  ],
] as const)('ONNX export of %s', (label, makeModel, targets) => {
  let work: string, modelDir: string, cfg: ModelConfig, adapter: string, plain: Logits;
  beforeAll(() => {
    work = tmp();
    modelDir = makeModel(work);
    cfg = parseModelConfig(JSON.parse(readFileSync(path.join(modelDir, 'config.json'), 'utf8')), label);
    adapter = path.join(work, 'adapter');
    writeLoraAdapter(adapter, cfg, [...targets], 4, 8, 0.05);
  });

  it('base: onnxruntime-web logits equal peft-studio logits within 1e-4, with and without the cache', async () => {
    const folder = path.join(work, 'base-onnx');
    await exportBase(modelDir, folder);
    plain = await cliLogits(modelDir);
    await checkLogits(`${label} base`, folder, cfg, plain);
  });

  it('LoRA merged by `peft-studio export export_format=onnx`: logits of the unmerged adapter within 1e-4; transformers.js greedy tokens equal peft-studio generate', async () => {
    const yaml = path.join(work, 'export.yaml');
    writeFileSync(
      yaml,
      [
        `model_name_or_path: ${modelDir}`,
        'finetuning_type: lora',
        `dataset: ${DATA}`,
        'lora_rank: 4',
        'lora_alpha: 8',
        `lora_target: ${targets.join(',')}`,
        `output_dir: ${work}`,
        `adapter_name_or_path: ${adapter}`,
        'export_format: onnx',
      ].join('\n'),
    );
    const root = path.join(work, 'exported');
    const x = await runCli(['export', yaml, `export_dir=${path.join(root, 'merged')}`]);
    expect(x.code, x.stderr).toBe(0);
    const folder = path.join(root, 'merged');
    for (const f of ['onnx/model.onnx', 'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) {
      expect(existsSync(path.join(folder, f)), f).toBe(true);
    }
    const want = await cliLogits(modelDir, adapter);
    expect(maxDiff(want.logits_last, plain.logits_last)).toBeGreaterThan(1e-2); // the adapter moves the model
    await checkLogits(`${label} LoRA merged`, folder, cfg, want);

    const ours = await cliGreedy(modelDir, adapter);
    const theirs = await transformersGreedy(root, 'merged', stopIdsOf(modelDir));
    console.log(`${label} LoRA merged: ${ours.ids.length} greedy tokens; transformers.js: ${JSON.stringify(theirs.text.slice(0, 60))}`);
    expect(ours.ids.length).toBe(40);
    expect(theirs.ids).toEqual(ours.ids);
    expect(TEXT + theirs.text).toBe(ours.text);
  }, 300_000);
});

describe('export errors', () => {
  it('a method that cannot merge gets a named error saying why not', async () => {
    const work = tmp();
    const yaml = path.join(work, 'export.yaml');
    // prompt tuning adds virtual tokens: nothing to fold into the weights.
    writeFileSync(
      yaml,
      [
        `model_name_or_path: ${storiesDir()}`,
        'finetuning_type: prompt-tuning',
        'num_virtual_tokens: 4',
        `dataset: ${DATA}`,
        `output_dir: ${work}`,
        'export_format: onnx',
      ].join('\n'),
    );
    const r = await runCli(['export', yaml]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/prompt-tuning cannot be merged into the base weights.*ONNX/);
  });
});
