import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { forwardFlops, linearLayers } from '../../src/eval/flops';
import { builtinMethods, installedMethods } from '../../src/methods/registry';
import { parseModelConfig } from '../../src/model/config';
import { ConfigError } from '../../src/errors';
import { testHubRoot } from '../helpers/hub-server';

// stories260K: d = 64, n_h = 8, n_kv = 4, h_d = 8, d_ff = 172, N = 5, V = 512, tied head.
const file = path.join(testHubRoot(), 'models', 'stories260K', 'config.json');
const cfg = parseModelConfig(JSON.parse(readFileSync(file, 'utf8')), file);
/** The count for a method folder ('base': the bare model); each method's own flops() gives its part. */
const probe = (name: string, methodConfig: Record<string, unknown> = {}) => {
  const method = name === 'base' ? undefined : builtinMethods.get(name);
  if (name !== 'base' && !method) throw new ConfigError(`no method ${name}`);
  return forwardFlops(cfg, { batch: 1, seq: 512, method, methodConfig });
};

// Per token and layer, 2·in·out per projection:
//   q 2·64·64 = 8192, k 2·64·32 = 4096, v 4096, o 2·64·64 = 8192,
//   gate 2·64·172 = 22016, up 22016, down 2·172·64 = 22016       → 90 624
const PROJ_PER_TOKEN_LAYER = 8192 + 4096 + 4096 + 8192 + 22016 + 22016 + 22016;
// Attention per layer (T = 512): n_h · (QKᵀ 2·T·T·h_d + AV 2·T·T·h_d) = 8 · 2 · 2·512·512·8 = 67 108 864
const ATTN_PER_LAYER = 8 * 2 * (2 * 512 * 512 * 8);
// lm_head: 2·T·d·V = 2·512·64·512 = 33 554 432
const LM_HEAD = 2 * 512 * 64 * 512;
// 512·5·90 624 + 5·67 108 864 + 33 554 432 = 231 997 440 + 335 544 320 + 33 554 432
const BASE = 601_096_192;
const TOKENS_LAYERS = 512 * 5;

describe('forwardFlops: stories260K, 1×512 probe', () => {
  it('base model, hand-computed', () => {
    expect(PROJ_PER_TOKEN_LAYER).toBe(90_624);
    expect(512 * 5 * PROJ_PER_TOKEN_LAYER + 5 * ATTN_PER_LAYER + LM_HEAD).toBe(BASE);
    const f = probe('base');
    expect(f).toEqual({ total: BASE, base: BASE, extra: 0, parts: { projections: 231_997_440, attention: 335_544_320, lmHead: 33_554_432, method: 0 } });
    expect(linearLayers(cfg)).toHaveLength(35);
  });

  it('batch scales everything linearly; the probe defaults to 1×512', () => {
    expect(forwardFlops(cfg, {}).total).toBe(BASE);
    expect(forwardFlops(cfg, { batch: 2, seq: 512 }).total).toBe(2 * BASE);
  });

  it('methods that replace weights add nothing', () => {
    for (const m of ['full', 'galore', 'lntuning']) expect(probe(m)).toMatchObject({ total: BASE, extra: 0 });
  });

  it('LoRA r = 8: 2·r·(in + out) per token per target', () => {
    // all 7: q 2·8·128 = 2048, k 2·8·96 = 1536, v 1536, o 2048, gate/up/down 2·8·236 = 3776 each → 18 496
    expect(probe('lora', { lora_rank: 8 }).extra).toBe(TOKENS_LAYERS * (2048 + 1536 + 1536 + 2048 + 3 * 3776)); // 47 349 760
    // q, v: 2048 + 1536 = 3584
    const qv = { lora_rank: 8, lora_target: 'q_proj,v_proj' };
    expect(probe('lora', qv).extra).toBe(TOKENS_LAYERS * 3584); // 9 175 040
    expect(probe('qlora', qv).extra).toBe(9_175_040);
    expect(probe('pissa', qv).extra).toBe(9_175_040);
    // DoRA adds per token out (64 + 32), and per forward the row norms:
    //   q: 2·8·64·64 + 2·8²·64 + 64·(2·8² + 4·8) = 65 536 + 8192 + 10 240 = 83 968
    //   v: 2·8·64·32 + 2·8²·64 + 32·160          = 32 768 + 8192 + 5120  = 46 080
    expect(probe('dora', qv).extra).toBe(9_175_040 + TOKENS_LAYERS * 96 + 5 * (83_968 + 46_080)); // 10 071 040
  });

  it('OFT b = 32 on q, v: block rotation per token, Cayley–Neumann products per forward', () => {
    // per token per target 2·b·in = 2·32·64 = 4096; per forward per block (2 blocks): 3 products of 2·32³
    const f = probe('oft', { oft_target: 'q_proj,v_proj' });
    expect(f.extra).toBe(TOKENS_LAYERS * 2 * 4096 + 5 * 2 * 2 * 3 * 2 * 32 ** 3); // 24 903 680
    // block_share: one block built per target; exact Cayley: one 2·b³ inverse per block
    expect(probe('oft', { oft_target: 'q_proj,v_proj', block_share: true }).extra).toBe(TOKENS_LAYERS * 8192 + 5 * 2 * 1 * 3 * 2 * 32 ** 3);
    expect(probe('oft', { oft_target: 'q_proj,v_proj', use_cayley_neumann: false }).extra).toBe(TOKENS_LAYERS * 8192 + 5 * 2 * 2 * 2 * 32 ** 3);
  });

  it('SVFT replaces the base matmul of its targets', () => {
    // q (64→64): n = 64, band d = 1 → k = 3·64 − 2 = 190: 2·64·64 + 2·(64 + 190) + 2·64·64 − 2·64·64 = 8700
    // k (64→32): n = 32, k = 3·32 − 2 = 94:  2·32·64 + 2·(32 + 94) + 2·32·32 − 2·64·32 = 2300
    expect(probe('svft').extra).toBe(TOKENS_LAYERS * (8700 + 2300)); // 28 160 000
    // rank 4 on q: 2·4·64 + 2·(4 + 10) + 2·4·64 − 8192 = −7140: cheaper than the base layer
    expect(probe('svft', { target_modules: 'q_proj', rank: 4 }).extra).toBe(TOKENS_LAYERS * -7140);
  });

  it('prompt tuning: the sequence grows by n_v', () => {
    // T' = 522: 522·5·90 624 + 5·8·2·2·522·522·8 + 2·522·64·512
    const total = 522 * 5 * 90_624 + 5 * 8 * 2 * (2 * 522 * 522 * 8) + 2 * 522 * 64 * 512;
    expect(total).toBe(236_528_640 + 348_779_520 + 34_209_792);
    expect(probe('prompt-tuning', { num_virtual_tokens: 10 })).toMatchObject({ total, extra: total - BASE }); // extra 18 421 760
    // P-tuning adds its MLP encoder once: 2·n_v·(d·H + H·H + H·d), H = d = 64
    expect(probe('p-tuning', { num_virtual_tokens: 10 }).extra).toBe(total - BASE + 2 * 10 * 3 * 64 * 64);
    // LSTM (2 layers, bidirectional, H = 64): Σ_l 2·n_v·8·H·(in_l + H) + 2·n_v·(2H·2H + 2H·d)
    const lstm = 2 * 10 * 8 * 64 * (64 + 64) + 2 * 10 * 8 * 64 * (128 + 64) + 2 * 10 * (128 * 128 + 128 * 64);
    expect(probe('p-tuning', { num_virtual_tokens: 10, encoder_reparameterization_type: 'LSTM' }).extra).toBe(total - BASE + lstm);
    // MTP: per example 2·n_v·k·d + n_v·d = 1280 + 640
    expect(probe('mtp', { num_virtual_tokens: 10 }).extra).toBe(total - BASE + 1920);
  });

  it('prefix tuning: every query attends to n_v more keys', () => {
    // N · n_h · 2 · (2·T·n_v·h_d) = 5·8·2·(2·512·10·8)
    expect(probe('prefix-tuning', { num_virtual_tokens: 10 }).extra).toBe(6_553_600);
    expect(probe('p-tuning-v2', { num_virtual_tokens: 10 }).extra).toBe(6_553_600);
    expect(() => probe('p-tuning-v2', { num_virtual_tokens: 10, prefix_projection: true })).toThrow(/does not apply to finetuning_type p-tuning-v2/);
    // projection: D = n_kv·h_d = 32, H = D, F = 2·N·D = 320: 2·10·(32·32 + 32·320) = 225 280
    expect(probe('prefix-tuning', { num_virtual_tokens: 10, prefix_projection: true }).extra).toBe(6_553_600 + 225_280);
  });

  it('bottleneck adapters: 2·2·d·m per point per token, m = d / 16 = 4', () => {
    expect(probe('bn-adapter').extra).toBe(TOKENS_LAYERS * 2 * (2 * 64 * 4 + 2 * 4 * 64)); // 5 242 880
    expect(probe('seq-bn-adapter').extra).toBe(TOKENS_LAYERS * 1024);
    expect(probe('par-adapter', { reduction_factor: 2 }).extra).toBe(TOKENS_LAYERS * 4 * 64 * 32);
    expect(probe('bn-adapter', { mh_adapter: false }).extra).toBe(TOKENS_LAYERS * 1024);
  });

  it('IA3 and BitFit: their elementwise ops', () => {
    // IA3: k out 32 + v out 32 + down in 172 = 236 multiplies per token per layer
    expect(probe('ia3').extra).toBe(TOKENS_LAYERS * 236); // 604 160
    // BitFit: q out 64 + v out 32 = 96 adds
    expect(probe('bitfit').extra).toBe(TOKENS_LAYERS * 96); // 245 760
  });

  it('VeRA r = 256 on q, v: 2·r·(in + out) per token per target', () => {
    // q 2·256·128 = 65 536, v 2·256·96 = 49 152
    expect(probe('vera').extra).toBe(TOKENS_LAYERS * (65_536 + 49_152));
  });

  it('every installed method has a count', () => {
    const needs = { num_virtual_tokens: 4 };
    for (const m of installedMethods()) expect(Number.isFinite(forwardFlops(cfg, { method: m.method, methodConfig: needs }).total), m.name).toBe(true);
  });

  it('names what is missing or unknown', () => {
    expect(() => probe('prompt-tuning')).toThrow(/num_virtual_tokens/);
    expect(() => probe('adalora')).toThrow(ConfigError);
    expect(() => probe('lora', { lora_target: 'nothing_proj' })).toThrow(/matches no linear layer/);
    expect(() => forwardFlops(cfg, { batch: 0 })).toThrow(ConfigError);
  });
});
