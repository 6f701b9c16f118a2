/**
 * BitFit, PEFT-Factory's plug-in (METHODS.md §20): a trainable bias b [out]
 * on every targeted linear W [out, in] (default q_proj, v_proj):
 *   y = x Wᵀ + b,   ∂L/∂b = Σ_tokens G   (matmul's bias gradient)
 * LLaMA linears have no bias: one is added with `model.addBias`, initialised
 * U(−1/√in, 1/√in) (bias_init torch_default, nn.Linear's init, as
 * PEFT-Factory: the output changes at step 0) or zeros (the model starts
 * equal to the base). The base weight stays frozen.
 *
 * A target that already has a bias (qwen2 q/k/v, llama with attention_bias)
 * trains that bias, starting from its value, instead of adding a second one:
 * the model's `<name>.bias` entry is swapped for a trainable copy, and the
 * original comes back on detach. (PEFT-Factory's wrapper would instead build
 * a fresh nn.Linear whose new random bias replaces the base bias.) The export
 * holds the full bias either way, so a reload gives the same model.
 *
 * Export (PEFT-Factory layout): base_model.model.<module>.bitfit_layers.bias
 * [out] and .bitfit_layers.weight [out, in], the frozen weight copy the
 * plug-in saves. Import reads the bias; the weight copy is only checked for
 * shape (it equals the base weight).
 * Merge: the bias simply stays in the model as `<module>.bias`. An HF llama
 * config can only hold biases on all of q, k, v, o (attention_bias) or all of
 * gate, up, down (mlp_bias), so merge also adds zero biases to the other
 * projections of each group it touches, making the merged state dict exactly
 * what `attention_bias: true` / `mlp_bias: true` expects (the merged export
 * turns those flags on: src/cli/train.ts writeModelFolder). Architectures
 * without such a flag for a target (mistral; qwen2 o_proj or MLP) cannot
 * merge: ConfigError.
 */
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { readOptions, targetModules } from 'peft-studio/methods/options';
import {
  matchTargets,
  uniform,
  type AdapterFiles,
  type AttachedMethod,
  type MethodContext,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { bitfitOptions } from './config';

/** Everything BitFit reads, in form order. */
const options = [targetModules, ...bitfitOptions] as const;

const DEFAULT_TARGETS = ['q_proj', 'v_proj'];
const ATTENTION = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
const MLP = ['gate_proj', 'up_proj', 'down_proj'];

interface BitfitLayer {
  bias: Tensor;
  /** The model's own bias this one replaced while attached (qwen2 q/k/v), else null. */
  original: Tensor | null;
  outF: number;
  inF: number;
}

export function bitfitTargets(linearNames: string[], config: Record<string, unknown>): string[] {
  const given = readOptions(options, config, 'bitfit').target_modules;
  const targets = matchTargets(linearNames, given ?? DEFAULT_TARGETS);
  if (targets.length === 0) {
    throw new ConfigError(
      `target_modules ${JSON.stringify(given)} matches no linear layer for bitfit; use names such as q_proj, v_proj (the default), or 'all' for every projection.`,
    );
  }
  return targets;
}

export const bitfit: PeftMethod = {
  name: 'bitfit',
  label: 'BitFit',
  family: 'Adapters, scaling and bias',
  description: 'Trains only biases of the targeted linears (added where the model has none): q_proj, v_proj by default (target_modules).',
  order: 20,
  options,
  /** Per token, one add per output of each target. */
  flops(ctx) {
    const chosen = new Set(
      bitfitTargets(
        ctx.linears.map((l) => l.name),
        ctx.config,
      ),
    );
    let f = 0;
    for (const l of ctx.linears) if (chosen.has(l.name)) f += ctx.batch * ctx.seq * l.outF;
    return { flops: f };
  },
  peftType: 'BITFIT',
  configFromAdapter(c) {
    // The init does not matter for a loaded adapter (the bias is imported); zeros keeps the seed out of it.
    return { finetuning_type: 'bitfit', target_modules: c.target_modules ?? null, bias_init: 'zeros' };
  },
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    const init = readOptions(options, config, 'bitfit').bias_init;
    const targets = bitfitTargets(model.linearNames(), config);
    const layers = new Map<string, BitfitLayer>();
    for (const name of targets) {
      const [outF, inF] = model.weightShape(`${name}.weight`);
      const original = model.params.get(`${name}.bias`) ?? null;
      let bias: Tensor;
      if (original) {
        // addBias replaces the model's entry; copy the existing values into it.
        bias = model.addBias(name);
        e.copy(bias, original);
      } else {
        bias = model.addBias(name, init === 'zeros' ? undefined : uniform(outF, 1 / Math.sqrt(inF), ctx.random));
      }
      bias.requiresGrad = true;
      layers.set(name, { bias, original, outF, inF });
    }
    const key = (name: string, which: 'bias' | 'weight') => `base_model.model.${name}.bitfit_layers.${which}`;
    let merged = false;

    return {
      trainable(): TrainableParam[] {
        return [...layers].map(([name, l]) => ({ name: key(name, 'bias'), tensor: l.bias }));
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
        for (const [name, l] of layers) {
          tensors.set(key(name, 'bias'), { shape: [l.outF], data: await e.read(l.bias) });
          tensors.set(key(name, 'weight'), { shape: [l.outF, l.inF], data: await e.read(model.param(`${name}.weight`)) });
        }
        const modules = [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort();
        return { config: bitfitAdapterConfig(config, modules), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        for (const [name, l] of layers) {
          const src = files.tensors.get(key(name, 'bias'));
          if (!src) throw new ConfigError(`The adapter has no tensor ${key(name, 'bias')}; was it trained with the same target_modules and model?`);
          if (src.shape.join() !== String(l.outF))
            throw new ConfigError(`Adapter tensor ${key(name, 'bias')} has shape [${src.shape}], expected [${l.outF}]; was it trained on another model?`);
          const w = files.tensors.get(key(name, 'weight'));
          if (w && w.shape.join() !== [l.outF, l.inF].join()) {
            throw new ConfigError(
              `Adapter tensor ${key(name, 'weight')} has shape [${w.shape}], expected [${l.outF}, ${l.inF}]; was it trained on another model?`,
            );
          }
          e.write(l.bias, src.data);
        }
      },
      async merge(): Promise<void> {
        const cfg = model.config;
        const groups = new Set<string[]>();
        for (const name of layers.keys()) {
          const proj = name.split('.').at(-1)!;
          const group = ATTENTION.includes(proj) ? ATTENTION : MLP;
          const holds = group === ATTENTION ? cfg.modelType === 'llama' || (cfg.attentionBias.qkv && proj !== 'o_proj') : cfg.modelType === 'llama';
          if (!holds) {
            throw new ConfigError(
              `bitfit cannot merge a bias on ${proj} into a ${cfg.modelType} checkpoint: its config.json has no flag for such a bias (llama has attention_bias / mlp_bias). Use the adapter folder instead of export_merged.`,
            );
          }
          if (cfg.modelType === 'llama') groups.add(group);
        }
        // The biases stay where they are, frozen; the originals they replaced go.
        for (const l of layers.values()) {
          l.bias.requiresGrad = false;
          l.bias.grad?.dispose();
          l.bias.grad = null;
          l.original?.dispose();
        }
        // Zero biases for the rest of each group, so the state dict is the one attention_bias / mlp_bias describes.
        for (const n of model.linearNames()) {
          const proj = n.split('.').at(-1)!;
          if ([...groups].some((g) => g.includes(proj)) && !model.params.has(`${n}.bias`)) model.addBias(n);
        }
        layers.clear();
        merged = true;
        await e.sync();
      },
      detach(): void {
        if (merged) return;
        for (const [name, l] of layers) {
          // Remove the added bias, or put the model's own bias back.
          if (l.original) model.params.set(`${name}.bias`, l.original);
          else model.params.delete(`${name}.bias`);
          l.bias.dispose();
        }
        layers.clear();
      },
    };
  },
};

/** adapter_config.json: PEFT-Factory's BitFitConfig (target_modules) and PEFT's base fields (METHODS.md §20). */
export function bitfitAdapterConfig(config: Record<string, unknown>, modules: string[]): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    inference_mode: true,
    peft_type: 'BITFIT',
    peft_version: '0.17.1',
    revision: null,
    target_modules: modules,
    task_type: 'CAUSAL_LM',
  };
}

export default bitfit;
