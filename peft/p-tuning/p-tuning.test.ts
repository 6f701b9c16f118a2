/** P-tuning against METHODS.md §15: the MLP / LSTM prompt encoder vs a float64 reference, gradients, counts, trajectory, export, resume. */
import { describe, it, expect } from 'vitest';
import { baseFlops, probe } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, tinyModel } from '../../tests/helpers/models';
import {
  checkCachedGeneration,
  checkFreshProcessReload,
  checkMethodGradients,
  checkTrajectory,
  fixedBatch,
  trajectoryOptions,
} from '../../tests/helpers/method-check';
import { randn, rng } from '../../tests/helpers/check-op';
import { Tape } from '../../src/engine/tape';
import type { Engine } from '../../src/engine/engine';
import type { Tensor } from '../../src/engine/tensor';
import type { LlamaModel } from '../../src/model/llama';
import { seededRandom } from '../../src/model/generate';
import { ConfigError } from '../../src/errors';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import { Trainer } from '../../src/train/trainer';
import { MemoryRunStore } from '../../src/train/store';
import promptTuning from '../prompt-tuning/method';
import pTuning, { pTuningCount, type AttachedPTuning } from './method';
import { encodePrompt, encodePromptCpu, encoderParams, initEncoderWeights, type EncoderSpec } from './encoder';

async function logits(e: Engine, model: LlamaModel, ids: number[], B = 1): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), B));
  e.endScope();
  return y;
}

const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
};
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

/** Encoder weights on the GPU (trainable) and on the host. */
function uploadEncoder(e: Engine, spec: EncoderSpec, seed: number) {
  const host = initEncoderWeights(spec, seededRandom(seed));
  const gpu = new Map<string, Tensor>();
  for (const p of encoderParams(spec)) {
    const t = e.persist(e.upload(host.get(p.name)!, p.shape, p.name));
    t.requiresGrad = true;
    gpu.set(p.name, t);
  }
  return { host, gpu };
}

const specs: EncoderSpec[] = [
  { kind: 'MLP', nV: 5, d: 7, H: 9, layers: 2, dropout: 0 },
  { kind: 'LSTM', nV: 5, d: 7, H: 3, layers: 2, dropout: 0 },
  { kind: 'LSTM', nV: 4, d: 6, H: 5, layers: 3, dropout: 0.3 },
  { kind: 'LSTM', nV: 1, d: 3, H: 2, layers: 1, dropout: 0 },
];

describe('p-tuning', () => {
  it("is the registry's method for finetuning_type p-tuning, and loads P_TUNING adapters", () => {
    expect(builtinMethods.has('p-tuning')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'p-tuning' })).toBe(pTuning);
    expect(methodForAdapter({ peft_type: 'P_TUNING', num_virtual_tokens: 4, encoder_reparameterization_type: 'LSTM' }).method).toBe(pTuning);
  });

  it('bad options are ConfigErrors naming the key, the value and the fix', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const attach = (config: Record<string, unknown>) => pTuning.attach({ e, model, config, random: seededRandom(1) });
    expect(() => attach({})).toThrow(ConfigError);
    expect(() => attach({})).toThrow(/num_virtual_tokens: p-tuning needs it and it is unset/);
    expect(() => attach({ num_virtual_tokens: 3, encoder_reparameterization_type: 'GRU' })).toThrow(
      /encoder_reparameterization_type: 'GRU' is not one of MLP, LSTM/,
    );
    expect(() => attach({ num_virtual_tokens: 3, encoder_dropout: 1 })).toThrow(/encoder_dropout: 1 is out of range; it must be ≥ 0 and < 1/);
    expect(() => attach({ num_virtual_tokens: 3, encoder_hidden_size: 0 })).toThrow(/encoder_hidden_size: 0 is out of range; it must be ≥ 1/);
    expect(() => attach({ num_virtual_tokens: 3, encoder_reparameterization_type: 'LSTM', encoder_num_layers: -1 })).toThrow(
      /encoder_num_layers: -1 is out of range/,
    );
    model.dispose();
  });

  it('the GPU prompt encoder equals the float64 reference (MLP; LSTM bidirectional, 1–3 layers, with training dropout between layers)', async () => {
    const e = await gpuEngine();
    for (const spec of specs) {
      const { host, gpu } = uploadEncoder(e, spec, 11);
      const seed = spec.dropout > 0 ? 1234 : undefined;
      e.beginScope();
      const P = await e.read(encodePrompt(e, spec, (n) => gpu.get(n)!, seed));
      e.endScope();
      const ref = encodePromptCpu(spec, (n) => host.get(n)!, seed);
      expect(P.length).toBe(spec.nV * spec.d);
      expect(maxDiff(P, ref), `${spec.kind} layers ${spec.layers}`).toBeLessThan(1e-5 * Math.max(1, maxAbs(ref)));
      if (seed !== undefined) {
        // The dropout really acts: without it the output differs.
        expect(
          maxDiff(
            encodePromptCpu(spec, (n) => host.get(n)!),
            ref,
          ),
        ).toBeGreaterThan(1e-3);
      }
      for (const t of gpu.values()) t.dispose();
    }
  });

  it('gradients through the MLP and the LSTM encoders equal float64 finite differences of the reference, for every weight', async () => {
    const e = await gpuEngine();
    for (const spec of specs.slice(0, 3)) {
      const { host, gpu } = uploadEncoder(e, spec, 5);
      const seed = spec.dropout > 0 ? 99 : undefined;
      const R = randn(spec.nV * spec.d, rng(3));
      e.beginScope();
      const tape = new Tape();
      e.tape = tape;
      const P = encodePrompt(e, spec, (n) => gpu.get(n)!, seed);
      e.tape = null;
      tape.backward(P, R);
      e.endScope();
      const f64 = new Map([...host].map(([k, v]) => [k, Float64Array.from(v)]));
      const objective = () => encodePromptCpu(spec, (n) => f64.get(n)!, seed).reduce((a, v, i) => a + v * R[i], 0);
      for (const p of encoderParams(spec)) {
        const g = await e.read(gpu.get(p.name)!.grad!);
        const w = f64.get(p.name)!;
        const fd = new Float64Array(w.length);
        const h = 1e-6;
        for (let i = 0; i < w.length; i++) {
          const orig = w[i];
          w[i] = orig + h;
          const lp = objective();
          w[i] = orig - h;
          const lm = objective();
          w[i] = orig;
          fd[i] = (lp - lm) / (2 * h);
        }
        expect(maxAbs(fd), `${spec.kind} ${p.name} has a gradient`).toBeGreaterThan(0);
        expect(maxDiff(g, fd) / Math.max(1e-3, maxAbs(fd)), `${spec.kind} ${p.name}`).toBeLessThan(2e-4);
      }
      for (const t of gpu.values()) t.dispose();
    }
  });

  it('gradients of every encoder tensor through the model match finite differences (MLP and LSTM)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    for (const kind of ['MLP', 'LSTM']) {
      const m = pTuning.attach({
        e,
        model,
        config: { num_virtual_tokens: 3, encoder_reparameterization_type: kind, encoder_hidden_size: 6 },
        random: seededRandom(3),
      });
      const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7], { samples: 4 });
      expect(report.length).toBe(kind === 'MLP' ? 7 : 1 + 2 * 2 * 4 + 4);
      m.detach();
    }
    model.dispose();
  });

  it('with the prompt the encoder produces, the model equals prompt tuning with that prompt table', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const ids = [1, 5, 9, 2, 30];
    for (const kind of ['MLP', 'LSTM']) {
      const m = pTuning.attach({
        e,
        model,
        config: { num_virtual_tokens: 4, encoder_reparameterization_type: kind },
        random: seededRandom(2),
      }) as AttachedPTuning;
      const P = (await m.exportAdapter()).tensors.get('prompt_embeddings')!;
      const host = new Map<string, Float32Array>();
      for (const p of m.trainable()) host.set(p.name.replace('prompt_encoder.default.', ''), await e.read(p.tensor));
      expect(
        maxDiff(
          P.data,
          encodePromptCpu(m.spec, (n) => host.get(n)!),
        ),
      ).toBeLessThan(1e-5);
      const y = await logits(e, model, [...ids, ...ids], 2);
      m.detach();
      const pt = promptTuning.attach({ e, model, config: { num_virtual_tokens: 4, prompt_tuning_init: 'RANDOM' }, random: seededRandom(1) });
      e.write(pt.trainable()[0].tensor, P.data);
      expect(maxDiff(await logits(e, model, [...ids, ...ids], 2), y)).toBeLessThan(1e-5);
      pt.detach();
    }
    model.dispose();
  });

  it('trainable parameters: stories260K MLP n_v=10, H=d: 13 120 (appendix A); LSTM and the SmolLM2-135M shape by formula', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const count = (config: Record<string, unknown>) => {
      const m = pTuning.attach({ e, model, config, random: seededRandom(1) });
      const n = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
      m.detach();
      return n;
    };
    expect(count({ num_virtual_tokens: 10 })).toBe(13120);
    // LSTM, H = d = 64, 2 layers: table + Σ_layers 2·(4H·in + 4H·H + 8H) + (2H·2H + 2H) + (2H·d + d).
    const H = 64,
      d = 64;
    const lstm = 10 * d + 2 * (4 * H * d + 4 * H * H + 8 * H) + 2 * (4 * H * 2 * H + 4 * H * H + 8 * H) + (2 * H * 2 * H + 2 * H) + (2 * H * d + d);
    expect(count({ num_virtual_tokens: 10, encoder_reparameterization_type: 'LSTM' })).toBe(lstm);
    expect(lstm).toBe(191296);
    const s = smollmConfig().hiddenSize;
    // peftbench: n_v = 100, MLP, H = 768.
    expect(pTuningCount({ kind: 'MLP', nV: 100, d: s, H: 768, layers: 2, dropout: 0 })).toBe(100 * s + (s * 768 + 768) + (768 * 768 + 768) + (768 * s + s));
    expect(pTuningCount({ kind: 'MLP', nV: 100, d: s, H: 768, layers: 2, dropout: 0 })).toBe(1534272);
    expect(pTuningCount({ kind: 'MLP', nV: 100, d: s, H: s, layers: 2, dropout: 0 })).toBe(1054656);
    model.dispose();
  });

  it('trajectory (MLP, and LSTM with dropout): loss falls, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = pTuning.attach({ e, model, config: { num_virtual_tokens: 10 }, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.5, { learningRate: 1e-3 });
    console.log(`p-tuning MLP trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    const l = pTuning.attach({
      e,
      model,
      config: { num_virtual_tokens: 6, encoder_reparameterization_type: 'LSTM', encoder_hidden_size: 32, encoder_dropout: 0.1 },
      random: seededRandom(1),
    });
    const rl = await checkTrajectory(e, model, l, 0.3, { learningRate: 3e-3, maxSteps: 20 });
    console.log(`p-tuning LSTM trajectory: ${rl.first.toFixed(4)} → ${rl.last.toFixed(4)}, peak ${rl.peak} B`);
    l.detach();
    model.dispose();
  });

  it('resume: the trainer checkpoint holds the encoder weights, and a fresh attach resumed from it computes the same prompt', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const config = { num_virtual_tokens: 4, encoder_reparameterization_type: 'LSTM', encoder_hidden_size: 8, encoder_num_layers: 1 };
    const m = pTuning.attach({ e, model, config, random: seededRandom(1) });
    const store = new MemoryRunStore();
    const t = new Trainer(e, model, m, fixedBatch(), [], { ...trajectoryOptions, maxSteps: 2, saveSteps: 2, learningRate: 1e-2 }, store);
    await t.run();
    t.dispose();
    const names = m.trainable().map((p) => p.name);
    expect(names).toContain('prompt_encoder.default.lstm_head.weight_hh_l0_reverse');
    const ids = [1, 403, 407, 261];
    const trained = await logits(e, model, ids);
    m.detach();
    const m2 = pTuning.attach({ e, model, config, random: seededRandom(42) });
    expect(maxDiff(await logits(e, model, ids), trained)).toBeGreaterThan(1e-4);
    const t2 = new Trainer(e, model, m2, fixedBatch(), [], { ...trajectoryOptions, maxSteps: 2, resume: true }, store);
    await t2.run();
    t2.dispose();
    expect(t2.step).toBe(2);
    expect((m2 as AttachedPTuning).mode).toBe('encoder');
    expect(maxDiff(await logits(e, model, ids), trained)).toBe(0);
    m2.detach();
    model.dispose();
  });

  it('export: prompt_embeddings = encoder output and the PEFT 0.17 P_TUNING config; import loads a plain table; cached generation; fresh process', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    for (const kind of ['MLP', 'LSTM']) {
      const m = pTuning.attach({
        e,
        model,
        config: { num_virtual_tokens: 5, encoder_reparameterization_type: kind, encoder_hidden_size: 16, model_name_or_path: 'stories260K' },
        random: seededRandom(2),
      });
      await checkCachedGeneration(e, model, [1, 403, 407, 261], 4);
      const files = await m.exportAdapter();
      expect([...files.tensors].map(([k, t]) => [k, t.shape])).toEqual([['prompt_embeddings', [5, 64]]]);
      expect(Object.keys(files.config).sort()).toEqual([
        'auto_mapping',
        'base_model_name_or_path',
        'encoder_dropout',
        'encoder_hidden_size',
        'encoder_num_layers',
        'encoder_reparameterization_type',
        'inference_mode',
        'modules_to_save',
        'num_attention_heads',
        'num_layers',
        'num_transformer_submodules',
        'num_virtual_tokens',
        'peft_type',
        'peft_version',
        'revision',
        'task_type',
        'token_dim',
      ]);
      expect(files.config).toMatchObject({
        peft_type: 'P_TUNING',
        encoder_reparameterization_type: kind,
        encoder_hidden_size: 16,
        encoder_num_layers: 2,
        encoder_dropout: 0,
        num_virtual_tokens: 5,
        token_dim: 64,
        num_attention_heads: 8,
        num_layers: 5,
        num_transformer_submodules: 1,
      });
      const ids = [1, 403, 407, 261, 378];
      const before = await logits(e, model, ids);
      m.detach();
      const { method, config } = methodForAdapter(files.config);
      const m2 = method.attach({ e, model, config, random: seededRandom(8) }) as AttachedPTuning;
      m2.importAdapter(files);
      expect(m2.mode).toBe('table');
      expect(m2.trainable().map((p) => [p.name, p.tensor.shape])).toEqual([['prompt_embeddings', [5, 64]]]);
      expect(maxDiff(await logits(e, model, ids), before)).toBeLessThan(1e-6);
      await checkCachedGeneration(e, model, [1, 403, 407, 261], 4);
      await checkFreshProcessReload(e, model, m2);
      m2.detach();
    }
    model.dispose();
  });
});

describe('p-tuning FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('p-tuning: n_v more tokens plus the prompt encoder once', () => {
    const grown = baseFlops(522) - baseFlops(512);
    // the MLP encoder once: 2·n_v·(d·H + H·H + H·d), H = d = 64
    expect(probe(pTuning, { num_virtual_tokens: 10 }).extra).toBe(grown + 2 * 10 * 3 * 64 * 64);
    // LSTM (2 layers, bidirectional, H = 64): Σ_l 2·n_v·8·H·(in_l + H) + 2·n_v·(2H·2H + 2H·d)
    const lstm = 2 * 10 * 8 * 64 * (64 + 64) + 2 * 10 * 8 * 64 * (128 + 64) + 2 * 10 * (128 * 128 + 128 * 64);
    expect(probe(pTuning, { num_virtual_tokens: 10, encoder_reparameterization_type: 'LSTM' }).extra).toBe(grown + lstm);
  });
});
