/**
 * VeRA — vector-based random matrix adaptation (Kopiczko et al., ICLR 2024;
 * HF PEFT `tuners/vera`). One pair of frozen random projections is shared by
 * every adapted linear:
 *   A [r, in_max], B [out_max, r], kaiming-uniform: U(−√(6/fan_in), √(6/fan_in))
 *   with fan_in = in_max for A and r for B, drawn (A first, row-major) from a
 *   generator seeded with vera_projection_prng_key,
 * where in_max / out_max are the largest input / output sizes among the
 * targets. A linear W [out, in] uses the slices A[:, :in] and B[:out, :] and
 * trains two vectors, lambda_d [r] (init vera_d_initial, 0.1) and lambda_b
 * [out] (init 0, so training starts from the base model):
 *   y = W x + Λ_b B[:out] Λ_d A[:, :in] dropout(x).
 * Computed as y += (x (Λ_d A)ᵀ)(Λ_b B)ᵀ: the vectors scale the small frozen
 * matrices (mulVec over their transposed copies, which broadcasts over the
 * last dimension), then two matmuls, the second accumulating into y.
 * Trainable parameters per target: out + r.
 * Export (HF PEFT 0.17 layout): base_model.model.<module>.vera_lambda_b [out],
 * …vera_lambda_d [r], and base_model.vera_A / base_model.vera_B when
 * save_projection (default). Merge: W ← W + (Λ_b B)(Λ_d A), exact.
 *
 * The projections come from PEFT Studio's seeded generator, not torch's, so
 * an adapter exported with vera_save_projection: false loads back here (the
 * key regenerates A and B) but not in Python PEFT; the default (true) stores
 * them and loads everywhere.
 *
 * Written only through the plug-in interface: it imports PEFT Studio through
 * `peft-studio/...` and needs no edit outside this folder (README.md).
 */
import { trainingDropout } from 'peft-studio/engine/ops/dropout';
import { matmul } from 'peft-studio/engine/ops/matmul';
import { mulVec } from 'peft-studio/engine/ops/mul';
import type { Engine } from 'peft-studio/engine/engine';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { seededRandom } from 'peft-studio/model/generate';
import { flopsTargets } from 'peft-studio/eval/flops';
import { readOptions } from 'peft-studio/methods/options';
import { veraOptions } from './config';
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

/** HF PEFT's llama default (TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING). */
export const VERA_DEFAULT_TARGET = ['q_proj', 'v_proj'];

/**
 * The shared projections for rank r and the largest target sizes:
 * A [r, inMax] ~ U(±√(6/inMax)), then B [outMax, r] ~ U(±√(6/r)), row-major,
 * from one generator seeded with `key`.
 */
export function veraProjections(r: number, inMax: number, outMax: number, key: number): { A: Float32Array; B: Float32Array } {
  const rand = seededRandom(key);
  const draw = (n: number, fanIn: number) => {
    const bound = Math.sqrt(6 / fanIn);
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (rand() * 2 - 1) * bound;
    return a;
  };
  const A = draw(r * inMax, inMax);
  const B = draw(outMax * r, r);
  return { A, B };
}

/** (A[:, :inF])ᵀ as [inF, r] from A [r, inMax]. */
function slicedAT(A: Float32Array, r: number, inMax: number, inF: number): Float32Array {
  const out = new Float32Array(inF * r);
  for (let i = 0; i < inF; i++) for (let j = 0; j < r; j++) out[i * r + j] = A[j * inMax + i];
  return out;
}

/** (B[:outF, :])ᵀ as [r, outF] from B [outMax, r]. */
function slicedBT(B: Float32Array, r: number, outF: number): Float32Array {
  const out = new Float32Array(r * outF);
  for (let o = 0; o < outF; o++) for (let j = 0; j < r; j++) out[j * outF + o] = B[o * r + j];
  return out;
}

interface VeraLayer {
  /** lambda_d [r] */
  ld: Tensor;
  /** lambda_b [out] */
  lb: Tensor;
  inF: number;
  outF: number;
}

/** The experiment keys of a VeRA adapter_config.json. */
function veraKeysFromAdapter(c: Record<string, unknown>): Record<string, unknown> {
  if (c.bias !== undefined && c.bias !== null && c.bias !== 'none') {
    throw new ConfigError(`This VeRA adapter also trains biases (bias: ${JSON.stringify(c.bias)}); PEFT Studio's vera loads bias: "none" adapters only.`);
  }
  if (c.layers_to_transform !== undefined && c.layers_to_transform !== null) {
    throw new ConfigError(
      `This VeRA adapter adapts only some layers (layers_to_transform ${JSON.stringify(c.layers_to_transform)}); PEFT Studio's vera adapts every layer.`,
    );
  }
  const t = c.target_modules;
  if (typeof t === 'string' && /[\^$*+?()[\]{}|\\]/.test(t)) {
    throw new ConfigError(
      `This VeRA adapter selects modules with the regular expression ${JSON.stringify(t)}; give target_modules as a list of names (q_proj, v_proj, ...).`,
    );
  }
  return {
    finetuning_type: 'vera',
    vera_rank: c.r ?? 256,
    vera_target: t ?? VERA_DEFAULT_TARGET,
    vera_dropout: c.vera_dropout ?? 0,
    vera_d_initial: c.d_initial ?? 0.1,
    vera_projection_prng_key: c.projection_prng_key ?? 0,
    vera_save_projection: c.save_projection ?? true,
  };
}

export const vera: PeftMethod = {
  name: 'vera',
  label: 'VeRA',
  family: 'LoRA family',
  description: 'Frozen random projections shared by all targets, scaled by two trained vectors per layer (lambda_d, lambda_b).',
  order: 8.5,
  options: veraOptions,
  peftType: 'VERA',
  /**
   * Per token per target: 2·r·in (x (Λ_d A)ᵀ) + 2·r·out (then (Λ_b B)ᵀ); the
   * per-forward vector scalings of the frozen projections are elementwise
   * epilogues and, like LoRA's scale, not counted.
   */
  flops(ctx) {
    const { vera_rank: r, vera_target } = readOptions(veraOptions, ctx.config, 'vera');
    let f = 0;
    for (const l of flopsTargets(ctx.linears, vera_target, 'vera_target', 'vera')) f += ctx.batch * ctx.seq * 2 * r * (l.inF + l.outF);
    return { flops: f };
  },
  configFromAdapter: veraKeysFromAdapter,
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    const o = readOptions(veraOptions, config, 'vera');
    const r = o.vera_rank;
    const target = o.vera_target;
    const targets = matchTargets(model.linearNames(), target);
    if (targets.length === 0) {
      throw new ConfigError(`vera_target ${JSON.stringify(target)} matches no linear layer; use names such as q_proj, v_proj, down_proj, or 'all'.`);
    }
    const p = o.vera_dropout;
    const dInit = o.vera_d_initial;
    const key = o.vera_projection_prng_key;
    const saveProjection = o.vera_save_projection;

    const layers = new Map<string, VeraLayer>();
    for (const name of targets) {
      const [outF, inF] = model.weightShape(`${name}.weight`);
      const ld = e.persist(e.upload(new Float32Array(r).fill(dInit), [r], `${name}.vera_lambda_d`));
      const lb = e.persist(e.zeros([outF], `${name}.vera_lambda_b`));
      ld.requiresGrad = lb.requiresGrad = true;
      layers.set(name, { ld, lb, inF, outF });
    }
    const inMax = Math.max(...[...layers.values()].map((l) => l.inF));
    const outMax = Math.max(...[...layers.values()].map((l) => l.outF));
    let { A, B } = veraProjections(r, inMax, outMax, key);

    // Frozen transposed slices, one per distinct input / output size.
    const aT = new Map<number, Tensor>();
    const bT = new Map<number, Tensor>();
    const uploadProjections = () => {
      for (const t of [...aT.values(), ...bT.values()]) t.dispose();
      aT.clear();
      bT.clear();
      for (const l of layers.values()) {
        if (!aT.has(l.inF)) aT.set(l.inF, e.persist(e.upload(slicedAT(A, r, inMax, l.inF), [l.inF, r], `vera_A[:, :${l.inF}]ᵀ`)));
        if (!bT.has(l.outF)) bT.set(l.outF, e.persist(e.upload(slicedBT(B, r, l.outF), [r, l.outF], `vera_B[:${l.outF}]ᵀ`)));
      }
    };
    uploadProjections();

    /** (Λ_d A[:, :in])ᵀ [in, r] and (Λ_b B[:out])ᵀ [r, out] for one layer. */
    const scaled = (eng: Engine, name: string, l: VeraLayer) => ({
      As: mulVec(eng, aT.get(l.inF)!, l.ld, `${name}.vera_A_scaled`),
      Bs: mulVec(eng, bT.get(l.outF)!, l.lb, `${name}.vera_B_scaled`),
    });

    const detachHooks = model.attach({
      linear: (name, x, inner) => {
        const l = layers.get(name);
        if (!l) return inner(x);
        const y = inner(x);
        const xd = trainingDropout(e, x, p, `${name}.vera_dropout`);
        const { As, Bs } = scaled(e, name, l);
        const h = matmul(e, xd, As, { name: `${name}.vera_h` });
        matmul(e, h, Bs, { out: y, accumulate: true });
        return y;
      },
    });

    const lkey = (name: string, which: 'b' | 'd') => `base_model.model.${name}.vera_lambda_${which}`;

    return {
      memory() {
        // Per target and forward: the scaled projections (Λ_d A)ᵀ [in, r] and (Λ_b B)ᵀ [r, out],
        // h [tokens, r] (r is large: 256 by default), and the dropped-out copy of x when p > 0.
        const activations: ActivationTensor[] = [];
        for (const [name, l] of layers) {
          const layer = layerOf(name);
          activations.push({ layer, fixed: l.inF * r }, { layer, fixed: r * l.outF }, { layer, perToken: r });
          if (p > 0) activations.push({ layer, perToken: l.inF });
        }
        return { activations, gradientFromLayer: firstLayerOf(layers.keys()) };
      },
      trainable(): TrainableParam[] {
        const out: TrainableParam[] = [];
        for (const [name, l] of layers) {
          out.push({ name: lkey(name, 'b'), tensor: l.lb });
          out.push({ name: lkey(name, 'd'), tensor: l.ld });
        }
        return out;
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map<string, HostTensor>();
        for (const [name, l] of layers) {
          tensors.set(lkey(name, 'b'), { shape: [l.outF], data: await e.read(l.lb) });
          tensors.set(lkey(name, 'd'), { shape: [r], data: await e.read(l.ld) });
        }
        if (saveProjection) {
          tensors.set('base_model.vera_A', { shape: [r, inMax], data: A.slice() });
          tensors.set('base_model.vera_B', { shape: [outMax, r], data: B.slice() });
        }
        const modules = [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort();
        return { config: veraAdapterConfig(config, r, p, dInit, key, !!saveProjection, modules), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        const put = (k: string, t: Tensor, shape: number[]) => {
          const src = files.tensors.get(k);
          if (!src) throw new ConfigError(`The adapter has no tensor ${k}; was it trained with the same vera_target and model?`);
          if (src.shape.join() !== shape.join()) throw new ConfigError(`Adapter tensor ${k} has shape [${src.shape}], expected [${shape}] (vera_rank ${r}).`);
          e.write(t, src.data);
        };
        for (const [name, l] of layers) {
          put(lkey(name, 'b'), l.lb, [l.outF]);
          put(lkey(name, 'd'), l.ld, [r]);
        }
        const fa = files.tensors.get('base_model.vera_A');
        const fb = files.tensors.get('base_model.vera_B');
        if (fa && fb) {
          if (fa.shape.join() !== `${r},${inMax}` || fb.shape.join() !== `${outMax},${r}`) {
            throw new ConfigError(
              `The adapter's vera_A [${fa.shape}] / vera_B [${fb.shape}] do not fit this model and rank: expected [${r}, ${inMax}] / [${outMax}, ${r}].`,
            );
          }
          A = Float32Array.from(fa.data);
          B = Float32Array.from(fb.data);
          uploadProjections();
        } else if (saveProjection) {
          throw new ConfigError(
            'The adapter says save_projection: true but has no base_model.vera_A / base_model.vera_B tensors; the projections cannot be restored.',
          );
        }
      },
      async merge(): Promise<void> {
        // W [out, in] += (Λ_b B)(Λ_d A) = Bsᵀ Asᵀ with Bs [r, out], As [in, r].
        e.beginScope();
        for (const [name, l] of layers) {
          const { As, Bs } = scaled(e, name, l);
          matmul(e, Bs, As, { transA: true, transB: true, out: model.param(`${name}.weight`), accumulate: true });
        }
        e.endScope();
        await e.sync();
        this.detach();
      },
      detach(): void {
        detachHooks();
        for (const l of layers.values()) {
          l.ld.dispose();
          l.lb.dispose();
        }
        for (const t of [...aT.values(), ...bT.values()]) t.dispose();
        layers.clear();
        aT.clear();
        bT.clear();
      },
    };
  },
};

/** adapter_config.json with the PEFT 0.17 VeraConfig key set. */
export function veraAdapterConfig(
  config: Record<string, unknown>,
  r: number,
  p: number,
  dInit: number,
  key: number,
  saveProjection: boolean,
  modules: string[],
): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    bias: 'none',
    d_initial: dInit,
    fan_in_fan_out: false,
    inference_mode: true,
    init_weights: true,
    layers_pattern: null,
    layers_to_transform: null,
    modules_to_save: null,
    peft_type: 'VERA',
    peft_version: '0.17.1',
    projection_prng_key: key,
    r,
    revision: null,
    save_projection: saveProjection,
    target_modules: modules,
    task_type: 'CAUSAL_LM',
    vera_dropout: p,
  };
}

export default vera;
