/**
 * The trainer with LoRA on stories260K: the loss falls and GPU memory stays
 * flat; resume continues the same curve; a NaN stops the run and leaves the
 * checkpoint intact; the adapter exports with HF PEFT names, imports back and
 * merges to the same logits; LoRA's forward equals the merged reference.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import path from 'node:path';
import { gpuEngine } from '../helpers/gpu';
import { testHubRoot } from '../helpers/hub-server';
import { LocalFolderSource } from '../../src/hub/node';
import { loadModel, readWeights } from '../../src/model/load';
import { referenceForward } from '../../src/model/reference';
import { seededRandom } from '../../src/model/generate';
import { lora, loraScaling } from '../../peft/lora/method';
import { Trainer, CheckpointError, NonFiniteLossError, type EncodedExample, type TrainOptions } from '../../src/train/trainer';
import { MemoryRunStore } from '../../src/train/store';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import type { Tokenizer } from '../../src/model/tokenizer';

const modelDir = path.join(testHubRoot(), 'models', 'stories260K');

const baseOpts: TrainOptions = {
  batchSize: 4,
  gradAccum: 1,
  learningRate: 1e-2,
  weightDecay: 0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  epochs: 1,
  maxSteps: 8,
  scheduler: 'constant',
  warmupRatio: 0,
  warmupSteps: 0,
  loggingSteps: 1,
  saveSteps: 0,
  evalSteps: 0,
  maxGradNorm: 1.0,
  seed: 42,
  padId: 0,
};

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('SFT trainer + LoRA (stories260K)', () => {
  let e: Engine;
  let model: LlamaModel;
  let tok: Tokenizer;
  let data: EncodedExample[];
  beforeAll(async () => {
    e = await gpuEngine();
    const r = await loadModel(e, new LocalFolderSource(modelDir));
    model = r.model;
    tok = r.tokenizer!;
    const pairs: [string, string][] = [
      ['Tom had a red ball.', ' He liked to throw it high.'],
      ['The cat sat on the mat.', ' It was warm and happy.'],
      ['Lily saw a big tree.', ' She wanted to climb it.'],
      ['The sun was hot.', ' They went to the pool.'],
      ['Ben found a small dog.', ' The dog was lost and sad.'],
      ['Mom baked a cake.', ' It smelled very good.'],
      ['The bird sang a song.', ' Everyone smiled.'],
      ['Sam lost his hat.', ' His friend helped him find it.'],
    ];
    data = pairs.map(([p, resp]) => {
      const src = tok.encode(p);
      const tgt = tok.encode(resp, { addSpecialTokens: false }).concat([tok.eosTokenId ?? 2]);
      return { inputIds: [...src, ...tgt], labels: [...src.map(() => -100), ...tgt] };
    });
  });

  const attachLora = (config: Record<string, unknown>) =>
    lora.attach({
      e,
      model,
      config: { lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'], model_name_or_path: 'stories260K', ...config },
      random: seededRandom(1),
    });

  it('loss falls, base weights get no gradient, GPU memory is flat', async () => {
    const m = attachLora({});
    const t = new Trainer(e, model, m, data, [], { ...baseOpts, maxSteps: 12 }, new MemoryRunStore());
    expect(t.trainableCount()).toBe(5 * 2 * (8 * 64) + 5 * (64 * 8 + 32 * 8));
    const { log } = await t.run();
    const losses = log.map((x) => x.loss!);
    console.log('LoRA losses', losses.map((x) => x.toFixed(4)).join(' '));
    expect(losses.at(-1)!).toBeLessThan(losses[0] * 0.8);
    for (const p of model.params.values()) expect(p.grad).toBeNull();
    // Parameter gradients outlive the micro-batch scope (a released one would be reused by activations).
    for (const p of t.params) expect(p.tensor.grad?.disposed).toBe(false);
    const peaks = log.map((x) => x.peak_gpu_bytes);
    expect(peaks.at(-1)).toBe(peaks[2]);
    t.dispose();
    m.detach();
  });

  it('resume from a checkpoint continues the same loss curve, dropout on', async () => {
    const storeA = new MemoryRunStore();
    // Dropout masks come from (seed, micro-batch, call site), so a resumed run draws the same ones.
    const a = attachLora({ lora_dropout: 0.1 });
    const ta = new Trainer(e, model, a, data, [], { ...baseOpts, maxSteps: 6, saveSteps: 3 }, storeA);
    const logA = (await ta.run()).log.map((x) => x.loss);
    ta.dispose();
    a.detach();
    expect(await storeA.listCheckpoints()).toEqual(['checkpoint-3', 'checkpoint-6']);

    const storeB = new MemoryRunStore();
    storeB.checkpoints.set('checkpoint-3', storeA.checkpoints.get('checkpoint-3')!);
    const b = attachLora({ lora_dropout: 0.1 });
    const tb = new Trainer(e, model, b, data, [], { ...baseOpts, maxSteps: 6, saveSteps: 3, resume: true }, storeB);
    const logB = (await tb.run()).log.map((x) => x.loss);
    tb.dispose();
    b.detach();
    expect(logB).toEqual(logA);
  });

  it('a damaged newest checkpoint falls back to the previous one with a warning; the log is rewritten; unusable ones are CheckpointErrors', async () => {
    const store = new MemoryRunStore();
    const a = attachLora({});
    const ta = new Trainer(e, model, a, data, [], { ...baseOpts, maxSteps: 4, saveSteps: 2 }, store);
    await ta.run();
    ta.dispose();
    a.detach();
    const good = store.checkpoints.get('checkpoint-4')!;
    const enc = new TextEncoder();
    const state = JSON.parse(new TextDecoder().decode(good['trainer_state.json']));
    const damaged: [string, Record<string, Uint8Array>, RegExp][] = [
      ['0-byte trainer_state.json', { ...good, 'trainer_state.json': new Uint8Array(0) }, /trainer_state\.json is empty/],
      ['truncated optimizer file', { ...good, 'optimizer.safetensors': good['optimizer.safetensors'].slice(0, 1000) }, /optimizer\.safetensors is damaged/],
      ['string global_step', { ...good, 'trainer_state.json': enc.encode(JSON.stringify({ ...state, global_step: '4' })) }, /global_step "4"/],
      ['log_history of the wrong type', { ...good, 'trainer_state.json': enc.encode(JSON.stringify({ ...state, log_history: 'x' })) }, /log_history/],
    ];
    for (const [what, files, msg] of damaged) {
      store.checkpoints.set('checkpoint-4', files);
      store.log = ['{"stale":1}', '{"stale":2}', '{"stale":3}', '{"stale":4}', '{"stale":5}'];
      const b = attachLora({});
      const tb = new Trainer(e, model, b, data, [], { ...baseOpts, maxSteps: 4, saveSteps: 2 }, store);
      const warnings: string[] = [];
      expect(await tb.resume(undefined, (w) => warnings.push(w)), what).toBe('checkpoint-2');
      expect(tb.step).toBe(2);
      expect(warnings.join(), what).toMatch(msg);
      expect(warnings.join()).toMatch(/Checkpoint checkpoint-4 is unusable: .* Resuming from checkpoint-2 instead\./);
      expect(
        store.log.map((l) => JSON.parse(l).current_steps),
        'each step once',
      ).toEqual([1, 2]);
      // Named explicitly, a damaged checkpoint is an error, not a fallback.
      await expect(tb.resume('checkpoint-4')).rejects.toThrow(CheckpointError);
      tb.dispose();
      b.detach();
    }
    // A changed rank fits no checkpoint: one named error listing each.
    store.checkpoints.set('checkpoint-4', good);
    const c = attachLora({ lora_rank: 4 });
    const tc = new Trainer(e, model, c, data, [], { ...baseOpts, maxSteps: 4 }, store);
    const err = await tc.resume().then(
      () => null,
      (x) => x,
    );
    tc.dispose();
    c.detach();
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(
      /^No usable checkpoint to resume from\. Checkpoint checkpoint-4 is unusable: trainable\.safetensors holds .*lora_A\.weight with shape \[8,64\], this run's is \[4,64\] .*Checkpoint checkpoint-2 is unusable/,
    );
  });

  it('a NaN loss stops the run with a named error and the last checkpoint stays intact', async () => {
    const store = new MemoryRunStore();
    const m = attachLora({});
    const t = new Trainer(e, model, m, data, [], { ...baseOpts, maxSteps: 4, saveSteps: 2 }, store);
    // A NaN learning rate from step 3 on poisons the weights; the guard must stop the run.
    const err = await t
      .run({
        onStep: (s) => {
          if (s === 2) t.opts.learningRate = NaN;
        },
      })
      .then(
        () => null,
        (x) => x,
      );
    t.dispose();
    m.detach();
    expect(err).toBeInstanceOf(NonFiniteLossError);
    expect(err.message).toMatch(/at step [34]\b/);
    expect(await store.listCheckpoints()).toEqual(['checkpoint-2']);
    const state = JSON.parse(new TextDecoder().decode(store.checkpoints.get('checkpoint-2')!['trainer_state.json']));
    expect(state.global_step).toBe(2);
  });

  it('export uses HF PEFT names; import and merge reproduce the logits; forward equals the merged reference', async () => {
    const m = attachLora({ lora_target: 'all' });
    const t = new Trainer(e, model, m, data, [], { ...baseOpts, maxSteps: 3 }, new MemoryRunStore());
    await t.run();
    t.dispose();
    const files = await m.exportAdapter();
    expect(files.config.peft_type).toBe('LORA');
    expect(files.config.r).toBe(8);
    expect(files.config.lora_alpha).toBe(16);
    expect(files.config.target_modules).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    expect(files.tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')!.shape).toEqual([8, 64]);
    expect(files.tensors.get('base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight')!.shape).toEqual([32, 8]);
    expect(files.tensors.get('base_model.model.model.layers.4.mlp.down_proj.lora_A.weight')!.shape).toEqual([8, 172]);
    expect(files.tensors.size).toBe(5 * 7 * 2);

    const ids = Int32Array.from([1, 403, 407, 261, 378, 432]);
    e.beginScope();
    const withAdapter = await e.read(model.forward(ids, 1));
    e.endScope();
    m.detach();

    // Reference: W + s·B·A in float64.
    const host = await readWeights(new LocalFolderSource(modelDir));
    const w = new Map([...host].map(([k, v]) => [k, Float64Array.from(v.data)]));
    const { s } = loraScaling({ lora_rank: 8, lora_alpha: 16 });
    for (const [key, A] of files.tensors) {
      if (!key.endsWith('lora_A.weight')) continue;
      const mod = key.slice('base_model.model.'.length, -'.lora_A.weight'.length);
      const B = files.tensors.get(key.replace('lora_A', 'lora_B'))!;
      const W = w.get(`${mod}.weight`)!;
      const [out, r] = B.shape,
        inF = A.shape[1];
      for (let o = 0; o < out; o++)
        for (let i = 0; i < inF; i++) {
          let acc = 0;
          for (let k = 0; k < r; k++) acc += B.data[o * r + k] * A.data[k * inF + i];
          W[o * inF + i] += s * acc;
        }
    }
    const ref = referenceForward(model.config, w, Array.from(ids)).flatMap((row) => Array.from(row));
    expect(maxDiff(withAdapter, ref)).toBeLessThan(1e-4);

    // A fresh attachment loading the exported tensors gives the same logits, and so does merging.
    const m2 = attachLora({ lora_target: 'all' });
    m2.importAdapter(files);
    e.beginScope();
    const imported = await e.read(model.forward(ids, 1));
    e.endScope();
    expect(maxDiff(imported, withAdapter)).toBe(0);
    const before = await e.read(model.param('model.layers.0.self_attn.q_proj.weight'));
    await m2.merge!();
    e.beginScope();
    const merged = await e.read(model.forward(ids, 1));
    e.endScope();
    expect(maxDiff(merged, withAdapter)).toBeLessThan(5e-5); // W + s·B·A rounds differently from the two-matmul path
    // restore the base weights for other tests
    const { modelFromWeights } = await import('../../src/model/load');
    void modelFromWeights;
    for (const [k, v] of host) if (model.params.has(k)) e.write(model.param(k), v.data);
    expect(maxDiff(await e.read(model.param('model.layers.0.self_attn.q_proj.weight')), before)).toBe(0);
  });
});
