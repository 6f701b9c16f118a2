/**
 * Every built-in method on a packed base: attached to a qwen2-style model
 * whose base weights are held as BF16 (two per u32) and to the f32 model of
 * the same rounded weights, it gives the same loss and the same gradients of
 * its trainable tensors; where it merges, the merged models give the same
 * logits. Methods that need f32 base weights (SVD inits, DoRA norms, merges,
 * full fine-tuning) get them through model.param, which unpacks on demand.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LocalFolderSource } from '../../src/hub/node';
import { parseSafetensorsHeader } from '../../src/model/safetensors';
import { mergedModelFiles, trainedFiles } from '../../src/run/finish';
import { gpuEngine } from '../helpers/gpu';
import { maxAbsDiff } from '../helpers/check-op';
import { randomWeights } from '../helpers/models';
import type { Engine } from '../../src/engine/engine';
import { Tape } from '../../src/engine/tape';
import { crossEntropy } from '../../src/engine/ops/cross_entropy';
import { roundedF32 } from '../../src/engine/ops/packed';
import { parseModelConfig } from '../../src/model/config';
import { modelFromWeights } from '../../src/model/load';
import type { LlamaModel } from '../../src/model/llama';
import { seededRandom } from '../../src/model/generate';
import { builtinMethods, methodNameFor, resolveMethod } from '../../src/methods/registry';

/** One small configuration per built-in method (tests may name methods; src/ may not). */
const CONFIGS: Record<string, Record<string, unknown>> = {
  lora: { finetuning_type: 'lora', lora_rank: 4, lora_alpha: 8, lora_target: ['q_proj', 'v_proj', 'down_proj'] },
  dora: { finetuning_type: 'lora', lora_rank: 4, lora_alpha: 8, lora_target: ['q_proj', 'v_proj'], use_dora: true },
  pissa: { finetuning_type: 'lora', lora_rank: 4, lora_alpha: 8, lora_target: ['q_proj', 'v_proj'], pissa_init: true, pissa_iter: -1 },
  qlora: { finetuning_type: 'lora', lora_rank: 4, lora_alpha: 8, lora_target: ['q_proj', 'v_proj'], quantization_bit: 4 },
  oft: { finetuning_type: 'oft', oft_rank: 0, oft_block_size: 8, oft_target: ['q_proj', 'v_proj'] },
  svft: { finetuning_type: 'svft', target_modules: ['q_proj', 'v_proj'], rank: 4, off_diag: 1, pattern: 'banded' },
  vera: { finetuning_type: 'vera', vera_rank: 8, vera_target: ['q_proj', 'v_proj'] },
  full: { finetuning_type: 'full' },
  galore: { finetuning_type: 'full', use_galore: true, galore_rank: 4, galore_target: 'all' },
  ia3: { finetuning_type: 'ia3' },
  bitfit: { finetuning_type: 'bitfit' },
  lntuning: { finetuning_type: 'lntuning' },
  'prompt-tuning': { finetuning_type: 'prompt-tuning', num_virtual_tokens: 3 },
  'prefix-tuning': { finetuning_type: 'prefix-tuning', num_virtual_tokens: 3, prefix_projection: true },
  'p-tuning': { finetuning_type: 'p-tuning', num_virtual_tokens: 3 },
  'p-tuning-v2': { finetuning_type: 'p-tuning-v2', num_virtual_tokens: 3 },
  mtp: { finetuning_type: 'mtp', num_virtual_tokens: 3 },
  'bn-adapter': { finetuning_type: 'bn-adapter' },
  'seq-bn-adapter': { finetuning_type: 'seq-bn-adapter' },
  'par-adapter': { finetuning_type: 'par-adapter' },
};

const json = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: 48,
  intermediate_size: 72,
  num_hidden_layers: 2,
  num_attention_heads: 6,
  num_key_value_heads: 2,
  vocab_size: 97,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  tie_word_embeddings: false,
  max_position_embeddings: 128,
};
const cfg = parseModelConfig(json, 'qwen2-tiny');
const host = randomWeights(cfg, 5, { qkvBias: true, untied: true });
const rounded = new Map([...host].map(([k, v]) => [k, { shape: v.shape, data: v.shape.length === 2 ? roundedF32(v.data, 'bf16') : v.data }]));
const ids = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3];
const labels = Int32Array.from(ids.slice(1).concat([-100]));

let e: Engine;
beforeAll(async () => {
  e = await gpuEngine();
});

async function run(model: LlamaModel, config: Record<string, unknown>) {
  const m = resolveMethod(config).attach({ e, model, config: { seed: 1, ...config }, random: seededRandom(1) });
  await m.ready;
  e.beginScope();
  const tape = new Tape();
  e.tape = tape;
  const loss = crossEntropy(e, model.forward(Int32Array.from(ids), 1).reshape([ids.length, cfg.vocabSize]), labels);
  e.tape = null;
  tape.backward(loss);
  const value = (await e.read(loss))[0];
  e.endScope();
  const grads: Float32Array[] = [];
  for (const p of m.trainable()) grads.push(p.tensor.grad ? await e.read(p.tensor.grad) : new Float32Array(p.tensor.size));
  let merged: Float32Array | null = null;
  if (m.merge) {
    await m.merge();
    e.beginScope();
    merged = await e.read(model.forward(Int32Array.from(ids), 1));
    e.endScope();
  }
  return { value, grads, merged, m };
}

describe('every method on a BF16 base equals the f32 path of the same rounded weights', () => {
  it('covers every built-in method', () => {
    expect([...builtinMethods.keys()].filter((k) => !(k in CONFIGS))).toEqual([]);
  });
  for (const [name, config] of Object.entries(CONFIGS)) {
    it(name, async () => {
      if (!builtinMethods.has(methodNameFor(config))) return; // a method moved or renamed: the coverage test above names it
      const packed = modelFromWeights(e, cfg, host, { baseDtype: 'bfloat16' });
      const ref = modelFromWeights(e, cfg, rounded);
      expect(packed.weightDtype()).toBe('bf16');
      const a = await run(packed, config),
        b = await run(ref, config);
      expect(Math.abs(a.value - b.value), 'loss').toBeLessThan(1e-4);
      expect(a.grads.length).toBe(b.grads.length);
      a.grads.forEach((g, i) => {
        const scale = Math.max(1, ...Array.from(b.grads[i], Math.abs));
        expect(maxAbsDiff(g, b.grads[i]) / scale, `gradient ${i}`).toBeLessThan(1e-4);
      });
      if (b.merged) expect(maxAbsDiff(a.merged!, b.merged), 'merged logits').toBeLessThan(1e-4);
      if (!a.merged) a.m.detach();
      if (!b.merged) b.m.detach();
      packed.dispose();
      ref.dispose();
    });
  }
});

describe('exports keep the dtype the base was held in, and config.json says it', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'ps-merged-dtype-'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...json, torch_dtype: 'bfloat16' }));
  const base = new LocalFolderSource(dir);
  const headerOf = (bytes: Uint8Array) => parseSafetensorsHeader(bytes, 'model.safetensors');
  const dtypes = (files: Record<string, Uint8Array | string>) =>
    new Set([...headerOf(files['model.safetensors'] as Uint8Array).tensors.values()].map((t) => t.dtype));
  const torchDtype = (files: Record<string, Uint8Array | string>) => JSON.parse(new TextDecoder().decode(files['config.json'] as Uint8Array)).torch_dtype;

  it('a DoRA merge (it unpacks weights at attach) on a BF16 base is a BF16 model; on an f32 base F32, with torch_dtype float32', async () => {
    for (const [baseDtype, want, torch] of [
      ['bfloat16', 'BF16', 'bfloat16'],
      ['float32', 'F32', 'float32'],
    ] as const) {
      const model = modelFromWeights(e, cfg, host, { baseDtype });
      const m = resolveMethod(CONFIGS.dora).attach({ e, model, config: { seed: 1, ...CONFIGS.dora }, random: seededRandom(1) });
      await m.ready;
      const files = await mergedModelFiles(model, m, base);
      expect([...dtypes(files)], baseDtype).toEqual([want]);
      expect(torchDtype(files), baseDtype).toBe(torch);
      model.dispose();
    }
  });

  it('full fine-tuning on a BF16 base writes its f32 weights as F32 with torch_dtype float32', async () => {
    const model = modelFromWeights(e, cfg, host, { baseDtype: 'bfloat16' });
    const m = resolveMethod(CONFIGS.full).attach({ e, model, config: { seed: 1, ...CONFIGS.full }, random: seededRandom(1) });
    await m.ready;
    const files = await trainedFiles(m, base);
    expect([...dtypes(files)]).toEqual(['F32']);
    expect(torchDtype(files)).toBe('float32');
    m.detach();
    model.dispose();
  });
});
