/**
 * SVFT options (METHODS.md §10.1). PEFT-Factory passes its custom SVFTConfig
 * fields straight from the YAML, so the keys are the plug-in's own:
 * target_modules, rank, off_diag, pattern, fill_orthonormal.
 */
import type { OptionSpec } from '../../src/config/schema';

export const svftOptions = [
  // Shared by svft, ia3, bitfit and lntuning (registered once, here): unset means each method's own LLaMA default.
  { key: 'target_modules', type: 'string-list', default: null, nullable: true, group: 'svft', help: "Modules the method adapts (suffix match: q_proj matches every layer's q_proj; 'all' for every linear projection). Unset: the method's LLaMA default — svft q_proj,k_proj; ia3 k_proj,v_proj,down_proj; bitfit q_proj,v_proj; lntuning input_layernorm,post_attention_layernorm,norm." },
  { key: 'rank', type: 'int', default: null, nullable: true, min: 1, max: 65536, group: 'svft', help: 'Singular vectors kept per layer (clamped to min(out, in)). Unset: all of them (the layer equals the base at init).' },
  { key: 'off_diag', type: 'int', default: 1, min: 0, max: 65536, group: 'svft', help: 'Band half-width d of the trainable pattern: banded trains |i − j| ≤ d; random and top_k train the same count n(2d+1) − d(d+1). 0 with banded is SVFT-plain.' },
  { key: 'pattern', type: 'enum', default: 'banded', choices: ['banded', 'random', 'top_k'], group: 'svft', help: 'Sparsity pattern of the trainable spectral matrix M: banded, random (distinct positions), or top_k (largest |σ_i σ_j|).' },
  { key: 'fill_orthonormal', type: 'bool', default: false, group: 'svft', help: 'With rank < min(out, in): append random orthonormal vectors (σ = 0) up to full size instead of truncating.' },
] as const satisfies readonly OptionSpec[];
