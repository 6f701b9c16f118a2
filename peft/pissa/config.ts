/**
 * PiSSA's options (METHODS.md §8): PiSSA is LoRA with `pissa_init: true`
 * (LLaMA-Factory keys), so it reads every LoRA option (peft/lora/config.ts)
 * plus these; pissa_init selects it.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const pissaInit = {
  key: 'pissa_init',
  type: 'bool',
  default: false,
  group: 'pissa',
  help: 'PiSSA: initialise A, B from the principal singular vectors of W (W keeps the residual). With finetuning_type lora, selects PiSSA.',
} as const satisfies OptionSpec;

export const pissaOptions = [
  pissaInit,
  {
    key: 'pissa_iter',
    type: 'int',
    default: 16,
    min: -1,
    max: 1000,
    group: 'pissa',
    help: 'PiSSA: subspace (power) iterations of the randomized SVD (PEFT "pissa_niter_<k>"); -1: exact SVD ("pissa").',
  },
  {
    key: 'pissa_convert',
    type: 'bool',
    default: false,
    group: 'pissa',
    help: 'PiSSA: also export the adapter converted to a plain rank-2r LoRA on the original base (pissa_converted/).',
  },
] as const satisfies readonly OptionSpec[];
