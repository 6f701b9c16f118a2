/** BitFit against METHODS.md §20: gradients, counts, init, float64 reference, existing biases, trajectory, export/import/merge. */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, randomWeights, smollmConfig, storiesDir, tinyModel } from '../../tests/helpers/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import type { Engine } from '../../src/engine/engine';
import { ConfigError } from '../../src/errors';
import { seededRandom } from '../../src/model/generate';
import type { LlamaModel } from '../../src/model/llama';
import { parseModelConfig, type ModelConfig } from '../../src/model/config';
import { modelFromWeights } from '../../src/model/load';
import { referenceForward } from '../../src/model/reference';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import type { AttachedMethod } from '../../src/methods/types';
import { validateConfig } from '../../src/config/schema';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseSafetensors } from '../../src/model/safetensors';
import bitfit from './method';

const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Σ over targets of out_features. */
function bitfitCount(cfg: ModelConfig, targets: string[]) {
  const { hiddenSize: d, intermediateSize: f, numHeads: h, numKvHeads: kv, headDim: hd, numLayers: N } = cfg;
  const out: Record<string, number> = { q_proj: h * hd, k_proj: kv * hd, v_proj: kv * hd, o_proj: d, gate_proj: f, up_proj: f, down_proj: d };
  return N * targets.reduce((a, t) => a + out[t], 0);
}

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

function randomizeBiases(e: Engine, m: AttachedMethod, s: number, seed = 5) {
  const r = rng(seed);
  for (const p of m.trainable()) e.write(p.tensor, randn(p.tensor.size, r, s));
}

function tinyJson(modelType: string): Record<string, unknown> {
  return {
    architectures: [modelType === 'qwen2' ? 'Qwen2ForCausalLM' : modelType === 'mistral' ? 'MistralForCausalLM' : 'LlamaForCausalLM'],
    model_type: modelType,
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
}

const IDS = [1, 403, 407, 261, 378, 432, 383];

describe('bitfit', () => {
  it("is the registry's method for finetuning_type bitfit and for peft_type BITFIT adapters", () => {
    expect(builtinMethods.has('bitfit')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'bitfit' })).toBe(bitfit);
    const { method, config } = methodForAdapter({ peft_type: 'BITFIT', target_modules: ['q_proj', 'v_proj'] });
    expect(method).toBe(bitfit);
    expect(config).toEqual({ finetuning_type: 'bitfit', target_modules: ['q_proj', 'v_proj'], bias_init: 'zeros' });
  });

  it('gradients of every bias match finite differences: q, v (default) and all seven projections (tiny random model)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    for (const config of [{}, { target_modules: 'all' }]) {
      const m = bitfit.attach({ e, model, config, random: seededRandom(3) });
      randomizeBiases(e, m, 0.3);
      const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 5 });
      console.log(report.join('\n'));
      expect(report.length).toBe(m.trainable().length);
      m.detach();
    }
    model.dispose();
  });

  it('trainable parameters: stories260K q,v 5·(64 + 32) = 480, all 3 000; SmolLM2-135M q,v 30·(576 + 192) = 23 040', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    for (const [targets, want] of [
      [['q_proj', 'v_proj'], 480],
      [ALL, 3000],
    ] as const) {
      const m = bitfit.attach({ e, model, config: targets.length === 2 ? {} : { target_modules: [...targets] }, random: seededRandom(1) });
      const n = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
      expect(n).toBe(want);
      expect(n).toBe(bitfitCount(model.config, [...targets]));
      m.detach();
    }
    expect(bitfitCount(smollmConfig(), ['q_proj', 'v_proj'])).toBe(23_040);
    expect(bitfitCount(smollmConfig(), ALL)).toBe(30 * (576 + 192 + 192 + 576 + 1536 + 1536 + 576));
    model.dispose();
  });

  it('init: torch_default draws U(−1/√in, 1/√in) and changes the logits; zeros keeps them; detach removes the added biases', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const paramsBefore = [...model.params.keys()].sort();
    const m = bitfit.attach({ e, model, config: {}, random: seededRandom(1) });
    expect(model.params.has('model.layers.0.self_attn.q_proj.bias')).toBe(true);
    const v = (await Promise.all(m.trainable().map((p) => e.read(p.tensor)))).flatMap((a) => Array.from(a));
    const bound = 1 / Math.sqrt(64);
    expect(Math.max(...v.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...v.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    expect(Math.abs(v.reduce((a, b) => a + b, 0) / v.length)).toBeLessThan(0.02);
    expect(maxAbsDiff(await logits(e, model, IDS), base)).toBeGreaterThan(1e-3);
    m.detach();
    expect([...model.params.keys()].sort()).toEqual(paramsBefore);
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    const z = bitfit.attach({ e, model, config: { bias_init: 'zeros' }, random: seededRandom(1) });
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    z.detach();
    model.dispose();
  });

  it('forward equals the float64 reference with the biases added (llama), and with qwen2 q/k/v biases trained in place', async () => {
    const e = await gpuEngine();
    for (const [label, type, opts] of [
      ['llama, all projections', 'llama', { target_modules: 'all' }],
      ['qwen2, k + up', 'qwen2', { target_modules: ['k_proj', 'up_proj'] }],
    ] as const) {
      const cfg = parseModelConfig(tinyJson(type), label);
      const host = randomWeights(cfg, 17, { qkvBias: type === 'qwen2' });
      const model = modelFromWeights(e, cfg, host);
      const m = bitfit.attach({ e, model, config: { ...opts }, random: seededRandom(1) });
      randomizeBiases(e, m, 0.3, 2);
      const w = new Map([...host].map(([k, v]) => [k, Float64Array.from(v.data)]));
      for (const p of m.trainable()) w.set(p.name.replace('base_model.model.', '').replace('.bitfit_layers', ''), Float64Array.from(await e.read(p.tensor)));
      const ids = [3, 14, 15, 9, 26, 5, 35, 8, 9];
      const err = maxAbsDiff(
        await logits(e, model, ids),
        referenceForward(cfg, w, ids).flatMap((r) => Array.from(r)),
      );
      console.log(`bitfit ${label}: max |Δlogit| vs float64 reference ${err.toExponential(2)}`);
      expect(err).toBeLessThan(2e-4);
      m.detach();
      model.dispose();
    }
  });

  it('qwen2: an existing bias trains from its own value (no second bias), and detach puts the original back untouched', async () => {
    const e = await gpuEngine();
    const cfg = parseModelConfig(tinyJson('qwen2'), 'tiny-qwen2');
    const host = randomWeights(cfg, 19, { qkvBias: true });
    const model = modelFromWeights(e, cfg, host);
    const ids = [3, 14, 15, 9, 26, 5];
    const base = await logits(e, model, ids);
    const keys = [...model.params.keys()].sort();
    const m = bitfit.attach({ e, model, config: { target_modules: ['q_proj', 'v_proj', 'o_proj'] }, random: seededRandom(1) });
    // q and v start at the checkpoint's biases; o has none and gets torch_default.
    const q = m.trainable().find((p) => p.name === 'base_model.model.model.layers.0.self_attn.q_proj.bitfit_layers.bias')!;
    expect(Array.from(await e.read(q.tensor))).toEqual(Array.from(host.get('model.layers.0.self_attn.q_proj.bias')!.data));
    expect(model.params.get('model.layers.0.self_attn.q_proj.bias')).toBe(q.tensor);
    expect(m.trainable().length).toBe(6);
    randomizeBiases(e, m, 0.3, 6);
    expect(maxAbsDiff(await logits(e, model, ids), base)).toBeGreaterThan(1e-3);
    m.detach();
    expect([...model.params.keys()].sort()).toEqual(keys);
    expect(Array.from(await e.read(model.param('model.layers.0.self_attn.q_proj.bias')))).toEqual(
      Array.from(host.get('model.layers.0.self_attn.q_proj.bias')!.data),
    );
    expect(Array.from(await logits(e, model, ids))).toEqual(Array.from(base));
    // Merging an o_proj bias into qwen2 has no config flag to carry it.
    const mo = bitfit.attach({ e, model, config: { target_modules: ['o_proj'] }, random: seededRandom(1) });
    await expect(mo.merge!()).rejects.toThrow(/cannot merge a bias on o_proj into a qwen2 checkpoint/);
    mo.detach();
    // q/k/v merge on qwen2: the trained bias replaces the checkpoint's.
    const mq = bitfit.attach({ e, model, config: { target_modules: ['k_proj'] }, random: seededRandom(1) });
    randomizeBiases(e, mq, 0.3, 7);
    const want = await logits(e, model, ids);
    await mq.merge!();
    expect(maxAbsDiff(await logits(e, model, ids), want)).toBeLessThan(1e-6);
    expect([...model.params.keys()].sort()).toEqual(keys);
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = bitfit.attach({ e, model, config: {}, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.5, { learningRate: 5e-2 });
    console.log(`bitfit trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('generation with the KV cache matches uncached decoding; a fresh process loading the export gives the same logits', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = bitfit.attach({ e, model, config: { model_name_or_path: 'stories260K' }, random: seededRandom(2) });
    await checkCachedGeneration(e, model, [1, 403, 407, 261]);
    const r = await checkFreshProcessReload(e, model, m);
    expect(r.files).toContain('adapter_model.safetensors');
    m.detach();
    model.dispose();
  });

  it('export has the §20 keys (bias + frozen weight copy), shapes and config; import reproduces the logits; merge matches within 1e-4 and completes the attention_bias set', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const m = bitfit.attach({ e, model, config: { model_name_or_path: 'stories260K' }, random: seededRandom(1) });
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    expect(files.tensors.size).toBe(20);
    for (let l = 0; l < 5; l++) {
      const p = `base_model.model.model.layers.${l}.self_attn`;
      expect(files.tensors.get(`${p}.q_proj.bitfit_layers.bias`)!.shape).toEqual([64]);
      expect(files.tensors.get(`${p}.v_proj.bitfit_layers.bias`)!.shape).toEqual([32]);
      expect(files.tensors.get(`${p}.q_proj.bitfit_layers.weight`)!.shape).toEqual([64, 64]);
      expect(files.tensors.get(`${p}.v_proj.bitfit_layers.weight`)!.shape).toEqual([32, 64]);
    }
    expect(Array.from(files.tensors.get('base_model.model.model.layers.2.self_attn.v_proj.bitfit_layers.weight')!.data)).toEqual(
      Array.from(await e.read(model.param('model.layers.2.self_attn.v_proj.weight'))),
    );
    expect(files.config).toEqual({
      auto_mapping: null,
      base_model_name_or_path: 'stories260K',
      inference_mode: true,
      peft_type: 'BITFIT',
      peft_version: '0.17.1',
      revision: null,
      target_modules: ['q_proj', 'v_proj'],
      task_type: 'CAUSAL_LM',
    });
    m.detach();
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));

    const { config: fromAdapter } = methodForAdapter(files.config);
    const m2 = bitfit.attach({ e, model, config: fromAdapter, random: seededRandom(9) });
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base)); // zeros until the import
    // The weight copy is optional on load (PEFT-Factory's loader is non-strict).
    m2.importAdapter({ config: files.config, tensors: new Map([...files.tensors].filter(([k]) => k.endsWith('.bias'))) });
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBe(0);
    await m2.merge!();
    const merged = await logits(e, model, IDS);
    const err = maxAbsDiff(merged, want);
    console.log(`bitfit merge: max |logits diff| ${err.toExponential(2)}; adapter vs base ${maxAbsDiff(want, base).toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
    expect(maxAbsDiff(want, base)).toBeGreaterThan(1e-3);
    // attention_bias: true needs q, k, v and o biases on every layer; k and o are zero; the MLP has none.
    for (let l = 0; l < 5; l++) {
      for (const n of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) expect(model.params.has(`model.layers.${l}.self_attn.${n}.bias`)).toBe(true);
      for (const n of ['gate_proj', 'up_proj', 'down_proj']) expect(model.params.has(`model.layers.${l}.mlp.${n}.bias`)).toBe(false);
      expect(Array.from(await e.read(model.param(`model.layers.${l}.self_attn.o_proj.bias`))).every((x) => x === 0)).toBe(true);
    }
    model.dispose();
  });

  it('CLI: train, then export merged: config.json gains attention_bias / mlp_bias, zero biases fill each group, logits equal --adapter (needs npm run build:cli)', async () => {
    const run = promisify(execFile);
    const bin = path.resolve('bin/peft-studio.mjs');
    const out = mkdtempSync(path.join(tmpdir(), 'ps-bitfit-'));
    const merged = path.join(out, 'merged');
    const args = [
      path.resolve('examples/stories260k_lora.yaml'),
      `model_name_or_path=${storiesDir()}`,
      'finetuning_type=bitfit',
      'target_modules=q_proj,v_proj,up_proj',
      'lr_scheduler_type=constant',
      'warmup_ratio=0',
      'val_size=0',
      'eval_strategy=no',
      `output_dir=${out}`,
      'max_steps=2',
      'save_steps=2',
    ];
    await run('node', [bin, 'train', ...args], { maxBuffer: 1 << 26 });
    expect(JSON.parse(readFileSync(path.join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({
      peft_type: 'BITFIT',
      target_modules: ['q_proj', 'up_proj', 'v_proj'],
    });
    await run('node', [bin, 'export', ...args, `export_dir=${merged}`], { maxBuffer: 1 << 26 });
    const cfg = JSON.parse(readFileSync(path.join(merged, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ model_type: 'llama', attention_bias: true, mlp_bias: true, hidden_size: 64 });
    const st = parseSafetensors(new Uint8Array(readFileSync(path.join(merged, 'model.safetensors'))), 'merged');
    const biases = [...st.tensors.keys()].filter((k) => k.endsWith('.bias'));
    expect(biases.length).toBe(5 * 7); // every projection of both groups on every layer
    expect(Array.from(st.tensors.get('model.layers.3.mlp.down_proj.bias')!.data).every((x) => x === 0)).toBe(true);
    expect(Array.from(st.tensors.get('model.layers.3.mlp.up_proj.bias')!.data).some((x) => x !== 0)).toBe(true);
    const text = 'Once upon a time';
    const a = JSON.parse((await run('node', [bin, 'logits', '--model', storiesDir(), '--adapter', out, '--text', text], { maxBuffer: 1 << 26 })).stdout)
      .logits_last as number[];
    const m = JSON.parse((await run('node', [bin, 'logits', '--model', merged, '--text', text], { maxBuffer: 1 << 26 })).stdout).logits_last as number[];
    const d = Math.max(...a.map((v, i) => Math.abs(v - m[i])));
    console.log(`bitfit CLI merged export: max |logits diff| vs --adapter ${d.toExponential(2)}`);
    expect(d).toBeLessThan(1e-4);
  });

  it('rejects a bad bias_init, an empty target match, a mis-shaped import, and a merge into mistral', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    expect(() => bitfit.attach({ e, model, config: { bias_init: 'normal' }, random: seededRandom(1) })).toThrow(ConfigError);
    expect(() => bitfit.attach({ e, model, config: { bias_init: 'normal' }, random: seededRandom(1) })).toThrow(
      /bias_init: 'normal' is not one of torch_default, zeros/,
    );
    expect(() => bitfit.attach({ e, model, config: { target_modules: ['qproj'] }, random: seededRandom(1) })).toThrow(
      /target_modules \["qproj"\] matches no linear layer for bitfit/,
    );
    expect(() => validateConfig({ model_name_or_path: 'm', output_dir: 'o', dataset: 'd.jsonl', finetuning_type: 'bitfit', bias_init: 'normal' })).toThrow(
      /bias_init: 'normal' is not one of torch_default, zeros/,
    );
    const c = validateConfig({ model_name_or_path: 'm', output_dir: 'o', dataset: 'd.jsonl', finetuning_type: 'bitfit' });
    expect(c).toMatchObject({ target_modules: null, bias_init: 'torch_default' });
    const m = bitfit.attach({ e, model, config: c, random: seededRandom(1) });
    expect(m.trainable().map((p) => p.tensor.size)).toEqual([16, 8, 16, 8]);
    const bad = {
      config: {},
      tensors: new Map([['base_model.model.model.layers.0.self_attn.q_proj.bitfit_layers.bias', { shape: [8], data: new Float32Array(8) }]]),
    };
    expect(() => m.importAdapter(bad)).toThrow(/q_proj\.bitfit_layers\.bias has shape \[8\], expected \[16\]/);
    m.detach();
    model.dispose();
    const cfg = parseModelConfig(tinyJson('mistral'), 'tiny-mistral');
    const mistral = modelFromWeights(e, cfg, randomWeights(cfg, 3));
    const mm = bitfit.attach({ e, model: mistral, config: {}, random: seededRandom(1) });
    await expect(mm.merge!()).rejects.toThrow(/cannot merge a bias on q_proj into a mistral checkpoint/);
    mm.detach();
    mistral.dispose();
  });
});

describe('bitfit FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('BitFit: one add per output of each target', () => {
    // q out 64 + v out 32 = 96 adds per token per layer
    expect(probe(bitfit).extra).toBe(TOKENS_LAYERS * 96); // 245 760
  });
});
