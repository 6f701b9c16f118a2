/**
 * The SFT trainer (METHODS.md §21-24), the same in Node and the browser.
 *
 * Per optimizer step: for each of `gradient_accumulation_steps` micro-batches,
 * forward, summed cross-entropy over valid shifted targets, backward seeded
 * with 1/D where D counts valid targets over the whole step (so summed
 * gradients equal the mean over the step, as the HF Trainer does); then the
 * global grad norm, clipping to max_grad_norm, AdamW (torch semantics; decay
 * only on decay params), the scheduler, zero grads. Clipping and the update
 * run on the GPU (the clip factor never leaves it); the loss and grad norm
 * are read back once per step for logging and the NaN guard.
 */
import type { Engine } from '../engine/engine';
import { Tape } from '../engine/tape';
import type { Tensor } from '../engine/tensor';
import { adamwStep, clipCoefficient, sumSquares } from '../engine/ops/adamw';
import { languageModelLoss } from './loss';
import { accumulateKernel } from '../engine/ops/add';
import { PeftStudioError } from '../errors';
import type { AttachedMethod, TrainableParam } from '../methods/types';
import type { LlamaModel } from '../model/llama';
import { parseSafetensors, serializeSafetensors } from '../model/safetensors';
import { adapterFileMap } from '../methods/adapter-files';
import { lrFactor, warmupSteps, type SchedulerType } from './schedule';
import { checkpointsNewestFirst, type RunStore } from './store';

/** A NaN or Inf loss or gradient norm stopped the run; the last checkpoint is intact. */
export class NonFiniteLossError extends PeftStudioError {
  override name = 'NonFiniteLossError';
}

/** A checkpoint cannot be resumed from: missing, damaged, or written by another config. */
export class CheckpointError extends PeftStudioError {
  override name = 'CheckpointError';
}

interface LoadedCheckpoint {
  step: number;
  log: LogEntry[];
  /** Every tensor to restore and its saved values, all checked. */
  writes: [Tensor, Float32Array][];
}

export interface EncodedExample {
  inputIds: number[];
  labels: number[];
  /** Task id for multitask prompt tuning (MTP); 0 when absent. */
  taskId?: number;
}

export interface TrainOptions {
  batchSize: number;
  gradAccum: number;
  learningRate: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  epochs: number;
  /** > 0 overrides epochs. */
  maxSteps: number;
  scheduler: SchedulerType;
  warmupRatio: number;
  warmupSteps: number;
  loggingSteps: number;
  /** 0 = never. */
  saveSteps: number;
  /** 0 = never. */
  evalSteps: number;
  maxGradNorm: number;
  seed: number;
  padId: number;
  /** Resume from the newest checkpoint in the store (or a named one). */
  resume?: boolean | string;
  /** Recompute decoder layers in the backward (gradient_checkpointing); see src/engine/checkpoint.ts. */
  gradientCheckpointing?: boolean;
}

export interface LogEntry {
  current_steps: number;
  total_steps: number;
  loss?: number;
  eval_loss?: number;
  lr?: number;
  grad_norm?: number;
  epoch: number;
  percentage: number;
  elapsed_time: number;
  tokens_per_s?: number;
  peak_gpu_bytes: number;
}

export interface TrainCallbacks {
  onLog?: (entry: LogEntry) => void;
  onStep?: (step: number, total: number) => void;
  /** Periodic evaluation's progress: validation batches done of total (0 / total when it starts). */
  onEvaluate?: (done: number, total: number) => void;
  /** Something the user should know that does not stop the run (a damaged checkpoint skipped on resume). */
  onWarning?: (message: string) => void;
  signal?: AbortSignal;
}

/**
 * What this trainer object has done, across its run() calls: optimizer-step
 * wall time (evaluation and checkpoint writes excluded, so tokens / trainMs is
 * the training speed) and the whole wall time of run() (HF train_runtime).
 */
export interface TrainStats {
  /** Input tokens (padded batch positions) of the optimizer steps run here. */
  tokens: number;
  /** Steps run here (a resumed trainer counts from its checkpoint on). */
  steps: number;
  trainMs: number;
  runMs: number;
}

/** Deterministic permutation (mulberry32 Fisher-Yates), identical in every host. */
export function shuffledIndices(n: number, seed: number): number[] {
  let a = seed >>> 0;
  const rand = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const idx = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx;
}

/** Right-pad to the longest sequence rounded up to 8; shifted targets (target t = labels[t+1]). */
export function collateShifted(batch: EncodedExample[], padId: number) {
  const B = batch.length;
  const T = Math.ceil(Math.max(...batch.map((x) => x.inputIds.length)) / 8) * 8;
  const ids = new Int32Array(B * T).fill(padId);
  const mask = new Int32Array(B * T);
  const targets = new Int32Array(B * T).fill(-100);
  const taskIds = new Int32Array(B);
  batch.forEach((x, b) => {
    taskIds[b] = x.taskId ?? 0;
    ids.set(x.inputIds, b * T);
    mask.fill(1, b * T, b * T + x.inputIds.length);
    for (let t = 0; t + 1 < x.labels.length; t++) targets[b * T + t] = x.labels[t + 1];
  });
  let valid = 0;
  for (const y of targets) if (y !== -100) valid++;
  return { ids, mask, targets, taskIds, B, T, valid };
}

/** HF Trainer decay rule: no decay for biases and norm weights (METHODS.md §22). */
export function isDecayParam(name: string): boolean {
  return !/bias|layernorm|rmsnorm|(^|\.)norm($|\.)|_norm($|\.)/i.test(name);
}

export class Trainer {
  readonly params: TrainableParam[];
  private m = new Map<string, Tensor>();
  private v = new Map<string, Tensor>();
  step = 0;
  readonly totalSteps: number;
  private stepsPerEpoch: number;
  private batchesPerEpoch: number;
  log: LogEntry[] = [];
  readonly stats: TrainStats = { tokens: 0, steps: 0, trainMs: 0, runMs: 0 };

  constructor(
    readonly e: Engine,
    readonly model: LlamaModel,
    readonly method: AttachedMethod,
    readonly train: EncodedExample[],
    readonly val: EncodedExample[],
    readonly opts: TrainOptions,
    readonly store: RunStore,
  ) {
    if (train.length === 0) throw new PeftStudioError('The training set is empty: check dataset, max_samples and val_size.');
    this.params = method.trainable();
    for (const p of this.params) {
      // A param with its own update keeps its own optimizer state (p.state).
      if (p.update) continue;
      this.m.set(p.name, e.persist(e.zeros(p.tensor.shape, `${p.name}.exp_avg`)));
      this.v.set(p.name, e.persist(e.zeros(p.tensor.shape, `${p.name}.exp_avg_sq`)));
    }
    this.batchesPerEpoch = Math.ceil(train.length / opts.batchSize);
    this.stepsPerEpoch = Math.ceil(this.batchesPerEpoch / opts.gradAccum);
    this.totalSteps = opts.maxSteps > 0 ? opts.maxSteps : Math.ceil(opts.epochs * this.stepsPerEpoch);
  }

  /** Micro-batch number `mb` (counting across epochs) → its examples. */
  private order: number[] = [];
  private orderEpoch = -1;

  private microBatch(mb: number): EncodedExample[] {
    const epoch = Math.floor(mb / this.batchesPerEpoch);
    const b = mb % this.batchesPerEpoch;
    // One permutation per epoch, computed once (not per micro-batch).
    if (this.orderEpoch !== epoch) {
      this.order = shuffledIndices(this.train.length, this.opts.seed + epoch);
      this.orderEpoch = epoch;
    }
    const order = this.order;
    return order.slice(b * this.opts.batchSize, (b + 1) * this.opts.batchSize).map((i) => this.train[i]);
  }

  trainableCount(): number {
    return this.params.reduce((a, p) => a + p.tensor.size, 0);
  }

  async run(cb: TrainCallbacks = {}): Promise<{ steps: number; log: LogEntry[] }> {
    const o = this.opts;
    // Initialisation must finish before a resume overwrites the trainable tensors.
    await this.method.ready;
    if (o.resume) await this.resume(typeof o.resume === 'string' ? o.resume : undefined, cb.onWarning);
    // The log on disk holds exactly the steps the trainer's state holds (none on a fresh start).
    else await this.store.writeLog(this.log.map((l) => JSON.stringify(l)));
    const W = warmupSteps(this.totalSteps, o.warmupSteps, o.warmupRatio);
    const t0 = performance.now();
    // Evaluation and checkpoint writes move windowStart forward by their duration: tokens/s is training speed.
    let windowLoss = 0,
      windowSteps = 0,
      windowTokens = 0,
      windowStart = performance.now(),
      stepStart = windowStart;
    this.e.pool.resetPeak();
    try {
      while (this.step < this.totalSteps) {
        if (cb.signal?.aborted) break;
        const k = this.step;
        stepStart = performance.now();
        const micro = Array.from({ length: o.gradAccum }, (_, i) => collateShifted(this.microBatch(k * o.gradAccum + i), o.padId));
        const D = micro.reduce((a, x) => a + x.valid, 0);
        const lossSum = this.e.zeros([1], 'step.loss');
        this.e.persist(lossSum);
        for (const [i, mb] of micro.entries()) {
          this.e.beginScope();
          // Dropout masks are functions of (seed, micro-batch, call site): nothing a restart loses.
          const tape = new Tape({ seed: o.seed, microBatch: k * o.gradAccum + i });
          this.e.tape = tape;
          const loss = languageModelLoss(this.e, this.model, mb, {
            attentionMask: mb.mask,
            taskIds: mb.taskIds,
            gradientCheckpointing: o.gradientCheckpointing,
          });
          this.e.tape = null;
          if (D > 0) tape.backward(loss, 1 / D);
          accumulateKernel(this.e, lossSum, loss, 1);
          this.e.endScope();
          windowTokens += mb.ids.length;
        }
        // Global grad norm, clip factor and the update, all on the GPU.
        this.e.beginScope();
        const sq = this.e.zeros([1], 'grad.sumsq');
        for (const p of this.params) if (p.tensor.grad) sumSquares(this.e, p.tensor.grad, { out: sq, accumulate: true });
        const coef = clipCoefficient(this.e, sq, o.maxGradNorm > 0 ? o.maxGradNorm : Infinity);
        const lr = o.learningRate * lrFactor(o.scheduler, k, this.totalSteps, W);
        for (const p of this.params) {
          if (!p.tensor.grad) continue;
          const decay = p.decay ?? isDecayParam(p.name);
          const u = {
            e: this.e,
            grad: p.tensor.grad,
            clip: coef,
            lr: lr * (p.lrScale ?? 1),
            step: k + 1,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weightDecay: decay ? o.weightDecay : 0,
          };
          if (p.update) {
            // A Promise (GaLore's projector refresh) must settle before the gradient is cleared.
            const pending = p.update(u);
            if (pending) await pending;
          } else adamwStep(this.e, p.tensor, u.grad, this.m.get(p.name)!, this.v.get(p.name)!, { ...u, gradScaleTensor: coef });
          this.e.clear(p.tensor.grad);
        }
        // One readback per step: the summed loss and the squared grad norm side by side.
        const stats = this.e.empty([2], 'step.stats');
        this.e.copyRegion(stats, 0, lossSum, 0, 1);
        this.e.copyRegion(stats, 1, sq, 0, 1);
        const [lossTotal, sumsq] = await this.e.read(stats);
        this.e.endScope();
        lossSum.dispose();
        const loss = D > 0 ? lossTotal / D : 0;
        const gradNorm = Math.sqrt(sumsq);
        if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
          // The update above already used non-finite numbers: stop without saving, so
          // the last checkpoint on disk stays the last good state.
          throw new NonFiniteLossError(
            `Loss became ${loss} (grad norm ${gradNorm}) at step ${k + 1}. Stopped; the last checkpoint is intact. ` +
              'Lower learning_rate, set max_grad_norm, or check the data.',
          );
        }
        this.step = k + 1;
        windowLoss += loss;
        windowSteps++;
        this.stats.steps++;
        this.stats.tokens += micro.reduce((a, x) => a + x.ids.length, 0);
        this.stats.trainMs += performance.now() - stepStart;
        cb.onStep?.(this.step, this.totalSteps);
        const last = this.step === this.totalSteps;
        if (this.step % o.loggingSteps === 0 || last) {
          const now = performance.now();
          const entry: LogEntry = {
            current_steps: this.step,
            total_steps: this.totalSteps,
            loss: round(windowLoss / windowSteps),
            lr,
            grad_norm: round(gradNorm),
            epoch: round(this.step / this.stepsPerEpoch, 4),
            percentage: round((100 * this.step) / this.totalSteps, 2),
            elapsed_time: round((now - t0) / 1000, 3),
            tokens_per_s: round((windowTokens * 1000) / (now - windowStart), 1),
            peak_gpu_bytes: this.e.pool.peak,
          };
          await this.emit(entry, cb);
          windowLoss = windowSteps = windowTokens = 0;
          windowStart = performance.now();
        }
        const pauseStart = performance.now();
        if (o.evalSteps > 0 && this.val.length && (this.step % o.evalSteps === 0 || last)) {
          const evalLoss = await this.evaluate(this.val, { onProgress: cb.onEvaluate });
          await this.emit(
            {
              current_steps: this.step,
              total_steps: this.totalSteps,
              eval_loss: round(evalLoss),
              epoch: round(this.step / this.stepsPerEpoch, 4),
              percentage: round((100 * this.step) / this.totalSteps, 2),
              elapsed_time: round((performance.now() - t0) / 1000, 3),
              peak_gpu_bytes: this.e.pool.peak,
            },
            cb,
          );
        }
        if (o.saveSteps > 0 && this.step % o.saveSteps === 0) await this.saveCheckpoint();
        // The matmul shapes of a step are known now: an autotuner times the new ones once (src/engine/matmul-tune.ts).
        await this.e.matmulTuner?.settle?.(this.e);
        windowStart += performance.now() - pauseStart;
      }
    } finally {
      this.stats.runMs += performance.now() - t0;
    }
    return { steps: this.step, log: this.log };
  }

  private async emit(entry: LogEntry, cb: TrainCallbacks): Promise<void> {
    this.log.push(entry);
    await this.store.appendLog(JSON.stringify(entry));
    cb.onLog?.(entry);
  }

  /**
   * Mean cross-entropy over the valid shifted targets of the validation set.
   * `onProgress` gets batches done / total (0 first) and is awaited: a host
   * may let other GPU work run between batches. An aborted `signal` stops
   * after the current batch with NaN.
   */
  async evaluate(
    examples = this.val,
    opts: { onProgress?: (done: number, total: number) => void | Promise<void>; signal?: AbortSignal } = {},
  ): Promise<number> {
    let total = 0,
      count = 0;
    const batches = Math.ceil(examples.length / this.opts.batchSize);
    await opts.onProgress?.(0, batches);
    for (let i = 0; i < examples.length; i += this.opts.batchSize) {
      if (opts.signal?.aborted) return NaN;
      const mb = collateShifted(examples.slice(i, i + this.opts.batchSize), this.opts.padId);
      this.e.beginScope();
      const loss = languageModelLoss(this.e, this.model, mb, { attentionMask: mb.mask, taskIds: mb.taskIds });
      total += (await this.e.read(loss))[0];
      this.e.endScope();
      count += mb.valid;
      await opts.onProgress?.(i / this.opts.batchSize + 1, batches);
    }
    return count ? total / count : 0;
  }

  /** Trainable weights (as the adapter), optimizer state and trainer state, written atomically. */
  async saveCheckpoint(): Promise<string> {
    const name = `checkpoint-${this.step}`;
    const adapter = adapterFileMap(await this.method.exportAdapter());
    const opt: Record<string, { shape: number[]; data: Float32Array }> = {};
    const weights: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const p of this.params) {
      weights[p.name] = { shape: p.tensor.shape, data: await this.e.read(p.tensor) };
      if (!p.update) {
        opt[`${p.name}.exp_avg`] = { shape: p.tensor.shape, data: await this.e.read(this.m.get(p.name)!) };
        opt[`${p.name}.exp_avg_sq`] = { shape: p.tensor.shape, data: await this.e.read(this.v.get(p.name)!) };
      }
      for (const [k, t] of p.state?.() ?? []) opt[`${p.name}.${k}`] = { shape: t.shape, data: await this.e.read(t) };
    }
    await this.store.writeCheckpoint(name, {
      ...adapter,
      'trainable.safetensors': serializeSafetensors(weights),
      'optimizer.safetensors': serializeSafetensors(opt),
      'trainer_state.json': JSON.stringify(
        {
          global_step: this.step,
          max_steps: this.totalSteps,
          epoch: this.step / this.stepsPerEpoch,
          // Data order and dropout masks are functions of (seed, step, call site): this is the whole RNG state.
          rng: { seed: this.opts.seed, step: this.step },
          log_history: this.log,
        },
        null,
        2,
      ),
    });
    return name;
  }

  /**
   * Load a checkpoint: the named one, else the newest that is whole and fits
   * this run. A damaged newest checkpoint (a 0-byte trainer_state.json, a
   * truncated optimizer file, fields of the wrong type) is skipped with a
   * warning and the previous complete one is used; a named one that is
   * damaged is an error. The trainer log is rewritten from the checkpoint's
   * log_history, so steps logged after it (and now redone) appear once.
   * Returns the checkpoint used, or null when there is none.
   */
  async resume(name?: string, onWarning?: (message: string) => void): Promise<string | null> {
    const names = name ? [name] : checkpointsNewestFirst(await this.store.listCheckpoints());
    const problems: string[] = [];
    for (const which of names) {
      let ckpt: LoadedCheckpoint;
      try {
        ckpt = await this.loadCheckpoint(which);
      } catch (err) {
        if (!(err instanceof CheckpointError) || name) throw err;
        problems.push(err.message);
        continue;
      }
      if (problems.length) onWarning?.(`${problems.join(' ')} Resuming from ${which} instead.`);
      for (const [t, data] of ckpt.writes) this.e.write(t, data);
      this.step = ckpt.step;
      this.log = ckpt.log;
      await this.store.writeLog(this.log.map((l) => JSON.stringify(l)));
      return which;
    }
    if (!problems.length) {
      // Nothing to resume: a fresh start, whose log starts empty.
      await this.store.writeLog(this.log.map((l) => JSON.stringify(l)));
      return null;
    }
    throw new CheckpointError(
      `No usable checkpoint to resume from. ${problems.join(' ')} ` +
        'Start the run again without resume_from_checkpoint (set overwrite_output_dir: true), or point resume_from_checkpoint at a good copy.',
    );
  }

  /** Read and check every part of a checkpoint before anything is written to the GPU. */
  private async loadCheckpoint(which: string): Promise<LoadedCheckpoint> {
    const bad = (why: string) => new CheckpointError(`Checkpoint ${which} is unusable: ${why}.`);
    const files = await this.store.readCheckpoint(which);
    if (!files) throw bad('it does not exist or cannot be read');
    for (const f of ['trainer_state.json', 'trainable.safetensors', 'optimizer.safetensors']) {
      if (!files[f]?.byteLength) throw bad(`${f} is ${files[f] ? 'empty' : 'missing'}`);
    }
    let state: Record<string, unknown>;
    try {
      state = JSON.parse(new TextDecoder().decode(files['trainer_state.json']));
    } catch {
      throw bad('trainer_state.json is not valid JSON (truncated?)');
    }
    if (!state || typeof state !== 'object' || Array.isArray(state)) throw bad('trainer_state.json is not a JSON object');
    const step = state.global_step;
    if (typeof step !== 'number' || !Number.isInteger(step) || step < 0)
      throw bad(`trainer_state.json has global_step ${JSON.stringify(step)}, not a whole number of steps`);
    const named = /^checkpoint-(\d+)$/.exec(which);
    if (named && Number(named[1]) !== step) throw bad(`trainer_state.json says global_step ${step} but the folder is named for step ${named[1]}`);
    const history = state.log_history ?? [];
    if (!Array.isArray(history) || history.some((l) => !l || typeof l !== 'object' || typeof (l as LogEntry).current_steps !== 'number')) {
      throw bad('trainer_state.json has a log_history that is not a list of log entries');
    }
    const tensorsOf = (f: string) => {
      try {
        return parseSafetensors(files[f], `${which}/${f}`).tensors;
      } catch (err) {
        throw bad(`${f} is damaged (${(err as Error).message})`);
      }
    };
    const weights = tensorsOf('trainable.safetensors');
    const opt = tensorsOf('optimizer.safetensors');
    const writes: [Tensor, Float32Array][] = [];
    const take = (t: Tensor, key: string, from: Map<string, { shape: number[]; data: Float32Array }>, file: string) => {
      const saved = from.get(key);
      if (!saved) throw bad(`${file} has no tensor ${key} (was it written by the same method and config?)`);
      if (saved.data.length !== t.size || saved.shape.join() !== t.shape.join()) {
        throw bad(`${file} holds ${key} with shape [${saved.shape}], this run's is [${t.shape}] (was the rank, target or model changed?)`);
      }
      writes.push([t, saved.data]);
    };
    for (const p of this.params) {
      take(p.tensor, p.name, weights, 'trainable.safetensors');
      if (!p.update) {
        take(this.m.get(p.name)!, `${p.name}.exp_avg`, opt, 'optimizer.safetensors');
        take(this.v.get(p.name)!, `${p.name}.exp_avg_sq`, opt, 'optimizer.safetensors');
      }
      for (const [k, t] of p.state?.() ?? []) take(t, `${p.name}.${k}`, opt, 'optimizer.safetensors');
    }
    return { step, log: history as LogEntry[], writes };
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
  }
}

function round(x: number, digits = 6): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
