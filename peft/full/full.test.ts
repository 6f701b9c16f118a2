/**
 * Full fine-tuning (the baseline): gradients of every weight (tied and untied
 * heads), count = numParams, the HF decay rule, one trainer step against torch
 * AdamW (§22) in float64, trajectory, and the export as an HF model folder.
 */
import { describe, it, expect } from 'vitest';
import { baseFlops, probe } from '../../tests/helpers/flops-probe';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, randomWeights, smollmConfig, storiesDir, tinyConfig, tinyModel } from '../../tests/helpers/models';
import { checkMethodGradients, checkTrajectory, fixedBatch, trajectoryOptions } from '../../tests/helpers/method-check';
import { seededRandom } from '../../src/model/generate';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { modelFromWeights, loadModel } from '../../src/model/load';
import { parseSafetensors, serializeSafetensors } from '../../src/model/safetensors';
import type { ModelConfig } from '../../src/model/config';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import type { FileSource } from '../../src/hub/source';
import { HubError } from '../../src/errors';
import { Tape } from '../../src/engine/tape';
import { crossEntropy } from '../../src/engine/ops/cross_entropy';
import { adamwCpu } from '../../src/engine/ops/adamw';
import { Trainer, collateShifted, isDecayParam } from '../../src/train/trainer';
import { MemoryRunStore } from '../../src/train/store';
import full from './method';

/** LLaMA parameter count (no biases): V·d (+ V·d untied head) + N·(q, k, v, o, gate, up, down, 2 norms) + d. */
export function llamaParamCount(c: ModelConfig): number {
  const { hiddenSize: d, intermediateSize: f, numHeads: h, numKvHeads: kv, headDim: hd, numLayers: N, vocabSize: V } = c;
  const layer = 2 * h * hd * d + 2 * kv * hd * d + 3 * f * d + 2 * d;
  return V * d * (c.tieWordEmbeddings ? 1 : 2) + N * layer + d;
}

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

function memorySource(files: Record<string, Uint8Array>): FileSource {
  return {
    id: 'memory:full-export',
    async get(p: string) {
      if (!(p in files)) throw new HubError(`no ${p}`, p, 404);
      return files[p];
    },
    async has(p: string) {
      return p in files;
    },
  };
}

const ids = [1, 403, 407, 261, 378, 432, 383];

describe('full', () => {
  it("is the registry's method for finetuning_type full", () => {
    expect(builtinMethods.has('full')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'full' })).toBe(full);
  });

  it('gradients of every weight match finite differences (tiny model, tied head)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = full.attach({ e, model, config: {}, random: seededRandom(3) });
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 4 });
    console.log('full gradients (tied):\n' + report.join('\n'));
    expect(report.length).toBe(2 * 9 + 2);
    m.detach();
    model.dispose();
  });

  it('gradients of the untied lm_head and embedding match finite differences', async () => {
    const e = await gpuEngine();
    const cfg = tinyConfig({ tie_word_embeddings: false, num_hidden_layers: 1 });
    const model = modelFromWeights(e, cfg, randomWeights(cfg, 5, { untied: true }));
    const m = full.attach({ e, model, config: {}, random: seededRandom(3) });
    expect(m.trainable().map((p) => p.name)).toContain('lm_head.weight');
    const report = await checkMethodGradients(e, model, m, [3, 5, 9, 2, 30, 7], { samples: 4 });
    console.log('full gradients (untied):\n' + report.join('\n'));
    m.detach();
    model.dispose();
  });

  it('trains every parameter: count = numParams (stories260K 260 032, SmolLM2-135M 134 515 008), HF decay rule', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = full.attach({ e, model, config: {}, random: seededRandom(1) });
    const ps = m.trainable();
    const count = ps.reduce((a, p) => a + p.tensor.size, 0);
    expect(count).toBe(model.numParams());
    expect(count).toBe(llamaParamCount(model.config));
    expect(count).toBe(260_032);
    expect(llamaParamCount(smollmConfig())).toBe(134_515_008);
    // Tied: one embedding tensor, no lm_head entry.
    expect(ps.filter((p) => p.name === 'model.embed_tokens.weight').length).toBe(1);
    expect(ps.some((p) => p.name === 'lm_head.weight')).toBe(false);
    // HF Trainer groups: the 11 norm weights without decay, the other 36 tensors with.
    const noDecay = ps.filter((p) => !(p.decay ?? isDecayParam(p.name))).map((p) => p.name);
    expect(noDecay.length).toBe(2 * 5 + 1);
    expect(noDecay.every((n) => /layernorm\.weight$|^model\.norm\.weight$/.test(n))).toBe(true);
    m.detach();
    expect(ps.every((p) => !p.tensor.requiresGrad)).toBe(true);
    model.dispose();
  });

  it('one trainer step equals torch AdamW (§22) in float64, decay only on non-norm weights, clip applied', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = full.attach({ e, model, config: {}, random: seededRandom(1) });
    const ps = m.trainable();
    const before = new Map<string, Float32Array>();
    for (const p of ps) before.set(p.name, await e.read(p.tensor));
    // The step's gradient, as the trainer computes it (sum CE / D).
    const batch = collateShifted(fixedBatch(), 0);
    e.beginScope();
    const tape = new Tape();
    e.tape = tape;
    const y = model.forward(batch.ids, batch.B, { attentionMask: batch.mask });
    const loss = crossEntropy(e, y.reshape([batch.B * batch.T, model.config.vocabSize]), batch.targets, { reduction: 'sum' });
    e.tape = null;
    tape.backward(loss, 1 / batch.valid);
    e.endScope();
    const grads = new Map<string, Float32Array>();
    let sumsq = 0;
    for (const p of ps) {
      const g = await e.read(p.tensor.grad!);
      grads.set(p.name, g);
      for (const v of g) sumsq += v * v;
      e.clear(p.tensor.grad!);
    }
    const maxGradNorm = 0.5;
    const clip = Math.min(1, maxGradNorm / (Math.sqrt(sumsq) + 1e-6));
    const opts = { ...trajectoryOptions, maxSteps: 1, learningRate: 1e-3, weightDecay: 0.1, maxGradNorm };
    const t = new Trainer(e, model, m, fixedBatch(), [], opts, new MemoryRunStore());
    await t.run();
    t.dispose();
    let worst = 0;
    for (const p of ps) {
      const want = Float64Array.from(before.get(p.name)!);
      const wd = isDecayParam(p.name) ? opts.weightDecay : 0;
      adamwCpu(want, grads.get(p.name)!, new Float64Array(want.length), new Float64Array(want.length), {
        lr: opts.learningRate,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weightDecay: wd,
        step: 1,
        gradScaleValue: clip,
      });
      const got = await e.read(p.tensor);
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    }
    console.log(`full one step: clip ${clip.toFixed(4)}, max |param − §22 reference| ${worst.toExponential(2)}`);
    // Adam's first step moves each weight by ≈ lr; 1e-5 = 1 % of it (the step is ~sign(g), so
    // f32 gradient differences between the two backward passes hardly matter).
    expect(clip).toBeLessThan(1);
    expect(worst).toBeLessThan(1e-5);
    m.detach();
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by 80 %, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = full.attach({ e, model, config: {}, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.8, { learningRate: 1e-3 });
    console.log(`full trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it("exports an HF model folder (the checkpoint's names and shapes) that loads back to the same logits", async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = full.attach({ e, model, config: { model_name_or_path: 'stories260K' }, random: seededRandom(1) });
    const t = new Trainer(e, model, m, fixedBatch(), [], { ...trajectoryOptions, maxSteps: 3, learningRate: 1e-3 }, new MemoryRunStore());
    await t.run();
    t.dispose();
    const trained = await logits(e, model, ids);
    const files = await m.exportAdapter();
    // Exactly the tensors of the base checkpoint (HF names, shapes), tied head once.
    const original = parseSafetensors(new Uint8Array(readFileSync(path.join(storiesDir(), 'model.safetensors'))), 'stories260K');
    expect([...files.tensors.keys()].sort()).toEqual([...original.tensors.keys()].sort());
    for (const [k, v] of files.tensors) expect(v.shape).toEqual(original.tensors.get(k)!.shape);
    expect(files.config).toMatchObject({
      export_format: 'hf_model',
      weights_file: 'model.safetensors',
      finetuning_type: 'full',
      base_model_name_or_path: 'stories260K',
      tie_word_embeddings: true,
      num_parameters: 260_032,
    });
    // As a folder: model.safetensors + the base config.json loads with the ordinary loader.
    const folder = memorySource({
      'config.json': new Uint8Array(readFileSync(path.join(storiesDir(), 'config.json'))),
      'model.safetensors': serializeSafetensors(files.tensors, { format: 'pt' }),
    });
    const reloaded = (await loadModel(e, folder, { tokenizer: false })).model;
    expect(Array.from(await logits(e, reloaded, ids))).toEqual(Array.from(trained));
    reloaded.dispose();
    // Import into a fresh attachment on the base model.
    const fresh = await loadStories(e);
    const base = await logits(e, fresh, ids);
    const m2 = full.attach({ e, model: fresh, config: {}, random: seededRandom(1) });
    m2.importAdapter(files);
    const imported = await logits(e, fresh, ids);
    expect(Array.from(imported)).toEqual(Array.from(trained));
    expect(Array.from(imported)).not.toEqual(Array.from(base));
    // Shape mismatches and missing weights are named.
    const bad = new Map(files.tensors);
    bad.delete('model.norm.weight');
    expect(() => m2.importAdapter({ config: {}, tensors: bad })).toThrow(/lacks 1 weight.*model\.norm\.weight/);
    bad.set('model.norm.weight', { shape: [32], data: new Float32Array(32) });
    expect(() => m2.importAdapter({ config: {}, tensors: bad })).toThrow(/model\.norm\.weight has shape \[32\].*\[64\]/);
    // merge: nothing to fold; training ends, the weights stay.
    await m2.merge!();
    expect(Array.from(await logits(e, fresh, ids))).toEqual(Array.from(trained));
    fresh.dispose();
    m.detach();
    model.dispose();
  });
});

describe('full FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('full fine-tuning adds nothing to the forward', () => {
    expect(probe(full)).toMatchObject({ total: baseFlops(512), extra: 0 });
  });
});
