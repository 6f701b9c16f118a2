/**
 * Qwen2.5-0.5B's shape (151936-token vocabulary, tied head) as a BF16
 * safetensors file with random weights, loaded under WebGPU's default
 * 128 MiB storage-binding limit: the embedding / head (151936 x 896 BF16,
 * 272 MB; 544 MB in f32) is split into row blocks, and a LoRA step (forward,
 * cross-entropy, backward) runs through the split gather, the split logits
 * matmul and the packed linears. Reports load time, host RSS during the load
 * (sampled) beside the bytes the GPU holds (on SwiftShader GPU buffers are
 * process memory too), the step time and peak GPU bytes, as JSON in
 * $TMPDIR/bench-split-load.json.
 *
 *   npx vitest run -c bench/vitest.bench.config.ts
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, test } from 'vitest';
import { acquireDevice } from '../src/gpu/device';
import { nodeGpu } from '../src/gpu/node';
import { Engine } from '../src/engine/engine';
import { Tape } from '../src/engine/tape';
import { crossEntropy } from '../src/engine/ops/cross_entropy';
import { LocalFolderSource } from '../src/hub/node';
import { parseModelConfig } from '../src/model/config';
import { loadModel } from '../src/model/load';
import { expectedWeights } from '../src/model/weights';
import { resolveMethod } from '../src/methods/registry';
import { seededRandom } from '../src/model/generate';

const QWEN = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  vocab_size: 151936,
};
const T = 128;

/** Writes model.safetensors tensor by tensor (BF16 for 2-D, F32 for 1-D), never holding the model: random values, LCG. */
function writeRandomBf16(dir: string): number {
  const cfg = parseModelConfig(QWEN, 'qwen2.5-0.5b');
  const shapes = [...expectedWeights(cfg)];
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1),
      bytes = n * (shape.length === 2 ? 2 : 4);
    header[name] = { dtype: shape.length === 2 ? 'BF16' : 'F32', shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const pad = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const head = new Uint8Array(8 + pad).fill(0x20);
  new DataView(head.buffer).setBigUint64(0, BigInt(pad), true);
  head.set(json, 8);
  const fd = openSync(path.join(dir, 'model.safetensors'), 'w');
  writeSync(fd, head);
  let s = 12345;
  const f = new Float32Array(1),
    u = new Uint32Array(f.buffer);
  for (const [, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (shape.length === 1) {
      writeSync(fd, new Uint8Array(new Float32Array(n).fill(1).buffer));
      continue;
    }
    const scale = 1 / Math.sqrt(shape[1]);
    const CH = 1 << 22;
    for (let i0 = 0; i0 < n; i0 += CH) {
      const m = Math.min(CH, n - i0),
        out = new Uint16Array(m);
      for (let i = 0; i < m; i++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        f[0] = ((s / 4294967296) * 2 - 1) * scale;
        out[i] = u[0] >>> 16;
      }
      writeSync(fd, new Uint8Array(out.buffer));
    }
  }
  closeSync(fd);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(QWEN));
  return 8 + pad + off;
}

test('Qwen2.5-0.5B shape, BF16 file, 128 MiB binding limit: streams, splits the head, takes a LoRA step', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'split-qwen-'));
  try {
    const fileBytes = writeRandomBf16(dir);
    const e = new Engine(await acquireDevice(nodeGpu(), { timestamps: false }));
    e.maxBindingBytes = 128 << 20;
    global.gc?.();
    const rss0 = process.memoryUsage().rss;
    let rssPeak = rss0;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 20);
    const t0 = performance.now();
    const { model } = await loadModel(e, new LocalFolderSource(dir), { tokenizer: false });
    await e.sync();
    const loadMs = performance.now() - t0;
    clearInterval(sampler);
    rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
    const gpuAfterLoad = e.pool.current;
    const embed = model.stored('model.embed_tokens.weight');
    expect(embed.dtype).toBe('bf16');
    expect(embed.blocks!.length).toBeGreaterThanOrEqual(3);

    const config = { finetuning_type: 'lora', lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'], seed: 1 };
    const method = resolveMethod(config).attach({ e, model, config, random: seededRandom(1) });
    await method.ready;
    const V = QWEN.vocab_size;
    const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919 + 3) % V);
    const labels = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? ids[i + 1] : -100));
    const step = async () => {
      e.beginScope();
      const tape = new Tape();
      e.tape = tape;
      const loss = crossEntropy(e, model.forward(ids, 1).reshape([T, V]), labels);
      e.tape = null;
      tape.backward(loss);
      const value = (await e.read(loss))[0];
      e.endScope();
      return value;
    };
    e.pool.resetPeak();
    const s0 = performance.now();
    const loss = await step();
    const stepMs = performance.now() - s0;
    // LoRA B starts at zero, so only the B gradients are non-zero after one backward (dA = Bᵀ·… = 0).
    const gradB = await Promise.all(
      method
        .trainable()
        .filter((p) => p.tensor.name.endsWith('lora_B'))
        .slice(0, 2)
        .map((p) => e.read(p.tensor.grad!)),
    );
    const result = {
      model: 'qwen2.5-0.5b shape, random BF16 weights',
      adapter: e.ctx.adapterInfo,
      max_binding_bytes: e.maxBindingBytes,
      file_bytes: fileBytes,
      base_weight_bytes: model.weightBytes(),
      embed_blocks: embed.blocks!.map((b) => b.shape[0]),
      load_ms: Math.round(loadMs),
      host_rss_before_load: rss0,
      host_rss_peak_during_load: rssPeak,
      rss_growth_minus_gpu_pool: rssPeak - rss0 - gpuAfterLoad,
      gpu_pool_bytes_after_load: gpuAfterLoad,
      largest_tensor_bytes: V * QWEN.hidden_size * 2,
      lora_step: { batch: 1, seq: T, loss, ms: Math.round(stepMs), tokens_per_s: +((T * 1000) / stepMs).toFixed(1), peak_gpu_bytes: e.pool.peak },
    };
    console.log(JSON.stringify(result, null, 2));
    writeFileSync(path.join(tmpdir(), 'bench-split-load.json'), JSON.stringify(result, null, 2) + '\n');
    expect(Number.isFinite(loss)).toBe(true);
    expect(gradB.length).toBe(2);
    expect(gradB.every((g) => g.some((v) => v !== 0) && g.every(Number.isFinite))).toBe(true);
    method.detach();
    model.dispose();
    e.ctx.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
