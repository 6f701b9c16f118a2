/** Small models for method tests: random weights of any shape, and stories260K. */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Engine } from '../../src/engine/engine';
import { LocalFolderSource } from '../../src/hub/node';
import { parseModelConfig, type ModelConfig } from '../../src/model/config';
import { loadModel, modelFromWeights } from '../../src/model/load';
import type { LlamaModel } from '../../src/model/llama';
import { serializeSafetensors } from '../../src/model/safetensors';
import { randn, rng } from './check-op';
import { testHubRoot } from './hub-server';

export const storiesDir = () => path.join(testHubRoot(), 'models', 'stories260K');

export async function loadStories(e: Engine): Promise<LlamaModel> {
  return (await loadModel(e, new LocalFolderSource(storiesDir()), { tokenizer: false })).model;
}

/** A tiny llama config (GQA 4/2, odd FFN) for gradient checks. */
export function tinyConfig(over: Record<string, unknown> = {}): ModelConfig {
  return parseModelConfig(
    {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: 16,
      intermediate_size: 22,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 37,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      tie_word_embeddings: true,
      max_position_embeddings: 64,
      ...over,
    },
    'tiny',
  );
}

export function randomWeights(cfg: ModelConfig, seed = 7, opts: { qkvBias?: boolean; untied?: boolean } = {}) {
  const r = rng(seed);
  const w = new Map<string, { shape: number[]; data: Float32Array }>();
  const put = (n: string, shape: number[], scale = 0.3) =>
    w.set(n, {
      shape,
      data: randn(
        shape.reduce((a, b) => a * b),
        r,
        scale,
      ),
    });
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
  return parseModelConfig(
    {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: 576,
      intermediate_size: 1536,
      num_hidden_layers: 30,
      num_attention_heads: 9,
      num_key_value_heads: 3,
      head_dim: 64,
      vocab_size: 49152,
      max_position_embeddings: 8192,
      rms_norm_eps: 1e-5,
      rope_theta: 100000,
      tie_word_embeddings: true,
    },
    'smollm2-135m',
  );
}

/**
 * A qwen2 model folder in Hub layout for CLI / export tests: random weights
 * (q/k/v biases, untied head, GQA 6/2, odd FFN, rope_theta 1e6) with
 * stories260K's tokenizer files, so `--text` prompts work (vocab 512).
 * The head rows of ids 0-2 are zero, so greedy decoding does not stop early.
 */
export function writeQwen2TestModel(dir: string, seed = 7): ModelConfig {
  const json = {
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: 48,
    intermediate_size: 70,
    num_hidden_layers: 2,
    num_attention_heads: 6,
    num_key_value_heads: 2,
    vocab_size: 512,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    tie_word_embeddings: false,
    max_position_embeddings: 128,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: 'silu',
    torch_dtype: 'float32',
    use_sliding_window: false,
  };
  const cfg = parseModelConfig(json, 'qwen2-test');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json, null, 2));
  const weights = randomWeights(cfg, seed, { qkvBias: true, untied: true });
  // Zero head rows for <unk>, <s>, </s>: greedy decoding never stops early, so generation tests see their full length.
  weights.get('lm_head.weight')!.data.fill(0, 0, 3 * cfg.hiddenSize);
  writeFileSync(path.join(dir, 'model.safetensors'), serializeSafetensors(weights, { format: 'pt' }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json']) {
    copyFileSync(path.join(storiesDir(), f), path.join(dir, f));
  }
  return cfg;
}
