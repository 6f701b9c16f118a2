/**
 * my-method's options. Every exported array is a list of OptionSpec: they join
 * PEFT Studio's one schema (YAML validation, the UI form, share links), so
 * keys are global: prefix them with the method name. `group` must be the
 * method (folder) name. An option without `default` is required.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const myMethodOptions = [
  {
    key: 'my_method_target',
    type: 'string-list',
    default: 'q_proj,v_proj',
    group: 'my-method',
    help: "Linear modules whose outputs get a trained per-channel scale (q_proj,v_proj,... or 'all').",
  },
  {
    key: 'my_method_init',
    type: 'float',
    default: 0,
    group: 'my-method',
    help: 'Initial value of s in y = (W x) ⊙ (1 + s); 0 starts from the base model exactly.',
  },
] as const satisfies readonly OptionSpec[];
