/**
 * Compact base weights and the split path:
 *  - the packed matmul (x Wᵀ and its dX) and the packed / row-block
 *    embedding gather against float64 references of the rounded weights,
 *    dX against finite differences (check-op);
 *  - stories260K, a qwen2 model and a llama3-rope model written as F16 and
 *    BF16 safetensors, streamed in packed, against the f32 model of the same
 *    rounded weights (1e-4 on the logits);
 *  - LoRA trained through a packed base: gradients against finite
 *    differences and against the f32 path;
 *  - a tiny binding limit that splits the embedding / head into row blocks;
 *  - the streaming bound: no read larger than the largest tensor.
 */
import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, maxAbsDiff, randn, rng } from '../helpers/check-op';
import { checkMethodGradients } from '../helpers/method-check';
import { randomWeights, storiesDir } from '../helpers/models';
import type { Engine, MatmulChooser } from '../../src/engine/engine';
import { Tape } from '../../src/engine/tape';
import { matmul, matmulCpu, type MatmulKernelOptions, type MatmulVariant } from '../../src/engine/ops/matmul';
import { MatmulTuner, shapeClass } from '../../src/engine/matmul-tune';
import type { StorageDtype } from '../../src/engine/tensor';
import { embedding, embeddingCpu } from '../../src/engine/ops/embedding';
import { roundToHalves, roundedF32 } from '../../src/engine/ops/packed';
import { LocalFolderSource } from '../../src/hub/node';
import { parseModelConfig, type ModelConfig } from '../../src/model/config';
import { baseDtypeOf, loadModel, modelFromWeights, readConfig, readWeights, streamWeights, parseBaseDtype } from '../../src/model/load';
import { validateConfig } from '../../src/config/schema';
import type { LlamaModel } from '../../src/model/llama';
import { serializeSafetensors } from '../../src/model/safetensors';
import { lora } from '../../peft/lora/method';
import { generate, seededRandom } from '../../src/model/generate';

type Host = Map<string, { shape: number[]; data: Float32Array }>;
type Half = 'f16' | 'bf16';
const FILE: Record<Half, 'F16' | 'BF16'> = { f16: 'F16', bf16: 'BF16' };

/** A model folder whose weights are stored in `dtype` (2-D weights; 1-D stay F32, as HF checkpoints often keep norms). */
function writeFolder(cfgJson: unknown, host: Host, dtype: 'F16' | 'BF16'): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'packed-'));
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfgJson));
  const t = new Map([...host].map(([k, v]) => [k, { ...v, dtype: v.shape.length === 2 ? dtype : ('F32' as const) }]));
  writeFileSync(path.join(dir, 'model.safetensors'), serializeSafetensors(t));
  return dir;
}

/** The same weights rounded to `dtype` (what a checkpoint of that dtype holds), as f32. */
function rounded(host: Host, dtype: Half): Host {
  return new Map([...host].map(([k, v]) => [k, { shape: v.shape, data: v.shape.length === 2 ? roundedF32(v.data, dtype) : v.data }]));
}

async function logitsOf(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

const qwen2 = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: 48,
  intermediate_size: 72,
  num_hidden_layers: 2,
  num_attention_heads: 6,
  num_key_value_heads: 2,
  vocab_size: 97,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  tie_word_embeddings: false,
  max_position_embeddings: 128,
};
const llama3 = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 32,
  intermediate_size: 40,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 16,
  vocab_size: 61,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  tie_word_embeddings: true,
  max_position_embeddings: 256,
  rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
};
const IDS = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 26, 4, 33, 8, 3, 2, 7, 9, 5, 0, 2, 8, 8, 4, 1];

let e: Engine;
beforeAll(async () => {
  e = await gpuEngine();
});
afterEach(() => {
  e.maxBindingBytes = Math.min(e.ctx.limits.maxStorageBufferBindingSize, e.ctx.limits.maxBufferSize);
});

describe('packed kernels', () => {
  for (const dtype of ['bf16', 'f16'] as const) {
    // [M, K] x [N, K]ᵀ: N % 4 == 0 takes the packed v4 kernel, N = 37 the unpack-first fallback.
    for (const [M, N, K] of [
      [7, 24, 16],
      [5, 37, 12],
    ]) {
      it(`x Wᵀ with W ${dtype} [${N}, ${K}], M ${M}: forward vs float64, dX vs finite differences`, async () => {
        const W = randn(N * K, rng(N), 0.5);
        const bits = roundToHalves(W, dtype);
        const Wr = roundedF32(W, dtype);
        const { fwdErr, gradErr } = await checkOp(e, {
          name: `packed matmul ${dtype}`,
          inputs: [{ name: 'x', shape: [M, K], data: randn(M * K, rng(M)), grad: true }],
          gpu: (e, [x]) => matmul(e, x, e.uploadPacked(bits, [N, K], dtype, 'W'), { transB: true }),
          cpu: ([x]) => matmulCpu(x, Wr, M, N, K, { transB: true }),
        });
        console.log(`packed matmul ${dtype} ${M}x${N}x${K}: fwd ${fwdErr.toExponential(2)}, grad ${gradErr.toExponential(2)}`);
      });
    }

    it(`embedding gather from a ${dtype} table, whole and in row blocks`, async () => {
      const V = 41,
        C = 6;
      const table = randn(V * C, rng(3));
      const ids = Int32Array.from([0, 40, 7, 7, 21, 39, 1]);
      const want = embeddingCpu(ids, roundedF32(table, dtype), C);
      const bits = roundToHalves(table, dtype);
      e.beginScope();
      const idsT = e.upload(ids, [ids.length]);
      const whole = await e.read(embedding(e, idsT, e.uploadPacked(bits, [V, C], dtype, 'table'), ids));
      // Blocks of 10 rows (the last of 1): ids land in every block.
      const blocks = [];
      for (let r = 0; r < V; r += 10) blocks.push(e.uploadPacked(bits.subarray(r * C, Math.min(V, r + 10) * C), [Math.min(V, r + 10) - r, C], dtype));
      const split = await e.read(embedding(e, idsT, e.splitTensor([V, C], blocks, 'table'), ids));
      e.endScope();
      expect(maxAbsDiff(whole, want)).toBe(0);
      expect(maxAbsDiff(split, want)).toBe(0);
    });
  }

  // v4, v5 (workgroup tiles) and v6 (subgroups) reading packed B in the kernel, both layouts:
  // x Wᵀ (W [N, K], a linear) and x W (W [K, N]); each forward's dX is the other layout.
  // 70x20x36: partial tiles in every direction, k steps past v5's 16 and v6's 2S chunk;
  // 5x38x14: N, K even but not multiples of 4 (v4 cannot run it; v5 / v6 can, pairs at the edges).
  for (const dtype of ['bf16', 'f16'] as const) {
    for (const variant of ['v4', 'v5', 'v6'] as const) {
      it(`${variant} reads ${dtype} B packed: forward vs float64 of the rounded weights, dX vs finite differences, no f32 copy`, async () => {
        if (variant === 'v6') expect(e.ctx.features.has('subgroups')).toBe(true);
        const shapes =
          variant === 'v4'
            ? [[70, 20, 36]]
            : [
                [70, 20, 36],
                [5, 38, 14],
              ];
        const entries: string[] = [];
        e.timer = { wrap: (name) => void entries.push(name) };
        try {
          for (const [M, N, K] of shapes) {
            for (const transB of [true, false]) {
              const W = randn(N * K, rng(N + K), 0.5);
              const bits = roundToHalves(W, dtype);
              const Wr = roundedF32(W, dtype);
              entries.length = 0;
              const { fwdErr, gradErr } = await checkOp(e, {
                name: `packed ${dtype} ${variant} ${M}x${N}x${K} tB${+transB}`,
                inputs: [{ name: 'x', shape: [M, K], data: randn(M * K, rng(M)), grad: true }],
                gpu: (e, [x]) => matmul(e, x, e.uploadPacked(bits, transB ? [N, K] : [K, N], dtype, 'W'), { transB, variant }),
                cpu: ([x]) => matmulCpu(x, Wr, M, N, K, { transB }),
                samples: 8,
              });
              // The forward and dX, each one dispatch of the kernel on the packed words.
              expect(entries, `${variant} ${M}x${N}x${K} tB${+transB}`).toEqual(['matmul', 'matmul']);
              expect(fwdErr).toBeLessThan(1e-4);
              expect(gradErr).toBeLessThan(2e-3);
            }
          }
        } finally {
          e.timer = null;
        }
      });
    }
  }

  // gemv (few rows of x Wᵀ, decoding) reading packed B: M 1..6, N odd (partial column blocks), K % 4 == 0;
  // then the same on B split into row blocks (a large vocabulary's head), each block read packed in place.
  for (const dtype of ['bf16', 'f16'] as const) {
    it(`gemv reads ${dtype} B packed, whole and split into row blocks: forward vs float64 of the rounded weights, dX vs finite differences`, async () => {
      const entries: string[] = [];
      try {
        // [M, N, K, also split]: split into blocks of 16 rows, the last partial.
        for (const [M, N, K, alsoSplit] of [
          [1, 37, 12, false],
          [4, 133, 36, true],
          [6, 9, 260, false],
        ] as const) {
          const W = randn(N * K, rng(N + K), 0.5);
          const bits = roundToHalves(W, dtype);
          const Wr = roundedF32(W, dtype);
          for (const split of alsoSplit ? [false, true] : [false]) {
            const weight = (e: Engine) => {
              if (!split) return e.uploadPacked(bits, [N, K], dtype, 'W');
              const blocks = [];
              for (let r = 0; r < N; r += 16) blocks.push(e.uploadPacked(bits.subarray(r * K, Math.min(N, r + 16) * K), [Math.min(N, r + 16) - r, K], dtype));
              return e.splitTensor([N, K], blocks, 'W');
            };
            const { fwdErr } = await checkOp(e, {
              name: `packed ${dtype} gemv ${M}x${N}x${K}${split ? ' split' : ''}`,
              inputs: [{ name: 'x', shape: [M, K], data: randn(M * K, rng(M)), grad: true }],
              gpu: (e, [x]) => matmul(e, x, weight(e), { transB: true, variant: 'gemv' }),
              cpu: ([x]) => matmulCpu(x, Wr, M, N, K, { transB: true }),
              samples: 4,
            });
            expect(fwdErr).toBeLessThan(1e-4);
            // The forward alone (dX = dY W may unpack where N % 4 != 0): the packed words, no f32 copy.
            e.beginScope();
            const x = e.upload(randn(M * K, rng(M)), [M, K]);
            const Wt = weight(e);
            e.timer = { wrap: (name) => void entries.push(name) };
            entries.length = 0;
            matmul(e, x, Wt, { transB: true, variant: 'gemv' });
            e.timer = null;
            e.endScope();
            const perBlock = ['matmul', 'copy_cols'];
            expect(entries, `${M}x${N}x${K}`).toEqual(split ? Array.from({ length: Math.ceil(N / 16) }, () => perBlock).flat() : ['matmul']);
          }
        }
      } finally {
        e.timer = null;
      }
    });
  }

  it('greedy generation with gemv equals the tiled kernels: stories260K in f32 and as BF16 with the head split into row blocks', async () => {
    const src = new LocalFolderSource(storiesDir());
    const json = JSON.parse(new TextDecoder().decode(await src.get('config.json')));
    const host = await readWeights(src);
    const asked = { gemv: 0 };
    const withGemv: MatmulChooser = {
      choose: (_M, _N, _K, _o, variants) => (variants.includes('gemv') ? (asked.gemv++, 'gemv') : undefined),
    };
    const withoutGemv: MatmulChooser = { choose: (_M, _N, _K, _o, variants) => variants.find((v) => v !== 'gemv') };
    const run = async (model: LlamaModel, chooser: MatmulChooser) => {
      e.matmulTuner = chooser;
      try {
        return await generate(model, [1, 403, 407, 261, 378], { maxNewTokens: 8, temperature: 0 });
      } finally {
        e.matmulTuner = null;
      }
    };
    const f32 = modelFromWeights(e, parseModelConfig(json, 'stories260K'), host);
    const want = await run(f32, withoutGemv);
    expect(await run(f32, withGemv)).toEqual(want);
    f32.dispose();
    // 24 KiB and one f32 row: the BF16 head [512, 64] in blocks of 192 rows (see the split test below).
    e.maxBindingBytes = 24 * 1024 + 256;
    const bf16 = (await loadModel(e, new LocalFolderSource(writeFolder(json, host, 'BF16')), { tokenizer: false })).model;
    expect(bf16.stored('model.embed_tokens.weight').blocks?.length).toBe(3);
    const before = asked.gemv;
    expect(await run(bf16, withGemv)).toEqual(await run(bf16, withoutGemv));
    expect(asked.gemv).toBeGreaterThan(before);
    bf16.dispose();
  });

  it('refuses a packed tensor in a kernel that reads f32, naming it', async () => {
    e.beginScope();
    const W = e.uploadPacked(new Uint16Array(8), [2, 4], 'bf16', 'some.weight');
    expect(() => e.write(W, new Float32Array(8))).toThrow(/some\.weight.*packed bf16/);
    expect(() => W.gradOrZeros()).toThrow(/gets no gradient/);
    e.endScope();
  });
});

describe('models stored as F16 / BF16 equal the f32 model of the same rounded weights', () => {
  const cases: [string, () => Promise<{ json: Record<string, unknown>; host: Host }>][] = [
    [
      'stories260K',
      async () => ({
        json: JSON.parse(new TextDecoder().decode(await new LocalFolderSource(storiesDir()).get('config.json'))),
        host: await readWeights(new LocalFolderSource(storiesDir())),
      }),
    ],
    [
      'qwen2 (q/k/v bias, untied head)',
      async () => ({ json: qwen2, host: randomWeights(parseModelConfig(qwen2, 'qwen2'), 7, { qkvBias: true, untied: true }) }),
    ],
    ['llama3 rope scaling, tied', async () => ({ json: llama3, host: randomWeights(parseModelConfig(llama3, 'llama3'), 7) })],
  ];
  for (const [name, make] of cases) {
    for (const dtype of ['bf16', 'f16'] as const) {
      it(`${name} as ${FILE[dtype]}: logits within 1e-4`, async () => {
        const { json, host } = await make();
        const cfg = parseModelConfig(json, name);
        const dir = writeFolder(json, host, FILE[dtype]);
        const { model } = await loadModel(e, new LocalFolderSource(dir), { tokenizer: false });
        const embed = model.stored('model.embed_tokens.weight');
        expect(embed.dtype).toBe(dtype);
        const ref = modelFromWeights(e, cfg, rounded(host, dtype));
        const ids = IDS.map((i) => i % cfg.vocabSize);
        const d = maxAbsDiff(await logitsOf(e, model, ids), await logitsOf(e, ref, ids));
        console.log(`${name} ${FILE[dtype]}: max |Δlogit| ${d.toExponential(2)}, base ${model.weightBytes()} B packed vs ${ref.weightBytes()} B f32`);
        expect(d).toBeLessThan(1e-4);
        expect(model.weightBytes()).toBeLessThan(0.6 * ref.weightBytes());
        model.dispose();
        ref.dispose();
      });
    }
  }
});

/** LoRA (r 4 on q, v and down_proj) gradients of L = Σ logits · R. */
async function loraGrads(model: LlamaModel, ids: number[]) {
  const m = lora.attach({ e, model, config: { lora_rank: 4, lora_alpha: 8, lora_target: ['q_proj', 'v_proj', 'down_proj'] }, random: seededRandom(5) });
  // B = 0 at init gives dA = 0: start B away from zero so both gradients carry the base weights.
  for (const p of m.trainable()) if (p.tensor.name.endsWith('lora_B')) e.write(p.tensor, randn(p.tensor.size, rng(p.tensor.size), 0.1));
  const R = randn(ids.length * model.config.vocabSize, rng(11));
  e.beginScope();
  const tape = new Tape();
  e.tape = tape;
  const y = model.forward(Int32Array.from(ids), 1);
  e.tape = null;
  tape.backward(y, R);
  e.endScope();
  const out = new Map<string, Float32Array>();
  for (const p of m.trainable()) out.set(p.tensor.name, await e.read(p.tensor.grad!));
  return { m, out };
}

describe('training through packed base weights', () => {
  it('LoRA on a BF16 qwen2 base: gradients match finite differences and the f32 path of the rounded weights', async () => {
    const cfg = parseModelConfig(qwen2, 'qwen2');
    const host = randomWeights(cfg, 3, { qkvBias: true, untied: true });
    const ids = IDS.slice(0, 12);
    const packed = modelFromWeights(e, cfg, host, { baseDtype: 'bfloat16' });
    const ref = modelFromWeights(e, cfg, rounded(host, 'bf16'));
    const a = await loraGrads(packed, ids),
      b = await loraGrads(ref, ids);
    let worst = 0,
      scale = 0;
    for (const [k, g] of a.out) {
      worst = Math.max(worst, maxAbsDiff(g, b.out.get(k)!));
      for (const v of g) scale = Math.max(scale, Math.abs(v));
    }
    console.log(`LoRA grads packed vs f32 path: max |Δ| ${worst.toExponential(2)} (max |g| ${scale.toExponential(2)})`);
    expect(worst).toBeLessThan(1e-4 * Math.max(1, scale));
    b.m.detach();
    for (const p of a.m.trainable()) p.tensor.grad = null;
    // Finite differences on layer 0's q_proj A and B: their gradients flow back through every packed linear and the packed head.
    await checkMethodGradients(e, packed, { ...a.m, trainable: () => a.m.trainable().slice(0, 2) }, ids, { samples: 4 });
    a.m.detach();
    packed.dispose();
    ref.dispose();
  });
});

describe('the matmul autotuner on a packed base', () => {
  it("the base linears (forward and dX) ask it with their packed dtype and run its choice: v5 and v6 give the f32 path's LoRA gradients", async () => {
    const cfg = parseModelConfig(qwen2, 'qwen2');
    const host = randomWeights(cfg, 3, { qkvBias: true, untied: true });
    const ids = IDS.slice(0, 12);
    const packed = modelFromWeights(e, cfg, host, { baseDtype: 'bfloat16' });
    const ref = modelFromWeights(e, cfg, rounded(host, 'bf16'));
    const want = await loraGrads(ref, ids);
    want.m.detach();
    // The real tuner, behind a recorder of what each call asked and got.
    const tuner = new MatmulTuner('test adapter');
    type Ask = { M: number; N: number; K: number; o: MatmulKernelOptions; variants: MatmulVariant[]; dtypeB: StorageDtype; got: MatmulVariant | undefined };
    const asked: Ask[] = [];
    e.matmulTuner = {
      choose: (M, N, K, o, variants, dtypeB = 'f32') => {
        const got = tuner.choose(M, N, K, o, variants, dtypeB);
        asked.push({ M, N, K, o, variants, dtypeB, got });
        return got;
      },
    };
    try {
      (await loraGrads(packed, ids)).m.detach();
      const base = asked.filter((a) => a.dtypeB === 'bf16');
      // q/k/v/o and gate/up/down: x Wᵀ forward (transB) and dY W (not) for each; the head (vocabulary 97) unpacks.
      expect(new Set(base.map((a) => `${a.N}x${a.K} tB${+!!a.o.transB}`))).toEqual(
        new Set(['48x48 tB1', '16x48 tB1', '72x48 tB1', '48x72 tB1', '48x48 tB0', '48x16 tB0', '48x72 tB0', '72x48 tB0']),
      );
      for (const a of base) expect(a.variants).toEqual(['v4', 'v5', 'v6']);
      for (const variant of ['v5', 'v6'] as const) {
        for (const a of base) tuner.table.set(shapeClass(a.M, a.N, a.K, a.o, a.variants, 'bf16'), { variant, ms: {}, shape: [a.M, a.N, a.K] });
        asked.length = 0;
        const got = await loraGrads(packed, ids);
        got.m.detach();
        const chosen = asked.filter((a) => a.dtypeB === 'bf16').map((a) => a.got);
        expect(chosen.length).toBe(base.length);
        expect(new Set(chosen)).toEqual(new Set([variant]));
        for (const [k, g] of got.out) {
          const scale = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
          expect(maxAbsDiff(g, want.out.get(k)!), `${variant} ${k}`).toBeLessThan(1e-4 * Math.max(1, scale));
        }
      }
    } finally {
      e.matmulTuner = null;
      packed.dispose();
      ref.dispose();
    }
  });
});

describe('tensors beyond the binding limit are split into row blocks', () => {
  it('stories260K (BF16 file) under a 24.25 KiB binding limit: same logits and LoRA gradients as unsplit, the head read packed in place', async () => {
    const src = new LocalFolderSource(storiesDir());
    const json = JSON.parse(new TextDecoder().decode(await src.get('config.json')));
    const host = await readWeights(src);
    const dir = writeFolder(json, host, 'BF16');
    const whole = (await loadModel(e, new LocalFolderSource(dir), { tokenizer: false })).model;
    // 24 KiB and one f32 row more: 194 BF16 rows fit a binding, blocks take 192 (whole groups of 4, see rowsPerBlock).
    e.maxBindingBytes = 24 * 1024 + 256;
    const split = (await loadModel(e, new LocalFolderSource(dir), { tokenizer: false })).model;
    const f32split = (await loadModel(e, new LocalFolderSource(dir), { tokenizer: false, baseDtype: 'float32' })).model;
    const embed = split.stored('model.embed_tokens.weight');
    // 512 x 64 BF16 = 64 KiB: blocks of 192, 192, 128 rows; as f32 (128 KiB) 5 of 96 and one of 32.
    expect(embed.blocks?.map((b) => b.shape[0])).toEqual([192, 192, 128]);
    expect(f32split.stored('model.embed_tokens.weight').blocks?.map((b) => b.shape[0])).toEqual([96, 96, 96, 96, 96, 32]);
    const ids = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 5, 100, 200];
    const ref = await logitsOf(e, whole, ids);
    // The tied head's blocks are read packed in the matmul kernel (logits and their dX): no f32 copy of a block.
    const entries: string[] = [];
    e.timer = { wrap: (name) => void entries.push(name) };
    let b: Awaited<ReturnType<typeof loraGrads>>;
    try {
      expect(maxAbsDiff(await logitsOf(e, split, ids), ref)).toBeLessThan(1e-5);
      b = await loraGrads(split, ids);
    } finally {
      e.timer = null;
    }
    expect(entries).toContain('matmul');
    expect(entries).not.toContain('unpack');
    expect(maxAbsDiff(await logitsOf(e, f32split, ids), ref)).toBeLessThan(1e-5);
    const a = await loraGrads(whole, ids);
    // Blocks change only the summation order of dX through the head: f32 rounding, relative to the gradient's size.
    for (const [k, g] of a.out) {
      const scale = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      expect(maxAbsDiff(g, b.out.get(k)!), k).toBeLessThan(1e-5 * Math.max(1, scale));
    }
    a.m.detach();
    b.m.detach();
    // A method that needs the f32 weight gets it joined (it fits one binding at the default limit).
    e.maxBindingBytes = 1 << 30;
    const W = split.param('model.embed_tokens.weight');
    expect(W.blocks).toBeNull();
    expect(maxAbsDiff(await e.read(W), rounded(host, 'bf16').get('model.embed_tokens.weight')!.data)).toBe(0);
    for (const m of [whole, split, f32split]) m.dispose();
  });
});

describe('streaming load', () => {
  it('reads one tensor at a time from a file: no read is larger than the largest tensor', async () => {
    const src = new LocalFolderSource(storiesDir());
    const stats = { maxRead: 0 };
    let largest = 0,
      total = 0;
    for await (const w of streamWeights(src, await readConfig(src), { stats })) {
      largest = Math.max(largest, w.bytes.byteLength);
      total += w.bytes.byteLength;
    }
    console.log(`stories260K: largest read ${stats.maxRead} B, largest tensor ${largest} B, all tensors ${total} B`);
    expect(stats.maxRead).toBeLessThanOrEqual(largest);
    expect(largest).toBeLessThan(total / 4);
  });

  it('base_dtype accepts auto, float32, float16, bfloat16 (and torch spellings), and names a bad value', () => {
    expect(parseBaseDtype(undefined)).toBe('auto');
    expect(parseBaseDtype('torch.bfloat16')).toBe('bfloat16');
    expect(parseBaseDtype('fp16')).toBe('float16');
    expect(() => parseBaseDtype('int8')).toThrow(/base_dtype: "int8" is not a base weight dtype; use one of auto, float32, float16, bfloat16/);
    const base = { model_name_or_path: 'm', dataset: 'sst2', output_dir: 'out' };
    expect(baseDtypeOf(validateConfig({ ...base }))).toBe('auto');
    expect(baseDtypeOf(validateConfig({ ...base, torch_dtype: 'bfloat16' }))).toBe('bfloat16');
    expect(baseDtypeOf(validateConfig({ ...base, base_dtype: 'float32', torch_dtype: 'auto' }))).toBe('float32');
    expect(() => validateConfig({ ...base, base_dtype: 'float16', torch_dtype: 'bfloat16' })).toThrow(
      /base_dtype: 'float16' and torch_dtype: 'bfloat16' disagree/,
    );
  });
});
