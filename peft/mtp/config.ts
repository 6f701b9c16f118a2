/**
 * Multitask prompt tuning options (METHODS.md §16), PEFT's
 * MultitaskPromptTuningConfig keys. num_virtual_tokens, prompt_tuning_init
 * and prompt_tuning_init_text are the prompt-tuning options
 * (peft/prompt-tuning/config.ts); unset prompt_tuning_init means RANDOM here.
 * Each example's task id comes from its dataset (EncodedExample.taskId,
 * default 0) and must lie in [0, num_tasks).
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const mtpOptions = [
  {
    key: 'num_tasks',
    type: 'int',
    default: 1,
    min: 1,
    max: 65536,
    group: 'mtp',
    help: 'Tasks T_k with their own prompt factors; every example carries a task id in [0, num_tasks) (default 0).',
  },
  {
    key: 'num_ranks',
    type: 'int',
    default: 1,
    min: 1,
    max: 4096,
    group: 'mtp',
    help: "Rank k of each task's modulation cols[t] · rows[t] (n_v × k times k × d) that multiplies the shared prompt element-wise.",
  },
] as const satisfies readonly OptionSpec[];
