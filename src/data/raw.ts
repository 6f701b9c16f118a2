/**
 * From parsed files to rows in a dataset's canonical (Hub) schema.
 *
 * A source names its files per split; each file is parsed by its format
 * (tabular.ts, parquet.ts), then, in this order:
 *
 *   adapter  a named reshaping for original distributions whose layout is
 *            not one row per example (SuperGLUE MultiRC and ReCoRD nest
 *            questions in passages; MMLU's csv files carry no subject column;
 *            PIQA / SIQA keep labels in a separate .lst file; ...);
 *   rename   source column → canonical column (MRPC's "#1 String" → sentence1);
 *   map      per-column value maps, keyed by the value's string form
 *            (SST-2's "0" → "negative", BoolQ's true → "True");
 *   numeric  columns parsed as numbers (STS-B's "4.750" → 4.75).
 *
 * The result has the column names of the Hub dataset and ClassLabel columns
 * as label names, the same as a decoded parquet file of the Hub repo, so one
 * formatter renders both (tests check raw and Hub rows render the same).
 */
import { ConfigError } from '../errors';
import type { TableRow } from './tabular';

export type FileFormat = 'parquet' | 'jsonl' | 'json' | 'csv' | 'tsv' | 'lines';

export const FILE_FORMATS: readonly FileFormat[] = ['parquet', 'jsonl', 'json', 'csv', 'tsv', 'lines'];

/** How a source's files become canonical rows (all optional). */
export interface TableOptions {
  /** Default: from the file extension (.parquet, .jsonl, .json, .csv, .tsv, .lst/.txt → lines). */
  format?: FileFormat;
  /** csv/tsv: true (default) the first row is the header; a list names the columns of a headerless file. */
  header?: boolean | string[];
  /** csv/tsv quote character; null: no quoting. Default '"' for csv, null for tsv (GLUE's convention). */
  quote?: string | null;
  adapter?: string;
  rename?: Record<string, string>;
  map?: Record<string, Record<string, string | number | boolean | null>>;
  numeric?: string[];
}

export interface ParsedFile {
  /** The file's path as named in the source (adapters may read it, e.g. MMLU's subject). */
  path: string;
  rows: TableRow[];
}

/** The format of a file from its options or its extension. */
export function formatOf(path: string, opts: TableOptions): FileFormat {
  if (opts.format) return opts.format;
  const lower = path.toLowerCase();
  if (lower.endsWith('.parquet')) return 'parquet';
  if (lower.endsWith('.jsonl') || lower.endsWith('.ndjson')) return 'jsonl';
  if (lower.endsWith('.json')) return 'json';
  if (lower.endsWith('.csv')) return 'csv';
  if (lower.endsWith('.tsv')) return 'tsv';
  if (lower.endsWith('.lst') || lower.endsWith('.txt')) return 'lines';
  throw new ConfigError(`${path}: cannot tell the file format from its name. Use a .parquet, .jsonl, .json, .csv or .tsv file, or set "format" in the source.`);
}

// ---------------------------------------------------------------------------
// Adapters

type Adapter = (files: ParsedFile[], where: string) => TableRow[];

function str(v: unknown): string {
  return v === null || v === undefined ? '' : String(v);
}

function need(row: TableRow, field: string, where: string): unknown {
  if (!Object.hasOwn(row, field)) throw new ConfigError(`${where}: a row has no field "${field}" (fields: ${Object.keys(row).join(', ')}).`);
  return row[field];
}

/** One data file plus a line-aligned labels file (PIQA `valid-labels.lst`, SIQA `dev-labels.lst`) → column `label`. */
const labelLines: Adapter = (files, where) => {
  if (files.length % 2 !== 0) throw new ConfigError(`${where}: the label_lines adapter takes pairs of files (data, labels); got ${files.length}.`);
  const out: TableRow[] = [];
  for (let k = 0; k < files.length; k += 2) {
    const [data, labels] = [files[k], files[k + 1]];
    if (data.rows.length !== labels.rows.length) {
      throw new ConfigError(
        `${where}: ${data.path} has ${data.rows.length} rows but ${labels.path} has ${labels.rows.length} labels; they must be line-aligned.`,
      );
    }
    data.rows.forEach((r, i) => out.push({ ...r, label: labels.rows[i].text }));
  }
  return out;
};

/**
 * MMLU's original csv files: no header (question, A, B, C, D, answer letter)
 * and the subject in the file name `<subject>_<split>.csv`. Rows become the
 * Hub schema {question, subject, choices: [A..D], answer: letter}, files in
 * the order given (the Hub's `all` config concatenates subjects in
 * alphabetical order).
 */
const mmluCsv: Adapter = (files, where) => {
  const out: TableRow[] = [];
  for (const f of files) {
    const m = /([^/]+?)_(dev|val|test|train)\.csv$/.exec(f.path);
    if (!m) throw new ConfigError(`${where}: ${f.path} is not named <subject>_<dev|val|test>.csv, so its subject is unknown.`);
    for (const r of f.rows) {
      const fields = Object.values(r).map(str);
      if (fields.length !== 6) throw new ConfigError(`${where}: ${f.path} has a row of ${fields.length} fields; MMLU rows are question, A, B, C, D, answer.`);
      out.push({ question: fields[0], subject: m[1], choices: fields.slice(1, 5), answer: fields[5].trim() });
    }
  }
  return out;
};

/**
 * OpenBookQA's tsv (ID, Question Stem, Choices "(A) … (B) …", Complete
 * Question, Answer Key) → {id, question_stem, choices: {text, label}, answerKey}.
 * The choices string is split at each "(X) " marker.
 */
const openbookqaTsv: Adapter = (files, where) =>
  files.flatMap((f) =>
    f.rows.map((r) => {
      const choices = str(need(r, 'Choices', where));
      const marks = [...choices.matchAll(/\(([A-Z])\) /g)];
      if (marks.length === 0) throw new ConfigError(`${where}: the Choices field ${JSON.stringify(choices)} has no "(A) " markers.`);
      const text: string[] = [];
      const label: string[] = [];
      marks.forEach((m, k) => {
        const end = k + 1 < marks.length ? marks[k + 1].index! : choices.length;
        label.push(m[1]);
        text.push(choices.slice(m.index! + m[0].length, end).trim());
      });
      return {
        id: str(r.ID),
        question_stem: str(need(r, 'Question Stem', where)),
        choices: { text, label },
        answerKey: str(need(r, 'Answer Key', where)).trim(),
      };
    }),
  );

/** SuperGLUE MultiRC: one row per (passage, question, answer) with the passage text as `paragraph`. */
const superglueMultirc: Adapter = (files, where) => {
  const out: TableRow[] = [];
  for (const f of files) {
    for (const r of f.rows) {
      const passage = need(r, 'passage', where) as {
        text: string;
        questions: { question: string; idx: number; answers: { text: string; idx: number; label?: number }[] }[];
      };
      for (const q of passage.questions) {
        for (const a of q.answers) {
          out.push({
            paragraph: passage.text,
            question: q.question,
            answer: a.text,
            idx: { paragraph: r.idx as number, question: q.idx, answer: a.idx },
            label: a.label === undefined ? null : a.label === 1 ? 'True' : 'False',
          });
        }
      }
    }
  }
  return out;
};

/**
 * SuperGLUE ReCoRD: one row per query. Entities are the passage spans
 * (inclusive ends) as unique texts, sorted; answers the unique answer texts,
 * sorted (the Hub keeps them as sets; the test mirror sorts them).
 */
const superglueRecord: Adapter = (files, where) => {
  const out: TableRow[] = [];
  for (const f of files) {
    for (const r of f.rows) {
      const passage = need(r, 'passage', where) as { text: string; entities: { start: number; end: number }[] };
      const qas = need(r, 'qas', where) as { query: string; idx: number; answers?: { text: string }[] }[];
      const entities = [...new Set(passage.entities.map((e) => passage.text.slice(e.start, e.end + 1)))].sort();
      for (const qa of qas) {
        out.push({
          passage: passage.text,
          query: qa.query,
          entities,
          answers: [...new Set((qa.answers ?? []).map((a) => a.text))].sort(),
          idx: { passage: r.idx as number, query: qa.idx },
        });
      }
    }
  }
  return out;
};

/**
 * SuperGLUE WSC → the Hub's `wsc.fixed` rows: the target's spans flattened,
 * with the HF loader's span-text fixes (a span text that is not in the text
 * gets the case of the word at its index, loses a trailing "." and has
 * newlines replaced by spaces).
 */
const superglueWsc: Adapter = (files, where) =>
  files.flatMap((f) =>
    f.rows.map((r) => {
      const text = str(need(r, 'text', where));
      const t = need(r, 'target', where) as { span1_index: number; span2_index: number; span1_text: string; span2_text: string };
      const fix = (span: string, index: number): string => {
        if (text.includes(span)) return span;
        if (span === 'Kamenev and Zinoviev' || span === 'Kamenev, Zinoviev, and Stalin') return span;
        const word = text.split(/\s+/).filter(Boolean)[index] ?? '';
        let s =
          word && word[0] === word[0].toLowerCase() && word[0] !== word[0].toUpperCase()
            ? span[0].toLowerCase() + span.slice(1)
            : span[0].toUpperCase() + span.slice(1);
        s = s.replace(/\.+$/, '').replace(/\n/g, ' ');
        return s;
      };
      return {
        text,
        span1_index: t.span1_index,
        span2_index: t.span2_index,
        span1_text: fix(t.span1_text, t.span1_index),
        span2_text: fix(t.span2_text, t.span2_index),
        idx: r.idx,
        label: r.label === undefined || r.label === null ? null : r.label === true ? 'True' : 'False',
      };
    }),
  );

export const ADAPTERS: Record<string, Adapter> = {
  label_lines: labelLines,
  mmlu_csv: mmluCsv,
  openbookqa_tsv: openbookqaTsv,
  superglue_multirc: superglueMultirc,
  superglue_record: superglueRecord,
  superglue_wsc: superglueWsc,
};

// ---------------------------------------------------------------------------

function toNumber(v: unknown, column: string, where: string): number | null {
  if (v === null || v === undefined || v === '') return null;
  const x = typeof v === 'number' ? v : Number(String(v).trim());
  if (!Number.isFinite(x)) throw new ConfigError(`${where}: column "${column}" should be a number, got ${JSON.stringify(v)}.`);
  return x;
}

/** Parsed files of one split → canonical rows (adapter, rename, map, numeric). */
export function canonicalRows(files: ParsedFile[], opts: TableOptions, where: string): TableRow[] {
  let rows: TableRow[];
  if (opts.adapter) {
    const adapter = Object.hasOwn(ADAPTERS, opts.adapter) ? ADAPTERS[opts.adapter] : undefined;
    if (!adapter) throw new ConfigError(`${where}: unknown adapter "${opts.adapter}". Known adapters: ${Object.keys(ADAPTERS).join(', ')}.`);
    rows = adapter(files, where);
  } else {
    rows = files.flatMap((f) => f.rows);
  }
  const rename = opts.rename ?? {};
  const map = opts.map ?? {};
  const numeric = opts.numeric ?? [];
  if (!Object.keys(rename).length && !Object.keys(map).length && !numeric.length) return rows;
  // An own property whatever the column is called ('__proto__' included): assignment would set the prototype.
  const define = (o: TableRow, k: string, v: unknown) => Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  return rows.map((r, i) => {
    const out: TableRow = {};
    for (const [k, v] of Object.entries(r)) define(out, Object.hasOwn(rename, k) ? rename[k] : k, v);
    for (const [col, values] of Object.entries(map)) {
      if (!Object.hasOwn(out, col)) continue;
      const v = out[col];
      const key = v === null || v === undefined ? 'null' : String(v).trim();
      if (!Object.hasOwn(values, key)) {
        throw new ConfigError(
          `${where}, row ${i}: column "${col}" has the value ${JSON.stringify(v)}, which the source's map does not know (known: ${Object.keys(values).join(', ')}).`,
        );
      }
      out[col] = values[key];
    }
    for (const col of numeric) if (col in out) out[col] = toNumber(out[col], col, `${where}, row ${i}`);
    return out;
  });
}
