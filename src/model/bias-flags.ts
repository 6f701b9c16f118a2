/**
 * A merge that added linear biases (BitFit on llama) needs the config flags
 * that make transformers build them: attention_bias (q, k, v, o) and mlp_bias
 * (gate, up, down); BitFit's merge fills the rest of each group with zero
 * biases. Returns the new config.json text, or null when the base config is
 * right as it is (then it is copied byte for byte). Shared by the CLI's and
 * the studio's merged exports.
 */
export function configWithBiasFlags(configText: string, tensorNames: Iterable<string>): string | null {
  const cfg = JSON.parse(configText) as Record<string, unknown>;
  if (cfg.model_type !== 'llama') return null;
  const names = [...tensorNames];
  const attn = names.some((n) => /\.self_attn\.[qkvo]_proj\.bias$/.test(n)) && cfg.attention_bias !== true;
  const mlp = names.some((n) => /\.mlp\.(gate|up|down)_proj\.bias$/.test(n)) && cfg.mlp_bias !== true;
  if (!attn && !mlp) return null;
  if (attn) cfg.attention_bias = true;
  if (mlp) cfg.mlp_bias = true;
  return JSON.stringify(cfg, null, 2) + '\n';
}
