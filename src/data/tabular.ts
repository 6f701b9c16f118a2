/**
 * Text table formats: delimited (csv, tsv), JSON Lines, JSON arrays, and
 * one-value-per-line label files. Every parser takes the decoded text and a
 * source name, and every error names the source and the line.
 *
 * Delimited text follows RFC 4180 when quoting is on: a field that starts
 * with the quote character runs to the next lone quote, may hold delimiters
 * and line breaks, and writes a quote as two quotes. A quote inside an
 * unquoted field is kept as a character (as Python's csv module does). With
 * quoting off (`quote: null`), quotes are plain characters: GLUE's .tsv files
 * need this, since they hold unbalanced quotes (MRPC: `"The foodservice pie
 * business ...` with no closing quote) and were written and are read by the
 * HF `glue` loader with csv.QUOTE_NONE.
 *
 * Line ends may be \n or \r\n (QQP's dev.tsv uses \r\n); a leading UTF-8 BOM
 * is dropped (MRPC's files start with one); blank lines are skipped.
 */
import { ConfigError } from '../errors';

/** A row as read from a text table: column name → value. */
export type TableRow = Record<string, unknown>;

/** UTF-8 text without a leading byte-order mark. */
export function decodeText(bytes: Uint8Array): string {
  return new TextDecoder('utf-8').decode(bytes).replace(/^\uFEFF/, '');
}

export interface DelimitedOptions {
  /** Field separator: ',' for csv, '\t' for tsv. */
  delimiter: string;
  /** Quote character ('"' by default); null turns quoting off. */
  quote?: string | null;
  /**
   * true (default): the first row names the columns. A list: the column
   * names of a file without a header row (CoLA, MMLU).
   */
  header?: boolean | readonly string[];
}

/** The raw fields of each record, with the 1-based line where each record starts. */
export function parseDelimitedRecords(text: string, opts: DelimitedOptions, source: string): { fields: string[]; line: number }[] {
  const d = opts.delimiter;
  const q = opts.quote === undefined ? '"' : opts.quote;
  if (d.length !== 1) throw new ConfigError(`${source}: the delimiter must be one character, got ${JSON.stringify(d)}.`);
  if (q !== null && (q.length !== 1 || q === d))
    throw new ConfigError(`${source}: the quote must be one character other than the delimiter, got ${JSON.stringify(q)}.`);
  text = text.replace(/^\uFEFF/, '');
  const out: { fields: string[]; line: number }[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const start = line;
    const fields: string[] = [];
    // One record: fields until an unquoted line end or the end of the text.
    for (;;) {
      let field = '';
      if (q !== null && text[i] === q) {
        const open = line;
        i++;
        for (;;) {
          if (i >= n)
            throw new ConfigError(
              `${source}, line ${open}: a quoted field is never closed (no matching ${q}). Close the quote or double the quotes inside the field.`,
            );
          const c = text[i];
          if (c === q) {
            if (text[i + 1] === q) {
              field += q;
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === '\n') line++;
          field += c;
          i++;
        }
        const next = text[i];
        if (i < n && next !== d && next !== '\n' && !(next === '\r' && text[i + 1] === '\n')) {
          throw new ConfigError(
            `${source}, line ${line}: unexpected ${JSON.stringify(next)} after a closing quote. A quoted field must end at a ${d === '\t' ? 'tab' : JSON.stringify(d)} or the line end; write a quote inside a quoted field as ${q}${q}.`,
          );
        }
      } else {
        let j = i;
        while (j < n && text[j] !== d && text[j] !== '\n') j++;
        field = text.slice(i, j);
        if (j < n && text[j] === '\n' && field.endsWith('\r')) field = field.slice(0, -1);
        else if (j >= n && field.endsWith('\r')) field = field.slice(0, -1);
        i = j;
      }
      fields.push(field);
      if (i < n && text[i] === d) {
        i++;
        continue;
      }
      // line end (\n or \r\n) or end of text
      if (text[i] === '\r') i++;
      if (text[i] === '\n') {
        i++;
        line++;
      }
      break;
    }
    if (!(fields.length === 1 && fields[0] === '')) out.push({ fields, line: start });
  }
  return out;
}

/** Rows of a csv/tsv text, keyed by the header (or the given column names). */
export function parseDelimited(text: string, opts: DelimitedOptions, source: string): TableRow[] {
  const records = parseDelimitedRecords(text, opts, source);
  const header = opts.header ?? true;
  let names: readonly string[];
  let body = records;
  if (header === true) {
    if (records.length === 0) throw new ConfigError(`${source}: the file is empty; expected a header row of column names.`);
    names = records[0].fields;
    body = records.slice(1);
  } else if (header === false) {
    const width = records.length ? records[0].fields.length : 0;
    names = Array.from({ length: width }, (_, k) => String(k));
  } else {
    names = header;
  }
  const dup = names.find((c, k) => names.indexOf(c) !== k);
  if (dup !== undefined) throw new ConfigError(`${source}: the column name ${JSON.stringify(dup)} appears twice in the header. Rename one of them.`);
  return body.map(({ fields, line }) => {
    if (fields.length !== names.length) {
      const hint = opts.quote === null ? '' : ' If the file has unbalanced quotes (GLUE .tsv files do), read it with quoting off.';
      throw new ConfigError(`${source}, line ${line}: ${fields.length} fields, but the header has ${names.length} (${names.join(', ')}).${hint}`);
    }
    const row: TableRow = {};
    names.forEach((c, k) => (row[c] = fields[k]));
    return row;
  });
}

function describeJson(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** JSON Lines: one object per non-blank line. */
export function parseJsonl(text: string, source: string): TableRow[] {
  const out: TableRow[] = [];
  text
    .replace(/^\uFEFF/, '')
    .split('\n')
    .forEach((raw, k) => {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.trim() === '') return;
      let v: unknown;
      try {
        v = JSON.parse(line);
      } catch (e) {
        throw new ConfigError(`${source}, line ${k + 1}: not valid JSON (${(e as Error).message}). Each line of a .jsonl file must be one JSON object.`);
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v)) {
        throw new ConfigError(`${source}, line ${k + 1}: expected a JSON object, got ${describeJson(v)}.`);
      }
      out.push(v as TableRow);
    });
  return out;
}

/** A JSON array of objects (the whole file). */
export function parseJsonArray(text: string, source: string): TableRow[] {
  let v: unknown;
  try {
    v = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (e) {
    throw new ConfigError(
      `${source}: not valid JSON (${(e as Error).message}). A .json dataset must be one array of objects; use .jsonl for one object per line.`,
    );
  }
  if (!Array.isArray(v)) {
    throw new ConfigError(
      `${source}: expected a JSON array of objects ([{...}, {...}]), got ${v === null ? 'null' : typeof v === 'object' ? 'an object' : typeof v}.`,
    );
  }
  v.forEach((r, k) => {
    if (r === null || typeof r !== 'object' || Array.isArray(r))
      throw new ConfigError(`${source}: item ${k} of the array is ${describeJson(r)}, not an object.`);
  });
  return v as TableRow[];
}

/** One value per non-blank line (PIQA / SIQA `*-labels.lst`). */
export function parseLines(text: string): string[] {
  return text
    .replace(/^\uFEFF/, '')
    .split('\n')
    .map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l))
    .filter((l) => l.trim() !== '')
    .map((l) => l.trim());
}
