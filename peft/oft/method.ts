/**
 * OFT (METHODS.md §9, HF PEFT ≥0.14 block-diagonal OFT): per targeted linear
 * W [out, in], the input is rotated block by block and the base layer is
 * unchanged:
 *   x'_k = x_k R_k  (blocks of b features),   y = x' Wᵀ (+ bias) = x (W R_bdᵀ)ᵀ
 * R_k from the skew-symmetric Q_k = skew(θ_k) by the Cayley–Neumann
 * polynomial (default) or the exact Cayley transform (peft/oft/ops.ts).
 * θ [r, b(b−1)/2] (or [1, …] with block_share) starts at zero: R = I, an exact
 * no-op. Exactly one of oft_rank (r) and oft_block_size (b) is set; the other
 * is derived per layer after PEFT's adjustment to a divisor of `in`.
 * COFT projects θ onto a Frobenius ball before every forward (no grad).
 * Export: HF PEFT keys base_model.model.<module>.oft_R.weight.
 * Merge: W ← W R_bdᵀ (exact).
 */
import { blockRotate, cayleyNeumannCoefficients, coftProject, oftBlockParams, oftRotation } from './ops';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { flopsTargets } from 'peft-studio/eval/flops';
import { readOptions } from 'peft-studio/methods/options';
import {
  firstLayerOf,
  layerOf,
  matchTargets,
  type ActivationTensor,
  type AdapterFiles,
  type AttachedMethod,
  type HostTensor,
  type MethodContext,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { oftOptions } from './config';

/** Where OFT and SVFT are listed. */
export const SPECTRAL_FAMILY = 'Orthogonal and spectral';

interface OftLayer {
  theta: Tensor;
  /** Blocks per row and block size after adjustment. */
  r: number;
  b: number;
  /** Stored blocks: r, or 1 with block_share. */
  nb: number;
}

/**
 * PEFT's `adjust_oft_parameters`: the divisor of `inF` nearest to `p`
 * (searching up to inF and down to 1; ties go to the lower one); p ≥ inF → inF.
 */
export function adjustOftParameter(inF: number, p: number): number {
  if (p >= inF) return inF;
  let hi = p;
  while (hi <= inF && inF % hi !== 0) hi++;
  let lo = p;
  while (lo > 1 && inF % lo !== 0) lo--;
  return p - lo <= hi - p ? lo : hi;
}

/** Blocks r and block size b of a layer with `inF` inputs, from oft_rank / oft_block_size (exactly one non-zero). */
export function oftBlocks(inF: number, rank: number, blockSize: number): { r: number; b: number } {
  if (rank === 0 && blockSize !== 0) {
    const b = inF % blockSize !== 0 || blockSize > inF ? adjustOftParameter(inF, blockSize) : blockSize;
    return { r: inF / b, b };
  }
  if (rank !== 0 && blockSize === 0) {
    const r = inF % rank !== 0 || rank > inF ? adjustOftParameter(inF, rank) : rank;
    return { r, b: inF / r };
  }
  throw new ConfigError(
    `OFT needs exactly one of oft_rank and oft_block_size to be non-zero (got oft_rank ${rank}, oft_block_size ${blockSize}); ` +
      `set oft_block_size: 0 to use oft_rank, or oft_rank: 0 to use oft_block_size.`,
  );
}

export interface OftSettings {
  rank: number;
  blockSize: number;
  targets: string[];
  moduleDropout: number;
  coft: boolean;
  eps: number;
  blockShare: boolean;
  useCayleyNeumann: boolean;
  terms: number;
  formula: '0.18' | '0.17';
}

export function oftSettings(config: Record<string, unknown>): OftSettings {
  const o = readOptions(oftOptions, config, 'oft');
  return {
    rank: o.oft_rank,
    blockSize: o.oft_block_size,
    targets: o.oft_target,
    moduleDropout: o.module_dropout,
    coft: o.coft,
    eps: o.coft_eps,
    blockShare: o.block_share,
    useCayleyNeumann: o.use_cayley_neumann,
    terms: o.num_cayley_neumann_terms,
    formula: o.cayley_neumann_formula,
  };
}

export const oft: PeftMethod = {
  name: 'oft',
  label: 'OFT',
  family: SPECTRAL_FAMILY,
  description: "A trained block-diagonal orthogonal rotation (Cayley transform) of each targeted linear's input.",
  order: 9,
  options: oftOptions,
  peftType: 'OFT',
  /**
   * Per token per target: 2·b·in (block-diagonal rotation of the input, b after
   * PEFT's adjustment); per forward per stored block: 2·b³ per b×b product of
   * the Cayley–Neumann polynomial (degree D needs D − 1 products), or 2·b³ for
   * the exact Cayley inverse.
   */
  flops(ctx) {
    const s = oftSettings(ctx.config);
    const coeffs = s.useCayleyNeumann ? cayleyNeumannCoefficients(s.terms, s.formula) : null;
    let f = 0;
    for (const l of flopsTargets(ctx.linears, s.targets, 'oft_target', 'oft')) {
      const { r, b } = oftBlocks(l.inF, s.rank, s.blockSize);
      const products = coeffs ? Math.max(0, coeffs.length - 2) : 1;
      f += ctx.batch * ctx.seq * 2 * b * l.inF + (s.blockShare ? 1 : r) * products * 2 * b ** 3;
    }
    return { flops: f };
  },
  configFromAdapter(c) {
    // peft_version is written by PEFT ≥0.18; without it the adapter came from
    // PEFT ≤0.17 (the 0.17 polynomial). A config without use_cayley_neumann
    // predates the option: that PEFT had only the exact Cayley transform.
    const v = typeof c.peft_version === 'string' ? c.peft_version.split(/[.@]/).map(Number) : null;
    const formula = v && (v[0] > 0 || v[1] >= 18) ? '0.18' : '0.17';
    return {
      finetuning_type: 'oft',
      oft_rank: c.r ?? 0,
      oft_block_size: c.oft_block_size ?? 0,
      oft_target: c.target_modules,
      module_dropout: c.module_dropout ?? 0,
      coft: !!c.coft,
      coft_eps: c.eps ?? 6e-5,
      block_share: !!c.block_share,
      use_cayley_neumann: c.use_cayley_neumann ?? false,
      num_cayley_neumann_terms: c.num_cayley_neumann_terms ?? 5,
      cayley_neumann_formula: formula,
    };
  },
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    const s = oftSettings(config);
    const coeffs = s.useCayleyNeumann ? cayleyNeumannCoefficients(s.terms, s.formula) : null;
    const targets = matchTargets(model.linearNames(), s.targets);
    if (targets.length === 0) {
      throw new ConfigError(`oft_target ${JSON.stringify(s.targets)} matches no linear layer; use 'all' or names such as q_proj, v_proj, down_proj.`);
    }
    const layers = new Map<string, OftLayer>();
    for (const name of targets) {
      const inF = model.weightShape(`${name}.weight`)[1];
      const { r, b } = oftBlocks(inF, s.rank, s.blockSize);
      if (b < 2) {
        throw new ConfigError(
          `OFT on ${name} (${inF} inputs) ends up with block size ${b}, which has no parameters; choose oft_block_size or oft_rank so that blocks have at least 2 features.`,
        );
      }
      const nb = s.blockShare ? 1 : r;
      const theta = e.persist(e.zeros([nb, oftBlockParams(b)], `${name}.oft_R`));
      theta.requiresGrad = true;
      layers.set(name, { theta, r, b, nb });
    }
    // COFT radius per block: eps / √(stored blocks), as PEFT's _project_batch.
    const project = (l: OftLayer) => {
      if (s.coft) coftProject(e, l.theta, l.b, s.eps / Math.sqrt(l.nb));
    };
    const rotation = (l: OftLayer) => {
      project(l);
      return oftRotation(e, l.theta, { b: l.b, coeffs });
    };
    const detachHooks = model.attach({
      linear: (name, x, inner) => {
        const l = layers.get(name);
        if (!l) return inner(x);
        return inner(blockRotate(e, x, rotation(l), { name: `${name}.oft_x` }));
      },
    });
    const key = (name: string) => `base_model.model.${name}.oft_R.weight`;

    return {
      memory() {
        // Per target and forward: the rotated input [tokens, in], R [blocks, b, b] and what its backward
        // keeps (Cayley–Neumann: Q and the Horner terms H_1 … H_{D−1}; exact Cayley: (I + Q)⁻¹), and the
        // backward's own [blocks, b, b] scratch (dQ and the D − 1 powers of Qᵀ applied to G; Cayley: two),
        // released only when the step's commands are submitted.
        const kept = coeffs ? coeffs.length - 1 : 1;
        const scratch = coeffs ? coeffs.length - 1 : 2;
        const activations: ActivationTensor[] = [];
        for (const [name, l] of layers) {
          const layer = layerOf(name);
          activations.push({ layer, perToken: l.r * l.b }, { layer, fixed: l.nb * l.b * l.b });
          if (kept > 0) activations.push({ layer, fixed: l.nb * l.b * l.b, grad: false, count: kept + scratch });
        }
        return { activations, gradientFromLayer: firstLayerOf(layers.keys()) };
      },
      trainable(): TrainableParam[] {
        return [...layers].map(([name, l]) => ({ name: key(name), tensor: l.theta }));
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map<string, HostTensor>();
        for (const [name, l] of layers) tensors.set(key(name), { shape: [...l.theta.shape], data: await e.read(l.theta) });
        const modules = [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort();
        return { config: oftAdapterConfig(config, s, modules), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        for (const [name, l] of layers) {
          const src = files.tensors.get(key(name));
          if (!src) throw new ConfigError(`The adapter has no tensor ${key(name)}; was it trained with the same oft_target and model?`);
          if (src.shape.join() !== l.theta.shape.join()) {
            throw new ConfigError(
              `Adapter tensor ${key(name)} has shape [${src.shape}], expected [${l.theta.shape}] (${l.r} blocks of ${l.b}${s.blockShare ? ', block_share' : ''}); ` +
                'set oft_rank / oft_block_size / block_share as in its adapter_config.json.',
            );
          }
          e.write(l.theta, src.data);
        }
      },
      async merge(): Promise<void> {
        // W ← W R_bdᵀ: each row of W rotated by the transposed blocks (exact).
        const tape = e.tape;
        e.tape = null;
        for (const [name, l] of layers) {
          const W = model.param(`${name}.weight`);
          e.beginScope();
          const rotated = blockRotate(e, W, rotation(l), { trans: true });
          e.copy(W, rotated);
          e.endScope();
        }
        e.tape = tape;
        await e.sync();
        this.detach();
      },
      detach(): void {
        detachHooks();
        for (const l of layers.values()) l.theta.dispose();
        layers.clear();
      },
    };
  },
};

/** adapter_config.json with the PEFT 0.17 OFT key set (METHODS.md §9) plus peft_version. */
export function oftAdapterConfig(config: Record<string, unknown>, s: OftSettings, modules: string[]): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    bias: 'none',
    block_share: s.blockShare,
    coft: s.coft,
    eps: s.eps,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    module_dropout: s.moduleDropout,
    modules_to_save: null,
    num_cayley_neumann_terms: s.terms,
    oft_block_size: s.blockSize,
    peft_type: 'OFT',
    // PEFT ≥0.18 reads the polynomial version from here (it warns on < 0.18 with Cayley–Neumann).
    peft_version: s.useCayleyNeumann && s.formula === '0.18' ? '0.18.0' : '0.17.1',
    r: s.rank,
    revision: null,
    target_modules: modules,
    task_type: 'CAUSAL_LM',
    use_cayley_neumann: s.useCayleyNeumann,
  };
}

export default oft;
