/**
 * VeRA options (HF PEFT VeraConfig, PEFT 0.17 defaults), prefixed vera_ as
 * LLaMA-Factory prefixes per-method keys (lora_rank, oft_rank, ...).
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const veraOptions = [
  {
    key: 'vera_rank',
    type: 'int',
    default: 256,
    min: 1,
    max: 65536,
    group: 'vera',
    help: 'Rank r of the shared frozen random projections A [r, in_max] and B [out_max, r] (HF PEFT r, default 256).',
  },
  {
    key: 'vera_target',
    type: 'string-list',
    default: 'q_proj,v_proj',
    group: 'vera',
    help: "Linear modules to adapt (HF PEFT's llama default q_proj,v_proj), or 'all' for every linear projection.",
  },
  {
    key: 'vera_dropout',
    type: 'float',
    default: 0,
    min: 0,
    max: 1,
    exclusiveMax: true,
    group: 'vera',
    help: 'Dropout on the input of the VeRA branch (training only).',
  },
  {
    key: 'vera_d_initial',
    type: 'float',
    default: 0.1,
    min: -1e6,
    max: 1e6,
    group: 'vera',
    help: 'Initial value of every entry of the trained vector lambda_d (HF PEFT d_initial); lambda_b starts at 0.',
  },
  {
    key: 'vera_projection_prng_key',
    type: 'int',
    default: 0,
    min: 0,
    max: 4294967295,
    group: 'vera',
    help: 'Seed of the random projections A and B (HF PEFT projection_prng_key); independent of seed.',
  },
  {
    key: 'vera_save_projection',
    type: 'bool',
    default: true,
    group: 'vera',
    help: 'Export A and B (base_model.vera_A / vera_B) with the adapter, so it loads the same anywhere (HF PEFT save_projection). Off: they are regenerated from the key on load.',
  },
] as const satisfies readonly OptionSpec[];
