/**
 * Formatters: one canonical row (Hub schema, ClassLabel ids decoded to
 * names) → the pieces of one example. The user turn is
 *
 *   instruction "\n" prompt "\n" query        (empty pieces left out)
 *
 * and the assistant turn is the response. `{x}` below is the row's field x;
 * "\n\n" separates blocks, "\n" the lines of one block. Each formatter keeps
 * PEFT-Factory's markers (its scripts/peftfactory/preprocess_datasets.py, the
 * text of the `kinit/peft-factory` subsets) so results stay comparable; the
 * places where we differ are fixes of evident slips, marked "fix".
 *
 *   columns      prompt = {columns.prompt}, query = {columns.query}, response = {columns.response}
 *                (GLUE, BoolQ, CB, GSM8K use this, as PEFT-Factory's dataset_info.json)
 *   wsc          prompt = {text} with the pronoun (span2) marked "* … *" and the noun (span1)
 *                "# … #" at their word indices, as the instruction says ("the pronoun marked
 *                with * * … the noun marked with # #")
 *                (fix: PEFT-Factory, after T5, marks span1, the noun, with "*" and span2, the
 *                pronoun, with "#": the reverse of its own instruction)
 *   wic          "Sentence1: {sentence1}\n\nSentence2: {sentence2}\n\nWord: {word}"
 *   multirc      "Paragraph: {paragraph}\n\nQuestion: {question}\n\nAnswer: {answer}"
 *   copa         "Premise: {premise}\n\nQuestion: {question}\n\nChoice1: {choice1}\n\nChoice2: {choice2}"
 *                (fix: PEFT-Factory leaves out the question, "cause" or "effect", without which
 *                the task is ambiguous)
 *   record       "Query: {query}\n\nEntities: {entities joined ', '}\n\nPassage: {passage}", the
 *                passage's "\n@highlight\n" joints written as ". " (" " after . ? ! " ')
 *                response = an answer entity
 *   mmlu         "Question: {question}\n\nChoices:\nA: {choices[0]}\nB: …\nD: {choices[3]}"
 *   piqa         "Question: {goal}\n\nSolution1: {sol1}\nSolution2: {sol2}"
 *   siqa         "Context: {context}\n\nQuestion: {question}\n\nChoices:\nA: {answerA}\nB: {answerB}\nC: {answerC}"
 *   hellaswag    "Sentence: {ctx}\n\nEnding1: {endings[0]}\n…\nEnding4: {endings[3]}"
 *                (fix: PEFT-Factory writes ctx_a + " " + ctx_b.capitalize() + ",", which lower-cases
 *                all of ctx_b but its first letter and adds a comma)
 *   winogrande   "Sentence: {sentence}\n\nOption1: {option1}\nOption2: {option2}"
 *                (fix: PEFT-Factory labels both options "Option1")
 *   openbookqa   "Question: {question_stem}\n\nChoices:\n{choices.label[i]}: {choices.text[i]}" per choice
 *   math_qa      "Problem: {Problem}\n\nOptions: {options}", response {correct}
 *   gsm8k        prompt = {question}, response = {answer} (worked solution ending "#### n"); label n
 *   svamp        "Question: {Body} {Question}" ({question_concat} when present), response
 *                "{Equation} = {Answer}" with Answer as Python prints a float ("51.0"); label {Answer}
 *   conala       prompt = {rewritten_intent} ({intent} when it is null), response = {snippet}
 *   codealpaca   prompt = {instruction}, query = {input}, response = {output} (sahil2801/CodeAlpaca-20k)
 *   alpaca       as codealpaca, plus system = {system} when the row has one (a user's Alpaca .jsonl
 *                given as eval_dataset; the same user turn as LLaMA-Factory's alpaca rows)
 *   apps         prompt = {question}, response = a solution of the JSON list {solutions}
 *   inputs_targets  prompt = {inputs}, response = {targets} (the kinit/peft-factory subsets)
 *
 * Classification responses are label words: the row's class (a ClassLabel
 * name, or an id read through labelNames) → the entry's labelWords. A float
 * target (STS-B) is written as the shortest decimal that reads back to the
 * same float32, with at least one decimal ("5.0", "3.8").
 */
import { ConfigError } from '../errors';
import type { DatasetEntry } from './entry';
import type { TableRow } from './tabular';

/** What a formatter returns; `response: null` means the row has no gold answer (unlabeled test rows). */
export interface Formatted {
  prompt: string;
  query?: string;
  response: string | null;
  /** The value metrics compare with, when it is not the response itself (GSM8K's number, SVAMP's answer). */
  label?: string | null;
  /** Every acceptable answer (ReCoRD entities, APPS solutions). */
  answers?: string[];
  system?: string;
}

export interface FormatContext {
  entry: DatasetEntry;
  /** Where the row came from, for error messages. */
  where: string;
  /** The row's class (name, id, or word) → its label word; null for "no label". */
  labelWord(value: unknown): string | null;
}

export type Formatter = (row: TableRow, ctx: FormatContext) => Formatted;

function field(row: TableRow, name: string, ctx: FormatContext): unknown {
  if (!Object.hasOwn(row, name)) {
    throw new ConfigError(
      `${ctx.where}: the row has no column "${name}" (columns: ${Object.keys(row).join(', ')}). The "${ctx.entry.formatter}" formatter of "${ctx.entry.key}" needs it; check the source or the columns mapping.`,
    );
  }
  return row[name];
}

function text(row: TableRow, name: string, ctx: FormatContext): string {
  const v = field(row, name, ctx);
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw new ConfigError(`${ctx.where}: column "${name}" holds ${Array.isArray(v) ? 'a list' : 'an object'}, not text.`);
}

function list(row: TableRow, name: string, ctx: FormatContext): string[] {
  const v = field(row, name, ctx);
  if (!Array.isArray(v)) throw new ConfigError(`${ctx.where}: column "${name}" should be a list, got ${JSON.stringify(v)?.slice(0, 60)}.`);
  return v.map((x) => (x === null || x === undefined ? '' : String(x)));
}

/**
 * A float as text: the shortest decimal that reads back to the same value
 * (float32 precision when `f32`), with ".0" on whole numbers as Python's
 * str(float) writes them.
 */
export function floatText(x: number, f32 = false): string {
  let s = String(x);
  if (f32) {
    // Search from the float32 value itself, so 2.1111111111 (text) and its float32 agree.
    const v = Math.fround(x);
    for (let p = 1; p <= 9; p++) {
      const t = v.toPrecision(p);
      if (Math.fround(Number(t)) === v) {
        s = String(Number(t));
        break;
      }
    }
  }
  return /^-?\d+$/.test(s) ? `${s}.0` : s;
}

function responseValue(v: unknown, ctx: FormatContext): string | null {
  const { entry } = ctx;
  if (entry.task === 'classification') return ctx.labelWord(v);
  if (v === null || v === undefined) return null;
  if (typeof v === 'number') return entry.task === 'regression' ? floatText(v, true) : String(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  return JSON.stringify(v);
}

const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** T5's span marking: the span that starts at word `index` (words separated by one whitespace) gets `mark` on both sides. */
export function markSpan(textIn: string, span: string, index: number, mark: string): string {
  const re = new RegExp(`^((?:\\S+\\s){${index}})(${escapeRegExp(span)})`);
  return textIn.replace(re, (_m, pre: string, w: string) => `${pre}${mark} ${w} ${mark}`);
}

/** The number after the last "####" of a GSM8K answer, commas removed; null when there is none. */
export function gsm8kAnswer(answer: string): string | null {
  const i = answer.lastIndexOf('####');
  if (i < 0) return null;
  const n = answer
    .slice(i + 4)
    .trim()
    .replace(/,/g, '');
  return n === '' ? null : n;
}

const columns: Formatter = (row, ctx) => {
  const c = ctx.entry.columns;
  if (!c) throw new ConfigError(`dataset "${ctx.entry.key}": the "columns" formatter needs a "columns" mapping.`);
  const out: Formatted = { prompt: text(row, c.prompt, ctx), response: responseValue(field(row, c.response, ctx), ctx) };
  if (c.query) out.query = text(row, c.query, ctx);
  if (c.system) out.system = text(row, c.system, ctx);
  return out;
};

export const FORMATTERS: Record<string, Formatter> = {
  columns,

  wsc: (row, ctx) => {
    const s1 = Number(field(row, 'span1_index', ctx));
    const s2 = Number(field(row, 'span2_index', ctx));
    // span1 is the noun (the candidate referent), span2 the pronoun; the marks follow the instruction.
    let t = markSpan(text(row, 'text', ctx), text(row, 'span1_text', ctx), s1, '#');
    // The "#" marks add two words before span 2 when span 1 comes first.
    t = markSpan(t, text(row, 'span2_text', ctx), s2 + (s1 < s2 ? 2 : 0), '*');
    return { prompt: t, response: ctx.labelWord(field(row, 'label', ctx)) };
  },

  wic: (row, ctx) => ({
    prompt: `Sentence1: ${text(row, 'sentence1', ctx)}\n\nSentence2: ${text(row, 'sentence2', ctx)}\n\nWord: ${text(row, 'word', ctx)}`,
    response: ctx.labelWord(field(row, 'label', ctx)),
  }),

  multirc: (row, ctx) => ({
    prompt: `Paragraph: ${text(row, 'paragraph', ctx)}\n\nQuestion: ${text(row, 'question', ctx)}\n\nAnswer: ${text(row, 'answer', ctx)}`,
    response: ctx.labelWord(field(row, 'label', ctx)),
  }),

  copa: (row, ctx) => ({
    prompt: `Premise: ${text(row, 'premise', ctx)}\n\nQuestion: ${text(row, 'question', ctx)}\n\nChoice1: ${text(row, 'choice1', ctx)}\n\nChoice2: ${text(row, 'choice2', ctx)}`,
    response: ctx.labelWord(field(row, 'label', ctx)),
  }),

  record: (row, ctx) => {
    const passage = text(row, 'passage', ctx)
      .replace(/([.?!"'])\n@highlight\n/g, '$1 ')
      .replace(/\n@highlight\n/g, '. ');
    const answers = list(row, 'answers', ctx);
    return {
      prompt: `Query: ${text(row, 'query', ctx)}\n\nEntities: ${list(row, 'entities', ctx).join(', ')}\n\nPassage: ${passage}`,
      response: answers.length ? answers[0] : null,
      answers,
    };
  },

  mmlu: (row, ctx) => {
    const choices = list(row, 'choices', ctx);
    return {
      prompt: `Question: ${text(row, 'question', ctx)}\n\nChoices:\n${choices.map((c, i) => `${LETTERS[i]}: ${c}`).join('\n')}`,
      response: ctx.labelWord(field(row, 'answer', ctx)),
    };
  },

  piqa: (row, ctx) => ({
    prompt: `Question: ${text(row, 'goal', ctx)}\n\nSolution1: ${text(row, 'sol1', ctx)}\nSolution2: ${text(row, 'sol2', ctx)}`,
    response: ctx.labelWord(field(row, 'label', ctx)),
  }),

  siqa: (row, ctx) => ({
    prompt:
      `Context: ${text(row, 'context', ctx)}\n\nQuestion: ${text(row, 'question', ctx)}\n\n` +
      `Choices:\nA: ${text(row, 'answerA', ctx)}\nB: ${text(row, 'answerB', ctx)}\nC: ${text(row, 'answerC', ctx)}`,
    response: ctx.labelWord(field(row, 'label', ctx)),
  }),

  hellaswag: (row, ctx) => {
    const ctxText = 'ctx' in row ? text(row, 'ctx', ctx) : [text(row, 'ctx_a', ctx), text(row, 'ctx_b', ctx)].filter(Boolean).join(' ');
    const endings = list(row, 'endings', ctx);
    return {
      prompt: `Sentence: ${ctxText}\n\n${endings.map((e, i) => `Ending${i + 1}: ${e}`).join('\n')}`,
      response: ctx.labelWord(field(row, 'label', ctx)),
    };
  },

  winogrande: (row, ctx) => ({
    prompt: `Sentence: ${text(row, 'sentence', ctx)}\n\nOption1: ${text(row, 'option1', ctx)}\nOption2: ${text(row, 'option2', ctx)}`,
    response: ctx.labelWord(field(row, 'answer', ctx)),
  }),

  openbookqa: (row, ctx) => {
    const ch = field(row, 'choices', ctx) as { text?: unknown; label?: unknown } | null;
    if (!ch || !Array.isArray(ch.text) || !Array.isArray(ch.label) || ch.text.length !== ch.label.length) {
      throw new ConfigError(`${ctx.where}: "choices" should be {text: [...], label: [...]} of equal lengths.`);
    }
    const lines = ch.text.map((t, i) => `${String((ch.label as unknown[])[i])}: ${String(t)}`);
    return { prompt: `Question: ${text(row, 'question_stem', ctx)}\n\nChoices:\n${lines.join('\n')}`, response: ctx.labelWord(field(row, 'answerKey', ctx)) };
  },

  math_qa: (row, ctx) => ({
    prompt: `Problem: ${text(row, 'Problem', ctx)}\n\nOptions: ${text(row, 'options', ctx)}`,
    response: ctx.labelWord(field(row, 'correct', ctx)),
  }),

  gsm8k: (row, ctx) => {
    const answer = text(row, 'answer', ctx);
    return { prompt: text(row, 'question', ctx), response: answer === '' ? null : answer, label: answer === '' ? null : gsm8kAnswer(answer) };
  },

  svamp: (row, ctx) => {
    const q =
      'question_concat' in row && row.question_concat
        ? text(row, 'question_concat', ctx)
        : `${text(row, 'Body', ctx).trim()} ${text(row, 'Question', ctx).trim()}`;
    const a = field(row, 'Answer', ctx);
    const ans = a === null || a === undefined || a === '' ? null : floatText(Number(a));
    return { prompt: `Question: ${q}`, response: ans === null ? null : `${text(row, 'Equation', ctx).trim()} = ${ans}`, label: ans };
  },

  conala: (row, ctx) => {
    const rewritten = Object.hasOwn(row, 'rewritten_intent') ? row.rewritten_intent : null;
    const intent = typeof rewritten === 'string' && rewritten !== '' ? rewritten : text(row, 'intent', ctx);
    return { prompt: intent, response: text(row, 'snippet', ctx) };
  },

  codealpaca: (row, ctx) => ({ prompt: text(row, 'instruction', ctx), query: text(row, 'input', ctx), response: text(row, 'output', ctx) }),

  alpaca: (row, ctx) => {
    const out: Formatted = { prompt: text(row, 'instruction', ctx), query: 'input' in row ? text(row, 'input', ctx) : '', response: text(row, 'output', ctx) };
    if (typeof row.system === 'string' && row.system) out.system = row.system;
    return out;
  },

  apps: (row, ctx) => {
    const raw = field(row, 'solutions', ctx);
    let solutions: string[] = [];
    if (Array.isArray(raw)) solutions = raw.map(String);
    else if (typeof raw === 'string' && raw.trim() !== '') {
      try {
        const v = JSON.parse(raw) as unknown;
        if (!Array.isArray(v)) throw new Error('not a list');
        solutions = v.map(String);
      } catch (e) {
        throw new ConfigError(`${ctx.where}: "solutions" should be a JSON list of strings (${(e as Error).message}).`);
      }
    }
    return { prompt: text(row, 'question', ctx), response: solutions.length ? solutions[0] : null, answers: solutions };
  },

  inputs_targets: (row, ctx) => ({ prompt: text(row, 'inputs', ctx), response: responseValue(field(row, 'targets', ctx), ctx) }),
};

export const FORMATTER_NAMES: readonly string[] = Object.keys(FORMATTERS);

// ---------------------------------------------------------------------------
// Rendering

/** One example ready for a template. */
export interface Rendered {
  instruction: string;
  prompt: string;
  query: string;
  /** The user turn: instruction, prompt and query joined by "\n", empty pieces left out. */
  user: string;
  /** The assistant turn (training target, generation reference); '' when the row has no gold. */
  response: string;
  /** What metrics compare a prediction with (label word, score, final number, reference text); null: unlabeled. */
  label: string | null;
  /** Every acceptable answer, when there are several (ReCoRD, APPS). */
  answers?: string[];
  system?: string;
}

/** The row's class → the entry's label word (see Formatted). */
export function labelWordOf(entry: DatasetEntry, value: unknown, where: string): string | null {
  if (value === null || value === undefined || value === '') return null;
  const names = entry.labelNames;
  const words = entry.labelWords ?? names;
  if (typeof value === 'number') {
    if (value === -1) return null;
    if (!names)
      throw new ConfigError(
        `${where}: the label is the id ${value}, but "${entry.key}" has no labelNames to read it and the file carries no ClassLabel names. Add "labelNames" to the entry.`,
      );
    if (!Number.isInteger(value) || value < 0 || value >= names.length)
      throw new ConfigError(`${where}: label id ${value} is not a class of "${entry.key}" (0..${names.length - 1}: ${names.join(', ')}).`);
    return words![value];
  }
  const s = String(value);
  if (names) {
    const i = names.indexOf(s);
    if (i >= 0) return words![i];
  }
  if (words?.includes(s)) return s;
  throw new ConfigError(
    `${where}: the label ${JSON.stringify(value)} is not a class of "${entry.key}" (${(names ?? words ?? []).join(', ')}). Map it with the source's "map", or fix labelNames.`,
  );
}

/** Formats a row with the entry's (or the source's) formatter; `where` names the row in errors. */
export function formatRow(entry: DatasetEntry, row: TableRow, where: string, formatterName = entry.formatter): Formatted {
  const f = FORMATTERS[formatterName];
  if (!f) throw new ConfigError(`dataset "${entry.key}": unknown formatter "${formatterName}". Known: ${FORMATTER_NAMES.join(', ')}.`);
  return f(row, { entry, where, labelWord: (v) => labelWordOf(entry, v, where) });
}

function assemble(entry: DatasetEntry, f: Formatted, response: string | null, label: string | null): Rendered {
  const query = f.query ?? '';
  const user = [entry.instruction, f.prompt, query].filter((s) => s.length > 0).join('\n');
  const r: Rendered = { instruction: entry.instruction, prompt: f.prompt, query, user, response: response ?? '', label };
  if (f.answers) r.answers = f.answers;
  if (f.system) r.system = f.system;
  return r;
}

/** The example of a row (evaluation form: one per row; with several answers the first is the response). */
export function renderFormatted(entry: DatasetEntry, f: Formatted): Rendered {
  const label = f.label !== undefined ? f.label : f.response;
  return assemble(entry, f, f.response, label);
}

/**
 * The training examples of a row: one, or with `entry.expand` one per gold
 * answer (PEFT-Factory duplicates ReCoRD and APPS rows this way).
 */
export function expandFormatted(entry: DatasetEntry, f: Formatted): Rendered[] {
  if (entry.expand && f.answers && f.answers.length > 1) return f.answers.map((a) => assemble(entry, f, a, a));
  return [renderFormatted(entry, f)];
}
