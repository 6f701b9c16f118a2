/** SVFT (PEFT-Factory plug-in) against METHODS.md §10.1: gradients, counts, init, trajectory, export/import/merge, patterns. */
import { parseSafetensors } from '../../src/model/safetensors';
import { adapterFileMap } from '../../src/methods/adapter-io';
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, tinyModel } from '../../tests/helpers/models';
import { checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { maxAbsDiff, randn, rng } from '../../tests/helpers/check-op';
import type { Engine } from '../../src/engine/engine';
import { Tape } from '../../src/engine/tape';
import { seededRandom } from '../../src/model/generate';
import type { LlamaModel } from '../../src/model/llama';
import type { ModelConfig } from '../../src/model/config';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { methodForAdapter } from '../../src/methods/adapter-io';
import { registerOptions, validateConfig } from '../../src/config/schema';
import { svftOptions } from './config';
import svft, { svftBasis, svftPatternSize, svftPositions, svftSettings, svftSize, type AttachedSvft } from './method';

/** Per target: k pattern positions + 1 gate, with n = spectral size of the layer. */
function svftCount(cfg: ModelConfig, targets: string[], d = 1, rank: number | null = null) {
  const { hiddenSize: dm, intermediateSize: f, numHeads: h, numKvHeads: kv, headDim: hd, numLayers: N } = cfg;
  const shapes: Record<string, [number, number]> = {
    q_proj: [h * hd, dm],
    k_proj: [kv * hd, dm],
    v_proj: [kv * hd, dm],
    o_proj: [dm, h * hd],
    gate_proj: [f, dm],
    up_proj: [f, dm],
    down_proj: [dm, f],
  };
  return N * targets.reduce((a, t) => a + svftPatternSize(svftSize(...shapes[t], rank, false), d, 'banded') + 1, 0);
}

async function logits(e: Engine, model: LlamaModel, ids: number[]): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(Int32Array.from(ids), 1));
  e.endScope();
  return y;
}

async function attach(e: Engine, model: LlamaModel, config: Record<string, unknown>, seed = 1): Promise<AttachedSvft> {
  const m = svft.attach({ e, model, config, random: seededRandom(seed) }) as AttachedSvft;
  await m.ready;
  return m;
}

const IDS = [1, 403, 407, 261, 378, 432, 383];

describe('svft', () => {
  it("is the registry's method for finetuning_type svft and for peft_type SVFT adapters", () => {
    expect(builtinMethods.has('svft')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'svft' })).toBe(svft);
    const { method, config } = methodForAdapter({
      peft_type: 'SVFT',
      target_modules: ['q_proj'],
      rank: null,
      off_diag: 2,
      pattern: 'top_k',
      fill_orthonormal: false,
    });
    expect(method).toBe(svft);
    expect(config).toEqual({ finetuning_type: 'svft', target_modules: ['q_proj'], rank: null, off_diag: 2, pattern: 'top_k', fill_orthonormal: false });
  });

  it('options register in the schema; a validated YAML config attaches with the plug-in defaults', async () => {
    registerOptions('svft', svftOptions);
    const c = validateConfig({ model_name_or_path: 'stories260K', output_dir: 'out', dataset: 'd.jsonl', finetuning_type: 'svft' });
    expect(c).toMatchObject({ target_modules: null, rank: null, off_diag: 1, pattern: 'banded', fill_orthonormal: false });
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = await attach(e, model, c);
    expect(m.trainable().length).toBe(8); // 2 layers × (q, k) × (delta, gate)
    m.detach();
    model.dispose();
  });

  it('patterns: banded |i−j| ≤ d; random k* distinct; top_k the k* largest |σiσj|; counts', () => {
    const s = [5, 4, 3, 2, 1];
    const b = svftPositions(5, 1, 'banded', s, Math.random);
    expect(b.rows.length).toBe(13); // 5·3 − 2
    expect(b.rows.every((i, q) => Math.abs(i - b.cols[q]) <= 1)).toBe(true);
    expect(svftPatternSize(5, 0, 'banded')).toBe(5);
    expect(svftPatternSize(3, 5, 'banded')).toBe(9); // the band saturates
    const r = svftPositions(6, 1, 'random', s, seededRandom(4));
    expect(new Set(r.rows.map((i, q) => i * 6 + r.cols[q])).size).toBe(6 * 3 - 2);
    const t = svftPositions(5, 1, 'top_k', s, Math.random);
    const vals = t.rows.map((i, q) => s[i] * s[t.cols[q]]).sort((x, y) => y - x);
    const all = s.flatMap((a) => s.map((c) => a * c)).sort((x, y) => y - x);
    expect(vals).toEqual(all.slice(0, 13));
    expect(svftPatternSize(5, 1, 'top_k')).toBe(13);
  });

  it('basis: U diag(s) V = W at full rank; truncation keeps the top n; fill_orthonormal appends orthonormal vectors with σ = 0', () => {
    const [out, inF] = [7, 5];
    const W = randn(out * inF, rng(2));
    const rec = (U: Float32Array, V: Float32Array, s: Float32Array, n: number) => {
      const R = new Float64Array(out * inF);
      for (let o = 0; o < out; o++) for (let c = 0; c < inF; c++) for (let j = 0; j < n; j++) R[o * inF + c] += U[o * n + j] * s[j] * V[j * inF + c];
      return R;
    };
    const full = svftBasis(W, out, inF, svftSettings({}), Math.random);
    expect(full.n).toBe(5);
    expect(maxAbsDiff(rec(full.U, full.V, full.s, 5), W)).toBeLessThan(1e-5);
    for (let j = 1; j < 5; j++) expect(full.s[j]).toBeLessThanOrEqual(full.s[j - 1]);
    const cut = svftBasis(W, out, inF, svftSettings({ rank: 2 }), Math.random);
    expect(cut.n).toBe(2);
    expect(Array.from(cut.s)).toEqual(Array.from(full.s.subarray(0, 2)));
    const fill = svftBasis(W, out, inF, svftSettings({ rank: 2, fill_orthonormal: true }), seededRandom(3));
    expect(fill.n).toBe(5);
    expect(Array.from(fill.s.subarray(2))).toEqual([0, 0, 0]);
    for (let a = 2; a < 5; a++) {
      for (let c = 2; c < 5; c++) {
        let du = 0,
          dv = 0;
        for (let o = 0; o < out; o++) du += fill.U[o * 5 + a] * fill.U[o * 5 + c];
        for (let i = 0; i < inF; i++) dv += fill.V[a * inF + i] * fill.V[c * inF + i];
        expect(Math.abs(du - (a === c ? 1 : 0))).toBeLessThan(1e-6);
        expect(Math.abs(dv - (a === c ? 1 : 0))).toBeLessThan(1e-6);
      }
    }
  });

  for (const [label, cfg] of [
    ['banded, full rank (square, wide, tall layers)', { target_modules: ['q_proj', 'k_proj', 'o_proj', 'down_proj'] }],
    ['top_k d=2, rank 5 + fill_orthonormal', { target_modules: ['q_proj', 'down_proj'], pattern: 'top_k', off_diag: 2, rank: 5, fill_orthonormal: true }],
    ['random, rank 6 truncated', { target_modules: ['k_proj', 'gate_proj'], pattern: 'random', rank: 6 }],
  ] as const) {
    it(`gradients of delta and gate match finite differences: ${label} (tiny random model)`, async () => {
      const e = await gpuEngine();
      const model = tinyModel(e);
      const m = await attach(e, model, { ...cfg });
      const r = rng(11);
      for (const p of m.trainable()) e.write(p.tensor, p.name.endsWith('gate') ? Float32Array.of(0.4) : randn(p.tensor.size, r, 0.3));
      const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11], { samples: 4 });
      console.log(report.filter((l) => l.includes('layers.1')).join('\n'));
      m.detach();
      model.dispose();
    });
  }

  it('the gate gets no gradient while delta = 0 (§10.1)', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    const m = await attach(e, model, {});
    e.beginScope();
    const tape = new Tape();
    e.tape = tape;
    const y = model.forward(Int32Array.from([1, 2, 3]), 1);
    e.tape = null;
    tape.backward(y, randn(y.size, rng(1)));
    e.endScope();
    for (const p of m.trainable()) {
      const g = await e.read(p.tensor.grad!);
      const max = Math.max(...Array.from(g, Math.abs));
      if (p.name.endsWith('gate')) expect(max).toBe(0);
      else expect(max).toBeGreaterThan(0);
    }
    m.detach();
    model.dispose();
  });

  it('trainable parameters: k + gate per target = 1 430 on stories260K (q, k; full rank, banded d=1), formula for SmolLM2-135M', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = await attach(e, model, {});
    expect(m.trainable().reduce((a, p) => a + p.tensor.size, 0)).toBe(1430);
    expect(svftCount(model.config, ['q_proj', 'k_proj'])).toBe(1430);
    m.detach();
    // SmolLM2-135M: q 576×576 → n 576, k = 576·3 − 2; k_proj 192×576 → n 192, k = 192·3 − 2; 30 layers.
    expect(svftCount(smollmConfig(), ['q_proj', 'k_proj'])).toBe(30 * (1726 + 1 + 574 + 1));
    expect(svftCount(smollmConfig(), ['q_proj', 'k_proj'])).toBe(69_060);
    model.dispose();
  });

  it('at full rank the logits equal the base model up to SVD round-off; a truncated rank is not a no-op', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const base = await logits(e, model, IDS);
    const m = await attach(e, model, {});
    const err = maxAbsDiff(await logits(e, model, IDS), base);
    m.detach();
    const t = await attach(e, model, { rank: 8 });
    const errCut = maxAbsDiff(await logits(e, model, IDS), base);
    t.detach();
    console.log(`svft init: full rank max |Δlogits| ${err.toExponential(2)}, rank 8 ${errCut.toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
    expect(errCut).toBeGreaterThan(1e-3);
    model.dispose();
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by 25%, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = await attach(e, model, {});
    const r = await checkTrajectory(e, model, m, 0.25);
    console.log(`svft trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('export has the §10.1 keys, shapes and config; import into a fresh attachment reproduces the logits; merge matches within 1e-4', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const config = { model_name_or_path: 'stories260K', pattern: 'random', target_modules: ['q_proj', 'k_proj'] };
    const m = await attach(e, model, config, 5);
    const r = rng(8);
    for (const p of m.trainable()) e.write(p.tensor, p.name.endsWith('gate') ? Float32Array.of(0.5) : randn(p.tensor.size, r, 0.2));
    const want = await logits(e, model, IDS);
    const files = await m.exportAdapter();
    m.detach();

    const p0 = 'base_model.model.model.layers.0.self_attn';
    expect(files.tensors.size).toBe(5 * 2 * 7);
    const shapes = Object.fromEntries([...files.tensors].filter(([k]) => k.startsWith(p0)).map(([k, t]) => [k.slice(p0.length + 1), t.shape]));
    expect(shapes).toEqual({
      'q_proj.svft_layers.u': [64, 64],
      'q_proj.svft_layers.v': [64, 64],
      'q_proj.svft_layers.s_base': [64],
      'q_proj.svft_layers.row_idx': [190],
      'q_proj.svft_layers.col_idx': [190],
      'q_proj.svft_layers.delta': [190],
      'q_proj.svft_layers.gate': [],
      'k_proj.svft_layers.u': [32, 32],
      'k_proj.svft_layers.v': [32, 64],
      'k_proj.svft_layers.s_base': [32],
      'k_proj.svft_layers.row_idx': [94],
      'k_proj.svft_layers.col_idx': [94],
      'k_proj.svft_layers.delta': [94],
      'k_proj.svft_layers.gate': [],
    });
    const rows = files.tensors.get(`${p0}.q_proj.svft_layers.row_idx`)!.data,
      cols = files.tensors.get(`${p0}.q_proj.svft_layers.col_idx`)!.data;
    for (let q = 1; q < rows.length; q++) expect(rows[q] * 64 + cols[q]).toBeGreaterThan(rows[q - 1] * 64 + cols[q - 1]);
    // Index buffers are I64, as PEFT-Factory's plug-in stores them, and survive the file round trip.
    expect(files.tensors.get(`${p0}.q_proj.svft_layers.row_idx`)!.dtype).toBe('I64');
    const written = parseSafetensors(adapterFileMap(files)['adapter_model.safetensors'] as Uint8Array, 'svft');
    expect(written.tensors.get(`${p0}.q_proj.svft_layers.col_idx`)!.dtype).toBe('I64');
    expect(Array.from(written.tensors.get(`${p0}.q_proj.svft_layers.col_idx`)!.data)).toEqual(Array.from(cols));
    expect(files.config).toEqual({
      auto_mapping: null,
      base_model_name_or_path: 'stories260K',
      fill_orthonormal: false,
      inference_mode: true,
      off_diag: 1,
      pattern: 'random',
      peft_type: 'SVFT',
      peft_version: '0.17.1',
      rank: null,
      revision: null,
      target_modules: ['k_proj', 'q_proj'],
      task_type: 'CAUSAL_LM',
    });

    // A fresh attachment from the adapter's config (another seed: a different random pattern until the import).
    const { config: fromAdapter } = methodForAdapter(files.config);
    const m2 = svft.attach({ e, model, config: fromAdapter, random: seededRandom(77) }) as AttachedSvft;
    m2.importAdapter(files); // before `ready`: applied after the SVDs
    await m2.ready;
    expect(maxAbsDiff(await logits(e, model, IDS), want)).toBe(0);
    await m2.merge!();
    const err = maxAbsDiff(await logits(e, model, IDS), want);
    console.log(`svft merge: max |logits diff| ${err.toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
    model.dispose();
  });
});

describe('svft FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('SVFT replaces the base matmul of its targets', () => {
    // q (64→64): n = 64, band d = 1 → k = 3·64 − 2 = 190: 2·64·64 + 2·(64 + 190) + 2·64·64 − 2·64·64 = 8700
    // k (64→32): n = 32, k = 3·32 − 2 = 94:  2·32·64 + 2·(32 + 94) + 2·32·32 − 2·64·32 = 2300
    expect(probe(svft).extra).toBe(TOKENS_LAYERS * (8700 + 2300)); // 28 160 000
    // rank 4 on q: 2·4·64 + 2·(4 + 10) + 2·4·64 − 8192 = −7140: cheaper than the base layer
    expect(probe(svft, { target_modules: 'q_proj', rank: 4 }).extra).toBe(TOKENS_LAYERS * -7140);
  });
});
