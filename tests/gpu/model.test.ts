/**
 * The whole model on Dawn: stories260K against reference.json (ids, logits,
 * greedy tokens), a random qwen2-style model against the float64 CPU
 * reference, and a full-model gradient check against finite differences.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { gpuEngine } from '../helpers/gpu';
import { testHubRoot } from '../helpers/hub-server';
import { LocalFolderSource } from '../../src/hub/node';
import { loadModel, modelFromWeights, readWeights } from '../../src/model/load';
import { generate } from '../../src/model/generate';
import { referenceForward } from '../../src/model/reference';
import type { LlamaModel } from '../../src/model/llama';
import type { Tokenizer } from '../../src/model/tokenizer';
import type { Engine } from '../../src/engine/engine';
import { parseModelConfig, type ModelConfig } from '../../src/model/config';
import { randomWeights } from '../helpers/models';
import { rng } from '../helpers/check-op';

const modelDir = path.join(testHubRoot(), 'models', 'stories260K');
const reference = JSON.parse(readFileSync(path.join(modelDir, 'reference.json'), 'utf8'));

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('stories260K against reference.json', () => {
  let e: Engine;
  let model: LlamaModel;
  let tok: Tokenizer;
  beforeAll(async () => {
    e = await gpuEngine();
    const r = await loadModel(e, new LocalFolderSource(modelDir));
    model = r.model;
    tok = r.tokenizer!;
  });

  for (let i = 0; i < 3; i++) {
    it(`prompt ${i}: ids, first/last logits within 1e-4, 40 greedy tokens`, async () => {
      const p = reference.prompts[i];
      const ids = tok.encode(p.prompt);
      expect(ids).toEqual(p.input_ids);
      e.beginScope();
      const logits = model.forward(Int32Array.from(ids), 1);
      const V = model.config.vocabSize;
      const first = await e.readRegion(logits, 0, V);
      const last = await e.readRegion(logits, (ids.length - 1) * V, V);
      e.endScope();
      const d1 = maxDiff(first, p.logits_first_position),
        d2 = maxDiff(last, p.logits_last_position);
      console.log(`prompt ${i}: max |Δlogit| first ${d1.toExponential(2)}, last ${d2.toExponential(2)}`);
      expect(d1).toBeLessThan(1e-4);
      expect(d2).toBeLessThan(1e-4);
      // greedy_40_ids is the prompt followed by its 40 greedy continuations.
      const greedy = await generate(model, ids, { maxNewTokens: p.greedy_40_ids.length - ids.length });
      expect([...ids, ...greedy]).toEqual(p.greedy_40_ids);
    });
  }

  it('256 greedy tokens from BOS equal verification.greedy_from_bos', async () => {
    const want: number[] = reference.verification.greedy_from_bos.ids;
    const got = await generate(model, [want[0]], { maxNewTokens: want.length - 1 });
    expect([want[0], ...got]).toEqual(want);
  });
});

describe('random models against the float64 CPU reference', () => {
  const cases: [string, Record<string, unknown>, { qkvBias?: boolean; untied?: boolean }][] = [
    [
      'qwen2 with q/k/v bias, untied head, GQA 6/2, odd sizes',
      {
        architectures: ['Qwen2ForCausalLM'],
        model_type: 'qwen2',
        hidden_size: 48,
        intermediate_size: 70,
        num_hidden_layers: 2,
        num_attention_heads: 6,
        num_key_value_heads: 2,
        vocab_size: 97,
        rms_norm_eps: 1e-6,
        rope_theta: 1000000,
        tie_word_embeddings: false,
        max_position_embeddings: 128,
      },
      { qkvBias: true, untied: true },
    ],
    [
      'llama3 rope scaling, head_dim 16, tied',
      {
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        hidden_size: 32,
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 1,
        head_dim: 16,
        vocab_size: 61,
        rms_norm_eps: 1e-5,
        rope_theta: 500000,
        tie_word_embeddings: true,
        max_position_embeddings: 256,
        rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
      },
      {},
    ],
  ];
  for (const [name, json, opts] of cases) {
    it(name, async () => {
      const e = await gpuEngine();
      const cfg = parseModelConfig(json, name);
      const host = randomWeights(cfg, 7, opts);
      const model = modelFromWeights(e, cfg, host);
      const ids = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 26, 4, 33, 8, 3, 2, 7, 9, 5, 0, 2, 8, 8, 4, 1, 9, 7];
      e.beginScope();
      const logits = await e.read(model.forward(Int32Array.from(ids), 1));
      e.endScope();
      const want = referenceForward(cfg, new Map([...host].map(([k, v]) => [k, v.data])), ids);
      const d = maxDiff(
        logits,
        want.flatMap((row) => Array.from(row)),
      );
      console.log(`${name}: max |Δlogit| ${d.toExponential(2)}`);
      expect(d).toBeLessThan(2e-4);
    });
  }
});

describe('full-model gradient check (stories260K, every weight trainable)', () => {
  it('d(loss)/d(weight) matches float64 finite differences on sampled entries of all tensors', async () => {
    const e = await gpuEngine();
    const source = new LocalFolderSource(modelDir);
    const { model, config } = await loadModel(e, source, { tokenizer: false });
    const host = await readWeights(source);
    const w64 = new Map([...host].map(([k, v]) => [k, Float64Array.from(v.data)]));
    const ids = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298];
    const labels = Int32Array.from(ids.slice(1).concat([-100]));
    labels[3] = -100; // an ignored position in the middle
    const { crossEntropy } = await import('../../src/engine/ops/cross_entropy');
    const { Tape } = await import('../../src/engine/tape');
    const lossCpu = (w: Map<string, Float64Array>) => {
      const logits = referenceForward(config, w, ids);
      let s = 0,
        n = 0;
      logits.forEach((row, t) => {
        if (labels[t] === -100) return;
        let mx = -Infinity;
        for (const v of row) mx = Math.max(mx, v);
        let z = 0;
        for (const v of row) z += Math.exp(v - mx);
        s += mx + Math.log(z) - row[labels[t]];
        n++;
      });
      return s / n;
    };

    model.setTrainable(true);
    e.beginScope();
    const tape = new Tape();
    e.tape = tape;
    const logits = model.forward(Int32Array.from(ids), 1);
    const loss = crossEntropy(e, logits.reshape([ids.length, config.vocabSize]), labels);
    e.tape = null;
    const lossGpu = (await e.read(loss))[0];
    expect(Math.abs(lossGpu - lossCpu(w64))).toBeLessThan(1e-5);
    tape.backward(loss);

    const r = rng(42);
    const h = 1e-4;
    let worst = 0,
      checked = 0;
    const report: string[] = [];
    for (const [name, t] of model.params) {
      expect(t.grad, `${name} has a gradient`).not.toBeNull();
      const g = await e.read(t.grad!);
      const base = w64.get(name)!;
      // The largest-gradient entry plus two random ones.
      let big = 0;
      for (let i = 1; i < g.length; i++) if (Math.abs(g[i]) > Math.abs(g[big])) big = i;
      let tensorWorst = 0,
        absWorst = 0;
      for (const i of [big, Math.floor(r() * g.length), Math.floor(r() * g.length)]) {
        const orig = base[i];
        base[i] = orig + h;
        const lp = lossCpu(w64);
        base[i] = orig - h;
        const lm = lossCpu(w64);
        base[i] = orig;
        const fd = (lp - lm) / (2 * h);
        const err = Math.abs(fd - g[i]) / (1e-3 + Math.abs(fd));
        // Relative error where the difference is above float32 noise (2e-5 absolute).
        tensorWorst = Math.max(tensorWorst, Math.abs(fd - g[i]) > 2e-5 ? err : 0);
        absWorst = Math.max(absWorst, Math.abs(fd - g[i]));
        checked++;
      }
      worst = Math.max(worst, tensorWorst);
      report.push(
        `${tensorWorst < 2e-2 ? 'OK    ' : 'NOT OK'} ${name} max|grad| ${Math.abs(g[big]).toExponential(2)} max|Δ| ${absWorst.toExponential(1)} rel ${tensorWorst.toExponential(1)}`,
      );
    }
    model.setTrainable(false);
    e.endScope();
    for (const p of model.params.values()) p.grad = null;
    console.log(report.join('\n'));
    console.log(`checked ${checked} entries of ${model.params.size} tensors; worst relative error ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(2e-2);
  });
});
