/**
 * LN Tuning (METHODS.md §19): for every targeted RMSNorm a trainable copy w'
 * of its weight, initialised to the base weight, replaces it in the forward
 * through the `normWeight` insertion point (the base weight stays frozen):
 *   y = w' ⊙ x / √(mean(x²) + eps),   ∂L/∂w'_c = Σ_tokens G_c x̂_c
 * (the rmsnorm op's weight gradient). At init the model equals the base.
 * Targets: module names of the norms, suffix rule (`norm` matches the final
 * `model.norm` only; `input_layernorm` every layer's). Default: all 2N + 1.
 * Export: base_model.model.<norm>.ln_tuning_layers.weight [d].
 * Merge (exact): the base norm weight ← w'.
 */
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import type { LlamaModel } from 'peft-studio/model/llama';
import { readOptions, targetModules } from 'peft-studio/methods/options';
import { matchTargets, type AdapterFiles, type AttachedMethod, type MethodContext, type PeftMethod, type TrainableParam } from 'peft-studio/methods/types';

const DEFAULT_TARGETS = ['input_layernorm', 'post_attention_layernorm', 'norm'];

/** Module names of every RMSNorm of the model, in forward order. */
export function normNames(model: LlamaModel): string[] {
  const out: string[] = [];
  for (let l = 0; l < model.config.numLayers; l++) out.push(`model.layers.${l}.input_layernorm`, `model.layers.${l}.post_attention_layernorm`);
  out.push('model.norm');
  return out;
}

export function lnTuningTargets(model: LlamaModel, config: Record<string, unknown>): string[] {
  const t = readOptions([targetModules], config, 'lntuning').target_modules;
  const list = t ?? DEFAULT_TARGETS;
  if (list.some((x) => x === 'all' || x === 'all-linear')) {
    throw new ConfigError(
      `target_modules ${JSON.stringify(t)}: 'all' selects linear layers, which LN tuning does not train; leave target_modules unset for every RMSNorm, or name them (input_layernorm, post_attention_layernorm, norm).`,
    );
  }
  const targets = matchTargets(normNames(model), list);
  if (targets.length === 0) {
    throw new ConfigError(
      `target_modules ${JSON.stringify(t)} matches no RMSNorm for lntuning; use input_layernorm, post_attention_layernorm and/or norm (the final norm), or leave it unset for all three.`,
    );
  }
  return targets;
}

export const lntuning: PeftMethod = {
  name: 'lntuning',
  label: 'LN tuning',
  family: 'Adapters, scaling and bias',
  description: 'Trains copies of the RMSNorm weights (input, post-attention and final norms by default: target_modules).',
  order: 19,
  options: [targetModules],
  // The trained norm weights replace the base ones: nothing is added to the forward.
  flops: () => ({ flops: 0 }),
  peftType: 'LN_TUNING',
  configFromAdapter(c) {
    return { finetuning_type: 'lntuning', target_modules: c.target_modules ?? null };
  },
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    const targets = lnTuningTargets(model, config);
    const copies = new Map<string, Tensor>();
    for (const name of targets) {
      const base = model.param(`${name}.weight`);
      const w = e.persist(e.empty(base.shape, `${name}.ln_tuning`));
      e.copy(w, base);
      w.requiresGrad = true;
      copies.set(name, w);
    }
    const detachHooks = model.attach({ normWeight: (name, w) => copies.get(name) ?? w });
    const key = (name: string) => `base_model.model.${name}.ln_tuning_layers.weight`;
    const d = model.config.hiddenSize;

    return {
      trainable(): TrainableParam[] {
        return [...copies].map(([name, w]) => ({ name: key(name), tensor: w }));
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
        for (const [name, w] of copies) tensors.set(key(name), { shape: [d], data: await e.read(w) });
        const modules = [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort();
        return { config: lnTuningAdapterConfig(config, modules), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        for (const [name, w] of copies) {
          const src = files.tensors.get(key(name));
          if (!src) throw new ConfigError(`The adapter has no tensor ${key(name)}; was it trained with the same target_modules and model?`);
          if (src.shape.join() !== String(d))
            throw new ConfigError(`Adapter tensor ${key(name)} has shape [${src.shape}], expected [${d}] (hidden_size); was it trained on another model?`);
          e.write(w, src.data);
        }
      },
      async merge(): Promise<void> {
        for (const [name, w] of copies) e.copy(model.param(`${name}.weight`), w);
        await e.sync();
        this.detach();
      },
      detach(): void {
        detachHooks();
        for (const w of copies.values()) w.dispose();
        copies.clear();
      },
    };
  },
};

/** adapter_config.json with the PEFT 0.17 LNTuningConfig key set (METHODS.md §19). */
export function lnTuningAdapterConfig(config: Record<string, unknown>, modules: string[]): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    exclude_modules: null,
    inference_mode: true,
    modules_to_save: null,
    peft_type: 'LN_TUNING',
    peft_version: '0.17.1',
    revision: null,
    target_modules: modules,
    task_type: 'CAUSAL_LM',
  };
}

export default lntuning;
