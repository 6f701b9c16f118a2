/**
 * Insertion points: methods attach through hooks and never edit the model.
 * Each hook is checked against an equivalent computation.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import path from 'node:path';
import { gpuEngine } from '../helpers/gpu';
import { testHubRoot } from '../helpers/hub-server';
import { checkOp, randn, rng } from '../helpers/check-op';
import { LocalFolderSource } from '../../src/hub/node';
import { loadModel, readWeights } from '../../src/model/load';
import { referenceForward } from '../../src/model/reference';
import { add } from '../../src/engine/ops/add';
import { embedding } from '../../src/engine/ops/embedding';
import { concatSeq, concatSeqCpu, sliceSeq, sliceSeqCpu } from '../../src/engine/ops/concat';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import { generate, generateBatch } from '../../src/model/generate';

const modelDir = path.join(testHubRoot(), 'models', 'stories260K');

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('concatSeq', () => {
  it('forward and gradients', async () => {
    const e = await gpuEngine();
    const r = rng(3);
    const [B, P, L, W] = [2, 3, 5, 7];
    await checkOp(e, {
      name: 'concatSeq',
      inputs: [
        { name: 'a', shape: [B, P, W], data: randn(B * P * W, r), grad: true },
        { name: 'b', shape: [B, L, W], data: randn(B * L * W, r), grad: true },
      ],
      gpu: (e, [a, b]) => concatSeq(e, a, b, B, P, L, W),
      cpu: ([a, b]) => concatSeqCpu(a, b, B, P, L, W),
    });
  });
  it('sliceSeq: forward and gradients', async () => {
    const e = await gpuEngine();
    const r = rng(4);
    const [B, L, start, len, W] = [3, 7, 2, 4, 5];
    await checkOp(e, {
      name: 'sliceSeq',
      inputs: [{ name: 'x', shape: [B, L, W], data: randn(B * L * W, r), grad: true }],
      gpu: (e, [x]) => sliceSeq(e, x, B, L, start, len, W),
      cpu: ([x]) => sliceSeqCpu(x, B, L, start, len, W),
    });
  });
});

describe('model insertion points (stories260K)', () => {
  let e: Engine;
  let model: LlamaModel;
  let host: Map<string, { shape: number[]; data: Float32Array }>;
  beforeAll(async () => {
    e = await gpuEngine();
    const source = new LocalFolderSource(modelDir);
    model = (await loadModel(e, source, { tokenizer: false })).model;
    host = await readWeights(source);
  });
  const ids = [1, 403, 407, 261, 378, 432];

  it('a linear wrapper (2 x q_proj of layer 1) equals the reference with that weight doubled', async () => {
    const detach = model.attach({
      linear: (name, x, inner) => {
        if (name !== 'model.layers.1.self_attn.q_proj') return inner(x);
        const y = inner(x);
        return add(e, y, y);
      },
    });
    e.beginScope();
    const got = await e.read(model.forward(Int32Array.from(ids), 1));
    e.endScope();
    detach();
    const w = new Map([...host].map(([k, v]) => [k, Float64Array.from(v.data)]));
    const q = w.get('model.layers.1.self_attn.q_proj.weight')!;
    for (let i = 0; i < q.length; i++) q[i] *= 2;
    const want = referenceForward(model.config, w, ids).flatMap((r) => Array.from(r));
    expect(maxDiff(got, want)).toBeLessThan(1e-4);
    // detached: back to the plain model
    const plain = referenceForward(model.config, new Map([...host].map(([k, v]) => [k, v.data])), ids).flatMap((r) => Array.from(r));
    e.beginScope();
    const again = await e.read(model.forward(Int32Array.from(ids), 1));
    e.endScope();
    expect(maxDiff(again, plain)).toBeLessThan(1e-4);
  });

  it('virtual tokens before the embeddings: prepending the embeddings of the first tokens equals the full sequence', async () => {
    const P = 2;
    const detach = model.attach({
      inputEmbeds: (embeds, ctx) => {
        const pre = embedding(e, e.upload(Int32Array.from(ids.slice(0, P)), [P]), model.param('model.embed_tokens.weight'), Int32Array.from(ids.slice(0, P)));
        const C = model.config.hiddenSize;
        return { embeds: concatSeq(e, pre.reshape([1, P, C]), embeds, ctx.B, P, ctx.T, C), virtualTokens: P };
      },
    });
    e.beginScope();
    const got = await e.read(model.forward(Int32Array.from(ids.slice(P)), 1));
    e.endScope();
    detach();
    // The logits cover the real tokens only: positions P.. of the full sequence.
    const want = referenceForward(model.config, new Map([...host].map(([k, v]) => [k, v.data])), ids)
      .slice(P)
      .flatMap((r) => Array.from(r));
    expect(got.length).toBe(want.length);
    expect(maxDiff(got, want)).toBeLessThan(1e-4);
  });

  it('virtual tokens with the KV cache: greedy generation equals generation from the full prompt', async () => {
    const P = 2;
    const want = await generate(model, ids, { maxNewTokens: 8 });
    const detach = model.attach({
      inputEmbeds: (embeds, ctx) => {
        const pre = embedding(e, e.upload(Int32Array.from(ids.slice(0, P)), [P]), model.param('model.embed_tokens.weight'), Int32Array.from(ids.slice(0, P)));
        const C = model.config.hiddenSize;
        return { embeds: concatSeq(e, pre.reshape([1, P, C]), embeds, ctx.B, P, ctx.T, C), virtualTokens: P };
      },
      virtualTokens: () => P,
    });
    const got = await generate(model, ids.slice(P), { maxNewTokens: 8 });
    detach();
    expect(got).toEqual(want);
  });

  it('a key/value prefix with positionShift equals the full sequence (prefix = cached K/V of its first tokens)', async () => {
    const P = 3;
    const C = model.config.hiddenSize,
      Hkv = model.config.numKvHeads,
      D = model.config.headDim,
      V = model.config.vocabSize;
    // Post-RoPE keys and values of ids[0..P) at positions 0..P-1, from a cache.
    const cache = model.newCache(1, P);
    e.beginScope();
    model.forward(Int32Array.from(ids.slice(0, P)), 1, { cache });
    e.endScope();
    const detach = model.attach({
      kvPrefix: (l, ctx) => ({ k: cache.k[l].prefix([1, P, Hkv, D]).reshape([1, P, Hkv, D]), v: cache.v[l].prefix([1, P, Hkv, D]).reshape([1, P, Hkv, D]) }),
      positionShift: () => P,
    });
    e.beginScope();
    const got = await e.read(model.forward(Int32Array.from(ids.slice(P)), 1));
    e.endScope();
    const want = referenceForward(model.config, new Map([...host].map(([k, v]) => [k, v.data])), ids)
      .slice(P)
      .flatMap((r) => Array.from(r));
    expect(got.length).toBe((ids.length - P) * V);
    expect(maxDiff(got, want)).toBeLessThan(1e-4);
    // And through generation with the cache: the same greedy tokens as the full prompt.
    const gen = await generate(model, ids.slice(P), { maxNewTokens: 8 });
    detach();
    cache.dispose();
    expect(gen).toEqual(await generate(model, ids, { maxNewTokens: 8 }));
  });

  it('normWeight replaces an RMSNorm weight (doubling model.norm equals the reference with it doubled)', async () => {
    const detach = model.attach({
      normWeight: (name, w) => (name === 'model.norm' || name === 'model.layers.2.post_attention_layernorm' ? add(e, w, w) : w),
    });
    e.beginScope();
    const got = await e.read(model.forward(Int32Array.from(ids), 1));
    e.endScope();
    detach();
    const w = new Map([...host].map(([k, v]) => [k, Float64Array.from(v.data)]));
    for (const n of ['model.norm.weight', 'model.layers.2.post_attention_layernorm.weight']) {
      const t = w.get(n)!;
      for (let i = 0; i < t.length; i++) t[i] *= 2;
    }
    expect(
      maxDiff(
        got,
        referenceForward(model.config, w, ids).flatMap((r) => Array.from(r)),
      ),
    ).toBeLessThan(1e-4);
  });

  it('batched generation (left padding, one cache) equals generating each prompt alone', async () => {
    const prompts = [ids, [1, 338, 401], [1, 385, 328, 432, 358]];
    const alone = [];
    for (const p of prompts) alone.push(await generate(model, p, { maxNewTokens: 10 }));
    const batched = await generateBatch(model, prompts, { maxNewTokens: 10, padId: 0 });
    expect(batched).toEqual(alone);
    // shouldStop ends one sequence early without disturbing the others.
    const early = await generateBatch(model, prompts, { maxNewTokens: 10, padId: 0, shouldStop: (i, t) => i === 1 && t.length === 3 });
    expect(early[1]).toEqual(alone[1].slice(0, 3));
    expect(early[0]).toEqual(alone[0]);
  });

  it('activation, adapter and parallel points are called per layer with the right shapes', async () => {
    const seen: string[] = [];
    const C = model.config.hiddenSize,
      F = model.config.intermediateSize;
    const detach = model.attach({
      scaleActivation: (l, kind, x) => {
        seen.push(`${kind}${l}:${x.size / ids.length}`);
        return x;
      },
      afterAttention: (l, out) => {
        expect(out.size).toBe(ids.length * C);
        seen.push(`attn${l}`);
        return out;
      },
      afterMlp: (l, out, mlpIn) => {
        expect(out.size).toBe(ids.length * C);
        expect(mlpIn.size).toBe(ids.length * C);
        seen.push(`mlp${l}`);
        return out;
      },
      parallelMlp: (l, residual, mlpIn) => {
        expect(residual.size).toBe(mlpIn.size);
        seen.push(`par${l}`);
        return null;
      },
      kvPrefix: () => null,
    });
    e.beginScope();
    const got = await e.read(model.forward(Int32Array.from(ids), 1));
    e.endScope();
    detach();
    const want = referenceForward(model.config, new Map([...host].map(([k, v]) => [k, v.data])), ids).flatMap((r) => Array.from(r));
    expect(maxDiff(got, want)).toBeLessThan(1e-4);
    const kv = model.config.numKvHeads * model.config.headDim;
    expect(seen.filter((s) => s.startsWith('k')).length).toBe(model.config.numLayers);
    expect(seen).toContain(`k0:${kv}`);
    expect(seen).toContain(`ffn4:${F}`);
    expect(seen.filter((s) => s.startsWith('par')).length).toBe(model.config.numLayers);
    expect(seen.filter((s) => s.startsWith('mlp')).length).toBe(model.config.numLayers);
  });
});
