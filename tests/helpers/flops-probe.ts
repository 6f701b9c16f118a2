/**
 * PSCP's FLOPs probe on stories260K for a method's own tests: one 1×512
 * forward (src/eval/flops.ts), the method's flops() on top of the base count.
 * stories260K: d = 64, n_h = 8, n_kv = 4, h_d = 8, d_ff = 172, N = 5, V = 512, tied head.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { forwardFlops, type ForwardFlops } from '../../src/eval/flops';
import type { PeftMethod } from '../../src/methods/types';
import { parseModelConfig } from '../../src/model/config';
import { testHubRoot } from './hub-server';

const file = path.join(testHubRoot(), 'models', 'stories260K', 'config.json');
export const stories260K = parseModelConfig(JSON.parse(readFileSync(file, 'utf8')), file);

/** Tokens × layers of the probe: per-token, per-layer counts are multiplied by this. */
export const TOKENS_LAYERS = 512 * 5;

/**
 * The base model's forward on T tokens, by hand: projections T·N·90 624
 * (2·in·out summed over q, k, v, o, gate, up, down), attention N·n_h·2·(2·T·T·h_d),
 * lm_head 2·T·d·V. baseFlops(512) = 601 096 192.
 */
export function baseFlops(T: number): number {
  return T * 5 * 90_624 + 5 * 8 * 2 * (2 * T * T * 8) + 2 * T * 64 * 512;
}

export function probe(method: PeftMethod, methodConfig: Record<string, unknown> = {}): ForwardFlops {
  return forwardFlops(stories260K, { batch: 1, seq: 512, method, methodConfig });
}
