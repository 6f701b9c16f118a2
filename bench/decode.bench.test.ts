/**
 * Decoding tokens/s (greedy generate() with a KV cache: every step after the
 * prompt is a matmul with M = 1) with the gemv kernel for the few-row x Wᵀ
 * calls against the kernels before it (the first other variant matmulVariants
 * lists: v4 on these shapes), on stories260K (V 512) and a random llama with a
 * 32k vocabulary (C 256, 4 layers, F 688: the head is most of a step). Rounds
 * alternate the order; round 0 compiles pipelines. Both runs must produce the
 * same tokens. tokens/s = new tokens / wall time of generate() (prompt of 8
 * tokens included).
 *
 *   npx vitest run -c bench/vitest.bench.config.ts bench/decode
 *   (ROUNDS=5 for more rounds, TOKENS=64 for longer runs)
 */
import { test, expect } from 'vitest';
import path from 'node:path';
import { acquireDevice } from '../src/gpu/device';
import { nodeGpu } from '../src/gpu/node';
import { Engine, type MatmulChooser } from '../src/engine/engine';
import { LocalFolderSource } from '../src/hub/node';
import { readConfig, readWeights, modelFromWeights } from '../src/model/load';
import type { LlamaModel } from '../src/model/llama';
import { generate } from '../src/model/generate';
import { testHubRoot } from '../tests/helpers/hub-server';
import { randomWeights, tinyConfig } from '../tests/helpers/models';

const ROUNDS = Number(process.env.ROUNDS ?? 3),
  TOKENS = Number(process.env.TOKENS ?? 32);

const withGemv: MatmulChooser = { choose: (_M, _N, _K, _o, variants) => (variants.includes('gemv') ? 'gemv' : undefined) };
const withoutGemv: MatmulChooser = { choose: (_M, _N, _K, _o, variants) => variants.find((v) => v !== 'gemv') };

test('greedy decoding tokens/s: gemv vs the tiled kernels', async () => {
  const e = new Engine(await acquireDevice(nodeGpu(), { timestamps: false }));
  const source = new LocalFolderSource(path.join(testHubRoot(), 'models/stories260K'));
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
    ['stories260K (V 512)', modelFromWeights(e, await readConfig(source), await readWeights(source))],
    ['random llama (C 256, 4 layers, V 32000)', modelFromWeights(e, bigCfg, randomWeights(bigCfg, 3))],
  ];
  const results: Record<string, Record<string, number>> = {};
  for (const [name, model] of models) {
    const prompt = [1, 403, 407, 261, 378, 432, 383, 286];
    const t: Record<string, number[]> = { tiled: [], gemv: [] };
    let ref: number[] | null = null;
    for (let r = 0; r <= ROUNDS; r++) {
      for (const which of r % 2 ? (['gemv', 'tiled'] as const) : (['tiled', 'gemv'] as const)) {
        e.matmulTuner = which === 'gemv' ? withGemv : withoutGemv;
        await e.sync();
        const t0 = performance.now();
        const ids = await generate(model, prompt, { maxNewTokens: TOKENS, temperature: 0 });
        await e.sync();
        const ms = performance.now() - t0;
        e.matmulTuner = null;
        if (ref) expect(ids).toEqual(ref);
        else ref = ids;
        if (r > 0) t[which].push((TOKENS * 1000) / ms);
      }
    }
    const med = (a: number[]) => +[...a].sort((x, y) => x - y)[a.length >> 1].toFixed(1);
    results[name] = {
      tiled_tok_s: med(t.tiled),
      gemv_tok_s: med(t.gemv),
      tiled_best: +Math.max(...t.tiled).toFixed(1),
      gemv_best: +Math.max(...t.gemv).toFixed(1),
    };
    console.log(name, JSON.stringify(results[name]));
    model.dispose();
  }
  console.log(JSON.stringify(results, null, 2));
});
