/** Multitask prompt tuning against METHODS.md §16: P_b = P* ⊙ (cols[t_b] rows[t_b]), task ids, gradients, counts, trajectory, export. */
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
import type { LlamaModel } from '../../src/model/llama';
import { seededRandom } from '../../src/model/generate';
import { ConfigError } from '../../src/errors';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import type { AttachedMethod } from '../../src/methods/types';
import { Trainer } from '../../src/train/trainer';
import { MemoryRunStore } from '../../src/train/store';
import promptTuning from '../prompt-tuning/method';
import mtp from './method';

async function logits(e: Engine, model: LlamaModel, ids: number[], B = 1, taskIds?: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), B, { taskIds: taskIds ? Int32Array.from(taskIds) : undefined }));
  e.endScope();
  return y;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

const tensorOf = (m: AttachedMethod, name: string) => m.trainable().find((p) => p.name === name)!.tensor;

/** Give the factors O(1) values (the N(0, 0.02²) init makes cols·rows ≈ 4e-4), so every gradient is exercised. */
function perturb(e: Engine, m: AttachedMethod) {
  for (const name of ['prefix_task_cols', 'prefix_task_rows']) {
    const t = tensorOf(m, name);
    e.write(
      t,
      Float32Array.from({ length: t.size }, (_, i) => Math.sin(1.3 * i + (name.length % 3)) * 0.9 + 0.3),
    );
  }
}

/** P_b = P* ⊙ (cols[t] rows[t]) in float64 on the host. */
function promptCpu(P: Float32Array, cols: Float32Array, rows: Float32Array, t: number, nV: number, k: number, d: number): Float32Array {
  const out = new Float32Array(nV * d);
  for (let i = 0; i < nV; i++) {
    for (let c = 0; c < d; c++) {
      let s = 0;
      for (let r = 0; r < k; r++) s += cols[(t * nV + i) * k + r] * rows[(t * k + r) * d + c];
      out[i * d + c] = P[i * d + c] * s;
    }
  }
  return out;
}

describe('mtp', () => {
  it("is the registry's method for finetuning_type mtp, and loads MULTITASK_PROMPT_TUNING adapters", () => {
    expect(builtinMethods.has('mtp')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'mtp' })).toBe(mtp);
    expect(methodForAdapter({ peft_type: 'MULTITASK_PROMPT_TUNING', num_virtual_tokens: 4, num_tasks: 3, num_ranks: 2 }).config).toMatchObject({
      num_tasks: 3,
      num_ranks: 2,
    });
  });

  it('each example gets P* ⊙ (cols[t] rows[t]) for its task: equal to prompt tuning with that prompt, different per task id', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const nV = 3,
      k = 2,
      d = model.config.hiddenSize,
      V = model.config.vocabSize;
    const m = mtp.attach({ e, model, config: { num_virtual_tokens: nV, num_tasks: 2, num_ranks: k }, random: seededRandom(4) });
    perturb(e, m);
    const ids = [1, 5, 9, 2, 30];
    const both = await logits(e, model, [...ids, ...ids], 2, [0, 1]);
    const t0 = both.slice(0, ids.length * V),
      t1 = both.slice(ids.length * V);
    expect(maxDiff(t0, t1)).toBeGreaterThan(1e-2);
    expect(maxDiff(await logits(e, model, ids, 1, [1]), t1)).toBeLessThan(1e-5);
    expect(maxDiff(await logits(e, model, ids, 1, [0]), t0)).toBeLessThan(1e-5);
    // Without task ids every sequence is task 0.
    expect(maxDiff(await logits(e, model, ids), t0)).toBeLessThan(1e-5);
    const [P, cols, rows] = await Promise.all(['prompt_embeddings', 'prefix_task_cols', 'prefix_task_rows'].map((n) => e.read(tensorOf(m, n))));
    m.detach();
    for (const [t, want] of [
      [0, t0],
      [1, t1],
    ] as const) {
      const pt = promptTuning.attach({ e, model, config: { num_virtual_tokens: nV, prompt_tuning_init: 'RANDOM' }, random: seededRandom(1) });
      e.write(pt.trainable()[0].tensor, promptCpu(P, cols, rows, t, nV, k, d));
      expect(maxDiff(await logits(e, model, ids), want)).toBeLessThan(1e-4);
      pt.detach();
    }
    model.dispose();
  });

  it('task ids outside [0, num_tasks) and bad options are ConfigErrors naming the value and the fix', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    expect(() => mtp.attach({ e, model, config: {}, random: seededRandom(1) })).toThrow(/num_virtual_tokens: mtp needs it and it is unset/);
    expect(() => mtp.attach({ e, model, config: { num_virtual_tokens: 2, num_tasks: 0 }, random: seededRandom(1) })).toThrow(
      /num_tasks: 0 is out of range; it must be ≥ 1/,
    );
    const m = mtp.attach({ e, model, config: { num_virtual_tokens: 2, num_tasks: 2 }, random: seededRandom(1) });
    expect(() => model.forward(Int32Array.from([1, 2, 3]), 1, { taskIds: Int32Array.from([2]) })).toThrow(ConfigError);
    expect(() => model.forward(Int32Array.from([1, 2, 3]), 1, { taskIds: Int32Array.from([2]) })).toThrow(
      /task id 2, outside 0 … 1 \(num_tasks 2\); set num_tasks to at least 3/,
    );
    expect(() => model.forward(Int32Array.from([1, 2, 3]), 1, { taskIds: Int32Array.from([-1]) })).toThrow(/task id -1/);
    m.detach();
    model.dispose();
  });

  it('gradients of P*, cols and rows match finite differences (task 0, and task 1 in a mixed batch)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = mtp.attach({ e, model, config: { num_virtual_tokens: 3, num_tasks: 2, num_ranks: 2, prompt_tuning_init: 'RANDOM' }, random: seededRandom(3) });
    perturb(e, m);
    await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11]);
    // Mixed batch, tasks [1, 0]: the gradient of every factor entry, by central differences of L = Σ logits·R.
    const ids = Int32Array.from([1, 5, 9, 2, 1, 30, 7, 11]),
      taskIds = Int32Array.from([1, 0]);
    const R = randn(ids.length * model.config.vocabSize, rng(8));
    const objective = async () => {
      e.beginScope();
      const y = await e.read(model.forward(ids, 2, { taskIds }));
      e.endScope();
      return y.reduce((a, v, i) => a + v * R[i], 0);
    };
    e.beginScope();
    const tape = new Tape();
    e.tape = tape;
    const y = model.forward(ids, 2, { taskIds });
    e.tape = null;
    tape.backward(y, R);
    e.endScope();
    for (const p of m.trainable()) {
      const g = await e.read(p.tensor.grad!);
      const w = await e.read(p.tensor);
      const gmax = Math.max(...Array.from(g, Math.abs));
      // Entries of both tasks' factors (the halves of cols and rows), and of P*.
      for (const i of [0, Math.floor(g.length / 2) - 1, Math.floor(g.length / 2) + 1, g.length - 1]) {
        const orig = w[i],
          h = 1e-2;
        w[i] = orig + h;
        e.write(p.tensor, w);
        const lp = await objective();
        w[i] = orig - h;
        e.write(p.tensor, w);
        const lm = await objective();
        w[i] = orig;
        e.write(p.tensor, w);
        expect(Math.abs((lp - lm) / (2 * h) - g[i]) / Math.max(1, gmax), `${p.name}[${i}]`).toBeLessThan(2e-2);
      }
      expect(gmax).toBeGreaterThan(0);
      p.tensor.grad = null;
    }
    m.detach();
    model.dispose();
  });

  it('trainable parameters n_v·d + T_k·k·(n_v + d): stories260K n_v=10, k=1, 1 task: 714; SmolLM2-135M shape n_v=100: 58 276', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const count = (m: AttachedMethod) => m.trainable().reduce((a, p) => a + p.tensor.size, 0);
    const m = mtp.attach({ e, model, config: { num_virtual_tokens: 10 }, random: seededRandom(1) });
    expect(count(m)).toBe(714);
    m.detach();
    const m3 = mtp.attach({ e, model, config: { num_virtual_tokens: 10, num_tasks: 3, num_ranks: 2 }, random: seededRandom(1) });
    expect(count(m3)).toBe(640 + 3 * 2 * (10 + 64));
    m3.detach();
    const d = smollmConfig().hiddenSize;
    expect(100 * d + 1 * 1 * (100 + d)).toBe(58276);
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls, memory flat; the trainer routes task ids so each task trains its own factors', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = mtp.attach({ e, model, config: { num_virtual_tokens: 10 }, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.5, { learningRate: 3e-2 });
    console.log(`mtp trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    // Two tasks from the data: examples 0, 1 are task 0, examples 2, 3 task 1 → both tasks' factors move, the losses fall.
    const m2 = mtp.attach({ e, model, config: { num_virtual_tokens: 4, num_tasks: 3 }, random: seededRandom(2) });
    const cols0 = await e.read(tensorOf(m2, 'prefix_task_cols'));
    const data = fixedBatch().map((x, i) => ({ ...x, taskId: i < 2 ? 0 : 1 }));
    const t = new Trainer(e, model, m2, data, [], { ...trajectoryOptions, maxSteps: 3, learningRate: 1e-2 }, new MemoryRunStore());
    await t.run();
    t.dispose();
    const cols1 = await e.read(tensorOf(m2, 'prefix_task_cols'));
    const moved = (t: number) => maxDiff(cols0.subarray(t * 4, (t + 1) * 4), cols1.subarray(t * 4, (t + 1) * 4));
    expect(moved(0)).toBeGreaterThan(1e-3);
    expect(moved(1)).toBeGreaterThan(1e-3);
    expect(moved(2)).toBe(0); // no example of task 2
    m2.detach();
    model.dispose();
  });

  it('export: prompt_embeddings (P*, unmodulated), prefix_task_cols/rows and the PEFT 0.17 config; import reproduces every task; cached generation; fresh process', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = mtp.attach({
      e,
      model,
      config: { num_virtual_tokens: 4, num_tasks: 2, num_ranks: 3, model_name_or_path: 'stories260K' },
      random: seededRandom(2),
    });
    perturb(e, m);
    const files = await m.exportAdapter();
    expect([...files.tensors].map(([k, t]) => [k, t.shape])).toEqual([
      ['prompt_embeddings', [4, 64]],
      ['prefix_task_cols', [2, 4, 3]],
      ['prefix_task_rows', [2, 3, 64]],
    ]);
    expect(Array.from(files.tensors.get('prompt_embeddings')!.data)).toEqual(Array.from(await e.read(tensorOf(m, 'prompt_embeddings'))));
    expect(Object.keys(files.config).sort()).toEqual([
      'auto_mapping',
      'base_model_name_or_path',
      'inference_mode',
      'modules_to_save',
      'num_attention_heads',
      'num_layers',
      'num_ranks',
      'num_tasks',
      'num_transformer_submodules',
      'num_virtual_tokens',
      'peft_type',
      'peft_version',
      'prompt_tuning_init',
      'prompt_tuning_init_state_dict_path',
      'prompt_tuning_init_task',
      'prompt_tuning_init_text',
      'revision',
      'task_type',
      'token_dim',
      'tokenizer_kwargs',
      'tokenizer_name_or_path',
    ]);
    expect(files.config).toMatchObject({
      peft_type: 'MULTITASK_PROMPT_TUNING',
      num_tasks: 2,
      num_ranks: 3,
      num_virtual_tokens: 4,
      token_dim: 64,
      prompt_tuning_init: 'RANDOM',
    });
    const ids = [1, 403, 407, 261, 378];
    const before = await logits(e, model, [...ids, ...ids], 2, [1, 0]);
    m.detach();
    const { method, config } = methodForAdapter(files.config);
    const m2 = method.attach({ e, model, config, random: seededRandom(9) });
    m2.importAdapter(files);
    expect(maxDiff(await logits(e, model, [...ids, ...ids], 2, [1, 0]), before)).toBe(0);
    await checkCachedGeneration(e, model, [1, 403, 407, 261]);
    await checkFreshProcessReload(e, model, m2);
    m2.detach();
    model.dispose();
  });
});

describe('mtp FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('MTP: n_v more tokens plus the task factor', () => {
    // per example 2·n_v·k·d + n_v·d = 1280 + 640
    expect(probe(mtp, { num_virtual_tokens: 10 }).extra).toBe(baseFlops(522) - baseFlops(512) + 1920);
  });
});
