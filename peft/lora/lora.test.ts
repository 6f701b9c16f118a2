/** LoRA against METHODS.md §4: gradients, parameter counts, B = 0 identity, trajectory. */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, tinyModel } from '../../tests/helpers/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { seededRandom } from '../../src/model/generate';
import { matchTargets } from '../../src/methods/types';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import lora from './method';

/** r·(in + out) per targeted linear. */
function loraCount(
  cfg: { hiddenSize: number; intermediateSize: number; numHeads: number; numKvHeads: number; headDim: number; numLayers: number },
  r: number,
  targets: string[],
) {
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
  return N * targets.reduce((a, t) => a + r * (shapes[t][0] + shapes[t][1]), 0);
}

describe('lora', () => {
  it("is the registry's method for finetuning_type lora", () => {
    expect(builtinMethods.has('lora')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'lora' })).toBe(lora);
  });

  it('gradients of A and B match finite differences (tiny random model)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = lora.attach({ e, model, config: { lora_rank: 4, lora_alpha: 8, lora_target: 'all' }, random: seededRandom(3) });
    // B = 0 makes dA = 0: give B values first so both gradients are exercised.
    for (const p of m.trainable())
      if (p.name.includes('lora_B'))
        e.write(
          p.tensor,
          Float32Array.from({ length: p.tensor.size }, (_, i) => Math.sin(i) * 0.3),
        );
    await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11]);
    m.detach();
    model.dispose();
  });

  it('trainable parameters equal r·(in + out) per target, for stories260K and the SmolLM2-135M shape', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    for (const targets of [
      ['q_proj', 'v_proj'],
      ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    ]) {
      const m = lora.attach({ e, model, config: { lora_rank: 8, lora_target: targets }, random: seededRandom(1) });
      expect(m.trainable().reduce((a, p) => a + p.tensor.size, 0)).toBe(loraCount(model.config, 8, targets));
      m.detach();
    }
    expect(loraCount(smollmConfig(), 8, ['q_proj', 'v_proj'])).toBe(30 * 8 * (576 + 576 + 576 + 192));
    expect(matchTargets(model.linearNames(), 'all').length).toBe(35);
    model.dispose();
  });

  it('with B = 0 the logits are identical to the base model', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const ids = Int32Array.from([1, 403, 407, 261, 378]);
    e.beginScope();
    const base = await e.read(model.forward(ids, 1));
    e.endScope();
    const m = lora.attach({ e, model, config: { lora_rank: 8, lora_target: 'all' }, random: seededRandom(1) });
    e.beginScope();
    const withLora = await e.read(model.forward(ids, 1));
    e.endScope();
    expect(Array.from(withLora)).toEqual(Array.from(base));
    m.detach();
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = lora.attach({ e, model, config: { lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'] }, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.5);
    console.log(`lora trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('generation with the KV cache matches uncached decoding; a fresh process loading the export gives the same logits', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = lora.attach({ e, model, config: { lora_rank: 4, lora_target: ['q_proj', 'v_proj'] }, random: seededRandom(2) });
    for (const p of m.trainable())
      if (p.name.includes('lora_B'))
        e.write(
          p.tensor,
          Float32Array.from({ length: p.tensor.size }, (_, i) => Math.cos(i) * 0.2),
        );
    await checkCachedGeneration(e, model, [1, 403, 407, 261]);
    const r = await checkFreshProcessReload(e, model, m);
    expect(r.files).toContain('adapter_model.safetensors');
    m.detach();
    model.dispose();
  });
});

describe('lora FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('LoRA r = 8: 2·r·(in + out) per token per target', () => {
    // all 7 targets: q 2·8·128 = 2048, k 2·8·96 = 1536, v 1536, o 2048, gate/up/down 2·8·236 = 3776 each → 18 496
    expect(probe(lora, { lora_rank: 8 }).extra).toBe(TOKENS_LAYERS * (2048 + 1536 + 1536 + 2048 + 3 * 3776)); // 47 349 760
    // q, v: 2048 + 1536 = 3584
    expect(probe(lora, { lora_rank: 8, lora_target: 'q_proj,v_proj' }).extra).toBe(TOKENS_LAYERS * 3584); // 9 175 040
    expect(() => probe(lora, { lora_target: 'nothing_proj' })).toThrow(/lora_target \["nothing_proj"\] matches no linear layer/);
  });
});
