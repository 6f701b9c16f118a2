/**
 * Prefix tuning against METHODS.md §13: gradients through the table and the
 * projection MLP, parameter counts, the prefix = cached K/V identity, batch
 * broadcast, trajectory, cached generation, export / import / fresh-process
 * reload, errors.
 */
import { describe, it, expect } from 'vitest';
import { probe } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, tinyModel } from '../../tests/helpers/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import type { Engine } from '../../src/engine/engine';
import { Tape } from '../../src/engine/tape';
import { ConfigError } from '../../src/errors';
import { generate, generateBatch, seededRandom } from '../../src/model/generate';
import type { LlamaModel } from '../../src/model/llama';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import { validateConfig } from '../../src/config/schema';
import type { AttachedMethod } from '../../src/methods/types';
import prefixTuning, { prefixDims, prefixParamCount } from './method';

const IDS = [1, 403, 407, 261, 378, 432, 383];

async function logits(e: Engine, model: LlamaModel, ids: number[], B = 1): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), B));
  e.endScope();
  return y;
}

const count = (m: AttachedMethod) => m.trainable().reduce((a, p) => a + p.tensor.size, 0);

/**
 * The prefix matrix Z [P, F] made of the model's own post-RoPE keys and values
 * of ids[0..P) (positions 0..P−1): row j, block 2ℓ = layer ℓ's key of token j,
 * block 2ℓ+1 its value. Run with no method attached.
 */
async function zFromCache(e: Engine, model: LlamaModel, ids: number[], P: number): Promise<Float32Array> {
  const { numLayers: N, numKvHeads: Hkv, headDim: hd } = model.config;
  const W = Hkv * hd,
    F = N * 2 * W;
  const cache = model.newCache(1, P);
  e.beginScope();
  model.forward(Int32Array.from(ids.slice(0, P)), 1, { cache });
  e.endScope();
  const Z = new Float32Array(P * F);
  for (let l = 0; l < N; l++) {
    const k = await e.read(cache.k[l]),
      v = await e.read(cache.v[l]);
    for (let j = 0; j < P; j++) {
      Z.set(k.subarray(j * W, (j + 1) * W), j * F + 2 * l * W);
      Z.set(v.subarray(j * W, (j + 1) * W), j * F + (2 * l + 1) * W);
    }
  }
  cache.dispose();
  return Z;
}

describe('prefix-tuning', () => {
  it("is the registry's method for finetuning_type prefix-tuning and loads every PREFIX_TUNING adapter as a plain table", () => {
    expect(builtinMethods.has('prefix-tuning')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'prefix-tuning' })).toBe(prefixTuning);
    const { method, config } = methodForAdapter({
      peft_type: 'PREFIX_TUNING',
      num_virtual_tokens: 32,
      prefix_projection: true,
      encoder_hidden_size: 512,
      token_dim: 192,
    });
    expect(method).toBe(prefixTuning);
    expect(config).toEqual({ finetuning_type: 'prefix-tuning', num_virtual_tokens: 32, prefix_projection: false, encoder_hidden_size: 512 });
    // The option joins the schema with its default; the shared keys come from prompt-tuning.
    const v = validateConfig({ model_name_or_path: 'm', output_dir: 'o', finetuning_type: 'prefix-tuning', num_virtual_tokens: 8, dataset: 'd' });
    expect(v.prefix_projection).toBe(false);
    expect(v.encoder_hidden_size).toBe(null);
  });

  for (const [label, cfg, tensors] of [
    ['table (no projection)', { num_virtual_tokens: 3 }, 1],
    ['projection MLP, H = 5', { num_virtual_tokens: 3, prefix_projection: true, encoder_hidden_size: 5 }, 5],
  ] as const) {
    it(`gradients match finite differences: ${label} (tiny GQA model)`, async () => {
      const e = await gpuEngine();
      const model = tinyModel(e);
      const m = prefixTuning.attach({ e, model, config: { ...cfg }, random: seededRandom(3) });
      // Moderate values keep the attention softmax away from saturation for the f32 differences.
      const r = rng(11);
      for (const p of m.trainable()) e.write(p.tensor, randn(p.tensor.size, r, 0.5));
      const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7], { samples: 8 });
      console.log(report.join('\n'));
      expect(report.length).toBe(tensors);
      m.detach();
      model.dispose();
    });
  }

  it('a batch of 2 gives each sequence its own logits and sums the two gradients of Z', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = prefixTuning.attach({ e, model, config: { num_virtual_tokens: 2 }, random: seededRandom(4) });
    const [z] = m.trainable();
    const a = [1, 5, 9, 2],
      b = [3, 30, 7, 11];
    const V = model.config.vocabSize;
    const R = randn(2 * a.length * V, rng(2));
    const grad = async (ids: number[], B: number, Rp: Float32Array) => {
      e.beginScope();
      const tape = new Tape();
      e.tape = tape;
      const y = model.forward(Int32Array.from(ids), B);
      e.tape = null;
      tape.backward(y, Rp);
      e.endScope();
      const g = await e.read(z.tensor.grad!);
      z.tensor.grad = null;
      return g;
    };
    const both = await logits(e, model, [...a, ...b], 2);
    const la = await logits(e, model, a),
      lb = await logits(e, model, b);
    expect(maxAbsDiff(both, [...la, ...lb])).toBeLessThan(1e-5);
    const g2 = await grad([...a, ...b], 2, R);
    const ga = await grad(a, 1, R.slice(0, a.length * V)),
      gb = await grad(b, 1, R.slice(a.length * V));
    expect(
      maxAbsDiff(
        g2,
        ga.map((x, i) => x + gb[i]),
      ),
    ).toBeLessThan(1e-4);
    m.detach();
    model.dispose();
  });

  it('trainable parameters: n_v·F (stories260K n_v = 10: 3 200) and n_v·D + D·H + H + H·F + F with projection; SmolLM2-135M shape', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const d = prefixDims(model.config, 10);
    expect([d.D, d.F]).toEqual([32, 320]);
    const plain = prefixTuning.attach({ e, model, config: { num_virtual_tokens: 10 }, random: seededRandom(1) });
    expect(count(plain)).toBe(3200);
    expect(plain.trainable()[0].tensor.shape).toEqual([10, 320]);
    plain.detach();
    for (const [H, want] of [
      [null, 10 * 32 + 32 * 32 + 32 + 32 * 320 + 320],
      [512, 10 * 32 + 32 * 512 + 512 + 512 * 320 + 320],
    ] as const) {
      const m = prefixTuning.attach({ e, model, config: { num_virtual_tokens: 10, prefix_projection: true, encoder_hidden_size: H }, random: seededRandom(1) });
      expect(count(m)).toBe(want);
      expect(count(m)).toBe(prefixParamCount(prefixDims(model.config, 10, H), true));
      expect(m.trainable().map((p) => p.tensor.shape)).toEqual([[10, 32], [H ?? 32, 32], [H ?? 32], [320, H ?? 32], [320]]);
      m.detach();
    }
    model.dispose();
    // SmolLM2-135M: D = 3·64 = 192, F = 30·2·192 = 11 520; peftbench n_v = 32, H = 512.
    const s = prefixDims(smollmConfig(), 32, 512);
    expect([s.D, s.F]).toEqual([192, 11520]);
    expect(prefixParamCount(s, false)).toBe(368_640);
    expect(prefixParamCount(s, true)).toBe(32 * 192 + 192 * 512 + 512 + 512 * 11520 + 11520);
    expect(prefixParamCount(s, true)).toBe(6_014_720);
  });

  it('a prefix equal to the cached K/V of the first P tokens, imported as Z, gives the full-sequence logits and generation', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const P = 3,
      V = model.config.vocabSize;
    const full = await logits(e, model, IDS);
    const wantGen = await generate(model, IDS, { maxNewTokens: 8 });
    const Z = await zFromCache(e, model, IDS, P);
    // Into a projected method: the import replaces the MLP by the plain table Z.
    const m = prefixTuning.attach({ e, model, config: { num_virtual_tokens: P, prefix_projection: true, encoder_hidden_size: 16 }, random: seededRandom(1) });
    m.importAdapter({
      config: { peft_type: 'PREFIX_TUNING', num_virtual_tokens: P, token_dim: 32, num_layers: 5, num_attention_heads: 4 },
      tensors: new Map([['prompt_embeddings', { shape: [P, 320], data: Z }]]),
    });
    expect(m.trainable().map((p) => p.tensor.shape)).toEqual([[P, 320]]);
    const got = await logits(e, model, IDS.slice(P));
    expect(got.length).toBe((IDS.length - P) * V);
    expect(maxAbsDiff(got, full.slice(P * V))).toBeLessThan(1e-4);
    // The prefix is seen at the prefill and at every cached step.
    expect(await generate(model, IDS.slice(P), { maxNewTokens: 8 })).toEqual(wantGen);
    // And the export gives Z back.
    const files = await m.exportAdapter();
    expect(maxAbsDiff(files.tensors.get('prompt_embeddings')!.data, Z)).toBe(0);
    m.detach();
    model.dispose();
  });

  it('generation with the KV cache equals uncached greedy decoding, with and without projection', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    for (const cfg of [{ num_virtual_tokens: 4 }, { num_virtual_tokens: 4, prefix_projection: true, encoder_hidden_size: 24 }]) {
      const m = prefixTuning.attach({ e, model, config: cfg, random: seededRandom(5) });
      await checkCachedGeneration(e, model, [1, 403, 407, 261]);
      m.detach();
    }
    model.dispose();
  });

  it('batched generation with left padding equals generating each prompt alone (prefix over the whole cache, B > 1)', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = prefixTuning.attach({ e, model, config: { num_virtual_tokens: 3, prefix_projection: true, encoder_hidden_size: 16 }, random: seededRandom(8) });
    const prompts = [
      [1, 403, 407, 261, 378],
      [1, 338, 401],
    ];
    const batched = await generateBatch(model, prompts, { maxNewTokens: 6, padId: 0 });
    const alone = [];
    for (const p of prompts) alone.push(await generate(model, p, { maxNewTokens: 6 }));
    expect(batched).toEqual(alone);
    m.detach();
    model.dispose();
  });

  it('trajectory (projection, H = 64): 30 steps on a fixed batch, loss falls, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = prefixTuning.attach({ e, model, config: { num_virtual_tokens: 8, prefix_projection: true, encoder_hidden_size: 64 }, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.2, { learningRate: 1e-3 });
    console.log(`prefix-tuning (projection) trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('export: prompt_embeddings = Z and the PEFT 0.17 config (GQA-corrected); import reproduces the logits; a fresh process too', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const config = { model_name_or_path: 'stories260K', num_virtual_tokens: 6, prefix_projection: true, encoder_hidden_size: 48 };
    const m = prefixTuning.attach({ e, model, config, random: seededRandom(7) });
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    expect([...files.tensors.keys()]).toEqual(['prompt_embeddings']);
    expect(files.tensors.get('prompt_embeddings')!.shape).toEqual([6, 320]);
    expect(Object.keys(files.config).sort()).toEqual([
      'auto_mapping',
      'base_model_name_or_path',
      'encoder_hidden_size',
      'inference_mode',
      'modules_to_save',
      'num_attention_heads',
      'num_layers',
      'num_transformer_submodules',
      'num_virtual_tokens',
      'peft_type',
      'peft_version',
      'prefix_projection',
      'revision',
      'task_type',
      'token_dim',
    ]);
    expect(files.config).toEqual({
      auto_mapping: null,
      base_model_name_or_path: 'stories260K',
      encoder_hidden_size: 48,
      inference_mode: true,
      modules_to_save: null,
      num_attention_heads: 4,
      num_layers: 5,
      num_transformer_submodules: 1,
      num_virtual_tokens: 6,
      peft_type: 'PREFIX_TUNING',
      peft_version: '0.17.1',
      prefix_projection: true,
      revision: null,
      task_type: 'CAUSAL_LM',
      token_dim: 32,
    });
    // Z really is the MLP output: not the table, and the rows differ.
    const Z = files.tensors.get('prompt_embeddings')!.data;
    expect(Z.some((x, i) => i >= 320 && x !== Z[i - 320])).toBe(true);

    // Import through the adapter_config mapping (as the CLI does): a plain table, same logits.
    const { method, config: loaded } = methodForAdapter(files.config);
    m.detach();
    const base = await logits(e, model, IDS);
    expect(maxAbsDiff(base, want)).toBeGreaterThan(1e-3);
    const m2 = method.attach({ e, model, config: loaded, random: seededRandom(99) });
    expect(count(m2)).toBe(6 * 320);
    m2.importAdapter(files);
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBeLessThan(1e-5);
    const r = await checkFreshProcessReload(e, model, m2);
    expect(r.files.sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    m2.detach();
    model.dispose();
  });

  it('errors name the option, the value and the fix', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const attach = (config: Record<string, unknown>) => prefixTuning.attach({ e, model, config, random: seededRandom(1) });
    expect(() => attach({})).toThrow(ConfigError);
    expect(() => attach({ num_virtual_tokens: null })).toThrow(/num_virtual_tokens: prefix-tuning needs it and it is unset.*32 for prefix tuning/);
    expect(() => attach({ num_virtual_tokens: 2.5 })).toThrow(/num_virtual_tokens: expected an integer or null, got the number 2.5/);
    expect(() => attach({ num_virtual_tokens: 4, prefix_projection: true, encoder_hidden_size: 0 })).toThrow(
      /encoder_hidden_size: 0 is out of range; it must be ≥ 1/,
    );
    const m = attach({ num_virtual_tokens: 2 });
    const F = 2 * 2 * 2 * 4; // N·2·n_kv·h_d of the tiny model
    expect(() => m.importAdapter({ config: {}, tensors: new Map() })).toThrow(/no tensor prompt_embeddings/);
    expect(() => m.importAdapter({ config: {}, tensors: new Map([['prompt_embeddings', { shape: [3, F], data: new Float32Array(3 * F) }]]) })).toThrow(
      new RegExp(`shape \\[3,${F}\\], expected \\[2, ${F}\\]`),
    );
    expect(() =>
      m.importAdapter({ config: { token_dim: 64 }, tensors: new Map([['prompt_embeddings', { shape: [2, F], data: new Float32Array(2 * F) }]]) }),
    ).toThrow(/token_dim is 64 but this model needs 8/);
    m.detach();
    model.dispose();
  });
});

describe('prefix-tuning FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('prefix tuning: every query attends to n_v more keys', () => {
    // N · n_h · 2 · (2·T·n_v·h_d) = 5·8·2·(2·512·10·8)
    expect(probe(prefixTuning, { num_virtual_tokens: 10 }).extra).toBe(6_553_600);
    // projection: D = n_kv·h_d = 32, H = D, F = 2·N·D = 320: 2·10·(32·32 + 32·320) = 225 280
    expect(probe(prefixTuning, { num_virtual_tokens: 10, prefix_projection: true }).extra).toBe(6_553_600 + 225_280);
  });
});
