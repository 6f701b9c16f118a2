/**
 * The experiment config as YAML text, with LLaMA-Factory / PEFT-Factory key
 * names, so the same file runs with `llamafactory-cli train` on a cluster.
 *
 * Reading uses YAML 1.2 (the `yaml` package): `5e-5` is a number (PyYAML, YAML
 * 1.1, would read it as a string), `yes`/`no` are strings (validation then
 * says to write true/false). Writing stays inside what both read the same way:
 * floats always carry a decimal point (`3.0`, `1.0e-08`), as PyYAML needs.
 */
import { isMap, parseDocument, stringify } from 'yaml';
import { ConfigError } from '../errors';
import { allOptions, optionGroups, type OptionSpec } from './schema';

function yamlProblem(e: { message: string; linePos?: [{ line: number; col: number }, ...unknown[]] }): { line?: number; col?: number; text: string } {
  const pos = e.linePos?.[0];
  // The package's message ends with " at line L, column C:" and a code frame; keep the frame, drop the position text.
  const text = e.message.replace(/ at line \d+, column \d+/, '').trimEnd();
  return { line: pos?.line, col: pos?.col, text };
}

/** doc.toJS(), with the package's resource-exhaustion guard (an alias bomb) as a ConfigError. */
function toJs(doc: ReturnType<typeof parseDocument>, what: string): unknown {
  try {
    return doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    if (/alias/i.test((e as Error).message)) {
      throw new ConfigError(
        `${what}: its YAML aliases (*name) expand to too many values (${(e as Error).message.toLowerCase()}). Write the values out instead of nesting aliases.`,
      );
    }
    throw new ConfigError(`${what}: the YAML cannot be read: ${(e as Error).message}`);
  }
}

/** Parses one YAML value the way a file would (so `lora_target=[q_proj, v_proj]` is a list). */
function parseScalar(value: string, what: string): unknown {
  const doc = parseDocument(value, { prettyErrors: true });
  if (doc.errors.length) {
    throw new ConfigError(`${what}: the value is not valid YAML: ${yamlProblem(doc.errors[0]).text}`);
  }
  return toJs(doc, what);
}

/**
 * Reads a config file's text and applies `key=value` overrides (values parsed
 * as YAML, so `learning_rate=1e-4` is a number, `packing=true` a boolean and
 * `template=` null). Returns the raw mapping; validateConfig() checks it.
 */
export function parseConfigText(text: string, overrides: string[], source: string): Record<string, unknown> {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    const lines = doc.errors.map((e) => {
      const p = yamlProblem(e);
      return p.line === undefined ? `${source}: ${p.text}` : `${source}, line ${p.line}, column ${p.col}: ${p.text}`;
    });
    throw new ConfigError(`${lines.join('\n')}\nFix the YAML syntax of ${source} (keys as "key: value", one per line).`);
  }
  let raw: Record<string, unknown> = {};
  if (doc.contents !== null) {
    if (!isMap(doc.contents)) {
      const line = doc.contents.range ? lineOf(text, doc.contents.range[0]) : 1;
      throw new ConfigError(
        `${source}, line ${line}: the top level must be a mapping of "key: value" lines, not a ${Array.isArray(toJs(doc, source)) ? 'list' : 'single value'}.`,
      );
    }
    raw = toJs(doc, source) as Record<string, unknown>;
  }
  for (const o of overrides) {
    const eq = o.indexOf('=');
    const key = eq < 0 ? '' : o.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new ConfigError(`Override '${o}' must have the form key=value (e.g. learning_rate=1e-4).`);
    }
    // An own property even for '__proto__' (validation then names it as an unknown key).
    Object.defineProperty(raw, key, { value: parseScalar(o.slice(eq + 1), `Override '${o}'`), enumerable: true, writable: true, configurable: true });
  }
  return raw;
}

function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/** A float as PyYAML writes (and reads) it: always a decimal point, signed exponent. */
export function formatFloat(v: number): string {
  if (Number.isInteger(v) && Math.abs(v) < 1e16) return v.toFixed(1);
  const s = String(v);
  const m = /^(-?\d+)(\.\d+)?e([+-])(\d+)$/.exec(s);
  return m ? `${m[1]}${m[2] ?? '.0'}e${m[3]}${m[4].padStart(2, '0')}` : s;
}

function formatString(s: string): string {
  const y = stringify(s, { lineWidth: 0 }).trimEnd();
  // Multi-line strings come back as block scalars; a JSON string is a valid YAML double-quoted scalar.
  return y.includes('\n') ? JSON.stringify(s) : y;
}

function formatValue(spec: OptionSpec | undefined, v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number') {
    if (spec?.type === 'float' && !(spec.countOrRatio && Number.isInteger(v))) return formatFloat(v);
    return String(v);
  }
  if (typeof v === 'string') return formatString(v);
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) {
    // LLaMA-Factory's own form for lists of names: `lora_target: q_proj,v_proj`.
    return v.some((x) => x.includes(',')) ? JSON.stringify(v) : formatString(v.join(','));
  }
  return JSON.stringify(v);
}

function sameValue(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => x === b[i]);
  return a === b;
}

function normalisedDefault(spec: OptionSpec): unknown {
  if (spec.type === 'string-list' && typeof spec.default === 'string') return spec.default.split(',').map((s) => s.trim());
  return spec.default;
}

/**
 * Keys written even at their default: the stage and method make the file
 * self-describing; do_train and logging_steps have different defaults in the
 * HF TrainingArguments that LLaMA-Factory reads (false, 500).
 */
const ALWAYS_WRITTEN = new Set(['stage', 'do_train', 'finetuning_type', 'logging_steps']);

export interface ToYamlOptions {
  /** Write every option, defaults included (default: only what differs). */
  full?: boolean;
}

/**
 * Writes a validated config as YAML: required keys, keys that differ from
 * their default and ALWAYS_WRITTEN, under `### group` headings as in
 * LLaMA-Factory's examples. parseConfigText + validateConfig of the result
 * gives the same config back. PEFT Studio's own keys (endpoint) are written
 * only when changed; LLaMA-Factory rejects keys it does not know.
 */
export function toYaml(config: Record<string, unknown>, opts: ToYamlOptions = {}): string {
  const specs = allOptions();
  const byGroup = new Map<string, string[]>(optionGroups().map((g) => [g, []]));
  for (const spec of specs) {
    if (!(spec.key in config)) continue;
    const v = config[spec.key];
    const write = opts.full || spec.default === undefined || ALWAYS_WRITTEN.has(spec.key) || !sameValue(v, normalisedDefault(spec));
    if (write) byGroup.get(spec.group)!.push(`${spec.key}: ${formatValue(spec, v)}`);
  }
  const known = new Set(specs.map((s) => s.key));
  const other = Object.keys(config)
    .filter((k) => !known.has(k))
    .map((k) => `${k}: ${formatValue(undefined, config[k])}`);
  if (other.length) byGroup.set('other', other);
  const blocks = [...byGroup].filter(([, lines]) => lines.length).map(([g, lines]) => `### ${g}\n${lines.join('\n')}\n`);
  return blocks.join('\n');
}
