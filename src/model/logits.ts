/**
 * The logits a consumer reads, without [tokens, vocab] in one tensor.
 *
 * The head maps final hidden states [N, C] to logits [N, V]. For a large
 * vocabulary those exceed one storage binding (Qwen2.5: 151,936 × 4 B =
 * 608 KB a row, so 220 rows fill the 128 MiB most adapters give) and cost V/C
 * times the memory of the hidden states (170× for Qwen2.5-0.5B). So consumers
 * take only the rows they read (generation: the last position of each
 * sequence; token accuracy: the labelled positions) and run the head on row
 * chunks that fit one binding, reducing each chunk before the next.
 */
import type { Engine } from '../engine/engine';
import type { Tensor } from '../engine/tensor';
import { sliceSeq } from '../engine/ops/concat';
import type { ForwardOptions, LlamaModel } from './llama';

/** Rows of logits [rows, V] that fit one binding (at least 1). */
export function logitRowsPerBinding(e: Engine, vocabSize: number): number {
  return Math.max(1, Math.floor(e.maxBindingBytes / (vocabSize * 4)));
}

/**
 * The head on hidden states x [..., C] (N rows), one chunk of rows at a time:
 * `each(logits [len, V], start, len)` for rows [start, start + len), every
 * chunk's logits fitting one binding; one call with all N rows when they fit.
 *
 * While a tape records, the chunks stay alive for the backward (the row
 * slices scatter each chunk's gradient back into x). Without one, nothing
 * reads a chunk after `each`: each chunk runs in its own scope, keeping only
 * the tensor `each` returns (a running sum), and is submitted before the
 * next, so its buffer is reused and one chunk of logits exists at a time.
 */
export function forEachLogitChunk(model: LlamaModel, x: Tensor, each: (logits: Tensor, start: number, len: number) => Tensor | void): void {
  const e = model.e,
    C = model.config.hiddenSize,
    V = model.config.vocabSize,
    N = x.size / C;
  const rows = logitRowsPerBinding(e, V);
  if (rows >= N) {
    each(model.head(x).reshape([N, V]), 0, N);
    return;
  }
  const x3 = x.reshape([1, N, C]);
  const scoped = !e.tape;
  for (let start = 0; start < N; start += rows) {
    const len = Math.min(rows, N - start);
    if (scoped) e.beginScope();
    const kept = each(model.head(sliceSeq(e, x3, 1, N, start, len, C)).reshape([len, V]), start, len);
    if (scoped) {
      e.endScope(kept ? (kept.base ?? kept) : null);
      e.flush();
    }
  }
}

/**
 * Logits [B, V] on the host of the last position of each sequence of ids
 * [B*T] (generation: left-padded prompts all end at T - 1). The head runs on
 * those B rows only, so a prefill of T tokens computes B·V logits, not B·T·V.
 */
export async function lastPositionLogits(model: LlamaModel, ids: Int32Array, B: number, opts: ForwardOptions = {}): Promise<Float32Array> {
  const e = model.e,
    C = model.config.hiddenSize,
    V = model.config.vocabSize;
  const out = new Float32Array(B * V);
  e.beginScope();
  try {
    const h = model.hidden(ids, B, opts);
    const T = h.shape[1];
    const last = T === 1 ? h : sliceSeq(e, h, B, T, T - 1, 1, C);
    const reads: Promise<void>[] = [];
    // A read encodes and submits its copy before it awaits: the chunk may be released right after.
    forEachLogitChunk(model, last, (logits, start) => {
      reads.push(e.read(logits).then((v) => out.set(v, start * V)));
    });
    await Promise.all(reads);
  } finally {
    e.endScope();
  }
  return out;
}
