/** (IA)³ against METHODS.md §18: gradients, counts, ones = base, float64 reference (k before RoPE), trajectory, export/import/merge. */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, randomWeights, smollmConfig, tinyConfig, tinyModel } from '../../tests/helpers/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import type { Engine } from '../../src/engine/engine';
import { ConfigError } from '../../src/errors';
import { seededRandom } from '../../src/model/generate';
import type { LlamaModel } from '../../src/model/llama';
import type { ModelConfig } from '../../src/model/config';
import { parseModelConfig } from '../../src/model/config';
import { modelFromWeights } from '../../src/model/load';
import { referenceForward } from '../../src/model/reference';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import type { AttachedMethod } from '../../src/methods/types';
import { validateConfig } from '../../src/config/schema';
import ia3, { ia3Targets } from './method';

/** Σ over targets: out for output-scaled (non-FF) layers, in for input-scaled (FF) ones. */
function ia3Count(cfg: ModelConfig, targets: string[], ff: string[]) {
  const { hiddenSize: d, intermediateSize: f, numHeads: h, numKvHeads: kv, headDim: hd, numLayers: N } = cfg;
  const shapes: Record<string, [number, number]> = {
    q_proj: [h * hd, d],
    k_proj: [kv * hd, d],
    v_proj: [kv * hd, d],
    o_proj: [d, h * hd],
    gate_proj: [f, d],
    up_proj: [f, d],
    down_proj: [d, f],
  };
  return N * targets.reduce((a, t) => a + (ff.includes(t) ? shapes[t][1] : shapes[t][0]), 0);
}

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

/** Scaling vectors around 1 (so every gradient is exercised and the model differs from the base). */
function randomizeVectors(e: Engine, m: AttachedMethod, s: number, seed = 5) {
  const r = rng(seed);
  for (const p of m.trainable())
    e.write(
      p.tensor,
      randn(p.tensor.size, r, s).map((v) => 1 + v),
    );
}

const IDS = [1, 403, 407, 261, 378, 432, 383];

describe('ia3', () => {
  it("is the registry's method for finetuning_type ia3 and for peft_type IA3 adapters", () => {
    expect(builtinMethods.has('ia3')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'ia3' })).toBe(ia3);
    const { method, config } = methodForAdapter({
      peft_type: 'IA3',
      target_modules: ['k_proj', 'down_proj'],
      feedforward_modules: ['down_proj'],
      init_ia3_weights: true,
    });
    expect(method).toBe(ia3);
    expect(config).toEqual({ finetuning_type: 'ia3', target_modules: ['k_proj', 'down_proj'], feedforward_modules: ['down_proj'], init_ia3_weights: true });
  });

  it('targets: PEFT defaults (k, v, down; down feed-forward), suffix rule, any linear, subset rule', () => {
    const names = Array.from({ length: 2 }, (_, l) =>
      ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'].map(
        (n) => `model.layers.${l}.${n}`,
      ),
    ).flat();
    const d = ia3Targets(names, {});
    expect(d.targets).toEqual([
      'model.layers.0.self_attn.k_proj',
      'model.layers.0.self_attn.v_proj',
      'model.layers.0.mlp.down_proj',
      'model.layers.1.self_attn.k_proj',
      'model.layers.1.self_attn.v_proj',
      'model.layers.1.mlp.down_proj',
    ]);
    expect([...d.feedforward]).toEqual(['model.layers.0.mlp.down_proj', 'model.layers.1.mlp.down_proj']);
    const all = ia3Targets(names, { target_modules: ['all'], feedforward_modules: ['up_proj', 'down_proj'] });
    expect(all.targets.length).toBe(14);
    expect(all.feedforward.size).toBe(4);
    // Explicit targets without feedforward_modules: PEFT's default FF (down_proj) applies to whatever targets it matches.
    expect(ia3Targets(names, { target_modules: ['q_proj', 'o_proj'] }).feedforward.size).toBe(0);
    expect(() => ia3Targets(names, { target_modules: ['k_proj'], feedforward_modules: ['down_proj'] })).toThrow(
      /feedforward_modules \["down_proj"\] must be a subset of target_modules \["k_proj"\]: add down_proj/,
    );
    expect(() => ia3Targets(names, { target_modules: ['qproj'] })).toThrow(ConfigError);
    expect(() => ia3Targets(names, { target_modules: ['qproj'] })).toThrow(/matches no linear layer for ia3/);
  });

  it('gradients of every vector match finite differences: default targets, and q/o/gate/up (out) + up/down (in) (tiny random model)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    for (const config of [{}, { target_modules: ['q_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], feedforward_modules: ['up_proj', 'down_proj'] }]) {
      const m = ia3.attach({ e, model, config, random: seededRandom(3) });
      randomizeVectors(e, m, 0.3);
      const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 5 });
      console.log(report.join('\n'));
      expect(report.length).toBe(m.trainable().length);
      m.detach();
    }
    model.dispose();
  });

  it('trainable parameters: stories260K 5·(32 + 32 + 172) = 1 180; SmolLM2-135M 30·(192 + 192 + 1536) = 57 600', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = ia3.attach({ e, model, config: {}, random: seededRandom(1) });
    const shapes = new Map(m.trainable().map((p) => [p.name, p.tensor.shape]));
    expect(shapes.get('base_model.model.model.layers.0.self_attn.k_proj.ia3_l')).toEqual([32, 1]);
    expect(shapes.get('base_model.model.model.layers.0.self_attn.v_proj.ia3_l')).toEqual([32, 1]);
    expect(shapes.get('base_model.model.model.layers.0.mlp.down_proj.ia3_l')).toEqual([1, 172]);
    const n = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
    expect(n).toBe(1180);
    expect(n).toBe(ia3Count(model.config, ['k_proj', 'v_proj', 'down_proj'], ['down_proj']));
    m.detach();
    expect(ia3Count(smollmConfig(), ['k_proj', 'v_proj', 'down_proj'], ['down_proj'])).toBe(57_600);
    model.dispose();
  });

  it('with ones (init_ia3_weights) the logits equal the base model exactly; init_ia3_weights false draws N(0, 1)', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const m = ia3.attach({ e, model, config: {}, random: seededRandom(1) });
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    m.detach();
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    const r = ia3.attach({ e, model, config: { init_ia3_weights: false }, random: seededRandom(1) });
    const v = (await Promise.all(r.trainable().map((p) => e.read(p.tensor)))).flatMap((a) => Array.from(a));
    const mean = v.reduce((a, b) => a + b, 0) / v.length,
      sd = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
    expect(Math.abs(mean)).toBeLessThan(0.15);
    expect(Math.abs(sd - 1)).toBeLessThan(0.1);
    r.detach();
    model.dispose();
  });

  it('forward equals the float64 reference with k/v rows (before RoPE) and down_proj columns scaled; qwen2 biases scale with the output', async () => {
    const e = await gpuEngine();
    const cases: [string, ModelConfig, boolean][] = [
      ['llama', tinyConfig(), false],
      ['qwen2 (q/k/v bias)', parseModelConfig({ ...tinyConfigJson(), architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' }, 'tiny-qwen2'), true],
    ];
    for (const [label, cfg, qkvBias] of cases) {
      const host = randomWeights(cfg, 11, { qkvBias });
      const model = modelFromWeights(e, cfg, host);
      const m = ia3.attach({ e, model, config: { target_modules: ['k_proj', 'v_proj', 'up_proj', 'down_proj'] }, random: seededRandom(1) });
      randomizeVectors(e, m, 0.5, 9);
      const vecs = new Map(await Promise.all(m.trainable().map(async (p) => [p.name, await e.read(p.tensor)] as const)));
      // HF semantics on the host: W_k ← diag(l) W_k (and b ← l ⊙ b), W_down ← W_down diag(l).
      const w = new Map([...host].map(([k, v]) => [k, Float64Array.from(v.data)]));
      for (const [key, l] of vecs) {
        const mod = key.replace('base_model.model.', '').replace('.ia3_l', '');
        const W = w.get(`${mod}.weight`)!,
          [outF, inF] = host.get(`${mod}.weight`)!.shape;
        const ff = mod.endsWith('down_proj');
        for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) W[o * inF + i] *= ff ? l[i] : l[o];
        const b = w.get(`${mod}.bias`);
        if (b && !ff) for (let o = 0; o < outF; o++) b[o] *= l[o];
      }
      const ids = [3, 14, 15, 9, 26, 5, 35, 8, 9];
      const want = referenceForward(cfg, w, ids).flatMap((row) => Array.from(row));
      const got = await logits(e, model, ids);
      const err = maxAbsDiff(got, want);
      console.log(`ia3 ${label}: max |Δlogit| vs float64 reference ${err.toExponential(2)}`);
      expect(err).toBeLessThan(2e-4);
      m.detach();
      model.dispose();
    }
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = ia3.attach({ e, model, config: {}, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.5, { learningRate: 5e-2 });
    console.log(`ia3 trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('generation with the KV cache matches uncached decoding; a fresh process loading the export gives the same logits', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = ia3.attach({ e, model, config: { model_name_or_path: 'stories260K' }, random: seededRandom(2) });
    randomizeVectors(e, m, 0.3, 4);
    await checkCachedGeneration(e, model, [1, 403, 407, 261]);
    const r = await checkFreshProcessReload(e, model, m);
    expect(r.files).toContain('adapter_model.safetensors');
    m.detach();
    model.dispose();
  });

  it('export has the §18 keys, shapes and adapter_config; import reproduces the logits; merge matches within 1e-4', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const config = { model_name_or_path: 'stories260K' };
    const m = ia3.attach({ e, model, config, random: seededRandom(1) });
    randomizeVectors(e, m, 0.3, 8);
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    expect(files.tensors.size).toBe(15);
    for (let l = 0; l < 5; l++) {
      const p = `base_model.model.model.layers.${l}`;
      expect(files.tensors.get(`${p}.self_attn.k_proj.ia3_l`)!.shape).toEqual([32, 1]);
      expect(files.tensors.get(`${p}.self_attn.v_proj.ia3_l`)!.shape).toEqual([32, 1]);
      expect(files.tensors.get(`${p}.mlp.down_proj.ia3_l`)!.shape).toEqual([1, 172]);
    }
    expect(files.config).toEqual({
      auto_mapping: null,
      base_model_name_or_path: 'stories260K',
      exclude_modules: null,
      fan_in_fan_out: false,
      feedforward_modules: ['down_proj'],
      inference_mode: true,
      init_ia3_weights: true,
      modules_to_save: null,
      peft_type: 'IA3',
      peft_version: '0.17.1',
      revision: null,
      target_modules: ['down_proj', 'k_proj', 'v_proj'],
      task_type: 'CAUSAL_LM',
    });
    m.detach();
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));

    const { config: fromAdapter } = methodForAdapter(files.config);
    const m2 = ia3.attach({ e, model, config: fromAdapter, random: seededRandom(9) });
    m2.importAdapter(files);
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBe(0);
    await m2.merge!();
    const merged = await logits(e, model, IDS);
    const err = maxAbsDiff(merged, want);
    console.log(`ia3 merge: max |logits diff| ${err.toExponential(2)}; adapter vs base ${maxAbsDiff(want, base).toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
    expect(maxAbsDiff(want, base)).toBeGreaterThan(1e-2);
    model.dispose();
  });

  it('import rejects a missing tensor and a feed-forward/output shape mismatch; a validated YAML config uses the PEFT defaults', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = ia3.attach({ e, model, config: {}, random: seededRandom(1) });
    const files = await m.exportAdapter();
    m.detach();
    // The same tensors read with down_proj as a non-FF target: shape (1, 22) vs (16, 1).
    const wrong = ia3.attach({ e, model, config: { target_modules: ['k_proj', 'v_proj', 'down_proj'], feedforward_modules: [] }, random: seededRandom(1) });
    expect(() => wrong.importAdapter(files)).toThrow(/has shape \[1,22\], expected \[16,1\] \(scales the output\); check feedforward_modules/);
    wrong.detach();
    const more = ia3.attach({ e, model, config: { target_modules: ['q_proj'] }, random: seededRandom(1) });
    expect(() => more.importAdapter(files)).toThrow(/no tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.ia3_l/);
    more.detach();
    const c = validateConfig({ model_name_or_path: 'stories260K', output_dir: 'out', dataset: 'd.jsonl', finetuning_type: 'ia3' });
    expect(c).toMatchObject({ target_modules: null, feedforward_modules: null, init_ia3_weights: true });
    const v = ia3.attach({ e, model, config: c, random: seededRandom(1) });
    expect(v.trainable().map((p) => p.tensor.size)).toEqual([8, 8, 22, 8, 8, 22]);
    v.detach();
    const y = validateConfig({
      model_name_or_path: 'm',
      output_dir: 'o',
      dataset: 'd.jsonl',
      finetuning_type: 'ia3',
      target_modules: 'k_proj,up_proj',
      feedforward_modules: 'up_proj',
    });
    expect(y).toMatchObject({ target_modules: ['k_proj', 'up_proj'], feedforward_modules: ['up_proj'] });
    expect(() => validateConfig({ model_name_or_path: 'm', output_dir: 'o', dataset: 'd.jsonl', finetuning_type: 'ia3', init_ia3_weights: 'yes' })).toThrow(
      /init_ia3_weights/,
    );
    model.dispose();
  });
});

/** tinyConfig's JSON (for building the same shape under another model_type). */
function tinyConfigJson(): Record<string, unknown> {
  return {
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
}

describe('ia3 FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('IA3: one multiply per scaled feature', () => {
    // k out 32 + v out 32 + down in 172 = 236 multiplies per token per layer
    expect(probe(ia3).extra).toBe(TOKENS_LAYERS * 236); // 604 160
  });
});
