/**
 * `peft-studio methods`: the installed methods (built-in and plug-ins) with
 * their source folders; with --counts, the trainable parameters of every
 * method for one config and model (the number the studio's Method screen
 * shows for the same config: both count with src/methods/count.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { optionSpec, validateConfig } from '../config/schema';
import { parseConfigText } from '../config/yaml';
import type { Engine } from '../engine/engine';
import { ConfigError } from '../errors';
import { sourceFor } from '../hub/node';
import { countTrainable } from '../methods/count';
import { formatMethods, type PluginScan } from '../methods/plugins';
import { methodInfos } from '../methods/registry';
import { selectionKeys } from '../methods/select';
import { loadModel } from '../model/load';

export type MethodCounts = Record<string, { trainable: number; total: number } | { error: string }>;

/** Trainable parameters of every installed method for `base` (its method keys replaced by each method's selecting keys). */
export async function methodCounts(e: Engine, base: Record<string, unknown>): Promise<MethodCounts> {
  if (!base.model_name_or_path) throw new ConfigError('methods --counts: give a config file with model_name_or_path, or --model <dir|repo>.');
  const endpoint = typeof base.endpoint === 'string' ? base.endpoint : undefined;
  const { model, tokenizer } = await loadModel(e, sourceFor(String(base.model_name_or_path), { endpoint }));
  const infos = methodInfos();
  const out: MethodCounts = {};
  try {
    for (const info of infos) {
      // Output and data do not change a count: placeholders keep a config without them valid.
      const raw = { output_dir: 'count', dataset: 'count.jsonl', ...base, ...selectionKeys(info.name, infos, (k) => optionSpec(k)?.default ?? null) };
      try {
        const { trainable, total } = await countTrainable(model, validateConfig(raw, info.name), tokenizer ?? undefined);
        out[info.name] = { trainable, total };
      } catch (err) {
        out[info.name] = { error: (err as Error).message };
      }
    }
  } finally {
    model.dispose();
  }
  return out;
}

export function formatCounts(counts: MethodCounts): string {
  const rows = Object.entries(counts).map(([name, c]) =>
    'error' in c
      ? [name, '-', '-', c.error.split('\n').filter(Boolean).at(-1)!.trim()]
      : [name, String(c.trainable), String(c.total), `${((100 * c.trainable) / c.total).toFixed(3)}%`],
  );
  const head = ['method', 'trainable', 'total', 'share'];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : i === 0 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ');
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

/** `peft-studio methods [--counts [config.yaml] [key=value ...] [--model M] [--json]]`. */
export async function methodsCommand(args: string[], plugins: PluginScan, engine: () => Promise<Engine>): Promise<string> {
  const { values, positionals } = parseArgs({
    args,
    options: { counts: { type: 'boolean' }, json: { type: 'boolean' }, model: { type: 'string' }, endpoint: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  // The plain list needs no GPU, except to compile the kernels of plug-ins (a broken one stops every command): only --counts builds a model.
  if (!values.counts) {
    if (positionals.length) throw new ConfigError(`methods: unexpected ${positionals.join(' ')}; did you mean methods --counts <config.yaml>?`);
    if (plugins.installed.length) (await engine()).ctx.destroy();
    return formatMethods(plugins);
  }
  const e = await engine();
  try {
    // The first positional is the config file unless it is already a key=value override.
    const file = positionals[0] !== undefined && !positionals[0].includes('=') ? positionals[0] : undefined;
    const overrides = file === undefined ? positionals : positionals.slice(1);
    if (file && !existsSync(file)) throw new ConfigError(`methods --counts: config file ${file} does not exist.`);
    const raw = file ? parseConfigText(readFileSync(file, 'utf8'), overrides, file) : parseConfigText('', overrides, 'overrides');
    if (values.model) raw.model_name_or_path = values.model;
    if (values.endpoint) raw.endpoint = values.endpoint;
    const counts = await methodCounts(e, raw);
    return values.json ? JSON.stringify(counts, null, 2) + '\n' : formatCounts(counts);
  } finally {
    e.ctx.destroy();
  }
}
