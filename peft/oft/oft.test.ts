/** OFT against METHODS.md §9: gradients, parameter counts, θ = 0 identity, trajectory, export/import/merge, COFT. */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, tinyModel } from '../../tests/helpers/models';
import { checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import type { Engine } from '../../src/engine/engine';
import { coftProjectCpu, oftBlockParams } from './ops';
import { ConfigError } from '../../src/errors';
import { seededRandom } from '../../src/model/generate';
import type { LlamaModel } from '../../src/model/llama';
import type { ModelConfig } from '../../src/model/config';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import type { AttachedMethod } from '../../src/methods/types';
import { registerOptions, validateConfig } from '../../src/config/schema';
import oft, { adjustOftParameter, oftBlocks } from './method';
import { oftOptions } from './config';

const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Σ over targets of (blocks stored) · b(b−1)/2, with PEFT's block-size adjustment. */
function oftCount(cfg: ModelConfig, blockSize: number, targets: string[], blockShare = false) {
  const { hiddenSize: d, intermediateSize: f, numHeads: h, headDim: hd, numLayers: N } = cfg;
  const inputs: Record<string, number> = { q_proj: d, k_proj: d, v_proj: d, o_proj: h * hd, gate_proj: d, up_proj: d, down_proj: f };
  return (
    N *
    targets.reduce((a, t) => {
      const { r, b } = oftBlocks(inputs[t], 0, blockSize);
      return a + (blockShare ? 1 : r) * oftBlockParams(b);
    }, 0)
  );
}

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

/** Random θ on every layer (scale s), so that higher powers of Q matter. */
function randomizeTheta(e: Engine, m: AttachedMethod, s: number, seed = 5) {
  const r = rng(seed);
  for (const p of m.trainable()) e.write(p.tensor, randn(p.tensor.size, r, s));
}

const IDS = [1, 403, 407, 261, 378, 432, 383];

describe('oft', () => {
  it("is the registry's method for finetuning_type oft and for peft_type OFT adapters", () => {
    expect(builtinMethods.has('oft')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'oft' })).toBe(oft);
    const { method, config } = methodForAdapter({
      peft_type: 'OFT',
      r: 0,
      oft_block_size: 32,
      target_modules: ['q_proj'],
      use_cayley_neumann: true,
      peft_version: '0.18.0',
    });
    expect(method).toBe(oft);
    expect(config).toMatchObject({ finetuning_type: 'oft', oft_rank: 0, oft_block_size: 32, oft_target: ['q_proj'], cayley_neumann_formula: '0.18' });
    expect(methodForAdapter({ peft_type: 'OFT', r: 0, oft_block_size: 32, use_cayley_neumann: true }).config.cayley_neumann_formula).toBe('0.17');
  });

  it('block size adjustment follows PEFT (nearest divisor, ties down; r given: symmetric)', () => {
    expect(oftBlocks(172, 0, 32)).toEqual({ r: 4, b: 43 });
    expect(oftBlocks(64, 0, 32)).toEqual({ r: 2, b: 32 });
    expect(oftBlocks(64, 0, 100)).toEqual({ r: 1, b: 64 });
    expect(oftBlocks(22, 0, 4)).toEqual({ r: 11, b: 2 });
    expect(adjustOftParameter(12, 5)).toBe(4); // 4 and 6 tie → lower
    expect(oftBlocks(64, 4, 0)).toEqual({ r: 4, b: 16 });
    expect(oftBlocks(172, 3, 0)).toEqual({ r: 2, b: 86 }); // 2 and 4 tie → lower
    expect(() => oftBlocks(64, 4, 32)).toThrow(ConfigError);
    expect(() => oftBlocks(64, 0, 0)).toThrow(/exactly one of oft_rank and oft_block_size/);
  });

  for (const [label, cfg, layers] of [
    ['Cayley–Neumann (≥0.18, 5 terms), every projection', { oft_target: 'all' }, 14],
    ['exact Cayley, block_share', { use_cayley_neumann: false, block_share: true, oft_target: ['q_proj', 'down_proj'] }, 4],
  ] as const) {
    it(`gradients of θ match finite differences: ${label} (tiny random model)`, async () => {
      const e = await gpuEngine();
      const model = tinyModel(e);
      // in = 16 → b = 4, r = 4 (vec4 kernels); down_proj in = 22 → b adjusted to 2, r = 11 (scalar kernels).
      const m = oft.attach({ e, model, config: { finetuning_type: 'oft', oft_block_size: 4, ...cfg }, random: seededRandom(3) });
      randomizeTheta(e, m, 0.2);
      const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 4 });
      console.log(report.join('\n'));
      expect(report.length).toBe(layers);
      m.detach();
      model.dispose();
    });
  }

  it('trainable parameters equal Σ blocks · b(b−1)/2 for stories260K (9 920 / 47 820) and the SmolLM2-135M shape', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    for (const [targets, want] of [
      [['q_proj', 'v_proj'], 9920],
      [ALL, 47820],
    ] as const) {
      const m = oft.attach({ e, model, config: { oft_target: [...targets] }, random: seededRandom(1) });
      const n = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
      expect(n).toBe(want);
      expect(n).toBe(oftCount(model.config, 32, [...targets]));
      m.detach();
    }
    const shared = oft.attach({ e, model, config: { oft_target: ['q_proj', 'v_proj'], block_share: true }, random: seededRandom(1) });
    expect(shared.trainable().reduce((a, p) => a + p.tensor.size, 0)).toBe(10 * 496);
    shared.detach();
    // SmolLM2-135M: q,k,v,o,gate,up have in = 576 (18 blocks of 32), down in = 1536 (48 blocks); 30 layers.
    expect(oftCount(smollmConfig(), 32, ['q_proj', 'v_proj'])).toBe(30 * 2 * 18 * 496);
    expect(oftCount(smollmConfig(), 32, ALL)).toBe(30 * (6 * 18 + 48) * 496);
    expect(oftCount(smollmConfig(), 32, ALL)).toBe(2_321_280);
    model.dispose();
  });

  it('with θ = 0 (R = I) the logits are identical to the base model, for both transforms', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    for (const use of [true, false]) {
      const m = oft.attach({ e, model, config: { use_cayley_neumann: use }, random: seededRandom(1) });
      expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
      m.detach();
    }
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by 40%, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    // HF PEFT's default targets (q_proj, v_proj) keep the run short on SwiftShader; 'all' is covered by the counts and gradients.
    const m = oft.attach({ e, model, config: { oft_target: ['q_proj', 'v_proj'] }, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.4);
    console.log(`oft trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('export has the §9 keys, shapes and adapter_config; import reproduces the logits; merge matches within 1e-4', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const config = { model_name_or_path: 'stories260K', oft_target: ['q_proj', 'down_proj'] };
    const m = oft.attach({ e, model, config, random: seededRandom(1) });
    randomizeTheta(e, m, 0.05, 8);
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    const keys = [...files.tensors.keys()].sort();
    expect(keys.length).toBe(10);
    expect(files.tensors.get('base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight')!.shape).toEqual([2, 496]);
    expect(files.tensors.get('base_model.model.model.layers.4.mlp.down_proj.oft_R.weight')!.shape).toEqual([4, 903]);
    for (const k of keys) expect(k).toMatch(/^base_model\.model\.model\.layers\.\d\.(self_attn\.q_proj|mlp\.down_proj)\.oft_R\.weight$/);
    expect(Object.keys(files.config).sort()).toEqual([
      'auto_mapping',
      'base_model_name_or_path',
      'bias',
      'block_share',
      'coft',
      'eps',
      'exclude_modules',
      'fan_in_fan_out',
      'inference_mode',
      'init_weights',
      'layers_pattern',
      'layers_to_transform',
      'module_dropout',
      'modules_to_save',
      'num_cayley_neumann_terms',
      'oft_block_size',
      'peft_type',
      'peft_version',
      'r',
      'revision',
      'target_modules',
      'task_type',
      'use_cayley_neumann',
    ]);
    expect(files.config).toMatchObject({
      peft_type: 'OFT',
      r: 0,
      oft_block_size: 32,
      target_modules: ['down_proj', 'q_proj'],
      use_cayley_neumann: true,
      num_cayley_neumann_terms: 5,
      peft_version: '0.18.0',
      coft: false,
      eps: 6e-5,
      block_share: false,
      module_dropout: 0,
      inference_mode: true,
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: 'stories260K',
      bias: 'none',
    });
    m.detach();

    // A fresh attachment built from the adapter's own config, then import.
    const base = await logits(e, model, IDS);
    const { config: fromAdapter } = methodForAdapter(files.config);
    const m2 = oft.attach({ e, model, config: fromAdapter, random: seededRandom(9) });
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    m2.importAdapter(files);
    const got = await logits(e, model, IDS);
    expect(maxAbsDiff(got, want)).toBe(0);
    await m2.merge!();
    const merged = await logits(e, model, IDS);
    const err = maxAbsDiff(merged, want);
    console.log(`oft merge: max |logits diff| ${err.toExponential(2)}; adapter vs base ${maxAbsDiff(want, base).toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
    expect(maxAbsDiff(want, base)).toBeGreaterThan(1e-2);
    model.dispose();
  });

  it('COFT projects θ onto the ball before the forward, and the forward uses the projected θ', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const eps = 0.05;
    const mc = oft.attach({ e, model, config: { oft_block_size: 4, oft_target: ['q_proj', 'down_proj'], coft: true, coft_eps: eps }, random: seededRandom(1) });
    randomizeTheta(e, mc, 0.1, 2);
    const before = await Promise.all(mc.trainable().map((p) => e.read(p.tensor)));
    const got = await logits(e, model, [1, 2, 3, 4]);
    const after = await Promise.all(mc.trainable().map((p) => e.read(p.tensor)));
    const projected: Float32Array[] = [];
    mc.trainable().forEach((p, i) => {
      const [nb, mm] = p.tensor.shape;
      const b = mm === 6 ? 4 : 2;
      const want = coftProjectCpu(before[i], nb, b, eps / Math.sqrt(nb));
      expect(maxAbsDiff(after[i], want)).toBeLessThan(1e-7);
      projected.push(Float32Array.from(want));
    });
    expect(maxAbsDiff(after[0], before[0])).toBeGreaterThan(1e-3);
    mc.detach();
    const m = oft.attach({ e, model, config: { oft_block_size: 4, oft_target: ['q_proj', 'down_proj'] }, random: seededRandom(1) });
    m.trainable().forEach((p, i) => e.write(p.tensor, projected[i]));
    expect(maxAbsDiff(await logits(e, model, [1, 2, 3, 4]), got)).toBeLessThan(1e-5);
    m.detach();
    model.dispose();
  });

  it('options register in the schema; a validated YAML config attaches with LLaMA-Factory defaults', async () => {
    registerOptions('oft', oftOptions);
    const c = validateConfig({
      model_name_or_path: 'stories260K',
      output_dir: 'out',
      dataset: 'd.jsonl',
      finetuning_type: 'oft',
      oft_target: 'q_proj,v_proj',
      coft: true,
    });
    expect(c).toMatchObject({
      oft_rank: 0,
      oft_block_size: 32,
      oft_target: ['q_proj', 'v_proj'],
      coft: true,
      coft_eps: 6e-5,
      use_cayley_neumann: true,
      num_cayley_neumann_terms: 5,
    });
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = oft.attach({ e, model, config: c, random: seededRandom(1) });
    expect(m.trainable().length).toBe(10);
    expect((await m.exportAdapter()).config).toMatchObject({ coft: true, eps: 6e-5, target_modules: ['q_proj', 'v_proj'] });
    m.detach();
    model.dispose();
  });

  it('rejects both or neither of oft_rank / oft_block_size with a fix', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    expect(() => oft.attach({ e, model, config: { oft_rank: 4, oft_block_size: 32 }, random: seededRandom(1) })).toThrow(
      /set oft_block_size: 0 to use oft_rank/,
    );
    const m = oft.attach({ e, model, config: { oft_rank: 4, oft_block_size: 0, oft_target: ['q_proj'] }, random: seededRandom(1) });
    expect(m.trainable()[0].tensor.shape).toEqual([4, 6]);
    m.detach();
    model.dispose();
  });
});

describe('oft FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('OFT b = 32 on q, v: block rotation per token, Cayley–Neumann products per forward', () => {
    // per token per target 2·b·in = 2·32·64 = 4096; per forward per block (2 blocks): 3 products of 2·32³
    expect(probe(oft, { oft_target: 'q_proj,v_proj' }).extra).toBe(TOKENS_LAYERS * 2 * 4096 + 5 * 2 * 2 * 3 * 2 * 32 ** 3); // 24 903 680
    // block_share: one block built per target; exact Cayley: one 2·b³ inverse per block
    expect(probe(oft, { oft_target: 'q_proj,v_proj', block_share: true }).extra).toBe(TOKENS_LAYERS * 8192 + 5 * 2 * 1 * 3 * 2 * 32 ** 3);
    expect(probe(oft, { oft_target: 'q_proj,v_proj', use_cayley_neumann: false }).extra).toBe(TOKENS_LAYERS * 8192 + 5 * 2 * 2 * 2 * 32 ** 3);
  });
});
