/**
 * Prefix tuning (METHODS.md §13, HF PEFT PREFIX_TUNING), with or without
 * reparameterisation. P-Tuning v2 (§14, peft/p-tuning-v2) is this method with
 * prefix_projection = false: the same code, its own finetuning_type so that
 * users find it, exported as PREFIX_TUNING. Neither PEFT nor PEFT-Factory has a
 * separate P-Tuning v2 implementation: PEFT's prefix encoder derives from the
 * P-tuning-v2 repo's, whose optional reparameterisation is the projection here
 * (the original P-tuning-v2 code also applies dropout to the prefix; PEFT does
 * not, nor do we).
 *
 * Dimensions (PEFT's GQA correction): D = token_dim = n_kv·h_d,
 * num_attention_heads = n_kv, F = N·2·D. The prefix matrix Z [n_v, F] is
 *   prefix_projection = false:  Z = E, the trained table E [n_v, F] ~ N(0, 1)
 *   prefix_projection = true:   Z = tanh(E W1ᵀ + b1) W2ᵀ + b2,
 *                               E [n_v, D] ~ N(0, 1), W1 [H, D], b1 [H], W2 [F, H], b2 [F]
 *                               (nn.Linear default init U(±1/√in)), H = encoder_hidden_size (default D).
 * Each row of Z is viewed as [2N][n_kv][h_d]: layer ℓ's keys are block 2ℓ,
 * its values block 2ℓ+1, broadcast over the batch (prefixSlice, whose backward
 * sums the batch copies back into Z).
 *
 * Insertion: the model's kvPrefix hook takes per-layer keys/values
 * [B, n_v, n_kv, h_d] in post-RoPE space (prefix keys are not rotated),
 * visible to every query (mask 1), and positionShift = n_v puts the real
 * tokens at positions n_v, n_v+1, ... as HF does (the prefix counts as cached
 * positions). The model calls kvPrefix on every forward — training, the
 * prefill of generation and each cached step — so the prefix is seen at all of
 * them; Z is computed once per forward (at layer 0) and sliced per layer.
 *
 * Export: flat key prompt_embeddings = Z [n_v, F] in both modes (the encoder
 * output, as PEFT saves), adapter_config.json with the PEFT 0.17 key set and
 * the GQA-corrected token_dim / num_attention_heads. Import loads Z into a
 * plain table: the projection MLP is gone, as when PEFT loads the adapter in
 * inference mode, so a reloaded adapter trains on Z directly. Not mergeable.
 */
import { activation } from 'peft-studio/engine/ops/activation';
import { matmul } from 'peft-studio/engine/ops/matmul';
import { prefixSlice } from 'peft-studio/engine/ops/prefix_slice';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import type { ModelConfig } from 'peft-studio/model/config';
import { encoderHiddenSize, numVirtualTokens, readOptions } from 'peft-studio/methods/options';
import {
  normal,
  uniform,
  type ActivationTensor,
  type AdapterFiles,
  type AttachedMethod,
  type FlopsContext,
  type HostTensor,
  type MethodContext,
  type MethodFlops,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { PROMPT_FAMILY, requireVirtualTokens } from '../prompt-tuning/prompt';
import { prefixOptions } from './config';

/** Everything prefix tuning reads, in form order (p-tuning-v2: the same without prefix_projection). */
export const prefixTuningOptions = [numVirtualTokens, ...prefixOptions, encoderHiddenSize] as const;

/** Prefix-tuning shapes for a model: D = n_kv·h_d (token_dim), F = N·2·D, H the projection width. */
export interface PrefixDims {
  nv: number;
  /** token_dim after the GQA correction. */
  D: number;
  F: number;
  layers: number;
  kvHeads: number;
  headDim: number;
  H: number;
}

export function prefixDims(cfg: ModelConfig, nv: number, encoderHiddenSize?: number | null): PrefixDims {
  const D = cfg.numKvHeads * cfg.headDim;
  return { nv, D, F: cfg.numLayers * 2 * D, layers: cfg.numLayers, kvHeads: cfg.numKvHeads, headDim: cfg.headDim, H: encoderHiddenSize ?? D };
}

/** Trainable parameters: n_v·F without projection; n_v·D + (D·H + H) + (H·F + F) with it. */
export function prefixParamCount(d: PrefixDims, projection: boolean): number {
  return projection ? d.nv * d.D + d.D * d.H + d.H + d.H * d.F + d.F : d.nv * d.F;
}

export type PrefixFlavour = 'prefix-tuning' | 'p-tuning-v2';

interface PrefixOptions {
  nv: number;
  projection: boolean;
  H: number | null;
}

/** num_virtual_tokens (required), prefix_projection, encoder_hidden_size from an experiment config. */
export function prefixOptionsOf(config: Record<string, unknown>, flavour: PrefixFlavour): PrefixOptions {
  const nv = requireVirtualTokens(config, flavour);
  const o = readOptions(prefixTuningOptions, config, flavour);
  if (flavour === 'p-tuning-v2' && o.prefix_projection) {
    throw new ConfigError(
      'prefix_projection: true does not apply to finetuning_type p-tuning-v2 (P-Tuning v2 is prefix tuning without reparameterisation); ' +
        'use finetuning_type: prefix-tuning with prefix_projection: true for the projected prefix, or drop prefix_projection.',
    );
  }
  return { nv, projection: o.prefix_projection, H: o.encoder_hidden_size };
}

/**
 * Every query also attends to n_v prefix keys and values:
 * N · B · n_h · 2 · (2·T·n_v·h_d); with prefix_projection the encoder once,
 * 2·n_v·(D·H + H·F), D = n_kv·h_d, F = 2·N·D.
 */
export function prefixFlops(ctx: FlopsContext, flavour: PrefixFlavour): MethodFlops {
  const c = ctx.model;
  const o = prefixOptionsOf(ctx.config, flavour);
  let f = c.numLayers * ctx.batch * c.numHeads * 2 * (2 * ctx.seq * o.nv * c.headDim);
  if (o.projection) {
    const { D, H, F } = prefixDims(c, o.nv, o.H);
    f += 2 * o.nv * (D * H + H * F);
  }
  return { flops: f };
}

interface Projection {
  w1: Tensor;
  b1: Tensor;
  w2: Tensor;
  b2: Tensor;
}

/** PEFT's in-model names (checkpoint keys of the trainable tensors). */
const NAMES = {
  embedding: 'prompt_encoder.default.embedding.weight',
  w1: 'prompt_encoder.default.transform.0.weight',
  b1: 'prompt_encoder.default.transform.0.bias',
  w2: 'prompt_encoder.default.transform.2.weight',
  b2: 'prompt_encoder.default.transform.2.bias',
};

export function attachPrefix(ctx: MethodContext, flavour: PrefixFlavour): AttachedMethod {
  const { e, model, config } = ctx;
  const opts = prefixOptionsOf(config, flavour);
  const dims = prefixDims(model.config, opts.nv, opts.H);
  const { nv, D, F, H, kvHeads, headDim } = dims;
  const W = kvHeads * headDim; // one key or value block of a row of Z (= D)

  const param = (data: Float32Array, shape: number[], name: string): Tensor => {
    const t = e.persist(e.upload(data, shape, name));
    t.requiresGrad = true;
    return t;
  };
  // Without projection `table` is Z itself [n_v, F]; with it, the table E [n_v, D] fed to the MLP.
  let table = param(normal(nv * (opts.projection ? D : F), 1, ctx.random), [nv, opts.projection ? D : F], NAMES.embedding);
  let proj: Projection | null = opts.projection
    ? {
        w1: param(uniform(H * D, 1 / Math.sqrt(D), ctx.random), [H, D], NAMES.w1),
        b1: param(uniform(H, 1 / Math.sqrt(D), ctx.random), [H], NAMES.b1),
        w2: param(uniform(F * H, 1 / Math.sqrt(H), ctx.random), [F, H], NAMES.w2),
        b2: param(uniform(F, 1 / Math.sqrt(H), ctx.random), [F], NAMES.b2),
      }
    : null;

  /** Z [n_v, F]: the table, or the projection MLP applied to it (recorded on the tape when one is active). */
  const computeZ = (): Tensor => {
    if (!proj) return table;
    const h = matmul(e, table, proj.w1, { transB: true, bias: proj.b1, name: 'prefix.transform.0' });
    const a = activation(e, h, 'tanh', 'prefix.tanh');
    return matmul(e, a, proj.w2, { transB: true, bias: proj.b2, name: 'prefix.transform.2' });
  };

  // Z of the forward in progress: computed once before the layers (so that it
  // outlives a recomputed layer's region), sliced by every layer.
  let z: Tensor | null = null;
  const detachHooks = model.attach({
    beginForward: () => {
      z = computeZ();
    },
    kvPrefix: (layer, h) => {
      if (!z) z = computeZ();
      const block = (slot: number, kind: string) =>
        prefixSlice(e, z!, { offset: slot * W, width: W, batch: h.B, name: `prefix.${kind}.${layer}` }).reshape([h.B, nv, kvHeads, headDim]);
      return { k: block(2 * layer, 'k'), v: block(2 * layer + 1, 'v') };
    },
    positionShift: () => nv,
  });

  const disposeAll = () => {
    table.dispose();
    if (proj) for (const t of Object.values(proj)) t.dispose();
    proj = null;
  };

  return {
    memory() {
      // Z's projection once per forward (E W1ᵀ + b1, its tanh [n_v, H], Z [n_v, F]); per layer the
      // batch copies of its key and value blocks [B, n_v, D], which the model puts before its keys and values.
      const activations: ActivationTensor[] = [];
      if (proj) activations.push({ fixed: nv * H, count: 2 }, { fixed: nv * F });
      for (let layer = 0; layer < dims.layers; layer++) activations.push({ layer, perSequence: nv * W, count: 2 });
      return { kvPrefixTokens: nv, activations };
    },
    trainable(): TrainableParam[] {
      const out: TrainableParam[] = [{ name: NAMES.embedding, tensor: table }];
      if (proj) {
        out.push({ name: NAMES.w1, tensor: proj.w1 }, { name: NAMES.b1, tensor: proj.b1 });
        out.push({ name: NAMES.w2, tensor: proj.w2 }, { name: NAMES.b2, tensor: proj.b2 });
      }
      return out;
    },
    async exportAdapter(): Promise<AdapterFiles> {
      const tape = e.tape;
      e.tape = null;
      e.beginScope();
      let data: Float32Array;
      try {
        data = await e.read(computeZ());
      } finally {
        e.endScope();
        e.tape = tape;
      }
      const tensors = new Map<string, HostTensor>([['prompt_embeddings', { shape: [nv, F], data }]]);
      return { config: prefixAdapterConfig(config, dims, opts.projection), tensors };
    },
    importAdapter(files: AdapterFiles): void {
      const c = files.config;
      for (const [key, want] of [
        ['token_dim', D],
        ['num_layers', dims.layers],
        ['num_attention_heads', kvHeads],
        ['num_virtual_tokens', nv],
      ] as const) {
        if (c[key] !== undefined && c[key] !== null && Number(c[key]) !== want) {
          throw new ConfigError(
            `The adapter's ${key} is ${c[key]} but this model needs ${want} (prefix tuning with num_virtual_tokens ${nv} on n_kv·head_dim = ${D}, ${dims.layers} layers); was it trained on another model?`,
          );
        }
      }
      const src = files.tensors.get('prompt_embeddings');
      if (!src)
        throw new ConfigError(`The adapter has no tensor prompt_embeddings; a PREFIX_TUNING adapter stores its prefix matrix Z [${nv}, ${F}] under that key.`);
      if (src.shape.join() !== [nv, F].join()) {
        throw new ConfigError(
          `Adapter tensor prompt_embeddings has shape [${src.shape}], expected [${nv}, ${F}] (num_virtual_tokens × 2·layers·n_kv·head_dim).`,
        );
      }
      if (proj) {
        // As PEFT in inference mode: the exported Z becomes a plain table and the MLP is dropped.
        disposeAll();
        table = param(src.data, [nv, F], NAMES.embedding);
      } else {
        e.write(table, src.data);
      }
    },
    detach(): void {
      detachHooks();
      disposeAll();
    },
  };
}

/** adapter_config.json with the PEFT 0.17 key set (METHODS.md Part C, §13) plus peft_version. */
export function prefixAdapterConfig(config: Record<string, unknown>, d: PrefixDims, projection: boolean): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    encoder_hidden_size: d.H,
    inference_mode: true,
    modules_to_save: null,
    num_attention_heads: d.kvHeads,
    num_layers: d.layers,
    num_transformer_submodules: 1,
    num_virtual_tokens: d.nv,
    peft_type: 'PREFIX_TUNING',
    peft_version: '0.17.1',
    prefix_projection: projection,
    revision: null,
    task_type: 'CAUSAL_LM',
    token_dim: d.D,
  };
}

const prefixTuning: PeftMethod = {
  name: 'prefix-tuning',
  label: 'Prefix tuning',
  family: PROMPT_FAMILY,
  description: 'Trained key/value prefixes of n_v virtual tokens in every attention layer (optionally through a projection MLP).',
  order: 13,
  options: prefixTuningOptions,
  required: ['num_virtual_tokens'],
  flops: (ctx) => prefixFlops(ctx, 'prefix-tuning'),
  peftType: 'PREFIX_TUNING',
  // Every PREFIX_TUNING adapter (from prefix-tuning or p-tuning-v2 here, or
  // from Python) loads as a plain table: the export holds Z, never the MLP.
  configFromAdapter(c) {
    return {
      finetuning_type: 'prefix-tuning',
      num_virtual_tokens: c.num_virtual_tokens,
      prefix_projection: false,
      encoder_hidden_size: c.encoder_hidden_size ?? null,
    };
  },
  attach: (ctx) => attachPrefix(ctx, 'prefix-tuning'),
};

export default prefixTuning;
