/**
 * Every method with dropout draws its masks from (seed, micro-batch, call
 * site), never from a counter held by the attached method: a freshly attached
 * method (a resumed run) gives the training forward of micro-batch 2 exactly
 * the output a method that already ran micro-batches 0-1 gives it. Without
 * that, a run resumed with dropout > 0 follows another loss curve.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { loadStories } from '../helpers/models';
import { Tape } from '../../src/engine/tape';
import { streamSeed } from '../../src/engine/ops/dropout';
import { resolveMethod } from '../../src/methods/registry';
import { seededRandom } from '../../src/model/generate';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import type { AttachedMethod } from '../../src/methods/types';

// Each with its dropout option on (method keys are test data here, not src/).
const configs: Record<string, unknown>[] = [
  { finetuning_type: 'lora', lora_rank: 4, lora_dropout: 0.3 },
  { finetuning_type: 'lora', use_dora: true, lora_rank: 4, lora_dropout: 0.3 },
  { finetuning_type: 'vera', vera_rank: 8, vera_dropout: 0.3 },
  {
    finetuning_type: 'p-tuning',
    num_virtual_tokens: 3,
    encoder_reparameterization_type: 'LSTM',
    encoder_hidden_size: 8,
    encoder_num_layers: 2,
    encoder_dropout: 0.3,
  },
  // The bottleneck adapters (sequential, parallel) share one module body and its dropout.
  { finetuning_type: 'seq-bn-adapter', dropout: 0.3 },
];

describe('dropout masks are a function of (seed, micro-batch, call site)', () => {
  let e: Engine;
  let model: LlamaModel;
  beforeAll(async () => {
    e = await gpuEngine();
    model = await loadStories(e);
  });

  const ids = Int32Array.from({ length: 2 * 8 }, (_, i) => (i * 37 + 5) % 512);

  /** Attach, then move every trainable off its (often zero) initial value so dropout shows in the output. */
  const attach = (config: Record<string, unknown>): AttachedMethod => {
    const full = { seed: 42, model_name_or_path: 'stories260K', ...config };
    const m = resolveMethod(full).attach({ e, model, config: full, random: seededRandom(1) });
    const r = seededRandom(9);
    for (const p of m.trainable())
      e.write(
        p.tensor,
        Float32Array.from({ length: p.tensor.size }, () => (r() - 0.5) * 0.2),
      );
    return m;
  };

  /** Logits of one forward; a training forward (a tape at `microBatch`) when given one. */
  const forward = async (microBatch: number | null): Promise<Float32Array> => {
    e.beginScope();
    if (microBatch !== null) e.tape = new Tape({ seed: 42, microBatch });
    const out = await e.read(model.forward(ids, 2));
    e.tape = null;
    e.endScope();
    return out;
  };

  it('a fresh attachment repeats the masks of a long-running one; masks differ between micro-batches and from eval', async () => {
    for (const config of configs) {
      const a = attach(config);
      await a.ready;
      const fresh = await forward(2);
      const next = await forward(3);
      const evalOut = await forward(null);
      a.detach();
      const b = attach(config);
      await b.ready;
      for (let mb = 0; mb < 2; mb++) await forward(mb);
      const resumed = await forward(2);
      b.detach();
      const what = String(config.finetuning_type) + (config.use_dora ? ' (DoRA)' : '');
      expect(Buffer.from(resumed.buffer).equals(Buffer.from(fresh.buffer)), `${what}: same micro-batch, same output`).toBe(true);
      expect(Buffer.from(next.buffer).equals(Buffer.from(fresh.buffer)), `${what}: another micro-batch draws other masks`).toBe(false);
      expect(Buffer.from(evalOut.buffer).equals(Buffer.from(fresh.buffer)), `${what}: dropout acts in training`).toBe(false);
    }
  });

  it('the stream seed separates run seed, micro-batch, call site and occurrence', () => {
    const seeds = new Set<number>();
    for (const s of [0, 42])
      for (const mb of [0, 1, 2]) for (const site of ['a.lora_dropout', 'b.lora_dropout']) for (const k of [0, 1]) seeds.add(streamSeed(s, mb, site, k));
    expect(seeds.size).toBe(2 * 3 * 2 * 2);
    expect(streamSeed(42, 7, 'x', 0)).toBe(streamSeed(42, 7, 'x', 0));
    const t = new Tape({ seed: 1, microBatch: 2 });
    expect([t.nextDraw('s'), t.nextDraw('s'), t.nextDraw('u')]).toEqual([0, 1, 0]);
  });
});
