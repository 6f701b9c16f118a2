/**
 * The installed methods, and the one way a method gets in.
 *
 * Built-in methods: every folder under peft/ with a method.ts, found at build
 * time (Vite's import.meta.glob, in the browser bundle, the CLI build and
 * vitest alike). Plug-ins: folders the Node CLI finds in PEFT_DIR at start
 * (src/methods/plugins.ts loads their code, `registerPlugin` below validates
 * and installs them). Nothing else installs a method: a config only *names*
 * one (finetuning_type), and a name is looked up here, never loaded from a
 * path or URL, because a method is code.
 *
 * A config selects a method by finetuning_type, or by a LLaMA-Factory flag on
 * another finetuning_type that a method declares as its `select` (the rule is
 * src/methods/select.ts, shared with the page). Everything else this module
 * knows about a method (its options, order, family, required keys, rules) it
 * asks the method; it names none.
 */
import { ConfigError, PluginError } from '../errors';
import { closest, optionSpec, registerConfigCheck, registerFinetuningType, registerOptions, type OptionSpec } from '../config/schema';
import { SHARED_GROUP, sharedOptions } from './options';
import { methodListing, selectedMethods, selectionProblems, type MethodInfo } from './select';
import type { PeftMethod } from './types';

const modules = import.meta.glob<{ default: PeftMethod }>('../../peft/*/method.ts', { eager: true });
const configs = import.meta.glob<Record<string, unknown>>('../../peft/*/config.ts', { eager: true });

/** One installed method: where its code came from and which options it added. */
export interface InstalledMethod {
  /** Its finetuning_type (= its folder name). */
  name: string;
  method: PeftMethod;
  kind: 'built-in' | 'plug-in';
  /** 'peft/<name>' for a bundled folder, the folder's absolute path for a plug-in. */
  source: string;
  /** Option keys its config.ts adds to the schema. */
  options: string[];
  /** Every option it reads, in form order (PeftMethod.options, default its config.ts specs). */
  specs: OptionSpec[];
}

const installed = new Map<string, InstalledMethod>();
const folderOf = (file: string) => file.split('/').at(-2)!;

// The options several methods share are declared once (./options.ts).
registerOptions(SHARED_GROUP, sharedOptions);

/** The OptionSpec arrays a config.ts module exports. */
function exportedSpecs(mod: Record<string, unknown>): OptionSpec[] {
  const out: OptionSpec[] = [];
  for (const value of Object.values(mod)) {
    if (!Array.isArray(value)) continue;
    for (const spec of value as OptionSpec[]) if (spec && typeof spec === 'object' && typeof spec.key === 'string' && !out.includes(spec)) out.push(spec);
  }
  return out;
}

/** Register specs that are not registered yet (the same object again is a no-op). */
function registerSpecs(specs: OptionSpec[], where: string): void {
  for (const spec of specs) {
    if (optionSpec(spec.key) === spec) continue;
    try {
      registerOptions(spec.group, [spec]);
    } catch (err) {
      throw new ConfigError(`${where}: ${(err as Error).message}`);
    }
  }
}

// Each folder's config.ts exports arrays of OptionSpec: they join the one
// schema (YAML validation, URL and UI forms) under their own groups.
const builtinOptionKeys = new Map<string, string[]>();
const builtinSpecs = new Map<string, OptionSpec[]>();
for (const [file, mod] of Object.entries(configs)) {
  const specs = exportedSpecs(mod);
  registerSpecs(specs, file.replace('../../', ''));
  builtinOptionKeys.set(
    folderOf(file),
    specs.map((s) => s.key),
  );
  builtinSpecs.set(folderOf(file), specs);
}

/** Problems with what a method says about its options (every `options` key registered, `required` and `select` among them). */
function optionListProblems(m: PeftMethod, specs: OptionSpec[], where: string, own: OptionSpec[] = []): string[] {
  const p: string[] = [];
  for (const s of specs) {
    if (!s || typeof s.key !== 'string') p.push(`${where}: options holds ${show(s)}, not an OptionSpec.`);
    else if (!optionSpec(s.key) && !own.some((o) => o.key === s.key))
      p.push(`${where}: options lists '${s.key}', which is neither in its config.ts nor a registered option (shared ones: peft-studio/methods/options).`);
  }
  const keys = new Set(specs.map((s) => s.key));
  for (const k of m.required ?? []) if (!keys.has(k)) p.push(`${where}: required names '${k}', which is not one of its options.`);
  if (m.select && !keys.has(m.select.key)) p.push(`${where}: select.key '${m.select.key}' is not one of its options.`);
  return p;
}

/** The methods bundled from the project's peft/ folder (plug-ins are in `installedMethods()`). */
export const builtinMethods = new Map<string, PeftMethod>();
// In list order (PeftMethod.order, then name): finetuning_type's choices and every listing follow it, the same in every build.
const byOrder = Object.entries(modules).sort(
  ([fa, a], [fb, b]) => (a.default?.order ?? Infinity) - (b.default?.order ?? Infinity) || folderOf(fa).localeCompare(folderOf(fb)),
);
for (const [file, mod] of byOrder) {
  const folder = folderOf(file);
  if (!mod.default) throw new ConfigError(`peft/${folder}/method.ts has no default export (a PeftMethod).`);
  const method = mod.default;
  const specs = [...(method.options ?? builtinSpecs.get(folder) ?? [])];
  const problems = [
    ...methodShapeProblems(folder, mod as Record<string, unknown>, `peft/${folder}/method.ts`),
    ...optionListProblems(method, specs, `peft/${folder}/method.ts`),
  ];
  if (problems.length) throw new ConfigError(problems.join('\n'));
  builtinMethods.set(folder, method);
  registerFinetuningType(folder, !!method.isDefault);
  installed.set(folder, { name: folder, method, kind: 'built-in', source: `peft/${folder}`, options: builtinOptionKeys.get(folder) ?? [], specs });
}

/** Every installed method, built-ins first, then plug-ins in the order they were found. */
export function installedMethods(): InstalledMethod[] {
  return [...installed.values()];
}

/** What forms and listings need to know about each installed method (plain data: it crosses the worker boundary), in list order. */
export function methodInfos(): MethodInfo[] {
  return methodListing(
    installedMethods().map(({ name, method: m, kind, specs }) => ({
      name,
      label: m.label ?? name,
      family: m.family ?? 'Plug-ins',
      description: m.description,
      order: m.order ?? Number.MAX_SAFE_INTEGER,
      kind,
      options: specs.map((s) => s.key).filter((k) => k !== m.select?.key),
      required: [...(m.required ?? [])],
      select: m.select ? { ...m.select } : undefined,
      isDefault: !!m.isDefault,
    })),
  );
}

/** The method folder a config selects (finetuning_type, or a method whose `select` flag is set on it). */
export function methodNameFor(config: Record<string, unknown>): string {
  return selectedMethods(config, methodInfos())[0];
}

/**
 * The installed method a config selects. A name that is not installed is an
 * error listing the installed ones; it is never resolved as a path or URL.
 */
export function resolveMethod(config: Record<string, unknown>): PeftMethod {
  const name = methodNameFor(config);
  const m = installed.get(name);
  if (m) return m.method;
  const available = [...installed.keys()].sort().join(', ');
  const looksLikeCode = /[/\\:]|^\.|\.\.|\.m?[jt]s$/.test(name);
  throw new ConfigError(
    `No method '${name}' is installed (finetuning_type ${JSON.stringify(config.finetuning_type)}). Available: ${available}. ` +
      (looksLikeCode
        ? 'finetuning_type names an installed method; it is never a path or URL: methods are code and load only from the built-in peft/ folder and, in the CLI, from the PEFT_DIR folders scanned at start.'
        : 'To add a method, put its folder under peft/ (or, for the CLI, in PEFT_DIR): see the README section "Adding a method".'),
  );
}

/**
 * Rules the schema cannot know: flags that select two methods at once, the
 * selected method's required options, and every method's own rules.
 */
function methodRules(config: Record<string, unknown>): string[] {
  const p = selectionProblems(config, methodInfos(), (key) => optionSpec(key)?.help ?? '');
  for (const m of installed.values()) p.push(...(m.method.configProblems?.(config) ?? []));
  return p;
}
registerConfigCheck(methodRules);

// ---------------------------------------------------------------------------
// Plug-ins: validation and installation (browser-safe; loading is in plugins.ts).

/** Method names are finetuning_type values and folder names. */
export const METHOD_NAME = /^[a-z0-9][a-z0-9_-]*$/;

/** A plug-in folder's loaded modules. */
export interface PluginModules {
  /** The folder name: the method's finetuning_type. */
  name: string;
  /** The folder (shown in errors and in `peft-studio methods`). */
  dir: string;
  /** method.ts's module namespace. */
  method: Record<string, unknown>;
  /** config.ts's module namespace. */
  config: Record<string, unknown>;
}

const SPEC_FIELDS = [
  'key',
  'type',
  'default',
  'min',
  'max',
  'exclusiveMin',
  'exclusiveMax',
  'choices',
  'help',
  'group',
  'nullable',
  'acceptsBool',
  'countOrRatio',
];
const SPEC_TYPES = ['int', 'float', 'bool', 'string', 'enum', 'string-list'];

function show(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'function') return 'a function';
  if (Array.isArray(v)) return 'an array';
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** Problems with method.ts's exports (none when the default export is a PeftMethod named `name`). */
export function methodShapeProblems(name: string, mod: Record<string, unknown>, file: string): string[] {
  const m = mod.default as Record<string, unknown> | undefined;
  const example = `export default { name: '${name}', attach(ctx) { ... } } satisfies PeftMethod`;
  if (m === undefined) return [`${file} has no default export; end it with \`${example}\`.`];
  if (!m || typeof m !== 'object') return [`${file}: the default export is ${show(m)}, not a PeftMethod object ({ name, attach }).`];
  const p: string[] = [];
  if (typeof m.name !== 'string')
    p.push(`${file}: the default export has no 'name' string; it must be '${name}' (the folder name, which is the finetuning_type).`);
  else if (m.name !== name)
    p.push(`${file}: the method is named '${m.name}' but its folder is '${name}'; the folder name is the finetuning_type, so make them the same.`);
  if (typeof m.attach !== 'function')
    p.push(`${file}: the default export has no attach(ctx) function (it creates the method's tensors and hooks and returns an AttachedMethod).`);
  if (m.peftType !== undefined && typeof m.peftType !== 'string')
    p.push(`${file}: peftType is ${show(m.peftType)}; it must be a string (the adapter_config.json peft_type, e.g. 'VERA').`);
  if (m.configFromAdapter !== undefined && typeof m.configFromAdapter !== 'function')
    p.push(`${file}: configFromAdapter must be a function (adapter_config.json → config keys).`);
  if (typeof m.flops !== 'function')
    p.push(
      `${file}: the default export has no flops(ctx) function; PSCP needs the FLOPs the method adds to a forward pass (return { flops: 0 } if it adds none; see templates/method/method.ts).`,
    );
  if (typeof m.description !== 'string' || !m.description.trim())
    p.push(`${file}: the default export has no description; write one line saying what the method trains (forms and \`peft-studio methods\` show it).`);
  for (const f of ['label', 'family'] as const)
    if (m[f] !== undefined && typeof m[f] !== 'string') p.push(`${file}: ${f} is ${show(m[f])}; it must be a string.`);
  if (m.options !== undefined && !Array.isArray(m.options))
    p.push(`${file}: options is ${show(m.options)}; it must be an array of OptionSpec (its config.ts specs and shared ones).`);
  if (m.configProblems !== undefined && typeof m.configProblems !== 'function')
    p.push(`${file}: configProblems must be a function (config → problem sentences).`);
  return p;
}

/** Why a spec's default is not a valid value of the spec, if it is not. */
function defaultProblem(s: OptionSpec): string | undefined {
  const v = s.default;
  if (v === undefined) return undefined; // required option
  if (v === null) return s.nullable ? undefined : 'default is null but the option is not nullable (add nullable: true, or give a value)';
  if (s.acceptsBool && typeof v === 'boolean') return undefined;
  switch (s.type) {
    case 'int':
    case 'float': {
      if (typeof v !== 'number' || !Number.isFinite(v)) return `default ${show(v)} is not a number`;
      if (s.type === 'int' && !Number.isInteger(v)) return `default ${v} is not an integer`;
      const below = s.min !== undefined && (s.exclusiveMin ? v <= s.min : v < s.min);
      const above = s.max !== undefined && (s.exclusiveMax ? v >= s.max : v > s.max);
      return below || above ? `default ${v} is outside its own range [${s.min ?? '-∞'}, ${s.max ?? '∞'}]` : undefined;
    }
    case 'bool':
      return typeof v === 'boolean' ? undefined : `default ${show(v)} is not true or false`;
    case 'string':
      return typeof v === 'string' ? undefined : `default ${show(v)} is not a string`;
    case 'enum':
      return typeof v === 'string' && s.choices?.includes(v) ? undefined : `default ${show(v)} is not one of its choices ${show(s.choices)}`;
    case 'string-list': {
      const list =
        typeof v === 'string'
          ? v
              .split(',')
              .map((x) => x.trim())
              .filter(Boolean)
          : v;
      return Array.isArray(list) && list.length > 0 && list.every((x) => typeof x === 'string' && x.trim() !== '')
        ? undefined
        : `default ${show(v)} is not a non-empty list of names (a comma-separated string or an array of strings)`;
    }
  }
  return undefined;
}

/** Problems with one OptionSpec of method `name` (`where` says which export and index). */
function specProblems(name: string, spec: unknown, where: string): string[] {
  if (!spec || typeof spec !== 'object' || Array.isArray(spec))
    return [`${where} is ${show(spec)}, not an OptionSpec object ({ key, type, default, help, group }).`];
  const s = spec as OptionSpec & Record<string, unknown>;
  const at = typeof s.key === 'string' ? `${where} (key '${s.key}')` : where;
  const p: string[] = [];
  for (const f of Object.keys(s)) {
    if (SPEC_FIELDS.includes(f)) continue;
    const near = closest(f, SPEC_FIELDS);
    p.push(`${at}: unknown field '${f}'${near ? ` (did you mean '${near}'?)` : ''}; an OptionSpec has ${SPEC_FIELDS.join(', ')}.`);
  }
  if (typeof s.key !== 'string' || !/^[a-z][a-z0-9_]*$/.test(s.key))
    p.push(`${at}: key ${show(s.key)} must be a snake_case string (a-z, 0-9, _), e.g. '${name.replace(/-/g, '_')}_rank'.`);
  if (!SPEC_TYPES.includes(s.type)) p.push(`${at}: type ${show(s.type)} is not one of ${SPEC_TYPES.join(', ')}.`);
  if (typeof s.help !== 'string' || !s.help.trim())
    p.push(`${at}: help is missing; write one sentence saying what the option does (the UI and errors show it).`);
  if (s.group !== name) p.push(`${at}: group is ${show(s.group)} but must be the method name '${name}' (a plug-in's options form its own group).`);
  if (s.type === 'enum' && !(Array.isArray(s.choices) && s.choices.length > 0 && s.choices.every((c) => typeof c === 'string'))) {
    p.push(`${at}: an enum needs choices, a non-empty array of strings.`);
  }
  for (const f of ['min', 'max'] as const)
    if (s[f] !== undefined && (typeof s[f] !== 'number' || !Number.isFinite(s[f]))) p.push(`${at}: ${f} is ${show(s[f])}, not a number.`);
  if (typeof s.min === 'number' && typeof s.max === 'number' && s.min > s.max) p.push(`${at}: min ${s.min} is above max ${s.max}.`);
  for (const f of ['nullable', 'acceptsBool', 'countOrRatio', 'exclusiveMin', 'exclusiveMax'] as const) {
    if (s[f] !== undefined && typeof s[f] !== 'boolean') p.push(`${at}: ${f} is ${show(s[f])}, not true or false.`);
  }
  if (p.length === 0) {
    const d = defaultProblem(s);
    if (d) p.push(`${at}: ${d}.`);
  }
  return p;
}

/**
 * Problems with config.ts's option lists: every exported array is a list of
 * OptionSpec (other exports are ignored). `pending` holds keys of plug-ins
 * validated in the same scan but not registered yet.
 */
export function optionProblems(
  name: string,
  mod: Record<string, unknown>,
  file: string,
  pending = new Map<string, string>(),
  /** A group whose keys are not reported as taken (the method this one already collides with by name). */
  ignoreGroup?: string,
): { problems: string[]; specs: OptionSpec[] } {
  const problems: string[] = [];
  const specs: OptionSpec[] = [];
  const seen = new Map<string, string>();
  for (const [exportName, value] of Object.entries(mod)) {
    if (!Array.isArray(value)) continue;
    value.forEach((spec, i) => {
      const where = `${file} export '${exportName}'[${i}]`;
      const p = specProblems(name, spec, where);
      problems.push(...p);
      if (p.length) return;
      const s = spec as OptionSpec;
      const owner = optionSpec(s.key)?.group ?? pending.get(s.key);
      if (seen.has(s.key)) problems.push(`${where}: key '${s.key}' is defined twice in ${file} (also in export '${seen.get(s.key)}').`);
      else if (owner !== undefined && owner === ignoreGroup) return;
      else if (owner !== undefined) {
        const from = installed.get(owner)?.source;
        problems.push(
          `${where}: key '${s.key}' is already defined by group '${owner}'${from ? ` (${from})` : ''}; all options share one namespace, so prefix yours (e.g. '${name.replace(/-/g, '_')}_${s.key}').`,
        );
      } else {
        seen.set(s.key, exportName);
        specs.push(s);
      }
    });
  }
  return { problems, specs };
}

/** Problems with the plug-in's name: invalid, or taken by an installed method (or by `pending`, plug-ins found earlier in the same scan). */
export function nameProblems(name: string, dir: string, pending = new Map<string, string>()): string[] {
  if (!METHOD_NAME.test(name)) {
    return [`${dir}: the folder name '${name}' is not a valid method name: use lowercase letters, digits, '-' and '_' (it becomes the finetuning_type).`];
  }
  const other = installed.get(name);
  if (other)
    return [`${dir}: method '${name}' collides with the ${other.kind} method '${name}' from ${other.source}; rename the folder and the method's name.`];
  if (pending.has(name)) return [`${dir}: method '${name}' collides with the plug-in '${name}' from ${pending.get(name)}; rename one of them.`];
  return [];
}

/** Every problem with a plug-in (empty: it can be registered). */
export function pluginProblems(p: PluginModules, pendingNames?: Map<string, string>, pendingKeys?: Map<string, string>): string[] {
  const names = nameProblems(p.name, p.dir, pendingNames);
  if (!METHOD_NAME.test(p.name)) return names;
  // A folder that repeats an installed method's name repeats its option keys too: report the name once.
  return [
    ...names,
    ...methodShapeProblems(p.name, p.method, `${p.dir}/method.ts`),
    ...optionProblems(p.name, p.config, `${p.dir}/config.ts`, pendingKeys, names.length ? p.name : undefined).problems,
  ];
}

/** The error for a list of plug-in problems. */
export function pluginError(problems: string[]): PluginError {
  return new PluginError(
    `${problems.length === 1 ? 'A method plug-in has a problem' : `Method plug-ins have ${problems.length} problems`}:\n` +
      problems.map((x) => `  - ${x.replace(/\n/g, '\n    ')}`).join('\n') +
      '\nFix or move these folders (folders whose name starts with "." or "_" are not scanned); README "Adding a method" describes the layout.',
  );
}

/**
 * Validate a plug-in and install it: its options join the schema (group = its
 * name), its name joins the finetuning_type choices, resolveMethod finds it.
 * Throws a PluginError listing every problem, with nothing registered.
 */
export function registerPlugin(p: PluginModules): InstalledMethod {
  const problems = pluginProblems(p);
  if (problems.length) throw pluginError(problems);
  const { specs } = optionProblems(p.name, p.config, `${p.dir}/config.ts`);
  const method = p.method.default as PeftMethod;
  const all = [...(method.options ?? specs)];
  const listProblems = optionListProblems(method, all, `${p.dir}/method.ts`, specs);
  if (listProblems.length) throw pluginError(listProblems);
  try {
    registerOptions(p.name, specs);
  } catch (err) {
    throw pluginError([`${p.dir}: ${(err as Error).message}`]);
  }
  registerFinetuningType(p.name);
  // The registered spec of each key (a plug-in's own modules may be loaded twice: compare keys, keep one object).
  const entry: InstalledMethod = {
    name: p.name,
    method,
    kind: 'plug-in',
    source: p.dir,
    options: specs.map((s) => s.key),
    specs: all.map((s) => optionSpec(s.key)!),
  };
  installed.set(p.name, entry);
  return entry;
}
