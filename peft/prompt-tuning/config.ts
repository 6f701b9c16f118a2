/**
 * Prompt tuning's options (METHODS.md Part C, §12), with the keys PEFT /
 * PEFT-Factory use; mtp reads them too. num_virtual_tokens and
 * encoder_hidden_size are shared by every soft-prompt method and declared
 * once in peft-studio/methods/options; num_virtual_tokens is nullable in the
 * schema (other methods' configs must not need it) and each prompt method
 * lists it in its `required`.
 *
 * prompt_tuning_init, unset (null): prompt-tuning uses 'vocab5000', the
 * initialisation PEFT-Factory applies to every prompt-tuning run (the rows of
 * the word embeddings of n_v distinct random ids below min(5000, V)); mtp
 * uses PEFT's default 'RANDOM' (PEFT-Factory does not override MTP). An
 * explicit value is honoured by both (PEFT-Factory overwrites even TEXT).
 */
import type { OptionSpec } from 'peft-studio/config/schema';

/** Initialisations of the prompt table P [n_v, d]. */
export const promptTuningInits = ['RANDOM', 'TEXT', 'SAMPLE_VOCAB', 'vocab5000'] as const;
export type PromptTuningInit = (typeof promptTuningInits)[number];

export const promptOptions = [
  {
    key: 'prompt_tuning_init',
    type: 'enum',
    default: null,
    nullable: true,
    choices: promptTuningInits,
    group: 'prompt-tuning',
    help: "Initial prompt (prompt-tuning, mtp): RANDOM N(0,1); TEXT the embeddings of prompt_tuning_init_text's tokens (with BOS), repeated or cut to n_v; SAMPLE_VOCAB the embeddings of n_v uniform vocabulary ids; vocab5000 the embeddings of n_v distinct random ids below 5000. Unset: vocab5000 for prompt-tuning (what PEFT-Factory does to every prompt-tuning run), RANDOM for mtp.",
  },
  {
    key: 'prompt_tuning_init_text',
    type: 'string',
    default: null,
    nullable: true,
    group: 'prompt-tuning',
    help: 'Text whose token embeddings initialise the prompt when prompt_tuning_init is TEXT.',
  },
] as const satisfies readonly OptionSpec[];
