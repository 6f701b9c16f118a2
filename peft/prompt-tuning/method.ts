/**
 * Prompt tuning (HF PEFT PROMPT_TUNING, METHODS.md §12). One trainable table
 * P [n_v, d]; every sequence becomes concat_seq(P, E[x]) (virtual tokens at
 * positions 0 … n_v − 1, real tokens after them), the base model is frozen,
 * and ∂L/∂P = Σ_b ∂L/∂inputs_embeds[b, :n_v].
 *
 * Init (prompt_tuning_init): RANDOM N(0, 1); TEXT E[ids of the text] cycled
 * or cut to n_v; SAMPLE_VOCAB E[n_v uniform ids]; vocab5000 E[n_v distinct
 * random ids < min(5000, V)], PEFT-Factory's overwrite of every
 * prompt-tuning run and our default when the key is unset (kept in fp32;
 * PEFT-Factory stores it as bf16). Unlike PEFT-Factory, a loaded adapter is
 * never re-initialised: importAdapter writes the trained P over the init.
 *
 * Export: `prompt_embeddings` [n_v, d]. Not mergeable.
 */
import type { Tensor } from 'peft-studio/engine/tensor';
import { numVirtualTokens } from 'peft-studio/methods/options';
import type { AdapterFiles, AttachedMethod, MethodContext, PeftMethod, TrainableParam } from 'peft-studio/methods/types';
import { promptOptions } from './config';
import {
  adapterTensor,
  adapterVirtualTokens,
  broadcastBatch,
  initPromptTable,
  prependPrompt,
  promptActivations,
  promptAdapterConfig,
  promptInitMode,
  PROMPT_FAMILY,
  promptTuningConfigKeys,
  requireVirtualTokens,
} from './prompt';

export const promptTuning: PeftMethod = {
  name: 'prompt-tuning',
  label: 'Prompt tuning',
  family: PROMPT_FAMILY,
  description: 'A trained table of n_v soft-prompt embeddings prepended to every input.',
  order: 12,
  options: [numVirtualTokens, ...promptOptions],
  required: ['num_virtual_tokens'],
  // The sequence grows by n_v (the base model runs on it); the table itself costs nothing.
  flops: (ctx) => ({ flops: 0, virtualTokens: requireVirtualTokens(ctx.config, 'prompt-tuning') }),
  peftType: 'PROMPT_TUNING',
  configFromAdapter(c) {
    const n = adapterVirtualTokens(c);
    if (n === null) return null;
    // The table is overwritten by the import: RANDOM avoids needing the init text's tokenizer.
    return { finetuning_type: 'prompt-tuning', num_virtual_tokens: n, prompt_tuning_init: 'RANDOM' };
  },
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    const nV = requireVirtualTokens(config, 'prompt-tuning');
    const d = model.config.hiddenSize;
    const mode = promptInitMode(config, 'vocab5000');
    const P: Tensor = e.persist(e.empty([nV, d], 'prompt_embeddings'));
    initPromptTable(ctx, P, mode);
    P.requiresGrad = true;

    const detachHooks = model.attach({
      virtualTokens: () => nV,
      inputEmbeds: (embeds, h) => prependPrompt(e, broadcastBatch(e, P, h.B), embeds),
    });

    return {
      memory: () => ({ activations: promptActivations(nV, d) }),
      trainable(): TrainableParam[] {
        return [{ name: 'prompt_embeddings', tensor: P }];
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map([['prompt_embeddings', { shape: [nV, d], data: await e.read(P) }]]);
        return { config: promptAdapterConfig(model, config, 'PROMPT_TUNING', nV, promptTuningConfigKeys(config, mode)), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        e.write(
          P,
          adapterTensor(files, 'prompt_embeddings', [nV, d], 'prompt-tuning', 'set num_virtual_tokens as in its adapter_config.json, on the same base model.'),
        );
      },
      detach(): void {
        detachHooks();
        P.dispose();
      },
    };
  },
};

export default promptTuning;
