/**
 * PiSSA options (METHODS.md §8): PiSSA is LoRA with `pissa_init: true`
 * (LLaMA-Factory keys), so it takes every LoRA option plus the three below;
 * keys and defaults are the lora-family ones of src/config/schema.ts.
 */
import { loraOptions } from '../lora/config';

export const pissaOptions = [
  ...loraOptions,
  { key: 'pissa_init', type: 'bool', default: false, help: 'PiSSA: initialise A, B from the principal singular vectors of W (W keeps the residual). Selects this method with finetuning_type lora.', group: 'lora' },
  { key: 'pissa_iter', type: 'int', default: 16, min: -1, max: 1000, help: 'PiSSA: subspace (power) iterations of the randomized SVD (PEFT "pissa_niter_<k>"); -1: exact SVD ("pissa").', group: 'lora' },
  { key: 'pissa_convert', type: 'bool', default: false, help: 'PiSSA: also export the adapter converted to a plain rank-2r LoRA on the original base (pissa_converted/).', group: 'lora' },
] as const;
