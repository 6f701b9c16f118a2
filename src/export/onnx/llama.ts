/**
 * The LLaMA-family decoder (llama, mistral, qwen2) as one ONNX graph with a
 * key/value cache, in the interface transformers.js's text-generation
 * pipeline feeds (the one Hugging Face Optimum exports):
 *
 *   inputs   input_ids        int64 [batch_size, sequence_length]
 *            attention_mask   int64 [batch_size, total_sequence_length]   (past + new; 0 = padding)
 *            position_ids     int64 [batch_size, sequence_length]
 *            past_key_values.N.key / .value   float [batch_size, Hkv, past_sequence_length, D]
 *   outputs  logits           float [batch_size, sequence_length, V]
 *            present.N.key / .value           float [batch_size, Hkv, total_sequence_length, D]
 *
 * Opset 17 (ai.onnx), IR version 8: only standard operators (Gather, MatMul,
 * ReduceMean, Softmax, Where, Range, ...), so onnxruntime-web's wasm and
 * WebGPU execution providers both run it.
 *
 * Legend: B batch, T new tokens, P past tokens, K = P + T keys, C hidden,
 * Hq / Hkv query / key-value heads, g = Hq / Hkv, D head dim, V vocab.
 *
 * The math (Hugging Face's LlamaModel / Qwen2Model):
 *   x = embed[input_ids]
 *   per layer:  h = rmsnorm(x) · w_in,   q, k, v = h W_q^T (+b), h W_k^T (+b), h W_v^T (+b)
 *               q, k = rope(q, k; position_ids),  rope(x) = x cos θ + rotate_half(x) sin θ,
 *               θ = position · inv_freq (concatenated twice), rotate_half([x1, x2]) = [-x2, x1]
 *               K, V = [past; k], [past; v]  (the present outputs)
 *               a = softmax(q K^T / √D + mask) V   (query head h reads key head ⌊h / g⌋: GQA)
 *               x += a W_o^T (+b)
 *               h = rmsnorm(x) · w_post,  x += (silu(h W_gate^T) ⊙ h W_up^T) W_down^T
 *   logits = rmsnorm(x) · w_norm · W_head^T   (W_head = embed when tied)
 * rmsnorm(v) = v / √(mean(v²) + eps). The mask allows key j for query i when
 * j ≤ P + i (causal), attention_mask[b, j] = 1 and, with a sliding window W,
 * j > P + i − W.
 *
 * GQA without copying keys: q is reshaped to [B, Hkv, g, T, D] and K to
 * [B, Hkv, 1, K, D]; MatMul broadcasts the g axis.
 */
import type { ModelConfig } from '../../model/config';
import { ropeInvFreq } from '../../engine/ops/rope';
import { f32ToF16 } from '../../model/safetensors';
import { ModelFormatError } from '../../errors';
import { GraphBuilder } from './graph';
import { DataType } from './proto';

export const ONNX_OPSET = 17;
export const ONNX_IR_VERSION = 8;

/** How the linear weights are stored: transformers.js's dtype names. */
export type OnnxWeightType = 'fp32' | 'fp16' | 'q8';

export interface HostWeight {
  shape: number[];
  data: Float32Array;
}

/** torch.finfo(float32).min: the masked score (a fully masked row stays finite, as in transformers). */
const MASKED = -3.4028234663852886e38;

export function buildDecoderGraph(cfg: ModelConfig, weights: ReadonlyMap<string, HostWeight>, weightType: OnnxWeightType = 'fp32'): GraphBuilder {
  const { hiddenSize: C, headDim: D, numHeads: Hq, numKvHeads: Hkv, vocabSize: V, numLayers: L } = cfg;
  const g = Hq / Hkv;
  const G = new GraphBuilder();
  const get = (name: string, shape: number[]): HostWeight => {
    const w = weights.get(name);
    if (!w) throw new ModelFormatError(`ONNX export: the model has no tensor ${name}. Export a complete LLaMA-family model (config.json and all weights).`);
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
      throw new ModelFormatError(
        `ONNX export: ${name} has shape [${w.shape}], config.json implies [${shape}]. Check that config.json belongs to these weights.`,
      );
    }
    return w;
  };

  // Linear y = x W^T + b, W [out, in]: stored transposed [in, out] for MatMul.
  const linear = (x: string, name: string, outF: number, inF: number): string => {
    const W = get(`${name}.weight`, [outF, inF]).data;
    const t = new Float32Array(inF * outF);
    for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) t[i * outF + o] = W[o * inF + i];
    const w = storeMatrix(G, `${name}.weight_t`, t, inF, outF, weightType);
    let y = G.op('MatMul', [x, w], {}, name);
    const bias = weights.get(`${name}.bias`);
    if (bias) y = G.op('Add', [y, G.initializer(`${name}.bias`, DataType.FLOAT, [outF], get(`${name}.bias`, [outF]).data)]);
    return y;
  };
  const epsName = G.float32([cfg.rmsNormEps], []);
  const rmsnorm = (x: string, name: string): string => {
    const w = G.initializer(name, DataType.FLOAT, [C], get(name, [C]).data);
    const ms = G.op('ReduceMean', [G.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
    const r = G.op('Reciprocal', [G.op('Sqrt', [G.op('Add', [ms, epsName])])]);
    return G.op('Mul', [G.op('Mul', [x, r]), w], {}, name);
  };
  const half = D / 2;
  const rotateHalf = (x: string): string => {
    const lastAxis = G.int64([-1]);
    const x1 = G.op('Slice', [x, G.int64([0]), G.int64([half]), lastAxis]);
    const x2 = G.op('Slice', [x, G.int64([half]), G.int64([D]), lastAxis]);
    return G.op('Concat', [G.op('Neg', [x2]), x1], { axis: -1 });
  };
  const rope = (x: string, cos: string, sin: string): string => G.op('Add', [G.op('Mul', [x, cos]), G.op('Mul', [rotateHalf(x), sin])]);

  // Inputs.
  const inputIds = G.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const attentionMask = G.input('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']);
  const positionIds = G.input('position_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const past: { key: string; value: string }[] = [];
  for (let l = 0; l < L; l++) {
    const shape = ['batch_size', Hkv, 'past_sequence_length', D];
    past.push({
      key: G.input(`past_key_values.${l}.key`, DataType.FLOAT, shape),
      value: G.input(`past_key_values.${l}.value`, DataType.FLOAT, shape),
    });
  }

  // Embeddings.
  const embedName = 'model.embed_tokens.weight';
  const embed = G.initializer(embedName, DataType.FLOAT, [V, C], get(embedName, [V, C]).data);
  let x = G.op('Gather', [embed, inputIds], { axis: 0 }, 'embed_tokens');

  // RoPE angles θ [B, T, D] from position_ids; cos/sin broadcast over heads.
  const invFreq = G.initializer('rope.inv_freq', DataType.FLOAT, [half], Float32Array.from(ropeInvFreq(D, cfg.ropeTheta, cfg.ropeScaling)));
  const pos = G.op('Unsqueeze', [G.op('Cast', [positionIds], { to: DataType.FLOAT }), G.int64([2])]);
  const freqs = G.op('Mul', [pos, invFreq]);
  const theta = G.op('Concat', [freqs, freqs], { axis: -1 });
  const cos = G.op('Cos', [theta]),
    sin = G.op('Sin', [theta]);
  const cosK = G.op('Unsqueeze', [cos, G.int64([1])]),
    sinK = G.op('Unsqueeze', [sin, G.int64([1])]);
  const cosQ = G.op('Unsqueeze', [cos, G.int64([1, 2])]),
    sinQ = G.op('Unsqueeze', [sin, G.int64([1, 2])]);

  // Mask [B, 1, 1, T, K] (bool): causal over absolute positions, padding, sliding window.
  const one = G.int64([1], []),
    zero = G.int64([0], []);
  const T = G.op('Gather', [G.op('Shape', [inputIds]), one], { axis: 0 });
  const K = G.op('Gather', [G.op('Shape', [attentionMask]), one], { axis: 0 });
  const P = G.op('Sub', [K, T]);
  const qPos = G.op('Unsqueeze', [G.op('Range', [P, K, one]), G.int64([1])]); // [T, 1]
  const kPos = G.op('Unsqueeze', [G.op('Range', [zero, K, one]), G.int64([0])]); // [1, K]
  let allowed = G.op('LessOrEqual', [kPos, qPos]);
  if (cfg.slidingWindow !== null) {
    allowed = G.op('And', [allowed, G.op('Greater', [kPos, G.op('Sub', [qPos, G.int64([cfg.slidingWindow], [])])])]);
  }
  const padding = G.op('Unsqueeze', [G.op('Cast', [attentionMask], { to: DataType.BOOL }), G.int64([1, 2, 3])]);
  const mask = G.op('And', [allowed, padding]);
  const masked = G.float32([MASKED], []);
  const scale = G.float32([1 / Math.sqrt(D)], []);

  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    const h = rmsnorm(x, `${p}.input_layernorm.weight`);
    const q = linear(h, `${p}.self_attn.q_proj`, Hq * D, C);
    const k = linear(h, `${p}.self_attn.k_proj`, Hkv * D, C);
    const v = linear(h, `${p}.self_attn.v_proj`, Hkv * D, C);
    // q [B, T, Hq·D] → [B, Hkv, g, T, D]; k, v [B, T, Hkv·D] → [B, Hkv, T, D].
    const q5 = G.op('Transpose', [G.op('Reshape', [q, G.int64([0, 0, Hkv, g, D])])], { perm: [0, 2, 3, 1, 4] });
    const k4 = G.op('Transpose', [G.op('Reshape', [k, G.int64([0, 0, Hkv, D])])], { perm: [0, 2, 1, 3] });
    const v4 = G.op('Transpose', [G.op('Reshape', [v, G.int64([0, 0, Hkv, D])])], { perm: [0, 2, 1, 3] });
    const qr = rope(q5, cosQ, sinQ);
    const kr = rope(k4, cosK, sinK);
    const keys = G.opTo(`present.${l}.key`, 'Concat', [past[l].key, kr], { axis: 2 });
    const values = G.opTo(`present.${l}.value`, 'Concat', [past[l].value, v4], { axis: 2 });
    const kT = G.op('Unsqueeze', [G.op('Transpose', [keys], { perm: [0, 1, 3, 2] }), G.int64([2])]); // [B, Hkv, 1, D, K]
    const scores = G.op('Mul', [G.op('MatMul', [qr, kT]), scale]); // [B, Hkv, g, T, K]
    const probs = G.op('Softmax', [G.op('Where', [mask, scores, masked])], { axis: -1 });
    const att = G.op('MatMul', [probs, G.op('Unsqueeze', [values, G.int64([2])])]); // [B, Hkv, g, T, D]
    const merged = G.op('Reshape', [G.op('Transpose', [att], { perm: [0, 3, 1, 2, 4] }), G.int64([0, 0, Hq * D])]);
    x = G.op('Add', [x, linear(merged, `${p}.self_attn.o_proj`, C, Hq * D)]);

    const h2 = rmsnorm(x, `${p}.post_attention_layernorm.weight`);
    const gate = linear(h2, `${p}.mlp.gate_proj`, cfg.intermediateSize, C);
    const up = linear(h2, `${p}.mlp.up_proj`, cfg.intermediateSize, C);
    const act = G.op('Mul', [G.op('Mul', [gate, G.op('Sigmoid', [gate])]), up]);
    x = G.op('Add', [x, linear(act, `${p}.mlp.down_proj`, C, cfg.intermediateSize)]);
  }

  const hn = rmsnorm(x, 'model.norm.weight');
  if (weights.has('lm_head.weight')) {
    G.opTo('logits', 'Identity', [linear(hn, 'lm_head', V, C)]);
  } else if (cfg.tieWordEmbeddings) {
    // Tied head: logits = h · embed^T, from the one stored embedding (no second copy in the file).
    G.opTo('logits', 'MatMul', [hn, G.op('Transpose', [embed], { perm: [1, 0] })]);
  } else {
    throw new ModelFormatError('ONNX export: the model has no lm_head.weight and config.json has tie_word_embeddings false. Export a complete model.');
  }

  G.output('logits', DataType.FLOAT, ['batch_size', 'sequence_length', V]);
  for (let l = 0; l < L; l++) {
    const shape = ['batch_size', Hkv, 'total_sequence_length', D];
    G.output(`present.${l}.key`, DataType.FLOAT, shape);
    G.output(`present.${l}.value`, DataType.FLOAT, shape);
  }
  return G;
}

/**
 * A [rows, cols] float matrix as an initializer in the chosen storage, and
 * the name of its float32 value: fp32 as is; fp16 stored half and Cast up;
 * q8 stored int8 with one float scale per column (symmetric, scale =
 * max|w| / 127) and DequantizeLinear. Activations stay float32 either way.
 */
function storeMatrix(G: GraphBuilder, name: string, w: Float32Array, rows: number, cols: number, type: OnnxWeightType): string {
  if (type === 'fp32') return G.initializer(name, DataType.FLOAT, [rows, cols], w);
  if (type === 'fp16') {
    const h = new Uint16Array(w.length);
    for (let i = 0; i < w.length; i++) h[i] = f32ToF16(w[i]);
    return G.op('Cast', [G.initializer(`${name}_fp16`, DataType.FLOAT16, [rows, cols], h)], { to: DataType.FLOAT });
  }
  const scales = new Float32Array(cols);
  for (let i = 0; i < w.length; i++) scales[i % cols] = Math.max(scales[i % cols], Math.abs(w[i]));
  for (let c = 0; c < cols; c++) scales[c] = scales[c] > 0 ? scales[c] / 127 : 1;
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) q[i] = Math.max(-127, Math.min(127, Math.round(w[i] / scales[i % cols])));
  return G.op(
    'DequantizeLinear',
    [
      G.initializer(`${name}_int8`, DataType.INT8, [rows, cols], q),
      G.initializer(`${name}_scale`, DataType.FLOAT, [cols], scales),
      G.initializer(`${name}_zero`, DataType.INT8, [cols], new Int8Array(cols)),
    ],
    { axis: 1 },
  );
}
