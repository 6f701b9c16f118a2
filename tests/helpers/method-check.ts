/**
 * Method tests share these checks: gradients of a method's trainable tensors
 * against central finite differences of the same GPU forward (L = Σ logits·R),
 * and a short training trajectory (loss falls, peak GPU bytes flat).
 */
import { expect } from 'vitest';
import type { Engine } from '../../src/engine/engine';
import { Tape } from '../../src/engine/tape';
import type { AttachedMethod } from '../../src/methods/types';
import type { LlamaModel } from '../../src/model/llama';
import { Trainer, type EncodedExample, type TrainOptions } from '../../src/train/trainer';
import { MemoryRunStore } from '../../src/train/store';
import { randn, rng } from './check-op';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { generate } from '../../src/model/generate';
import { adapterFileMap } from '../../src/methods/adapter-files';
import { storiesDir } from './models';

/** Finite differences in f32 on a small model: h = 1e-2 keeps rounding below the tolerance. */
export async function checkMethodGradients(
  e: Engine,
  model: LlamaModel,
  method: AttachedMethod,
  ids: number[],
  opts: { samples?: number; tol?: number; h?: number } = {},
) {
  const r = rng(99);
  const V = model.config.vocabSize;
  const R = randn(ids.length * V, r);
  const objective = async () => {
    e.beginScope();
    const y = await e.read(model.forward(Int32Array.from(ids), 1));
    e.endScope();
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * R[i];
    return s;
  };
  e.beginScope();
  const tape = new Tape();
  e.tape = tape;
  const logits = model.forward(Int32Array.from(ids), 1);
  e.tape = null;
  tape.backward(logits, R);
  e.endScope();
  const h = opts.h ?? 1e-2;
  const report: string[] = [];
  for (const p of method.trainable()) {
    const g = p.tensor.grad ? await e.read(p.tensor.grad) : new Float32Array(p.tensor.size);
    const w = await e.read(p.tensor);
    let gmax = 0;
    for (const v of g) gmax = Math.max(gmax, Math.abs(v));
    const picks = new Set<number>([0, g.length - 1]);
    let big = 0;
    for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[big])) big = i;
    picks.add(big);
    while (picks.size < Math.min(g.length, opts.samples ?? 6)) picks.add(Math.floor(r() * g.length));
    let worst = 0;
    for (const i of picks) {
      const orig = w[i];
      w[i] = orig + h;
      e.write(p.tensor, w);
      const lp = await objective();
      w[i] = orig - h;
      e.write(p.tensor, w);
      const lm = await objective();
      w[i] = orig;
      e.write(p.tensor, w);
      const fd = (lp - lm) / (2 * h);
      worst = Math.max(worst, Math.abs(fd - g[i]) / Math.max(1, gmax));
    }
    report.push(`${worst < (opts.tol ?? 2e-2) ? 'OK    ' : 'NOT OK'} ${p.name} max|g| ${gmax.toExponential(2)} err ${worst.toExponential(2)}`);
    expect(worst, `${p.name}: gradient vs finite differences\n${report.join('\n')}`).toBeLessThan(opts.tol ?? 2e-2);
    p.tensor.grad = null;
  }
  return report;
}

export const trajectoryOptions: TrainOptions = {
  batchSize: 4,
  gradAccum: 1,
  learningRate: 5e-3,
  weightDecay: 0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  epochs: 1,
  maxSteps: 30,
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

/** A fixed small batch: 4 sequences of stories260K token ids (prompt masked on the first 4 tokens). */
export function fixedBatch(): EncodedExample[] {
  const seqs = [
    [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426],
    [1, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433],
    [1, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426, 338, 391],
    [1, 336, 432, 313, 438, 310, 432, 278, 316, 439, 419, 298, 414, 267, 265, 282],
  ];
  return seqs.map((s) => ({ inputIds: s, labels: s.map((t, i) => (i < 4 ? -100 : t)) }));
}

/** 30 steps on the fixed batch: the loss must fall by `margin` (fraction) and peak GPU bytes must not grow after step 2. */
export async function checkTrajectory(e: Engine, model: LlamaModel, method: AttachedMethod, margin: number, opts: Partial<TrainOptions> = {}) {
  const t = new Trainer(e, model, method, fixedBatch(), [], { ...trajectoryOptions, ...opts }, new MemoryRunStore());
  const { log } = await t.run();
  t.dispose();
  const losses = log.map((x) => x.loss!);
  const peaks = log.map((x) => x.peak_gpu_bytes);
  expect(losses.at(-1)!, `loss ${losses[0]} → ${losses.at(-1)}`).toBeLessThan(losses[0] * (1 - margin));
  expect(Math.max(...peaks.slice(2))).toBe(peaks[2]);
  return { first: losses[0], last: losses.at(-1)!, peak: peaks.at(-1)! };
}

/**
 * Greedy generation with the KV cache equals greedy decoding that recomputes
 * the whole sequence every step (no cache): the method's hooks behave the same
 * at prefill, at cached steps and in a plain forward.
 */
export async function checkCachedGeneration(e: Engine, model: LlamaModel, ids: number[], steps = 6): Promise<number[]> {
  const cached = await generate(model, ids, { maxNewTokens: steps });
  const seq = [...ids];
  const V = model.config.vocabSize;
  for (let i = 0; i < steps; i++) {
    e.beginScope();
    const last = await e.readRegion(model.forward(Int32Array.from(seq), 1), (seq.length - 1) * V, V);
    e.endScope();
    let best = 0;
    for (let j = 1; j < V; j++) if (last[j] > last[best]) best = j;
    seq.push(best);
  }
  expect(cached, 'greedy tokens with the KV cache vs without').toEqual(seq.slice(ids.length));
  return cached;
}

/**
 * Export the method's adapter to a folder and load it in a fresh process
 * (`peft-studio logits --model stories260K --adapter <dir>`, the built CLI):
 * its last-position logits must equal this process's. Needs `npm run build:cli`.
 */
export async function checkFreshProcessReload(e: Engine, model: LlamaModel, method: AttachedMethod, text = 'Once upon a time', tol = 1e-5) {
  const dir = mkdtempSync(path.join(tmpdir(), 'ps-reload-'));
  const files = adapterFileMap(await method.exportAdapter());
  for (const [name, data] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), data);
  }
  const bin = path.resolve('bin/peft-studio.mjs');
  const r = await promisify(execFile)('node', [bin, 'logits', '--model', storiesDir(), '--adapter', dir, '--text', text], { maxBuffer: 1 << 26 });
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { input_ids: number[]; logits_last: number[] };
  const V = model.config.vocabSize;
  e.beginScope();
  const here = await e.readRegion(model.forward(Int32Array.from(out.input_ids), 1), (out.input_ids.length - 1) * V, V);
  e.endScope();
  let diff = 0;
  for (let i = 0; i < V; i++) diff = Math.max(diff, Math.abs(here[i] - out.logits_last[i]));
  expect(diff, 'fresh-process logits vs in-process').toBeLessThan(tol);
  return { dir, diff, files: Object.keys(files) };
}
