/**
 * Adapter folders in HF PEFT layout: adapter_config.json +
 * adapter_model.safetensors. Reading works from any FileSource (a local
 * folder, a Hub repo, a browser directory), so an adapter trained in Python
 * loads here and one trained here loads in Python.
 */
import { ConfigError } from '../errors';
import type { FileSource } from '../hub/source';
import { parseSafetensors } from '../model/safetensors';
import { installedMethods } from './registry';
import type { AdapterFiles, PeftMethod } from './types';
export { adapterFileMap } from './adapter-files';

export async function readAdapter(source: FileSource): Promise<AdapterFiles> {
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(new TextDecoder().decode(await source.get('adapter_config.json')));
  } catch (err) {
    throw new ConfigError(`${source.id} is not an adapter folder: adapter_config.json is missing or not JSON (${(err as Error).message}).`);
  }
  const st = parseSafetensors(await source.get('adapter_model.safetensors'), `${source.id}/adapter_model.safetensors`);
  const tensors = new Map([...st.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]));
  return { config, tensors };
}

/** The method and config keys an adapter_config.json stands for. */
export function methodForAdapter(adapterConfig: Record<string, unknown>): { method: PeftMethod; config: Record<string, unknown> } {
  const peftType = String(adapterConfig.peft_type ?? '');
  // Built-ins and plug-ins alike (a plug-in's adapters load once PEFT_DIR has been scanned).
  for (const { method: m } of installedMethods()) {
    if (m.peftType !== peftType || !m.configFromAdapter) continue;
    const config = m.configFromAdapter(adapterConfig);
    if (config) return { method: m, config };
  }
  throw new ConfigError(`No method here loads adapters of peft_type '${peftType}'.`);
}

