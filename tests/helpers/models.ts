/** Small models for method tests: random weights of any shape, and stories260K. */
import path from 'node:path';
import type { Engine } from '../../src/engine/engine';
import { LocalFolderSource } from '../../src/hub/node';
import { parseModelConfig, type ModelConfig } from '../../src/model/config';
import { loadModel, modelFromWeights } from '../../src/model/load';
import type { LlamaModel } from '../../src/model/llama';
import { randn, rng } from './check-op';
import { testHubRoot } from './hub-server';

export const storiesDir = () => path.join(testHubRoot(), 'models', 'stories260K');

export async function loadStories(e: Engine): Promise<LlamaModel> {
  return (await loadModel(e, new LocalFolderSource(storiesDir()), { tokenizer: false })).model;
}

/** A tiny llama config (GQA 4/2, odd FFN) for gradient checks. */
export function tinyConfig(over: Record<string, unknown> = {}): ModelConfig {
  return parseModelConfig({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 16, intermediate_size: 22, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 37, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: true, max_position_embeddings: 64, ...over,
  }, 'tiny');
}

export function randomWeights(cfg: ModelConfig, seed = 7, opts: { qkvBias?: boolean; untied?: boolean } = {}) {
  const r = rng(seed);
  const w = new Map<string, { shape: number[]; data: Float32Array }>();
  const put = (n: string, shape: number[], scale = 0.3) => w.set(n, { shape, data: randn(shape.reduce((a, b) => a * b), r, scale) });
  const { hiddenSize: C, headDim: D, numHeads: Hq, numKvHeads: Hkv, intermediateSize: F, vocabSize: V } = cfg;
  put('model.embed_tokens.weight', [V, C], 1);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    put(`${p}.self_attn.q_proj.weight`, [Hq * D, C]);
    put(`${p}.self_attn.k_proj.weight`, [Hkv * D, C]);
    put(`${p}.self_attn.v_proj.weight`, [Hkv * D, C]);
    put(`${p}.self_attn.o_proj.weight`, [C, Hq * D]);
    if (opts.qkvBias) for (const n of ['q', 'k', 'v']) put(`${p}.self_attn.${n}_proj.bias`, [n === 'q' ? Hq * D : Hkv * D]);
    put(`${p}.mlp.gate_proj.weight`, [F, C]);
    put(`${p}.mlp.up_proj.weight`, [F, C]);
    put(`${p}.mlp.down_proj.weight`, [C, F]);
    w.set(`${p}.input_layernorm.weight`, { shape: [C], data: Float32Array.from({ length: C }, () => 1 + 0.1 * (r() - 0.5)) });
    w.set(`${p}.post_attention_layernorm.weight`, { shape: [C], data: Float32Array.from({ length: C }, () => 1 + 0.1 * (r() - 0.5)) });
  }
  w.set('model.norm.weight', { shape: [C], data: Float32Array.from({ length: C }, () => 1 + 0.1 * (r() - 0.5)) });
  if (opts.untied) put('lm_head.weight', [V, C]);
  return w;
}

export function tinyModel(e: Engine, over: Record<string, unknown> = {}, seed = 7): LlamaModel {
  const cfg = tinyConfig(over);
  return modelFromWeights(e, cfg, randomWeights(cfg, seed));
}

/** The SmolLM2-135M shape (for parameter-count formulas; no weights). */
export function smollmConfig(): ModelConfig {
  return parseModelConfig({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30,
    num_attention_heads: 9, num_key_value_heads: 3, head_dim: 64, vocab_size: 49152, max_position_embeddings: 8192,
    rms_norm_eps: 1e-5, rope_theta: 100000, tie_word_embeddings: true,
  }, 'smollm2-135m');
}
