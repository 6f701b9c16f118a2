/**
 * Full fine-tuning (finetuning_type: full) has no options of its own: every
 * weight trains with the trainer's AdamW (learning_rate, weight_decay,
 * adam_beta1/2, adam_epsilon). GaLore is its optimizer option (use_galore,
 * peft/galore/config.ts).
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const fullOptions = [] as const satisfies readonly OptionSpec[];
