/**
 * GaLore against METHODS.md §11: projector side per shape, refresh at t = 0,
 * gap, 2·gap, GaLore steps against a float64 reference of §11 (std on both
 * shapes, reverse_std, full; clip, weight decay, changing lr), the
 * unprojected AdamW of the other tensors, optimizer-state bytes in the
 * low-rank space, gradients, counts, trajectory, checkpoint resume and the
 * export (the model's weights, as full).
 */
import { describe, it, expect } from 'vitest';
import { baseFlops, probe } from '../../tests/helpers/flops-probe';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, storiesDir, tinyModel } from '../../tests/helpers/models';
import { checkMethodGradients, checkTrajectory, fixedBatch, trajectoryOptions } from '../../tests/helpers/method-check';
import { randn, rng } from '../../tests/helpers/check-op';
import { seededRandom } from '../../src/model/generate';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { svdTopR } from '../../src/methods/svd';
import { galoreAdamwCpu } from './ops';
import { parseSafetensors } from '../../src/model/safetensors';
import type { ModelConfig } from '../../src/model/config';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import type { OptimizerUpdate } from '../../src/methods/types';
import { Trainer } from '../../src/train/trainer';
import { MemoryRunStore } from '../../src/train/store';
import galore, { galoreSide, galoreStateShapes, galoreTargets, type GaloreProjType } from './method';

const PROJ = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

function projShapes(c: ModelConfig): Record<string, [number, number]> {
  const { hiddenSize: d, intermediateSize: f, numHeads: h, numKvHeads: kv, headDim: hd } = c;
  return { q_proj: [h * hd, d], k_proj: [kv * hd, d], v_proj: [kv * hd, d], o_proj: [d, h * hd], gate_proj: [f, d], up_proj: [f, d], down_proj: [d, f] };
}

/** Floats of GaLore optimizer state (m, v in the projected shape + projectors) over all targeted weights. */
function galoreStateFloats(c: ModelConfig, rank: number, projType: GaloreProjType = 'std'): number {
  let per = 0;
  for (const [m, n] of Object.values(projShapes(c))) {
    const s = galoreStateShapes(projType, rank, m, n);
    per += 2 * s.low[0] * s.low[1] + (s.left ? m * s.r : 0) + (s.right ? s.r * n : 0);
  }
  return c.numLayers * per;
}

/** Floats of torch AdamW state (m, v) for the same weights. */
function adamStateFloats(c: ModelConfig): number {
  return c.numLayers * Object.values(projShapes(c)).reduce((a, [m, n]) => a + 2 * m * n, 0);
}

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

// ---- float64 reference of §11 --------------------------------------------------

/** C [M, N] = A [M, K] B [K, N]. */
function mm(A: ArrayLike<number>, B: ArrayLike<number>, M: number, K: number, N: number): Float64Array {
  const C = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let k = 0; k < K; k++) {
      const a = A[i * K + k];
      for (let j = 0; j < N; j++) C[i * N + j] += a * B[k * N + j];
    }
  return C;
}

function tr(A: ArrayLike<number>, M: number, N: number): Float64Array {
  const T = new Float64Array(M * N);
  for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) T[j * M + i] = A[i * N + j];
  return T;
}

interface RefState {
  L: Float64Array | null;
  R: Float64Array | null;
  m: Float64Array | null;
  v: Float64Array | null;
}

/** One galore_torch.AdamW step on W [rows, cols] with gradient G, clip c, 1-based step t. */
function galoreStepRef(
  W: Float64Array,
  G: Float32Array,
  c: number,
  t: number,
  st: RefState,
  o: {
    rows: number;
    cols: number;
    rank: number;
    gap: number;
    scale: number;
    projType: GaloreProjType;
    lr: number;
    wd: number;
    b1: number;
    b2: number;
    eps: number;
  },
) {
  const { rows: M, cols: N } = o;
  const r = Math.min(o.rank, M, N);
  const side = o.projType === 'std' ? (M >= N ? 'right' : 'left') : o.projType === 'reverse_std' ? (M >= N ? 'left' : 'right') : o.projType;
  if ((t - 1) % o.gap === 0) {
    const s = svdTopR(Float64Array.from(G), M, N, r, -1);
    st.L = s.U; // U[:, :r], M×r
    st.R = tr(s.V, N, r); // Vh[:r, :] = Vᵀ, r×N
  }
  const Gc = Float64Array.from(G, (g) => g * c);
  let low: Float64Array;
  if (side === 'right') low = mm(Gc, tr(st.R!, r, N), M, N, r);
  else if (side === 'left') low = mm(tr(st.L!, M, r), Gc, r, M, N);
  else low = mm(mm(tr(st.L!, M, r), Gc, r, M, N), tr(st.R!, r, N), r, N, r);
  st.m ??= new Float64Array(low.length);
  st.v ??= new Float64Array(low.length);
  const Nn = new Float64Array(low.length);
  for (let i = 0; i < low.length; i++) {
    st.m[i] = o.b1 * st.m[i] + (1 - o.b1) * low[i];
    st.v[i] = o.b2 * st.v[i] + (1 - o.b2) * low[i] * low[i];
    Nn[i] = st.m[i] / (Math.sqrt(st.v[i]) + o.eps);
  }
  const step = (o.lr * Math.sqrt(1 - o.b2 ** t)) / (1 - o.b1 ** t);
  const delta = side === 'right' ? mm(Nn, st.R!, M, r, N) : side === 'left' ? mm(st.L!, Nn, M, r, N) : mm(mm(st.L!, Nn, M, r, r), st.R!, M, r, N);
  for (let i = 0; i < W.length; i++) {
    W[i] -= step * o.scale * delta[i];
    W[i] -= o.lr * o.wd * W[i];
  }
  return side;
}

describe('galore', () => {
  it("is the registry's method for finetuning_type full + use_galore", () => {
    expect(builtinMethods.has('galore')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'full', use_galore: true })).toBe(galore);
  });

  it('projector side per shape (§11 table) and galore_target matching', () => {
    // LLaMA, std: q/o/gate/up (m ≥ n) on the right, k/v/down (m < n) on the left.
    const shapes = projShapes(smollmConfig());
    const side = (t: GaloreProjType) => Object.fromEntries(PROJ.map((p) => [p, galoreSide(t, ...shapes[p])]));
    expect(side('std')).toEqual({ q_proj: 'right', k_proj: 'left', v_proj: 'left', o_proj: 'right', gate_proj: 'right', up_proj: 'right', down_proj: 'left' });
    expect(side('reverse_std')).toEqual({
      q_proj: 'left',
      k_proj: 'right',
      v_proj: 'right',
      o_proj: 'left',
      gate_proj: 'left',
      up_proj: 'left',
      down_proj: 'right',
    });
    for (const t of ['right', 'left', 'full'] as const) expect(Object.values(side(t)).every((s) => s === t)).toBe(true);
    expect(galoreStateShapes('std', 16, 172, 64)).toMatchObject({ side: 'right', r: 16, low: [172, 16], left: null, right: [16, 64] });
    expect(galoreStateShapes('std', 16, 64, 172)).toMatchObject({ side: 'left', r: 16, low: [16, 172], left: [64, 16], right: null });
    expect(galoreStateShapes('full', 16, 64, 172)).toMatchObject({ side: 'full', r: 16, low: [16, 16], left: [64, 16], right: [16, 172] });
    expect(galoreStateShapes('std', 100, 32, 64)).toMatchObject({ r: 32, low: [32, 64] }); // r ≤ min(m, n), as torch's thin SVD
    const names = Array.from({ length: 2 }, (_, l) =>
      PROJ.map((p) => `model.layers.${l}.${['gate_proj', 'up_proj', 'down_proj'].includes(p) ? 'mlp' : 'self_attn'}.${p}`),
    ).flat();
    expect(galoreTargets(names, 'all')).toEqual(names);
    expect(galoreTargets(names, ['q_proj', 'v_proj']).length).toBe(4);
    expect(galoreTargets(names, 'mlp').length).toBe(6); // LLaMA-Factory: `target in name`
  });

  for (const [projType, pname] of [
    ['std', 'mlp.gate_proj'],
    ['std', 'self_attn.k_proj'],
    ['reverse_std', 'mlp.down_proj'],
    ['full', 'mlp.up_proj'],
  ] as const) {
    it(`GaLore steps match §11 in float64: ${projType} on ${pname}, refresh at t = 0, gap, 2·gap`, async () => {
      const e = await gpuEngine();
      const model = tinyModel(e, { num_hidden_layers: 1 });
      const rank = 4,
        gap = 2,
        scale = 0.25;
      const m = galore.attach({
        e,
        model,
        config: { galore_rank: rank, galore_update_interval: gap, galore_scale: scale, galore_proj_type: projType, galore_target: 'all' },
        random: seededRandom(1),
      });
      const p = m.trainable().find((x) => x.name === `model.layers.0.${pname}.weight`)!;
      const [rows, cols] = p.tensor.shape;
      const W = Float64Array.from(await e.read(p.tensor));
      const W0 = Float64Array.from(W);
      const st: RefState = { L: null, R: null, m: null, v: null };
      const grad = p.tensor.gradOrZeros();
      const clip = e.persist(e.empty([1], 'clip'));
      const r = rng(7);
      const lrs = [1e-2, 5e-3, 2e-2, 1e-2, 1e-2],
        clips = [1, 0.5, 1, 0.25, 1];
      // proj_type full: the refresh gives Ĝ = Lᵀ G Rᵀ = diag(S) plus float32 rounding noise off the
      // diagonal, and at t = 1 Adam maps noise ≫ eps to ±(1−β1)/√(1−β2) — ill-conditioned in float32 and
      // in torch alike, not a kernel error. There: eps 1e-6 (galore_torch's own default) and a 1e-3 bound.
      const eps = projType === 'full' ? 1e-6 : 1e-8;
      const tol = projType === 'full' ? 1e-3 : 1e-4;
      let side = '';
      for (let t = 1; t <= 5; t++) {
        const G = randn(rows * cols, r, t === 3 ? 3 : 0.1);
        e.write(grad, G);
        e.write(clip, [clips[t - 1]]);
        const u: OptimizerUpdate = { e, grad, clip, lr: lrs[t - 1], step: t, beta1: 0.9, beta2: 0.999, eps, weightDecay: 0.1 };
        await p.update!(u);
        side = galoreStepRef(W, G, clips[t - 1], t, st, { rows, cols, rank, gap, scale, projType, lr: lrs[t - 1], wd: 0.1, b1: 0.9, b2: 0.999, eps });
        // The projector is the one of the last refresh (t − 1 = 0, 2, 4): compare it after every step.
        const state = p.state!();
        if (st.L && state.has('galore_proj_left')) {
          const got = await e.read(state.get('galore_proj_left')!);
          expect(Math.max(...Array.from(got, (x, i) => Math.abs(x - st.L![i])))).toBeLessThan(1e-6);
        }
        if (st.R && state.has('galore_proj_right')) {
          const got = await e.read(state.get('galore_proj_right')!);
          expect(Math.max(...Array.from(got, (x, i) => Math.abs(x - st.R![i])))).toBeLessThan(1e-6);
        }
      }
      const got = await e.read(p.tensor);
      let err = 0,
        moved = 0;
      for (let i = 0; i < W.length; i++) {
        err = Math.max(err, Math.abs(got[i] - W[i]));
        moved = Math.max(moved, Math.abs(W[i] - W0[i]));
      }
      const mGot = await e.read(p.state!().get('galore_exp_avg')!);
      let mErr = 0,
        mMax = 0;
      for (let i = 0; i < mGot.length; i++) {
        mErr = Math.max(mErr, Math.abs(mGot[i] - st.m![i]));
        mMax = Math.max(mMax, Math.abs(st.m![i]));
      }
      console.log(
        `galore ${projType} ${pname} [${rows}×${cols}] ${side}: max|ΔW| ${moved.toExponential(2)}, max|W − ref| ${err.toExponential(2)}, moments ${mGot.length} (ref ${st.m!.length}) max|m − ref| ${mErr.toExponential(2)}`,
      );
      expect(mGot.length).toBe(st.m!.length);
      expect(err).toBeLessThan(tol * moved);
      expect(mErr).toBeLessThan(1e-4 * mMax);
      clip.dispose();
      m.detach();
      model.dispose();
    });
  }

  it('non-projected tensors (norms, embeddings) take galore_torch AdamW: eps outside the bias correction, decay after', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e, { num_hidden_layers: 1 });
    const m = galore.attach({ e, model, config: { galore_rank: 4 }, random: seededRandom(1) });
    const clip = e.persist(e.upload([0.5], [1], 'clip'));
    const r = rng(3);
    for (const name of ['model.norm.weight', 'model.embed_tokens.weight']) {
      const p = m.trainable().find((x) => x.name === name)!;
      expect([...p.state!().keys()]).toEqual(['galore_exp_avg', 'galore_exp_avg_sq']);
      const W = Float64Array.from(await e.read(p.tensor));
      const M = new Float64Array(W.length),
        V = new Float64Array(W.length);
      for (let t = 1; t <= 3; t++) {
        const G = randn(W.length, r, 0.01);
        e.write(p.tensor.gradOrZeros(), G);
        const u: OptimizerUpdate = { e, grad: p.tensor.grad!, clip, lr: 1e-2, step: t, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
        await p.update!(u);
        galoreAdamwCpu(W, G, M, V, 0.5, u);
      }
      const got = await e.read(p.tensor);
      let err = 0;
      for (let i = 0; i < W.length; i++) err = Math.max(err, Math.abs(got[i] - W[i]));
      expect(err).toBeLessThan(1e-6);
    }
    clip.dispose();
    m.detach();
    model.dispose();
  });

  it('gradients of every weight match finite differences (tiny model; GaLore changes only the optimizer)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e, { num_hidden_layers: 1 });
    const m = galore.attach({ e, model, config: { galore_rank: 4 }, random: seededRandom(3) });
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 3 });
    expect(report.length).toBe(9 + 2);
    m.detach();
    model.dispose();
  });

  it('counts: every weight trains (numParams); optimizer state of the targets is low-rank (stories260K, SmolLM2-135M)', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = galore.attach({ e, model, config: { galore_rank: 16, galore_target: 'all' }, random: seededRandom(1) });
    const ps = m.trainable();
    expect(ps.reduce((a, p) => a + p.tensor.size, 0)).toBe(260_032);
    expect(ps.reduce((a, p) => a + p.tensor.size, 0)).toBe(model.numParams());
    let targetState = 0,
      otherState = 0,
      targetParams = 0;
    for (const p of ps) {
      const floats = [...p.state!().values()].reduce((a, t) => a + t.size, 0);
      if (p.name.endsWith('_proj.weight')) {
        targetState += floats;
        targetParams += p.tensor.size;
      } else {
        otherState += floats;
        expect(floats).toBe(2 * p.tensor.size);
      }
    }
    // stories260K, rank 16: m + v per layer q 2·64·16, k 2·16·64, v 2·16·64, o 2·64·16, gate/up 2·172·16,
    // down 2·16·172 = 24 704; projectors 16·64 + 32·16 + 32·16 + 16·64 + 16·64 + 16·64 + 64·16 = 6 144.
    expect(targetState).toBe(5 * (24_704 + 6_144));
    expect(targetState).toBe(galoreStateFloats(model.config, 16));
    expect(adamStateFloats(model.config)).toBe(2 * targetParams);
    console.log(`galore state bytes, stories260K r16: targets ${4 * targetState} B (AdamW would hold ${8 * targetParams} B), others ${4 * otherState} B`);
    expect(4 * targetState).toBe(616_960);
    expect(8 * targetParams).toBe(1_812_480);
    // SmolLM2-135M, rank 16: 30 · 273 408 floats (32.8 MB) against AdamW's 30 · 7 077 888 (849 MB).
    expect(galoreStateFloats(smollmConfig(), 16)).toBe(30 * 273_408);
    expect(adamStateFloats(smollmConfig())).toBe(30 * 7_077_888);
    m.detach();
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch (rank 16, refresh every 10), loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = galore.attach({
      e,
      model,
      config: { galore_rank: 16, galore_update_interval: 10, galore_scale: 2, galore_target: 'all' },
      random: seededRandom(1),
    });
    const r = await checkTrajectory(e, model, m, 0.5, { learningRate: 2e-3 });
    console.log(`galore trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('checkpoint resume restores projectors and low-rank moments: the same curve as an uninterrupted run', async () => {
    const e = await gpuEngine();
    // Refresh at t = 0 and 2; the checkpoint after step 1, so step 2 (t = 1) runs on the restored
    // projectors and moments and step 3 refreshes.
    const config = { galore_rank: 8, galore_update_interval: 2, galore_scale: 2, galore_target: 'all' };
    const opts = { ...trajectoryOptions, maxSteps: 3, learningRate: 2e-3, weightDecay: 0.01 };
    const run = async (o: typeof opts, store: MemoryRunStore) => {
      const model = await loadStories(e);
      const m = galore.attach({ e, model, config, random: seededRandom(1) });
      const t = new Trainer(e, model, m, fixedBatch(), [], o, store);
      const { log } = await t.run();
      t.dispose();
      m.detach();
      model.dispose();
      return log.map((x) => x.loss!);
    };
    const whole = await run(opts, new MemoryRunStore());
    const store = new MemoryRunStore();
    const first = await run({ ...opts, maxSteps: 1, saveSteps: 1 }, store);
    const rest = await run({ ...opts, resume: true }, store);
    console.log(
      `galore resume: ${whole.map((x) => x.toFixed(5)).join(' ')} | ${first.map((x) => x.toFixed(5)).join(' ')} + ${rest
        .slice(1)
        .map((x) => x.toFixed(5))
        .join(' ')}`,
    );
    const opt = parseSafetensors(store.checkpoints.get('checkpoint-1')!['optimizer.safetensors'], 'optimizer').tensors;
    expect(opt.get('model.layers.0.mlp.gate_proj.weight.galore_exp_avg')!.shape).toEqual([172, 8]);
    expect(opt.get('model.layers.0.mlp.gate_proj.weight.galore_proj_right')!.shape).toEqual([8, 64]);
    expect(opt.get('model.layers.0.mlp.down_proj.weight.galore_proj_left')!.shape).toEqual([64, 8]);
    expect(rest.slice(1)).toEqual(whole.slice(1));
    expect(first).toEqual(whole.slice(0, 1));
  });

  it('exports the trained model like full (HF names and shapes) with the GaLore settings; import reproduces the logits', async () => {
    const e = await gpuEngine();
    const ids = [1, 403, 407, 261, 378, 432, 383];
    const model = await loadStories(e);
    const m = galore.attach({
      e,
      model,
      config: { model_name_or_path: 'stories260K', galore_rank: 16, galore_update_interval: 200, galore_target: 'q_proj,v_proj' },
      random: seededRandom(1),
    });
    expect(m.trainable().filter((p) => p.state!().has('galore_exp_avg_sq') && p.state!().size > 2).length).toBe(10);
    const t = new Trainer(e, model, m, fixedBatch(), [], { ...trajectoryOptions, maxSteps: 2, learningRate: 2e-3 }, new MemoryRunStore());
    await t.run();
    t.dispose();
    const trained = await logits(e, model, ids);
    const files = await m.exportAdapter();
    const original = parseSafetensors(new Uint8Array(readFileSync(path.join(storiesDir(), 'model.safetensors'))), 'stories260K');
    expect([...files.tensors.keys()].sort()).toEqual([...original.tensors.keys()].sort());
    for (const [k, v] of files.tensors) expect(v.shape).toEqual(original.tensors.get(k)!.shape);
    expect(files.config).toMatchObject({
      export_format: 'hf_model',
      weights_file: 'model.safetensors',
      finetuning_type: 'full',
      base_model_name_or_path: 'stories260K',
      use_galore: true,
      galore_target: ['q_proj', 'v_proj'],
      galore_rank: 16,
      galore_update_interval: 200,
      galore_scale: 2,
      galore_proj_type: 'std',
    });
    const fresh = await loadStories(e);
    const m2 = galore.attach({ e, model: fresh, config: {}, random: seededRandom(1) });
    m2.importAdapter(files);
    expect(Array.from(await logits(e, fresh, ids))).toEqual(Array.from(trained));
    m2.detach();
    fresh.dispose();
    m.detach();
    model.dispose();
  });
});

describe('galore FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('GaLore adds nothing to the forward (it changes the optimizer)', () => {
    expect(probe(galore)).toMatchObject({ total: baseFlops(512), extra: 0 });
  });
});
