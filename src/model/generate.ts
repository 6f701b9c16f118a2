/**
 * Generation with a KV cache: the prompt is run once, then one token per
 * step. Greedy at temperature 0; otherwise temperature, top-k and top-p
 * (nucleus) sampling with a seeded RNG, as in HF `generate`: logits / T, keep
 * the k largest, then the smallest set whose probability reaches p.
 */
import type { LlamaModel } from './llama';
import { lastPositionLogits } from './logits';

export interface GenerateOptions {
  maxNewTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Stop when one of these is produced (it is included in the output). */
  stopIds?: number[];
  onToken?: (id: number) => void;
  signal?: AbortSignal;
}

/** xorshift32-based PRNG; same sequence in every host. */
export function seededRandom(seed: number): () => number {
  let s = (seed >>> 0) ^ 0x9e3779b9 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function sampleToken(logits: Float32Array, opts: GenerateOptions, rand: () => number): number {
  const T = opts.temperature ?? 0;
  if (T <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let idx = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  if (opts.topK && opts.topK > 0) idx = idx.slice(0, opts.topK);
  const mx = logits[idx[0]];
  let probs = idx.map((i) => Math.exp((logits[i] - mx) / T));
  let z = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / z);
  if (opts.topP !== undefined && opts.topP < 1) {
    let cum = 0,
      keep = 0;
    while (keep < probs.length && cum < opts.topP) cum += probs[keep++];
    idx = idx.slice(0, Math.max(1, keep));
    probs = probs.slice(0, idx.length);
    z = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / z);
  }
  let u = rand();
  for (let i = 0; i < idx.length; i++) {
    u -= probs[i];
    if (u <= 0) return idx[i];
  }
  return idx[idx.length - 1];
}

export async function generate(model: LlamaModel, promptIds: number[], opts: GenerateOptions): Promise<number[]> {
  const e = model.e;
  if (promptIds.length === 0) throw new Error('generate: the prompt has no tokens (add BOS)');
  const capacity = promptIds.length + opts.maxNewTokens;
  const cache = model.newCache(1, capacity);
  const rand = seededRandom(opts.seed ?? 0);
  const stop = new Set(opts.stopIds ?? []);
  const out: number[] = [];
  try {
    let input = Int32Array.from(promptIds);
    for (let step = 0; step < opts.maxNewTokens; step++) {
      if (opts.signal?.aborted) break;
      const last = await lastPositionLogits(model, input, 1, { cache });
      const id = sampleToken(last, opts, rand);
      out.push(id);
      opts.onToken?.(id);
      if (stop.has(id)) break;
      input = Int32Array.from([id]);
    }
  } finally {
    cache.dispose();
    e.flush();
  }
  return out;
}

export interface BatchGenerateOptions {
  maxNewTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Pad id for left padding (any valid id: padded positions are masked). */
  padId: number;
  /** A sequence stops when it produces one of these (included in its output). */
  stopIds?: number[];
  /** A sequence also stops when this returns true for its tokens so far (e.g. a complete label word). */
  shouldStop?: (index: number, tokens: number[]) => boolean;
  /** Per-prompt task ids (multitask prompt tuning). */
  taskIds?: Int32Array;
  signal?: AbortSignal;
}

/**
 * Several prompts at once with one KV cache: prompts are left-padded (mask 0,
 * so positions and attention skip the padding), every step advances all
 * sequences by one token, and a finished sequence keeps being fed its last
 * token (its outputs are ignored) until all are done. Greedy output equals
 * `generate` on each prompt alone.
 */
export async function generateBatch(model: LlamaModel, prompts: number[][], opts: BatchGenerateOptions): Promise<number[][]> {
  const e = model.e;
  const B = prompts.length;
  if (B === 0) return [];
  if (prompts.some((p) => p.length === 0)) throw new Error('generateBatch: a prompt has no tokens (add BOS)');
  const L = Math.max(...prompts.map((p) => p.length));
  const ids = new Int32Array(B * L).fill(opts.padId);
  const mask = new Int32Array(B * L);
  prompts.forEach((p, b) => {
    ids.set(p, b * L + L - p.length);
    mask.fill(1, b * L + L - p.length, (b + 1) * L);
  });
  const cache = model.newCache(B, L + opts.maxNewTokens);
  const rand = seededRandom(opts.seed ?? 0);
  const stop = new Set(opts.stopIds ?? []);
  const V = model.config.vocabSize;
  const out: number[][] = prompts.map(() => []);
  const done = new Array<boolean>(B).fill(false);
  try {
    let input = ids,
      inputMask = mask;
    for (let step = 0; step < opts.maxNewTokens && done.includes(false); step++) {
      if (opts.signal?.aborted) break;
      // Left padding: every sequence's last position is the batch's last.
      const last = await lastPositionLogits(model, input, B, { cache, attentionMask: inputMask, taskIds: opts.taskIds });
      const next = new Int32Array(B);
      for (let b = 0; b < B; b++) {
        if (done[b]) {
          next[b] = out[b].at(-1) ?? opts.padId;
          continue;
        }
        const id = sampleToken(last.subarray(b * V, (b + 1) * V), opts, rand);
        out[b].push(id);
        next[b] = id;
        if (stop.has(id) || opts.shouldStop?.(b, out[b])) done[b] = true;
      }
      input = next;
      inputMask = new Int32Array(B).fill(1);
    }
  } finally {
    cache.dispose();
    e.flush();
  }
  return out;
}
