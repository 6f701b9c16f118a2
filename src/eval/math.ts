/**
 * Math word problems scored on the number, not the wording.
 *
 * GSM8K (`computeGsm8kMetrics`): the answer is the number after the *last*
 * `####` (the dataset's own marker), in the prediction and the gold answer
 * alike. After the marker, commas and '%' are removed and whitespace skipped;
 * an optional '$' may precede the number; the number must then end at the end
 * of the text or at whitespace (text after that is ignored: "#### 18 dollars"
 * is 18, "#### 18kg" is unparseable). Correct when |pred − gold| < 1e-6.
 * A prediction without a marker or number is `invalid` (and wrong).
 * (PEFT-Factory requires the whole remainder to be a float and so also
 * rejects "#### 18 dollars".)
 *
 * SVAMP (`computeSvampMetrics`): the instruction asks for one equation,
 * "(1 + 1) = 2". What counts:
 *  - the prediction is the first non-empty line of the text after the last
 *    `</think>`; its left-hand side (everything before the first '=', or the
 *    whole line when there is no '=') must be an arithmetic expression
 *    (src/eval/arithmetic.ts: numbers, + − × ÷ written + - * /, parentheses);
 *    otherwise the prediction is `invalid`;
 *  - it is correct when the *value of that expression* is within 1e-6 of the
 *    gold answer (the number after the gold response's last '='). The number
 *    the model writes after '=' does not make it right or wrong: a model that
 *    sets up the right equation and mis-adds it still computed the right
 *    quantity; one that writes "(1 + 1) = 5" for a gold 5 did not.
 *  - `equation_consistency`: the fraction of predictions whose stated result
 *    (after '=') equals their expression's value within 1e-6, i.e.
 *    PEFT-Factory's self-consistency check, reported beside the accuracy and
 *    never in place of it.
 * Fractions in [0, 1]; `invalid` and `count` are counts.
 */
import { ConfigError } from '../errors';
import { evaluateArithmetic } from './arithmetic';
import { checkPairs } from './classification';
import { answerText } from './text';

const TOLERANCE = 1e-6;

export interface Gsm8kMetrics {
  numeric_accuracy: number;
  invalid: number;
  count: number;
}

export interface SvampMetrics {
  numeric_accuracy: number;
  equation_consistency: number;
  invalid: number;
  count: number;
}

/** The number after the last `####`, or null (see the file comment). */
export function gsm8kAnswer(text: string): number | null {
  const i = text.lastIndexOf('####');
  if (i < 0) return null;
  const rest = text.slice(i + 4).replace(/[,%]/g, '');
  const m = /^\s*\$?\s*([+-]?(?:\d+\.?\d*|\.\d+))(?=\s|$)/.exec(rest);
  if (!m) return null;
  const v = Number(m[1]);
  return Number.isFinite(v) ? v : null;
}

export function computeGsm8kMetrics(preds: readonly string[], labels: readonly string[]): Gsm8kMetrics {
  checkPairs(preds, labels, 'GSM8K metrics');
  let correct = 0,
    invalid = 0;
  labels.forEach((l, i) => {
    const gold = gsm8kAnswer(l);
    if (gold === null)
      throw new ConfigError(`Gold answer ${i} has no number after '####' (${JSON.stringify(l.slice(-80))}). GSM8K responses end with '#### <number>'.`);
    const p = gsm8kAnswer(answerText(preds[i]));
    if (p === null) invalid++;
    else if (Math.abs(p - gold) < TOLERANCE) correct++;
  });
  return { numeric_accuracy: correct / labels.length, invalid, count: labels.length };
}

export interface SvampPrediction {
  /** Value of the expression before '=' (null: unparseable). */
  value: number | null;
  /** The number after '=', when there is one and it is a number. */
  stated: number | null;
}

/** Reads a generated SVAMP equation (see the file comment). */
export function parseSvampPrediction(text: string): SvampPrediction {
  const line =
    answerText(text)
      .split('\n')
      .map((s) => s.trim())
      .find((s) => s.length > 0) ?? '';
  const eq = line.indexOf('=');
  const lhs = eq < 0 ? line : line.slice(0, eq);
  const r = evaluateArithmetic(lhs);
  let stated: number | null = null;
  if (eq >= 0) {
    const s = evaluateArithmetic(line.slice(eq + 1));
    if ('value' in s) stated = s.value;
  }
  return { value: 'value' in r ? r.value : null, stated };
}

/** The gold answer of a SVAMP response "(equation) = answer": the number after the last '=' (or the whole text). */
export function svampGold(label: string): number | null {
  const eq = label.lastIndexOf('=');
  const r = evaluateArithmetic(eq < 0 ? label : label.slice(eq + 1));
  return 'value' in r ? r.value : null;
}

export function computeSvampMetrics(preds: readonly string[], labels: readonly string[]): SvampMetrics {
  checkPairs(preds, labels, 'SVAMP metrics');
  let correct = 0,
    consistent = 0,
    invalid = 0;
  labels.forEach((l, i) => {
    const gold = svampGold(l);
    if (gold === null)
      throw new ConfigError(`Gold answer ${i} (${JSON.stringify(l)}) does not end in '= <number>'. SVAMP responses are '(equation) = answer'.`);
    const p = parseSvampPrediction(preds[i]);
    if (p.value === null) {
      invalid++;
      return;
    }
    if (Math.abs(p.value - gold) < TOLERANCE) correct++;
    if (p.stated !== null && Math.abs(p.value - p.stated) < TOLERANCE) consistent++;
  });
  return { numeric_accuracy: correct / labels.length, equation_consistency: consistent / labels.length, invalid, count: labels.length };
}
