/**
 * LoRA (METHODS.md §4): per targeted linear W [out, in],
 *   y = x Wᵀ (+ b) + s · (dropout(x) Aᵀ) Bᵀ,   s = alpha / r  (alpha / √r with rsLoRA)
 * A [r, in] ~ U(−1/√in, 1/√in), B [out, r] = 0. W is frozen and gets no
 * gradient kernels. The adapter path accumulates into the base output
 * (one dispatch for A, one for B, no extra add).
 * Export: HF PEFT keys base_model.model.<module>.lora_A.weight / lora_B.weight.
 * LoRA+ (§7): B matrices train at loraplus_lr_ratio × learning_rate.
 */
import { trainingDropout } from 'peft-studio/engine/ops/dropout';
import { matmul } from 'peft-studio/engine/ops/matmul';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { flopsTargets } from 'peft-studio/eval/flops';
import { readOptions } from 'peft-studio/methods/options';
import {
  firstLayerOf,
  layerOf,
  matchTargets,
  uniform,
  type ActivationTensor,
  type AdapterFiles,
  type AttachedMethod,
  type FlopsContext,
  type MethodContext,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { loraOptions } from './config';

/** The LoRA family's place in lists (METHODS.md Part A). */
export const LORA_FAMILY = 'LoRA family';

/** LoRA's settings, parsed once from the config (defaults from loraOptions). */
export function loraSettings(config: Record<string, unknown>, method = 'lora') {
  const o = readOptions(loraOptions, config, method);
  const r = o.lora_rank;
  const alpha = o.lora_alpha ?? 2 * r;
  return { ...o, r, alpha, s: o.use_rslora ? alpha / Math.sqrt(r) : alpha / r };
}

interface LoraLayer {
  A: Tensor;
  B: Tensor;
  inF: number;
  outF: number;
}

/** Experiment keys of a LoRA-family adapter_config.json (shared by lora, dora, pissa). */
export function loraKeysFromAdapter(c: Record<string, unknown>): Record<string, unknown> {
  return {
    finetuning_type: 'lora',
    lora_rank: c.r,
    lora_alpha: c.lora_alpha,
    lora_dropout: c.lora_dropout ?? 0,
    lora_target: c.target_modules,
    use_rslora: !!c.use_rslora,
  };
}

/** The linears `lora_target` selects (LLaMA-Factory default 'all'); an empty match is an error. */
export function loraTargets(model: MethodContext['model'], target: readonly string[]): string[] {
  const targets = matchTargets(model.linearNames(), target);
  if (targets.length === 0) {
    throw new ConfigError(`lora_target ${JSON.stringify(target)} matches no linear layer; use 'all' or names such as q_proj, v_proj, down_proj.`);
  }
  return targets;
}

/** LoRA's scaling: s = alpha / r (alpha / √r with rsLoRA), alpha unset = 2r. */
export function loraScaling(config: Record<string, unknown>): { r: number; alpha: number; s: number } {
  const { r, alpha, s } = loraSettings(config);
  return { r, alpha, s };
}

/** Per token, per target: 2·r·(in + out) (A then B). */
export function loraFlops(ctx: FlopsContext, method: string): number {
  const { r, lora_target } = loraSettings(ctx.config, method);
  let f = 0;
  for (const l of flopsTargets(ctx.linears, lora_target, 'lora_target', method)) f += ctx.batch * ctx.seq * 2 * r * (l.inF + l.outF);
  return f;
}

export const lora: PeftMethod = {
  name: 'lora',
  label: 'LoRA',
  family: LORA_FAMILY,
  description: 'A trained low-rank update s·B·A beside each targeted linear; the base weights stay frozen.',
  order: 4,
  isDefault: true,
  options: loraOptions,
  peftType: 'LORA',
  flops: (ctx) => ({ flops: loraFlops(ctx, 'lora') }),
  configFromAdapter(c) {
    // DoRA and PiSSA adapters are LoRA-typed too; their own folders load them.
    if (c.use_dora || String(c.init_lora_weights).startsWith('pissa')) return null;
    return loraKeysFromAdapter(c);
  },
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    const { r, alpha, s, lora_dropout: p, lora_target, loraplus_lr_ratio } = loraSettings(config);
    const targets = loraTargets(model, lora_target);
    const layers = new Map<string, LoraLayer>();
    for (const name of targets) {
      const [outF, inF] = model.weightShape(`${name}.weight`);
      const A = e.persist(e.upload(uniform(r * inF, 1 / Math.sqrt(inF), ctx.random), [r, inF], `${name}.lora_A`));
      const B = e.persist(e.zeros([outF, r], `${name}.lora_B`));
      A.requiresGrad = B.requiresGrad = true;
      layers.set(name, { A, B, inF, outF });
    }
    const detachHooks = model.attach({
      linear: (name, x, inner) => {
        const l = layers.get(name);
        if (!l) return inner(x);
        const y = inner(x);
        const xd = trainingDropout(e, x, p, `${name}.lora_dropout`);
        const h = matmul(e, xd, l.A, { transB: true, name: `${name}.lora_h` });
        matmul(e, h, l.B, { transB: true, alpha: s, out: y, accumulate: true });
        return y;
      },
    });
    const ratio = loraplus_lr_ratio ?? 1;
    const key = (name: string, which: 'A' | 'B') => `base_model.model.${name}.lora_${which}.weight`;

    return {
      memory() {
        // Per target: h = dropout(x) Aᵀ [tokens, r], and the dropped-out copy of x when p > 0.
        const activations: ActivationTensor[] = [];
        for (const [name, l] of layers) {
          activations.push({ layer: layerOf(name), perToken: r });
          if (p > 0) activations.push({ layer: layerOf(name), perToken: l.inF });
        }
        return { activations, gradientFromLayer: firstLayerOf(layers.keys()) };
      },
      trainable(): TrainableParam[] {
        const out: TrainableParam[] = [];
        for (const [name, l] of layers) {
          out.push({ name: key(name, 'A'), tensor: l.A });
          out.push({ name: key(name, 'B'), tensor: l.B, lrScale: ratio });
        }
        return out;
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
        for (const [name, l] of layers) {
          tensors.set(key(name, 'A'), { shape: [r, l.inF], data: await e.read(l.A) });
          tensors.set(key(name, 'B'), { shape: [l.outF, r], data: await e.read(l.B) });
        }
        const modules = [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort();
        return { config: loraAdapterConfig(config, r, alpha, p, modules), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        for (const [name, l] of layers) {
          for (const [which, t, shape] of [
            ['A', l.A, [r, l.inF]],
            ['B', l.B, [l.outF, r]],
          ] as const) {
            const src = files.tensors.get(key(name, which));
            if (!src) throw new ConfigError(`The adapter has no tensor ${key(name, which)}; was it trained with the same lora_target and model?`);
            if (src.shape.join() !== shape.join()) {
              throw new ConfigError(`Adapter tensor ${key(name, which)} has shape [${src.shape}], expected [${shape}] (lora_rank ${r}).`);
            }
            e.write(t, src.data);
          }
        }
      },
      async merge(): Promise<void> {
        // W ← W + s · B A (exact).
        for (const [name, l] of layers) {
          const W = model.param(`${name}.weight`);
          matmul(e, l.B, l.A, { alpha: s, out: W, accumulate: true });
        }
        await e.sync();
        this.detach();
      },
      detach(): void {
        detachHooks();
        for (const l of layers.values()) {
          l.A.dispose();
          l.B.dispose();
        }
        layers.clear();
      },
    };
  },
};

/** adapter_config.json with the PEFT 0.17 key set (METHODS.md §4). */
export function loraAdapterConfig(config: Record<string, unknown>, r: number, alpha: number, p: number, modules: string[]): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    bias: 'none',
    corda_config: null,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: alpha,
    lora_bias: false,
    lora_dropout: p,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    peft_version: '0.17.1',
    qalora_group_size: 16,
    r,
    rank_pattern: {},
    revision: null,
    target_modules: modules,
    target_parameters: null,
    task_type: 'CAUSAL_LM',
    trainable_token_indices: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: loraSettings(config).use_rslora,
  };
}

export default lora;
