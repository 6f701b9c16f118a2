/**
 * GaLore options (METHODS.md §11), LLaMA-Factory keys and defaults:
 * use_galore (selects this folder with finetuning_type: full), galore_target
 * 'all', galore_rank 16, galore_update_interval 200, galore_scale 2.0,
 * galore_proj_type 'std', galore_layerwise false.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const useGalore = {
  key: 'use_galore',
  type: 'bool',
  default: false,
  group: 'galore',
  help: 'GaLore: full fine-tuning with low-rank projected AdamW moments. With finetuning_type full, selects GaLore.',
} as const satisfies OptionSpec;

export const galoreOptions = [
  useGalore,
  {
    key: 'galore_target',
    type: 'string-list',
    default: 'all',
    group: 'galore',
    help: "Linear modules optimised with projection ('all': every linear projection).",
  },
  { key: 'galore_rank', type: 'int', default: 16, min: 1, max: 4096, group: 'galore', help: 'Rank of the gradient projection.' },
  {
    key: 'galore_update_interval',
    type: 'int',
    default: 200,
    min: 1,
    max: 1e9,
    group: 'galore',
    help: 'Optimizer steps between projection refreshes (SVD of the gradient).',
  },
  { key: 'galore_scale', type: 'float', default: 2, min: 0, max: 1e6, group: 'galore', help: 'Scale of the back-projected update.' },
  {
    key: 'galore_proj_type',
    type: 'enum',
    default: 'std',
    choices: ['std', 'reverse_std', 'right', 'left', 'full'],
    group: 'galore',
    help: 'Which side(s) the gradient is projected on.',
  },
  {
    key: 'galore_layerwise',
    type: 'bool',
    default: false,
    group: 'galore',
    help: 'Step each parameter as soon as its gradient is ready (no gradient accumulation).',
  },
] as const satisfies readonly OptionSpec[];
