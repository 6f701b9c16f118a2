/** PiSSA against METHODS.md §8 and Appendix D: SVD init and residual, gradients, counts, trajectory, both export forms, merge. */
import { describe, it, expect } from 'vitest';
import { probe } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, tinyModel } from '../../tests/helpers/models';
import { checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff } from '../../tests/helpers/check-op';
import { seededRandom } from '../../src/model/generate';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { svdFull } from '../../src/methods/svd';
import lora from '../lora/method';
import pissa, { pissaInit } from './method';

type Shape = { hiddenSize: number; intermediateSize: number; numHeads: number; numKvHeads: number; headDim: number; numLayers: number };
const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Same count as LoRA: r·(in + out) per target. */
function pissaCount(cfg: Shape, r: number, targets: string[]) {
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

async function logits(e: Engine, model: LlamaModel, ids: number[]) {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

async function weights(e: Engine, model: LlamaModel, names: string[]) {
  const out = new Map<string, Float32Array>();
  for (const n of names) out.set(n, await e.read(model.param(`${n}.weight`)));
  return out;
}

describe('pissa', () => {
  it("is the registry's method for finetuning_type lora + pissa_init; reads pissa_iter from init_lora_weights", () => {
    expect(builtinMethods.has('pissa')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'lora', pissa_init: true })).toBe(pissa);
    expect(
      pissa.configFromAdapter!({ peft_type: 'LORA', init_lora_weights: 'pissa_niter_16', r: 8, lora_alpha: 16, target_modules: ['q_proj'] }),
    ).toMatchObject({ finetuning_type: 'lora', pissa_init: true, pissa_iter: 16, lora_rank: 8 });
    expect(pissa.configFromAdapter!({ peft_type: 'LORA', init_lora_weights: 'pissa', r: 4 })).toMatchObject({ pissa_iter: -1 });
    expect(pissa.configFromAdapter!({ peft_type: 'LORA', init_lora_weights: true, r: 4 })).toBeNull();
  });

  it('init math (float64): B = U√(S/s), A = √(S/s)Vᵀ, W_res + s·BA = W, and W_res keeps exactly the tail spectrum', () => {
    const outF = 40,
      inF = 24,
      r = 4,
      s = 2;
    const rand = seededRandom(3);
    const W = Float32Array.from({ length: outF * inF }, () => rand() - 0.5);
    const full = svdFull(W, outF, inF);
    const { A, B, Wres, S } = pissaInit(W, outF, inF, r, s, -1, 0);
    expect(maxAbsDiff(S, full.S.slice(0, r))).toBeLessThan(1e-12);
    // BᵀB = AAᵀ = diag(S_r / s) (orthonormal U, V).
    for (let a = 0; a < r; a++)
      for (let b = 0; b < r; b++) {
        let bb = 0,
          aa = 0;
        for (let o = 0; o < outF; o++) bb += B[o * r + a] * B[o * r + b];
        for (let i = 0; i < inF; i++) aa += A[a * inF + i] * A[b * inF + i];
        const want = a === b ? S[a] / s : 0;
        expect(Math.abs(bb - want)).toBeLessThan(1e-5);
        expect(Math.abs(aa - want)).toBeLessThan(1e-5);
      }
    // W_res + s·BA = W (float32 rounding of W_res only).
    let worst = 0;
    for (let o = 0; o < outF; o++)
      for (let i = 0; i < inF; i++) {
        let ba = 0;
        for (let j = 0; j < r; j++) ba += B[o * r + j] * A[j * inF + i];
        worst = Math.max(worst, Math.abs(Wres[o * inF + i] + s * ba - W[o * inF + i]));
      }
    expect(worst).toBeLessThan(1e-6);
    // σ(W_res) = σ_{r+1..}(W) plus r (near-)zeros: the principal part moved into BA.
    const res = svdFull(Wres, outF, inF);
    expect(maxAbsDiff(res.S.slice(0, inF - r), full.S.slice(r))).toBeLessThan(1e-6);
    for (let j = inF - r; j < inF; j++) expect(res.S[j]).toBeLessThan(1e-6);
    // Randomized (16 iterations): the same decomposition to a close approximation; W_res + s·BA = W holds exactly as well.
    const fast = pissaInit(W, outF, inF, r, s, 16, 7);
    expect(maxAbsDiff(fast.S, S) / S[0]).toBeLessThan(0.05);
  });

  it("init is a no-op on stories260K (exact and pissa_iter 16): logits equal the base model's; A, B carry the top-r triplets", async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const ids = [1, 403, 407, 261, 378, 432];
    const base = await logits(e, model, ids);
    const names = model.linearNames();
    const W0 = await weights(e, model, names);
    for (const iters of [-1, 16]) {
      const m = pissa.attach({
        e,
        model,
        config: { lora_rank: 8, lora_alpha: 16, lora_target: 'all', pissa_init: true, pissa_iter: iters },
        random: seededRandom(1),
      });
      await m.ready;
      const secs = [...m.svdSeconds.values()].reduce((a, b) => a + b, 0);
      console.log(`pissa init (pissa_iter ${iters}) on stories260K, 35 targets: CPU SVD ${(secs * 1000).toFixed(0)} ms`);
      expect(maxAbsDiff(await logits(e, model, ids), base)).toBeLessThan(1e-4);
      // One layer in detail: down_proj [64, 172], s = 2.
      const name = 'model.layers.3.mlp.down_proj';
      const tensors = new Map(m.trainable().map((p) => [p.name, p.tensor]));
      const A = await e.read(tensors.get(`base_model.model.${name}.lora_A.weight`)!);
      const B = await e.read(tensors.get(`base_model.model.${name}.lora_B.weight`)!);
      const Wres = await e.read(model.param(`${name}.weight`));
      const W = W0.get(name)!;
      let worst = 0;
      for (let o = 0; o < 64; o++)
        for (let i = 0; i < 172; i++) {
          let ba = 0;
          for (let j = 0; j < 8; j++) ba += B[o * 8 + j] * A[j * 172 + i];
          worst = Math.max(worst, Math.abs(Wres[o * 172 + i] + 2 * ba - W[o * 172 + i]));
        }
      expect(worst).toBeLessThan(1e-6);
      const S = svdFull(W, 64, 172).S;
      for (let j = 0; j < 8; j++) {
        let aa = 0;
        for (let i = 0; i < 172; i++) aa += A[j * 172 + i] ** 2;
        // ‖A_j‖² = σ_j / s (exact SVD: to rounding; 16 iterations: to the randomized accuracy).
        expect(Math.abs(aa - S[j] / 2) / (S[j] / 2)).toBeLessThan(iters === -1 ? 1e-5 : 0.05);
      }
      m.detach();
      // Detach puts the original weights back.
      const back = await weights(e, model, names);
      for (const n of names) expect(maxAbsDiff(back.get(n)!, W0.get(n)!), n).toBeLessThan(1e-6);
    }
    model.dispose();
  });

  it('training before the SVD finished fails loudly', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = pissa.attach({ e, model, config: { lora_rank: 2, lora_target: 'all', pissa_init: true }, random: seededRandom(1) });
    const { Tape } = await import('../../src/engine/tape');
    e.tape = new Tape();
    e.beginScope();
    try {
      expect(() => model.forward(Int32Array.from([1, 2, 3]), 1)).toThrow(/await .*ready/);
    } finally {
      e.endScope();
      e.tape = null;
    }
    await m.ready;
    m.detach();
    model.dispose();
  });

  it('gradients of A and B match finite differences (tiny random model)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = pissa.attach({
      e,
      model,
      config: { lora_rank: 4, lora_alpha: 8, lora_target: ['q_proj', 'k_proj', 'down_proj'], pissa_init: true, pissa_iter: -1 },
      random: seededRandom(3),
    });
    await m.ready;
    // Both A and B are non-zero after the SVD init, so both gradients are exercised from step 0.
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 5 });
    console.log(report.join('\n'));
    m.detach();
    model.dispose();
  });

  it("trainable parameters equal r·(in + out) per target (LoRA's), for stories260K and the SmolLM2-135M shape", async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    for (const [targets, want] of [
      [['q_proj', 'v_proj'], 8960],
      [ALL, 46240],
    ] as const) {
      const m = pissa.attach({ e, model, config: { lora_rank: 8, lora_target: [...targets], pissa_init: true }, random: seededRandom(1) });
      const count = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
      expect(count).toBe(pissaCount(model.config, 8, [...targets]));
      expect(count).toBe(want);
      await m.ready;
      m.detach();
    }
    expect(pissaCount(smollmConfig(), 8, ['q_proj', 'v_proj'])).toBe(30 * 8 * (576 + 576 + 576 + 192));
    expect(pissaCount(smollmConfig(), 8, ['q_proj', 'v_proj'])).toBe(460_800);
    expect(pissaCount(smollmConfig(), 8, ALL)).toBe(2_442_240);
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = pissa.attach({
      e,
      model,
      config: { lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'], pissa_init: true, pissa_iter: 16 },
      random: seededRandom(1),
    });
    await m.ready;
    const r = await checkTrajectory(e, model, m, 0.5);
    console.log(`pissa trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('export: native form (§8.1) reloads through a re-run SVD; converted rank-2r form (§8.2) reloads as plain LoRA on the original base; merge matches', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const ids = [1, 338, 401, 396, 267, 337, 410];
    const base = await logits(e, model, ids);
    const names = model.linearNames();
    const W0 = await weights(e, model, names);
    const config = {
      lora_rank: 8,
      lora_alpha: 16,
      lora_target: ['q_proj', 'v_proj', 'down_proj'],
      pissa_init: true,
      pissa_iter: 16,
      pissa_convert: true,
      model_name_or_path: 'stories260K',
    };
    const m = pissa.attach({ e, model, config, random: seededRandom(1) });
    await m.ready;
    // "Train": move A and B away from their initial values.
    const rand = seededRandom(5);
    for (const p of m.trainable()) {
      const v = await e.read(p.tensor);
      e.write(
        p.tensor,
        v.map((x) => x + 0.05 * (rand() - 0.5)),
      );
    }
    const trained = await logits(e, model, ids);
    expect(maxAbsDiff(trained, base)).toBeGreaterThan(1e-3);

    const native = await m.exportAdapter();
    const want = new Map<string, number[]>();
    for (let l = 0; l < 5; l++) {
      for (const [mod, out, inF] of [
        ['self_attn.q_proj', 64, 64],
        ['self_attn.v_proj', 32, 64],
        ['mlp.down_proj', 64, 172],
      ] as const) {
        want.set(`base_model.model.model.layers.${l}.${mod}.lora_A.weight`, [8, inF]);
        want.set(`base_model.model.model.layers.${l}.${mod}.lora_B.weight`, [out, 8]);
      }
    }
    expect([...native.tensors.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [k, shape] of want) expect(native.tensors.get(k)!.shape, k).toEqual(shape);
    expect(native.config).toMatchObject({
      peft_type: 'LORA',
      init_lora_weights: 'pissa_niter_16',
      r: 8,
      lora_alpha: 16,
      use_dora: false,
      target_modules: ['down_proj', 'q_proj', 'v_proj'],
    });

    const converted = await m.exportConverted();
    expect(converted.config).toMatchObject({ peft_type: 'LORA', init_lora_weights: true, r: 16, lora_alpha: 32 });
    for (const [k, shape] of want) {
      const doubled = k.endsWith('lora_A.weight') ? [16, shape[1]] : [shape[0], 16];
      expect(converted.tensors.get(k)!.shape, k).toEqual(doubled);
    }
    const extra = await m.extraAdapters();
    expect([...extra.keys()].sort()).toEqual(['pissa_converted', 'pissa_init']);
    expect(extra.get('pissa_init')!.config.init_lora_weights).toBe(true);

    // Detach restores W; the converted adapter is a plain LoRA on that original base.
    m.detach();
    expect(maxAbsDiff(await logits(e, model, ids), base)).toBeLessThan(1e-5);
    const asLora = lora.attach({ e, model, config: lora.configFromAdapter!(converted.config)!, random: seededRandom(2) });
    asLora.importAdapter(converted);
    expect(maxAbsDiff(await logits(e, model, ids), trained)).toBeLessThan(1e-4);
    asLora.detach();

    // Native: a fresh attachment re-runs the SVD on the original base (same per-layer sketch), then loads A, B.
    const cfg = pissa.configFromAdapter!(native.config)!;
    expect(cfg).toMatchObject({ pissa_init: true, pissa_iter: 16 });
    const m2 = pissa.attach({ e, model, config: cfg, random: seededRandom(77) });
    m2.importAdapter(native); // issued before the SVD finished: applied after it
    await m2.ready;
    expect(maxAbsDiff(await logits(e, model, ids), trained)).toBeLessThan(1e-5);
    // Merge: W ← W_res + s·BA; the plain model gives the trained logits.
    await m2.merge!();
    expect(maxAbsDiff(await logits(e, model, ids), trained)).toBeLessThan(1e-4);
    // The merged weights are W + s·(BA − B₀A₀) for the targets, untouched elsewhere.
    const after = await weights(e, model, ['model.layers.0.self_attn.k_proj']);
    expect(maxAbsDiff(after.get('model.layers.0.self_attn.k_proj')!, W0.get('model.layers.0.self_attn.k_proj')!)).toBe(0);
    model.dispose();
  });
});

describe('pissa FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('PiSSA: the LoRA count, 2·r·(in + out) per token per target', () => {
    expect(probe(pissa, { lora_rank: 8, lora_target: 'q_proj,v_proj' }).extra).toBe(9_175_040);
  });
});
