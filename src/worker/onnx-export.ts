/**
 * Export screen, "ONNX (transformers.js)": a run's adapter merged into the
 * base and written as the folder transformers.js loads (src/export/onnx),
 * zipped. The exporter is imported on first use, so the engine worker's
 * bundle does not carry it until a user asks for ONNX.
 */
import { zipSync } from 'fflate';
import { NotMergeableError } from '../errors';
import { methodNameFor } from '../methods/registry';
import type { DeviceSlot } from './device';
import type { BaseModel } from './model';
import type { Sessions } from './session';

export function onnxExportZip(device: DeviceSlot, base: BaseModel, sessions: Sessions, id: string): Promise<Uint8Array> {
  return device.exclusive(async () => {
    // Merging changes the weights an evaluation may be using.
    sessions.assertFree('export ONNX');
    const s = await sessions.open(id);
    const { model, method } = s.prepared;
    if (!method.merge) throw new NotMergeableError(methodNameFor(s.config), 'onnx');
    const { mergedOnnxFiles } = await import('../export/onnx/folder');
    try {
      // Float weights barely compress: a fast level keeps the zip quick for larger models.
      return zipSync(await mergedOnnxFiles(model, method, base.sourcesFor(s.config).model), { level: 1 });
    } finally {
      // The merged weights replaced the base in this session: reload it next time.
      sessions.drop();
    }
  });
}
