/**
 * The files of an adapter folder, from a method's AdapterFiles: HF PEFT
 * layout (adapter_config.json, keys sorted as PEFT writes them, and
 * adapter_model.safetensors). Kept apart from adapter-io (which needs the
 * method registry) so the trainer can write checkpoints without it.
 */
import { serializeSafetensors } from '../model/safetensors';
import type { AdapterFiles } from './types';

export function adapterFileMap(files: AdapterFiles): Record<string, Uint8Array | string> {
  return {
    'adapter_config.json': JSON.stringify(sortKeys(files.config), null, 2) + '\n',
    'adapter_model.safetensors': serializeSafetensors(files.tensors, { format: 'pt' }),
  };
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]));
}
