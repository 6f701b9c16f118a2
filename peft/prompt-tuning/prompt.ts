/**
 * What the soft-prompt methods share (METHODS.md Part C, §12, §15, §16):
 * the required num_virtual_tokens, the initial prompt table, the broadcast of
 * a [n_v, d] prompt over the batch, the HF PEFT adapter_config.json keys, and
 * reading an exported tensor back.
 *
 * Insertion: the model's inputEmbeds hook gets E[x] [B, T, d] and returns
 * concat_seq(P_b, E[x]) [B, n_v + T, d]; the model gives the virtual tokens
 * positions 0 … n_v − 1 and mask 1 and drops them before the head, so logits
 * and labels are those of the real tokens (PEFT pads the labels with −100
 * over the virtual positions: the same loss).
 */
import type { Engine } from 'peft-studio/engine/engine';
import { concatSeq } from 'peft-studio/engine/ops/concat';
import { embedding } from 'peft-studio/engine/ops/embedding';
import { matmul } from 'peft-studio/engine/ops/matmul';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { numVirtualTokens, readOptions, requireOption } from 'peft-studio/methods/options';
import { gaussian, normal, type ActivationTensor, type AdapterFiles, type MethodContext } from 'peft-studio/methods/types';

// The other prompt methods import the samplers from here.
export { gaussian, normal };
import type { LlamaModel } from 'peft-studio/model/llama';
import { promptTuningInits, type PromptTuningInit } from './config';

/** Where the soft-prompt methods are listed. */
export const PROMPT_FAMILY = 'Prompt learning';

/** num_virtual_tokens, which every prompt method needs (the schema cannot require it: other methods do not). */
export function requireVirtualTokens(config: Record<string, unknown>, method: string): number {
  return requireOption(readOptions([numVirtualTokens], config, method).num_virtual_tokens, numVirtualTokens, method);
}

/** The init mode: the config's prompt_tuning_init, or the method's default when unset. */
export function promptInitMode(config: Record<string, unknown>, fallback: PromptTuningInit): PromptTuningInit {
  const v = config.prompt_tuning_init;
  if (v === null || v === undefined) return fallback;
  // PEFT's enum is matched case-insensitively (TEXT, text).
  const s = String(v);
  const mode = promptTuningInits.find((m) => m === s || m.toUpperCase() === s.toUpperCase());
  if (!mode) throw new ConfigError(`prompt_tuning_init ${JSON.stringify(v)} is not an initialisation; use one of ${promptTuningInits.join(', ')}.`);
  return mode;
}

/** TEXT init: the token ids repeated cyclically, or cut, to n_v (PEFT). */
export function textInitIds(ids: readonly number[], nV: number): number[] {
  if (ids.length === 0) throw new ConfigError('prompt_tuning_init_text tokenizes to no tokens; give a non-empty text.');
  return Array.from({ length: nV }, (_, i) => ids[i % ids.length]);
}

/**
 * Vocabulary ids whose embedding rows initialise the prompt, or null for
 * RANDOM. TEXT: the tokenized text (with special tokens: BOS first), cycled
 * or cut; SAMPLE_VOCAB: n_v uniform ids in [0, V) (with replacement, as
 * torch.randint); vocab5000: the first n_v of a random permutation of
 * 0 … min(5000, V) − 1 (PEFT-Factory).
 */
export function promptInitIds(ctx: MethodContext, nV: number, mode: PromptTuningInit): number[] | null {
  const V = ctx.model.config.vocabSize;
  switch (mode) {
    case 'RANDOM':
      return null;
    case 'TEXT': {
      const text = ctx.config.prompt_tuning_init_text;
      if (typeof text !== 'string' || text === '') {
        throw new ConfigError(
          'prompt_tuning_init is TEXT but prompt_tuning_init_text is not set; give the text whose token embeddings start the prompt, or use prompt_tuning_init: RANDOM.',
        );
      }
      if (!ctx.tokenizer) {
        throw new ConfigError(
          'prompt_tuning_init TEXT needs the model tokenizer, and none was given to the method here (a model folder without tokenizer.json?); use RANDOM or vocab5000.',
        );
      }
      return textInitIds(ctx.tokenizer.encode(text), nV);
    }
    case 'SAMPLE_VOCAB':
      return Array.from({ length: nV }, () => Math.min(V - 1, Math.floor(ctx.random() * V)));
    case 'vocab5000': {
      const M = Math.min(5000, V);
      if (nV > M)
        throw new ConfigError(
          `prompt_tuning_init vocab5000 draws ${nV} distinct ids below ${M} (min(5000, vocab size)), which is impossible; lower num_virtual_tokens or use RANDOM.`,
        );
      // Partial Fisher–Yates: the first n_v entries of a uniform permutation.
      const perm = Int32Array.from({ length: M }, (_, i) => i);
      for (let i = 0; i < nV; i++) {
        const j = i + Math.floor(ctx.random() * (M - i));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      return Array.from(perm.subarray(0, nV));
    }
  }
}

/** Fill `table` [n_v, d] with the initial prompt: N(0, 1) for RANDOM, else rows of the word embeddings (gathered on the GPU). */
export function initPromptTable(ctx: MethodContext, table: Tensor, mode: PromptTuningInit): void {
  const { e, model } = ctx;
  const [nV, d] = table.shape;
  const ids = promptInitIds(ctx, nV, mode);
  if (!ids) {
    e.write(table, normal(nV * d, 1, ctx.random));
    return;
  }
  const host = Int32Array.from(ids);
  const tape = e.tape;
  e.tape = null;
  e.beginScope();
  const rows = embedding(e, e.upload(host, [nV], 'prompt.init_ids'), model.stored('model.embed_tokens.weight'), host, 'prompt.init_rows');
  e.copy(table, rows);
  e.endScope();
  e.tape = tape;
}

/**
 * [n, d] → [B, n, d], the same rows for every sequence. As a matmul with a
 * column of ones, ones[B, 1] · P[1, n·d], so the backward sums the batch's
 * gradients into P (∂L/∂P = Σ_b ∂L/∂P_b).
 */
export function broadcastBatch(e: Engine, P: Tensor, B: number): Tensor {
  const [n, d] = P.shape;
  if (B === 1) return P.reshape([1, n, d]);
  const ones = e.upload(new Float32Array(B).fill(1), [B, 1], 'prompt.ones');
  return matmul(e, ones, P.reshape([1, n * d]), { name: 'prompt.batch' }).reshape([B, n, d]);
}

/**
 * What broadcastBatch and prependPrompt keep per forward (the memory estimate
 * counts the [B, n_v + T, C] result itself): the batch copy of the prompt
 * [B, n_v, d] and its gradient, the column of ones, and the concatenation's
 * backward copy of the prompt rows' gradient.
 */
export function promptActivations(nV: number, d: number): ActivationTensor[] {
  return [{ perSequence: nV * d }, { perSequence: 1, grad: false }, { perSequence: nV * d, grad: false }];
}

/** The inputEmbeds result: concat_seq(prompts [B, n_v, C], embeds [B, T, C]). */
export function prependPrompt(e: Engine, prompts: Tensor, embeds: Tensor): { embeds: Tensor; virtualTokens: number } {
  const [B, T, C] = embeds.shape;
  const nV = prompts.shape[1];
  if (prompts.shape[0] !== B || prompts.shape[2] !== C) throw new Error(`prompt [${prompts.shape}] does not fit embeddings [${embeds.shape}]`);
  return { embeds: concatSeq(e, prompts, embeds, B, nV, T, C), virtualTokens: nV };
}

/**
 * adapter_config.json keys every prompt-learning method writes (PEFT 0.17 key
 * set, METHODS.md Part C): token_dim = d, num_attention_heads = n_h,
 * num_layers = N, one transformer sub-module (causal LM); plus `extra`.
 */
export function promptAdapterConfig(
  model: LlamaModel,
  config: Record<string, unknown>,
  peftType: string,
  nV: number,
  extra: Record<string, unknown>,
): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    inference_mode: true,
    modules_to_save: null,
    num_attention_heads: model.config.numHeads,
    num_layers: model.config.numLayers,
    num_transformer_submodules: 1,
    num_virtual_tokens: nV,
    peft_type: peftType,
    peft_version: '0.17.1',
    revision: null,
    task_type: 'CAUSAL_LM',
    token_dim: model.config.hiddenSize,
    ...extra,
  };
}

/**
 * The PEFT spelling of an init mode: vocab5000 is PEFT-Factory's overwrite of
 * a RANDOM init (its adapter_config.json says RANDOM), and PEFT knows no
 * other value.
 */
export function peftInitName(mode: PromptTuningInit): string {
  return mode === 'vocab5000' ? 'RANDOM' : mode;
}

/** The prompt-tuning keys of adapter_config.json (shared by MTP). */
export function promptTuningConfigKeys(config: Record<string, unknown>, mode: PromptTuningInit): Record<string, unknown> {
  const text = mode === 'TEXT';
  return {
    prompt_tuning_init: peftInitName(mode),
    prompt_tuning_init_text: text ? (config.prompt_tuning_init_text ?? null) : null,
    // PEFT refuses TEXT without a tokenizer to load (it loads none in inference mode).
    tokenizer_name_or_path: text ? (config.model_name_or_path ?? null) : null,
    tokenizer_kwargs: null,
  };
}

/** An exported tensor, checked for presence and shape. */
export function adapterTensor(files: AdapterFiles, key: string, shape: number[], method: string, fix: string): Float32Array {
  const t = files.tensors.get(key);
  if (!t)
    throw new ConfigError(
      `The ${method} adapter has no tensor '${key}' (it has ${[...files.tensors.keys()].join(', ') || 'none'}); is it an adapter of this method?`,
    );
  if (t.shape.join() !== shape.join()) throw new ConfigError(`Adapter tensor '${key}' has shape [${t.shape}], expected [${shape}]; ${fix}`);
  return t.data;
}

/** The adapter's num_virtual_tokens (configFromAdapter). */
export function adapterVirtualTokens(c: Record<string, unknown>): number | null {
  const n = Number(c.num_virtual_tokens);
  return Number.isInteger(n) && n >= 1 ? n : null;
}
