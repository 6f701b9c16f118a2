/**
 * Forward-pass FLOPs, counted analytically from the model config and the
 * method (PSCP's M_f: one forward of a batch × seq probe, 1 × 512 by default).
 * Legend: B batch, T sequence, d hidden, n_h / n_kv heads, h_d head dim,
 * d_ff intermediate, N layers, V vocab, n_v virtual tokens, r rank.
 *
 * Base model (LLaMA decoder, what a dense kernel computes):
 *   projections  B·T · N · Σ_{q,k,v,o,gate,up,down} 2·in·out
 *   attention    N · B · n_h · (2·T·T·h_d [QKᵀ] + 2·T·T·h_d [AV])
 *   lm_head      2·B·T·d·V            (logits at every position; tied or not)
 * A matmul [m×k]·[k×n] is 2·m·n·k FLOPs (one multiply and one add per MAC;
 * fvcore counts one per MAC, DeepSpeed's profiler two). Causal attention is
 * counted as the full T×T square, as a masked dense kernel computes it and as
 * fvcore / DeepSpeed count it (a causal-aware count would halve it); the same
 * with a sliding window. Elementwise work of the base model (RMSNorm, RoPE,
 * softmax, SiLU, residual adds, biases) and the embedding lookup are not
 * counted: they are O(B·T·d) next to O(B·T·d²) and the usual convention
 * leaves them out.
 *
 * Method extras: what a method adds to that forward, as PEFT Studio runs it
 * unmerged, is the method's own `flops(ctx)` (src/methods/types.ts), in its
 * folder next to the code it counts: extra matmuls, virtual tokens that
 * lengthen the sequence (every projection, attention and the lm_head see
 * them), base matmuls it replaces. A method that only replaces weights
 * (full fine-tuning, LN tuning) adds 0. Elementwise epilogues next to a
 * method's matmuls (LoRA's scale and add, adapter biases and activations) are
 * left out like the base model's; a method whose whole addition is
 * elementwise (IA3, BitFit) counts it.
 */
import { ConfigError } from '../errors';
import { matchTargets, type PeftMethod } from '../methods/types';
import type { ModelConfig } from '../model/config';

/** PSCP's probe: one sequence of 512 tokens. */
export const PSCP_PROBE = { batch: 1, seq: 512 } as const;

export interface FlopsOptions {
  batch?: number;
  seq?: number;
  /** The method (resolveMethod(config)); unset: the bare base model. */
  method?: PeftMethod;
  /** The experiment config (the method reads its own keys). */
  methodConfig?: Record<string, unknown>;
}

export interface FlopsParts {
  projections: number;
  attention: number;
  lmHead: number;
  /** The method's own work (its matmuls, prefix attention, encoders). */
  method: number;
}

export interface ForwardFlops {
  /** The whole forward with the method. */
  total: number;
  /** The base model on the same probe. */
  base: number;
  /** total − base. */
  extra: number;
  parts: FlopsParts;
}

export interface LinearLayer {
  /** Module path, e.g. model.layers.0.self_attn.q_proj. */
  name: string;
  inF: number;
  outF: number;
}

/** The seven projections of every decoder layer, as LlamaModel.linearNames() orders them. */
export function linearLayers(c: ModelConfig): LinearLayer[] {
  const q = c.numHeads * c.headDim,
    kv = c.numKvHeads * c.headDim;
  const shapes: [string, number, number][] = [
    ['self_attn.q_proj', c.hiddenSize, q],
    ['self_attn.k_proj', c.hiddenSize, kv],
    ['self_attn.v_proj', c.hiddenSize, kv],
    ['self_attn.o_proj', q, c.hiddenSize],
    ['mlp.gate_proj', c.hiddenSize, c.intermediateSize],
    ['mlp.up_proj', c.hiddenSize, c.intermediateSize],
    ['mlp.down_proj', c.intermediateSize, c.hiddenSize],
  ];
  const out: LinearLayer[] = [];
  for (let l = 0; l < c.numLayers; l++) for (const [n, inF, outF] of shapes) out.push({ name: `model.layers.${l}.${n}`, inF, outF });
  return out;
}

function baseParts(c: ModelConfig, linears: LinearLayer[], B: number, T: number, replaced: ReadonlySet<string>): Omit<FlopsParts, 'method'> {
  let perToken = 0;
  for (const l of linears) if (!replaced.has(l.name)) perToken += 2 * l.inF * l.outF;
  return {
    projections: B * T * perToken,
    attention: c.numLayers * B * c.numHeads * 2 * (2 * T * T * c.headDim),
    lmHead: 2 * B * T * c.hiddenSize * c.vocabSize,
  };
}

/**
 * The linears a target option selects (matchTargets), for a method's flops();
 * an empty match is the same error the method's attach raises.
 */
export function flopsTargets(linears: LinearLayer[], target: unknown, key: string, method: string): LinearLayer[] {
  const names = new Set(
    matchTargets(
      linears.map((l) => l.name),
      target,
    ),
  );
  const out = linears.filter((l) => names.has(l.name));
  if (out.length === 0)
    throw new ConfigError(`${key} ${JSON.stringify(target)} matches no linear layer, so ${method} adapts nothing; use names such as q_proj, v_proj or 'all'.`);
  return out;
}

const sum = (p: object): number => Object.values(p).reduce((s: number, v) => s + (v as number), 0);

export function forwardFlops(config: ModelConfig, options: FlopsOptions): ForwardFlops {
  const B = options.batch ?? PSCP_PROBE.batch;
  const T = options.seq ?? PSCP_PROBE.seq;
  for (const [k, v] of [
    ['batch', B],
    ['seq', T],
  ] as const) {
    if (!(Number.isInteger(v) && v >= 1)) throw new ConfigError(`forwardFlops: ${k} must be a positive integer, got ${v}.`);
  }
  const linears = linearLayers(config);
  const m = options.method ? options.method.flops({ model: config, linears, batch: B, seq: T, config: options.methodConfig ?? {} }) : { flops: 0 };
  if (!Number.isFinite(m.flops)) throw new ConfigError(`${options.method?.name}: its flops() returned ${m.flops}, not a number of FLOPs.`);
  const parts: FlopsParts = { ...baseParts(config, linears, B, T + (m.virtualTokens ?? 0), new Set(m.replaced ?? [])), method: m.flops };
  const total = sum(parts);
  const base = sum(baseParts(config, linears, B, T, new Set()));
  return { total, base, extra: total - base, parts };
}
