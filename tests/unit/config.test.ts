import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ModelFormatError } from '../../src/errors';
import { parseModelConfig } from '../../src/model/config';
import { testHubRoot } from '../helpers/hub-server';

const base = {
  hidden_size: 64,
  intermediate_size: 172,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  vocab_size: 512,
};

describe('parseModelConfig', () => {
  it('reads stories260K/config.json', () => {
    const file = path.join(testHubRoot(), 'models', 'stories260K', 'config.json');
    const cfg = parseModelConfig(JSON.parse(readFileSync(file, 'utf8')), file);
    expect(cfg).toEqual({
      modelType: 'llama',
      hiddenSize: 64,
      intermediateSize: 172,
      numLayers: 5,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 8,
      vocabSize: 512,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScaling: null,
      tieWordEmbeddings: true,
      attentionBias: { qkv: false, o: false },
      mlpBias: false,
      maxPositionEmbeddings: 512,
      bosTokenId: 1,
      eosTokenIds: [2],
      slidingWindow: null,
    });
  });

  it('llama defaults, head_dim from hidden/heads, attention_bias on all four projections', () => {
    const cfg = parseModelConfig({ ...base, model_type: 'llama', attention_bias: true, mlp_bias: true }, 'x/config.json');
    expect(cfg.headDim).toBe(8);
    expect(cfg.numKvHeads).toBe(8);
    expect(cfg.rmsNormEps).toBe(1e-6);
    expect(cfg.ropeTheta).toBe(10000);
    expect(cfg.tieWordEmbeddings).toBe(false);
    expect(cfg.attentionBias).toEqual({ qkv: true, o: true });
    expect(cfg.mlpBias).toBe(true);
    expect(cfg.maxPositionEmbeddings).toBe(2048);
    expect(cfg.bosTokenId).toBe(1);
    expect(cfg.eosTokenIds).toEqual([2]);
  });

  it('llama 3: eos list, rope_scaling kept as written', () => {
    const rs = { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const cfg = parseModelConfig(
      {
        ...base,
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        eos_token_id: [128001, 128008, 128009],
        bos_token_id: 128000,
        rope_theta: 500000,
        rope_scaling: rs,
      },
      'llama3',
    );
    expect(cfg.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(cfg.bosTokenId).toBe(128000);
    expect(cfg.ropeTheta).toBe(500000);
    expect(cfg.ropeScaling).toEqual(rs);
  });

  it('transformers 5 rope_parameters', () => {
    const cfg = parseModelConfig({ ...base, model_type: 'llama', rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }, 'v5');
    expect(cfg.ropeTheta).toBe(1e6);
    expect(cfg.ropeScaling).toBeNull();
    const scaled = parseModelConfig({ ...base, model_type: 'llama', rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 1e4 } }, 'v5');
    expect(scaled.ropeScaling).toMatchObject({ rope_type: 'linear', factor: 2 });
  });

  it('qwen2: q/k/v bias, no o bias, sliding window only when enabled', () => {
    const q = {
      ...base,
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      num_key_value_heads: 2,
      tie_word_embeddings: true,
      sliding_window: 32768,
      use_sliding_window: false,
      bos_token_id: 151643,
      eos_token_id: 151645,
      rope_theta: 1000000.0,
    };
    const cfg = parseModelConfig(q, 'qwen');
    expect(cfg.modelType).toBe('qwen2');
    expect(cfg.attentionBias).toEqual({ qkv: true, o: false });
    expect(cfg.slidingWindow).toBeNull();
    expect(cfg.numKvHeads).toBe(2);
    expect(cfg.maxPositionEmbeddings).toBe(32768);
    expect(cfg.eosTokenIds).toEqual([151645]);
    expect(parseModelConfig({ ...q, use_sliding_window: true }, 'qwen').slidingWindow).toBe(32768);
    const noIds = parseModelConfig({ ...base, model_type: 'qwen2' }, 'qwen');
    expect(noIds.bosTokenId).toBeNull();
    expect(noIds.eosTokenIds).toEqual([]);
  });

  it('mistral: sliding window (default 4096, null disables), explicit head_dim', () => {
    const m = { ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', head_dim: 16 };
    const cfg = parseModelConfig(m, 'mistral');
    expect(cfg.slidingWindow).toBe(4096);
    expect(cfg.headDim).toBe(16);
    expect(cfg.attentionBias).toEqual({ qkv: false, o: false });
    expect(parseModelConfig({ ...m, sliding_window: null }, 'mistral').slidingWindow).toBeNull();
    expect(parseModelConfig({ ...m, sliding_window: 1024 }, 'mistral').slidingWindow).toBe(1024);
  });

  it('infers model_type from architectures', () => {
    expect(parseModelConfig({ ...base, architectures: ['MistralForCausalLM'] }, 'm').modelType).toBe('mistral');
  });

  const bad: [string, Record<string, unknown>, (string | RegExp)[]][] = [
    [
      'unsupported model_type',
      { ...base, model_type: 'gpt2' },
      ['unsupported model_type "gpt2"', 'LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'],
    ],
    ['unsupported architecture', { ...base, architectures: ['GPTNeoXForCausalLM'] }, ['unsupported architecture GPTNeoXForCausalLM', 'Qwen2ForCausalLM']],
    ['not a causal LM', { ...base, model_type: 'llama', architectures: ['LlamaForSequenceClassification'] }, ['LlamaForSequenceClassification', 'Supported']],
    ['no model_type or architectures', { ...base }, ['missing field "model_type"']],
    ['missing hidden_size', { ...base, model_type: 'llama', hidden_size: undefined }, ['missing field "hidden_size"']],
    ['missing vocab_size', { ...base, model_type: 'qwen2', vocab_size: undefined }, ['missing field "vocab_size"']],
    ['bad type', { ...base, model_type: 'llama', num_hidden_layers: '5' }, ['"num_hidden_layers"', 'positive integer']],
    ['heads vs kv heads', { ...base, model_type: 'llama', num_key_value_heads: 3 }, ['not a multiple of num_key_value_heads']],
    ['hidden not divisible', { ...base, model_type: 'llama', hidden_size: 60 }, ['head_dim']],
    ['activation', { ...base, model_type: 'llama', hidden_act: 'gelu' }, ['hidden_act "gelu"']],
    ['rope_scaling type', { ...base, model_type: 'llama', rope_scaling: { factor: 2 } }, ['rope_type']],
    ['bad eos', { ...base, model_type: 'llama', eos_token_id: ['x'] }, ['eos_token_id[0]']],
  ];
  for (const [name, json, parts] of bad) {
    it(`error: ${name}`, () => {
      let err: unknown;
      try {
        parseModelConfig(json, 'some/config.json');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ModelFormatError);
      expect((err as Error).message).toContain('some/config.json');
      for (const p of parts) expect((err as Error).message).toContain(p);
    });
  }

  it('error: not an object', () => {
    expect(() => parseModelConfig([1], 'c')).toThrow(ModelFormatError);
    expect(() => parseModelConfig(null, 'c')).toThrow(ModelFormatError);
  });
});
