/**
 * Trainable parameters of a config's method on a loaded model: attach with
 * `countOnly` (methods skip work that would change the base, e.g. QLoRA's
 * quantization), sum the trainable tensors, detach. The studio's Method
 * screen and `peft-studio methods --counts` both count this way, so their
 * numbers are the same for the same config. The same attach gives what the
 * memory estimate (src/ui/memory.ts) needs to know about the method.
 */
import type { ExperimentConfig } from '../config/schema';
import { ConfigError } from '../errors';
import { seededRandom } from '../model/generate';
import type { LlamaModel } from '../model/llama';
import type { AttachedMethod, MethodMemory } from './types';
import { methodNameFor, resolveMethod } from './registry';

export interface TrainableCountResult {
  trainable: number;
  total: number;
  method: string;
  /** GPU bytes attaching the method added to the pool (its tensors), corrected for the work countOnly skipped (MethodMemory.residentChange). */
  methodBytes: number;
  /** Trainable parameters the trainer's AdamW updates (the rest update themselves). */
  adamw: number;
  /** Virtual tokens the method prepends to every sequence. */
  virtualTokens: number;
  /** What its forward keeps for the backward (AttachedMethod.memory). */
  memory: MethodMemory;
}

/** The memory estimate's inputs that come from an attached method (see MemoryInputs in src/ui/memory.ts). */
export function methodMemoryInputs(model: LlamaModel, attached: AttachedMethod) {
  const params = attached.trainable();
  return {
    trainable: params.reduce((a, p) => a + p.tensor.size, 0),
    adamw: params.reduce((a, p) => a + (p.update ? 0 : p.tensor.size), 0),
    virtualTokens: model.virtualTokens(),
    memory: attached.memory?.() ?? {},
  };
}

export async function countTrainable(
  model: LlamaModel,
  config: ExperimentConfig,
  tokenizer?: { encode(text: string): number[] },
): Promise<TrainableCountResult> {
  const name = methodNameFor(config);
  model.e.flush();
  const before = model.e.pool.inUse;
  const attached = resolveMethod(config).attach({ e: model.e, model, config, random: seededRandom(Number(config.seed)), tokenizer, countOnly: true });
  try {
    await attached.ready;
    const { trainable, adamw, virtualTokens, memory } = methodMemoryInputs(model, attached);
    model.e.flush();
    const methodBytes = model.e.pool.inUse - before + (memory.residentChange ?? 0);
    return { trainable, total: model.numParams(), method: name, methodBytes, adamw, virtualTokens, memory };
  } finally {
    attached.detach();
    model.e.flush();
    // The next count must see the same base: a method that released base weights even when only counting is a bug in that method.
    if (model.releasedShapes.size > 0) {
      throw new ConfigError(
        `${name} released base weights while only counting its trainable parameters (countOnly); reload the model. The method should skip that work when ctx.countOnly is set.`,
      );
    }
  }
}
