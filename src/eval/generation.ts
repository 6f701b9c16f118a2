/**
 * Generation metrics, per example then averaged, each ×100, computed as
 * LLaMA-Factory's ComputeSimilarity does (rouge-chinese + NLTK), so that
 * `rouge-1`, `rouge-2`, `rouge-l`, `bleu-4` compare with PEFT-Factory's
 * `predict_*` values. Tokenisation: src/eval/text.ts (ROUGE on jieba-style
 * word tokens, BLEU on characters). Both texts are taken after the last
 * `</think>`; case is kept.
 *
 * ROUGE-N (rouge-chinese `rouge_n`, exclusive mode): the *sets* of distinct
 * n-grams H (prediction) and R (reference),
 *   P = |H ∩ R| / |H|,  R = |H ∩ R| / |R|,  F = 2PR / (P + R)
 * (P or R is 0 when its set is empty, F = 0 when P + R = 0). A repeated
 * n-gram counts once: "the the the" against "the cat" has P = 1, R = 1/2.
 * That is rouge-chinese's (and pltrdy `rouge`'s) default, not Lin's clipped
 * counts. rouge-chinese divides by P + R + 1e-8; we do not (≤ 5e-7 on the
 * ×100 scale).
 * ROUGE-L: LCS length ℓ of the two token sequences, P = ℓ/|pred|,
 * R = ℓ/|ref|, F as above. (rouge-chinese's "summary level" reduces to this
 * because it concatenates the sentences' words before the LCS.)
 * An empty prediction or reference (no tokens) scores 0 on all three ROUGE.
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
 * LLaMA-Factory rounds each example's score to 4 decimals before averaging;
 * we average unrounded values.
 */
import { checkPairs } from './classification';
import { answerText, bleuTokens, rougeTokens } from './text';

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
  const f = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  return { precision, recall, f };
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
  const c = pred.length, r = ref.length;
  const nums: number[] = [], dens: number[] = [];
  for (let n = 1; n <= 4; n++) {
    const hyp = ngramCounts(pred, n);
    const rc = ngramCounts(ref, n);
    let num = 0, total = 0;
    for (const [g, k] of hyp) {
      num += Math.min(k, rc.get(g) ?? 0);
      total += k;
    }
    nums.push(num);
    dens.push(Math.max(1, total));
  }
  if (nums[0] === 0) return 0;
  const bp = c > r ? 1 : Math.exp(1 - r / c);
  let k = 1, logSum = 0;
  for (let n = 0; n < 4; n++) {
    const p = nums[n] > 0 ? nums[n] / dens[n] : 1 / (2 ** k++ * dens[n]);
    logSum += 0.25 * Math.log(p);
  }
  return bp * Math.exp(logSum);
}

/** One example's scores, ×100. */
export function generationScores(pred: string, ref: string): Omit<GenerationMetrics, 'count'> {
  const p = answerText(pred), g = answerText(ref);
  const pt = rougeTokens(p), gt = rougeTokens(g);
  const empty = pt.length === 0 || gt.length === 0;
  return {
    'rouge-1': empty ? 0 : 100 * rougeN(pt, gt, 1).f,
    'rouge-2': empty ? 0 : 100 * rougeN(pt, gt, 2).f,
    'rouge-l': empty ? 0 : 100 * rougeL(pt, gt).f,
    'bleu-4': 100 * bleu4(bleuTokens(p), bleuTokens(g)),
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
