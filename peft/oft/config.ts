/**
 * OFT options (METHODS.md §9). LLaMA-Factory keys where it has them
 * (oft_rank, oft_block_size, oft_target, module_dropout; defaults 0, 32, all,
 * 0); the remaining HF PEFT OFTConfig fields keep PEFT's names and defaults
 * (eps is `coft_eps` here: a bare `eps` key would be ambiguous in a config
 * that also has adam_epsilon).
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const oftOptions = [
  {
    key: 'oft_rank',
    type: 'int',
    default: 0,
    min: 0,
    max: 65536,
    group: 'oft',
    help: 'Number of OFT blocks per layer (r). Set exactly one of oft_rank and oft_block_size; the other must be 0.',
  },
  {
    key: 'oft_block_size',
    type: 'int',
    default: 32,
    min: 0,
    max: 65536,
    group: 'oft',
    help: 'OFT block size b (adjusted per layer to the nearest divisor of its input size). Set exactly one of oft_rank and oft_block_size; the other must be 0.',
  },
  {
    key: 'oft_target',
    type: 'string-list',
    default: 'all',
    group: 'oft',
    help: "Module names to adapt (q_proj,v_proj,...) or 'all' for every linear projection.",
  },
  {
    key: 'module_dropout',
    type: 'float',
    default: 0,
    min: 0,
    max: 1,
    exclusiveMax: true,
    group: 'oft',
    help: 'OFT multiplicative block dropout. Accepted and written to the adapter config; like current HF PEFT, the Linear forward does not apply it.',
  },
  {
    key: 'coft',
    type: 'bool',
    default: false,
    group: 'oft',
    help: 'Constrained OFT: before every forward, project each block onto ‖Q‖_F ≤ coft_eps / √(blocks).',
  },
  { key: 'coft_eps', type: 'float', default: 6e-5, min: 0, exclusiveMin: true, max: 1e6, group: 'oft', help: "COFT radius (HF PEFT's `eps`)." },
  { key: 'block_share', type: 'bool', default: false, group: 'oft', help: 'Share one rotation block across all blocks of a layer.' },
  {
    key: 'use_cayley_neumann',
    type: 'bool',
    default: true,
    group: 'oft',
    help: 'Cayley–Neumann polynomial (fast, approximately orthogonal) instead of the exact Cayley transform (I − Q)(I + Q)⁻¹.',
  },
  { key: 'num_cayley_neumann_terms', type: 'int', default: 5, min: 1, max: 32, group: 'oft', help: 'Terms of the Cayley–Neumann polynomial.' },
  {
    key: 'cayley_neumann_formula',
    type: 'enum',
    default: '0.18',
    choices: ['0.18', '0.17'],
    group: 'oft',
    help: "Which HF PEFT polynomial: '0.18' (I + 2Q + … + 2Q^{n−2} + Q^{n−1}, PEFT ≥0.18) or '0.17' (I + 2Q + … + 2Q^{n−1}, PEFT 0.17 as pinned by PEFT-Factory). The export's peft_version records it.",
  },
] as const satisfies readonly OptionSpec[];
