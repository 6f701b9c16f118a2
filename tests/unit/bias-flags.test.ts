/** Merged-model config flags for added biases (BitFit on llama), shared by the CLI and the studio. */
import { describe, it, expect } from 'vitest';
import { configWithBiasFlags } from '../../src/model/bias-flags';

describe('configWithBiasFlags', () => {
  const llama = JSON.stringify({ model_type: 'llama', hidden_size: 64 });
  it('turns on attention_bias / mlp_bias only for the groups that have biases', () => {
    expect(JSON.parse(configWithBiasFlags(llama, ['model.layers.0.self_attn.q_proj.bias'])!)).toEqual({
      model_type: 'llama',
      hidden_size: 64,
      attention_bias: true,
    });
    expect(JSON.parse(configWithBiasFlags(llama, ['model.layers.3.mlp.down_proj.bias'])!)).toEqual({ model_type: 'llama', hidden_size: 64, mlp_bias: true });
  });
  it('leaves a config alone (null: copy byte for byte) without biases, when already set, or for other model types', () => {
    expect(configWithBiasFlags(llama, ['model.layers.0.self_attn.q_proj.weight'])).toBeNull();
    expect(configWithBiasFlags(JSON.stringify({ model_type: 'llama', attention_bias: true }), ['model.layers.0.self_attn.q_proj.bias'])).toBeNull();
    expect(configWithBiasFlags(JSON.stringify({ model_type: 'qwen2' }), ['model.layers.0.self_attn.q_proj.bias'])).toBeNull();
  });
});
