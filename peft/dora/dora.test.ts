/** DoRA against METHODS.md §6 and Appendix D: math of one layer, gradients, counts, no-op init, trajectory, export/import/merge. */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, tinyModel } from '../../tests/helpers/models';
import { checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import { seededRandom } from '../../src/model/generate';
import { Tape } from '../../src/engine/tape';
import type { Engine } from '../../src/engine/engine';
import type { Tensor } from '../../src/engine/tensor';
import type { LlamaModel, ModelHooks } from '../../src/model/llama';
import { dropoutMaskCpu, streamSeed } from '../../src/engine/ops/dropout';
import { matmul } from '../../src/engine/ops/matmul';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import dora from './method';

type Shape = { hiddenSize: number; intermediateSize: number; numHeads: number; numKvHeads: number; headDim: number; numLayers: number };

/** r·(in + out) + out per targeted linear (LoRA plus the magnitude vector). */
function doraCount(cfg: Shape, r: number, targets: string[]) {
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
  return N * targets.reduce((a, t) => a + r * (shapes[t][0] + shapes[t][1]) + shapes[t][0], 0);
}

const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Give B (and m) non-trivial values so every gradient and g ≠ 1 are exercised. */
async function perturb(e: Engine, m: { trainable(): { name: string; tensor: Tensor }[] }, seed = 1) {
  const r = rng(seed);
  for (const p of m.trainable()) {
    if (p.name.includes('lora_B')) e.write(p.tensor, randn(p.tensor.size, r, 0.3));
    if (p.name.includes('magnitude')) {
      const v = await e.read(p.tensor);
      e.write(
        p.tensor,
        v.map((x) => x * (0.8 + 0.4 * r())),
      );
    }
  }
}

async function logits(e: Engine, model: LlamaModel, ids: number[]) {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

/**
 * A one-linear stand-in for the model: W [O, I] (+ bias), so the hook's
 * output can be compared with the §6 formula in float64.
 */
function oneLinear(e: Engine, O: number, I: number, seed: number, withBias: boolean) {
  const r = rng(seed);
  const W = randn(O * I, r, 0.4);
  const b = randn(O, r, 0.5);
  const params = new Map<string, Tensor>([['lin.weight', e.persist(e.upload(W, [O, I], 'lin.weight'))]]);
  if (withBias) params.set('lin.bias', e.persist(e.upload(b, [O], 'lin.bias')));
  let hooks: ModelHooks = {};
  const model = {
    params,
    param: (n: string) => params.get(n)!,
    linearNames: () => ['lin'],
    attach: (h: ModelHooks) => {
      hooks = h;
      return () => (hooks = {});
    },
  } as unknown as LlamaModel;
  // inner: y = x Wᵀ + b, through the same matmul op the model uses.
  const inner = (xx: Tensor) => matmul(e, xx, params.get('lin.weight')!, { transB: true, bias: params.get('lin.bias') ?? null });
  const run = (x: Tensor) => hooks.linear!('lin', x, inner, { e, model, B: 1, T: x.size / I, past: 0 });
  return { model, W, b, run, dispose: () => params.forEach((t) => t.dispose()) };
}

/** §6 in float64: case B with mask scale d (all ones = case A with x_d = x). */
function doraRef(
  x: Float64Array,
  W: ArrayLike<number>,
  b: ArrayLike<number> | null,
  A: ArrayLike<number>,
  B: ArrayLike<number>,
  m: ArrayLike<number>,
  s: number,
  M: number,
  O: number,
  I: number,
  R: number,
  mask: ArrayLike<number> | null,
) {
  const WBA = new Float64Array(O * I);
  const n = new Float64Array(O);
  for (let o = 0; o < O; o++) {
    let acc = 0;
    for (let i = 0; i < I; i++) {
      let ba = 0;
      for (let j = 0; j < R; j++) ba += B[o * R + j] * A[j * I + i];
      WBA[o * I + i] = W[o * I + i] + s * ba;
      acc += WBA[o * I + i] ** 2;
    }
    n[o] = Math.sqrt(acc);
  }
  const y = new Float64Array(M * O);
  for (let t = 0; t < M; t++) {
    for (let o = 0; o < O; o++) {
      const g = m[o] / n[o];
      let xw = 0,
        xdw = 0,
        xdwba = 0;
      for (let i = 0; i < I; i++) {
        const xi = x[t * I + i];
        const xd = mask ? xi * mask[t * I + i] : xi;
        xw += xi * W[o * I + i];
        xdw += xd * W[o * I + i];
        xdwba += xd * (WBA[o * I + i] - W[o * I + i]);
      }
      // y = x Wᵀ + b + (g − 1)(x_d Wᵀ) + g·s·(x_d Aᵀ Bᵀ)
      y[t * O + o] = xw + (b ? b[o] : 0) + (g - 1) * xdw + g * xdwba;
    }
  }
  return y;
}

describe('dora', () => {
  it("is the registry's method for finetuning_type lora + use_dora, and loads use_dora adapters", () => {
    expect(builtinMethods.has('dora')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'lora', use_dora: true })).toBe(dora);
    expect(methodForAdapter({ peft_type: 'LORA', use_dora: true, r: 8, lora_alpha: 16, target_modules: ['q_proj'] }).method).toBe(dora);
  });

  it('one linear: forward equals §6 in float64 (case A with bias, case B with dropout), gradients vs finite differences with n constant', async () => {
    const e = await gpuEngine();
    const O = 12,
      I = 10,
      R = 3,
      M = 5,
      s = 2.5;
    for (const [withBias, p] of [
      [true, 0],
      [false, 0.3],
    ] as const) {
      const lin = oneLinear(e, O, I, withBias ? 3 : 4, withBias);
      const m = dora.attach({
        e,
        model: lin.model,
        config: { lora_rank: R, lora_alpha: R * s, lora_target: ['lin'], lora_dropout: p, seed: 42 },
        random: seededRandom(5),
      });
      await perturb(e, m, 7);
      const [A, B, mag] = m.trainable();
      const Av = await e.read(A.tensor),
        Bv = await e.read(B.tensor),
        mv = await e.read(mag.tensor);
      const x = randn(M * I, rng(11));
      // Training forward (tape on): case B when p > 0. The mask's seed is a function of (seed 42, micro-batch 3, call site).
      e.beginScope();
      const xt = e.upload(x, [M, I]);
      xt.requiresGrad = true;
      const tape = new Tape({ seed: 42, microBatch: 3 });
      e.tape = tape;
      const y = lin.run(xt);
      e.tape = null;
      const got = await e.read(y);
      const mask = p > 0 ? dropoutMaskCpu(M * I, p, streamSeed(42, 3, 'lin.lora_dropout', 0)) : null;
      const f = (xv: Float64Array, a: ArrayLike<number>, bb: ArrayLike<number>, mm: ArrayLike<number>, nFixed?: Float64Array) =>
        doraRefFixed(xv, lin.W, withBias ? lin.b : null, a, bb, mm, s, M, O, I, R, mask, nFixed);
      const x64 = Float64Array.from(x);
      const want = f(x64, Av, Bv, mv);
      expect(maxAbsDiff(got, want), `forward p=${p}`).toBeLessThan(1e-5);
      expect(maxAbsDiff(want, doraRef(x64, lin.W, withBias ? lin.b : null, Av, Bv, mv, s, M, O, I, R, mask))).toBeLessThan(1e-12);
      // Backward of L = Σ y·G; finite differences of the float64 formula with n held constant (Appendix D).
      const G = randn(M * O, rng(12));
      tape.backward(y, G);
      const nConst = normsOf(lin.W, Av, Bv, s, O, I, R);
      const loss = (xv: Float64Array, a: ArrayLike<number>, bb: ArrayLike<number>, mm: ArrayLike<number>) => {
        const yy = f(xv, a, bb, mm, nConst);
        let acc = 0;
        for (let i = 0; i < yy.length; i++) acc += yy[i] * G[i];
        return acc;
      };
      const base = [x64, Float64Array.from(Av), Float64Array.from(Bv), Float64Array.from(mv)];
      const grads = [xt.grad!, A.tensor.grad!, B.tensor.grad!, mag.tensor.grad!];
      for (let k = 0; k < 4; k++) {
        const g = await e.read(grads[k]);
        const h = 1e-5;
        let worst = 0,
          gmax = 0;
        for (const v of g) gmax = Math.max(gmax, Math.abs(v));
        for (let i = 0; i < g.length; i++) {
          const plus = base.map((a) => a.slice()),
            minus = base.map((a) => a.slice());
          plus[k][i] += h;
          minus[k][i] -= h;
          const fd = (loss(plus[0], plus[1], plus[2], plus[3]) - loss(minus[0], minus[1], minus[2], minus[3])) / (2 * h);
          worst = Math.max(worst, Math.abs(fd - g[i]));
        }
        expect(worst / Math.max(1, gmax), `grad ${['x', 'A', 'B', 'm'][k]} p=${p}`).toBeLessThan(1e-4);
        if (k === 2) {
          // Had the norm been differentiated, dB would differ: the detachment is real, not a no-op.
          const lossLive = (bb: Float64Array) => f(x64, Av, bb, mv).reduce((a, v, i) => a + v * G[i], 0);
          let dev = 0;
          for (let i = 0; i < g.length; i++) {
            const plus = base[2].slice(),
              minus = base[2].slice();
            plus[i] += h;
            minus[i] -= h;
            dev = Math.max(dev, Math.abs((lossLive(plus) - lossLive(minus)) / (2 * h) - g[i]));
          }
          expect(dev / Math.max(1, gmax)).toBeGreaterThan(1e-3);
        }
      }
      for (const t of m.trainable()) t.tensor.grad = null;
      e.endScope();
      // Eval forward (no tape) is case A even with p > 0.
      e.beginScope();
      const ev = await e.read(lin.run(e.upload(x, [M, I])));
      expect(maxAbsDiff(ev, doraRefFixed(x64, lin.W, withBias ? lin.b : null, Av, Bv, mv, s, M, O, I, R, null))).toBeLessThan(1e-5);
      e.endScope();
      m.detach();
      lin.dispose();
    }
  });

  it('gradients of A, B and m match finite differences on a tiny model (norm held constant)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    // k (GQA: out < in) and down (in = d_ff > out), 2 layers; the op test covers more shapes.
    const m = dora.attach({ e, model, config: { lora_rank: 4, lora_alpha: 8, lora_target: ['k_proj', 'down_proj'] }, random: seededRandom(3) });
    await perturb(e, m);
    // Appendix D: n is detached, so the finite-difference reference must hold it constant too.
    m.freezeNorm(true);
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 5 });
    console.log(report.join('\n'));
    expect(report.length).toBe(3 * 4);
    m.freezeNorm(false);
    m.detach();
    model.dispose();
  });

  it('trainable parameters equal r·(in + out) + out per target, for stories260K and the SmolLM2-135M shape', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    for (const [targets, want] of [
      [['q_proj', 'v_proj'], 8960 + 480],
      [ALL, 46240 + 3000],
    ] as const) {
      const m = dora.attach({ e, model, config: { lora_rank: 8, lora_target: [...targets] }, random: seededRandom(1) });
      const count = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
      expect(count).toBe(doraCount(model.config, 8, [...targets]));
      expect(count).toBe(want);
      m.detach();
    }
    // SmolLM2-135M: d 576, d_ff 1536, 9 heads × 64, 3 KV heads, 30 layers.
    expect(doraCount(smollmConfig(), 8, ['q_proj', 'v_proj'])).toBe(30 * (8 * (576 + 576) + 576 + 8 * (576 + 192) + 192));
    expect(doraCount(smollmConfig(), 8, ['q_proj', 'v_proj'])).toBe(483_840);
    expect(doraCount(smollmConfig(), 8, ALL)).toBe(2_597_760);
    model.dispose();
  });

  it("init is a no-op: m = ‖W_o‖ per output row and the logits equal the base model's", async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const ids = [1, 403, 407, 261, 378];
    const base = await logits(e, model, ids);
    const m = dora.attach({ e, model, config: { lora_rank: 8, lora_target: 'all', lora_dropout: 0.1 }, random: seededRandom(1) });
    const mag = m.trainable().find((p) => p.name === 'base_model.model.model.layers.2.mlp.down_proj.lora_magnitude_vector')!;
    const W = await e.read(model.param('model.layers.2.mlp.down_proj.weight'));
    const want = Array.from({ length: 64 }, (_, o) => Math.hypot(...W.subarray(o * 172, (o + 1) * 172)));
    expect(maxAbsDiff(await e.read(mag.tensor), want)).toBeLessThan(1e-5);
    expect(maxAbsDiff(await logits(e, model, ids), base)).toBeLessThan(1e-5);
    m.detach();
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = dora.attach({ e, model, config: { lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'] }, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.5);
    console.log(`dora trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('export has the §6 names, shapes and config; import reproduces the logits; merge matches within 1e-4', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const ids = [1, 338, 401, 396, 267, 337, 410];
    const config = { lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj', 'down_proj'], model_name_or_path: 'stories260K' };
    const m = dora.attach({ e, model, config, random: seededRandom(1) });
    await perturb(e, m, 3);
    const trained = await logits(e, model, ids);
    const files = await m.exportAdapter();
    // Names and shapes (stories260K: q 64×64, v 32×64, down 64×172).
    const want = new Map<string, number[]>();
    for (let l = 0; l < 5; l++) {
      for (const [mod, out, inF] of [
        ['self_attn.q_proj', 64, 64],
        ['self_attn.v_proj', 32, 64],
        ['mlp.down_proj', 64, 172],
      ] as const) {
        const p = `base_model.model.model.layers.${l}.${mod}`;
        want.set(`${p}.lora_A.weight`, [8, inF]);
        want.set(`${p}.lora_B.weight`, [out, 8]);
        want.set(`${p}.lora_magnitude_vector`, [out]);
      }
    }
    expect([...files.tensors.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [k, shape] of want) expect(files.tensors.get(k)!.shape, k).toEqual(shape);
    const c = files.config;
    expect(c.peft_type).toBe('LORA');
    expect(c.use_dora).toBe(true);
    expect(c.r).toBe(8);
    expect(c.lora_alpha).toBe(16);
    expect(c.target_modules).toEqual(['down_proj', 'q_proj', 'v_proj']);
    expect(c.init_lora_weights).toBe(true);
    expect(c.base_model_name_or_path).toBe('stories260K');
    for (const k of [
      'alpha_pattern',
      'bias',
      'fan_in_fan_out',
      'inference_mode',
      'lora_dropout',
      'rank_pattern',
      'task_type',
      'use_rslora',
      'use_qalora',
      'lora_bias',
      'peft_version',
    ]) {
      expect(c, k).toHaveProperty(k);
    }
    m.detach();
    // Base logits are back after detach; a fresh attachment loaded from the files reproduces the trained logits.
    const loadedCfg = methodForAdapter(files.config);
    expect(loadedCfg.method).toBe(dora);
    const m2 = dora.attach({ e, model, config: loadedCfg.config, random: seededRandom(99) });
    m2.importAdapter(files);
    expect(maxAbsDiff(await logits(e, model, ids), trained)).toBeLessThan(1e-6);
    // Merge: W ← (m/‖W + sBA‖) ⊙ (W + sBA); the plain model then gives the same logits.
    await m2.merge!();
    expect(maxAbsDiff(await logits(e, model, ids), trained)).toBeLessThan(1e-4);
    model.dispose();
  });
});

function normsOf(W: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, s: number, O: number, I: number, R: number) {
  const n = new Float64Array(O);
  for (let o = 0; o < O; o++) {
    let acc = 0;
    for (let i = 0; i < I; i++) {
      let ba = 0;
      for (let j = 0; j < R; j++) ba += B[o * R + j] * A[j * I + i];
      acc += (W[o * I + i] + s * ba) ** 2;
    }
    n[o] = Math.sqrt(acc);
  }
  return n;
}

/** The same formula written as PEFT's case B, with an optional fixed norm (for finite differences). */
function doraRefFixed(
  x: Float64Array,
  W: ArrayLike<number>,
  b: ArrayLike<number> | null,
  A: ArrayLike<number>,
  B: ArrayLike<number>,
  m: ArrayLike<number>,
  s: number,
  M: number,
  O: number,
  I: number,
  R: number,
  mask: ArrayLike<number> | null,
  nFixed?: Float64Array,
) {
  const n = nFixed ?? normsOf(W, A, B, s, O, I, R);
  const y = new Float64Array(M * O);
  for (let t = 0; t < M; t++) {
    const xd = Array.from({ length: I }, (_, i) => (mask ? x[t * I + i] * mask[t * I + i] : x[t * I + i]));
    const h = Array.from({ length: R }, (_, j) => xd.reduce((a, v, i) => a + v * A[j * I + i], 0));
    for (let o = 0; o < O; o++) {
      const g = m[o] / n[o];
      let xw = 0,
        xdw = 0,
        lora = 0;
      for (let i = 0; i < I; i++) {
        xw += x[t * I + i] * W[o * I + i];
        xdw += xd[i] * W[o * I + i];
      }
      for (let j = 0; j < R; j++) lora += h[j] * B[o * R + j];
      y[t * O + o] = xw + (b ? b[o] : 0) + (g - 1) * xdw + g * s * lora;
    }
  }
  return y;
}

describe('dora FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('DoRA: the LoRA count plus the rescale and the row norms', () => {
    // LoRA's 9 175 040, plus per token out (64 + 32), plus per forward the row norms:
    //   q: 2·8·64·64 + 2·8²·64 + 64·(2·8² + 4·8) = 65 536 + 8192 + 10 240 = 83 968
    //   v: 2·8·64·32 + 2·8²·64 + 32·160          = 32 768 + 8192 + 5120  = 46 080
    expect(probe(dora, { lora_rank: 8, lora_target: 'q_proj,v_proj' }).extra).toBe(9_175_040 + TOKENS_LAYERS * 96 + 5 * (83_968 + 46_080)); // 10 071 040
  });
});
