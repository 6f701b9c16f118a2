/**
 * The checks every bottleneck adapter passes (METHODS.md §17 and the methods
 * brief), as one vitest suite that bn-adapter.test.ts, seq-bn-adapter.test.ts
 * and par-adapter.test.ts each run with their own method and numbers.
 */
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, randomWeights, smollmConfig, tinyConfig } from '../../tests/helpers/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import type { Engine } from '../../src/engine/engine';
import { ConfigError } from '../../src/errors';
import { LocalFolderSource } from '../../src/hub/node';
import { seededRandom } from '../../src/model/generate';
import type { LlamaModel } from '../../src/model/llama';
import { modelFromWeights } from '../../src/model/load';
import { parseSafetensors } from '../../src/model/safetensors';
import { validateConfig } from '../../src/config/schema';
import { methodForAdapter, readAdapter } from '../../src/methods/adapter-io';
import { resolveMethod } from '../../src/methods/registry';
import { readTorchZip } from '../../src/methods/torch-zip';
import type { AttachedMethod, PeftMethod } from '../../src/methods/types';
import { BN_DEFAULTS, bottleneckModuleParams, bottleneckSize, resolveBnSettings, type BnMethodName } from './bottleneck';
import { bottleneckReferenceForward } from './bottleneck-reference';

export async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

/** Random adapter values (LayerNorm and scaling vectors around 1), so every gradient is exercised and the adapter is not a no-op. */
export function randomizeAdapter(e: Engine, m: AttachedMethod, scale = 0.3, seed = 5): void {
  const r = rng(seed);
  for (const p of m.trainable()) {
    const aroundOne = /adapter_norm_after\.weight|\.scaling$/.test(p.name) || (/adapter_down\.0\.weight$/.test(p.name) && p.tensor.shape.length === 1);
    e.write(
      p.tensor,
      randn(p.tensor.size, r, scale).map((v) => (aroundOne ? 1 + v : v)),
    );
  }
}

/** Modules per layer of a method's default placement. */
function pointsPerLayer(name: BnMethodName): number {
  return (BN_DEFAULTS[name].mh ? 1 : 0) + (BN_DEFAULTS[name].out ? 1 : 0);
}

export interface SuiteOptions {
  name: BnMethodName;
  method: PeftMethod;
  /** METHODS.md Appendix A anchor for stories260K, reduction_factor 16. */
  storiesCount: number;
  /** The same count on the SmolLM2-135M shape (d 576, m 36, 30 layers), for the report. */
  smollmCount: number;
  /** Learning rate of the stories260K trajectory. */
  lr: number;
  /** Option sets for the gradient and float64-reference checks (reduction_factor 4 on the tiny d = 16 model: m = 4). */
  variants: Record<string, unknown>[];
}

export function bottleneckSuite(o: SuiteOptions): void {
  const { name, method } = o;
  describe(`${name} (shared bottleneck checks)`, () => {
    it(`is the registry's method for finetuning_type ${name}; PEFT-Factory's YAML keys validate`, () => {
      expect(resolveMethod({ finetuning_type: name })).toBe(method);
      const c = validateConfig({
        model_name_or_path: 'stories260K',
        dataset: 'sst2',
        output_dir: 'out',
        finetuning_type: name,
        mh_adapter: BN_DEFAULTS[name].mh,
        output_adapter: true,
        reduction_factor: 16,
        non_linearity: 'tanh',
        adapter_name: 'sst2',
      });
      expect(c.finetuning_type).toBe(name);
      // Unset per-method options resolve to the method's defaults.
      const s = resolveBnSettings(name, validateConfig({ model_name_or_path: 'x', dataset: 'd', output_dir: 'out', finetuning_type: name }));
      expect(s).toMatchObject({
        reductionFactor: 16,
        nonLinearity: BN_DEFAULTS[name].nonLinearity,
        scaling: BN_DEFAULTS[name].scaling,
        init: BN_DEFAULTS[name].init,
        mh: BN_DEFAULTS[name].mh,
        out: true,
        parallel: BN_DEFAULTS[name].parallel,
        originalLnBefore: BN_DEFAULTS[name].olb,
        adapterName: 'default',
      });
    });

    for (const variant of o.variants) {
      const label = JSON.stringify(variant);
      it(`gradients of every adapter tensor match finite differences (tiny model, ${label})`, async () => {
        const e = await gpuEngine();
        const cfg = tinyConfig();
        const model = modelFromWeights(e, cfg, randomWeights(cfg, 7));
        const m = method.attach({ e, model, config: { reduction_factor: 4, ...variant }, random: seededRandom(3) });
        randomizeAdapter(e, m);
        // h = 2e-3: relu's kink (and scaling 4) make h = 1e-2 steps straddle non-smooth points.
        await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { h: 2e-3 });
        m.detach();
        model.dispose();
      });

      it(`logits equal the float64 reference with the §17 placement (tiny model, ${label})`, async () => {
        const e = await gpuEngine();
        const cfg = tinyConfig();
        const weights = randomWeights(cfg, 11);
        const model = modelFromWeights(e, cfg, weights);
        const config = { reduction_factor: 4, adapter_name: 'task_a', ...variant };
        const m = method.attach({ e, model, config, random: seededRandom(4) });
        randomizeAdapter(e, m, 0.4, 9);
        const files = await m.exportAdapter();
        const ids = [3, 14, 15, 9, 26, 5, 35, 8];
        const want = bottleneckReferenceForward(
          cfg,
          new Map([...weights].map(([k, t]) => [k, t.data])),
          ids,
          resolveBnSettings(name, config),
          files.tensors,
        ).flatMap((r) => Array.from(r));
        const got = await logits(e, model, ids);
        const err = maxAbsDiff(got, want);
        expect(err, `${name} ${label}: max |Δlogit| vs float64 reference`).toBeLessThan(2e-4);
        // And the adapter changes the output (the check is not vacuous).
        m.detach();
        expect(maxAbsDiff(await logits(e, model, ids), want)).toBeGreaterThan(1e-2);
        model.dispose();
      });
    }

    it('trainable parameters: points × layers × (2·m·d + m + d), for stories260K and the SmolLM2-135M shape', async () => {
      const e = await gpuEngine();
      const model = await loadStories(e);
      const d = model.config.hiddenSize,
        N = model.config.numLayers;
      const m = method.attach({ e, model, config: {}, random: seededRandom(1) });
      const count = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
      expect(bottleneckSize(d, 16)).toBe(4);
      expect(count).toBe(pointsPerLayer(name) * N * (64 * 4 + 4 + 4 * 64 + 64));
      expect(count).toBe(o.storiesCount);
      m.detach();
      // LayerNorms and channel scaling add 2d, 2d and d per module.
      const m2 = method.attach({ e, model, config: { ln_before: true, ln_after: true, scaling: 'channel' }, random: seededRandom(1) });
      expect(m2.trainable().reduce((a, p) => a + p.tensor.size, 0)).toBe(
        pointsPerLayer(name) * N * bottleneckModuleParams(d, 4, { lnBefore: true, lnAfter: true, channel: true }),
      );
      m2.detach();
      model.dispose();
      const s = smollmConfig();
      expect(bottleneckSize(s.hiddenSize, 16)).toBe(36);
      const smol = pointsPerLayer(name) * s.numLayers * bottleneckModuleParams(s.hiddenSize, bottleneckSize(s.hiddenSize, 16));
      expect(smol).toBe(o.smollmCount);
      console.log(`${name}: trainable parameters stories260K ${count}, SmolLM2-135M shape ${smol}`);
    });

    it('trajectory: 30 steps on a fixed batch, loss falls by half, memory flat', async () => {
      const e = await gpuEngine();
      const model = await loadStories(e);
      const m = method.attach({ e, model, config: {}, random: seededRandom(1) });
      const r = await checkTrajectory(e, model, m, 0.5, { learningRate: o.lr });
      console.log(`${name} trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
      m.detach();
      model.dispose();
    });

    it('KV-cache generation; export in the Adapters layout (keys, shapes, config); importAdapter and a fresh CLI process reproduce the logits', async () => {
      const e = await gpuEngine();
      const model = await loadStories(e);
      const config = { model_name_or_path: 'stories260K', adapter_name: 'sst2' };
      const m = method.attach({ e, model, config, random: seededRandom(2) });
      randomizeAdapter(e, m, 0.2, 4);
      await checkCachedGeneration(e, model, [1, 403, 407, 261]);
      const r = await checkFreshProcessReload(e, model, m);
      expect(r.files.sort()).toEqual(['adapter.safetensors', 'adapter_config.json', 'pytorch_adapter.bin']);

      // adapter_config.json as the library writes it: sorted keys, indent 2, floats with ".0".
      const text = readFileSync(path.join(r.dir, 'adapter_config.json'), 'utf8');
      const cfg = JSON.parse(text);
      expect(Object.keys(cfg)).toEqual(['config', 'config_id', 'hidden_size', 'model_class', 'model_name', 'model_type', 'name', 'version']);
      expect(cfg).toMatchObject({
        hidden_size: 64,
        model_class: 'LlamaAdapterModel',
        model_name: 'stories260K',
        model_type: 'llama',
        name: 'sst2',
        version: 'adapters.1.2.0',
      });
      expect(cfg.config_id).toMatch(/^[0-9a-f]{16}$/);
      expect(Object.keys(cfg.config)).toEqual([
        'adapter_name',
        'adapter_residual_before_ln',
        'architecture',
        'cross_adapter',
        'dropout',
        'factorized_phm_W',
        'factorized_phm_rule',
        'hypercomplex_nonlinearity',
        'init_weights',
        'init_weights_seed',
        'inv_adapter',
        'inv_adapter_reduction_factor',
        'is_parallel',
        'learn_phm',
        'leave_out',
        'ln_after',
        'ln_before',
        'mh_adapter',
        'non_linearity',
        'original_ln_after',
        'original_ln_before',
        'output_adapter',
        'phm_bias',
        'phm_c_init',
        'phm_dim',
        'phm_init_range',
        'phm_layer',
        'phm_rank',
        'reduction_factor',
        'residual_before_ln',
        'scaling',
        'shared_W_phm',
        'shared_phm_rule',
        'stochastic_depth',
        'use_gating',
      ]);
      const def = BN_DEFAULTS[name];
      expect(cfg.config).toMatchObject({
        adapter_name: 'sst2',
        architecture: null,
        is_parallel: def.parallel,
        mh_adapter: def.mh,
        output_adapter: def.out,
        original_ln_before: def.olb,
        original_ln_after: true,
        residual_before_ln: true,
        non_linearity: def.nonLinearity,
        init_weights: def.init,
        reduction_factor: 16,
        scaling: def.scaling,
        leave_out: [],
      });
      expect(text).toContain(`"scaling": ${def.scaling.toFixed(1)},`);
      expect(text).toContain('"dropout": 0.0,');
      expect(text).toContain('"phm_init_range": 0.0001,');
      expect(text.startsWith('{\n  "config": {\n    "adapter_name": "sst2",\n')).toBe(true);

      // Tensor keys and shapes (§17), the same in the .bin and the .safetensors.
      const expectedKeys: string[] = [];
      for (let l = 0; l < 5; l++) {
        for (const pt of [...(def.mh ? ['attention_adapters'] : []), 'output_adapters']) {
          const p = `model.layers.${l}.${pt}.adapters.sst2`;
          expectedKeys.push(`${p}.adapter_down.0.weight`, `${p}.adapter_down.0.bias`, `${p}.adapter_up.weight`, `${p}.adapter_up.bias`);
        }
      }
      const bin = readTorchZip(readFileSync(path.join(r.dir, 'pytorch_adapter.bin')));
      expect([...bin.keys()].sort()).toEqual([...expectedKeys].sort());
      for (const [k, t] of bin) {
        const shape = k.endsWith('adapter_down.0.weight')
          ? [4, 64]
          : k.endsWith('adapter_down.0.bias')
            ? [4]
            : k.endsWith('adapter_up.weight')
              ? [64, 4]
              : [64];
        expect(t.shape, k).toEqual(shape);
      }
      const st = parseSafetensors(readFileSync(path.join(r.dir, 'adapter.safetensors')), 'adapter.safetensors');
      for (const [k, t] of bin) expect(Array.from(st.tensors.get(k)!.data), k).toEqual(Array.from(t.data));

      // readAdapter → methodForAdapter → attach → importAdapter gives the same logits.
      const files = await readAdapter(new LocalFolderSource(r.dir));
      expect(files.layout).toBe('adapters');
      const found = methodForAdapter(files.config);
      expect(found.method).toBe(method);
      expect(found.config).toMatchObject({ finetuning_type: name, adapter_name: 'sst2', reduction_factor: 16 });
      const ids = [1, 403, 407, 261, 378];
      const before = await logits(e, model, ids);
      m.detach();
      const m2 = found.method.attach({ e, model, config: found.config, random: seededRandom(9) });
      m2.importAdapter(files);
      expect(Array.from(await logits(e, model, ids))).toEqual(Array.from(before));
      m2.detach();
      model.dispose();
    });

    it('bad options are ConfigErrors naming the key, the value and the fix', async () => {
      const e = await gpuEngine();
      const cfg = tinyConfig();
      const model = modelFromWeights(e, cfg, randomWeights(cfg, 7));
      const attach = (config: Record<string, unknown>) => method.attach({ e, model, config, random: seededRandom(1) });
      expect(() => attach({ reduction_factor: 0 })).toThrow(ConfigError);
      expect(() => attach({ reduction_factor: -2 })).toThrow(/reduction_factor: -2 is out of range; it must be > 0/);
      expect(() => attach({ non_linearity: 'softplus' })).toThrow(/non_linearity: 'softplus' is not one of relu, tanh/);
      expect(() => attach({ init_weights: 'xavier' })).toThrow(/init_weights: 'xavier' is not one of bert, mam_adapter, houlsby/);
      expect(() => attach({ scaling: 'learned' })).toThrow(/scaling "learned": use a number.*learned scalar scaling is not supported/);
      expect(() => attach({ dropout: 1 })).toThrow(/dropout: 1 is out of range; it must be ≥ 0 and < 1/);
      expect(() => attach({ adapter_name: 'my.adapter' })).toThrow(/adapter_name 'my\.adapter'.*without '\.'/);
      expect(() => attach({ mh_adapter: false, output_adapter: false })).toThrow(/both false.*Set at least one to true/);
      // The schema rejects wrong types and ranges before attach.
      expect(() => validateConfig({ model_name_or_path: 'x', dataset: 'd', output_dir: 'out', finetuning_type: name, non_linearity: 'softplus' })).toThrow(
        /non_linearity: 'softplus' is not one of/,
      );
      expect(() => validateConfig({ model_name_or_path: 'x', dataset: 'd', output_dir: 'out', finetuning_type: name, dropout: 1.5 })).toThrow(
        /dropout: 1.5 is out of range/,
      );
      // An import with a different bottleneck width names both sizes.
      const a = attach({ reduction_factor: 4 });
      const files = await a.exportAdapter();
      a.detach();
      const b = attach({ reduction_factor: 8 });
      expect(() => b.importAdapter(files)).toThrow(/has shape \[4,16\], expected \[2,16\].*reduction_factor 8 → bottleneck 2/);
      b.detach();
      model.dispose();
    });
  });
}
