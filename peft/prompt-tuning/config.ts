/**
 * Options of the soft-prompt methods (METHODS.md Part C, §12), with the keys
 * PEFT / PEFT-Factory use. Registered once here and read by every method that
 * prepends or prefixes virtual tokens: prompt-tuning, p-tuning, mtp,
 * prefix-tuning and p-tuning-v2 (num_virtual_tokens, encoder_hidden_size),
 * prompt-tuning and mtp (prompt_tuning_init, prompt_tuning_init_text).
 *
 * num_virtual_tokens is required by every prompt method but optional in the
 * schema (other methods' configs must not need it): it defaults to null and
 * the prompt methods raise a ConfigError naming the key when it is unset.
 *
 * prompt_tuning_init, unset (null): prompt-tuning uses 'vocab5000', the
 * initialisation PEFT-Factory applies to every prompt-tuning run (the rows of
 * the word embeddings of n_v distinct random ids below min(5000, V)); mtp
 * uses PEFT's default 'RANDOM' (PEFT-Factory does not override MTP). An
 * explicit value is honoured by both (PEFT-Factory overwrites even TEXT).
 */
import type { OptionSpec } from '../../src/config/schema';

/** Initialisations of the prompt table P [n_v, d]. */
export const promptTuningInits = ['RANDOM', 'TEXT', 'SAMPLE_VOCAB', 'vocab5000'] as const;
export type PromptTuningInit = (typeof promptTuningInits)[number];

export const promptOptions = [
  {
    key: 'num_virtual_tokens', type: 'int', default: null, nullable: true, min: 1, max: 65536, group: 'prompt-tuning',
    help: 'Virtual tokens n_v of the soft prompt (prompt-tuning, p-tuning, mtp) or of the per-layer prefix (prefix-tuning, p-tuning-v2). Required by those methods (peftbench: 100 for prompt-tuning and p-tuning, 32 for prefix-tuning).',
  },
  {
    key: 'encoder_hidden_size', type: 'int', default: null, nullable: true, min: 1, max: 65536, group: 'prompt-tuning',
    help: 'Hidden size H of the prompt encoder (p-tuning MLP/LSTM, prefix-tuning projection). Unset: the token dimension (hidden_size for p-tuning; n_kv·head_dim for prefix-tuning).',
  },
  {
    key: 'prompt_tuning_init', type: 'enum', default: null, nullable: true, choices: promptTuningInits, group: 'prompt-tuning',
    help: "Initial prompt (prompt-tuning, mtp): RANDOM N(0,1); TEXT the embeddings of prompt_tuning_init_text's tokens (with BOS), repeated or cut to n_v; SAMPLE_VOCAB the embeddings of n_v uniform vocabulary ids; vocab5000 the embeddings of n_v distinct random ids below 5000. Unset: vocab5000 for prompt-tuning (what PEFT-Factory does to every prompt-tuning run), RANDOM for mtp.",
  },
  {
    key: 'prompt_tuning_init_text', type: 'string', default: null, nullable: true, group: 'prompt-tuning',
    help: 'Text whose token embeddings initialise the prompt when prompt_tuning_init is TEXT.',
  },
] as const satisfies readonly OptionSpec[];
