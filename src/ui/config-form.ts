/**
 * The experiment config as the forms edit it: every option of the schema
 * with a value (defaults filled in), validated as a whole by the same
 * validateConfig a YAML file goes through, and the problems it reports mapped
 * back to the fields they are about.
 */
import { allOptions, ConfigValidationError, validateConfig, type ExperimentConfig, type OptionSpec } from '../config/schema';

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

/** "≥ 1", "0 – 1", "> 0" for a field's hint. */
export function rangeHint(spec: OptionSpec): string {
  const lo = spec.min === undefined ? '' : `${spec.exclusiveMin ? '>' : '≥'} ${spec.min}`;
  const hi = spec.max === undefined ? '' : `${spec.exclusiveMax ? '<' : '≤'} ${spec.max}`;
  return [lo, hi].filter(Boolean).join(', ');
}

/**
 * Methods by family (METHODS.md parts A–D). A method folder that is in no
 * family is a plug-in and is listed under Plug-ins.
 */
export const FAMILIES: { name: string; methods: string[] }[] = [
  { name: 'LoRA family', methods: ['lora', 'qlora', 'dora', 'pissa'] },
  { name: 'Orthogonal and spectral', methods: ['oft', 'svft'] },
  { name: 'Full, partial and optimizer-side', methods: ['full', 'freeze', 'galore'] },
  { name: 'Prompt learning', methods: ['prompt-tuning', 'prefix-tuning', 'p-tuning', 'p-tuning-v2', 'mtp'] },
  { name: 'Adapters, scaling and bias', methods: ['bn-adapter', 'seq-bn-adapter', 'par-adapter', 'ia3', 'lntuning', 'bitfit'] },
];

export function groupMethods(methods: string[]): { name: string; methods: string[] }[] {
  const known = new Set(FAMILIES.flatMap((f) => f.methods));
  const out = FAMILIES.map((f) => ({ name: f.name, methods: f.methods.filter((m) => methods.includes(m)) })).filter((f) => f.methods.length);
  const plugins = methods.filter((m) => !known.has(m));
  if (plugins.length) out.push({ name: 'Plug-ins', methods: plugins });
  return out;
}

/**
 * The config keys that select a method folder, with LLaMA-Factory's flags
 * (so the YAML runs there too): qlora = lora + quantization_bit 4, dora =
 * lora + use_dora, pissa = lora + pissa_init, galore = full + use_galore.
 * The inverse of methodNameFor (src/methods/registry.ts).
 */
export function methodKeys(method: string): Record<string, unknown> {
  const off = { quantization_bit: null, use_dora: false, pissa_init: false, use_galore: false };
  switch (method) {
    case 'qlora':
      return { ...off, finetuning_type: 'lora', quantization_bit: 4 };
    case 'dora':
      return { ...off, finetuning_type: 'lora', use_dora: true };
    case 'pissa':
      return { ...off, finetuning_type: 'lora', pissa_init: true };
    case 'galore':
      return { ...off, finetuning_type: 'full', use_galore: true };
    default:
      return { ...off, finetuning_type: method };
  }
}

/** The method folder the values select (same rule as methodNameFor). */
export function methodOf(values: Record<string, unknown>): string {
  const type = String(values.finetuning_type ?? 'lora');
  if (type === 'lora') {
    if (values.quantization_bit !== null && values.quantization_bit !== undefined) return 'qlora';
    if (values.use_dora) return 'dora';
    if (values.pissa_init) return 'pissa';
  }
  if (type === 'full' && values.use_galore) return 'galore';
  return type;
}

/** Groups every method may use, whatever it is. */
const SHARED_GROUPS = new Set(['model', 'method', 'dataset', 'output', 'train', 'eval', 'predict', 'compat']);
/** Groups named by a family rather than one folder. */
const GROUPS_OF: Record<string, string[]> = {
  lora: ['lora'],
  dora: ['lora'],
  pissa: ['lora'],
  qlora: ['lora', 'quantization'],
  galore: ['galore'],
};

/**
 * The option groups a method's form shows: its family's groups, a group with
 * its own name, and groups its folder registered (`groupsOfFolder`, when the
 * catalogue knows them).
 */
export function methodGroups(method: string, options: OptionSpec[], groupsOfFolder: Record<string, string[]> = {}): string[] {
  const all = [...new Set(options.map((o) => o.group))];
  const want = new Set([...(GROUPS_OF[method] ?? []), ...(groupsOfFolder[method] ?? [])]);
  for (const g of all) {
    if (SHARED_GROUPS.has(g)) continue;
    if (g === method || g.replace(/_/g, '-') === method) want.add(g);
  }
  return all.filter((g) => want.has(g));
}

/**
 * The config a trainable-parameter count needs: the method's own options
 * (and the model and seed) from the form, everything else at its default, so
 * a problem elsewhere (no dataset yet) does not stop the count.
 */
export function countConfig(values: Record<string, unknown>, options: OptionSpec[], groupsOfFolder: Record<string, string[]> = {}): ExperimentConfig | null {
  const groups = new Set([...methodGroups(methodOf(values), options, groupsOfFolder), 'method']);
  const raw: Record<string, unknown> = { output_dir: 'count', dataset: 'count.jsonl' };
  for (const key of ['model_name_or_path', 'endpoint', 'seed']) raw[key] = values[key];
  for (const o of options) if (groups.has(o.group) && values[o.key] !== undefined) raw[o.key] = values[o.key];
  return validateValues(raw).config;
}
