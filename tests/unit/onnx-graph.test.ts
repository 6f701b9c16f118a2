/**
 * The exported ONNX graph (src/export/onnx) on shapes the test assets do not
 * have, against the float64 CPU reference (src/model/reference.ts), run by
 * onnxruntime-web's wasm backend: llama3 rope_scaling with head_dim 16 and
 * GQA 4/1, a tied head; batch 2 with left padding; a Mistral sliding window;
 * the fp16 / q8 variants under transformers.js's file names; external data;
 * errors.
 */
import { describe, it, expect } from 'vitest';
import path from 'node:path';
import * as ort from 'onnxruntime-web';
import { parseModelConfig, type ModelConfig } from '../../src/model/config';
import { referenceForward } from '../../src/model/reference';
import { onnxModelFiles, parseOnnxWeightTypes, ONNX_FILE_NAMES } from '../../src/export/onnx/folder';
import { onnxGreedy } from '../../src/export/onnx/greedy';
import { randomWeights } from '../helpers/models';

ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = path.resolve('node_modules/onnxruntime-web/dist') + '/';

const LLAMA3 = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 32,
  intermediate_size: 40,
  num_hidden_layers: 3,
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

function build(json: Record<string, unknown>, types: ('fp32' | 'fp16' | 'q8')[] = ['fp32']) {
  const cfg = parseModelConfig(json, 'test');
  const weights = randomWeights(cfg, 5);
  const files = onnxModelFiles({ configText: JSON.stringify(json), weights, baseFiles: new Map(), weightTypes: types });
  return { cfg, weights, files };
}

const i64 = (v: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims);

async function run(
  model: Uint8Array,
  cfg: ModelConfig,
  ids: number[][],
  mask: number[][],
  options: ort.InferenceSession.SessionOptions = {},
): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(model, options);
  const B = ids.length,
    T = ids[0].length;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(ids.flat(), [B, T]),
    attention_mask: i64(mask.flat(), [B, T]),
    // As transformers.js computes them: cumsum(mask) - 1, padding at 1.
    position_ids: i64(
      mask.flatMap((row) => {
        let c = 0;
        return row.map((m) => (m ? c++ : 1));
      }),
      [B, T],
    ),
  };
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const kv of ['key', 'value'])
      feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [B, cfg.numKvHeads, 0, cfg.headDim]);
  }
  const out = await s.run(feeds);
  await s.release();
  return out.logits.data as Float32Array;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('ONNX graph against the float64 reference', () => {
  it('llama3 rope scaling, head_dim 16, GQA 4/1, tied head; batch 2 with left padding', async () => {
    const { cfg, weights, files } = build(LLAMA3);
    const a = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 26, 4, 33, 8];
    const b = [7, 1, 60, 12, 44, 2, 9];
    const pad = a.length - b.length;
    const logits = await run(
      files.get('onnx/model.onnx')!,
      cfg,
      [a, [...new Array(pad).fill(0), ...b]],
      [a.map(() => 1), [...new Array(pad).fill(0), ...b.map(() => 1)]],
    );
    const w = new Map([...weights].map(([k, v]) => [k, v.data]));
    const V = cfg.vocabSize,
      T = a.length;
    const wantA = referenceForward(cfg, w, a).flatMap((r) => Array.from(r));
    const wantB = referenceForward(cfg, w, b).flatMap((r) => Array.from(r));
    const dA = maxDiff(logits.subarray(0, T * V), wantA);
    const dB = maxDiff(logits.subarray((T + pad) * V, 2 * T * V), wantB);
    console.log(`llama3-scaled: max |Δlogit| ${dA.toExponential(2)}; left-padded row ${dB.toExponential(2)}`);
    expect(dA).toBeLessThan(1e-4);
    expect(dB).toBeLessThan(1e-4);
  });

  it('a sliding window limits attention to the last W positions (Mistral)', async () => {
    // W = 2, 3 layers: the last position sees positions T-1-3·(W-1) .. T-1, so tokens before that cannot change it.
    const json = { ...LLAMA3, architectures: ['MistralForCausalLM'], model_type: 'mistral', rope_scaling: null, sliding_window: 2 };
    const windowed = build(json),
      plain = build({ ...json, sliding_window: null });
    const ids = [5, 9, 2, 33, 17, 8, 41, 3, 3, 12];
    const early = [50, 51, 52, 53, 54, 55, ...ids.slice(6)];
    const mask = [ids.map(() => 1)];
    const V = windowed.cfg.vocabSize,
      last = (x: Float32Array) => x.subarray((ids.length - 1) * V);
    const w1 = await run(windowed.files.get('onnx/model.onnx')!, windowed.cfg, [ids], mask);
    const w2 = await run(windowed.files.get('onnx/model.onnx')!, windowed.cfg, [early], mask);
    const p1 = await run(plain.files.get('onnx/model.onnx')!, plain.cfg, [ids], mask);
    const p2 = await run(plain.files.get('onnx/model.onnx')!, plain.cfg, [early], mask);
    expect(maxDiff(last(w1), last(w2))).toBeLessThan(1e-6);
    expect(maxDiff(last(p1), last(p2))).toBeGreaterThan(1e-3);
    // Position 1 sees positions 0..1 either way.
    expect(maxDiff(w1.subarray(V, 2 * V), p1.subarray(V, 2 * V))).toBeLessThan(1e-6);
  });
});

describe('weight variants and the folder', () => {
  it('fp16 and q8 are written under transformers.js names and stay close to fp32', async () => {
    const { cfg, files } = build(LLAMA3, parseOnnxWeightTypes('fp16,q8'));
    expect([...files.keys()].sort()).toEqual(['config.json', ONNX_FILE_NAMES.fp32, ONNX_FILE_NAMES.fp16, ONNX_FILE_NAMES.q8].sort());
    expect(ONNX_FILE_NAMES).toEqual({ fp32: 'onnx/model.onnx', fp16: 'onnx/model_fp16.onnx', q8: 'onnx/model_quantized.onnx' });
    const ids = [3, 14, 15, 9, 26, 5, 35, 8];
    const mask = ids.map(() => 1);
    const f32 = await run(files.get(ONNX_FILE_NAMES.fp32)!, cfg, [ids], [mask]);
    const f16 = await run(files.get(ONNX_FILE_NAMES.fp16)!, cfg, [ids], [mask]);
    const q8 = await run(files.get(ONNX_FILE_NAMES.q8)!, cfg, [ids], [mask]);
    const scale = maxDiff(f32, new Float32Array(f32.length));
    const d16 = maxDiff(f16, f32) / scale,
      d8 = maxDiff(q8, f32) / scale;
    console.log(
      `relative max |Δlogit| vs fp32: fp16 ${d16.toExponential(2)}, q8 ${d8.toExponential(2)}; sizes fp32 ${files.get(ONNX_FILE_NAMES.fp32)!.length}, fp16 ${files.get(ONNX_FILE_NAMES.fp16)!.length}, q8 ${files.get(ONNX_FILE_NAMES.q8)!.length}`,
    );
    expect(d16).toBeLessThan(1e-2);
    expect(d8).toBeLessThan(5e-2);
    expect(files.get(ONNX_FILE_NAMES.q8)!.length).toBeLessThan(files.get(ONNX_FILE_NAMES.fp16)!.length);
    const config = JSON.parse(new TextDecoder().decode(files.get('config.json')));
    expect(config['transformers.js_config']).toEqual({ dtype: 'fp32' });
  });

  it('weights over the limit go to external data chunks (model.onnx_data, _1, ...) with the same logits', async () => {
    const json = LLAMA3;
    const cfg = parseModelConfig(json, 'test');
    const weights = randomWeights(cfg, 5);
    const inline = onnxModelFiles({ configText: JSON.stringify(json), weights, baseFiles: new Map() });
    const split = onnxModelFiles({ configText: JSON.stringify(json), weights, baseFiles: new Map(), externalDataAbove: 40_000 });
    const chunks = [...split.keys()].filter((f) => f.startsWith('onnx/model.onnx_data')).sort();
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.slice(0, 2)).toEqual(['onnx/model.onnx_data', 'onnx/model.onnx_data_1']);
    expect(split.get('onnx/model.onnx')!.length).toBeLessThan(inline.get('onnx/model.onnx')!.length / 4);
    const config = JSON.parse(new TextDecoder().decode(split.get('config.json')));
    expect(config['transformers.js_config']).toEqual({ dtype: 'fp32', use_external_data_format: { 'model.onnx': chunks.length } });
    const ids = [3, 14, 15, 9, 26, 5];
    const want = await run(inline.get('onnx/model.onnx')!, cfg, [ids], [ids.map(() => 1)]);
    const externalData = chunks.map((f) => ({ path: f.slice('onnx/'.length), data: split.get(f)! }));
    const got = await run(split.get('onnx/model.onnx')!, cfg, [ids], [ids.map(() => 1)], { externalData });
    expect(maxDiff(got, want)).toBe(0);
  });

  it('greedy decoding with the cache equals argmax of full forwards', async () => {
    const { cfg, files } = build(LLAMA3);
    const session = await ort.InferenceSession.create(files.get('onnx/model.onnx')!);
    const prompt = [3, 14, 15];
    const ids = await onnxGreedy(ort, session, cfg, prompt, { maxNewTokens: 6, stopIds: [] });
    const V = cfg.vocabSize;
    const seq = [...prompt];
    for (let i = 0; i < 6; i++) {
      const logits = await run(files.get('onnx/model.onnx')!, cfg, [seq], [seq.map(() => 1)]);
      const last = logits.subarray((seq.length - 1) * V);
      seq.push(last.indexOf(Math.max(...last)));
    }
    expect(ids).toEqual(seq.slice(prompt.length));
  });

  it('errors name the input and the fix', () => {
    expect(() => parseOnnxWeightTypes('fp32,int4')).toThrow(/export_onnx_dtypes: 'int4' is not a weight type.*fp32, fp16, q8/);
    const json = { ...LLAMA3, model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], rope_scaling: null, use_sliding_window: true, sliding_window: 8 };
    expect(() => build(json)).toThrow(/use_sliding_window.*max_window_layers/);
    const cfg = parseModelConfig(LLAMA3, 'x');
    const weights = randomWeights(cfg, 5);
    weights.delete('model.layers.1.mlp.up_proj.weight');
    expect(() => onnxModelFiles({ configText: JSON.stringify(LLAMA3), weights, baseFiles: new Map() })).toThrow(
      /no tensor model\.layers\.1\.mlp\.up_proj\.weight/,
    );
  });
});
