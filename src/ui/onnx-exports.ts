/**
 * ONNX exports made in this page, by run: the Export screen's download and
 * the Playground's ONNX side share one zip, so a run is merged and written
 * once. A run that trained further since (updatedAt moved) is exported again.
 */
import type { EngineClient } from './engine';
import type { RunInfo } from '../worker/api';

const zips = new Map<string, { updatedAt: number; zip: Uint8Array }>();

export async function onnxZipFor(engine: EngineClient, run: RunInfo): Promise<Uint8Array> {
  const hit = zips.get(run.id);
  if (hit && hit.updatedAt === run.updatedAt) return hit.zip;
  const zip = await engine.call(engine.api.exportOnnx(run.id));
  zips.set(run.id, { updatedAt: run.updatedAt, zip });
  return zip;
}
