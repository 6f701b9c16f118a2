/**
 * Text handling shared by the metrics: which part of a generation is the
 * answer, how a label is normalised, and how ROUGE and BLEU split text into
 * tokens. The ROUGE path reproduces what LLaMA-Factory's ComputeSimilarity
 * does (and so PEFT-Factory's `predict_rouge-*`): `jieba.cut(text)` (jieba
 * 0.42.1, accurate mode with HMM), the tokens joined with spaces, then
 * rouge-chinese's sentence split and word split.
 *
 * jieba.cut (`jiebaCut`):
 *   1. The text splits into blocks of [CJK, a-z, A-Z, 0-9, + # & . _ % -] and
 *      the stretches between them. In a stretch, each whitespace character is
 *      a token ("\r\n" together), and so is every other character.
 *   2. A block is segmented by the dictionary: the route through the block's
 *      dictionary words (DAG) that maximises Σ log(freq(w) or 1) − log(total),
 *      ties to the longer word. Characters not covered by a word of two or
 *      more characters collect in a buffer that goes to jieba's finalseg,
 *      which cuts a non-CJK stretch into the runs `[a-zA-Z0-9]+(\.\d+)?%?`
 *      (so "3.14" and "50%" stay whole) and the pieces between them.
 *   The only entries of jieba's dictionary (dict.txt, 349 046 words, total
 *   frequency 60 101 967) made of block characters without CJK are the five
 *   in JIEBA_LATIN_WORDS, so for text without CJK this is jieba exactly:
 *   "C++" and "AT&T" are one token each, "abc++" is "ab" "c++".
 *   "It's 3.14-ish." → It ' s 3.14 - ish .
 *   CJK characters are one token each: jieba would group them into words
 *   with its full dictionary and an HMM, which we do not ship (Chinese text
 *   scores differ from LLaMA-Factory's).
 * rouge-chinese (`rougeWords`), on the space-joined tokens:
 *   3. sentences: a newline is inserted after 。！？? when the next character
 *      is not ” or ’, after "......" and "……", and after 。！？? plus ”/’
 *      when the next character is not ，。！？?; trailing whitespace is
 *      stripped and the text split at "\n";
 *   4. each non-empty sentence is re-joined on whitespace (Python's split())
 *      and split at " ", so a sentence of only whitespace becomes one empty
 *      word: a line that holds only whitespace, or the space-and-newline that
 *      follows a "?" (its own split, then the newline), adds an empty-string
 *      token that takes part in the n-grams and the LCS.
 *   Whitespace is Python's str.isspace() set throughout.
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
// Python's str.isspace() (and re's \s on str patterns): ASCII 9–13, 28–31, 32 and the Unicode spaces.
const PY_SPACE_CHARS =
  '\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000';
const PY_SPACE = new RegExp(`[${PY_SPACE_CHARS}]`);
const PY_SPACE_RUNS = new RegExp(`[${PY_SPACE_CHARS}]+`);
const PY_TRAILING_SPACE = new RegExp(`[${PY_SPACE_CHARS}]+$`);

/** The words of jieba 0.42.1's dict.txt made only of non-CJK block characters, with their frequencies. */
export const JIEBA_LATIN_WORDS: Readonly<Record<string, number>> = { 'AT&T': 3, 'c#': 3, 'C#': 3, 'c++': 3, 'C++': 3 };
/** Sum of the frequencies of jieba 0.42.1's dict.txt. */
export const JIEBA_TOTAL = 60101967;
const LOG_TOTAL = Math.log(JIEBA_TOTAL);
const WORDS = Object.entries(JIEBA_LATIN_WORDS).map(([w, f]) => ({ chars: Array.from(w), freq: f }));

/** Python's str.split(): runs of whitespace separate, no empty pieces. */
export function pySplit(s: string): string[] {
  return s.split(PY_SPACE_RUNS).filter((x) => x.length > 0);
}

/** finalseg.cut on a buffer: Latin runs and the pieces between them; CJK characters one each (see the file comment). */
function finalseg(buf: string, out: string[]): void {
  let seg = '';
  const latin = (x: string) => {
    let last = 0;
    for (const m of x.matchAll(LATIN_RUN)) {
      if (m.index! > last) out.push(x.slice(last, m.index));
      out.push(m[0]);
      last = m.index! + m[0].length;
    }
    if (last < x.length) out.push(x.slice(last));
  };
  for (const ch of buf) {
    if (CJK.test(ch)) {
      if (seg) latin(seg);
      seg = '';
      out.push(ch);
    } else seg += ch;
  }
  if (seg) latin(seg);
}

/** jieba's __cut_DAG on one block (characters of WORD_BLOCK), with the dictionary words above. */
function cutBlock(block: string, out: string[]): void {
  const ch = Array.from(block);
  const N = ch.length;
  const freqOf = (a: number, b: number): number => (b - a === 1 ? 0 : (JIEBA_LATIN_WORDS[ch.slice(a, b).join('')] ?? 0));
  // DAG: the end indices (inclusive) of dictionary words starting at k, else k itself.
  const dag: number[][] = [];
  for (let k = 0; k < N; k++) {
    const ends: number[] = [];
    for (const w of WORDS) if (w.chars.every((c, j) => ch[k + j] === c)) ends.push(k + w.chars.length - 1);
    ends.sort((a, b) => a - b);
    dag.push(ends.length ? ends : [k]);
  }
  // route[i] = best (log probability, end) from i; Python's max over tuples: ties go to the larger end.
  const logp = new Float64Array(N + 1);
  const end = new Int32Array(N + 1);
  for (let i = N - 1; i >= 0; i--) {
    let best = -Infinity,
      bestX = -1;
    for (const x of dag[i]) {
      const v = Math.log(freqOf(i, x + 1) || 1) - LOG_TOTAL + logp[x + 1];
      if (v > best || (v === best && x > bestX)) {
        best = v;
        bestX = x;
      }
    }
    logp[i] = best;
    end[i] = bestX;
  }
  let buf = '';
  const flush = () => {
    if (Array.from(buf).length === 1) out.push(buf);
    else if (!JIEBA_LATIN_WORDS[buf]) finalseg(buf, out);
    else for (const c of buf) out.push(c);
    buf = '';
  };
  for (let x = 0; x < N;) {
    const y = end[x] + 1;
    const word = ch.slice(x, y).join('');
    if (y - x === 1) buf += word;
    else {
      if (buf) flush();
      out.push(word);
    }
    x = y;
  }
  if (buf) flush();
}

/** The tokens of `jieba.cut(text)` (see the file comment), whitespace tokens included. */
export function jiebaCut(text: string): string[] {
  const out: string[] = [];
  const loose = (s: string) => {
    // re_skip_default "(\r\n|\s)": "\r\n" is one token, every other character one each.
    for (let i = 0; i < s.length;) {
      if (s.startsWith('\r\n', i)) {
        out.push('\r\n');
        i += 2;
        continue;
      }
      const c = String.fromCodePoint(s.codePointAt(i)!);
      out.push(c);
      i += c.length;
    }
  };
  let last = 0;
  for (const m of text.matchAll(WORD_BLOCK)) {
    loose(text.slice(last, m.index));
    cutBlock(m[0], out);
    last = m.index! + m[0].length;
  }
  loose(text.slice(last));
  return out;
}

/** rouge-chinese's Rouge.cut_sent: sentence breaks after 。！？? "......" "……" (see the file comment). */
export function cutSentences(para: string): string[] {
  const s = para
    .replace(/([。！？?])([^”’])/g, '$1\n$2')
    .replace(/(\.{6})([^”’])/g, '$1\n$2')
    .replace(/(…{2})([^”’])/g, '$1\n$2')
    .replace(/([。！？?][”’])([^，。！？?])/g, '$1\n$2')
    .replace(PY_TRAILING_SPACE, '');
  return s.split('\n');
}

/**
 * The words rouge-chinese scores for a text, as LLaMA-Factory passes it
 * (" ".join(jieba.cut(text))); null when the text has no word at all
 * (LLaMA-Factory then scores 0 without calling rouge-chinese).
 */
export function rougeWords(text: string): string[] | null {
  const joined = jiebaCut(text).join(' ');
  if (pySplit(joined).length === 0) return null;
  return cutSentences(joined)
    .filter((s) => s.length > 0)
    .map((s) => pySplit(s).join(' '))
    .flatMap((s) => s.split(' '));
}

/** The non-whitespace tokens of jieba.cut (what ROUGE sees, before rouge-chinese's sentence handling). */
export function rougeTokens(text: string): string[] {
  return jiebaCut(text).filter((t) => !PY_SPACE.test(t));
}

/** Tokens of a text for BLEU: its characters (code points), whitespace included. */
export function bleuTokens(text: string): string[] {
  return Array.from(text);
}
