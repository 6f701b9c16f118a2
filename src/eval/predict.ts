/**
 * Prediction with generation (`do_predict` + `predict_with_generate`):
 * batched greedy decoding with the KV cache over rendered prompts, stopping
 * a sequence at EOS / stop ids, at max_new_tokens, or, for classification,
 * as soon as its text is a complete label word that no other label word
 * extends (the answer cannot change after that).
 *
 * Prompts are sorted by length before batching (less left padding); the
 * output keeps the input order. Latency is measured per generated token over
 * the whole run (prefill included), as a user would wait for it.
 */
import type { LlamaModel } from '../model/llama';
import { generateBatch } from '../model/generate';
import type { Tokenizer } from '../model/tokenizer';
import { normalizeAnswer } from './text';

/** Label-word comparison form (METRICS.md), the one the classification metrics use. */
export { normalizeAnswer };

export interface PredictExample {
  /** The rendered prompt text (user turn with template), as written to generated_predictions.jsonl. */
  prompt: string;
  /** Its token ids (what the model sees). */
  promptIds: number[];
  /** The reference response (what PEFT-Factory writes as `label`: the label word, "( 78.0 - 22.0 ) = 56.0", the worked answer ending "#### n"). */
  label: string;
  /** Every acceptable answer when there are several (ReCoRD entities), written under `answers`. */
  answers?: string[];
  /** Task id for multitask prompt tuning. */
  taskId?: number;
}

export interface PredictionRow {
  prompt: string;
  predict: string;
  label: string;
  answers?: string[];
}

export interface PredictOptions {
  batchSize: number;
  maxNewTokens: number;
  /** Classification label words: stop once one is complete. */
  labelWords?: string[];
  /** Extra stop ids besides EOS. */
  stopIds?: number[];
  signal?: AbortSignal;
  /** Examples done / total, 0 first; awaited (a host may run other GPU work between batches). */
  onProgress?: (done: number, total: number) => void | Promise<void>;
}

export interface PredictResult {
  rows: PredictionRow[];
  generatedTokens: number;
  seconds: number;
  /** Wall time per generated token (ms). */
  msPerToken: number;
}

/**
 * True when `text` is a complete label word that no other label word
 * extends: generating more cannot turn it into a different valid answer.
 */
export function labelWordComplete(text: string, labelWords: string[]): boolean {
  const t = normalizeAnswer(text);
  if (!t || (text.includes('<think>') && !text.includes('</think>'))) return false;
  const words = labelWords.map((w) => w.trim().toLowerCase());
  return words.includes(t) && !words.some((w) => w !== t && w.startsWith(t));
}

export async function predict(model: LlamaModel, tokenizer: Tokenizer, examples: PredictExample[], opts: PredictOptions): Promise<PredictResult> {
  const order = examples.map((_, i) => i).sort((a, b) => examples[a].promptIds.length - examples[b].promptIds.length);
  const out: string[] = new Array(examples.length);
  const stopIds = [...(opts.stopIds ?? [])];
  if (tokenizer.eosTokenId !== null && !stopIds.includes(tokenizer.eosTokenId)) stopIds.push(tokenizer.eosTokenId);
  const stopSet = new Set(stopIds);
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  const t0 = performance.now();
  let generated = 0,
    done = 0;
  // Time spent in onProgress (the host's other work) is not prediction time: latency stays the model's.
  let elsewhere = 0;
  const progress = async (n: number) => {
    const t = performance.now();
    await opts.onProgress?.(n, examples.length);
    elsewhere += performance.now() - t;
  };
  await progress(0);
  for (let i = 0; i < order.length; i += opts.batchSize) {
    if (opts.signal?.aborted) break;
    const idx = order.slice(i, i + opts.batchSize);
    const labels = opts.labelWords;
    const ids = await generateBatch(
      model,
      idx.map((k) => examples[k].promptIds),
      {
        maxNewTokens: opts.maxNewTokens,
        padId,
        stopIds,
        taskIds: Int32Array.from(idx.map((k) => examples[k].taskId ?? 0)),
        shouldStop: labels?.length ? (_, toks) => labelWordComplete(tokenizer.decode(toks, { skipSpecialTokens: true }), labels) : undefined,
        signal: opts.signal,
      },
    );
    idx.forEach((k, j) => {
      generated += ids[j].length;
      // The stop token is not part of the answer text.
      const toks = ids[j].length && stopSet.has(ids[j].at(-1)!) ? ids[j].slice(0, -1) : ids[j];
      out[k] = tokenizer.decode(toks, { skipSpecialTokens: true });
    });
    done += idx.length;
    await progress(done);
  }
  const seconds = (performance.now() - t0 - elsewhere) / 1000;
  const rows = examples.map((x, i): PredictionRow => ({
    prompt: x.prompt,
    predict: out[i] ?? '',
    label: x.label,
    ...(x.answers ? { answers: x.answers } : {}),
  }));
  return { rows, generatedTokens: generated, seconds, msPerToken: generated ? (seconds * 1000) / generated : 0 };
}

/**
 * generated_predictions.jsonl as PEFT-Factory writes it: one {prompt, predict,
 * label} object per line, `label` the reference response, so its
 * scripts/peftbench/compute_metrics.py scores the file unchanged. Several
 * gold answers (ReCoRD) go under `answers`, a key its script does not read.
 */
export function predictionsJsonl(rows: PredictionRow[]): string {
  return (
    rows.map((r) => JSON.stringify({ prompt: r.prompt, predict: r.predict, label: r.label, ...(r.answers ? { answers: r.answers } : {}) })).join('\n') +
    (rows.length ? '\n' : '')
  );
}
