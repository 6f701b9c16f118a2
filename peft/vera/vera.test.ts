/**
 * VeRA (HF PEFT tuners/vera, PEFT 0.17): registry, projections, gradients of
 * lambda_b / lambda_d, the slicing semantics against a float64 reference,
 * parameter counts, λ_b = 0 identity, trajectory, cached generation, export
 * (keys, shapes, config key set), import, fresh-process reload, merge, errors,
 * and that the folder uses only the plug-in API.
 */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { gpuEngine } from 'peft-studio/testing/gpu';
import { loadStories, smollmConfig, tinyModel } from 'peft-studio/testing/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from 'peft-studio/testing/method-check';
import { maxAbsDiff, randn, rng } from 'peft-studio/testing/check-op';
import type { Engine } from 'peft-studio/engine/engine';
import { ConfigError } from 'peft-studio/errors';
import { seededRandom } from 'peft-studio/model/generate';
import type { LlamaModel } from 'peft-studio/model/llama';
import type { ModelConfig } from 'peft-studio/model/config';
import type { AttachedMethod } from 'peft-studio/methods/types';
import { validateConfig } from 'peft-studio/config/schema';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import vera, { veraProjections } from './method';

const VERA_QV = ['q_proj', 'v_proj'];
const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const IDS = [1, 403, 407, 261, 378, 432, 383];

/** Σ over targeted linears of (out + r): lambda_b [out] and lambda_d [r] per target. */
function veraCount(cfg: ModelConfig, r: number, targets: string[]): number {
  const { hiddenSize: d, intermediateSize: f, numHeads: h, numKvHeads: kv, headDim: hd, numLayers: N } = cfg;
  const outs: Record<string, number> = { q_proj: h * hd, k_proj: kv * hd, v_proj: kv * hd, o_proj: d, gate_proj: f, up_proj: f, down_proj: d };
  return N * targets.reduce((a, t) => a + outs[t] + r, 0);
}

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

/** Random lambda_b and lambda_d (lambda_b starts at 0, which would hide lambda_d's gradient). */
function randomize(e: Engine, m: AttachedMethod, scale: number, seed = 5) {
  const r = rng(seed);
  for (const p of m.trainable()) e.write(p.tensor, randn(p.tensor.size, r, scale));
}

describe('vera', () => {
  it("is the registry's method for finetuning_type vera and for peft_type VERA adapters", () => {
    expect(builtinMethods.has('vera')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'vera' })).toBe(vera);
    const { method, config } = methodForAdapter({
      peft_type: 'VERA',
      r: 64,
      target_modules: ['q_proj', 'k_proj'],
      d_initial: 0.2,
      projection_prng_key: 7,
      save_projection: false,
    });
    expect(method).toBe(vera);
    expect(config).toEqual({
      finetuning_type: 'vera',
      vera_rank: 64,
      vera_target: ['q_proj', 'k_proj'],
      vera_dropout: 0,
      vera_d_initial: 0.2,
      vera_projection_prng_key: 7,
      vera_save_projection: false,
    });
    expect(() => methodForAdapter({ peft_type: 'VERA', r: 8, bias: 'all' })).toThrow(/bias/);
    expect(() => methodForAdapter({ peft_type: 'VERA', r: 8, target_modules: '.*\\.(q|v)_proj' })).toThrow(/regular expression/);
  });

  it('projections: A [r, in_max] ~ U(±√(6/in_max)), B [out_max, r] ~ U(±√(6/r)), fixed by the key alone', async () => {
    const { A, B } = veraProjections(16, 172, 64, 0);
    expect(A.length).toBe(16 * 172);
    expect(B.length).toBe(64 * 16);
    const stats = (x: Float32Array) => ({
      max: Math.max(...x.map(Math.abs)),
      mean: x.reduce((a, v) => a + v, 0) / x.length,
      ms: x.reduce((a, v) => a + v * v, 0) / x.length,
    });
    const a = stats(A),
      b = stats(B);
    // Uniform(−c, c): max |x| → c, E x² = c²/3.
    expect(a.max).toBeLessThanOrEqual(Math.sqrt(6 / 172));
    expect(a.max).toBeGreaterThan(0.99 * Math.sqrt(6 / 172));
    expect(a.ms).toBeCloseTo(6 / 172 / 3, 3);
    expect(b.max).toBeLessThanOrEqual(Math.sqrt(6 / 16));
    expect(b.ms / (6 / 16 / 3)).toBeGreaterThan(0.85);
    expect(b.ms / (6 / 16 / 3)).toBeLessThan(1.15);
    expect(Math.abs(a.mean)).toBeLessThan(0.01);
    expect(Array.from(veraProjections(16, 172, 64, 0).A)).toEqual(Array.from(A));
    expect(maxAbsDiff(veraProjections(16, 172, 64, 1).A, A)).toBeGreaterThan(0.1);
    // The attached method draws them from the key, not from ctx.random (the run's seed).
    const e = await gpuEngine();
    const model = tinyModel(e);
    const files = await Promise.all(
      [1, 2].map(async (seed) => {
        const m = vera.attach({ e, model, config: { vera_rank: 4, vera_target: 'all' }, random: seededRandom(seed) });
        const f = await m.exportAdapter();
        m.detach();
        return f;
      }),
    );
    expect(files[0].tensors.get('base_model.vera_A')!.shape).toEqual([4, 22]);
    expect(files[0].tensors.get('base_model.vera_B')!.shape).toEqual([22, 4]);
    expect(Array.from(files[0].tensors.get('base_model.vera_A')!.data)).toEqual(Array.from(files[1].tensors.get('base_model.vera_A')!.data));
    expect(Array.from(files[0].tensors.get('base_model.vera_A')!.data)).toEqual(Array.from(veraProjections(4, 22, 22, 0).A));
    model.dispose();
  });

  it('gradients of lambda_b and lambda_d match finite differences (tiny random model, every linear, odd rank)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    // in ∈ {16, 22}, out ∈ {8, 16, 22}: every slice of the shared A and B is exercised.
    const m = vera.attach({ e, model, config: { vera_rank: 5, vera_target: 'all' }, random: seededRandom(3) });
    randomize(e, m, 0.5);
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 4 });
    console.log(report.join('\n'));
    expect(report.length).toBe(28);
    m.detach();
    model.dispose();
  });

  it('the adapted model equals the base with W += Λ_b B[:out] Λ_d A[:, :in] computed in float64 from the exported tensors', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const ids = [1, 5, 9, 2, 30, 7, 11];
    const m = vera.attach({ e, model, config: { vera_rank: 6, vera_target: ['k_proj', 'down_proj', 'gate_proj'] }, random: seededRandom(3) });
    randomize(e, m, 0.7, 9);
    const adapted = await logits(e, model, ids);
    const files = await m.exportAdapter();
    m.detach();
    const r = 6;
    const [rA, inMax] = files.tensors.get('base_model.vera_A')!.shape;
    const [outMax] = files.tensors.get('base_model.vera_B')!.shape;
    expect([rA, inMax, outMax]).toEqual([6, 22, 22]);
    const A = files.tensors.get('base_model.vera_A')!.data,
      B = files.tensors.get('base_model.vera_B')!.data;
    for (const name of model.linearNames().filter((n) => /k_proj|down_proj|gate_proj/.test(n))) {
      const W = model.param(`${name}.weight`);
      const [out, inF] = W.shape;
      const w = Float64Array.from(await e.read(W));
      const lb = files.tensors.get(`base_model.model.${name}.vera_lambda_b`)!.data;
      const ld = files.tensors.get(`base_model.model.${name}.vera_lambda_d`)!.data;
      for (let o = 0; o < out; o++) {
        for (let i = 0; i < inF; i++) {
          let s = 0;
          for (let j = 0; j < r; j++) s += B[o * r + j] * ld[j] * A[j * inMax + i];
          w[o * inF + i] += lb[o] * s;
        }
      }
      e.write(W, Float32Array.from(w));
    }
    expect(maxAbsDiff(await logits(e, model, ids), adapted)).toBeLessThan(1e-4);
    model.dispose();
  });

  it('trainable parameters = Σ (out + r) over targets: stories260K 3 040 (r 256, q,v), SmolLM2-135M 38 400', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    for (const [cfg, targets, want] of [
      [{}, VERA_QV, 3040],
      [{ vera_rank: 16, vera_target: 'all' }, ALL, 5 * (64 + 32 + 32 + 64 + 172 + 172 + 64 + 7 * 16)],
    ] as const) {
      const m = vera.attach({ e, model, config: { ...cfg }, random: seededRandom(1) });
      const n = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
      expect(n).toBe(want);
      expect(n).toBe(veraCount(model.config, Number((cfg as { vera_rank?: number }).vera_rank ?? 256), [...targets]));
      m.detach();
    }
    // SmolLM2-135M: q out 576, v out 3 kv heads × 64 = 192; 30 layers; HF default r 256 on q, v.
    expect(veraCount(smollmConfig(), 256, VERA_QV)).toBe(30 * (576 + 256 + 192 + 256));
    expect(veraCount(smollmConfig(), 256, VERA_QV)).toBe(38_400);
    expect(veraCount(smollmConfig(), 256, ALL)).toBe(209_280);
    model.dispose();
  });

  it('lambda_b = 0 at init: the logits are the base model exactly; greedy generation with the KV cache equals no cache', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const m = vera.attach({ e, model, config: {}, random: seededRandom(1) });
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    randomize(e, m, 0.3);
    expect(maxAbsDiff(await logits(e, model, IDS), base)).toBeGreaterThan(1e-3);
    await checkCachedGeneration(e, model, IDS);
    m.detach();
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch (r 256 on q, v), loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = vera.attach({ e, model, config: {}, random: seededRandom(1) });
    const t = await checkTrajectory(e, model, m, 0.5, { learningRate: 2e-2 });
    console.log(`vera trajectory: ${t.first.toFixed(4)} → ${t.last.toFixed(4)}, peak ${t.peak} B`);
    m.detach();
    model.dispose();
  });

  it('export: HF PEFT keys, shapes and the PEFT 0.17 VeraConfig key set; import reproduces the logits; save_projection false regenerates A, B from the key', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const config = { model_name_or_path: 'stories260K', vera_rank: 32, vera_target: ['q_proj', 'down_proj'], vera_projection_prng_key: 3 };
    const m = vera.attach({ e, model, config, random: seededRandom(1) });
    randomize(e, m, 0.3, 8);
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    const keys = [...files.tensors.keys()].sort();
    expect(keys.length).toBe(5 * 2 * 2 + 2);
    expect(keys.slice(0, 2)).toEqual([
      'base_model.model.model.layers.0.mlp.down_proj.vera_lambda_b',
      'base_model.model.model.layers.0.mlp.down_proj.vera_lambda_d',
    ]);
    for (const k of keys) expect(k).toMatch(/^base_model\.(model\.model\.layers\.\d\.(self_attn\.q_proj|mlp\.down_proj)\.vera_lambda_[bd]|vera_A|vera_B)$/);
    expect(files.tensors.get('base_model.model.model.layers.3.mlp.down_proj.vera_lambda_b')!.shape).toEqual([64]);
    expect(files.tensors.get('base_model.model.model.layers.3.self_attn.q_proj.vera_lambda_d')!.shape).toEqual([32]);
    // in_max = down_proj's 172, out_max = 64.
    expect(files.tensors.get('base_model.vera_A')!.shape).toEqual([32, 172]);
    expect(files.tensors.get('base_model.vera_B')!.shape).toEqual([64, 32]);
    expect(Object.keys(files.config).sort()).toEqual([
      'auto_mapping',
      'base_model_name_or_path',
      'bias',
      'd_initial',
      'fan_in_fan_out',
      'inference_mode',
      'init_weights',
      'layers_pattern',
      'layers_to_transform',
      'modules_to_save',
      'peft_type',
      'peft_version',
      'projection_prng_key',
      'r',
      'revision',
      'save_projection',
      'target_modules',
      'task_type',
      'vera_dropout',
    ]);
    expect(files.config).toMatchObject({
      peft_type: 'VERA',
      r: 32,
      target_modules: ['down_proj', 'q_proj'],
      d_initial: 0.1,
      projection_prng_key: 3,
      save_projection: true,
      vera_dropout: 0,
      bias: 'none',
      task_type: 'CAUSAL_LM',
      inference_mode: true,
      base_model_name_or_path: 'stories260K',
    });
    m.detach();

    // Import (with a different key: the saved projections win).
    const back = methodForAdapter(files.config).config;
    const m2 = vera.attach({ e, model, config: { ...back, vera_projection_prng_key: 99 }, random: seededRandom(9) });
    m2.importAdapter(files);
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBe(0);
    m2.detach();

    // save_projection: false writes only the lambdas; loading regenerates A and B from the key.
    const m3 = vera.attach({ e, model, config: { ...config, vera_save_projection: false }, random: seededRandom(1) });
    m3.importAdapter(files);
    const lean = await m3.exportAdapter();
    expect([...lean.tensors.keys()].some((k) => k.includes('vera_A') || k.includes('vera_B'))).toBe(false);
    expect(lean.config.save_projection).toBe(false);
    m3.detach();
    const m4 = vera.attach({ e, model, config: methodForAdapter(lean.config).config, random: seededRandom(4) });
    m4.importAdapter(lean);
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBe(0);
    m4.detach();
    // A save_projection: true config without the tensors cannot restore them.
    const m5 = vera.attach({ e, model, config, random: seededRandom(4) });
    expect(() => m5.importAdapter(lean)).toThrow(/save_projection: true but has no base_model\.vera_A/);
    m5.detach();
    model.dispose();
  });

  it('a fresh process (the built CLI) loading the export gives the same logits', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = vera.attach({ e, model, config: { model_name_or_path: 'stories260K', vera_rank: 64 }, random: seededRandom(1) });
    randomize(e, m, 0.3, 12);
    const r = await checkFreshProcessReload(e, model, m);
    expect(r.files).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    m.detach();
    model.dispose();
  });

  it('merge: W += Λ_b B Λ_d A gives the adapted logits within 1e-4', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = vera.attach({ e, model, config: { vera_rank: 48, vera_target: 'all' }, random: seededRandom(1) });
    randomize(e, m, 0.3, 6);
    const want = await logits(e, model, IDS);
    await m.merge!();
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBeLessThan(1e-4);
    model.dispose();
  });

  it('bad options: ConfigErrors naming the key, the value and the fix', async () => {
    const base = { model_name_or_path: 'm', output_dir: 'o', dataset: 'd.jsonl', finetuning_type: 'vera' };
    expect(() => validateConfig({ ...base, vera_rank: 0 })).toThrow(/vera_rank: 0 is out of range; it must be ≥ 1/);
    expect(() => validateConfig({ ...base, vera_dropout: 1 })).toThrow(/vera_dropout: 1 is out of range/);
    expect(() => validateConfig({ ...base, vera_save_projection: 'yes' })).toThrow(/vera_save_projection: expected true or false.*without quotes/);
    expect(() => validateConfig({ ...base, vera_rnak: 8 })).toThrow(/did you mean 'vera_rank'/);
    expect(validateConfig(base)).toMatchObject({ vera_rank: 256, vera_target: ['q_proj', 'v_proj'], vera_d_initial: 0.1, vera_save_projection: true });
    const e = await gpuEngine();
    const model = tinyModel(e);
    expect(() => vera.attach({ e, model, config: { vera_target: ['qproj'] }, random: seededRandom(1) })).toThrow(ConfigError);
    expect(() => vera.attach({ e, model, config: { vera_target: ['qproj'] }, random: seededRandom(1) })).toThrow(
      /vera_target \["qproj"\] matches no linear layer/,
    );
    model.dispose();
  });

  it('is written only through the plug-in interface: its code imports PEFT Studio only as peft-studio/... (and its own files)', () => {
    const dir = path.dirname(new URL(import.meta.url).pathname);
    for (const f of readdirSync(dir).filter((f) => /\.ts$/.test(f) && !f.endsWith('.test.ts'))) {
      const src = readFileSync(path.join(dir, f), 'utf8');
      const specs = [...src.matchAll(/(?:import|export)[^'"]*?from\s+'([^']+)'/g)].map((x) => x[1]);
      expect(specs.length, f).toBeGreaterThan(0);
      for (const s of specs) expect(s, `${f} imports ${s}`).toMatch(/^(peft-studio\/|\.\/[^/]+$)/);
    }
  });
});

describe('vera FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('VeRA r = 256 on q, v: 2·r·(in + out) per token per target', () => {
    // q 2·256·128 = 65 536, v 2·256·96 = 49 152
    expect(probe(vera).extra).toBe(TOKENS_LAYERS * (65_536 + 49_152));
  });
});
