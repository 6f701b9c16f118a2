/**
 * `peft-studio bench`: forward and forward+backward throughput (tokens/s) and
 * peak GPU bytes, for stories260K and for a model of SmolLM2-135M's shape with
 * random weights (throughput does not depend on weight values). Per-kernel
 * GPU times are added where the adapter has timestamp-query and reports
 * non-zero times (SwiftShader reports zeros).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Engine } from '../engine/engine';
import { Tape } from '../engine/tape';
import { crossEntropy } from '../engine/ops/cross_entropy';
import { KernelTimer } from '../gpu/timer';
import { LocalFolderSource } from '../hub/node';
import { parseModelConfig, type ModelConfig } from '../model/config';
import { readConfig, readWeights, modelFromWeights } from '../model/load';
import type { LlamaModel } from '../model/llama';
import { builtinMethods, methodNameFor, resolveMethod } from '../methods/registry';
import { svdTopR } from '../methods/svd';
import { seededRandom } from '../model/generate';
import { Trainer } from '../train/trainer';
import { MemoryRunStore } from '../train/store';

export interface BenchOptions {
  steps: number;
  /** Folder of stories260K (default: ../shared/hub or .cache/hub). */
  storiesDir?: string;
  only?: string[];
}

interface BenchCase {
  model: string;
  batch: number;
  seq: number;
  /** Also time one training step of every built-in method. */
  methods?: boolean;
}

/** Each method with the options of the comparison (LoRA family r 8 on q_proj, v_proj). */
const METHOD_CONFIGS: Record<string, Record<string, unknown>> = {
  lora: { finetuning_type: 'lora', lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'] },
  dora: { finetuning_type: 'lora', lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'], use_dora: true },
  pissa: { finetuning_type: 'lora', lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'], pissa_init: true, pissa_iter: 16 },
  oft: { finetuning_type: 'oft', oft_rank: 0, oft_block_size: 32, oft_target: ['q_proj', 'v_proj'] },
  svft: { finetuning_type: 'svft', target_modules: ['q_proj', 'v_proj'], rank: 8, off_diag: 2, pattern: 'banded' },
  full: { finetuning_type: 'full' },
  galore: { finetuning_type: 'full', use_galore: true, galore_rank: 16, galore_update_interval: 200, galore_scale: 0.25, galore_target: 'all' },
  'prompt-tuning': { finetuning_type: 'prompt-tuning', num_virtual_tokens: 10 },
  'prefix-tuning': { finetuning_type: 'prefix-tuning', num_virtual_tokens: 10, prefix_projection: true },
  'p-tuning': { finetuning_type: 'p-tuning', num_virtual_tokens: 10 },
  'p-tuning-v2': { finetuning_type: 'p-tuning-v2', num_virtual_tokens: 10 },
  mtp: { finetuning_type: 'mtp', num_virtual_tokens: 10 },
  ia3: { finetuning_type: 'ia3' },
  'bn-adapter': { finetuning_type: 'bn-adapter' },
  'seq-bn-adapter': { finetuning_type: 'seq-bn-adapter' },
  'par-adapter': { finetuning_type: 'par-adapter' },
  bitfit: { finetuning_type: 'bitfit' },
  lntuning: { finetuning_type: 'lntuning' },
  vera: { finetuning_type: 'vera', vera_rank: 256, vera_target: ['q_proj', 'v_proj'] },
  // Last: QLoRA releases the f32 base weights of the model it attaches to.
  qlora: { finetuning_type: 'lora', lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'], quantization_bit: 4, quantization_type: 'nf4', double_quantization: true },
};

/** Time training steps of one method (after one warm-up step): ms, tokens/s, peak GPU bytes. */
async function trainStep(e: Engine, model: LlamaModel, ids: Int32Array, B: number, T: number, steps: number, config: Record<string, unknown>) {
  const attached = resolveMethod(config).attach({ e, model, config: { seed: 1, ...config }, random: seededRandom(1) });
  await attached.ready;
  const examples = Array.from({ length: B }, (_, b) => {
    const x = Array.from(ids.subarray(b * T, (b + 1) * T));
    return { inputIds: x, labels: x };
  });
  const stamps: number[] = [];
  const trainer = new Trainer(e, model, attached, examples, [], {
    batchSize: B, gradAccum: 1, learningRate: 1e-4, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, epochs: 1,
    maxSteps: steps + 1, scheduler: 'constant', warmupRatio: 0, warmupSteps: 0, loggingSteps: 1000, saveSteps: 0, evalSteps: 0,
    maxGradNorm: 1, seed: 1, padId: 0,
  }, new MemoryRunStore());
  e.pool.resetPeak();
  stamps.push(performance.now());
  await trainer.run({ onStep: () => stamps.push(performance.now()) });
  const ms = (stamps[stamps.length - 1] - stamps[1]) / Math.max(1, stamps.length - 2);
  const out = { ms_per_step: +ms.toFixed(2), tokens_per_s: +((B * T * 1000) / ms).toFixed(1), peak_gpu_bytes: e.pool.peak, trainable_params: trainer.trainableCount() };
  trainer.dispose();
  attached.detach();
  return out;
}

function findStories(dir?: string): string | null {
  const cands = [dir, path.resolve('../shared/hub/models/stories260K'), path.resolve('.cache/hub/models/stories260K')];
  return cands.find((c) => c && existsSync(path.join(c, 'config.json'))) ?? null;
}

/** Deterministic pseudo-random weights with roughly unit-scale activations. */
function randomHostWeights(cfg: ModelConfig): Map<string, { shape: number[]; data: Float32Array }> {
  let s = 12345;
  const fill = (n: number, scale: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      a[i] = ((s / 4294967296) * 2 - 1) * scale;
    }
    return a;
  };
  const { hiddenSize: C, headDim: D, numHeads: Hq, numKvHeads: Hkv, intermediateSize: F, vocabSize: V } = cfg;
  const w = new Map<string, { shape: number[]; data: Float32Array }>();
  const lin = (n: string, o: number, i: number) => w.set(n, { shape: [o, i], data: fill(o * i, 1 / Math.sqrt(i)) });
  w.set('model.embed_tokens.weight', { shape: [V, C], data: fill(V * C, 1) });
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    lin(`${p}.self_attn.q_proj.weight`, Hq * D, C);
    lin(`${p}.self_attn.k_proj.weight`, Hkv * D, C);
    lin(`${p}.self_attn.v_proj.weight`, Hkv * D, C);
    lin(`${p}.self_attn.o_proj.weight`, C, Hq * D);
    lin(`${p}.mlp.gate_proj.weight`, F, C);
    lin(`${p}.mlp.up_proj.weight`, F, C);
    lin(`${p}.mlp.down_proj.weight`, C, F);
    w.set(`${p}.input_layernorm.weight`, { shape: [C], data: new Float32Array(C).fill(1) });
    w.set(`${p}.post_attention_layernorm.weight`, { shape: [C], data: new Float32Array(C).fill(1) });
  }
  w.set('model.norm.weight', { shape: [C], data: new Float32Array(C).fill(1) });
  if (!cfg.tieWordEmbeddings) lin('lm_head.weight', V, C);
  return w;
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

async function benchModel(e: Engine, name: string, model: LlamaModel, c: BenchCase, steps: number) {
  const { batch: B, seq: T } = c;
  const V = model.config.vocabSize;
  const ids = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) ids[i] = (i * 7919 + 3) % V;
  const labels = new Int32Array(B * T);
  for (let i = 0; i < labels.length; i++) labels[i] = (i + 1) % T === 0 ? -100 : ids[i + 1];

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
    const logits = model.forward(ids, B);
    const loss = crossEntropy(e, logits.reshape([B * T, V]), labels);
    e.tape = null;
    tape.backward(loss);
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
  const loraStep = await trainStep(e, model, ids, B, T, steps, { finetuning_type: 'lora', lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'] });
  const methods: Record<string, Awaited<ReturnType<typeof trainStep>> | { error: string }> = {};
  if (c.methods) {
    for (const [name, cfg] of Object.entries(METHOD_CONFIGS)) {
      if (!builtinMethods.has(methodNameFor(cfg))) continue;
      try {
        methods[name] = await trainStep(e, model, ids, B, T, steps, cfg);
      } catch (err) {
        methods[name] = { error: (err as Error).message };
      }
    }
  }

  let kernels: Record<string, { ms: number; calls: number }> | undefined;
  if (e.ctx.features.has('timestamp-query')) {
    const timer = new KernelTimer(e.device, e.ctx.features);
    e.timer = timer;
    e.beginScope();
    model.forward(ids, B);
    e.endScope();
    const k = await timer.collect();
    e.timer = null;
    if (Object.values(k).some((x) => x.ms > 0)) kernels = k;
  }
  return {
    model: name,
    params: model.numParams(),
    batch: B,
    seq: T,
    steps,
    forward: { ms_per_step: +fwdMs.toFixed(2), tokens_per_s: +((B * T * 1000) / fwdMs).toFixed(1), peak_gpu_bytes: fwdPeak },
    forward_backward: { ms_per_step: +fwdBwdMs.toFixed(2), tokens_per_s: +((B * T * 1000) / fwdBwdMs).toFixed(1), peak_gpu_bytes: fwdBwdPeak },
    lora_train_step: loraStep,
    ...(c.methods ? { train_step_by_method: methods } : {}),
    ...(kernels ? { forward_kernels_ms: kernels } : {}),
  };
}

/** CPU float64 SVD time for PiSSA / SVFT / GaLore on SmolLM2-135M-shaped layers (r 8). */
function svdTiming() {
  const out: Record<string, { pissa_iter_16_ms: number; exact_ms: number }> = {};
  let s = 7;
  for (const [name, rows, cols] of [['q_proj 576x576', 576, 576], ['k_proj 192x576', 192, 576], ['up_proj 1536x576', 1536, 576]] as const) {
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

export async function runBench(e: Engine, opts: BenchOptions) {
  const results = [];
  const log = (s: string) => process.stderr.write(s + '\n');
  const stories = findStories(opts.storiesDir);
  if (stories && (!opts.only || opts.only.includes('stories260K'))) {
    log(`bench: stories260K from ${stories}`);
    const source = new LocalFolderSource(stories);
    const cfg = await readConfig(source);
    const model = modelFromWeights(e, cfg, await readWeights(source));
    results.push(await benchModel(e, 'stories260K', model, { model: 'stories260K', batch: 8, seq: 64, methods: true }, opts.steps));
    model.dispose();
  } else if (!stories) {
    log('bench: stories260K not found (../shared/hub or .cache/hub); skipped');
  }
  if (!opts.only || opts.only.includes('smollm2-135m')) {
    const cfgPath = new URL('../bench/smollm2-135m.config.json', import.meta.url);
    const cfg = parseModelConfig(JSON.parse(readFileSync(cfgPath, 'utf8')), 'bench/smollm2-135m.config.json');
    log('bench: SmolLM2-135M shape, random weights');
    const model = modelFromWeights(e, cfg, randomHostWeights(cfg));
    results.push(await benchModel(e, 'smollm2-135m-shape (random weights)', model, { model: 'smollm2', batch: 1, seq: 256 }, Math.min(opts.steps, 2)));
    model.dispose();
  }
  return {
    date: new Date().toISOString(),
    adapter: e.ctx.adapterInfo,
    results,
    svd_cpu_ms_smollm2_layers: svdTiming(),
  };
}
