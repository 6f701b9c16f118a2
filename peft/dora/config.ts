/**
 * DoRA's option (METHODS.md §6): DoRA is LoRA with `use_dora: true`
 * (LLaMA-Factory / PEFT key), so it reads every LoRA option
 * (peft/lora/config.ts) plus this flag, which selects it.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const useDora = {
  key: 'use_dora',
  type: 'bool',
  default: false,
  group: 'dora',
  help: 'DoRA: weight-decomposed LoRA (a trained magnitude per output row). With finetuning_type lora, selects DoRA.',
} as const satisfies OptionSpec;

export const doraOptions = [useDora] as const satisfies readonly OptionSpec[];
