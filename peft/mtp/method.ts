/**
 * Multitask prompt tuning (HF PEFT MULTITASK_PROMPT_TUNING, METHODS.md §16).
 * A shared prompt P* [n_v, d] (init as prompt tuning: RANDOM unless set),
 * and per task t factors cols[t] [n_v, k], rows[t] [k, d], both N(0, 0.02²).
 * Example b with task t_b is prefixed by
 *
 *   P_b = P* ⊙ (cols[t_b] · rows[t_b])      (element-wise with a rank-k matrix)
 *
 * computed as: CR = cols · rows (batched over tasks) [T_k, n_v·d];
 * M = S · CR with S [B, T_k] the one-hot task selection (so ∂CR[t] sums the
 * gradients of the examples of task t); P_b = broadcast(P*) ⊙ M. The
 * backward of these ops is exactly §16's: ∂P* = Σ_b G_b ⊙ CR[t_b],
 * ∂CR[t] = Σ_{b: t_b = t} G_b ⊙ P*, ∂cols = ∂CR rowsᵀ, ∂rows = colsᵀ ∂CR.
 *
 * Task ids come from HookContext.taskIds (the trainer's collate of
 * EncodedExample.taskId); a forward without them (generation, the CLI's
 * logits) uses task 0 for every sequence, where PEFT would raise. Ids outside
 * [0, num_tasks) are a ConfigError.
 *
 * Export: `prompt_embeddings` = P* (unmodulated), `prefix_task_cols`
 * [T_k, n_v, k], `prefix_task_rows` [T_k, k, d]. Not mergeable.
 */
import { matmul } from 'peft-studio/engine/ops/matmul';
import { mul } from 'peft-studio/engine/ops/mul';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { numVirtualTokens, readOptions } from 'peft-studio/methods/options';
import type { AdapterFiles, AttachedMethod, MethodContext, PeftMethod, TrainableParam } from 'peft-studio/methods/types';
import { promptOptions } from '../prompt-tuning/config';
import {
  adapterTensor,
  adapterVirtualTokens,
  broadcastBatch,
  initPromptTable,
  normal,
  prependPrompt,
  promptActivations,
  PROMPT_FAMILY,
  promptAdapterConfig,
  promptInitMode,
  promptTuningConfigKeys,
  requireVirtualTokens,
} from '../prompt-tuning/prompt';
import { mtpOptions } from './config';

/** Everything mtp reads, in form order. */
const options = [numVirtualTokens, ...mtpOptions, ...promptOptions] as const;

/** The task id of each of the B sequences (0 when the caller gave none), validated against num_tasks. */
export function taskIdsFor(taskIds: Int32Array | undefined, B: number, numTasks: number): Int32Array {
  if (!taskIds) return new Int32Array(B);
  if (taskIds.length !== B) throw new ConfigError(`mtp: ${taskIds.length} task ids for a batch of ${B} sequences; give one task id per example.`);
  for (let b = 0; b < B; b++) {
    const t = taskIds[b];
    if (!(t >= 0 && t < numTasks)) {
      throw new ConfigError(
        `mtp: example ${b} of the batch has task id ${t}, outside 0 … ${numTasks - 1} (num_tasks ${numTasks}); set num_tasks to at least ${t + 1} or fix the dataset's task ids.`,
      );
    }
  }
  return taskIds;
}

export const mtp: PeftMethod = {
  name: 'mtp',
  label: 'Multitask prompt tuning',
  family: PROMPT_FAMILY,
  description: 'A shared soft prompt modulated per task by a trained rank-k factor (cols · rows), prepended to the input.',
  order: 16,
  options,
  required: ['num_virtual_tokens'],
  /** The sequence grows by n_v; per example 2·n_v·k·d + n_v·d (the rank-k task factor and the Hadamard product). */
  flops(ctx) {
    const nV = requireVirtualTokens(ctx.config, 'mtp');
    const k = readOptions(options, ctx.config, 'mtp').num_ranks;
    return { flops: ctx.batch * (2 * nV * k * ctx.model.hiddenSize + nV * ctx.model.hiddenSize), virtualTokens: nV };
  },
  peftType: 'MULTITASK_PROMPT_TUNING',
  configFromAdapter(c) {
    const n = adapterVirtualTokens(c);
    if (n === null) return null;
    return {
      finetuning_type: 'mtp',
      num_virtual_tokens: n,
      num_tasks: Number(c.num_tasks ?? 1),
      num_ranks: Number(c.num_ranks ?? 1),
      prompt_tuning_init: 'RANDOM',
    };
  },
  attach(ctx: MethodContext): AttachedMethod {
    const { e, model, config } = ctx;
    const nV = requireVirtualTokens(config, 'mtp');
    const { num_tasks: Tk, num_ranks: k } = readOptions(options, config, 'mtp');
    const d = model.config.hiddenSize;
    const mode = promptInitMode(config, 'RANDOM');
    const P: Tensor = e.persist(e.empty([nV, d], 'prompt_embeddings'));
    initPromptTable(ctx, P, mode);
    const cols: Tensor = e.persist(e.upload(normal(Tk * nV * k, 0.02, ctx.random), [Tk, nV, k], 'prefix_task_cols'));
    const rows: Tensor = e.persist(e.upload(normal(Tk * k * d, 0.02, ctx.random), [Tk, k, d], 'prefix_task_rows'));
    for (const t of [P, cols, rows]) t.requiresGrad = true;

    const detachHooks = model.attach({
      virtualTokens: () => nV,
      inputEmbeds: (embeds, h) => {
        const B = h.B;
        const ids = taskIdsFor(h.taskIds, B, Tk);
        const sel = new Float32Array(B * Tk);
        for (let b = 0; b < B; b++) sel[b * Tk + ids[b]] = 1;
        const CR = matmul(e, cols, rows, { batch: Tk, name: 'mtp.task_prompts' }).reshape([Tk, nV * d]);
        const M = matmul(e, e.upload(sel, [B, Tk], 'mtp.task_select'), CR, { name: 'mtp.example_prompts' });
        const Pb = broadcastBatch(e, P, B).reshape([B, nV * d]);
        return prependPrompt(e, mul(e, Pb, M, 'mtp.prompts').reshape([B, nV, d]), embeds);
      },
    });

    const fix = 'set num_virtual_tokens, num_tasks and num_ranks as in its adapter_config.json, on the same base model.';
    return {
      // Per forward: CR [T_k, n_v·d], the selection [B, T_k], M and the modulated prompts [B, n_v·d], and the prompt's batch copy.
      memory: () => ({
        activations: [{ fixed: Tk * nV * d }, { perSequence: Tk, grad: false }, { perSequence: nV * d, count: 2 }, ...promptActivations(nV, d)],
      }),
      trainable(): TrainableParam[] {
        return [
          { name: 'prompt_embeddings', tensor: P },
          { name: 'prefix_task_cols', tensor: cols },
          { name: 'prefix_task_rows', tensor: rows },
        ];
      },
      async exportAdapter(): Promise<AdapterFiles> {
        const tensors = new Map([
          ['prompt_embeddings', { shape: [nV, d], data: await e.read(P) }],
          ['prefix_task_cols', { shape: [Tk, nV, k], data: await e.read(cols) }],
          ['prefix_task_rows', { shape: [Tk, k, d], data: await e.read(rows) }],
        ]);
        const extra = {
          ...promptTuningConfigKeys(config, mode),
          num_ranks: k,
          num_tasks: Tk,
          prompt_tuning_init_state_dict_path: null,
          prompt_tuning_init_task: 0,
        };
        return { config: promptAdapterConfig(model, config, 'MULTITASK_PROMPT_TUNING', nV, extra), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        e.write(P, adapterTensor(files, 'prompt_embeddings', [nV, d], 'mtp', fix));
        e.write(cols, adapterTensor(files, 'prefix_task_cols', [Tk, nV, k], 'mtp', fix));
        e.write(rows, adapterTensor(files, 'prefix_task_rows', [Tk, k, d], 'mtp', fix));
      },
      detach(): void {
        detachHooks();
        for (const t of [P, cols, rows]) t.dispose();
      },
    };
  },
};

export default mtp;
