/**
 * SVFT options (METHODS.md §10.1). PEFT-Factory passes its custom SVFTConfig
 * fields straight from the YAML, so the keys are the plug-in's own:
 * target_modules (the shared spec, peft-studio/methods/options; unset:
 * q_proj, k_proj), rank, off_diag, pattern, fill_orthonormal.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const svftOptions = [
  {
    key: 'rank',
    type: 'int',
    default: null,
    nullable: true,
    min: 1,
    max: 65536,
    group: 'svft',
    help: 'Singular vectors kept per layer (clamped to min(out, in)). Unset: all of them (the layer equals the base at init).',
  },
  {
    key: 'off_diag',
    type: 'int',
    default: 1,
    min: 0,
    max: 65536,
    group: 'svft',
    help: 'Band half-width d of the trainable pattern: banded trains |i − j| ≤ d; random and top_k train the same count n(2d+1) − d(d+1). 0 with banded is SVFT-plain.',
  },
  {
    key: 'pattern',
    type: 'enum',
    default: 'banded',
    choices: ['banded', 'random', 'top_k'],
    group: 'svft',
    help: 'Sparsity pattern of the trainable spectral matrix M: banded, random (distinct positions), or top_k (largest |σ_i σ_j|).',
  },
  {
    key: 'fill_orthonormal',
    type: 'bool',
    default: false,
    group: 'svft',
    help: 'With rank < min(out, in): append random orthonormal vectors (σ = 0) up to full size instead of truncating.',
  },
] as const satisfies readonly OptionSpec[];
