/**
 * LoRA options, with LLaMA-Factory / PEFT-Factory key names. Defaults:
 * lora_rank 8, lora_alpha 2 x rank when unset, dropout 0, target 'all'.
 */
export const loraOptions = [
  { key: 'lora_rank', type: 'int', default: 8, min: 1, max: 4096, help: 'Rank r of the update B·A.', group: 'lora' },
  { key: 'lora_alpha', type: 'float', default: null, nullable: true, min: 0, max: 1e6, help: 'Scaling numerator: s = alpha / r (alpha / √r with rsLoRA). Unset: 2 × rank.', group: 'lora' },
  { key: 'lora_dropout', type: 'float', default: 0, min: 0, max: 1, exclusiveMax: true, help: 'Dropout on the input of A (training only).', group: 'lora' },
  { key: 'lora_target', type: 'string-list', default: 'all', help: "Module names to adapt (q_proj, v_proj, ...) or 'all' for every linear projection.", group: 'lora' },
  { key: 'use_rslora', type: 'bool', default: false, help: 'Rank-stabilised scaling alpha / √r.', group: 'lora' },
  { key: 'loraplus_lr_ratio', type: 'float', default: null, nullable: true, min: 0, max: 1e6, help: 'LoRA+: learning rate of B matrices = ratio × learning_rate.', group: 'lora' },
] as const;
