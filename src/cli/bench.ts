/**
 * `peft-studio bench`: forward and forward+backward throughput (tokens/s) and
 * peak GPU bytes, for stories260K and for model shapes with random weights
 * (throughput does not depend on weight values): bench/<name>.config.json,
 * listed in bench/bench.json with their batch, sequence and timed steps
 * (`--only` picks any of them; SmolLM2-135M's shape runs by default,
 * Qwen2.5-0.5B's and Llama-3.2-1B's on request). Each training step reports
 * tokens/s, the pool's peak GPU bytes beside the studio's estimate
 * (src/ui/memory.ts), the process RSS and, for shapes loaded from a file,
 * load time and host RSS during the load. The methods' configs come from
 * bench/bench.json too. Per-kernel GPU times are added where the adapter has
 * timestamp-query and reports non-zero times (SwiftShader reports zeros).
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Engine } from '../engine/engine';
import { Tape } from '../engine/tape';
import { KernelTimer } from '../gpu/timer';
import { LocalFolderSource } from '../hub/node';
import { parseModelConfig, type ModelConfig } from '../model/config';
import { readConfig, readWeights, modelFromWeights, loadModel, type BaseDtype } from '../model/load';
import { f32ToF16 } from '../model/safetensors';
import { estimateTrainingBytes } from '../ui/memory';
import { ConfigError } from '../errors';
import type { LlamaModel } from '../model/llama';
import { builtinMethods, methodNameFor, resolveMethod } from '../methods/registry';
import { methodMemoryInputs } from '../methods/count';
import { svdTopR } from '../methods/svd';
import { MatmulTuner, adapterKey, type TuneEntry } from '../engine/matmul-tune';
import { matmulVariants } from '../engine/ops/matmul';
import { seededRandom } from '../model/generate';
import { Trainer, collateShifted, type TrainOptions } from '../train/trainer';
import { MemoryRunStore } from '../train/store';
import { languageModelLoss } from '../train/loss';

export interface BenchOptions {
  steps: number;
  /** Folder of stories260K (default: ../shared/hub or .cache/hub). */
  storiesDir?: string;
  only?: string[];
  /** Called with the results so far (same form as the final result, `complete: false`) after each model and each step of a file shape. */
  onPartial?: (partial: Record<string, unknown>) => Promise<void> | void;
  /**
   * Memory only, for one step of one file shape (`only` names it; the index
   * into its steps): load, attach, encode one training micro-batch (forward,
   * loss, backward) and report the pool's peak at the end of the encoding,
   * without waiting for the GPU to execute it. The pool accounts buffers when
   * commands are encoded, so this is the peak the full step reports; it is for
   * machines where a step of a 1B model takes longer than one can wait. The
   * caller exits the process afterwards (the GPU work is abandoned).
   */
  memoryOnlyStep?: number;
  /**
   * Only step N of a file shape's `steps` (the full timed step, not memory
   * only): one step of a 1B shape takes tens of minutes on SwiftShader, so
   * each can run as its own process.
   */
  onlyStep?: number;
}

interface BenchCase {
  batch: number;
  seq: number;
  /** Also time one training step of every built-in method (with and without recomputation); a fresh model after a method that released base weights (QLoRA). */
  methods?: { reload: () => LlamaModel };
}

/** bench/bench.json: the methods' configs and the model shapes to run (see its _comment). */
interface BenchSpec {
  /** Which entries of `methods` the reference steps use. */
  step: { lora: string; qlora: string };
  methods: Record<string, Record<string, unknown>>;
  shapes: Record<string, ShapeSpec>;
}

interface ShapeSpec {
  batch: number;
  seq: number;
  /** Run without --only. */
  default?: boolean;
  /** Also time forward and forward+backward of the whole model (all weights trainable). */
  forward?: boolean;
  /** Write the random weights as a safetensors file in the config's torch_dtype and load it through the loader. */
  file?: boolean;
  /** Timed training steps: [entry of `methods`, gradient_checkpointing]. */
  steps: [string, boolean][];
}

function benchFile(name: string): URL {
  return new URL(`../bench/${name}`, import.meta.url);
}

function readSpec(): BenchSpec {
  return JSON.parse(readFileSync(benchFile('bench.json'), 'utf8')) as BenchSpec;
}

/** Resident set size of this process now; on SwiftShader it includes the GPU's buffers (device memory is host memory). */
function rss(): number {
  return process.memoryUsage().rss;
}

/** The highest RSS seen while `f` runs (sampled every 20 ms, and at its start and end). */
async function withRssPeak<T>(f: () => Promise<T>): Promise<{ value: T; peak: number }> {
  let peak = rss();
  const timer = setInterval(() => (peak = Math.max(peak, rss())), 20);
  try {
    const value = await f();
    return { value, peak: Math.max(peak, rss()) };
  } finally {
    clearInterval(timer);
  }
}

interface StepOptions {
  gradientCheckpointing?: boolean;
  /** Time the first step too (no warm-up step): for shapes whose step takes minutes. */
  noWarmup?: boolean;
}

/**
 * Time training steps of one method (after one warm-up step unless
 * `noWarmup`): ms, tokens/s, the pool's peak GPU bytes, the studio's estimate
 * of it (src/ui/memory.ts) and the process RSS.
 */
async function trainStep(
  e: Engine,
  model: LlamaModel,
  ids: Int32Array,
  B: number,
  T: number,
  steps: number,
  config: Record<string, unknown>,
  so: StepOptions = {},
) {
  const attached = resolveMethod(config).attach({ e, model, config: { seed: 1, ...config }, random: seededRandom(1) });
  await attached.ready;
  await e.sync();
  const examples = Array.from({ length: B }, (_, b) => {
    const x = Array.from(ids.subarray(b * T, (b + 1) * T));
    return { inputIds: x, labels: x };
  });
  const residentBytes = e.pool.inUse;
  const stamps: number[] = [];
  const warm = so.noWarmup ? 0 : 1;
  const trainer = new Trainer(e, model, attached, examples, [], benchTrainOptions(B, steps + warm, so.gradientCheckpointing), new MemoryRunStore());
  const estimate = estimateTrainingBytes(
    { ...model.config, numParams: model.numParams() },
    {
      ...methodMemoryInputs(model, attached),
      batch: B,
      seq: T,
      recompute: so.gradientCheckpointing,
      residentBytes,
    },
  );
  e.pool.resetPeak();
  stamps.push(performance.now());
  const { peak: rssPeak } = await withRssPeak(() => trainer.run({ onStep: () => stamps.push(performance.now()) }));
  const ms = (stamps[stamps.length - 1] - stamps[warm]) / Math.max(1, stamps.length - 1 - warm);
  const out = {
    ms_per_step: +ms.toFixed(2),
    tokens_per_s: +((B * T * 1000) / ms).toFixed(1),
    peak_gpu_bytes: e.pool.peak,
    estimated_gpu_bytes: estimate.total,
    estimate_over_peak: +(estimate.total / e.pool.peak).toFixed(3),
    host_peak_rss_bytes: rssPeak,
    trainable_params: trainer.trainableCount(),
    ...(so.gradientCheckpointing ? { gradient_checkpointing: true } : {}),
  };
  trainer.dispose();
  attached.detach();
  e.pool.trim();
  return out;
}

/** See BenchOptions.memoryOnlyStep: one micro-batch encoded as Trainer.run encodes it, and the pool's peak then. */
async function encodedStepPeak(e: Engine, model: LlamaModel, ids: Int32Array, B: number, T: number, config: Record<string, unknown>, gc: boolean) {
  const attached = resolveMethod(config).attach({ e, model, config: { seed: 1, ...config }, random: seededRandom(1) });
  await attached.ready;
  await e.sync();
  const residentBytes = e.pool.inUse;
  const examples = Array.from({ length: B }, (_, b) => {
    const x = Array.from(ids.subarray(b * T, (b + 1) * T));
    return { inputIds: x, labels: x };
  });
  // The trainer's constructor allocates the AdamW moments, as in a real step.
  const trainer = new Trainer(e, model, attached, examples, [], benchTrainOptions(B, 1, gc), new MemoryRunStore());
  const estimate = estimateTrainingBytes(
    { ...model.config, numParams: model.numParams() },
    { ...methodMemoryInputs(model, attached), batch: B, seq: T, recompute: gc, residentBytes },
  );
  e.pool.resetPeak();
  const mb = collateShifted(examples, 0);
  e.beginScope();
  const tape = new Tape({ seed: 1, microBatch: 0 });
  e.tape = tape;
  const loss = languageModelLoss(e, model, mb, { attentionMask: mb.mask, gradientCheckpointing: gc });
  e.tape = null;
  tape.backward(loss, 1 / mb.valid);
  e.flush();
  const peak = e.pool.peak;
  return {
    peak_gpu_bytes_encoded: peak,
    estimated_gpu_bytes: estimate.total,
    estimate_over_peak: +(estimate.total / peak).toFixed(3),
    resident_gpu_bytes: residentBytes,
    trainable_params: trainer.trainableCount(),
    host_rss_bytes: rss(),
    note: 'memory only: the pool peak of one encoded micro-batch (forward, loss, backward); the GPU execution was not awaited',
  };
}

function findStories(dir?: string): string | null {
  const cands = [dir, path.resolve('../shared/hub/models/stories260K'), path.resolve('.cache/hub/models/stories260K')];
  return cands.find((c) => c && existsSync(path.join(c, 'config.json'))) ?? null;
}

/** Names and shapes of every weight of a config (q/k/v biases where the architecture has them). */
function weightShapes(cfg: ModelConfig): [string, number[], number][] {
  const { hiddenSize: C, headDim: D, numHeads: Hq, numKvHeads: Hkv, intermediateSize: F, vocabSize: V } = cfg;
  // [name, shape, scale of the uniform values; 0 = ones (norm weights)]
  const out: [string, number[], number][] = [['model.embed_tokens.weight', [V, C], 1]];
  const lin = (n: string, o: number, i: number) => out.push([`${n}.weight`, [o, i], 1 / Math.sqrt(i)]);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    lin(`${p}.self_attn.q_proj`, Hq * D, C);
    lin(`${p}.self_attn.k_proj`, Hkv * D, C);
    lin(`${p}.self_attn.v_proj`, Hkv * D, C);
    if (cfg.attentionBias.qkv) for (const n of ['q', 'k', 'v']) out.push([`${p}.self_attn.${n}_proj.bias`, [n === 'q' ? Hq * D : Hkv * D], 0.02]);
    lin(`${p}.self_attn.o_proj`, C, Hq * D);
    lin(`${p}.mlp.gate_proj`, F, C);
    lin(`${p}.mlp.up_proj`, F, C);
    lin(`${p}.mlp.down_proj`, C, F);
    out.push([`${p}.input_layernorm.weight`, [C], 0], [`${p}.post_attention_layernorm.weight`, [C], 0]);
  }
  out.push(['model.norm.weight', [C], 0]);
  if (!cfg.tieWordEmbeddings) lin('lm_head', V, C);
  return out;
}

/** Deterministic pseudo-random values (an LCG), uniform in ±scale; ones for scale 0. */
function randomFiller(seed = 12345) {
  let s = seed;
  return (a: Float32Array, scale: number) => {
    if (scale === 0) return a.fill(1);
    for (let i = 0; i < a.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      a[i] = ((s / 4294967296) * 2 - 1) * scale;
    }
    return a;
  };
}

/** Random weights with roughly unit-scale activations, on the host as f32. */
function randomHostWeights(cfg: ModelConfig): Map<string, { shape: number[]; data: Float32Array }> {
  const fill = randomFiller();
  const w = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, shape, scale] of weightShapes(cfg)) w.set(name, { shape, data: fill(new Float32Array(shape.reduce((a, b) => a * b, 1)), scale) });
  return w;
}

/**
 * The same random weights written as `dir/model.safetensors` in `dtype`, one
 * tensor at a time (a 1B model never exists as f32 on the host), with the
 * config beside it; kept and reused while config and dtype are unchanged.
 * F16/BF16 values are truncated, not rounded: they are random anyway.
 */
export function writeRandomCheckpoint(dir: string, configText: string, cfg: ModelConfig, dtype: 'F32' | 'F16' | 'BF16'): void {
  const shapes = weightShapes(cfg);
  const width = dtype === 'F32' ? 4 : 2;
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', note: 'peft-studio bench: random weights' } };
  let offset = 0;
  for (const [name, shape] of shapes) {
    const bytes = shape.reduce((a, b) => a * b, 1) * width;
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const file = path.join(dir, 'model.safetensors');
  const size = 8 + json.length + offset;
  if (
    existsSync(file) &&
    statSync(file).size === size &&
    existsSync(path.join(dir, 'config.json')) &&
    readFileSync(path.join(dir, 'config.json'), 'utf8') === configText
  )
    return;
  mkdirSync(dir, { recursive: true });
  const fd = openSync(file + '.tmp', 'w');
  try {
    const head = new Uint8Array(8 + json.length);
    new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
    head.set(new TextEncoder().encode(json), 8);
    writeSync(fd, head);
    const fill = randomFiller();
    const CHUNK = 1 << 20;
    const f32 = new Float32Array(CHUNK);
    const u32 = new Uint32Array(f32.buffer);
    const u16 = new Uint16Array(CHUNK);
    for (const [, shape, scale] of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      for (let i = 0; i < n; i += CHUNK) {
        const m = Math.min(CHUNK, n - i);
        const part = fill(f32.subarray(0, m), scale);
        if (dtype === 'F32') writeSync(fd, new Uint8Array(part.buffer, 0, m * 4));
        else {
          for (let j = 0; j < m; j++) u16[j] = dtype === 'BF16' ? u32[j] >>> 16 : f32ToF16(f32[j]);
          writeSync(fd, new Uint8Array(u16.buffer, 0, m * 2));
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  renameSync(file + '.tmp', file);
  writeFileSync(path.join(dir, 'config.json'), configText);
}

async function timeSteps(e: Engine, steps: number, fn: () => void): Promise<number> {
  // One warm-up step compiles pipelines and fills the pool.
  fn();
  await e.sync();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    fn();
    await e.sync();
  }
  return (performance.now() - t0) / steps;
}

async function benchModel(e: Engine, spec: BenchSpec, name: string, model: LlamaModel, c: BenchCase, steps: number) {
  const { batch: B, seq: T } = c;
  const V = model.config.vocabSize;
  const ids = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) ids[i] = (i * 7919 + 3) % V;
  const labels = new Int32Array(B * T);
  for (let i = 0; i < labels.length; i++) labels[i] = (i + 1) % T === 0 ? -100 : ids[i + 1];
  const labelled = labels.filter((y) => y !== -100).length;

  e.pool.resetPeak();
  const fwdMs = await timeSteps(e, steps, () => {
    e.beginScope();
    model.forward(ids, B);
    e.endScope();
  });
  const fwdPeak = e.pool.peak;

  model.setTrainable(true);
  e.pool.resetPeak();
  const fwdBwdMs = await timeSteps(e, steps, () => {
    e.beginScope();
    const tape = new Tape();
    e.tape = tape;
    const loss = languageModelLoss(e, model, { ids, targets: labels, B, T });
    e.tape = null;
    tape.backward(loss, 1 / labelled);
    e.endScope();
    for (const p of model.params.values()) {
      p.grad?.dispose();
      p.grad = null;
    }
  });
  const fwdBwdPeak = e.pool.peak;
  model.setTrainable(false);

  // The reference workload: one LoRA training step (r 8, alpha 16 on q_proj
  // and v_proj, AdamW, clipping) at batch B x T, all tokens labelled.
  const loraStep = await trainStep(e, model, ids, B, T, steps, spec.methods[spec.step.lora]);
  const loraStepRecomputed = c.methods ? await trainStep(e, model, ids, B, T, steps, spec.methods[spec.step.lora], { gradientCheckpointing: true }) : undefined;
  type MethodSteps = Record<string, Awaited<ReturnType<typeof trainStep>> | { error: string }>;
  const methods: MethodSteps = {};
  const methodsRecomputed: MethodSteps = {};
  let current = model;
  if (c.methods) {
    for (const [name, cfg] of Object.entries(spec.methods)) {
      if (!builtinMethods.has(methodNameFor(cfg))) continue;
      for (const [out, gradientCheckpointing] of [
        [methods, false],
        [methodsRecomputed, true],
      ] as const) {
        try {
          out[name] = await trainStep(e, current, ids, B, T, steps, cfg, { gradientCheckpointing });
        } catch (err) {
          out[name] = { error: (err as Error).message };
        }
        // QLoRA quantizes the base weights and releases the f32 ones: the next step needs the model whole.
        if (current.releasedShapes.size > 0) {
          if (current !== model) current.dispose();
          current = c.methods.reload();
        }
      }
    }
  }

  let kernels: Record<string, { ms: number; calls: number }> | undefined;
  if (e.ctx.features.has('timestamp-query')) {
    const timer = new KernelTimer(e.device, e.ctx.features);
    e.timer = timer;
    e.beginScope();
    current.forward(ids, B);
    e.endScope();
    const k = await timer.collect();
    e.timer = null;
    if (Object.values(k).some((x) => x.ms > 0)) kernels = k;
  }
  if (current !== model) current.dispose();
  return {
    model: name,
    params: model.numParams(),
    batch: B,
    seq: T,
    steps,
    forward: { ms_per_step: +fwdMs.toFixed(2), tokens_per_s: +((B * T * 1000) / fwdMs).toFixed(1), peak_gpu_bytes: fwdPeak },
    forward_backward: { ms_per_step: +fwdBwdMs.toFixed(2), tokens_per_s: +((B * T * 1000) / fwdBwdMs).toFixed(1), peak_gpu_bytes: fwdBwdPeak },
    lora_train_step: loraStep,
    ...(loraStepRecomputed ? { lora_train_step_gradient_checkpointing: loraStepRecomputed } : {}),
    ...(c.methods ? { train_step_by_method: methods, train_step_by_method_gradient_checkpointing: methodsRecomputed } : {}),
    ...(kernels ? { forward_kernels_ms: kernels } : {}),
  };
}

/** CPU float64 SVD time for PiSSA / SVFT / GaLore on SmolLM2-135M-shaped layers (r 8). */
function svdTiming() {
  const out: Record<string, { pissa_iter_16_ms: number; exact_ms: number }> = {};
  let s = 7;
  for (const [name, rows, cols] of [
    ['q_proj 576x576', 576, 576],
    ['k_proj 192x576', 192, 576],
    ['up_proj 1536x576', 1536, 576],
  ] as const) {
    const W = new Float32Array(rows * cols);
    for (let i = 0; i < W.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      W[i] = (s / 4294967296 - 0.5) * 0.1;
    }
    const time = (f: () => void) => {
      const t = performance.now();
      f();
      return +(performance.now() - t).toFixed(1);
    };
    out[name] = { pissa_iter_16_ms: time(() => svdTopR(W, rows, cols, 8, 16)), exact_ms: time(() => svdTopR(W, rows, cols, 8, -1)) };
  }
  return out;
}

/**
 * One shape written as a safetensors file in its torch_dtype and loaded
 * through the loader, then each of its timed steps on a freshly loaded model
 * (QLoRA releases the base weights it quantizes; a fresh load also gives each
 * step the same starting pool). Steps are timed without a warm-up step: on
 * SwiftShader one step of these shapes takes minutes; pipelines are compiled
 * by an unreported warm-up on a one-layer model of the same family first.
 */
async function benchShapeFile(
  e: Engine,
  spec: BenchSpec,
  name: string,
  configText: string,
  cfg: ModelConfig,
  shape: ShapeSpec,
  log: (s: string) => void,
  onStep: (partial: Record<string, unknown>) => Promise<void>,
  memoryOnlyStep?: number,
  onlyStep?: number,
) {
  const torchDtype = String((JSON.parse(configText) as { torch_dtype?: unknown }).torch_dtype ?? 'float32');
  if (!['float32', 'float16', 'bfloat16'].includes(torchDtype))
    throw new ConfigError(`bench/${name}.config.json: torch_dtype ${torchDtype} is not float32, float16 or bfloat16.`);
  const dtype = torchDtype === 'bfloat16' ? 'BF16' : torchDtype === 'float16' ? 'F16' : 'F32';
  const dir = path.resolve('.cache', 'bench', `${name}-${dtype.toLowerCase()}`);
  const tw = performance.now();
  writeRandomCheckpoint(dir, configText, cfg, dtype);
  const fileBytes = statSync(path.join(dir, 'model.safetensors')).size;
  log(
    `bench: ${name} shape, random weights, ${dtype} file ${dir} (${(fileBytes / 2 ** 30).toFixed(2)} GiB, ready in ${((performance.now() - tw) / 1000).toFixed(1)} s)`,
  );
  const { batch: B, seq: T } = shape;
  const ids = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) ids[i] = (i * 7919 + 3) % cfg.vocabSize;
  // Warm-up, not reported: the same steps on a one-layer model of the same
  // family (head size, biases, RoPE scaling, packed dtype), so that pipeline
  // compilation (tens of seconds on SwiftShader) is not in the timed steps.
  const tiny = parseModelConfig(
    {
      ...(JSON.parse(configText) as Record<string, unknown>),
      hidden_size: 2 * cfg.headDim,
      head_dim: cfg.headDim,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      intermediate_size: 256,
      num_hidden_layers: 1,
      vocab_size: 512,
    },
    `bench/${name}.config.json (warm-up)`,
  );
  const tinyIds = ids.map((x) => x % 512);
  const memoryOnly = memoryOnlyStep !== undefined;
  for (const i of [memoryOnlyStep, onlyStep]) {
    if (i !== undefined && !shape.steps[i])
      throw new ConfigError(`bench: shape ${name} has ${shape.steps.length} steps (0-${shape.steps.length - 1} in bench/bench.json); there is no step ${i}.`);
  }
  const chosen = onlyStep === undefined ? shape.steps : [shape.steps[onlyStep]];
  for (const [method, gc] of memoryOnly ? [] : chosen) {
    const model = modelFromWeights(e, tiny, randomHostWeights(tiny), { baseDtype: torchDtype as BaseDtype });
    try {
      await trainStep(e, model, tinyIds, B, T, 1, spec.methods[method] ?? {}, { gradientCheckpointing: gc, noWarmup: true });
    } catch (err) {
      log(`bench: ${name} warm-up of ${method}: ${(err as Error).message} (the timed step will say more)`);
    } finally {
      model.dispose();
    }
  }
  const steps: Record<string, unknown>[] = [];
  let params = 0;
  for (const [method, gc] of memoryOnly ? [shape.steps[memoryOnlyStep!]] : chosen) {
    const config = spec.methods[method];
    if (!config) throw new ConfigError(`bench/bench.json: shape ${name} names method '${method}', which is not in "methods".`);
    e.pool.trim();
    const baseline = rss();
    const t0 = performance.now();
    const { value: loaded, peak } = await withRssPeak(() => loadModel(e, new LocalFolderSource(dir), { tokenizer: false }));
    await e.sync();
    const load = {
      load_ms: Math.round(performance.now() - t0),
      host_rss_baseline_bytes: baseline,
      host_peak_rss_bytes: peak,
      host_rss_above_baseline_bytes: peak - baseline,
      gpu_bytes_after_load: e.pool.inUse,
      // On a CPU adapter the GPU's buffers are host memory too: what the load held beyond them.
      host_rss_above_baseline_less_gpu_bytes: peak - baseline - e.pool.current,
    };
    params = loaded.model.numParams();
    log(`bench: ${name} ${method}${gc ? ' + gradient_checkpointing' : ''}: loaded in ${load.load_ms} ms, stepping`);
    try {
      if (memoryOnly) {
        const r = await encodedStepPeak(e, loaded.model, ids, B, T, config, gc);
        steps.push({ method, gradient_checkpointing: gc, ...r, ...load });
        return {
          model: `${name}-shape (random weights, ${dtype} file)`,
          params,
          batch: B,
          seq: T,
          file_dtype: dtype,
          file_bytes: fileBytes,
          train_steps: steps,
        };
      }
      const r = await trainStep(e, loaded.model, ids, B, T, 1, config, { gradientCheckpointing: gc, noWarmup: true });
      steps.push({ method, gradient_checkpointing: gc, ...r, ...load });
      log(
        `bench: ${name} ${method}${gc ? ' + gradient_checkpointing' : ''}: ${r.ms_per_step} ms, peak ${r.peak_gpu_bytes} B, estimate ${r.estimated_gpu_bytes} B`,
      );
    } catch (err) {
      steps.push({ method, gradient_checkpointing: gc, error: (err as Error).message, ...load });
      log(`bench: ${name} ${method}: ${(err as Error).message}`);
    } finally {
      loaded.model.dispose();
      e.pool.trim();
    }
    await onStep({
      model: `${name}-shape (random weights, ${dtype} file)`,
      params,
      batch: B,
      seq: T,
      file_dtype: dtype,
      file_bytes: fileBytes,
      train_steps: steps,
    });
  }
  return { model: `${name}-shape (random weights, ${dtype} file)`, params, batch: B, seq: T, file_dtype: dtype, file_bytes: fileBytes, train_steps: steps };
}

/**
 * The reference LoRA step with the base weights in f32 and packed as BF16
 * (rounded to nearest even), alternating f32, BF16, f32, BF16 so that both
 * see the same machine load; the best of each pair, and their ratio.
 */
async function packedVsF32(
  e: Engine,
  spec: BenchSpec,
  cfg: ModelConfig,
  host: Map<string, { shape: number[]; data: Float32Array }>,
  B: number,
  T: number,
  steps: number,
) {
  const ids = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) ids[i] = (i * 7919 + 3) % cfg.vocabSize;
  const best: Record<'float32' | 'bfloat16', Awaited<ReturnType<typeof trainStep>> | null> = { float32: null, bfloat16: null };
  for (let round = 0; round < 2; round++) {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const model = modelFromWeights(e, cfg, host, { baseDtype: dtype });
      try {
        const r = await trainStep(e, model, ids, B, T, steps, spec.methods[spec.step.lora]);
        if (!best[dtype] || r.tokens_per_s > best[dtype]!.tokens_per_s) best[dtype] = r;
      } finally {
        model.dispose();
      }
    }
  }
  return { f32: best.float32, bf16_base: best.bfloat16, bf16_over_f32_tokens_per_s: +(best.bfloat16!.tokens_per_s / best.float32!.tokens_per_s).toFixed(3) };
}

/**
 * What the matmul autotuner (src/engine/matmul-tune.ts) measures on this
 * adapter for the linear layers of stories260K (8 x 64 tokens) and of
 * SmolLM2-135M (256 tokens, and decoding steps of 1 and 4 sequences): ms per
 * call of every kernel that can run the shape, and the winner; SmolLM2's also
 * with the weight packed as BF16 (the kernels that read it packed: v4, v5, v6,
 * and gemv for decoding). A fresh tuner with no store: the
 * numbers are this run's, and nothing is cached by the bench.
 */
async function autotuneTable(e: Engine) {
  const tuner = new MatmulTuner(adapterKey(e.ctx.adapterInfo), null, { budgetMs: 200 });
  const shapes: [string, number, number, number][] = [
    ['stories260K q_proj 512x64x64', 512, 64, 64],
    ['stories260K up_proj 512x172x64', 512, 172, 64],
    ['stories260K down_proj 512x64x172', 512, 64, 172],
    ['stories260K lora_A 512x8x64', 512, 8, 64],
    ['smollm2 q_proj 256x576x576', 256, 576, 576],
    ['smollm2 up_proj 256x1536x576', 256, 1536, 576],
    ['smollm2 down_proj 256x576x1536', 256, 576, 1536],
    // Decoding: one sequence (M 1) and four (M 4) per step; gemv is a candidate here.
    ['smollm2 q_proj decode 1x576x576', 1, 576, 576],
    ['smollm2 up_proj decode 4x1536x576', 4, 1536, 576],
  ];
  const out: Record<string, TuneEntry | null> = {};
  for (const [name, M, N, K] of shapes) {
    const o = { transB: true };
    out[name] = await tuner.time(e, { M, N, K, o, variants: matmulVariants(e, M, N, K, o) });
    if (name.startsWith('smollm2')) out[`${name} bf16`] = await tuner.time(e, { M, N, K, o, variants: matmulVariants(e, M, N, K, o, 'bf16'), dtypeB: 'bf16' });
  }
  return out;
}

export async function runBench(e: Engine, opts: BenchOptions) {
  const spec = readSpec();
  const known = ['stories260K', 'autotune', ...Object.keys(spec.shapes)];
  for (const n of opts.only ?? []) {
    if (!known.includes(n))
      throw new ConfigError(
        `bench --only: no model shape '${n}'. Known: ${known.join(', ')} (a shape is bench/<name>.config.json, listed under "shapes" in bench/bench.json).`,
      );
  }
  const wanted = (n: string, byDefault: boolean) => (opts.only ? opts.only.includes(n) : byDefault);
  const results: Record<string, unknown>[] = [];
  const started = new Date().toISOString();
  const partial = async (current?: Record<string, unknown>) =>
    opts.onPartial?.({ date: started, complete: false, adapter: e.ctx.adapterInfo, results: current ? [...results, current] : results });
  const log = (s: string) => process.stderr.write(s + '\n');
  const stories = findStories(opts.storiesDir);
  if (stories && wanted('stories260K', true)) {
    log(`bench: stories260K from ${stories}`);
    const source = new LocalFolderSource(stories);
    const cfg = await readConfig(source);
    const host = await readWeights(source);
    const model = modelFromWeights(e, cfg, host);
    const r = await benchModel(e, spec, 'stories260K', model, { batch: 8, seq: 64, methods: { reload: () => modelFromWeights(e, cfg, host) } }, opts.steps);
    model.dispose();
    const vs = await packedVsF32(e, spec, cfg, host, 8, 64, opts.steps).catch((err: Error) => ({ error: err.message }));
    results.push({ ...r, lora_train_step_f32_vs_bf16_base: vs });
    await partial();
  } else if (!stories) {
    log('bench: stories260K not found (../shared/hub or .cache/hub); skipped');
  }
  for (const [name, shape] of Object.entries(spec.shapes)) {
    if (!wanted(name, !!shape.default)) continue;
    const configText = readFileSync(benchFile(`${name}.config.json`), 'utf8');
    const cfg = parseModelConfig(JSON.parse(configText), `bench/${name}.config.json`);
    if (shape.file) {
      results.push(await benchShapeFile(e, spec, name, configText, cfg, shape, log, partial, opts.memoryOnlyStep, opts.onlyStep));
      await partial();
      continue;
    }
    log(`bench: ${name} shape, random weights`);
    const model = modelFromWeights(e, cfg, randomHostWeights(cfg));
    results.push(await benchModel(e, spec, `${name}-shape (random weights)`, model, { batch: shape.batch, seq: shape.seq }, Math.min(opts.steps, 2)));
    model.dispose();
    await partial();
  }
  const autotune = wanted('autotune', true) ? await autotuneTable(e) : undefined;
  return {
    date: started,
    complete: true,
    adapter: e.ctx.adapterInfo,
    results,
    ...(autotune ? { matmul_autotune_ms: autotune } : {}),
    svd_cpu_ms_smollm2_layers: svdTiming(),
  };
}

/** The trainer settings of a bench step: AdamW at a constant 1e-4, no logging, checkpoints or evaluation. */
export function benchTrainOptions(batchSize: number, maxSteps: number, gradientCheckpointing = false): TrainOptions {
  return {
    batchSize,
    gradAccum: 1,
    learningRate: 1e-4,
    weightDecay: 0,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    epochs: 1,
    maxSteps,
    scheduler: 'constant',
    warmupRatio: 0,
    warmupSteps: 0,
    loggingSteps: 1000,
    saveSteps: 0,
    evalSteps: 0,
    maxGradNorm: 1,
    seed: 1,
    padId: 0,
    gradientCheckpointing,
  };
}
