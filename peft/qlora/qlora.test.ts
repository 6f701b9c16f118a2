/**
 * QLoRA against METHODS.md §5: registry selection, gradients through the NF4
 * base, parameter counts, B = 0 identity with the dequantized base (Appendix
 * D), GPU bytes of the base, trajectory, LoRA-format export and import.
 */
import { describe, it, expect } from 'vitest';
import { probe } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, smollmConfig, storiesDir, tinyModel } from '../../tests/helpers/models';
import { checkMethodGradients, checkTrajectory } from '../../tests/helpers/method-check';
import { seededRandom } from '../../src/model/generate';
import { modelFromWeights, readConfig, readWeights } from '../../src/model/load';
import { LocalFolderSource } from '../../src/hub/node';
import { builtinMethods, resolveMethod } from '../../src/methods/registry';
import { ConfigError } from '../../src/errors';
import type { ModelConfig } from '../../src/model/config';
import type { Engine } from '../../src/engine/engine';
import type { LlamaModel } from '../../src/model/llama';
import { dequantizeNf4Cpu } from './ops';
import { loraAdapterConfig } from '../lora/method';
import qlora, { attachQlora } from './method';

const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Linear shapes [out, in] of one decoder layer. */
function linearShapes(cfg: ModelConfig): Record<string, [number, number]> {
  const { hiddenSize: d, intermediateSize: f, numHeads: h, numKvHeads: kv, headDim: hd } = cfg;
  return { q_proj: [h * hd, d], k_proj: [kv * hd, d], v_proj: [kv * hd, d], o_proj: [d, h * hd], gate_proj: [f, d], up_proj: [f, d], down_proj: [d, f] };
}

/** As LoRA: r·(in + out) per targeted linear (the NF4 base trains nothing). */
function qloraCount(cfg: ModelConfig, r: number, targets: string[]) {
  const s = linearShapes(cfg);
  return cfg.numLayers * targets.reduce((a, t) => a + r * (s[t][0] + s[t][1]), 0);
}

const ids = Int32Array.from([1, 403, 407, 261, 378, 432, 383, 286]);

async function logits(e: Engine, model: LlamaModel): Promise<Float32Array> {
  e.beginScope();
  const y = await e.read(model.forward(ids, 1));
  e.endScope();
  return y;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('qlora', () => {
  it("is the registry's method for finetuning_type lora with quantization_bit 4", () => {
    expect(builtinMethods.has('qlora')).toBe(true);
    expect(resolveMethod({ finetuning_type: 'lora', quantization_bit: 4 })).toBe(qlora);
    expect(qlora.peftType).toBe('LORA');
  });

  it('rejects other bit widths and data types', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    for (const config of [{ quantization_bit: 8 }, { quantization_bit: 4, quantization_type: 'fp4' }]) {
      expect(() => qlora.attach({ e, model, config, random: seededRandom(1) })).toThrow(ConfigError);
    }
    expect(model.params.has('model.layers.0.self_attn.q_proj.weight')).toBe(true);
    model.dispose();
  });

  it('detaching before the quantization finished stops it and frees what it made', async () => {
    const e = await gpuEngine();
    const model = tinyModel(e);
    await e.sync();
    const before = e.pool.inUse;
    const m = attachQlora({ e, model, config: { quantization_bit: 4 }, random: seededRandom(1) });
    m.detach();
    await m.ready;
    await e.sync();
    expect(m.quantized.size).toBe(0);
    expect(e.pool.inUse).toBeLessThanOrEqual(before);
    model.dispose();
  });

  it('gradients of A and B through the NF4 base match finite differences (tiny random model)', async () => {
    const e = await gpuEngine();
    // d 16 and d_ff 22: the word-aligned NF4 kernels, and the element-wise ones for down_proj and
    // for dX of gate/up (N = 22). The layer-0 adapters' gradients flow back through the NF4
    // backward of every later linear (o, gate, up, down of layer 0, all 7 of layer 1).
    const model = tinyModel(e);
    const m = qlora.attach({
      e,
      model,
      config: { quantization_bit: 4, lora_rank: 4, lora_alpha: 8, lora_target: ['q_proj', 'v_proj', 'down_proj'] },
      random: seededRandom(3),
    });
    await m.ready;
    for (const p of m.trainable())
      if (p.name.includes('lora_B'))
        e.write(
          p.tensor,
          Float32Array.from({ length: p.tensor.size }, (_, i) => Math.sin(i) * 0.3),
        );
    const report = await checkMethodGradients(e, model, m, [1, 5, 9, 2, 30, 7, 11]);
    expect(report.length).toBe(2 * 3 * 2);
    m.detach();
    model.dispose();
  });

  it('quantizes all 7 projections of every layer whatever lora_target is; embeddings, norms and head stay f32', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = attachQlora({ e, model, config: { quantization_bit: 4, lora_target: ['q_proj', 'v_proj'] }, random: seededRandom(1) });
    // The CPU quantization runs after a readback: the model refuses to run until it is done.
    e.beginScope();
    expect(() => model.forward(ids, 1)).toThrow(/await the attached method's `ready`/);
    e.endScope();
    const t0 = performance.now();
    await m.ready;
    console.log(`qlora stories260K: 35 linears read back, quantized on the CPU and uploaded in ${(performance.now() - t0).toFixed(0)} ms`);
    expect(m.quantized.size).toBe(35);
    for (const name of model.linearNames()) {
      expect(model.params.has(`${name}.weight`)).toBe(false);
      expect(() => model.param(`${name}.weight`)).toThrow(/no longer held in f32/);
      expect(model.weightShape(`${name}.weight`)).toEqual([m.quantized.get(name)!.outF, m.quantized.get(name)!.inF]);
    }
    expect([...model.params.keys()].sort()).toEqual(
      [
        'model.embed_tokens.weight',
        'model.norm.weight',
        ...Array.from({ length: 5 }, (_, l) => [`model.layers.${l}.input_layernorm.weight`, `model.layers.${l}.post_attention_layernorm.weight`]).flat(),
      ].sort(),
    );
    expect(m.merge).toBeUndefined(); // LLaMA-Factory refuses to merge into a quantized base
    m.detach();
    model.dispose();
  });

  it('trainable parameters equal r·(in + out) per target, for stories260K and the SmolLM2-135M shape', async () => {
    const e = await gpuEngine();
    for (const [targets, want] of [
      [['q_proj', 'v_proj'], 8960],
      [ALL, 46240],
    ] as const) {
      const model = await loadStories(e);
      const m = qlora.attach({ e, model, config: { quantization_bit: 4, lora_rank: 8, lora_target: [...targets] }, random: seededRandom(1) });
      await m.ready;
      const n = m.trainable().reduce((a, p) => a + p.tensor.size, 0);
      expect(n).toBe(qloraCount(model.config, 8, [...targets]));
      expect(n).toBe(want); // METHODS.md Appendix A
      m.detach();
      model.dispose();
    }
    // SmolLM2-135M: d 576, d_ff 1536, 9 heads, 3 kv heads of 64, 30 layers.
    expect(qloraCount(smollmConfig(), 8, ['q_proj', 'v_proj'])).toBe(30 * 8 * (576 + 576 + 576 + 192));
    expect(qloraCount(smollmConfig(), 8, ALL)).toBe(30 * 8 * (576 + 576 + 2 * (576 + 192) + (576 + 576) + 3 * (576 + 1536)));
    expect(qloraCount(smollmConfig(), 8, ALL)).toBe(2_442_240);
  });

  it('with B = 0 the logits equal the base model with the dequantized weights (within 1e-4)', async () => {
    const e = await gpuEngine();
    const src = new LocalFolderSource(storiesDir());
    const [cfg, host] = [await readConfig(src), await readWeights(src)];
    const f32Model = modelFromWeights(e, cfg, host);
    const base = await logits(e, f32Model);
    for (const double of [true, false]) {
      const model = modelFromWeights(e, cfg, host);
      const m = attachQlora({
        e,
        model,
        config: { quantization_bit: 4, double_quantization: double, lora_rank: 8, lora_target: 'all' },
        random: seededRandom(1),
      });
      await m.ready;
      const got = await logits(e, model);
      // The reference model: every linear replaced by the CPU dequantization of the GPU state.
      const deq = new Map(host);
      for (const [name, q] of m.quantized) {
        const st = new Uint32Array((await e.read(q.state)).buffer);
        deq.set(`${name}.weight`, { shape: [q.outF, q.inF], data: dequantizeNf4Cpu(st, q.outF * q.inF, double) });
      }
      const refModel = modelFromWeights(e, cfg, deq);
      const want = await logits(e, refModel);
      const d = maxDiff(got, want);
      const scale = base.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
      console.log(
        `qlora B=0 (double ${double}): max |logits − dequantized base| ${d.toExponential(2)}; vs the f32 base ${maxDiff(got, base).toFixed(4)} (max |logit| ${scale.toFixed(2)})`,
      );
      expect(d).toBeLessThan(1e-4);
      refModel.dispose();
      m.detach();
      model.dispose();
    }
    f32Model.dispose();
  });

  it('base-weight GPU bytes are at most 1/6 of f32 (stories260K, a SmolLM2-shaped layer)', async () => {
    const e = await gpuEngine();
    const measure = async (model: LlamaModel, label: string) => {
      await e.sync();
      const before = e.pool.inUse;
      const m = attachQlora({ e, model, config: { quantization_bit: 4, lora_rank: 8, lora_target: 'all' }, random: seededRandom(1) });
      await m.ready;
      await e.sync();
      const loraBytes = m.trainable().reduce((a, p) => a + p.tensor.buffer.size, 0);
      // Pool accounting agrees with the buffer sizes (the 1 KiB code table is allocated once per engine).
      const delta = e.pool.inUse - before;
      expect(Math.abs(delta - (m.baseBytes.nf4 - m.baseBytes.f32 + loraBytes))).toBeLessThanOrEqual(1024);
      const ratio = m.baseBytes.nf4 / m.baseBytes.f32;
      console.log(`qlora ${label}: NF4 base ${m.baseBytes.nf4} B vs f32 ${m.baseBytes.f32} B, ratio ${ratio.toFixed(4)} (1/${(1 / ratio).toFixed(2)})`);
      expect(ratio).toBeLessThanOrEqual(1 / 6);
      // The model still runs on it.
      e.beginScope();
      const y = await e.read(model.forward(Int32Array.from([1, 2, 3]), 1));
      e.endScope();
      expect(y.every(Number.isFinite)).toBe(true);
      m.detach();
      model.dispose();
      return ratio;
    };
    await measure(await loadStories(e), 'stories260K (35 linears)');
    const s = smollmConfig();
    await measure(
      tinyModel(e, {
        hidden_size: s.hiddenSize,
        intermediate_size: s.intermediateSize,
        num_attention_heads: s.numHeads,
        num_key_value_heads: s.numKvHeads,
        head_dim: s.headDim,
        num_hidden_layers: 1,
        vocab_size: 64,
      }),
      'SmolLM2-135M-shaped layer (7 linears)',
    );
  });

  it('trajectory: 30 steps on a fixed batch, loss falls by half, memory flat', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = qlora.attach({
      e,
      model,
      config: { quantization_bit: 4, lora_rank: 8, lora_alpha: 16, lora_target: ['q_proj', 'v_proj'] },
      random: seededRandom(1),
    });
    const r = await checkTrajectory(e, model, m, 0.5);
    console.log(`qlora trajectory: ${r.first.toFixed(4)} → ${r.last.toFixed(4)}, peak ${r.peak} B`);
    m.detach();
    model.dispose();
  });

  it('exports a LoRA adapter (names, shapes, adapter_config) that re-imports to the same logits', async () => {
    const e = await gpuEngine();
    const config = { quantization_bit: 4, lora_rank: 8, lora_alpha: 16, lora_target: 'all', model_name_or_path: 'stories260K' };
    const model = await loadStories(e);
    const m = qlora.attach({ e, model, config, random: seededRandom(1) });
    await m.ready;
    for (const p of m.trainable())
      if (p.name.includes('lora_B'))
        e.write(
          p.tensor,
          Float32Array.from({ length: p.tensor.size }, (_, i) => 0.05 * Math.cos(i)),
        );
    const trained = await logits(e, model);
    const files = await m.exportAdapter();

    // stories260K, r = 8 (METHODS.md §4): q A 8×64 B 64×8; k/v A 8×64 B 32×8; o A 8×64 B 64×8;
    // gate/up A 8×64 B 172×8; down A 8×172 B 64×8.
    const want = new Map<string, number[]>();
    const shapes: Record<string, [number[], number[]]> = {
      'self_attn.q_proj': [
        [8, 64],
        [64, 8],
      ],
      'self_attn.k_proj': [
        [8, 64],
        [32, 8],
      ],
      'self_attn.v_proj': [
        [8, 64],
        [32, 8],
      ],
      'self_attn.o_proj': [
        [8, 64],
        [64, 8],
      ],
      'mlp.gate_proj': [
        [8, 64],
        [172, 8],
      ],
      'mlp.up_proj': [
        [8, 64],
        [172, 8],
      ],
      'mlp.down_proj': [
        [8, 172],
        [64, 8],
      ],
    };
    for (let l = 0; l < 5; l++) {
      for (const [mod, [a, b]] of Object.entries(shapes)) {
        want.set(`base_model.model.model.layers.${l}.${mod}.lora_A.weight`, a);
        want.set(`base_model.model.model.layers.${l}.${mod}.lora_B.weight`, b);
      }
    }
    expect([...files.tensors.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [k, t] of files.tensors) expect(t.shape, k).toEqual(want.get(k));
    // adapter_config.json: LoRA's PEFT 0.17 key set and values (the quantization is not part of it).
    expect(files.config).toEqual(loraAdapterConfig(config, 8, 16, 0, [...ALL].sort()));
    expect(files.config.peft_type).toBe('LORA');
    expect(Object.keys(files.config).sort()).toEqual([
      'alpha_pattern',
      'auto_mapping',
      'base_model_name_or_path',
      'bias',
      'corda_config',
      'eva_config',
      'exclude_modules',
      'fan_in_fan_out',
      'inference_mode',
      'init_lora_weights',
      'layer_replication',
      'layers_pattern',
      'layers_to_transform',
      'loftq_config',
      'lora_alpha',
      'lora_bias',
      'lora_dropout',
      'megatron_config',
      'megatron_core',
      'modules_to_save',
      'peft_type',
      'peft_version',
      'qalora_group_size',
      'r',
      'rank_pattern',
      'revision',
      'target_modules',
      'target_parameters',
      'task_type',
      'trainable_token_indices',
      'use_dora',
      'use_qalora',
      'use_rslora',
    ]);
    m.detach();
    model.dispose();

    const fresh = await loadStories(e);
    const m2 = qlora.attach({ e, model: fresh, config, random: seededRandom(99) });
    m2.importAdapter(files);
    await m2.ready;
    const again = await logits(e, fresh);
    expect(maxDiff(again, trained)).toBe(0);
    m2.detach();
    fresh.dispose();
  });
});

describe('qlora FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('QLoRA: the LoRA count, 2·r·(in + out) per token per target', () => {
    // LoRA's count; the NF4 dequantization inside the base matmuls is not counted.
    expect(probe(qlora, { lora_rank: 8, lora_target: 'q_proj,v_proj' }).extra).toBe(9_175_040);
  });
});
