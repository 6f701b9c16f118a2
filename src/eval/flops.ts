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
 * Method extras (what each method adds to that forward, as PEFT Studio runs it
 * unmerged), keyed by the method folder name (methodNameFor(config)):
 *   lora, qlora, pissa  per token, per target: 2·r·(in + out)  (A then B).
 *                       QLoRA's NF4 dequantization is not counted.
 *   dora          LoRA's, plus per token out (the g ⊙ rescale), plus per forward
 *                 per target the detached row norms as src/engine/ops/dora.ts
 *                 computes them: 2·r·in·out (A Wᵀ) + 2·r²·in (A Aᵀ)
 *                 + out·(2r² + 4r) (the quadratic forms).
 *   oft           per token per target: 2·b·in (block-diagonal rotation of the
 *                 input, b after PEFT's adjustment); per forward per stored
 *                 block: 2·b³ per b×b product of the Cayley–Neumann polynomial
 *                 (degree D needs D − 1 products), or 2·b³ for the exact
 *                 Cayley inverse.
 *   svft          the base matmul of a target is replaced by
 *                 z = x Vᵀ (2·n·in), z' = z (diag(s) + σ(g)M)ᵀ (2·(n + k), k the
 *                 pattern size), y = z' Uᵀ (2·n·out): the extra is that minus
 *                 2·in·out (negative when a truncated rank makes it cheaper).
 *   prompt-tuning, p-tuning, mtp
 *                 the sequence grows to T + n_v (every projection, attention
 *                 and the lm_head see it), plus the prompt encoder once:
 *                 prompt-tuning none (a table); p-tuning MLP 2·n_v·(d·H + H·H + H·d),
 *                 LSTM Σ_layers 2 dirs · n_v · 8·H·(in_l + H) then
 *                 2·n_v·(2H·2H + 2H·d); mtp per example 2·n_v·k·d + n_v·d
 *                 (the rank-k task factor and the Hadamard product).
 *   prefix-tuning, p-tuning-v2
 *                 every query also attends to n_v prefix keys and values:
 *                 N · B · n_h · 2 · (2·T·n_v·h_d); with prefix_projection the
 *                 encoder once, 2·n_v·(D·H + H·F), D = n_kv·h_d, F = 2·N·D.
 *   bn-adapter, seq-bn-adapter, par-adapter
 *                 per token per insertion point: 2·d·m (down) + 2·m·d (up),
 *                 m = ⌊d / reduction_factor⌋; points per layer: bn 2
 *                 (mh_adapter, output_adapter), seq-bn and par 1.
 *   ia3           per token: one multiply per scaled feature (out of k, v;
 *                 in of down_proj, the feed-forward target).
 *   bitfit        per token: one add per output of each target.
 *   lntuning, full, freeze, galore, base   0 (weights are replaced, not added to).
 * Only IA3 and BitFit count elementwise work, because it is all they add;
 * elementwise epilogues next to a method's matmuls (LoRA's scale and add,
 * adapter biases and activations) are left out like the base model's.
 *
 * Config keys are resolved by the method folders' own functions (loraScaling,
 * oftSettings/oftBlocks, svftSettings/svftSize, pTuningSpec, prefixOptionsOf,
 * ia3Targets, bitfitTargets, requireVirtualTokens), so the count sees the
 * targets and sizes the method attaches: lora_rank, lora_target ('all'); oft_*;
 * target_modules, rank, off_diag, pattern, fill_orthonormal (SVFT);
 * num_virtual_tokens (required by the prompt methods), encoder_hidden_size,
 * encoder_reparameterization_type, encoder_num_layers, prefix_projection,
 * num_ranks; target_modules / feedforward_modules (IA3, BitFit). The bottleneck
 * adapters read reduction_factor (16), mh_adapter and output_adapter here.
 */
import { cayleyNeumannCoefficients } from '../engine/ops/oft';
import { ConfigError } from '../errors';
import { matchTargets } from '../methods/types';
import type { ModelConfig } from '../model/config';
import { bitfitTargets } from '../../peft/bitfit/method';
import { ia3Targets } from '../../peft/ia3/method';
import { loraScaling } from '../../peft/lora/method';
import { oftBlocks, oftSettings } from '../../peft/oft/method';
import { prefixDims, prefixOptionsOf } from '../../peft/prefix-tuning/method';
import { positiveInt, requireVirtualTokens } from '../../peft/prompt-tuning/prompt';
import { pTuningSpec } from '../../peft/p-tuning/method';
import { svftSettings, svftSize, svftTargetCount } from '../../peft/svft/method';

/** PSCP's probe: one sequence of 512 tokens. */
export const PSCP_PROBE = { batch: 1, seq: 512 } as const;

export const FLOPS_METHODS = [
  'base', 'full', 'freeze', 'galore', 'lntuning',
  'lora', 'qlora', 'pissa', 'dora', 'oft', 'svft',
  'prompt-tuning', 'p-tuning', 'mtp', 'prefix-tuning', 'p-tuning-v2',
  'bn-adapter', 'seq-bn-adapter', 'par-adapter', 'ia3', 'bitfit',
] as const;

export interface FlopsOptions {
  batch?: number;
  seq?: number;
  /** Method folder name (methodNameFor(config)), or 'base' for the bare model. */
  method: string;
  /** The experiment config (its method keys; see the file comment). */
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
  const q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
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

interface MethodCount {
  /** Tokens the method prepends to the sequence. */
  virtualTokens: number;
  /** Linears whose base matmul the method replaces. */
  replaced: Set<string>;
  flops: number;
}

function targetsOf(linears: LinearLayer[], target: unknown, key: string, method: string): LinearLayer[] {
  const names = new Set(matchTargets(linears.map((l) => l.name), target));
  const out = linears.filter((l) => names.has(l.name));
  if (out.length === 0) throw new ConfigError(`${key} ${JSON.stringify(target)} matches no linear layer, so ${method} adapts nothing; use names such as q_proj, v_proj or 'all'.`);
  return out;
}

/** Positions of a width-d band in an n×n matrix: Σ_i (min(n−1, i+d) − max(0, i−d) + 1). */
function bandSize(n: number, d: number): number {
  let k = 0;
  for (let i = 0; i < n; i++) k += Math.min(n - 1, i + d) - Math.max(0, i - d) + 1;
  return k;
}

function methodCount(c: ModelConfig, linears: LinearLayer[], B: number, T: number, method: string, mc: Record<string, unknown>): MethodCount {
  const count: MethodCount = { virtualTokens: 0, replaced: new Set(), flops: 0 };
  const d = c.hiddenSize;
  const tokens = B * T;
  switch (method) {
    case 'base':
    case 'full':
    case 'freeze':
    case 'galore':
    case 'lntuning':
      return count;
    case 'lora':
    case 'qlora':
    case 'pissa':
    case 'dora': {
      const { r } = loraScaling(mc);
      if (!(Number.isInteger(r) && r >= 1)) throw new ConfigError(`lora_rank: expected a positive integer, got ${JSON.stringify(mc.lora_rank)}.`);
      for (const l of targetsOf(linears, mc.lora_target ?? 'all', 'lora_target', method)) {
        count.flops += tokens * 2 * r * (l.inF + l.outF);
        if (method === 'dora') count.flops += tokens * l.outF + 2 * r * l.inF * l.outF + 2 * r * r * l.inF + l.outF * (2 * r * r + 4 * r);
      }
      return count;
    }
    case 'oft': {
      const s = oftSettings(mc);
      const coeffs = s.useCayleyNeumann ? cayleyNeumannCoefficients(s.terms, s.formula) : null;
      for (const l of targetsOf(linears, s.targets, 'oft_target', method)) {
        const { r, b } = oftBlocks(l.inF, s.rank, s.blockSize);
        const products = coeffs ? Math.max(0, coeffs.length - 2) : 1;
        count.flops += tokens * 2 * b * l.inF + (s.blockShare ? 1 : r) * products * 2 * b ** 3;
      }
      return count;
    }
    case 'svft': {
      const s = svftSettings(mc);
      for (const l of targetsOf(linears, s.targets, 'target_modules', method)) {
        const n = svftSize(l.outF, l.inF, s.rank, s.fillOrthonormal);
        const k = s.pattern === 'banded' ? bandSize(n, s.offDiag) : svftTargetCount(n, s.offDiag);
        count.flops += tokens * (2 * n * l.inF + 2 * (n + k) + 2 * n * l.outF);
        count.replaced.add(l.name);
      }
      return count;
    }
    case 'prompt-tuning':
      count.virtualTokens = requireVirtualTokens(mc, method);
      return count;
    case 'p-tuning': {
      const { kind, nV: nv, H, layers } = pTuningSpec(mc, d);
      count.virtualTokens = nv;
      if (kind === 'MLP') {
        count.flops = 2 * nv * (d * H + H * H + H * d);
      } else {
        // Per direction, token and layer: four gates, each an input and a recurrent matmul.
        for (let i = 0; i < layers; i++) count.flops += 2 * nv * 8 * H * ((i === 0 ? d : 2 * H) + H);
        count.flops += 2 * nv * (2 * H * 2 * H + 2 * H * d);
      }
      return count;
    }
    case 'mtp': {
      const nv = (count.virtualTokens = requireVirtualTokens(mc, method));
      const k = positiveInt(mc, 'num_ranks', 1, method);
      count.flops = B * (2 * nv * k * d + nv * d);
      return count;
    }
    case 'prefix-tuning':
    case 'p-tuning-v2': {
      const o = prefixOptionsOf(mc, method);
      count.flops = c.numLayers * B * c.numHeads * 2 * (2 * T * o.nv * c.headDim);
      if (o.projection) {
        const { D, H, F } = prefixDims(c, o.nv, o.H);
        count.flops += 2 * o.nv * (D * H + H * F);
      }
      return count;
    }
    case 'bn-adapter':
    case 'seq-bn-adapter':
    case 'par-adapter': {
      const rf = mc.reduction_factor === undefined || mc.reduction_factor === null ? 16 : Number(mc.reduction_factor);
      if (!(rf > 0)) throw new ConfigError(`reduction_factor: expected a positive number, got ${JSON.stringify(mc.reduction_factor)}.`);
      const m = Math.max(1, Math.floor(d / rf));
      const flag = (key: string, fallback: boolean) => (mc[key] === undefined || mc[key] === null ? fallback : mc[key] === true);
      const points = (flag('mh_adapter', method === 'bn-adapter') ? 1 : 0) + (flag('output_adapter', true) ? 1 : 0);
      count.flops = tokens * c.numLayers * points * (2 * d * m + 2 * m * d);
      return count;
    }
    case 'ia3': {
      const { targets, feedforward } = ia3Targets(linears.map((l) => l.name), mc);
      const chosen = new Set(targets);
      for (const l of linears) if (chosen.has(l.name)) count.flops += tokens * (feedforward.has(l.name) ? l.inF : l.outF);
      return count;
    }
    case 'bitfit': {
      const chosen = new Set(bitfitTargets(linears.map((l) => l.name), mc));
      for (const l of linears) if (chosen.has(l.name)) count.flops += tokens * l.outF;
      return count;
    }
    default:
      throw new ConfigError(`No FLOPs count for method ${JSON.stringify(method)}. Known: ${FLOPS_METHODS.join(', ')}.`);
  }
}

const sum = (p: object): number => Object.values(p).reduce((s: number, v) => s + (v as number), 0);

export function forwardFlops(config: ModelConfig, options: FlopsOptions): ForwardFlops {
  const B = options.batch ?? PSCP_PROBE.batch;
  const T = options.seq ?? PSCP_PROBE.seq;
  for (const [k, v] of [['batch', B], ['seq', T]] as const) {
    if (!(Number.isInteger(v) && v >= 1)) throw new ConfigError(`forwardFlops: ${k} must be a positive integer, got ${v}.`);
  }
  const linears = linearLayers(config);
  const m = methodCount(config, linears, B, T, options.method, options.methodConfig ?? {});
  const parts: FlopsParts = { ...baseParts(config, linears, B, T + m.virtualTokens, m.replaced), method: m.flops };
  const total = sum(parts);
  const base = sum(baseParts(config, linears, B, T, new Set()));
  return { total, base, extra: total - base, parts };
}
