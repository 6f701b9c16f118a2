/**
 * Options of the three bottleneck adapters (bn-adapter, seq-bn-adapter,
 * par-adapter; METHODS.md §17), declared once here and read by all three
 * (`dropout` is the shared spec of peft-studio/methods/options).
 *
 * The keys are the Adapters library's BnConfig field names, because that is
 * what PEFT-Factory's YAML uses: its adapter configs subclass BnConfig
 * (AdaptersDoubleSeqBnConfig / AdaptersSeqBnConfig / AdaptersParBnConfig, plus
 * `adapter_name`) and its peftbench bn-adapter config sets `mh_adapter`,
 * `output_adapter`, `reduction_factor`, `non_linearity`, `adapter_name`.
 * Options whose default differs per method are nullable: null means the
 * method's own default (see the help texts and BN_DEFAULTS in bottleneck.ts).
 * `scaling` takes a number only (PEFT-Factory's argument parser reads the
 * Union[float, str] field as a float); an imported adapter with
 * scaling "channel" loads, "learned" is refused.
 */
import type { OptionSpec } from 'peft-studio/config/schema';
import { dropoutOption } from 'peft-studio/methods/options';

export const NON_LINEARITIES = ['relu', 'tanh', 'sigmoid', 'swish', 'silu', 'gelu', 'gelu_new', 'leakyrelu'] as const;
export const INIT_WEIGHTS = ['bert', 'mam_adapter', 'houlsby'] as const;

const g = 'bn-adapter';

export const bottleneckOptions = [
  {
    key: 'reduction_factor',
    type: 'float',
    default: 16,
    min: 0,
    exclusiveMin: true,
    max: 65536,
    group: g,
    help: "Bottleneck width m = floor(hidden_size / reduction_factor), at least 1 (PEFT-Factory uses 16 for all three adapters; the Adapters library's ParBnConfig alone defaults to 2).",
  },
  {
    key: 'non_linearity',
    type: 'enum',
    default: null,
    nullable: true,
    choices: NON_LINEARITIES,
    group: g,
    help: "Activation between the down and up projections (transformers names; swish = silu, gelu exact, gelu_new tanh approximation, leakyrelu slope 0.01). Unset: swish for bn-adapter (PEFT-Factory's peftbench sets tanh), relu for seq-bn-adapter and par-adapter.",
  },
  {
    key: 'scaling',
    type: 'float',
    default: null,
    nullable: true,
    min: -1e6,
    max: 1e6,
    group: g,
    help: 'Fixed factor on the adapter output (up-projection incl. bias). Unset: 1.0 for bn-adapter and seq-bn-adapter, 4.0 for par-adapter.',
  },
  {
    key: 'init_weights',
    type: 'enum',
    default: null,
    nullable: true,
    choices: INIT_WEIGHTS,
    group: g,
    help: 'Initialisation: bert (down and up ~ N(0, 0.02²), biases 0), mam_adapter (down ~ U(±1/√d), up = 0: the adapter starts as an exact no-op), houlsby (truncated N(0, 0.01²) at ±0.02). Unset: bert for bn-adapter and seq-bn-adapter, mam_adapter for par-adapter.',
  },
  { key: 'ln_before', type: 'bool', default: false, group: g, help: 'A new trainable LayerNorm on the adapter input (before the down projection).' },
  { key: 'ln_after', type: 'bool', default: false, group: g, help: 'A new trainable LayerNorm on the adapter output.' },
  dropoutOption,
  {
    key: 'adapter_name',
    type: 'string',
    default: 'default',
    group: g,
    help: "Name of the adapter: the <n> in its tensor keys (…adapters.<n>.adapter_down.0.weight) and in adapter_config.json. PEFT-Factory's peftbench uses the dataset name.",
  },
  {
    key: 'mh_adapter',
    type: 'bool',
    default: null,
    nullable: true,
    group: g,
    help: 'Adapter after the attention block. Unset: true for bn-adapter, false for seq-bn-adapter and par-adapter.',
  },
  { key: 'output_adapter', type: 'bool', default: null, nullable: true, group: g, help: 'Adapter after (par-adapter: beside) the MLP block. Unset: true.' },
  {
    key: 'original_ln_before',
    type: 'bool',
    default: null,
    nullable: true,
    group: g,
    help: 'Sequential adapters: the adapter sees the sub-layer output plus the residual stream (x + h) instead of h. Unset: false for bn-adapter (Houlsby), true for seq-bn-adapter (Pfeiffer).',
  },
  {
    key: 'residual_before_ln',
    type: 'bool',
    default: true,
    group: g,
    help: "Sequential adapters: the adapter's own residual is h (true, PEFT-Factory) or its input (false; with original_ln_before this adds the residual stream twice, as the library does).",
  },
  {
    key: 'adapter_residual_before_ln',
    type: 'bool',
    default: false,
    group: g,
    help: 'With ln_after on a sequential adapter: LayerNorm(output + residual) instead of LayerNorm(output) + residual.',
  },
] as const satisfies readonly OptionSpec[];
