/**
 * Generation metrics, per example then averaged, each ×100, computed as
 * LLaMA-Factory's ComputeSimilarity does (jieba + rouge-chinese + NLTK), so
 * that `rouge-1`, `rouge-2`, `rouge-l`, `bleu-4` equal PEFT-Factory's
 * `predict_*` values. Tokenisation: src/eval/text.ts (ROUGE on jieba's
 * tokens through rouge-chinese's sentence and word split, BLEU on
 * characters). Both texts are taken after the last `</think>`; case is kept.
 *
 * ROUGE-N (rouge-chinese `rouge_n`, exclusive mode): the *sets* of distinct
 * n-grams H (prediction) and R (reference) of the words of all sentences
 * (n-grams run across sentence breaks),
 *   P = |H ∩ R| / |H|,  R = |H ∩ R| / |R|,  F = 2PR / (P + R + 1e-8)
 * (P or R is 0 when its set is empty). A repeated n-gram counts once:
 * "the the the" against "the cat" has P = 1, R = 1/2. That is rouge-chinese's
 * (and pltrdy `rouge`'s) default, not Lin's clipped counts.
 * ROUGE-L (rouge-chinese's "summary level", which concatenates the words of
 * all sentences): LCS length ℓ, P = ℓ/|pred words|, R = ℓ/|ref words|, F as
 * above with the same 1e-8.
 * A prediction or reference without any word scores 0 on all three ROUGE
 * (LLaMA-Factory's check before it calls rouge-chinese).
 *
 * BLEU-4 (NLTK sentence_bleu, one reference, weights ¼ each,
 * SmoothingFunction().method3 as LLaMA-Factory passes):
 *   p_n = Σ_g min(count_hyp(g), count_ref(g)) / max(1, Σ_g count_hyp(g))
 *   BLEU = 0 when p_1's numerator is 0 (no character in common, or an empty
 *   prediction); otherwise each p_n with a zero numerator becomes
 *   1 / (2^k · denominator_n), k = 1, 2, … in order of n (NIST's geometric
 *   sequence smoothing, method 3 of Chen & Cherry 2014 as NLTK numbers it), and
 *   BLEU = BP · exp(Σ_n ¼ log p_n),  BP = 1 if c > r else exp(1 − r/c)
 *   with c, r the prediction and reference lengths in characters.
 * Like LLaMA-Factory, each example's four scores (×100) are rounded to 4
 * decimals (Python's round: the nearest, ties to even) before the mean.
 */
import { checkPairs } from './classification';
import { answerText, bleuTokens, rougeWords } from './text';

export interface PRF {
  precision: number;
  recall: number;
  f: number;
}

export interface GenerationMetrics {
  'rouge-1': number;
  'rouge-2': number;
  'rouge-l': number;
  'bleu-4': number;
  count: number;
}

function prf(overlap: number, predCount: number, refCount: number): PRF {
  const precision = predCount === 0 ? 0 : overlap / predCount;
  const recall = refCount === 0 ? 0 : overlap / refCount;
  // rouge-chinese's f_r_p_rouge_n / rouge_l_summary_level: 2 · (P·R) / (P + R + 1e-8).
  const f = 2.0 * ((precision * recall) / (precision + recall + 1e-8));
  return { precision, recall, f };
}

/**
 * Python's round(x, 4): the double nearest to x rounded to 4 decimals, an
 * exact tie (x's binary value ends in 5 at the fifth decimal) to even.
 */
export function pyRound4(x: number): number {
  if (!Number.isFinite(x)) return x;
  const exact = Math.abs(x).toFixed(60);
  const dot = exact.indexOf('.');
  const tail = exact.slice(dot + 5);
  if (/^50*$/.test(tail)) {
    const digits = exact.slice(0, dot) + exact.slice(dot + 1, dot + 5);
    const kept = BigInt(digits) + (Number(digits.at(-1)) % 2 === 1 ? 1n : 0n);
    return (Math.sign(x) * Number(kept)) / 1e4;
  }
  return Number(x.toFixed(4));
}

function ngramSet(tokens: readonly string[], n: number): Set<string> {
  const s = new Set<string>();
  for (let i = 0; i + n <= tokens.length; i++) s.add(JSON.stringify(tokens.slice(i, i + n)));
  return s;
}

function ngramCounts(tokens: readonly string[], n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const g = JSON.stringify(tokens.slice(i, i + n));
    m.set(g, (m.get(g) ?? 0) + 1);
  }
  return m;
}

/** ROUGE-N over distinct n-grams (see the file comment). */
export function rougeN(pred: readonly string[], ref: readonly string[], n: number): PRF {
  const H = ngramSet(pred, n);
  const R = ngramSet(ref, n);
  let overlap = 0;
  for (const g of H) if (R.has(g)) overlap++;
  return prf(overlap, H.size, R.size);
}

/** Length of the longest common subsequence (two-row dynamic programme, O(|a|·|b|)). */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  let prev = new Uint32Array(b.length + 1);
  let cur = new Uint32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

export function rougeL(pred: readonly string[], ref: readonly string[]): PRF {
  return prf(lcsLength(pred, ref), pred.length, ref.length);
}

/** Sentence BLEU-4 with NLTK's smoothing method 3 (see the file comment), in [0, 1]. */
export function bleu4(pred: readonly string[], ref: readonly string[]): number {
  const c = pred.length,
    r = ref.length;
  const nums: number[] = [],
    dens: number[] = [];
  for (let n = 1; n <= 4; n++) {
    const hyp = ngramCounts(pred, n);
    const rc = ngramCounts(ref, n);
    let num = 0,
      total = 0;
    for (const [g, k] of hyp) {
      num += Math.min(k, rc.get(g) ?? 0);
      total += k;
    }
    nums.push(num);
    dens.push(Math.max(1, total));
  }
  if (nums[0] === 0) return 0;
  const bp = c > r ? 1 : Math.exp(1 - r / c);
  let k = 1,
    logSum = 0;
  for (let n = 0; n < 4; n++) {
    const p = nums[n] > 0 ? nums[n] / dens[n] : 1 / (2 ** k++ * dens[n]);
    logSum += 0.25 * Math.log(p);
  }
  return bp * Math.exp(logSum);
}

/** One example's scores, ×100, rounded to 4 decimals as LLaMA-Factory does. */
export function generationScores(pred: string, ref: string): Omit<GenerationMetrics, 'count'> {
  const p = answerText(pred),
    g = answerText(ref);
  const pw = rougeWords(p),
    gw = rougeWords(g);
  const none = pw === null || gw === null;
  return {
    'rouge-1': none ? 0 : pyRound4(rougeN(pw, gw, 1).f * 100),
    'rouge-2': none ? 0 : pyRound4(rougeN(pw, gw, 2).f * 100),
    'rouge-l': none ? 0 : pyRound4(rougeL(pw, gw).f * 100),
    'bleu-4': pyRound4(bleu4(bleuTokens(p), bleuTokens(g)) * 100),
  };
}

export function computeGenerationMetrics(preds: readonly string[], labels: readonly string[]): GenerationMetrics {
  checkPairs(preds, labels, 'Generation metrics');
  const sum = { 'rouge-1': 0, 'rouge-2': 0, 'rouge-l': 0, 'bleu-4': 0 };
  preds.forEach((p, i) => {
    const s = generationScores(p, labels[i]);
    for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += s[k];
  });
  const n = preds.length;
  return { 'rouge-1': sum['rouge-1'] / n, 'rouge-2': sum['rouge-2'] / n, 'rouge-l': sum['rouge-l'] / n, 'bleu-4': sum['bleu-4'] / n, count: n };
}
