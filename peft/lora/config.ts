/**
 * LoRA options (METHODS.md §4, §7), with LLaMA-Factory / PEFT-Factory key
 * names and defaults: lora_rank 8, lora_alpha 2 × rank when unset, dropout 0,
 * target 'all'. The only definition: DoRA, PiSSA and QLoRA list these in
 * their own options and add their selecting flag.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const loraOptions = [
  { key: 'lora_rank', type: 'int', default: 8, min: 1, max: 4096, group: 'lora', help: 'Rank r of the update B·A.' },
  {
    key: 'lora_alpha',
    type: 'float',
    default: null,
    nullable: true,
    min: 0,
    exclusiveMin: true,
    max: 1e6,
    group: 'lora',
    help: 'Scaling numerator: s = alpha / r (alpha / √r with rsLoRA). Unset: 2 × lora_rank.',
  },
  { key: 'lora_dropout', type: 'float', default: 0, min: 0, max: 1, exclusiveMax: true, group: 'lora', help: 'Dropout on the input of A (training only).' },
  {
    key: 'lora_target',
    type: 'string-list',
    default: 'all',
    group: 'lora',
    help: "Module names to adapt (q_proj,v_proj,...) or 'all' for every linear projection.",
  },
  { key: 'use_rslora', type: 'bool', default: false, group: 'lora', help: 'Rank-stabilised scaling alpha / √r.' },
  {
    key: 'loraplus_lr_ratio',
    type: 'float',
    default: null,
    nullable: true,
    min: 0,
    exclusiveMin: true,
    max: 1e6,
    group: 'lora',
    help: 'LoRA+: learning rate of the B matrices = ratio × learning_rate (paper: 16). Unset: off.',
  },
  {
    key: 'loraplus_lr_embedding',
    type: 'float',
    default: 1e-6,
    min: 0,
    max: 100,
    group: 'lora',
    help: 'LoRA+: learning rate of LoRA embedding B matrices (accepted for LLaMA-Factory configs; PEFT Studio adapts no embedding).',
  },
] as const satisfies readonly OptionSpec[];
