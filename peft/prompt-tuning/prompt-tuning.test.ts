/** Prompt tuning against METHODS.md §12: insertion identity, inits, gradients, counts, trajectory, generation, export and reload. */
import { describe, it, expect } from 'vitest';
import { baseFlops, probe } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, storiesDir, tinyModel } from '../../tests/helpers/models';
import { checkCachedGeneration, checkFreshProcessReload, checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { randn, rng } from '../../tests/helpers/check-op';
import { Tape } from '../../src/engine/tape';
import type { Engine } from '../../src/engine/engine';
import { LocalFolderSource } from '../../src/hub/node';
import { loadModel } from '../../src/model/load';
import type { LlamaModel } from '../../src/model/llama';
import { seededRandom } from '../../src/model/generate';
import { ConfigError } from '../../src/errors';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import { validateConfig } from '../../src/config/schema';
import promptTuning from './method';
import { textInitIds } from './prompt';

async function logits(e: Engine, model: LlamaModel, ids: number[], B = 1): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), B));
  e.endScope();
  return y;
}

async function embedRows(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array[]> {
  const d = model.config.hiddenSize;
  const out: Float32Array[] = [];
  for (const id of ids) out.push(await e.readRegion(model.param('model.embed_tokens.weight'), id * d, d));
  return out;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

describe('prompt-tuning', () => {
  it("is the registry's method for finetuning_type prompt-tuning, and loads PROMPT_TUNING adapters", () => {
    expect(builtinMethods.has('prompt-tuning')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'prompt-tuning' })).toBe(promptTuning);
    expect(methodForAdapter({ peft_type: 'PROMPT_TUNING', num_virtual_tokens: 7 }).method).toBe(promptTuning);
  });

  it('the schema accepts the prompt options; bad values fail with errors naming the key and the fix', async () => {
    const c = validateConfig({
      model_name_or_path: 'x',
      output_dir: 'o',
      dataset: 'd.jsonl',
      finetuning_type: 'prompt-tuning',
      num_virtual_tokens: 4,
      prompt_tuning_init: 'TEXT',
      prompt_tuning_init_text: 'hi',
    });
    expect(c.num_virtual_tokens).toBe(4);
    expect(() => validateConfig({ model_name_or_path: 'x', output_dir: 'o', dataset: 'd.jsonl', num_virtual_tokens: 0 })).toThrow(/num_virtual_tokens/);
    expect(() => validateConfig({ model_name_or_path: 'x', output_dir: 'o', dataset: 'd.jsonl', prompt_tuning_init: 'TXT' })).toThrow(
      /prompt_tuning_init.*TEXT/,
    );
    const e = await gpuEngine();
    const model = tinyModel(e);
    const attach = (config: Record<string, unknown>, tokenizer?: { encode(t: string): number[] }) =>
      promptTuning.attach({ e, model, config, random: seededRandom(1), tokenizer });
    expect(() => attach({})).toThrow(ConfigError);
    expect(() => attach({})).toThrow(/num_virtual_tokens: prompt-tuning needs it and it is unset.*100 for prompt tuning/);
    expect(() => attach({ num_virtual_tokens: 2.5 })).toThrow(/num_virtual_tokens: expected an integer or null, got the number 2.5/);
    expect(() => attach({ num_virtual_tokens: 3, prompt_tuning_init: 'TEXT' })).toThrow(/prompt_tuning_init_text is not set/);
    expect(() => attach({ num_virtual_tokens: 3, prompt_tuning_init: 'TEXT', prompt_tuning_init_text: 'a b' })).toThrow(/needs the model tokenizer/);
    // tiny vocab 37: vocab5000 can draw at most 37 distinct ids.
    expect(() => attach({ num_virtual_tokens: 38 })).toThrow(/vocab5000 draws 38 distinct ids below 37/);
    expect(() => attach({ num_virtual_tokens: 3, prompt_tuning_init: 'BOGUS' })).toThrow(/prompt_tuning_init "BOGUS".*RANDOM, TEXT/);
    model.dispose();
  });

  it("prompt P made of the embeddings of ids t gives the base model's logits on [t, x] (insertion identity, positions 0 … n_v−1)", async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const prompt = [5, 9, 2],
      x = [1, 30, 7, 11, 4];
    // TEXT init with a tokenizer that returns `prompt`: P = E[prompt].
    const m = promptTuning.attach({
      e,
      model,
      config: { num_virtual_tokens: 3, prompt_tuning_init: 'TEXT', prompt_tuning_init_text: 'any' },
      random: seededRandom(1),
      tokenizer: { encode: () => prompt },
    });
    const withPrompt = await logits(e, model, x);
    m.detach();
    const V = model.config.vocabSize;
    const base = (await logits(e, model, [...prompt, ...x])).slice(prompt.length * V);
    expect(withPrompt.length).toBe(x.length * V);
    expect(maxDiff(withPrompt, base)).toBeLessThan(1e-5);
    model.dispose();
  });

  it('TEXT init: the rows of E for the tokenized text (with BOS), repeated or cut to n_v', async () => {
    const e = await gpuEngine();
    const { model, tokenizer } = await loadModel(e, new LocalFolderSource(storiesDir()));
    const text = 'Once upon a time';
    const ids = tokenizer!.encode(text);
    expect(ids[0]).toBe(1); // BOS: with special tokens, as PEFT tokenizes
    expect(textInitIds([4, 5, 6], 7)).toEqual([4, 5, 6, 4, 5, 6, 4]);
    expect(textInitIds([4, 5, 6], 2)).toEqual([4, 5]);
    for (const nV of [ids.length + 3, ids.length - 2]) {
      const m = promptTuning.attach({
        e,
        model,
        config: { num_virtual_tokens: nV, prompt_tuning_init: 'TEXT', prompt_tuning_init_text: text },
        random: seededRandom(1),
        tokenizer: tokenizer!,
      });
      const P = await e.read(m.trainable()[0].tensor);
      const rows = await embedRows(e, model, textInitIds(ids, nV));
      const d = model.config.hiddenSize;
      rows.forEach((r, i) => expect(Array.from(P.subarray(i * d, (i + 1) * d))).toEqual(Array.from(r)));
      m.detach();
    }
    model.dispose();
  });

  it('vocab5000 (default) = rows of n_v distinct ids below min(5000, V); SAMPLE_VOCAB = rows of E; RANDOM ~ N(0, 1)', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const d = model.config.hiddenSize,
      V = model.config.vocabSize;
    const E = await e.read(model.param('model.embed_tokens.weight'));
    const rowIds = (P: Float32Array, nV: number) =>
      Array.from({ length: nV }, (_, i) => {
        for (let v = 0; v < V; v++) if (E.subarray(v * d, (v + 1) * d).every((x, c) => x === P[i * d + c])) return v;
        return -1;
      });
    const m = promptTuning.attach({ e, model, config: { num_virtual_tokens: 64 }, random: seededRandom(3) });
    const ids = rowIds(await e.read(m.trainable()[0].tensor), 64);
    expect(ids.every((v) => v >= 0 && v < Math.min(5000, V))).toBe(true);
    expect(new Set(ids).size).toBe(64);
    m.detach();
    const s = promptTuning.attach({ e, model, config: { num_virtual_tokens: 16, prompt_tuning_init: 'SAMPLE_VOCAB' }, random: seededRandom(4) });
    expect(rowIds(await e.read(s.trainable()[0].tensor), 16).every((v) => v >= 0)).toBe(true);
    s.detach();
    const r = promptTuning.attach({ e, model, config: { num_virtual_tokens: 100, prompt_tuning_init: 'RANDOM' }, random: seededRandom(5) });
    const P = await e.read(r.trainable()[0].tensor);
    const mean = P.reduce((a, x) => a + x, 0) / P.length;
    const variance = P.reduce((a, x) => a + (x - mean) ** 2, 0) / P.length;
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
    r.detach();
    model.dispose();
  });

  it('gradient of P matches finite differences; with a batch it is the sum of the per-sequence gradients', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = promptTuning.attach({ e, model, config: { num_virtual_tokens: 3, prompt_tuning_init: 'RANDOM' }, random: seededRandom(3) });
    await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11]);
    // B = 2: ∂L/∂P = Σ_b ∂L_b/∂P (the broadcast's backward).
    const P = m.trainable()[0].tensor;
    const seqs = [
      [1, 5, 9, 2],
      [1, 30, 7, 11],
    ];
    const V = model.config.vocabSize;
    const R = randn(2 * 4 * V, rng(5));
    const gradOf = async (ids: number[], B: number, seed: Float32Array) => {
      e.beginScope();
      const tape = new Tape();
      e.tape = tape;
      const y = model.forward(Int32Array.from(ids), B);
      e.tape = null;
      tape.backward(y, seed);
      e.endScope();
      const g = await e.read(P.grad!);
      P.grad = null;
      return g;
    };
    const both = await gradOf([...seqs[0], ...seqs[1]], 2, R);
    const g0 = await gradOf(seqs[0], 1, R.slice(0, 4 * V));
    const g1 = await gradOf(seqs[1], 1, R.slice(4 * V));
    const sum = g0.map((x, i) => x + g1[i]);
    expect(maxDiff(both, sum)).toBeLessThan(1e-4 * Math.max(1, ...Array.from(sum, Math.abs)));
    m.detach();
    model.dispose();
  });

  it('trainable parameters: n_v·d (stories260K n_v=10: 640; SmolLM2-135M shape n_v=100: 57 600)', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = promptTuning.attach({ e, model, config: { num_virtual_tokens: 10 }, random: seededRandom(1) });
    expect(m.trainable().reduce((a, p) => a + p.tensor.size, 0)).toBe(640);
    m.detach();
    expect(100 * smollmConfig().hiddenSize).toBe(57600);
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = promptTuning.attach({ e, model, config: { num_virtual_tokens: 10 }, random: seededRandom(1) });
    const r = await checkTrajectory(e, model, m, 0.5, { learningRate: 3e-2 });
    console.log(`prompt-tuning trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('export: prompt_embeddings [n_v, d] and the PEFT 0.17 PROMPT_TUNING config; import restores P (no re-init); cached generation; fresh process', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = promptTuning.attach({
      e,
      model,
      config: { num_virtual_tokens: 5, prompt_tuning_init: 'RANDOM', model_name_or_path: 'stories260K' },
      random: seededRandom(2),
    });
    const files = await m.exportAdapter();
    expect([...files.tensors.keys()]).toEqual(['prompt_embeddings']);
    expect(files.tensors.get('prompt_embeddings')!.shape).toEqual([5, 64]);
    expect(Object.keys(files.config).sort()).toEqual([
      'auto_mapping',
      'base_model_name_or_path',
      'inference_mode',
      'modules_to_save',
      'num_attention_heads',
      'num_layers',
      'num_transformer_submodules',
      'num_virtual_tokens',
      'peft_type',
      'peft_version',
      'prompt_tuning_init',
      'prompt_tuning_init_text',
      'revision',
      'task_type',
      'token_dim',
      'tokenizer_kwargs',
      'tokenizer_name_or_path',
    ]);
    expect(files.config).toMatchObject({
      peft_type: 'PROMPT_TUNING',
      task_type: 'CAUSAL_LM',
      num_virtual_tokens: 5,
      token_dim: 64,
      num_attention_heads: 8,
      num_layers: 5,
      num_transformer_submodules: 1,
      inference_mode: true,
      prompt_tuning_init: 'RANDOM',
      base_model_name_or_path: 'stories260K',
    });
    const ids = [1, 403, 407, 261, 378];
    const before = await logits(e, model, ids);
    m.detach();
    // A fresh attach (another seed, the default vocab5000 init) loading the export gives the same logits.
    const { method, config } = methodForAdapter(files.config);
    const m2 = method.attach({ e, model, config, random: seededRandom(77) });
    expect(maxDiff(await logits(e, model, ids), before)).toBeGreaterThan(1e-3);
    m2.importAdapter(files);
    expect(maxDiff(await logits(e, model, ids), before)).toBe(0);
    await checkCachedGeneration(e, model, [1, 403, 407, 261]);
    const r = await checkFreshProcessReload(e, model, m2);
    expect(r.files).toContain('adapter_model.safetensors');
    m2.detach();
    model.dispose();
  });
});

describe('prompt-tuning FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('prompt tuning: the sequence grows by n_v', () => {
    // T' = 522: the base model on 522 tokens; the table itself costs nothing
    const total = baseFlops(522);
    expect(total).toBe(236_528_640 + 348_779_520 + 34_209_792);
    expect(probe(promptTuning, { num_virtual_tokens: 10 })).toMatchObject({ total, extra: total - baseFlops(512) }); // extra 18 421 760
    expect(() => probe(promptTuning)).toThrow(/num_virtual_tokens: prompt-tuning needs it/);
  });
});
