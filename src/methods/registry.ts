/**
 * Built-in methods: every folder under peft/ with a method.ts, found at build
 * time (Vite's import.meta.glob, in the browser bundle, the CLI build and
 * vitest alike). A config selects one by finetuning_type, with LLaMA-Factory's
 * flags on lora (quantization_bit → qlora, use_dora → dora, pissa_init →
 * pissa) and on full (use_galore → galore).
 */
import { ConfigError } from '../errors';
import { optionSpec, registerFinetuningType, registerOptions, type OptionSpec } from '../config/schema';
import type { PeftMethod } from './types';

const modules = import.meta.glob<{ default: PeftMethod }>('../../peft/*/method.ts', { eager: true });
const configs = import.meta.glob<Record<string, unknown>>('../../peft/*/config.ts', { eager: true });

// Each folder's config.ts exports arrays of OptionSpec: they join the one
// schema (YAML validation, URL and UI forms) under their own groups.
for (const [file, mod] of Object.entries(configs)) {
  for (const value of Object.values(mod)) {
    if (!Array.isArray(value)) continue;
    for (const spec of value as OptionSpec[]) {
      if (!spec || typeof spec !== 'object' || typeof spec.key !== 'string') continue;
      if (optionSpec(spec.key) === spec) continue;
      try {
        registerOptions(spec.group, [spec]);
      } catch (err) {
        throw new ConfigError(`${file.replace('../../', '')}: ${(err as Error).message}`);
      }
    }
  }
}

export const builtinMethods = new Map<string, PeftMethod>();
for (const [file, mod] of Object.entries(modules)) {
  const folder = file.split('/').at(-2)!;
  if (!mod.default) throw new ConfigError(`peft/${folder}/method.ts has no default export (a PeftMethod).`);
  builtinMethods.set(folder, mod.default);
  registerFinetuningType(folder);
}

/** The method folder a config selects. */
export function methodNameFor(config: Record<string, unknown>): string {
  const type = String(config.finetuning_type ?? 'lora');
  if (type === 'lora') {
    if (config.quantization_bit !== null && config.quantization_bit !== undefined) return 'qlora';
    if (config.use_dora) return 'dora';
    if (config.pissa_init) return 'pissa';
  }
  if (type === 'full' && config.use_galore) return 'galore';
  return type;
}

export function resolveMethod(config: Record<string, unknown>): PeftMethod {
  const name = methodNameFor(config);
  const m = builtinMethods.get(name);
  if (!m) throw new ConfigError(`No method '${name}' (finetuning_type ${JSON.stringify(config.finetuning_type)}). Available: ${[...builtinMethods.keys()].sort().join(', ')}.`);
  return m;
}
