/**
 * (IA)³ options (METHODS.md §18), with HF PEFT IA3Config names. The shared
 * `target_modules` key is declared once in peft-studio/methods/options (unset:
 * each method's default; IA3's is k_proj, v_proj, down_proj).
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const ia3Options = [
  {
    key: 'feedforward_modules',
    type: 'string-list',
    default: null,
    nullable: true,
    group: 'ia3',
    help: 'IA3: target modules treated as feed-forward, whose INPUT is scaled (vector 1 × in); the other targets scale their OUTPUT (out × 1). Must be a subset of target_modules when both are set. Unset: down_proj.',
  },
  {
    key: 'init_ia3_weights',
    type: 'bool',
    default: true,
    group: 'ia3',
    help: 'IA3: initialise the scaling vectors to ones (the model starts equal to the base). false: standard normal, as HF PEFT.',
  },
] as const satisfies readonly OptionSpec[];
