/**
 * my-method's tests: the kernel against its float64 reference and finite
 * differences, gradients of s through the whole model, s = 0 is the base
 * model, the parameter count, a short trajectory, export/import and merge.
 * Test helpers come through `peft-studio/testing/...` (tests/helpers).
 */
import { describe, it, expect } from 'vitest';
import { checkOp, maxAbsDiff, randn, rng } from 'peft-studio/testing/check-op';
import { gpuEngine } from 'peft-studio/testing/gpu';
import { checkMethodGradients, checkTrajectory } from 'peft-studio/testing/method-check';
import { loadStories, tinyModel } from 'peft-studio/testing/models';
import type { Engine } from 'peft-studio/engine/engine';
import { ConfigError } from 'peft-studio/errors';
import { seededRandom } from 'peft-studio/model/generate';
import type { LlamaModel } from 'peft-studio/model/llama';
import type { AttachedMethod } from 'peft-studio/methods/types';
import { channelScale, channelScaleCpu } from './kernel';
import myMethod from './method';

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

function randomize(e: Engine, m: AttachedMethod, scale: number, seed = 3) {
  const r = rng(seed);
  for (const p of m.trainable()) e.write(p.tensor, randn(p.tensor.size, r, scale));
}

const IDS = [1, 403, 407, 261, 378, 432, 383];

describe('my-method (template)', () => {
  it('kernel: forward against the float64 reference, gradients of x and s against finite differences (odd sizes)', async () => {
    const e = await gpuEngine();
    const r = rng(11);
    const { fwdErr, gradErr } = await checkOp(e, {
      name: 'channel_scale',
      inputs: [
        { name: 'x', shape: [3, 5, 7], data: randn(105, r), grad: true },
        { name: 's', shape: [7], data: randn(7, r, 0.5), grad: true },
      ],
      gpu: (e, [x, s]) => channelScale(e, x, s),
      cpu: ([x, s]) => channelScaleCpu(x, s),
    });
    expect(fwdErr).toBeLessThan(1e-5);
    expect(gradErr).toBeLessThan(1e-2);
  });

  it('gradients of every scale match finite differences (tiny random model, all linears)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = myMethod.attach({ e, model, config: { my_method_target: 'all' }, random: seededRandom(1) });
    randomize(e, m, 0.3);
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 4 });
    expect(report.length).toBe(14);
    m.detach();
    model.dispose();
  });

  it('s = 0 gives the base model exactly; trainable parameters = Σ out over targets', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const m = myMethod.attach({ e, model, config: {}, random: seededRandom(1) });
    expect(Array.from(await logits(e, model, IDS))).toEqual(Array.from(base));
    // stories260K: q_proj out 64, v_proj out 4 kv heads × 8 = 32; 5 layers.
    expect(m.trainable().reduce((a, p) => a + p.tensor.size, 0)).toBe(5 * (64 + 32));
    m.detach();
    expect(() => myMethod.attach({ e, model, config: { my_method_target: ['nope'] }, random: seededRandom(1) })).toThrow(ConfigError);
    model.dispose();
  });

  it('trajectory: loss falls, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = myMethod.attach({ e, model, config: {}, random: seededRandom(1) });
    const t = await checkTrajectory(e, model, m, 0.05, { maxSteps: 12, learningRate: 5e-2 });
    console.log(`my-method trajectory: ${t.first.toFixed(4)} → ${t.last.toFixed(4)}`);
    m.detach();
    model.dispose();
  });

  it('export → import reproduces the logits; merge matches within 1e-4', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = myMethod.attach({ e, model, config: { my_method_target: 'all' }, random: seededRandom(1) });
    randomize(e, m, 0.2, 5);
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    expect(files.config).toMatchObject({
      peft_type: 'MY_METHOD',
      target_modules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'],
    });
    expect(files.tensors.get('base_model.model.model.layers.0.mlp.gate_proj.my_method_scale')!.shape).toEqual([172]);
    m.detach();
    const config = myMethod.configFromAdapter!(files.config)!;
    const m2 = myMethod.attach({ e, model, config, random: seededRandom(9) });
    m2.importAdapter(files);
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBe(0);
    await m2.merge!();
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBeLessThan(1e-4);
    model.dispose();
  });
});
