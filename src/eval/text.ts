/**
 * Text handling shared by the metrics: which part of a generation is the
 * answer, how a label is normalised, and how ROUGE and BLEU split text into
 * tokens. The tokenisation reproduces what LLaMA-Factory's ComputeSimilarity
 * (and so PEFT-Factory's `predict_rouge-*` / `predict_bleu-4`) does, so scores
 * can be compared with theirs:
 *
 * - ROUGE: `jieba.cut` of the text, re-joined with spaces and split on
 *   whitespace (rouge-chinese). On non-Chinese text jieba's result is fixed by
 *   two regular expressions, which `rougeTokens` applies directly:
 *     1. the text splits into blocks of [CJK, a-z, A-Z, 0-9, + # & . _ % -] and
 *        the characters between them; a character between blocks is a token
 *        by itself (whitespace is dropped);
 *     2. inside a block, the runs `[a-zA-Z0-9]+(\.\d+)?%?` are tokens (so
 *        "3.14" and "50%" stay whole) and each stretch between two runs (e.g.
 *        "-", ".", "--") is one token.
 *   "It's 3.14-ish." → It ' s 3.14 - ish .
 *   Chinese characters are one token each: jieba would group them into words
 *   with its dictionary, which we do not ship (Chinese text scores differ).
 *   Lines holding only whitespace add nothing (rouge-chinese turns each into an
 *   empty-string token; a negligible difference).
 * - BLEU: the characters of the text (LLaMA-Factory passes `list(label)` and
 *   `list(pred)` to NLTK's sentence_bleu): a character-level BLEU-4, spaces
 *   included. Characters are Unicode code points, as in Python.
 */

const THINK_END = '</think>';

/** The answer part of a generation: the text after the last `</think>` (reasoning models), else all of it. */
export function answerText(text: string): string {
  const i = text.lastIndexOf(THINK_END);
  return i < 0 ? text : text.slice(i + THINK_END.length);
}

/**
 * A prediction or label as classification compares them: the text after the
 * last `</think>`, stripped of surrounding whitespace, lower-cased.
 */
export function normalizeAnswer(text: string): string {
  return answerText(text).trim().toLowerCase();
}

// jieba's re_han_default: the characters its segmenter sees as word material.
const WORD_BLOCK = /[\u4E00-\u9FD5a-zA-Z0-9+#&._%-]+/g;
// jieba finalseg's re_skip: a Latin/digit run, with one decimal part and a percent sign.
const LATIN_RUN = /[a-zA-Z0-9]+(?:\.[0-9]+)?%?/g;
const CJK = /[\u4E00-\u9FD5]/;
const SPACE = /\s/;

/** Tokens of a text for ROUGE (see the file comment). */
export function rougeTokens(text: string): string[] {
  const out: string[] = [];
  const loose = (s: string) => {
    for (const ch of s) if (!SPACE.test(ch)) out.push(ch);
  };
  const latin = (s: string) => {
    let last = 0;
    for (const m of s.matchAll(LATIN_RUN)) {
      if (m.index! > last) out.push(s.slice(last, m.index));
      out.push(m[0]);
      last = m.index! + m[0].length;
    }
    if (last < s.length) out.push(s.slice(last));
  };
  let last = 0;
  for (const m of text.matchAll(WORD_BLOCK)) {
    loose(text.slice(last, m.index));
    // CJK characters one by one; the stretches between them by the Latin rule.
    let seg = '';
    for (const ch of m[0]) {
      if (CJK.test(ch)) {
        if (seg) latin(seg);
        seg = '';
        out.push(ch);
      } else seg += ch;
    }
    if (seg) latin(seg);
    last = m.index! + m[0].length;
  }
  loose(text.slice(last));
  return out;
}

/** Tokens of a text for BLEU: its characters (code points), whitespace included. */
export function bleuTokens(text: string): string[] {
  return Array.from(text);
}
