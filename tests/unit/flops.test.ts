import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { forwardFlops, linearLayers } from '../../src/eval/flops';
import { installedMethods } from '../../src/methods/registry';
import { parseModelConfig } from '../../src/model/config';
import { ConfigError } from '../../src/errors';
import { testHubRoot } from '../helpers/hub-server';

// stories260K: d = 64, n_h = 8, n_kv = 4, h_d = 8, d_ff = 172, N = 5, V = 512, tied head.
const file = path.join(testHubRoot(), 'models', 'stories260K', 'config.json');
const cfg = parseModelConfig(JSON.parse(readFileSync(file, 'utf8')), file);
/** The bare model's count (each method's own part is tested in its folder, with tests/helpers/flops-probe.ts). */
const probe = () => forwardFlops(cfg, { batch: 1, seq: 512 });

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

describe("forwardFlops: stories260K, 1×512 probe (the base model; each method's FLOPs are tested in its folder)", () => {
  it('base model, hand-computed', () => {
    expect(PROJ_PER_TOKEN_LAYER).toBe(90_624);
    expect(512 * 5 * PROJ_PER_TOKEN_LAYER + 5 * ATTN_PER_LAYER + LM_HEAD).toBe(BASE);
    const f = probe();
    expect(f).toEqual({ total: BASE, base: BASE, extra: 0, parts: { projections: 231_997_440, attention: 335_544_320, lmHead: 33_554_432, method: 0 } });
    expect(linearLayers(cfg)).toHaveLength(35);
  });

  it('batch scales everything linearly; the probe defaults to 1×512', () => {
    expect(forwardFlops(cfg, {}).total).toBe(BASE);
    expect(forwardFlops(cfg, { batch: 2, seq: 512 }).total).toBe(2 * BASE);
  });

  it('every installed method has a count', () => {
    const needs = { num_virtual_tokens: 4 };
    for (const m of installedMethods()) expect(Number.isFinite(forwardFlops(cfg, { method: m.method, methodConfig: needs }).total), m.name).toBe(true);
  });

  it('names a bad probe; a method whose flops() is not a number is named too', () => {
    expect(() => forwardFlops(cfg, { batch: 0 })).toThrow(ConfigError);
    const broken = { ...installedMethods()[0].method, name: 'broken', flops: () => ({ flops: Number.NaN }) };
    expect(() => forwardFlops(cfg, { method: broken })).toThrow(/broken: its flops\(\) returned NaN/);
  });
});
