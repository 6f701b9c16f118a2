/**
 * my-method — a template PEFT method: a trained scale per output channel of
 * the targeted linears,
 *   y = (W x) ⊙ (1 + s),   s [out] per target, initialised to my_method_init (0),
 * computed by this folder's own kernel (kernel.wgsl, kernel.ts). With s = 0
 * the model is the base model exactly. Merge: W[o, :] ← (1 + s[o]) · W[o, :]
 * (and the bias, if the linear has one), exact.
 * Export (our own layout, HF PEFT-style keys): base_model.model.<module>.my_method_scale [out];
 * adapter_config.json: peft_type "MY_METHOD", target_modules, init_value.
 *
 * Copy this folder to peft/<name>/ (bundled in every build) or to a folder
 * in PEFT_DIR (the CLI loads it at start), then rename: the folder, `name`
 * below, `group` and the key prefix in config.ts, the peft_type. Import PEFT
 * Studio only through `peft-studio/...` (package.json "exports").
 */
import { ConfigError } from 'peft-studio/errors';
import type { Tensor } from 'peft-studio/engine/tensor';
import { flopsTargets } from 'peft-studio/eval/flops';
import { readOptions } from 'peft-studio/methods/options';
import {
  firstLayerOf,
  layerOf,
  matchTargets,
  type AdapterFiles,
  type AttachedMethod,
  type MethodContext,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { myMethodOptions } from './config';
import { channelScale } from './kernel';

const key = (module: string) => `base_model.model.${module}.my_method_scale`;

export const myMethod: PeftMethod = {
  name: 'my-method',
  label: 'My method',
  description: 'A trained scale per output channel of the targeted linears: y = (W x) ⊙ (1 + s).',
  // The options its form shows, in order (its own from config.ts; shared ones from peft-studio/methods/options).
  options: myMethodOptions,
  peftType: 'MY_METHOD',
  /** FLOPs it adds to one forward (PSCP): one multiply per output of each target, per token. */
  flops(ctx) {
    const { my_method_target } = readOptions(myMethodOptions, ctx.config, 'my-method');
    let f = 0;
    for (const l of flopsTargets(ctx.linears, my_method_target, 'my_method_target', 'my-method')) f += ctx.batch * ctx.seq * l.outF;
    return { flops: f };
  },
  configFromAdapter(c) {
    return { finetuning_type: 'my-method', my_method_target: c.target_modules, my_method_init: c.init_value ?? 0 };
  },
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    // Parse the options once (defaults come from the specs in config.ts).
    const { my_method_target: target, my_method_init: init } = readOptions(myMethodOptions, config, 'my-method');
    const targets = matchTargets(model.linearNames(), target);
    if (targets.length === 0) {
      throw new ConfigError(`my_method_target ${JSON.stringify(target)} matches no linear layer; use names such as q_proj, v_proj, down_proj, or 'all'.`);
    }
    const scales = new Map<string, Tensor>();
    for (const name of targets) {
      const out = model.param(`${name}.weight`).shape[0];
      const s = e.persist(e.upload(new Float32Array(out).fill(init), [out], `${name}.my_method_scale`));
      s.requiresGrad = true;
      scales.set(name, s);
    }
    // Insertion point: wrap each targeted linear (src/model/llama.ts ModelHooks.linear).
    const detachHooks = model.attach({
      linear: (name, x, inner) => {
        const s = scales.get(name);
        return s ? channelScale(e, inner(x), s, `${name}.my_method_out`) : inner(x);
      },
    });

    return {
      // For the memory estimate: each target's forward keeps its scaled output [tokens, out] (and its gradient).
      memory: () => ({
        activations: [...scales].map(([name, s]) => ({ layer: layerOf(name), perToken: s.size })),
        gradientFromLayer: firstLayerOf(scales.keys()),
      }),
      trainable(): TrainableParam[] {
        return [...scales].map(([name, s]) => ({ name: key(name), tensor: s }));
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
        for (const [name, s] of scales) tensors.set(key(name), { shape: [...s.shape], data: await e.read(s) });
        return {
          config: {
            base_model_name_or_path: config.model_name_or_path ?? null,
            inference_mode: true,
            init_value: init,
            peft_type: 'MY_METHOD',
            target_modules: [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort(),
            task_type: 'CAUSAL_LM',
          },
          tensors,
        };
      },
      importAdapter(files: AdapterFiles): void {
        for (const [name, s] of scales) {
          const src = files.tensors.get(key(name));
          if (!src) throw new ConfigError(`The adapter has no tensor ${key(name)}; was it trained with the same my_method_target and model?`);
          if (src.shape.join() !== s.shape.join()) throw new ConfigError(`Adapter tensor ${key(name)} has shape [${src.shape}], expected [${s.shape}].`);
          e.write(s, src.data);
        }
      },
      async merge(): Promise<void> {
        // W[o, :] ← (1 + s[o]) W[o, :]; a bias b[o] ← (1 + s[o]) b[o] (the scale applies after it).
        for (const [name, s] of scales) {
          const sv = await e.read(s);
          for (const pname of [`${name}.weight`, `${name}.bias`]) {
            const t = model.params.get(pname);
            if (!t) continue;
            const w = await e.read(t);
            const cols = w.length / sv.length;
            for (let i = 0; i < w.length; i++) w[i] *= 1 + sv[Math.floor(i / cols)];
            e.write(t, w);
          }
        }
        await e.sync();
        this.detach();
      },
      detach(): void {
        detachHooks();
        for (const s of scales.values()) s.dispose();
        scales.clear();
      },
    };
  },
};

export default myMethod;
