/**
 * Adapter folders in HF PEFT layout: adapter_config.json +
 * adapter_model.safetensors. Reading works from any FileSource (a local
 * folder, a Hub repo, a browser directory), so an adapter trained in Python
 * loads here and one trained here loads in Python.
 *
 * Also the Adapters library's layout (bottleneck adapters, METHODS.md §2.2):
 * adapter_config.json ({config: {..., architecture: null}, name, version, ...})
 * with pytorch_adapter.bin (torch zip, read without executing anything) or
 * adapter.safetensors; or the parent folder PEFT-Factory writes
 * (<output_dir>/<adapter_name>/…) when it holds exactly one adapter sub-folder.
 */
import { ConfigError } from '../errors';
import { getCapped, jsonLimit, type FileSource } from '../hub/source';
import { parseSafetensors } from '../model/safetensors';
import { readTorchZip } from './torch-zip';
import { installedMethods } from './registry';
import type { AdapterFiles, PeftMethod } from './types';
export { adapterFileMap } from './adapter-files';

export async function readAdapter(source: FileSource): Promise<AdapterFiles> {
  const dir = await adapterSubfolder(source);
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(new TextDecoder().decode(await getCapped(source, `${dir}adapter_config.json`, jsonLimit('adapter_config.json'))));
  } catch (err) {
    throw new ConfigError(`${source.id} is not an adapter folder: ${dir}adapter_config.json is missing or not JSON (${(err as Error).message}).`);
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError(
      `${source.id}/${dir}adapter_config.json is ${JSON.stringify(config)}, not a JSON object of adapter settings. Check the adapter folder.`,
    );
  }
  if (isAdaptersLibraryConfig(config)) return readAdaptersLibraryFolder(source, dir, config);
  const st = parseSafetensors(await source.get(`${dir}adapter_model.safetensors`), `${source.id}/${dir}adapter_model.safetensors`);
  const tensors = new Map([...st.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
  return { config, tensors };
}

/** An Adapters-library adapter_config.json: a nested "config" and no peft_type. */
export function isAdaptersLibraryConfig(c: Record<string, unknown>): boolean {
  return c.peft_type === undefined && typeof c.config === 'object' && c.config !== null && !Array.isArray(c.config);
}

/**
 * '' when adapter_config.json is at the top, else '<name>/' for the one
 * sub-folder that has it (PEFT-Factory's <output_dir>/<adapter_name>/; its
 * default/ head folder has no adapter_config.json unless the adapter is
 * itself named 'default'). Sources that cannot list folders are asked for
 * default/ only.
 */
async function adapterSubfolder(source: FileSource): Promise<string> {
  if (await source.has('adapter_config.json')) return '';
  const names = source.listDirs ? await source.listDirs() : ['default'];
  const found: string[] = [];
  for (const n of names) if (await source.has(`${n}/adapter_config.json`)) found.push(n);
  if (found.length === 1) return `${found[0]}/`;
  if (found.length > 1) {
    throw new ConfigError(
      `${source.id} holds ${found.length} adapters (${found.join(', ')}); pass the folder of the one to load, e.g. ${source.id.replace(/^local:/, '')}/${found[0]}.`,
    );
  }
  return '';
}

/** Tensors from pytorch_adapter.bin (what load_adapter reads by default), else adapter.safetensors. */
async function readAdaptersLibraryFolder(source: FileSource, dir: string, config: Record<string, unknown>): Promise<AdapterFiles> {
  let tensors: Map<string, { shape: number[]; data: Float32Array }>;
  if (await source.has(`${dir}pytorch_adapter.bin`)) {
    tensors = readTorchZip(await source.get(`${dir}pytorch_adapter.bin`), `${source.id}/${dir}pytorch_adapter.bin`);
  } else if (await source.has(`${dir}adapter.safetensors`)) {
    const st = parseSafetensors(await source.get(`${dir}adapter.safetensors`), `${source.id}/${dir}adapter.safetensors`);
    tensors = new Map([...st.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
  } else {
    throw new ConfigError(
      `${source.id}/${dir}adapter_config.json is an Adapters-library config, but neither pytorch_adapter.bin nor adapter.safetensors is next to it.`,
    );
  }
  return { config, tensors, layout: 'adapters', adapterName: typeof config.name === 'string' ? config.name : undefined };
}

/** The method and config keys an adapter_config.json stands for. */
export function methodForAdapter(adapterConfig: Record<string, unknown>): { method: PeftMethod; config: Record<string, unknown> } {
  const peftType = String(adapterConfig.peft_type ?? '');
  // Adapters-library configs carry no peft_type: the methods without one (bottleneck adapters) recognise them.
  const adaptersLib = isAdaptersLibraryConfig(adapterConfig);
  // Built-ins and plug-ins alike (a plug-in's adapters load once PEFT_DIR has been scanned).
  for (const { method: m } of installedMethods()) {
    if ((adaptersLib ? m.peftType !== undefined : m.peftType !== peftType) || !m.configFromAdapter) continue;
    const config = m.configFromAdapter(adapterConfig);
    if (config) return { method: m, config };
  }
  if (adaptersLib) {
    const c = adapterConfig.config as Record<string, unknown>;
    throw new ConfigError(
      `No method here loads this Adapters-library adapter (architecture ${JSON.stringify(c.architecture ?? null)}); bn-adapter, seq-bn-adapter and par-adapter load bottleneck adapters.`,
    );
  }
  throw new ConfigError(`No method here loads adapters of peft_type '${peftType}'.`);
}
