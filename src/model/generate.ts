/**
 * Generation with a KV cache: the prompt is run once, then one token per
 * step. Greedy at temperature 0; otherwise temperature, top-k and top-p
 * (nucleus) sampling with a seeded RNG, as in HF `generate`: logits / T, keep
 * the k largest, then the smallest set whose probability reaches p.
 */
import type { LlamaModel } from './llama';

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
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
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
    let cum = 0, keep = 0;
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
  const V = model.config.vocabSize;
  try {
    let input = Int32Array.from(promptIds);
    for (let step = 0; step < opts.maxNewTokens; step++) {
      if (opts.signal?.aborted) break;
      e.beginScope();
      let last: Float32Array;
      try {
        const logits = model.forward(input, 1, { cache });
        last = await e.readRegion(logits, (input.length - 1) * V, V);
      } finally {
        e.endScope();
      }
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
