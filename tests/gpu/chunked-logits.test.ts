/**
 * Generation and teacher-forced scoring read only the logit rows they need and
 * run the head on row chunks of one binding (src/model/logits.ts). Under a
 * forced binding of 2 logit rows (stories260K: 2 × 512 × 4 B = 4 KiB), with no
 * method, prefix tuning (key/value prefixes, shifted positions) and MTP
 * (virtual tokens the model drops before the head, per-sequence task ids):
 * the same last-row logits as forward() within 1e-5, the same greedy tokens
 * from generate and from generateBatch of left-padded prompts, and the same
 * token accuracy as the argmax of forward()'s whole logits.
 */
import { describe, it, expect, beforeAll, vi } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { maxAbsDiff } from '../helpers/check-op';
import { loadStories } from '../helpers/models';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import type { AttachedMethod } from '../../src/methods/types';
import { generate, generateBatch, seededRandom } from '../../src/model/generate';
import { lastPositionLogits, logitRowsPerBinding } from '../../src/model/logits';
import { teacherForcedTokenAccuracy } from '../../src/eval/teacher-forced';
import { argmaxRows, computeTokenAccuracy, IGNORE_INDEX } from '../../src/eval/token-accuracy';
import type { EncodedExample } from '../../src/data/sft';
import prefixTuning from '../../peft/prefix-tuning/method';
import mtp from '../../peft/mtp/method';

let e: Engine;
let model: LlamaModel;
beforeAll(async () => {
  e = await gpuEngine();
  model = await loadStories(e);
});

const PROMPTS = [
  [1, 403, 407, 261, 378, 432, 383],
  [1, 338, 401],
  [1, 290, 311, 400, 277],
];
const TASKS = Int32Array.from([1, 0, 1]);
const NEW = 4;
const ROWS = 2;

/** Left-padded ids and mask [B, L], as generateBatch lays them out. */
function leftPadded(prompts: number[][]) {
  const B = prompts.length,
    L = Math.max(...prompts.map((p) => p.length));
  const ids = new Int32Array(B * L),
    mask = new Int32Array(B * L);
  prompts.forEach((p, b) => {
    ids.set(p, b * L + L - p.length);
    mask.fill(1, b * L + L - p.length, (b + 1) * L);
  });
  return { ids, mask, B, L };
}

const methods: [string, () => AttachedMethod | null][] = [
  ['no method', () => null],
  ['prefix tuning', () => prefixTuning.attach({ e, model, config: { num_virtual_tokens: 3 }, random: seededRandom(2) })],
  [
    'mtp (virtual tokens, task ids)',
    () => {
      const m = mtp.attach({ e, model, config: { num_virtual_tokens: 3, num_tasks: 2, num_ranks: 2 }, random: seededRandom(4) });
      // O(1) task factors (the init makes the prompt ≈ 0), so the task ids change the logits.
      for (const p of m.trainable())
        if (p.name !== 'prompt_embeddings')
          e.write(
            p.tensor,
            Float32Array.from({ length: p.tensor.size }, (_, i) => Math.sin(1.3 * i) + 0.3),
          );
      return m;
    },
  ],
];

/** Run `f` under a binding of ROWS logit rows; return its result and the bytes of every logits tensor the head wrote. */
async function underTinyBinding<T>(f: () => Promise<T>): Promise<{ out: T; logitBytes: number[] }> {
  const limit = e.maxBindingBytes;
  const spy = vi.spyOn(e, 'dispatch');
  e.maxBindingBytes = ROWS * model.config.vocabSize * 4;
  try {
    expect(logitRowsPerBinding(e, model.config.vocabSize)).toBe(ROWS);
    const out = await f();
    const logitBytes = spy.mock.calls.flatMap((c) => c[3].filter((b) => b.write && b.tensor.name === 'logits').map((b) => b.tensor.byteSize));
    return { out, logitBytes };
  } finally {
    e.maxBindingBytes = limit;
    spy.mockRestore();
  }
}

describe('logits beyond one binding: generation and token accuracy', () => {
  for (const [label, attach] of methods) {
    it(`${label}: the last-row logits, generate and generateBatch (left padding) are the same under a 2-row binding`, async () => {
      const m = attach();
      const V = model.config.vocabSize;
      const { ids, mask, B, L } = leftPadded(PROMPTS);
      const taskIds = m ? TASKS : undefined;
      e.beginScope();
      const whole = await e.read(model.forward(ids, B, { attentionMask: mask, taskIds }));
      e.endScope();
      const want = new Float32Array(B * V);
      for (let b = 0; b < B; b++) want.set(whole.subarray((b * L + L - 1) * V, (b * L + L) * V), b * V);
      const batched = await generateBatch(model, PROMPTS, { maxNewTokens: NEW, padId: 0, taskIds });
      const alone = await generate(model, PROMPTS[0], { maxNewTokens: NEW });

      const split = await underTinyBinding(async () => ({
        last: await lastPositionLogits(model, ids, B, { attentionMask: mask, taskIds }),
        batched: await generateBatch(model, PROMPTS, { maxNewTokens: NEW, padId: 0, taskIds }),
        alone: await generate(model, PROMPTS[0], { maxNewTokens: NEW }),
      }));
      expect(maxAbsDiff(split.out.last, want)).toBeLessThan(1e-5);
      expect(split.out.batched).toEqual(batched);
      expect(split.out.alone).toEqual(alone);
      expect(batched.every((t) => t.length === NEW)).toBe(true);
      // Every head call bound at most 2 rows; the batch of 3 took 2 chunks per step.
      expect(Math.max(...split.logitBytes)).toBe(ROWS * V * 4);
      expect(split.logitBytes.filter((n) => n === V * 4).length).toBeGreaterThanOrEqual(NEW);
      m?.detach();
    });
  }

  it('teacher-forced token accuracy (right padding, prompts masked, MTP task ids) equals the argmax of the whole logits', async () => {
    const m = methods[2][1]()!;
    const V = model.config.vocabSize;
    const inputs = [
      [1, 403, 407, 261, 378, 432, 383, 290],
      [1, 338, 401, 311, 277],
      [1, 290, 311, 400, 277, 261, 9],
      [1, 45, 300],
    ];
    // Labels: the prompt (first 2 tokens) masked, then the whole-logits argmax at every other scored position and
    // another token elsewhere, so the accuracy is about 1/2 and any misplaced row changes it.
    const examples: EncodedExample[] = [];
    const refPreds: Int32Array[] = [];
    for (const [k, x] of inputs.entries()) {
      e.beginScope();
      const arg = argmaxRows(await e.read(model.forward(Int32Array.from(x), 1, { taskIds: Int32Array.of(k % 2) })), x.length, V);
      e.endScope();
      refPreds.push(arg);
      const labels = x.map((_, t) => (t < 2 ? IGNORE_INDEX : t % 2 ? arg[t - 1] : (arg[t - 1] + 1) % V));
      examples.push({ inputIds: x, labels, taskId: k % 2 });
    }
    const want = computeTokenAccuracy(
      refPreds,
      examples.map((x) => x.labels),
    );
    expect(want.token_accuracy).toBeGreaterThan(0.3);
    expect(want.token_accuracy).toBeLessThan(0.7);
    const opts = { batchSize: 3, padId: 0 };
    expect(await teacherForcedTokenAccuracy(model, examples, opts)).toEqual(want);
    const split = await underTinyBinding(() => teacherForcedTokenAccuracy(model, examples, opts));
    expect(split.out).toEqual(want);
    // 14 + 1 scored rows in two batches: 7 chunks of 2 rows, then the single row.
    expect(split.logitBytes.length).toBe(7 + 1);
    expect(Math.max(...split.logitBytes)).toBe(ROWS * V * 4);
    m.detach();
  });
});
