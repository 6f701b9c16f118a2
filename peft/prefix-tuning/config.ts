/**
 * Prefix-tuning option (METHODS.md §13). num_virtual_tokens and


 * prefix tuning's own. p-tuning-v2 reads it too (and requires it false).
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const prefixOptions = [
  {
    key: 'prefix_projection',
    type: 'bool',
    default: false,
    group: 'prefix-tuning',
    help: 'Reparameterise the prefix: Z = Linear(H, F)(tanh(Linear(D, H)(E))) from a table E [n_v, D], H = encoder_hidden_size (D = n_kv·head_dim, F = 2·layers·D). Off: Z [n_v, F] is the trained table itself (= p-tuning-v2). peftbench: true, H = 512.',
  },
] as const satisfies readonly OptionSpec[];
