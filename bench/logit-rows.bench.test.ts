/**
 * Prefill and teacher-forced scoring before and after reading only the logit
 * rows a consumer needs (src/model/logits.ts), on stories260K (V 512) and on a
 * random llama with a 32k vocabulary (C 256, 4 layers, F 688: the head is
 * most of the prefill). "whole" is the former path: forward() logits
 * [B, T, V], then the last rows copied out (generation) or all of them read
 * back and argmaxed on the host (token accuracy). Rounds are interleaved (in
 * alternating order) so that load on a shared machine hits both alike; round 0 compiles pipelines.
 * Peak is the buffer pool's peak above what was in use before the call;
 * median and best ms of the rounds (the best is the stabler figure on a loaded
 * machine).
 *
 *   npx vitest run -c bench/vitest.bench.config.ts bench/logit-rows
 *   (ROUNDS=8 for more rounds, ONLY=stories or ONLY=random for one model)
 */
import { test, expect } from 'vitest';
import path from 'node:path';
import { acquireDevice } from '../src/gpu/device';
import { nodeGpu } from '../src/gpu/node';
import { Engine } from '../src/engine/engine';
import { LocalFolderSource } from '../src/hub/node';
import { readConfig, readWeights, modelFromWeights } from '../src/model/load';
import type { LlamaModel } from '../src/model/llama';
import { lastPositionLogits } from '../src/model/logits';
import { teacherForcedTokenAccuracy } from '../src/eval/teacher-forced';
import { argmaxRows, computeTokenAccuracy } from '../src/eval/token-accuracy';
import type { EncodedExample } from '../src/data/sft';
import { testHubRoot } from '../tests/helpers/hub-server';
import { randomWeights, tinyConfig } from '../tests/helpers/models';

const T = 64,
  ROUNDS = Number(process.env.ROUNDS ?? 5),
  ONLY = process.env.ONLY;

/** The former generateBatch step: whole logits, the last row of each sequence copied out and read. */
async function prefillWhole(e: Engine, model: LlamaModel, ids: Int32Array, B: number): Promise<Float32Array> {
  const V = model.config.vocabSize;
  const cache = model.newCache(B, T + 1);
  e.beginScope();
  try {
    const logits = model.forward(ids, B, { cache });
    const rows = e.empty([B, V]);
    for (let b = 0; b < B; b++) e.copyRegion(rows, b * V, logits, (b * T + T - 1) * V, V);
    return await e.read(rows);
  } finally {
    e.endScope();
    cache.dispose();
  }
}

async function prefillRows(e: Engine, model: LlamaModel, ids: Int32Array, B: number): Promise<Float32Array> {
  const cache = model.newCache(B, T + 1);
  try {
    return await lastPositionLogits(model, ids, B, { cache });
  } finally {
    cache.dispose();
  }
}

/** The former teacher-forced pass: whole logits read back, argmax on the host. */
async function accuracyWhole(e: Engine, model: LlamaModel, examples: EncodedExample[]) {
  const B = examples.length,
    V = model.config.vocabSize;
  const ids = Int32Array.from(examples.flatMap((x) => x.inputIds));
  e.beginScope();
  const arg = argmaxRows(await e.read(model.forward(ids, B)), B * T, V);
  e.endScope();
  return computeTokenAccuracy(
    examples.map((_, b) => arg.subarray(b * T, (b + 1) * T)),
    examples.map((x) => x.labels),
  );
}

async function measure<R>(e: Engine, f: () => Promise<R>): Promise<{ ms: number; peak: number; out: R }> {
  await e.sync();
  const base = e.pool.inUse;
  e.pool.resetPeak();
  const t0 = performance.now();
  const out = await f();
  await e.sync();
  return { ms: performance.now() - t0, peak: e.pool.peak - base, out };
}

/** Both runs of a round, in alternating order so that neither always follows the other. */
async function pair<A, B>(r: number, a: () => Promise<A>, b: () => Promise<B>): Promise<[A, B]> {
  if (r % 2) {
    const y = await b();
    return [await a(), y];
  }
  const x = await a();
  return [x, await b()];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

test('prefill of a 64-token prompt and teacher-forced accuracy: whole logits vs the rows read', async () => {
  const e = new Engine(await acquireDevice(nodeGpu(), { timestamps: false }));
  const source = new LocalFolderSource(path.join(testHubRoot(), 'models/stories260K'));
  const storiesCfg = await readConfig(source);
  const bigCfg = tinyConfig({
    hidden_size: 256,
    intermediate_size: 688,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    vocab_size: 32000,
    max_position_embeddings: 256,
  });
  const models: [string, LlamaModel][] = [
    ['stories260K (V 512)', modelFromWeights(e, storiesCfg, await readWeights(source))],
    ['random llama (C 256, 4 layers, V 32000)', modelFromWeights(e, bigCfg, randomWeights(bigCfg, 3))],
  ];
  const results: Record<string, unknown> = {};
  for (const [name, model] of models) {
    if (ONLY && !name.startsWith(ONLY)) continue;
    const V = model.config.vocabSize;
    const cases: Record<string, { whole: number[]; rows: number[]; peakWhole: number; peakRows: number }> = {};
    for (const B of [1, 4]) {
      const ids = Int32Array.from({ length: B * T }, (_, i) => 1 + ((i * 7919 + 3) % (V - 1)));
      const c = (cases[`prefill B${B}`] = { whole: [] as number[], rows: [] as number[], peakWhole: 0, peakRows: 0 });
      for (let r = 0; r <= ROUNDS; r++) {
        const [w, s] = await pair(
          r,
          () => measure(e, () => prefillWhole(e, model, ids, B)),
          () => measure(e, () => prefillRows(e, model, ids, B)),
        );
        let d = 0;
        for (let i = 0; i < w.out.length; i++) d = Math.max(d, Math.abs(w.out[i] - s.out[i]));
        expect(d).toBeLessThan(1e-4);
        if (r === 0) continue;
        c.whole.push(w.ms);
        c.rows.push(s.ms);
        c.peakWhole = Math.max(c.peakWhole, w.peak);
        c.peakRows = Math.max(c.peakRows, s.peak);
      }
    }
    // 4 examples of 64 tokens, the last 32 labelled (an answer after a prompt).
    const examples: EncodedExample[] = Array.from({ length: 4 }, (_, b) => {
      const inputIds = Array.from({ length: T }, (_, t) => 1 + ((b * 131 + t * 7919) % (V - 1)));
      return { inputIds, labels: inputIds.map((id, t) => (t < T / 2 ? -100 : id)) };
    });
    const c = (cases['token accuracy 4x64'] = { whole: [] as number[], rows: [] as number[], peakWhole: 0, peakRows: 0 });
    for (let r = 0; r <= ROUNDS; r++) {
      const [w, s] = await pair(
        r,
        () => measure(e, () => accuracyWhole(e, model, examples)),
        () => measure(e, () => teacherForcedTokenAccuracy(model, examples, { batchSize: 4, padId: 0 })),
      );
      expect(s.out).toEqual(w.out);
      if (r === 0) continue;
      c.whole.push(w.ms);
      c.rows.push(s.ms);
      c.peakWhole = Math.max(c.peakWhole, w.peak);
      c.peakRows = Math.max(c.peakRows, s.peak);
    }
    results[name] = Object.fromEntries(
      Object.entries(cases).map(([k, v]) => [
        k,
        {
          whole_ms: +median(v.whole).toFixed(1),
          rows_ms: +median(v.rows).toFixed(1),
          whole_best_ms: +Math.min(...v.whole).toFixed(1),
          rows_best_ms: +Math.min(...v.rows).toFixed(1),
          whole_peak_bytes: v.peakWhole,
          rows_peak_bytes: v.peakRows,
        },
      ]),
    );
    model.dispose();
  }
  console.log(JSON.stringify(results, null, 2));
});
