/**
 * Full fine-tuning (finetuning_type: full, the baseline): every weight of the
 * model trains, with the trainer's torch AdamW (METHODS.md §22). The tied
 * embedding counts once (it is one tensor: the embedding and the output
 * projection add their gradients into it). Weight decay follows the HF rule:
 * none for norm weights and biases (`isDecayParam` on the HF name).
 *
 * Export: the model itself, in HF layout: `tensors` are the weights under
 * their HF names (model.safetensors); `config` describes the export (the
 * base model's config.json and tokenizer files travel unchanged, as with a
 * merged adapter). Import writes such tensors back into the model.
 * Merge: nothing to fold (the weights are trained in place); `merge` only
 * ends training.
 */
import type { Engine } from 'peft-studio/engine/engine';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import type { AdapterFiles, AttachedMethod, HostTensor, MethodContext, PeftMethod, TrainableParam } from 'peft-studio/methods/types';
import type { LlamaModel } from 'peft-studio/model/llama';

/** Where full fine-tuning and its optimizer-side variants are listed. */
export const FULL_FAMILY = 'Full and optimizer-side';

/**
 * The model's own tensors, HF names, the tied lm_head excluded (it is
 * embed_tokens), all as f32: base weights stored packed are unpacked, since
 * every one of them trains (or is overwritten by an import).
 */
export function modelWeights(model: LlamaModel): [string, Tensor][] {
  model.unpackWeights();
  return [...model.params].filter(([name]) => !(name === 'lm_head.weight' && model.config.tieWordEmbeddings));
}

/** What an exported full model is (the adapter_config.json slot of AdapterFiles). */
export function fullExportConfig(model: LlamaModel, config: Record<string, unknown>): Record<string, unknown> {
  return {
    export_format: 'hf_model',
    weights_file: 'model.safetensors',
    finetuning_type: 'full',
    base_model_name_or_path: config.model_name_or_path ?? null,
    torch_dtype: 'float32',
    tie_word_embeddings: model.config.tieWordEmbeddings,
    num_parameters: model.numParams(),
  };
}

/** Write HF-named tensors into the model's weights (every weight must be present, shapes must agree). */
export function importModelWeights(e: Engine, model: LlamaModel, files: AdapterFiles): void {
  const weights = modelWeights(model);
  const missing = weights.filter(([name]) => !files.tensors.has(name)).map(([name]) => name);
  if (missing.length) {
    throw new ConfigError(
      `The checkpoint lacks ${missing.length} weight(s) of this model, e.g. ${missing.slice(0, 3).join(', ')}; was it exported from the same architecture?`,
    );
  }
  for (const [name, t] of weights) {
    const src = files.tensors.get(name)!;
    if (src.shape.join() !== t.shape.join()) {
      throw new ConfigError(`Checkpoint tensor ${name} has shape [${src.shape}], the model expects [${t.shape}]: a different model size?`);
    }
    e.write(t, src.data);
  }
}

export function attachFull(ctx: MethodContext): AttachedMethod {
  const { e, model, config } = ctx;
  const weights = modelWeights(model);
  for (const [, t] of weights) t.requiresGrad = true;
  let attached = true;
  return {
    trainable(): TrainableParam[] {
      return weights.map(([name, tensor]) => ({ name, tensor }));
    },
    async exportAdapter(): Promise<AdapterFiles> {
      const tensors = new Map<string, HostTensor>();
      for (const [name, t] of weights) tensors.set(name, { shape: [...t.shape], data: await e.read(t) });
      return { config: fullExportConfig(model, config), tensors };
    },
    importAdapter(files: AdapterFiles): void {
      importModelWeights(e, model, files);
    },
    async merge(): Promise<void> {
      await e.sync();
      this.detach();
    },
    detach(): void {
      if (!attached) return;
      attached = false;
      for (const [, t] of weights) {
        t.requiresGrad = false;
        t.grad?.dispose();
        t.grad = null;
      }
    },
  };
}

export const full: PeftMethod = {
  name: 'full',
  label: 'Full fine-tuning',
  family: FULL_FAMILY,
  description: 'Every weight of the model trains with AdamW; the export is a whole model.',
  order: 10,
  options: [],
  // Weights are replaced, nothing is added to the forward.
  flops: () => ({ flops: 0 }),
  attach: attachFull,
};

export default full;
