/**
 * LN Tuning options (METHODS.md §19). HF PEFT's LNTuningConfig has only
 * `target_modules` here: the shared key, declared once in peft-studio/methods/options (unset: input_layernorm, post_attention_layernorm and
 * the final norm). No option of its own.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const lntuningOptions = [] as const satisfies readonly OptionSpec[];
