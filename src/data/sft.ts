/**
 * Supervised fine-tuning examples, from text to batches, as LLaMA-Factory's
 * SupervisedDatasetProcessor and the HF Trainer do (METHODS.md §21):
 *
 *   readAlpacaJsonl → alpacaToExample → takeMaxSamples → encodeExample
 *   (template, truncation, loss mask) → [packExamples] → splitTrainVal →
 *   collate (right padding to a multiple of 8) → shiftLabels for the loss.
 *
 * Legend: B = batch size, T = padded sequence length; arrays of a batch are
 * row-major B × T. IGNORE_INDEX (-100) marks positions without a loss.
 */
import type { ExperimentConfig } from '../config/schema';
import { ConfigError } from '../errors';
import type { Tokenizer } from '../model/tokenizer';
import { encodeTurn, type Turn } from './template';

export const IGNORE_INDEX = -100;

// ---------------------------------------------------------------------------
// Reading

/** One row of an Alpaca-format dataset (LLaMA-Factory's `formatting: alpaca`). */
export interface AlpacaRecord {
  instruction: string;
  input?: string;
  output: string;
  system?: string;
}

/** One supervised exchange: the user turn, the answer, an optional system text. */
export type SftExample = Turn;

function optionalString(obj: Record<string, unknown>, field: string, where: string): string | undefined {
  const v = obj[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ConfigError(`${where}: field "${field}" must be a string, got ${JSON.stringify(v)}.`);
  return v;
}

/**
 * Parses JSON Lines of Alpaca records: one object per line with string fields
 * "instruction" and "output" (required), "input" and "system" (optional; null
 * counts as absent). Blank lines are skipped; other fields are ignored.
 */
export function readAlpacaJsonl(text: string, source: string): AlpacaRecord[] {
  const out: AlpacaRecord[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${source}, line ${i + 1}`;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new ConfigError(`${where}: not valid JSON (${(e as Error).message}). Each line must be one JSON object.`);
    }
    if (row === null || typeof row !== 'object' || Array.isArray(row)) {
      throw new ConfigError(`${where}: expected a JSON object like {"instruction": ..., "output": ...}, got ${JSON.stringify(row)}.`);
    }
    const obj = row as Record<string, unknown>;
    for (const field of ['instruction', 'output']) {
      if (!Object.hasOwn(obj, field) || obj[field] === null) {
        throw new ConfigError(
          `${where}: missing field "${field}". Alpaca rows need "instruction" and "output" (and optionally "input", "system"); found ${
            Object.keys(obj)
              .map((k) => `"${k}"`)
              .join(', ') || 'no fields'
          }.`,
        );
      }
    }
    const rec: AlpacaRecord = { instruction: optionalString(obj, 'instruction', where)!, output: optionalString(obj, 'output', where)! };
    const input = optionalString(obj, 'input', where);
    const system = optionalString(obj, 'system', where);
    if (input !== undefined) rec.input = input;
    if (system !== undefined) rec.system = system;
    out.push(rec);
  });
  return out;
}

/** LLaMA-Factory's Alpaca converter: user turn = instruction and input joined by "\n" (empty parts left out). */
export function alpacaToExample(r: AlpacaRecord): SftExample {
  const prompt = [r.instruction, r.input ?? ''].filter((s) => s.length > 0).join('\n');
  return r.system ? { prompt, response: r.output, system: r.system } : { prompt, response: r.output };
}

/** `max_samples`: the first N items (LLaMA-Factory selects range(N), no shuffle). */
export function takeMaxSamples<T>(items: readonly T[], maxSamples: number | null | undefined): T[] {
  return maxSamples === null || maxSamples === undefined ? items.slice() : items.slice(0, maxSamples);
}

// ---------------------------------------------------------------------------
// Encoding

export interface EncodeOptions {
  /** A template name (template.ts), 'chat', or unset: chat if the tokenizer has a chat template, else default. */
  template?: string | null;
  cutoffLen: number;
  /** Label the prompt tokens too (default false: -100). */
  trainOnPrompt?: boolean;
  /** Plain templates: start with the tokenizer's BOS (default true; false = LLaMA-Factory exact). */
  addBos?: boolean;
}

export interface EncodedExample {
  inputIds: number[];
  /** Aligned with inputIds (HF convention): labels[t] is the label of token t, not of t+1. */
  labels: number[];
  /** Multitask prompt tuning: which task's prompt this example uses (default 0). */
  taskId?: number;
}

export interface EncodedSft extends EncodedExample {
  /** Whether cutoff_len cut the source or the target. */
  truncated: boolean;
}

/**
 * LLaMA-Factory's `infer_seqlen`: how many source and target tokens to keep
 * within a budget L. If 2·target < L the target keeps up to L; elif
 * 2·source < L it keeps L − source; else ⌊L·target/(source+target)⌋. The
 * source keeps min(source, L − kept target). Returns [source, target].
 */
export function inferSeqlen(sourceLen: number, targetLen: number, budget: number): [number, number] {
  let maxTarget: number;
  if (targetLen * 2 < budget) maxTarget = budget;
  else if (sourceLen * 2 < budget) maxTarget = budget - sourceLen;
  else maxTarget = Math.floor(budget * (targetLen / (sourceLen + targetLen)));
  const newTarget = Math.min(maxTarget, targetLen);
  const newSource = Math.min(Math.max(budget - newTarget, 0), sourceLen);
  return [newSource, newTarget];
}

/**
 * Turns of (source, target) ids → input ids and labels, truncated turn by
 * turn with the remaining budget and cut at the end (LLaMA-Factory
 * `_encode_data_example` without mask_history / efficient_eos).
 */
export function assembleTurns(turns: readonly { source: number[]; target: number[] }[], cutoffLen: number, trainOnPrompt: boolean): EncodedSft {
  const inputIds: number[] = [];
  const labels: number[] = [];
  let total = 0;
  let truncated = false;
  for (let i = 0; i < turns.length; i++) {
    const { source, target } = turns[i];
    if (total >= cutoffLen) {
      truncated = true;
      break;
    }
    const [s, t] = inferSeqlen(source.length, target.length, cutoffLen - total);
    if (s < source.length || t < target.length) truncated = true;
    total += s + t;
    const src = source.slice(0, s);
    const tgt = target.slice(0, t);
    inputIds.push(...src, ...tgt);
    labels.push(...(trainOnPrompt ? src : src.map(() => IGNORE_INDEX)), ...tgt);
  }
  return { inputIds, labels, truncated };
}

/**
 * One SFT example → input ids and aligned labels: the template renders
 * (source, target); source labels are -100 (or the ids with trainOnPrompt),
 * target labels are the target ids, which end with the template's EOS; both
 * are truncated to cutoffLen by inferSeqlen.
 */
export function encodeExample(tok: Tokenizer, ex: SftExample, opts: EncodeOptions): EncodedSft {
  if (!Number.isInteger(opts.cutoffLen) || opts.cutoffLen < 1) throw new ConfigError(`cutoff_len must be an integer ≥ 1, got ${opts.cutoffLen}.`);
  const turn = encodeTurn(tok, ex, opts.template, opts.addBos ?? true);
  return assembleTurns([turn], opts.cutoffLen, opts.trainOnPrompt ?? false);
}

/**
 * The prompt ids for generation (the source only), truncated as LLaMA-Factory's
 * UnsupervisedDatasetProcessor does for prediction: inferSeqlen against the
 * rendered reference answer (an empty answer, i.e. the template's closing
 * tokens, when there is none).
 */
export function encodePrompt(tok: Tokenizer, ex: { prompt: string; system?: string; response?: string }, opts: Omit<EncodeOptions, 'trainOnPrompt'>): number[] {
  const { source, target } = encodeTurn(tok, { prompt: ex.prompt, system: ex.system, response: ex.response ?? '' }, opts.template, opts.addBos ?? true);
  const [s] = inferSeqlen(source.length, target.length, opts.cutoffLen);
  return source.slice(0, s);
}

// ---------------------------------------------------------------------------
// Packing

export interface PackedExample extends EncodedExample {
  /** 1 everywhere, padding included (LLaMA-Factory without neat_packing). */
  attentionMask: number[];
  /** Restart at 0 for each packed example; 0 on padding. */
  positionIds: number[];
  /** Start offset of each packed example, then the end of the real tokens. */
  boundaries: number[];
}

export interface PackResult {
  blocks: PackedExample[];
  /** Examples longer than cutoffLen − 1, left out (LLaMA-Factory logs and drops them). */
  dropped: number;
}

/** With packing, LLaMA-Factory encodes every example with cutoff_len − 1 so that a block plus one pad is cutoff_len. */
export function packedCutoff(cutoffLen: number): number {
  return cutoffLen - 1;
}

/**
 * `packing: true`, as LLaMA-Factory's PackedSupervisedDatasetProcessor: within
 * each chunk of `batchSize` examples (its `preprocessing_batch_size`, 1000),
 * lengths are sorted and a greedy knapsack fills blocks of capacity
 * cutoffLen − 1, each time taking the longest example that still fits (of
 * equal lengths, the one seen last); each block is then right-padded to
 * exactly cutoffLen with pad ids, label -100, attention 1 and position 0.
 * Tokens attend across example boundaries (plain causal mask), as there;
 * positionIds and boundaries are given for engines that can use them.
 * Encode the examples with packedCutoff(cutoffLen).
 */
export function packExamples(examples: readonly EncodedExample[], cutoffLen: number, opts: { padId: number; batchSize?: number }): PackResult {
  const capacity = packedCutoff(cutoffLen);
  const chunk = opts.batchSize ?? 1000;
  const blocks: PackedExample[] = [];
  let dropped = 0;
  for (let start = 0; start < examples.length; start += chunk) {
    const part = examples.slice(start, start + chunk);
    const lengths: number[] = [];
    const byLength = new Map<number, number[]>();
    part.forEach((ex, i) => {
      const n = ex.inputIds.length;
      if (n > capacity) {
        dropped++;
        return;
      }
      lengths.push(n);
      if (!byLength.has(n)) byLength.set(n, []);
      byLength.get(n)!.push(i);
    });
    for (const knapsack of greedyKnapsack(lengths, capacity)) {
      const b: PackedExample = { inputIds: [], labels: [], attentionMask: [], positionIds: [], boundaries: [] };
      for (const n of knapsack) {
        const ex = part[byLength.get(n)!.pop()!];
        b.boundaries.push(b.inputIds.length);
        b.inputIds.push(...ex.inputIds);
        b.labels.push(...ex.labels);
        b.positionIds.push(...ex.inputIds.map((_, t) => t));
      }
      b.boundaries.push(b.inputIds.length);
      const pad = cutoffLen - b.inputIds.length;
      for (let i = 0; i < pad; i++) {
        b.inputIds.push(opts.padId);
        b.labels.push(IGNORE_INDEX);
        b.positionIds.push(0);
      }
      b.attentionMask = b.inputIds.map(() => 1);
      blocks.push(b);
    }
  }
  return { blocks, dropped };
}

/**
 * LLaMA-Factory's `greedy_knapsack`: sort ascending; fill one knapsack at a
 * time with the largest remaining number that fits (binary search), until
 * none fits. Returns the lengths of each knapsack in the order taken.
 */
export function greedyKnapsack(numbers: readonly number[], capacity: number): number[][] {
  const rest = [...numbers].sort((a, b) => a - b);
  const knapsacks: number[][] = [];
  while (rest.length) {
    const sack: number[] = [];
    let room = capacity;
    for (;;) {
      // bisect_right(rest, room) - 1: the last index whose value ≤ room.
      let lo = 0;
      let hi = rest.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (rest[mid] <= room) lo = mid + 1;
        else hi = mid;
      }
      if (lo === 0) break;
      room -= rest[lo - 1];
      sack.push(rest.splice(lo - 1, 1)[0]);
    }
    if (sack.length === 0) break; // only numbers > capacity left (callers drop those first)
    knapsacks.push(sack);
  }
  return knapsacks;
}

// ---------------------------------------------------------------------------
// Batching and the loss targets

export interface CollateInput extends EncodedExample {
  attentionMask?: number[];
  positionIds?: number[];
}

export interface Batch {
  /** B × T, right-padded with padId. */
  inputIds: Int32Array;
  /** B × T: 1 for tokens, 0 for padding (packed blocks keep their own mask). */
  attentionMask: Int32Array;
  /** B × T, aligned with inputIds (NOT shifted); padding -100. Shift with shiftLabels. */
  labels: Int32Array;
  /** B × T, only when some example carries positionIds (packing); 0..n-1 otherwise, 0 on padding. */
  positionIds?: Int32Array;
  B: number;
  T: number;
}

/**
 * Right padding to the longest sequence rounded up to padToMultipleOf
 * (default 8), as LLaMA-Factory's collator (DataCollatorForSeq2Seq with
 * pad_to_multiple_of=8, label_pad_token_id=-100).
 */
export function collate(examples: readonly CollateInput[], opts: { padId: number; padToMultipleOf?: number }): Batch {
  const m = opts.padToMultipleOf ?? 8;
  if (examples.length === 0) throw new RangeError('collate: empty batch.');
  if (!Number.isInteger(m) || m < 1) throw new RangeError(`collate: padToMultipleOf must be an integer ≥ 1, got ${m}.`);
  const B = examples.length;
  const longest = Math.max(...examples.map((x) => x.inputIds.length));
  const T = Math.ceil(longest / m) * m;
  const inputIds = new Int32Array(B * T).fill(opts.padId);
  const attentionMask = new Int32Array(B * T);
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  const withPositions = examples.some((x) => x.positionIds);
  const positionIds = withPositions ? new Int32Array(B * T) : undefined;
  examples.forEach((x, b) => {
    const n = x.inputIds.length;
    if (x.labels.length !== n) throw new RangeError(`collate: example ${b} has ${n} input ids but ${x.labels.length} labels.`);
    inputIds.set(x.inputIds, b * T);
    labels.set(x.labels, b * T);
    if (x.attentionMask) attentionMask.set(x.attentionMask, b * T);
    else attentionMask.fill(1, b * T, b * T + n);
    if (positionIds) {
      if (x.positionIds) positionIds.set(x.positionIds, b * T);
      else for (let t = 0; t < n; t++) positionIds[b * T + t] = t;
    }
  });
  return positionIds ? { inputIds, attentionMask, labels, positionIds, B, T } : { inputIds, attentionMask, labels, B, T };
}

/**
 * Next-token targets (transformers ForCausalLMLoss): target[b, t] =
 * labels[b, t+1], and the last position of each row gets -100. The loss at
 * position t compares logits[b, t] with target[b, t].
 */
export function shiftLabels(labels: ArrayLike<number>, B: number, T: number): Int32Array {
  if (labels.length !== B * T) throw new RangeError(`shiftLabels: ${labels.length} labels for B=${B}, T=${T}.`);
  const out = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T - 1; t++) out[b * T + t] = labels[b * T + t + 1];
    if (T > 0) out[b * T + T - 1] = IGNORE_INDEX;
  }
  return out;
}

/**
 * The loss denominator D of §21: the number of valid next-token targets in
 * aligned labels, i.e. Σ (labels[..., 1:] ≠ -100) — position 0 of each row
 * is never a target. `labels` is one example (T omitted) or B rows of length
 * T. With gradient accumulation, sum it over the micro-batches of the step.
 */
export function countValidTargets(labels: ArrayLike<number>, T = labels.length): number {
  if (T <= 0) return 0;
  if (labels.length % T !== 0) throw new RangeError(`countValidTargets: ${labels.length} labels are not rows of ${T}.`);
  let n = 0;
  for (let i = 0; i < labels.length; i++) if (i % T !== 0 && labels[i] !== IGNORE_INDEX) n++;
  return n;
}

// ---------------------------------------------------------------------------
// Shuffling and the validation split

/**
 * mulberry32 (Tommy Ettinger's 32-bit PRNG): uniform [0, 1) from a 32-bit
 * seed, with integer-only arithmetic (Math.imul, >>>), so every JS host gives
 * the same sequence.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A copy of `items` in a seeded random order: Fisher-Yates from the last
 * index down, j = ⌊u·(i+1)⌋ with u from mulberry32(seed). The same as the
 * trainer's shuffledIndices(n, seed) applied to 0..n-1.
 */
export function seededShuffle<T>(items: readonly T[], seed: number): T[] {
  const rand = mulberry32(seed);
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** The number of validation examples of n for val_size (fraction below 1 → ⌈f·n⌉, else a count). */
export function validationCount(n: number, valSize: number): number {
  if (!(valSize >= 0)) throw new ConfigError(`val_size must be ≥ 0, got ${valSize}.`);
  if (valSize >= 1 && !Number.isInteger(valSize)) throw new ConfigError(`val_size ${valSize} is neither a fraction below 1 nor a whole count.`);
  return valSize < 1 ? Math.ceil(valSize * n) : valSize;
}

/**
 * Train / validation indices, as datasets' train_test_split(test_size) that
 * LLaMA-Factory calls: a seeded permutation of 0..n-1, the first ⌈f·n⌉ (or
 * the count) for validation, the rest, in permuted order, for training.
 * val_size 0 leaves the order untouched and the validation set empty. The
 * permutation is our PRNG's, not numpy's: the same split in every host, not
 * the same examples as a Python run.
 */
export function splitTrainVal(n: number, valSize: number, seed: number): { train: number[]; val: number[] } {
  const nVal = validationCount(n, valSize);
  const all = Array.from({ length: n }, (_, i) => i);
  if (nVal === 0) return { train: all, val: [] };
  if (nVal >= n) {
    throw new ConfigError(`val_size ${valSize} takes ${nVal} of ${n} examples for validation and leaves none for training. Use a smaller val_size.`);
  }
  const perm = seededShuffle(all, seed);
  return { train: perm.slice(nVal), val: perm.slice(0, nVal) };
}

// ---------------------------------------------------------------------------
// The whole pipeline

export type SftDataConfig = Pick<
  ExperimentConfig,
  'cutoff_len' | 'template' | 'template_bos' | 'train_on_prompt' | 'packing' | 'max_samples' | 'val_size' | 'seed'
>;

export interface SftDatasets {
  train: EncodedExample[];
  val: EncodedExample[];
  /** Examples cut by cutoff_len. */
  truncated: number;
  /** Examples dropped by packing (longer than cutoff_len − 1; none when encoded here). */
  dropped: number;
}

/**
 * LLaMA-Factory's order: max_samples (first N) → encode (cutoff_len, or
 * cutoff_len − 1 with packing) → pack → split by val_size with the seed.
 * With packing the split is over packed blocks, as there.
 */
export function buildSftDatasets(tok: Tokenizer, examples: readonly SftExample[], config: SftDataConfig, padId: number): SftDatasets {
  const cutoffLen = config.packing ? packedCutoff(config.cutoff_len) : config.cutoff_len;
  if (cutoffLen < 1) throw new ConfigError(`cutoff_len ${config.cutoff_len} is too small for packing; use at least 2.`);
  let truncated = 0;
  const encoded: EncodedExample[] = takeMaxSamples(examples, config.max_samples).map((ex) => {
    const e = encodeExample(tok, ex, { template: config.template, addBos: config.template_bos !== false, cutoffLen, trainOnPrompt: config.train_on_prompt });
    if (e.truncated) truncated++;
    return { inputIds: e.inputIds, labels: e.labels };
  });
  let items: EncodedExample[] = encoded;
  let dropped = 0;
  if (config.packing) {
    const packed = packExamples(encoded, config.cutoff_len, { padId });
    items = packed.blocks;
    dropped = packed.dropped;
  }
  const { train, val } = splitTrainVal(items.length, config.val_size, config.seed);
  return { train: train.map((i) => items[i]), val: val.map((i) => items[i]), truncated, dropped };
}
