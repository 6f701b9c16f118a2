/**
 * DoRA options (METHODS.md §6): DoRA is LoRA with `use_dora: true`
 * (LLaMA-Factory / PEFT key), so it takes every LoRA option; the keys and
 * defaults are the lora-family ones of src/config/schema.ts.
 */
import { loraOptions } from '../lora/config';

export const doraOptions = [
  ...loraOptions,
  { key: 'use_dora', type: 'bool', default: false, help: 'DoRA: weight-decomposed LoRA (a trained magnitude per output row). Selects this method with finetuning_type lora.', group: 'lora' },
] as const;
