/**
 * Method plug-ins for the Node CLI: the folders named by PEFT_DIR or
 * --peft-dir, scanned once at start. Plug-ins are code, so they are opt-in:
 * with neither set no folder is scanned (not even ./peft of the working
 * directory: a cloned experiment folder must not run code on `logits`). The
 * project's own peft/ methods are bundled into the CLI and always available.
 *
 * A plug-in folder is <PEFT_DIR>/<name>/ with config.ts (exported arrays of
 * OptionSpec), method.ts (`export default` a PeftMethod named <name>) and
 * optional *.wgsl kernels. Its TypeScript is loaded with tsx (`tsImport`,
 * always as an ES module). It imports PEFT Studio through the stable
 * `peft-studio/<path>` names of package.json "exports" (for tsc, vitest and
 * the Vite builds they resolve to src/ files): when the CLI loads a plug-in, a
 * module hook maps them to the modules already inside the CLI bundle, so a
 * plug-in and the CLI share one Engine class, one tape and one set of error
 * classes. `import code from './kernel.wgsl?raw'` gives a kernel's text, as
 * Vite does. Kernels are compiled on the engine's device before a command
 * runs; compiler errors name the file and line.
 *
 * Methods are code: they are loaded only from these local folders, never from
 * a URL, and nothing in an experiment config names a file to load.
 */
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { register } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Engine } from '../engine/engine';
import { PluginError } from '../errors';
import {
  builtinMethods,
  installedMethods,
  pluginError,
  pluginProblems,
  optionProblems,
  registerPlugin,
  type InstalledMethod,
  type PluginModules,
} from './registry';

/**
 * The plug-in API: `peft-studio/<key>` → this module. package.json "exports"
 * lists the same paths (tests/unit/plugins.test.ts checks that they agree).
 */
const apiModules = import.meta.glob<Record<string, unknown>>(
  [
    '../errors.ts',
    '../methods/types.ts',
    '../methods/svd.ts',
    '../methods/options.ts',
    '../methods/adapter-files.ts',
    '../eval/flops.ts',
    '../engine/engine.ts',
    '../engine/tensor.ts',
    '../engine/tape.ts',
    '../engine/ops/*.ts',
    '../model/llama.ts',
    '../model/config.ts',
    '../model/generate.ts',
    '../config/schema.ts',
  ],
  { eager: true },
);
export const pluginApi: Record<string, Record<string, unknown>> = Object.fromEntries(
  // Glob keys are relative to src/methods/: '../engine/ops/add.ts' → 'engine/ops/add', './svd.ts' → 'methods/svd'.
  Object.entries(apiModules).map(([file, mod]) => [path.posix.normalize(`methods/${file}`).replace(/\.ts$/, ''), mod]),
);

const API_KEY = Symbol.for('peft-studio.plugin-api');
const HOOKS_KEY = Symbol.for('peft-studio.plugin-hooks');

/**
 * Module hooks (they run on Node's loader thread; registered once). resolve:
 * `peft-studio/<key>` → a virtual module re-exporting the bundle's module
 * (anything else under peft-studio/ is an error naming what is importable);
 * `*.wgsl?raw` → the file; .ts/.mts outside node_modules → ES module format
 * (a plug-in folder needs no package.json). load: the virtual modules and the
 * WGSL text. tsx's own hooks (registered per tsImport, so they run first) do
 * the TypeScript transform and pass other specifiers on to these.
 */
const HOOKS = String.raw`
let api = {};
export async function initialize(data) { api = data.api; }
const strip = (u) => u.split('?')[0];
const listApi = () => {
  const keys = Object.keys(api).sort();
  const ops = keys.filter((k) => k.startsWith('engine/ops/')).map((k) => k.slice('engine/ops/'.length));
  return keys.filter((k) => !k.startsWith('engine/ops/')).map((k) => 'peft-studio/' + k).concat(ops.length ? ['peft-studio/engine/ops/{' + ops.join(',') + '}'] : []).join(', ');
};
export async function resolve(specifier, context, next) {
  if (specifier === 'peft-studio' || specifier.startsWith('peft-studio/')) {
    const key = specifier.slice('peft-studio/'.length);
    if (!Object.prototype.hasOwnProperty.call(api, key)) {
      throw new Error("'" + specifier + "' (imported by " + strip(context.parentURL || '?').replace(/^file:\/\//, '') + ") is not part of PEFT Studio's plug-in API. Importable: " + listApi() + '.');
    }
    return { url: 'peft-studio:' + key, shortCircuit: true };
  }
  if (/\.wgsl\?raw$/.test(specifier) && context.parentURL && context.parentURL.startsWith('file:')) {
    return { url: new URL(specifier, context.parentURL).href, shortCircuit: true };
  }
  const r = await next(specifier, context);
  if (r.url.startsWith('file:') && /\.m?ts$/.test(strip(r.url)) && !r.url.includes('/node_modules/')) return { ...r, format: 'module' };
  return r;
}
export async function load(url, context, next) {
  if (url.startsWith('peft-studio:')) {
    const key = strip(url.slice('peft-studio:'.length));
    const lines = ['const m = globalThis[Symbol.for("peft-studio.plugin-api")][' + JSON.stringify(key) + '];'];
    for (const n of api[key]) lines.push(n === 'default' ? 'export default m.default;' : 'export const ' + n + ' = m.' + n + ';');
    return { format: 'module', source: lines.join('\n'), shortCircuit: true };
  }
  if (url.startsWith('file:') && /\.wgsl\?raw(&|$)/.test(url)) {
    const { readFile } = await import('node:fs/promises');
    return { format: 'module', source: 'export default ' + JSON.stringify(await readFile(new URL(strip(url)), 'utf8')) + ';', shortCircuit: true };
  }
  return next(url, context);
}`;

function installHooks(): void {
  const g = globalThis as Record<symbol, unknown>;
  g[API_KEY] = pluginApi;
  if (g[HOOKS_KEY]) return;
  const names = Object.fromEntries(
    Object.entries(pluginApi).map(([k, m]) => [k, Object.keys(m).filter((n) => n === 'default' || /^[A-Za-z_$][\w$]*$/.test(n))]),
  );
  register('data:text/javascript,' + encodeURIComponent(HOOKS), { data: { api: names } });
  g[HOOKS_KEY] = true;
}

/** The installed package's root (the folder of package.json "peft-studio"), from this module's location. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if (JSON.parse(readFileSync(pj, 'utf8')).name === 'peft-studio') return dir;
      } catch {
        // not ours: keep walking up
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

const isDir = (p: string) => {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false; // a dangling link or an unreadable entry
  }
};

const real = (p: string) => {
  try {
    return realpathSync(p);
  } catch {
    return path.resolve(p);
  }
};

export interface LoadPluginsOptions {
  /** PEFT_DIR: folders of plug-in folders, separated by the platform's path delimiter (':'). Default: env PEFT_DIR, else none. */
  peftDir?: string;
  /** Base for a relative PEFT_DIR (default: the working directory). */
  cwd?: string;
  /** Compile each plug-in's kernels on this engine before installing it (the CLI checks them later, with checkPluginKernels). */
  engine?: Engine;
  /** Notes that are not errors (a method folder of the project's own peft/ that this build did not bundle). */
  warn?: (message: string) => void;
}

export interface PluginScan {
  /** The PEFT_DIR folders scanned (absolute). */
  dirs: string[];
  installed: InstalledMethod[];
}

/** Kernels per installed plug-in, and whether they have been compiled. */
const pluginKernels = new Map<string, { files: { file: string; code: string }[]; checked: boolean }>();

/** The PEFT_DIR folders: local paths only. */
export function pluginDirs(opts: Pick<LoadPluginsOptions, 'peftDir' | 'cwd'> = {}): { dirs: string[]; explicit: boolean } {
  const raw = opts.peftDir ?? process.env.PEFT_DIR;
  const explicit = raw !== undefined && raw !== '';
  // Opt-in: no PEFT_DIR, no plug-ins (never ./peft of the working directory by default).
  if (!explicit) return { dirs: [], explicit: false };
  const value = raw!;
  // A URL (scheme:..., checked before splitting on ':') is refused, whatever follows.
  const isUrl = (x: string) => /^[a-z][a-z0-9+.-]*:/i.test(x) && !/^[a-z]:[\\/]/i.test(x);
  const entries = value.split(path.delimiter).filter(Boolean);
  const url = isUrl(value) || value.includes('://') ? value : entries.find(isUrl);
  if (url !== undefined) {
    throw new PluginError(
      `PEFT_DIR '${url}' is a URL. Methods are code: PEFT Studio loads them only from local folders (PEFT_DIR=/path/to/plugins), never from a URL. Download and review the folder first.`,
    );
  }
  const dirs = entries.map((entry) => path.resolve(opts.cwd ?? process.cwd(), entry));
  return { dirs, explicit };
}

/** A plug-in folder's files: what is missing, and its kernels. */
function folderFiles(dir: string): { missing: string[]; kernels: { file: string; code: string }[] } {
  const has = (f: string) => existsSync(path.join(dir, f)) && statSync(path.join(dir, f)).isFile();
  const missing: string[] = [];
  if (!has('config.ts'))
    missing.push(`${dir}: missing config.ts (its options: export arrays of OptionSpec; \`export const options = [] as const\` when it has none).`);
  if (!has('method.ts')) missing.push(`${dir}: missing method.ts (\`export default\` a PeftMethod { name: '${path.basename(dir)}', attach(ctx) { ... } }).`);
  const kernels = readdirSync(dir)
    .filter((f) => f.endsWith('.wgsl'))
    .sort()
    .map((f) => ({ file: path.join(dir, f), code: readFileSync(path.join(dir, f), 'utf8') }));
  return { missing, kernels };
}

async function importTs(file: string): Promise<Record<string, unknown>> {
  installHooks();
  const { tsImport } = await import('tsx/esm/api');
  // tsconfig: false — the transform does not depend on the working directory's tsconfig.
  return (await tsImport(pathToFileURL(file).href, { parentURL: import.meta.url, tsconfig: false })) as Record<string, unknown>;
}

/** Compile one WGSL file on the engine's device; the error names the file, line and column. */
async function compileProblem(e: Engine, file: string, code: string): Promise<string | null> {
  const device = e.ctx.device;
  device.pushErrorScope('validation');
  try {
    await e.compileCheck(code, file);
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await device.popErrorScope();
  }
}

/**
 * Scan the PEFT_DIR folders, load and validate every plug-in folder in them
 * and install them all — or none: any problem (missing file, missing or
 * malformed export, name collision, invalid option schema, a kernel that does
 * not compile when `engine` is given) throws one PluginError listing each.
 * Folders of the project's own peft/ that the build already bundled are
 * skipped; folders whose name starts with '.' or '_' are not plug-ins.
 */
export async function loadPlugins(opts: LoadPluginsOptions = {}): Promise<PluginScan> {
  const warn = opts.warn ?? ((s: string) => process.stderr.write(`peft-studio: ${s}\n`));
  const { dirs, explicit } = pluginDirs(opts);
  const bundledRoot = real(path.join(packageRoot(), 'peft'));
  const problems: string[] = [];
  const candidates: { dir: string; name: string; kernels: { file: string; code: string }[] }[] = [];
  for (const root of dirs) {
    if (!isDir(root)) {
      if (explicit) problems.push(`PEFT_DIR folder ${root} does not exist (or is not a folder).`);
      continue;
    }
    if (existsSync(path.join(root, 'method.ts'))) {
      problems.push(`${root} is a plug-in folder itself; PEFT_DIR names the folder that contains plug-in folders: use PEFT_DIR=${path.dirname(root)}.`);
      continue;
    }
    const ownPeft = real(root) === bundledRoot;
    for (const name of readdirSync(root).sort()) {
      const dir = path.join(root, name);
      if (name.startsWith('.') || name.startsWith('_') || !isDir(dir)) continue;
      if (ownPeft) {
        // The project's peft/ is bundled at build time; a method folder added since needs a rebuild.
        if (!builtinMethods.has(name) && existsSync(path.join(dir, 'method.ts'))) {
          warn(`${dir} is not in this build of the CLI; run \`npm run build:cli\` to include it.`);
        }
        continue;
      }
      const { missing, kernels } = folderFiles(dir);
      if (missing.length) problems.push(...missing);
      else candidates.push({ dir, name, kernels });
    }
  }

  const loaded: { p: PluginModules; kernels: { file: string; code: string }[] }[] = [];
  const pendingNames = new Map<string, string>();
  const pendingKeys = new Map<string, string>();
  for (const c of candidates) {
    const mods: Partial<Record<'config' | 'method', Record<string, unknown>>> = {};
    for (const which of ['config', 'method'] as const) {
      const file = path.join(c.dir, `${which}.ts`);
      try {
        mods[which] = await importTs(file);
      } catch (err) {
        problems.push(`${file} does not load: ${(err as Error).message.trim()}`);
      }
    }
    if (!mods.config || !mods.method) continue;
    const p: PluginModules = { name: c.name, dir: c.dir, config: mods.config, method: mods.method };
    const found = pluginProblems(p, pendingNames, pendingKeys);
    if (opts.engine) {
      for (const k of c.kernels) {
        const msg = await compileProblem(opts.engine, k.file, k.code);
        if (msg) found.push(msg);
      }
    }
    problems.push(...found);
    if (found.length) continue;
    pendingNames.set(c.name, c.dir);
    for (const s of optionProblems(c.name, p.config, `${c.dir}/config.ts`).specs) pendingKeys.set(s.key, c.name);
    loaded.push({ p, kernels: c.kernels });
  }
  if (problems.length) throw pluginError(problems);

  const installed: InstalledMethod[] = [];
  for (const { p, kernels } of loaded) {
    installed.push(registerPlugin(p));
    pluginKernels.set(p.name, { files: kernels, checked: !!opts.engine });
  }
  return { dirs, installed };
}

/** Compile the kernels of installed plug-ins not checked yet (the CLI calls this once its engine exists). */
export async function checkPluginKernels(e: Engine): Promise<void> {
  const problems: string[] = [];
  for (const k of pluginKernels.values()) {
    if (k.checked) continue;
    for (const { file, code } of k.files) {
      const msg = await compileProblem(e, file, code);
      if (msg) problems.push(msg);
    }
    k.checked = true;
  }
  if (problems.length) throw pluginError(problems);
}

/** `peft-studio methods`: every installed method with its kind, adapter peft_type and source folder. */
export function formatMethods(scan?: PluginScan): string {
  const rows = installedMethods().map((m) => [m.name, m.kind, m.method.peftType ?? '-', m.kind === 'plug-in' ? m.source : `${m.source} (bundled)`]);
  const head = ['finetuning_type', 'kind', 'peft_type', 'source'];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i]))).join('  ');
  const dirs = scan?.dirs.length
    ? `Plug-in folders scanned (PEFT_DIR / --peft-dir): ${scan.dirs.join(path.delimiter)}`
    : 'No plug-in folders scanned: plug-ins load only from folders named by PEFT_DIR or --peft-dir.';
  return [line(head), ...rows.map(line), ...(dirs ? ['', dirs] : [])].join('\n') + '\n';
}
