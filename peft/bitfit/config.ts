/**
 * BitFit options (METHODS.md §20). PEFT-Factory's plug-in config has only
 * `target_modules` (the shared key, declared once in peft-studio/methods/options;
 * unset: q_proj, v_proj). `bias_init` is PEFT Studio's: PEFT-Factory keeps
 * nn.Linear's default uniform bias init, which changes the output at step 0.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const bitfitOptions = [
  {
    key: 'bias_init',
    type: 'enum',
    default: 'torch_default',
    choices: ['torch_default', 'zeros'],
    group: 'bitfit',
    help: "BitFit: initial value of the added biases. torch_default: U(−1/√in, 1/√in), nn.Linear's init, as PEFT-Factory (the output changes at step 0); zeros: the model starts equal to the base. A bias the model already has (qwen2 q/k/v) trains from its own value either way.",
  },
] as const satisfies readonly OptionSpec[];
