/**
 * DoRA (METHODS.md §6): LoRA A [r, in], B [out, r] plus a trained magnitude
 * m [out], per targeted linear W [out, in]:
 *
 *   n_o = detach(‖W_o + s·(BA)_o‖₂),  g = m / n        (one norm per output row)
 *   no dropout / eval:  y = b + g ⊙ (x Wᵀ + s·x Aᵀ Bᵀ)
 *   dropout p > 0:      y = x Wᵀ + b + (g − 1) ⊙ (x_d Wᵀ) + g ⊙ s·(x_d Aᵀ Bᵀ)
 *
 * m starts at ‖W_o + s·(BA)_o‖ (= ‖W_o‖, B = 0), so DoRA is a no-op at init.
 * n is recomputed every forward without forming BA (see peft/dora/ops.ts)
 * and, as in PEFT, is a constant for autograd: A and B get the LoRA gradients
 * scaled by g, m gets Σ dy·(W-path + LoRA-path)/n.
 * Export: the LoRA keys plus base_model.model.<module>.lora_magnitude_vector
 * (no .weight suffix), adapter_config "use_dora": true. Merge:
 * W ← (m / ‖W + s·BA‖_row) ⊙_row (W + s·BA) (exact).
 * Selected by finetuning_type lora + use_dora (its `select`).
 *
 * FLOPs: LoRA's, plus per token out (the g ⊙ rescale), plus per forward per
 * target the detached row norms as ops.ts computes them: 2·r·in·out (A Wᵀ)
 * + 2·r²·in (A Aᵀ) + out·(2r² + 4r) (the quadratic forms).
 */
import { matmul, matmulKernel } from 'peft-studio/engine/ops/matmul';
import { trainingDropout } from 'peft-studio/engine/ops/dropout';
import { doraNorm, doraRowSqNorm, doraScale, doraScaleRows } from './ops';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { flopsTargets } from 'peft-studio/eval/flops';
import {
  firstLayerOf,
  layerOf,
  uniform,
  type ActivationTensor,
  type AdapterFiles,
  type AttachedMethod,
  type MethodContext,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { loraOptions } from '../lora/config';
import { LORA_FAMILY, loraAdapterConfig, loraFlops, loraKeysFromAdapter, loraSettings, loraTargets } from '../lora/method';
import { useDora } from './config';

interface DoraLayer {
  A: Tensor;
  B: Tensor;
  /** Magnitude [out] (trainable). */
  m: Tensor;
  /** ‖W_o‖² [out]: W is frozen, so the constant part of n² is computed once. */
  w2: Tensor;
  /** The norm used by every forward while frozen (gradient checks), else null. */
  frozenNorm: Tensor | null;
  inF: number;
  outF: number;
}

/** The attached method, plus a switch the Appendix D gradient check needs. */
export interface AttachedDora extends AttachedMethod {
  /**
   * Freeze n at its current value (true) or recompute it every forward
   * (false, the default). With n frozen the forward is exactly the function
   * whose gradient DoRA computes, so finite differences can check it.
   */
  freezeNorm(frozen: boolean): void;
}

const key = (name: string, which: 'A' | 'B') => `base_model.model.${name}.lora_${which}.weight`;
const magnitudeKey = (name: string) => `base_model.model.${name}.lora_magnitude_vector`;

export interface DoraMethod extends PeftMethod {
  attach(ctx: MethodContext): AttachedDora;
}

export const dora: DoraMethod = {
  name: 'dora',
  label: 'DoRA',
  family: LORA_FAMILY,
  description: 'LoRA with a trained magnitude per output row: the weight is split into direction (LoRA-updated) and length.',
  order: 6,
  options: [...loraOptions, useDora],
  select: { finetuning_type: 'lora', key: 'use_dora', value: true },
  peftType: 'LORA',
  flops(ctx) {
    const { r, lora_target } = loraSettings(ctx.config, 'dora');
    let f = loraFlops(ctx, 'dora');
    for (const l of flopsTargets(ctx.linears, lora_target, 'lora_target', 'dora')) {
      f += ctx.batch * ctx.seq * l.outF + 2 * r * l.inF * l.outF + 2 * r * r * l.inF + l.outF * (2 * r * r + 4 * r);
    }
    return { flops: f };
  },
  configFromAdapter(c) {
    if (!c.use_dora) return null;
    return { ...loraKeysFromAdapter(c), use_dora: true };
  },
  attach(ctx: MethodContext): AttachedDora {
    const { e, model, config } = ctx;
    const { r, alpha, s, lora_dropout: p, lora_target, loraplus_lr_ratio } = loraSettings(config, 'dora');
    const targets = loraTargets(model, lora_target);
    const layers = new Map<string, DoraLayer>();
    for (const name of targets) {
      const W = model.param(`${name}.weight`);
      const [outF, inF] = W.shape;
      const A = e.persist(e.upload(uniform(r * inF, 1 / Math.sqrt(inF), ctx.random), [r, inF], `${name}.lora_A`));
      const B = e.persist(e.zeros([outF, r], `${name}.lora_B`));
      const w2 = e.persist(doraRowSqNorm(e, W));
      // m_o = ‖W_o + s·(BA)_o‖ (PEFT computes it from the initial LoRA product; B = 0 here).
      const n0 = doraNorm(e, w2, W, A, B, s);
      const m = e.persist(e.empty([outF], `${name}.lora_magnitude_vector`));
      e.copy(m, n0);
      n0.dispose();
      A.requiresGrad = B.requiresGrad = m.requiresGrad = true;
      layers.set(name, { A, B, m, w2, frozenNorm: null, inF, outF });
    }
    const normOf = (name: string, l: DoraLayer) => l.frozenNorm ?? doraNorm(e, l.w2, model.param(`${name}.weight`), l.A, l.B, s);

    const detachHooks = model.attach({
      linear: (name, x, inner) => {
        const l = layers.get(name);
        if (!l) return inner(x);
        const n = normOf(name, l);
        const training = !!e.tape;
        if (!(p > 0 && training)) {
          // Case A: y = b + g ⊙ (x Wᵀ + s·x Aᵀ Bᵀ); the LoRA term accumulates into the base output.
          const z = inner(x);
          const h = matmul(e, x, l.A, { transB: true, name: `${name}.lora_h` });
          matmul(e, h, l.B, { transB: true, alpha: s, out: z, accumulate: true });
          return doraScale(e, { V: z, m: l.m, n, bias: model.params.get(`${name}.bias`) ?? null }, `${name}.dora`);
        }
        // Case B: the base path sees x, the DoRA correction and LoRA see dropout(x).
        const base = inner(x);
        const xd = trainingDropout(e, x, p, `${name}.lora_dropout`);
        const U = matmul(e, xd, model.param(`${name}.weight`), { transB: true, name: `${name}.dora_xdW` });
        const h = matmul(e, xd, l.A, { transB: true, name: `${name}.lora_h` });
        const V = matmul(e, h, l.B, { transB: true, alpha: s, name: `${name}.lora_out` });
        return doraScale(e, { R: base, U, V, m: l.m, n }, `${name}.dora`);
      },
    });
    const ratio = loraplus_lr_ratio ?? 1;

    const detach = (): void => {
      detachHooks();
      for (const l of layers.values()) for (const t of [l.A, l.B, l.m, l.w2, l.frozenNorm]) t?.dispose();
      layers.clear();
    };

    return {
      memory() {
        // Per target and forward: the detached norm n [out] and its scratch A Wᵀ [r, out], A Aᵀ [r, r] (held
        // until the step is submitted); h [tokens, r] and the rescaled output [tokens, out]; with dropout
        // also x_d [tokens, in], x_d Wᵀ and the LoRA output [tokens, out].
        const activations: ActivationTensor[] = [];
        for (const [name, l] of layers) {
          const layer = layerOf(name);
          for (const fixed of [l.outF, r * l.outF, r * r]) activations.push({ layer, fixed, grad: false });
          activations.push({ layer, perToken: r }, { layer, perToken: l.outF });
          if (p > 0) activations.push({ layer, perToken: l.inF }, { layer, perToken: l.outF, count: 2 });
        }
        return { activations, gradientFromLayer: firstLayerOf(layers.keys()) };
      },
      trainable(): TrainableParam[] {
        const out: TrainableParam[] = [];
        for (const [name, l] of layers) {
          out.push({ name: key(name, 'A'), tensor: l.A });
          out.push({ name: key(name, 'B'), tensor: l.B, lrScale: ratio });
          // LLaMA-Factory's LoRA+ groups put every 1-D parameter with the B matrices (§7).
          out.push({ name: magnitudeKey(name), tensor: l.m, lrScale: ratio });
        }
        return out;
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
        for (const [name, l] of layers) {
          tensors.set(key(name, 'A'), { shape: [r, l.inF], data: await e.read(l.A) });
          tensors.set(key(name, 'B'), { shape: [l.outF, r], data: await e.read(l.B) });
          tensors.set(magnitudeKey(name), { shape: [l.outF], data: await e.read(l.m) });
        }
        const modules = [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort();
        return { config: { ...loraAdapterConfig(config, r, alpha, p, modules), use_dora: true }, tensors };
      },
      importAdapter(files: AdapterFiles): void {
        for (const [name, l] of layers) {
          const want: [string, Tensor, number[]][] = [
            [key(name, 'A'), l.A, [r, l.inF]],
            [key(name, 'B'), l.B, [l.outF, r]],
            [magnitudeKey(name), l.m, [l.outF]],
          ];
          for (const [k, t, shape] of want) {
            const src = files.tensors.get(k);
            if (!src) throw new ConfigError(`The adapter has no tensor ${k}; was it trained with DoRA (use_dora), the same lora_target and model?`);
            if (src.shape.join() !== shape.join()) {
              throw new ConfigError(`Adapter tensor ${k} has shape [${src.shape}], expected [${shape}] (lora_rank ${r}).`);
            }
            e.write(t, src.data);
          }
        }
      },
      async merge(): Promise<void> {
        // W ← (m / ‖W + s·BA‖_row) ⊙_row (W + s·BA), the norm taken before W changes.
        for (const [name, l] of layers) {
          const W = model.param(`${name}.weight`);
          const n = doraNorm(e, l.w2, W, l.A, l.B, s);
          matmulKernel(e, W, l.B, l.A, l.outF, l.inF, r, { alpha: s, beta: 1 });
          doraScaleRows(e, W, l.m, n);
          n.dispose();
        }
        await e.sync();
        detach();
      },
      freezeNorm(frozen: boolean): void {
        for (const [name, l] of layers) {
          l.frozenNorm?.dispose();
          l.frozenNorm = null;
          if (frozen) l.frozenNorm = e.persist(doraNorm(e, l.w2, model.param(`${name}.weight`), l.A, l.B, s));
        }
      },
      detach,
    };
  },
};

export default dora;
