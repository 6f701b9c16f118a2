/**
 * How much an interactive evaluation (the studio's Evaluate screen) does when
 * the user sets nothing: a bounded run sized to the dataset family, so a
 * first Evaluate answers in seconds, not after 1024 tokens for each of
 * thousands of examples. The CLI's do_predict keeps the HF defaults
 * (max_new_tokens 1024, every example): a benchmark must not be cut short.
 *
 * New tokens per family: a classification answer is one label word (its
 * longest tokenization, plus the end token); a regression answer is a number
 * ("3.8"); an SVAMP answer one equation; a ReCoRD answer an entity; a GSM8K
 * answer worked steps then "#### n"; generation and code a paragraph.
 */
import type { DatasetEntry, MetricFamily } from '../data/entry';
import { entryLabelWords } from '../data/entry';
import type { Tokenizer } from '../model/tokenizer';

export const EVAL_BUDGET: Record<MetricFamily, { samples: number; newTokens: number | 'label-word' }> = {
  classification: { samples: 200, newTokens: 'label-word' },
  regression: { samples: 200, newTokens: 8 },
  svamp: { samples: 100, newTokens: 48 },
  exact_match: { samples: 100, newTokens: 32 },
  gsm8k: { samples: 50, newTokens: 256 },
  generation: { samples: 50, newTokens: 128 },
};

export interface EvalBudget {
  maxNewTokens: number;
  maxPredictSamples: number;
  /** Why, in words: "classification: the longest label word is 2 tokens". */
  reason: string;
}

/** Tokens of the longest label word, alone or after a space (how it follows a prompt), plus one for the end token. */
export function labelWordTokens(tokenizer: Pick<Tokenizer, 'encode'>, words: readonly string[]): number {
  let longest = 1;
  for (const w of words) {
    for (const text of [w, ` ${w}`]) longest = Math.max(longest, tokenizer.encode(text, { addSpecialTokens: false }).length);
  }
  return longest + 1;
}

/** The bounded defaults for evaluating these entries (several eval datasets: the largest need of any). */
export function evalBudget(entries: readonly DatasetEntry[], tokenizer: Pick<Tokenizer, 'encode'>): EvalBudget {
  let maxNewTokens = 1,
    maxPredictSamples = 1;
  const reasons: string[] = [];
  for (const e of entries) {
    const b = EVAL_BUDGET[e.metric];
    const words = entryLabelWords(e);
    const tokens = b.newTokens === 'label-word' && words?.length ? labelWordTokens(tokenizer, words) : b.newTokens === 'label-word' ? 8 : b.newTokens;
    maxNewTokens = Math.max(maxNewTokens, tokens);
    maxPredictSamples = Math.max(maxPredictSamples, b.samples);
    reasons.push(b.newTokens === 'label-word' ? `${e.key}: a label word (${tokens} tokens with the end token)` : `${e.key} (${e.metric}): ${tokens} tokens`);
  }
  return { maxNewTokens, maxPredictSamples, reason: reasons.join('; ') };
}
