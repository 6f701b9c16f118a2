/**
 * stories260K LoRA training step (r 8 on q_proj, v_proj; batch 8 x 64, the
 * CLI bench's reference workload) with the base held as f32 and as packed
 * BF16, steps interleaved so that load on a shared machine hits both alike.
 * Prints the median and the best ms per step and tokens/s of each (on a
 * loaded machine the best of many rounds is the stabler figure).
 *
 *   npx vitest run -c bench/vitest.bench.config.ts bench/packed-step
 */
import { test } from 'vitest';
import path from 'node:path';
import { acquireDevice } from '../src/gpu/device';
import { nodeGpu } from '../src/gpu/node';
import { Engine } from '../src/engine/engine';
import { LocalFolderSource } from '../src/hub/node';
import { readConfig, readWeights, modelFromWeights } from '../src/model/load';
import { resolveMethod } from '../src/methods/registry';
import { seededRandom } from '../src/model/generate';
import { Trainer } from '../src/train/trainer';
import { benchTrainOptions } from '../src/cli/bench';
import { MemoryRunStore } from '../src/train/store';
import { testHubRoot } from '../tests/helpers/hub-server';

test('stories260K LoRA step: f32 base vs packed BF16 base', async () => {
  const e = new Engine(await acquireDevice(nodeGpu(), { timestamps: false }));
  const source = new LocalFolderSource(path.join(testHubRoot(), 'models/stories260K'));
  const cfg = await readConfig(source),
    host = await readWeights(source);
  const B = 8,
    T = 64,
    ROUNDS = Number(process.env.ROUNDS ?? 8);
  const ids = Array.from({ length: B * T }, (_, i) => (i * 7919 + 3) % cfg.vocabSize);
  const examples = Array.from({ length: B }, (_, b) => ({ inputIds: ids.slice(b * T, (b + 1) * T), labels: ids.slice(b * T, (b + 1) * T) }));
  const config = { finetuning_type: 'lora', lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'], seed: 1 };
  const setups = (['float32', 'bfloat16'] as const).map((baseDtype) => {
    const model = modelFromWeights(e, cfg, host, { baseDtype });
    const method = resolveMethod(config).attach({ e, model, config, random: seededRandom(1) });
    return { baseDtype, model, method, ms: [] as number[], peak: 0 };
  });
  for (const s of setups) await s.method.ready;
  for (let r = 0; r <= ROUNDS; r++) {
    for (const s of setups) {
      const trainer = new Trainer(e, s.model, s.method, examples, [], benchTrainOptions(B, 1), new MemoryRunStore());
      e.pool.resetPeak();
      const t0 = performance.now();
      await trainer.run({});
      await e.sync();
      if (r > 0) s.ms.push(performance.now() - t0); // round 0 compiles the pipelines
      s.peak = Math.max(s.peak, e.pool.peak);
      trainer.dispose();
    }
  }
  const out: Record<string, unknown> = {};
  for (const s of setups) {
    const med = [...s.ms].sort((a, b) => a - b)[s.ms.length >> 1];
    const best = Math.min(...s.ms);
    out[s.baseDtype] = {
      ms_per_step: +med.toFixed(1),
      tokens_per_s: +((B * T * 1000) / med).toFixed(1),
      best_ms: Math.round(best),
      best_tokens_per_s: +((B * T * 1000) / best).toFixed(1),
      peak_gpu_bytes: s.peak,
      base_weight_bytes: s.model.weightBytes(),
      all_ms: s.ms.map((x) => Math.round(x)),
    };
  }
  console.log(JSON.stringify(out, null, 1));
});
