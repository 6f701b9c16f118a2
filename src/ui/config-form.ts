/**
 * The experiment config as the forms edit it: every option of the schema
 * with a value (defaults filled in), validated as a whole by the same
 * validateConfig a YAML file goes through, and the problems it reports mapped
 * back to the fields they are about.
 */
import { allOptions, ConfigValidationError, optionSpec, validateConfig, type ExperimentConfig, type OptionSpec } from '../config/schema';
import { methodListing, selectedMethods, selectionKeys, type MethodInfo } from '../methods/select';

/** Values a fresh studio starts from where the CLI's defaults suit a browser less. */
export const STUDIO_DEFAULTS: Record<string, unknown> = {
  output_dir: 'saves/studio',
  // A point per step on the charts, and checkpoints often enough that a closed tab loses little.
  logging_steps: 1,
  save_steps: 20,
  save_total_limit: 2,
  cutoff_len: 256,
  per_device_train_batch_size: 4,
  learning_rate: 1e-3,
  val_size: 0.1,
};

export function defaultValues(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of allOptions()) {
    if (s.default !== undefined) out[s.key] = s.type === 'string-list' && typeof s.default === 'string' ? s.default : s.default;
  }
  return { ...out, ...STUDIO_DEFAULTS, ...overrides };
}

export interface Validation {
  config: ExperimentConfig | null;
  /** Problems by option key; '' holds the ones about no single key (cross-option rules). */
  problems: Map<string, string[]>;
}

/** The key a validation message is about: "key: ...", "Missing required key 'key'", "Unknown key 'key'". */
export function problemKey(message: string, keys: Set<string>): string {
  const m = /^([a-z][a-z0-9_]*):/.exec(message) ?? /key '([^']+)'/.exec(message);
  return m && keys.has(m[1]) ? m[1] : '';
}

export function validateValues(values: Record<string, unknown>): Validation {
  // Only known keys with a value go in; undefined means "default".
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(values)) if (v !== undefined) raw[k] = v;
  try {
    return { config: validateConfig(raw, 'studio'), problems: new Map() };
  } catch (err) {
    const problems = new Map<string, string[]>();
    const keys = new Set(allOptions().map((s) => s.key));
    const list = err instanceof ConfigValidationError ? err.problems : [(err as Error).message];
    for (const p of list) {
      const k = problemKey(p, keys);
      problems.set(k, [...(problems.get(k) ?? []), p]);
    }
    return { config: null, problems };
  }
}

/**
 * Why an action that needs a valid experiment (a data preview) did nothing:
 * the problems, one a line, and where they are shown. Null when it is valid.
 */
export function invalidExperimentMessage(v: Validation, action: string): string | null {
  if (v.config) return null;
  const list = [...v.problems.values()].flat();
  return (
    `${action} needs a valid experiment; it has ${list.length === 1 ? 'a problem' : `${list.length} problems`}:\n` +
    list.map((p) => `  - ${p}`).join('\n') +
    '\nEach is shown next to its field (Method, Data or Train); the Train screen lists them all.'
  );
}

/** "≥ 1", "0 – 1", "> 0" for a field's hint. */
export function rangeHint(spec: OptionSpec): string {
  const lo = spec.min === undefined ? '' : `${spec.exclusiveMin ? '>' : '≥'} ${spec.min}`;
  const hi = spec.max === undefined ? '' : `${spec.exclusiveMax ? '<' : '≤'} ${spec.max}`;
  return [lo, hi].filter(Boolean).join(', ');
}

/** Methods grouped by family, families in the order of their first method (MethodInfo.order). */
export function groupMethods(methods: MethodInfo[]): { name: string; methods: MethodInfo[] }[] {
  const out: { name: string; methods: MethodInfo[] }[] = [];
  for (const m of methodListing(methods)) {
    const f = out.find((x) => x.name === m.family) ?? out[out.push({ name: m.family, methods: [] }) - 1];
    f.methods.push(m);
  }
  return out;
}

/** The config keys that pick a method in the form (its selection flag on, the others' off). */
export function methodKeys(method: string, methods: MethodInfo[]): Record<string, unknown> {
  return selectionKeys(method, methods, (key) => optionSpec(key)?.default ?? null);
}

/** The method the values select (the registry's rule, from the catalogue). */
export function methodOf(values: Record<string, unknown>, methods: MethodInfo[]): string {
  return selectedMethods(values, methods)[0];
}

/**
 * The values a config is made of: every shared option and the options of the
 * chosen method, none of another method's. The form keeps a method's values
 * when another is chosen (switching back finds them), but they must not reach
 * the config, its YAML or a share link.
 */
export function configValues(values: Record<string, unknown>, methods: MethodInfo[]): Record<string, unknown> {
  const chosen = methods.find((m) => m.name === methodOf(values, methods));
  const mine = new Set(chosen?.options ?? []);
  // Every method's form keys; the selection flags stay (they say which method is chosen).
  const flags = new Set(methods.flatMap((m) => (m.select ? [m.select.key] : [])));
  const owned = new Set(methods.flatMap((m) => m.options));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(values)) if (!owned.has(k) || mine.has(k) || flags.has(k)) out[k] = v;
  return out;
}

/**
 * The config a trainable-parameter count needs: the method's own options
 * (and the model and seed) from the form, everything else at its default, so
 * a problem elsewhere (no dataset yet) does not stop the count.
 */
export function countConfig(values: Record<string, unknown>, methods: MethodInfo[]): ExperimentConfig | null {
  const name = methodOf(values, methods);
  const info = methods.find((m) => m.name === name);
  if (!info) return null;
  const raw: Record<string, unknown> = { output_dir: 'count', dataset: 'count.jsonl', ...methodKeys(name, methods) };
  for (const key of ['model_name_or_path', 'endpoint', 'seed']) raw[key] = values[key];
  for (const key of info.options) if (values[key] !== undefined) raw[key] = values[key];
  return validateValues(raw).config;
}
