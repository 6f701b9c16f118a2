/** LN Tuning against METHODS.md §19: gradients, counts, copies = base, float64 reference, trajectory, export/import/merge. */
import { describe, it, expect } from 'vitest';
import { baseFlops, probe } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, randomWeights, smollmConfig, tinyConfig, tinyModel } from '../../tests/helpers/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import type { Engine } from '../../src/engine/engine';
import { ConfigError } from '../../src/errors';
import { seededRandom } from '../../src/model/generate';
import type { LlamaModel } from '../../src/model/llama';
import { modelFromWeights } from '../../src/model/load';
import { referenceForward } from '../../src/model/reference';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import type { AttachedMethod } from '../../src/methods/types';
import { validateConfig } from '../../src/config/schema';
import lntuning, { lnTuningTargets } from './method';

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

/** Perturb the trainable copies multiplicatively (so the model differs from the base). */
async function perturb(e: Engine, m: AttachedMethod, s: number, seed = 5) {
  const r = rng(seed);
  for (const p of m.trainable()) {
    const w = await e.read(p.tensor);
    const n = randn(w.length, r, s);
    e.write(
      p.tensor,
      w.map((v, i) => v * (1 + n[i])),
    );
  }
}

const IDS = [1, 403, 407, 261, 378, 432, 383];

describe('lntuning', () => {
  it("is the registry's method for finetuning_type lntuning and for peft_type LN_TUNING adapters", () => {
    expect(builtinMethods.has('lntuning')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'lntuning' })).toBe(lntuning);
    const { method, config } = methodForAdapter({ peft_type: 'LN_TUNING', target_modules: ['norm'] });
    expect(method).toBe(lntuning);
    expect(config).toEqual({ finetuning_type: 'lntuning', target_modules: ['norm'] });
  });

  it('targets: default every RMSNorm; `norm` matches only model.norm; linear names or all are errors naming the fix', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    expect(lnTuningTargets(model, {})).toEqual([
      'model.layers.0.input_layernorm',
      'model.layers.0.post_attention_layernorm',
      'model.layers.1.input_layernorm',
      'model.layers.1.post_attention_layernorm',
      'model.norm',
    ]);
    expect(lnTuningTargets(model, { target_modules: ['norm'] })).toEqual(['model.norm']);
    expect(lnTuningTargets(model, { target_modules: 'input_layernorm' })).toEqual(['model.layers.0.input_layernorm', 'model.layers.1.input_layernorm']);
    expect(() => lnTuningTargets(model, { target_modules: ['q_proj'] })).toThrow(ConfigError);
    expect(() => lnTuningTargets(model, { target_modules: ['q_proj'] })).toThrow(
      /matches no RMSNorm for lntuning; use input_layernorm, post_attention_layernorm/,
    );
    expect(() => lnTuningTargets(model, { target_modules: ['all'] })).toThrow(/leave target_modules unset for every RMSNorm/);
    model.dispose();
  });

  it('gradients of every norm copy match finite differences (tiny random model)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = lntuning.attach({ e, model, config: {}, random: seededRandom(3) });
    await perturb(e, m, 0.2);
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 5 });
    console.log(report.join('\n'));
    expect(report.length).toBe(5);
    m.detach();
    model.dispose();
  });

  it('trainable parameters: stories260K (2·5 + 1)·64 = 704; SmolLM2-135M (2·30 + 1)·576 = 35 136', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = lntuning.attach({ e, model, config: {}, random: seededRandom(1) });
    const n = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
    expect(n).toBe(704);
    expect(n).toBe((2 * model.config.numLayers + 1) * model.config.hiddenSize);
    m.detach();
    const s = smollmConfig();
    expect((2 * s.numLayers + 1) * s.hiddenSize).toBe(35_136);
    model.dispose();
  });

  it('copies start equal to the base: logits identical; forward with trained copies equals the float64 reference', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const m = lntuning.attach({ e, model, config: {}, random: seededRandom(1) });
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    m.detach();
    model.dispose();

    const cfg = tinyConfig();
    const host = randomWeights(cfg, 13);
    const tiny = modelFromWeights(e, cfg, host);
    const t = lntuning.attach({ e, model: tiny, config: { target_modules: ['post_attention_layernorm', 'norm'] }, random: seededRandom(1) });
    expect(t.trainable().length).toBe(3);
    await perturb(e, t, 0.5, 3);
    const w = new Map([...host].map(([k, v]) => [k, Float64Array.from(v.data)]));
    for (const p of t.trainable()) w.set(p.name.replace('base_model.model.', '').replace('.ln_tuning_layers', ''), Float64Array.from(await e.read(p.tensor)));
    const ids = [3, 14, 15, 9, 26, 5, 35, 8, 9];
    const err = maxAbsDiff(
      await logits(e, tiny, ids),
      referenceForward(cfg, w, ids).flatMap((r) => Array.from(r)),
    );
    console.log(`lntuning: max |Δlogit| vs float64 reference ${err.toExponential(2)}`);
    expect(err).toBeLessThan(2e-4);
    // The base norm weights were never written.
    expect(Array.from(await e.read(tiny.param('model.norm.weight')))).toEqual(Array.from(host.get('model.norm.weight')!.data));
    t.detach();
    tiny.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = lntuning.attach({ e, model, config: {}, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.5, { learningRate: 5e-2 });
    console.log(`lntuning trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('generation with the KV cache matches uncached decoding; a fresh process loading the export gives the same logits', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = lntuning.attach({ e, model, config: { model_name_or_path: 'stories260K' }, random: seededRandom(2) });
    await perturb(e, m, 0.3, 4);
    await checkCachedGeneration(e, model, [1, 403, 407, 261]);
    const r = await checkFreshProcessReload(e, model, m);
    expect(r.files).toContain('adapter_model.safetensors');
    m.detach();
    model.dispose();
  });

  it('export has the §19 keys (final norm included), shapes and adapter_config; import reproduces the logits; merge matches within 1e-4', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const m = lntuning.attach({ e, model, config: { model_name_or_path: 'stories260K' }, random: seededRandom(1) });
    await perturb(e, m, 0.3, 8);
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    const keys = [...files.tensors.keys()].sort();
    expect(keys.length).toBe(11);
    expect(keys).toContain('base_model.model.model.norm.ln_tuning_layers.weight');
    for (let l = 0; l < 5; l++) {
      for (const n of ['input_layernorm', 'post_attention_layernorm']) {
        expect(files.tensors.get(`base_model.model.model.layers.${l}.${n}.ln_tuning_layers.weight`)!.shape).toEqual([64]);
      }
    }
    expect(files.config).toEqual({
      auto_mapping: null,
      base_model_name_or_path: 'stories260K',
      exclude_modules: null,
      inference_mode: true,
      modules_to_save: null,
      peft_type: 'LN_TUNING',
      peft_version: '0.17.1',
      revision: null,
      target_modules: ['input_layernorm', 'norm', 'post_attention_layernorm'],
      task_type: 'CAUSAL_LM',
    });
    m.detach();
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));

    const { config: fromAdapter } = methodForAdapter(files.config);
    const m2 = lntuning.attach({ e, model, config: fromAdapter, random: seededRandom(9) });
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    m2.importAdapter(files);
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBe(0);
    await m2.merge!();
    const merged = await logits(e, model, IDS);
    const err = maxAbsDiff(merged, want);
    console.log(`lntuning merge: max |logits diff| ${err.toExponential(2)}; adapter vs base ${maxAbsDiff(want, base).toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
    expect(maxAbsDiff(want, base)).toBeGreaterThan(1e-2);
    model.dispose();
  });

  it('import rejects missing and mis-shaped tensors; a validated YAML config uses the default targets', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = lntuning.attach({ e, model, config: { target_modules: ['norm'] }, random: seededRandom(1) });
    const files = await m.exportAdapter();
    m.detach();
    const all = lntuning.attach({ e, model, config: {}, random: seededRandom(1) });
    expect(() => all.importAdapter(files)).toThrow(/no tensor base_model\.model\.model\.layers\.0\.input_layernorm\.ln_tuning_layers\.weight/);
    all.detach();
    const one = lntuning.attach({ e, model, config: { target_modules: ['norm'] }, random: seededRandom(1) });
    const bad = {
      config: files.config,
      tensors: new Map([['base_model.model.model.norm.ln_tuning_layers.weight', { shape: [8], data: new Float32Array(8) }]]),
    };
    expect(() => one.importAdapter(bad)).toThrow(/has shape \[8\], expected \[16\] \(hidden_size\)/);
    one.detach();
    const c = validateConfig({ model_name_or_path: 'stories260K', output_dir: 'out', dataset: 'd.jsonl', finetuning_type: 'lntuning' });
    expect(c.target_modules).toBeNull();
    const v = lntuning.attach({ e, model, config: c, random: seededRandom(1) });
    expect(v.trainable().length).toBe(5);
    v.detach();
    model.dispose();
  });
});

describe('lntuning FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('LN tuning adds nothing to the forward (trained norm weights replace the base ones)', () => {
    expect(probe(lntuning)).toMatchObject({ total: baseFlops(512), extra: 0 });
  });
});
