/**
 * P-Tuning v2 against METHODS.md §14: prefix tuning without reparameterisation
 * under its own key. Checks that it is exactly prefix-tuning with
 * prefix_projection = false (same init, same logits), rejects the projection,
 * counts, gradients, trajectory, cached generation, and a PREFIX_TUNING export
 * that loads back (in this process through prefix-tuning, and in a fresh one).
 */
import { describe, it, expect } from 'vitest';
import { probe } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, tinyModel } from '../../tests/helpers/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import type { Engine } from '../../src/engine/engine';
import { ConfigError } from '../../src/errors';
import { seededRandom } from '../../src/model/generate';
import type { LlamaModel } from '../../src/model/llama';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import prefixTuning, { prefixDims, prefixParamCount } from '../prefix-tuning/method';
import pTuningV2 from './method';

const IDS = [1, 403, 407, 261, 378, 432, 383];

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

describe('p-tuning-v2', () => {
  it("is the registry's method for finetuning_type p-tuning-v2; its adapters are PREFIX_TUNING and load through prefix-tuning", () => {
    expect(builtinMethods.has('p-tuning-v2')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'p-tuning-v2' })).toBe(pTuningV2);
    expect(pTuningV2.peftType).toBe('PREFIX_TUNING');
    expect(methodForAdapter({ peft_type: 'PREFIX_TUNING', num_virtual_tokens: 4, prefix_projection: false }).method).toBe(prefixTuning);
  });

  it('rejects prefix_projection: true, pointing to prefix-tuning; requires num_virtual_tokens', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const attach = (config: Record<string, unknown>) => pTuningV2.attach({ e, model, config, random: seededRandom(1) });
    expect(() => attach({ num_virtual_tokens: 4, prefix_projection: true })).toThrow(ConfigError);
    expect(() => attach({ num_virtual_tokens: 4, prefix_projection: true })).toThrow(/prefix_projection: true.*p-tuning-v2.*finetuning_type: prefix-tuning/);
    expect(() => attach({})).toThrow(/num_virtual_tokens: p-tuning-v2 needs it and it is unset/);
    model.dispose();
  });

  it('is prefix-tuning without projection: same table from the same seed, same logits', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const a = pTuningV2.attach({ e, model, config: { num_virtual_tokens: 5 }, random: seededRandom(9) });
    const ya = await logits(e, model, IDS);
    const za = await e.read(a.trainable()[0].tensor);
    a.detach();
    const b = prefixTuning.attach({ e, model, config: { num_virtual_tokens: 5, prefix_projection: false }, random: seededRandom(9) });
    expect(Array.from(await e.read(b.trainable()[0].tensor))).toEqual(Array.from(za));
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(ya));
    b.detach();
    model.dispose();
  });

  it('gradient of the table matches finite differences (tiny GQA model)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = pTuningV2.attach({ e, model, config: { num_virtual_tokens: 4 }, random: seededRandom(2) });
    e.write(m.trainable()[0].tensor, randn(m.trainable()[0].tensor.size, rng(12), 0.5));
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7], { samples: 8 });
    console.log(report.join('\n'));
    expect(report.length).toBe(1);
    m.detach();
    model.dispose();
  });

  it('trainable parameters: n_v·2N·n_kv·h_d (stories260K n_v = 10: 3 200; SmolLM2-135M n_v = 32: 368 640)', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = pTuningV2.attach({ e, model, config: { num_virtual_tokens: 10 }, random: seededRandom(1) });
    expect(m.trainable().map((p) => [p.name, p.tensor.shape])).toEqual([['prompt_encoder.default.embedding.weight', [10, 320]]]);
    expect(m.trainable()[0].tensor.size).toBe(3200);
    m.detach();
    model.dispose();
    expect(prefixParamCount(prefixDims(smollmConfig(), 32), false)).toBe(32 * 30 * 2 * 3 * 64);
    expect(prefixParamCount(prefixDims(smollmConfig(), 32), false)).toBe(368_640);
  });

  it('trajectory: 30 steps on a fixed batch, loss falls, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = pTuningV2.attach({ e, model, config: { num_virtual_tokens: 8 }, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.2, { learningRate: 1e-2 });
    console.log(`p-tuning-v2 trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('cached generation; export as PREFIX_TUNING (no projection) reloads here and in a fresh process with the same logits', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = pTuningV2.attach({ e, model, config: { model_name_or_path: 'stories260K', num_virtual_tokens: 4 }, random: seededRandom(6) });
    await checkCachedGeneration(e, model, [1, 403, 407, 261]);
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    expect([...files.tensors.keys()]).toEqual(['prompt_embeddings']);
    expect(files.tensors.get('prompt_embeddings')!.shape).toEqual([4, 320]);
    expect(Array.from(files.tensors.get('prompt_embeddings')!.data)).toEqual(Array.from(await e.read(m.trainable()[0].tensor)));
    expect(files.config).toMatchObject({
      peft_type: 'PREFIX_TUNING',
      prefix_projection: false,
      token_dim: 32,
      num_attention_heads: 4,
      num_layers: 5,
      num_virtual_tokens: 4,
      encoder_hidden_size: 32,
    });
    const r = await checkFreshProcessReload(e, model, m);
    m.detach();
    const { method, config } = methodForAdapter(files.config);
    const m2 = method.attach({ e, model, config, random: seededRandom(1) });
    m2.importAdapter(files);
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBeLessThan(1e-6);
    expect(r.diff).toBeLessThan(1e-5);
    m2.detach();
    model.dispose();
  });
});

describe('p-tuning-v2 FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('p-tuning v2: every query attends to n_v more keys', () => {
    expect(probe(pTuningV2, { num_virtual_tokens: 10 }).extra).toBe(6_553_600);
    expect(() => probe(pTuningV2, { num_virtual_tokens: 10, prefix_projection: true })).toThrow(/does not apply to finetuning_type p-tuning-v2/);
  });
});
