/**
 * Rendered registry examples → token ids for training, evaluation loss and
 * prediction.
 *
 * The user turn (instruction, prompt, query) and the response go through the
 * template (template.ts: the tokenizer's chat template when it has one, else
 * the plain `default` template, or the `template` key). Truncation to
 * cutoff_len:
 *
 * - Entries scored on the response's content (every metric but
 *   `generation`: label words, STS-B scores, GSM8K's "#### n", SVAMP's
 *   equation, ReCoRD's entity) never lose response tokens: the response is
 *   kept whole and the prompt is cut to cutoff_len − |response| from its end
 *   (`promptTruncated`); an example whose response alone does not leave room
 *   for one prompt token is left out and counted (`dropped`).
 * - Generation entries (code) follow LLaMA-Factory's rule (sft.ts
 *   inferSeqlen); an example whose response was cut counts as
 *   `responseTruncated`, one whose prompt alone was cut as `promptTruncated`.
 *
 * Every count is in the TruncationReport, which the CLI prints.
 */
import { ConfigError } from '../errors';
import type { Tokenizer } from '../model/tokenizer';
import type { DatasetEntry } from './entry';
import type { Rendered } from './formatters';
import { IGNORE_INDEX, assembleTurns, encodePrompt, inferSeqlen, packExamples, packedCutoff, seededShuffle, splitTrainVal, type EncodedExample } from './sft';
import { encodeTurn } from './template';

export interface EncodeOptions {
  cutoffLen: number;
  /** A template name, 'chat', or unset (chat if the tokenizer has one, else default). */
  template?: string | null;
  trainOnPrompt?: boolean;
  /** Plain templates start with the tokenizer's BOS (default true). */
  addBos?: boolean;
}

export interface TruncationReport {
  /** Examples encoded (dropped ones not counted). */
  examples: number;
  /** Prompt cut to fit cutoff_len; the response is whole. */
  promptTruncated: number;
  /** Response cut (generation entries only). */
  responseTruncated: number;
  /** Left out: the response alone leaves no room for the prompt. */
  dropped: number;
}

export function emptyReport(): TruncationReport {
  return { examples: 0, promptTruncated: 0, responseTruncated: 0, dropped: 0 };
}

export function addReports(a: TruncationReport, b: TruncationReport): TruncationReport {
  return {
    examples: a.examples + b.examples,
    promptTruncated: a.promptTruncated + b.promptTruncated,
    responseTruncated: a.responseTruncated + b.responseTruncated,
    dropped: a.dropped + b.dropped,
  };
}

/** One line for logs: "120 examples; 3 prompts truncated to cutoff_len 256; 1 dropped (response longer than cutoff_len)". */
export function describeReport(r: TruncationReport, cutoffLen: number): string {
  const parts = [`${r.examples} examples`];
  if (r.promptTruncated) parts.push(`${r.promptTruncated} prompts truncated to cutoff_len ${cutoffLen}`);
  if (r.responseTruncated) parts.push(`${r.responseTruncated} responses truncated to cutoff_len ${cutoffLen}`);
  if (r.dropped) parts.push(`${r.dropped} dropped (the response leaves no room for the prompt within cutoff_len ${cutoffLen}; raise cutoff_len)`);
  return parts.join('; ');
}

/** Whether cutoff_len may cut this entry's responses (only free-text generation). */
export function responseMayBeCut(entry: DatasetEntry): boolean {
  return entry.metric === 'generation';
}

export type CutKind = 'none' | 'prompt' | 'response' | 'dropped';

/** One rendered example → input ids and aligned labels (null when dropped), and what cutoff_len did. */
export function encodeRendered(tok: Tokenizer, entry: DatasetEntry, r: Rendered, opts: EncodeOptions): { example: EncodedExample | null; cut: CutKind } {
  const L = opts.cutoffLen;
  if (!Number.isInteger(L) || L < 2) throw new ConfigError(`cutoff_len must be an integer ≥ 2 for registry datasets, got ${L}.`);
  const { source, target } = encodeTurn(tok, { prompt: r.user, response: r.response, system: r.system }, opts.template, opts.addBos ?? true);
  const trainOnPrompt = opts.trainOnPrompt ?? false;
  if (!responseMayBeCut(entry)) {
    if (target.length > L - 1) return { example: null, cut: 'dropped' };
    const src = source.slice(0, Math.min(source.length, L - target.length));
    const inputIds = [...src, ...target];
    const labels = [...(trainOnPrompt ? src : src.map(() => IGNORE_INDEX)), ...target];
    return { example: { inputIds, labels }, cut: src.length < source.length ? 'prompt' : 'none' };
  }
  const [, keepTarget] = inferSeqlen(source.length, target.length, L);
  const e = assembleTurns([{ source, target }], L, trainOnPrompt);
  return { example: { inputIds: e.inputIds, labels: e.labels }, cut: keepTarget < target.length ? 'response' : e.truncated ? 'prompt' : 'none' };
}

/** Encodes many examples of one entry, tagging each with taskId, and counts what cutoff_len did. */
export function encodeMany(
  tok: Tokenizer,
  entry: DatasetEntry,
  rendered: readonly Rendered[],
  opts: EncodeOptions & { taskId?: number },
): { examples: EncodedExample[]; report: TruncationReport } {
  const report = emptyReport();
  const examples: EncodedExample[] = [];
  for (const r of rendered) {
    const { example, cut } = encodeRendered(tok, entry, r, opts);
    if (cut === 'dropped' || !example) {
      report.dropped++;
      continue;
    }
    if (cut === 'prompt') report.promptTruncated++;
    if (cut === 'response') report.responseTruncated++;
    if (opts.taskId !== undefined) example.taskId = opts.taskId;
    examples.push(example);
    report.examples++;
  }
  return { examples, report };
}

/**
 * `max_samples` over one dataset's examples: the first N (LLaMA-Factory), or
 * with `shuffleSeed` N drawn by a seeded shuffle (sft.ts seededShuffle).
 */
export function sampleExamples<T>(items: readonly T[], maxSamples: number | null | undefined, shuffleSeed?: number | null): T[] {
  const order = shuffleSeed === undefined || shuffleSeed === null ? items.slice() : seededShuffle(items, shuffleSeed);
  return maxSamples === null || maxSamples === undefined ? order : order.slice(0, maxSamples);
}

export interface TrainingPart {
  entry: DatasetEntry;
  rendered: readonly Rendered[];
  /** MTP task id of this dataset's examples (default 0). */
  taskId?: number;
}

export interface TrainingSetOptions extends EncodeOptions {
  packing?: boolean;
  valSize: number;
  seed: number;
  padId: number;
}

export interface TrainingSet {
  train: EncodedExample[];
  val: EncodedExample[];
  report: TruncationReport;
  /** Per entry key. */
  reports: Record<string, TruncationReport>;
  /** Examples dropped by packing (longer than cutoff_len − 1). */
  packingDropped: number;
}

/**
 * Datasets → one training set, in LLaMA-Factory's order: encode each
 * (cutoff_len, or cutoff_len − 1 with packing), concatenate, pack, then split
 * off val_size with the seed (sft.ts splitTrainVal).
 */
export function encodeTrainingSet(tok: Tokenizer, parts: readonly TrainingPart[], opts: TrainingSetOptions): TrainingSet {
  const cutoffLen = opts.packing ? packedCutoff(opts.cutoffLen) : opts.cutoffLen;
  if (opts.packing && new Set(parts.map((p) => p.taskId ?? 0)).size > 1) {
    throw new ConfigError('packing: examples of different MTP tasks (dataset_task_ids) cannot share a packed block; set packing: false.');
  }
  let items: EncodedExample[] = [];
  let report = emptyReport();
  const reports: Record<string, TruncationReport> = {};
  for (const p of parts) {
    const r = encodeMany(tok, p.entry, p.rendered, { ...opts, cutoffLen, taskId: p.taskId ?? 0 });
    items.push(...r.examples);
    reports[p.entry.key] = reports[p.entry.key] ? addReports(reports[p.entry.key], r.report) : r.report;
    report = addReports(report, r.report);
  }
  let packingDropped = 0;
  if (opts.packing) {
    const taskId = parts[0]?.taskId ?? 0;
    const packed = packExamples(items, opts.cutoffLen, { padId: opts.padId });
    items = packed.blocks.map((b) => ({ ...b, taskId }));
    packingDropped = packed.dropped;
  }
  if (items.length === 0)
    throw new ConfigError(`No training examples left (${describeReport(report, opts.cutoffLen)}). Check dataset, max_samples and cutoff_len.`);
  const { train, val } = splitTrainVal(items.length, opts.valSize, opts.seed);
  return { train: train.map((i) => items[i]), val: val.map((i) => items[i]), report, reports, packingDropped };
}

/** A prompt for generation, with what metrics need to score the answer. */
export interface PredictExample {
  /** Dataset key the example came from. */
  key: string;
  /** The prompt's token ids (the template's generation prompt included). */
  inputIds: number[];
  taskId: number;
  rendered: Rendered;
  /** cutoff_len cut the prompt. */
  truncated: boolean;
}

/**
 * Rendered examples → generation prompts: the source ids truncated as
 * LLaMA-Factory does for prediction (inferSeqlen against the reference
 * answer's ids, sft.ts encodePrompt).
 */
export function encodeForPrediction(
  tok: Tokenizer,
  entry: DatasetEntry,
  rendered: readonly Rendered[],
  opts: Omit<EncodeOptions, 'trainOnPrompt'> & { taskId?: number },
): { examples: PredictExample[]; truncated: number } {
  let truncated = 0;
  const examples = rendered.map((r) => {
    const full = encodeTurn(tok, { prompt: r.user, response: r.response, system: r.system }, opts.template, opts.addBos ?? true);
    const ids = encodePrompt(tok, { prompt: r.user, response: r.response, system: r.system }, opts);
    const cut = ids.length < full.source.length;
    if (cut) truncated++;
    return { key: entry.key, inputIds: ids, taskId: opts.taskId ?? 0, rendered: r, truncated: cut };
  });
  return { examples, truncated };
}

/**
 * MTP task ids per dataset (`dataset_task_ids`). `spec` is null (every task
 * 0), a list of integers aligned with the `dataset` keys, or "key:id" pairs
 * over dataset and eval_dataset keys. A key is looked up as written, then
 * without its [split], then by base name, so "sst2:1" (or sst2 at position
 * i) also covers sst2_eval; keys not named get 0.
 */
export function taskIdLookup(
  datasetKeys: readonly string[],
  otherKeys: readonly string[],
  spec: readonly string[] | null | undefined,
): (key: string) => number {
  const base = (k: string) => k.replace(/\[.*\]$/, '').replace(/_(eval|test)$/, '');
  const parseId = (s: string, what: string): number => {
    const n = Number(s);
    if (!/^\s*\d+\s*$/.test(s) || !Number.isSafeInteger(n)) throw new ConfigError(`dataset_task_ids: ${what} "${s}" is not a task id (an integer ≥ 0).`);
    return n;
  };
  const map = new Map<string, number>();
  if (spec && spec.length) {
    if (spec.every((s) => !s.includes(':'))) {
      if (spec.length !== datasetKeys.length) {
        throw new ConfigError(
          `dataset_task_ids: ${spec.length} ids for ${datasetKeys.length} datasets (${datasetKeys.join(', ')}); give one id per dataset, or key:id pairs.`,
        );
      }
      datasetKeys.forEach((k, i) => {
        const id = parseId(spec[i], `the id of ${k}`);
        map.set(k, id);
        if (!map.has(base(k))) map.set(base(k), id);
      });
    } else {
      const all = [...datasetKeys, ...otherKeys];
      for (const s of spec) {
        const i = s.lastIndexOf(':');
        if (i <= 0) throw new ConfigError(`dataset_task_ids: "${s}" is not key:id (e.g. sst2:0). Do not mix plain ids and key:id pairs.`);
        const k = s.slice(0, i).trim();
        if (!all.some((x) => x === k || x.replace(/\[.*\]$/, '') === k || base(x) === k)) {
          throw new ConfigError(`dataset_task_ids names "${k}", which is not in dataset / eval_dataset (${all.join(', ')}).`);
        }
        map.set(k, parseId(s.slice(i + 1), `the id of ${k}`));
      }
    }
  }
  return (key) => map.get(key) ?? map.get(key.replace(/\[.*\]$/, '')) ?? map.get(base(key)) ?? 0;
}
