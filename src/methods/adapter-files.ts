/**
 * The files of an adapter folder, from a method's AdapterFiles. Kept apart
 * from adapter-io (which needs the method registry) so the trainer can write
 * checkpoints without it. Two layouts:
 *
 * - 'peft' (default), HF PEFT: adapter_config.json (keys sorted as PEFT
 *   writes them) and adapter_model.safetensors.
 * - 'adapters', the Adapters library's `save_adapter(dir, name)` (METHODS.md
 *   §2.2): adapter_config.json as Python's json.dump(indent=2, sort_keys=True)
 *   writes it (floats keep their ".0": the library tells a fixed `scaling`
 *   from "learned"/"channel" by isinstance(float)), pytorch_adapter.bin
 *   (torch.save zip, src/methods/torch-zip.ts) and adapter.safetensors (the
 *   same tensors, for load_adapter(use_safetensors=True)). The files sit at
 *   the top of the folder: it is the folder `load_adapter` takes. PEFT-Factory
 *   nests one such folder per adapter name under its output_dir
 *   (<output_dir>/<adapter_name>/); readAdapter accepts that parent too.
 */
import { serializeSafetensors } from '../model/safetensors';
import { writeTorchZip } from './torch-zip';
import type { AdapterFiles } from './types';

/** Fields of an Adapters config that are Python floats (written with a decimal point). */
export const ADAPTERS_FLOAT_KEYS: ReadonlySet<string> = new Set(['scaling', 'dropout', 'stochastic_depth', 'phm_init_range']);

export function adapterFileMap(files: AdapterFiles): Record<string, Uint8Array | string> {
  if (files.layout === 'adapters') {
    return {
      'adapter_config.json': pythonJson(files.config, { indent: 2, floatKeys: ADAPTERS_FLOAT_KEYS }),
      'pytorch_adapter.bin': writeTorchZip(files.tensors, 'pytorch_adapter'),
      'adapter.safetensors': serializeSafetensors(files.tensors, { format: 'pt' }),
    };
  }
  return {
    'adapter_config.json': JSON.stringify(sortKeys(files.config), null, 2) + '\n',
    'adapter_model.safetensors': serializeSafetensors(files.tensors, { format: 'pt' }),
  };
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.keys(o)
      .sort()
      .map((k) => [k, o[k]]),
  );
}

/**
 * Python's repr of a float, which json.dumps uses: the shortest round-trip
 * digits, always with a '.' or an exponent; exponent form when the decimal
 * exponent is below −4 or at least 16 (1e-05, 1e+16, 0.0001, 16.0).
 */
export function pythonFloat(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expStr] = x.toExponential().split('e');
  const exp = Number(expStr);
  if (exp < -4 || exp >= 16) {
    return `${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  const s = String(x);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/**
 * json.dumps(value, sort_keys=True[, indent=n]) as CPython writes it:
 * ensure_ascii escapes, ", " / ": " separators without indent, "," and ": "
 * with it. Numbers under a key in `floatKeys`, and every non-integer, are
 * written as Python floats; other numbers as ints.
 */
export function pythonJson(value: unknown, opts: { indent?: number | null; floatKeys?: ReadonlySet<string> } = {}): string {
  const indent = opts.indent ?? null;
  const floatKeys = opts.floatKeys ?? new Set<string>();
  const str = (s: string) => JSON.stringify(s).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const write = (v: unknown, key: string | null, depth: number): string => {
    if (v === null || v === undefined) return 'null';
    if (typeof v === 'boolean') return v ? 'true' : 'false';
    if (typeof v === 'number') return (key !== null && floatKeys.has(key)) || !Number.isInteger(v) ? pythonFloat(v) : String(v);
    if (typeof v === 'string') return str(v);
    const nl = indent === null ? '' : '\n' + ' '.repeat(indent * (depth + 1));
    const end = indent === null ? '' : '\n' + ' '.repeat(indent * depth);
    const sep = indent === null ? ', ' : ',';
    if (Array.isArray(v)) {
      if (v.length === 0) return '[]';
      return `[${v.map((x) => nl + write(x, key, depth + 1)).join(sep)}${end}]`;
    }
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort();
    if (keys.length === 0) return '{}';
    return `{${keys.map((k) => `${nl}${str(k)}: ${write(o[k], k, depth + 1)}`).join(sep)}${end}}`;
  };
  return write(value, null, 0);
}
