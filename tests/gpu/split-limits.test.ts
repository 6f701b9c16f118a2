/**
 * Weights beyond one GPU binding are held in row blocks, which the kernels
 * read only frozen and without a bias. What cannot run on them is refused by
 * name (AdapterLimitError) before a step, and the CLI's
 * PEFT_STUDIO_MAX_BINDING_BYTES runs the split paths from the command line.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { randomWeights, storiesDir, tinyConfig } from '../helpers/models';
import { runCli } from '../helpers/cli';
import type { Engine } from '../../src/engine/engine';
import { AdapterLimitError } from '../../src/errors';
import { validateConfig } from '../../src/config/schema';
import { modelFromWeights } from '../../src/model/load';
import { attachMethod } from '../../src/run/experiment';
import '../../src/methods/registry';

let e: Engine;
beforeAll(async () => {
  e = await gpuEngine();
});

/** Runs f with the engine's binding limit lowered to `bytes`. */
async function limited<T>(bytes: number, f: () => Promise<T> | T): Promise<T> {
  const saved = e.maxBindingBytes;
  e.maxBindingBytes = bytes;
  try {
    return await f();
  } finally {
    e.maxBindingBytes = saved;
  }
}

const base = { model_name_or_path: 'm', dataset: 'd.jsonl', output_dir: 'o' };

describe('split weights: what the kernels cannot do is named before a step', () => {
  // tiny: hidden 16, vocab 37: q_proj 16 × 16 f32 is 1,024 bytes, the embedding 2,368.
  it('a linear with a bias whose weight is split (qwen2 q/k/v biases; a BitFit bias on llama)', async () => {
    const cfg = tinyConfig();
    await limited(1000, async () => {
      expect(() => modelFromWeights(e, cfg, randomWeights(cfg, 3, { qkvBias: true }))).toThrow(AdapterLimitError);
      expect(() => modelFromWeights(e, cfg, randomWeights(cfg, 3, { qkvBias: true }))).toThrow(
        /model\.layers\.0\.self_attn\.q_proj\.weight \(16 × 16\) is larger than this GPU's binding limit \(1,000 bytes\) and is split into row blocks, which cannot be used with a bias \(model\.layers\.0\.self_attn\.q_proj\.bias\)\. .*base_dtype: bfloat16/,
      );
      const model = modelFromWeights(e, cfg, randomWeights(cfg, 3));
      await expect(attachMethod(e, model, validateConfig({ ...base, finetuning_type: 'bitfit' }))).rejects.toThrow(AdapterLimitError);
      model.dispose();
    });
  });

  it('a method that trains a split weight (full fine-tuning of a split embedding); a frozen one trains', async () => {
    const cfg = tinyConfig();
    await limited(2048, async () => {
      const model = modelFromWeights(e, cfg, randomWeights(cfg, 3));
      await expect(attachMethod(e, model, validateConfig({ ...base, finetuning_type: 'full' }))).rejects.toThrow(
        /model\.embed_tokens\.weight \(37 × 16\) is larger than this GPU's binding limit \(2,048 bytes\), so it is held in row blocks, which cannot be trained/,
      );
      const m = await attachMethod(e, model, validateConfig({ ...base, finetuning_type: 'lora', lora_target: 'q_proj' }));
      m.detach();
      model.dispose();
    });
  });
});

describe('PEFT_STUDIO_MAX_BINDING_BYTES', () => {
  const logits = (env: Record<string, string>) =>
    runCli(['logits', '--model', storiesDir(), '--text', 'Once upon a time'], { env: { ...process.env, ...env } });

  it('splits stories260K (embedding in 6 f32 blocks) with the same logits; a bad value is a named error', async () => {
    const [a, b, bad] = await Promise.all([logits({}), logits({ PEFT_STUDIO_MAX_BINDING_BYTES: '24576' }), logits({ PEFT_STUDIO_MAX_BINDING_BYTES: '24k' })]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const la: number[] = JSON.parse(a.stdout).logits_last,
      lb: number[] = JSON.parse(b.stdout).logits_last;
    expect(Math.max(...la.map((v, i) => Math.abs(v - lb[i])))).toBeLessThan(1e-5);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/PEFT_STUDIO_MAX_BINDING_BYTES is '24k'; use a whole number of bytes/);
  });
});
