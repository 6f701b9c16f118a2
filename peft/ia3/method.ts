/**
 * (IA)³ (METHODS.md §18): one learned scaling vector per targeted linear
 * W [out, in] (bias b optional), applied through the `linear` insertion point:
 *   non-feed-forward target: y = (x Wᵀ + b) ⊙ l,   l [out, 1]
 *   feed-forward target:     y = (x ⊙ l) Wᵀ + b,   l [1, in]
 * On k_proj / v_proj the output scaling happens right after the projection,
 * i.e. before the reshape to heads and before RoPE, as HF PEFT does (RoPE
 * mixes channel pairs, so scaling after it would be a different model).
 * Gradients (src/engine/ops/mul.ts mulVec): ∂L/∂l_o = Σ_tokens G_o (x Wᵀ + b)_o
 * (non-FF), ∂L/∂l_j = Σ_tokens (G W)_j x_j (FF); the input gets G ⊙ l before
 * or after the base backward.
 * Init ones (init_ia3_weights, the model equals the base), else N(0, 1).
 * Export: base_model.model.<module>.ia3_l, shapes (out, 1) / (1, in).
 * Merge (exact): non-FF W ← diag(l) W and b ← l ⊙ b; FF W ← W diag(l).
 */
import { mulVec } from 'peft-studio/engine/ops/mul';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { readOptions, targetModules } from 'peft-studio/methods/options';
import {
  firstLayerOf,
  layerOf,
  matchTargets,
  normal,
  type AdapterFiles,
  type AttachedMethod,
  type MethodContext,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { ia3Options } from './config';

/** Everything IA3 reads, in form order. */
const options = [targetModules, ...ia3Options] as const;

const DEFAULT_TARGETS = ['k_proj', 'v_proj', 'down_proj'];
const DEFAULT_FEEDFORWARD = ['down_proj'];

interface Ia3Layer {
  l: Tensor;
  feedforward: boolean;
  /** (out, 1) for output scaling, (1, in) for input scaling. */
  shape: [number, number];
}

/** Targets and which of them are feed-forward, with PEFT's defaults and its subset rule. */
export function ia3Targets(linearNames: string[], config: Record<string, unknown>): { targets: string[]; feedforward: Set<string> } {
  // feedforward_modules: [] is HF PEFT's "no feed-forward target" (every target scales its output); the schema's lists are non-empty.
  const noFeedforward = Array.isArray(config.feedforward_modules) && config.feedforward_modules.length === 0;
  const o = readOptions(options, noFeedforward ? { ...config, feedforward_modules: null } : config, 'ia3');
  const given = o.target_modules;
  const ffGiven = noFeedforward ? [] : o.feedforward_modules;
  const isAll = given?.length === 1 && (given[0] === 'all' || given[0] === 'all-linear');
  // HF PEFT IA3Config: when both are lists, feedforward_modules ⊆ target_modules.
  if (given && ffGiven && !isAll) {
    const extra = ffGiven.filter((f) => !given.includes(f));
    if (extra.length) {
      throw new ConfigError(
        `feedforward_modules ${JSON.stringify(ffGiven)} must be a subset of target_modules ${JSON.stringify(given)}: add ${extra.join(', ')} to target_modules or remove it from feedforward_modules.`,
      );
    }
  }
  const targets = matchTargets(linearNames, given ?? DEFAULT_TARGETS);
  if (targets.length === 0) {
    throw new ConfigError(
      `target_modules ${JSON.stringify(given)} matches no linear layer for ia3; use names such as k_proj, v_proj, down_proj (or leave it unset for those three).`,
    );
  }
  const feedforward = new Set(matchTargets(targets, ffGiven ?? DEFAULT_FEEDFORWARD));
  return { targets, feedforward };
}

const suffixes = (names: Iterable<string>) => [...new Set([...names].map((t) => t.split('.').at(-1)!))].sort();

export const ia3: PeftMethod = {
  name: 'ia3',
  label: '(IA)³',
  family: 'Adapters, scaling and bias',
  description: 'Trained vectors that rescale activations: the outputs of k_proj and v_proj and the input of down_proj by default (target_modules).',
  order: 18,
  options,
  /** Per token, one multiply per scaled feature (out of k, v; in of the feed-forward targets). */
  flops(ctx) {
    const { targets, feedforward } = ia3Targets(
      ctx.linears.map((l) => l.name),
      ctx.config,
    );
    const chosen = new Set(targets);
    let f = 0;
    for (const l of ctx.linears) if (chosen.has(l.name)) f += ctx.batch * ctx.seq * (feedforward.has(l.name) ? l.inF : l.outF);
    return { flops: f };
  },
  peftType: 'IA3',
  configFromAdapter(c) {
    return {
      finetuning_type: 'ia3',
      target_modules: c.target_modules ?? null,
      feedforward_modules: c.feedforward_modules ?? null,
      init_ia3_weights: c.init_ia3_weights ?? true,
    };
  },
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    const { targets, feedforward } = ia3Targets(model.linearNames(), config);
    const initOnes = readOptions([ia3Options[1]], config, 'ia3').init_ia3_weights;
    const layers = new Map<string, Ia3Layer>();
    for (const name of targets) {
      const [outF, inF] = model.weightShape(`${name}.weight`);
      const ff = feedforward.has(name);
      const shape: [number, number] = ff ? [1, inF] : [outF, 1];
      const n = ff ? inF : outF;
      const l = e.persist(e.upload(initOnes ? new Float32Array(n).fill(1) : normal(n, 1, ctx.random), shape, `${name}.ia3_l`));
      l.requiresGrad = true;
      layers.set(name, { l, feedforward: ff, shape });
    }
    const detachHooks = model.attach({
      linear: (name, x, inner) => {
        const layer = layers.get(name);
        if (!layer) return inner(x);
        return layer.feedforward ? inner(mulVec(e, x, layer.l, `${name}.ia3_in`)) : mulVec(e, inner(x), layer.l, `${name}.ia3_out`);
      },
    });
    const key = (name: string) => `base_model.model.${name}.ia3_l`;

    return {
      memory() {
        // Per target: the scaled copy of its input (feed-forward, [tokens, in]) or of its output ([tokens, out]).
        return {
          activations: [...layers].map(([name, layer]) => ({ layer: layerOf(name), perToken: layer.feedforward ? layer.shape[1] : layer.shape[0] })),
          gradientFromLayer: firstLayerOf(layers.keys()),
        };
      },
      trainable(): TrainableParam[] {
        return [...layers].map(([name, layer]) => ({ name: key(name), tensor: layer.l }));
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
        for (const [name, layer] of layers) tensors.set(key(name), { shape: [...layer.shape], data: await e.read(layer.l) });
        const ffNames = [...layers].filter(([, l]) => l.feedforward).map(([n]) => n);
        return { config: ia3AdapterConfig(config, suffixes(layers.keys()), suffixes(ffNames), initOnes), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        for (const [name, layer] of layers) {
          const src = files.tensors.get(key(name));
          if (!src) throw new ConfigError(`The adapter has no tensor ${key(name)}; was it trained with the same target_modules and model?`);
          if (src.shape.join() !== layer.shape.join()) {
            throw new ConfigError(
              `Adapter tensor ${key(name)} has shape [${src.shape}], expected [${layer.shape}] (${layer.feedforward ? 'feed-forward: scales the input' : 'scales the output'}); check feedforward_modules.`,
            );
          }
          e.write(layer.l, src.data);
        }
      },
      async merge(): Promise<void> {
        // Exact: scaling rows (output) or columns (input) of W. Done on the
        // host once: two reads and a write per target.
        for (const [name, layer] of layers) {
          const W = model.param(`${name}.weight`);
          const [outF, inF] = W.shape;
          const w = await e.read(W),
            l = await e.read(layer.l);
          for (let o = 0; o < outF; o++) {
            for (let i = 0; i < inF; i++) w[o * inF + i] *= layer.feedforward ? l[i] : l[o];
          }
          e.write(W, w);
          const bias = model.params.get(`${name}.bias`);
          if (bias && !layer.feedforward) {
            const b = await e.read(bias);
            for (let o = 0; o < outF; o++) b[o] *= l[o];
            e.write(bias, b);
          }
        }
        await e.sync();
        this.detach();
      },
      detach(): void {
        detachHooks();
        for (const layer of layers.values()) layer.l.dispose();
        layers.clear();
      },
    };
  },
};

/** adapter_config.json with the PEFT 0.17 IA3Config key set (METHODS.md §18). */
export function ia3AdapterConfig(config: Record<string, unknown>, modules: string[], feedforward: string[], initOnes: boolean): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    exclude_modules: null,
    fan_in_fan_out: false,
    feedforward_modules: feedforward,
    inference_mode: true,
    init_ia3_weights: initOnes,
    modules_to_save: null,
    peft_type: 'IA3',
    peft_version: '0.17.1',
    revision: null,
    target_modules: modules,
    task_type: 'CAUSAL_LM',
  };
}

export default ia3;
