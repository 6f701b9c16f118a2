/**
 * P-tuning options (METHODS.md §15), PEFT's PromptEncoderConfig keys.
 * num_virtual_tokens and encoder_hidden_size are shared with the other
 * prompt methods (peft/prompt-tuning/config.ts).
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const pTuningOptions = [
  {
    key: 'encoder_reparameterization_type',
    type: 'enum',
    default: 'MLP',
    choices: ['MLP', 'LSTM'],
    group: 'p-tuning',
    help: 'Prompt encoder: MLP (Linear-ReLU-Linear-ReLU-Linear) or LSTM (bidirectional LSTM, then Linear-ReLU-Linear) over the virtual-token table.',
  },
  {
    key: 'encoder_num_layers',
    type: 'int',
    default: 2,
    min: 1,
    max: 64,
    group: 'p-tuning',
    help: 'Stacked LSTM layers (LSTM encoder only; the MLP always has three linears, as PEFT).',
  },
  {
    key: 'encoder_dropout',
    type: 'float',
    default: 0,
    min: 0,
    max: 1,
    exclusiveMax: true,
    group: 'p-tuning',
    help: 'Dropout between LSTM layers while training (LSTM encoder only; ignored by the MLP, as PEFT).',
  },
] as const satisfies readonly OptionSpec[];
