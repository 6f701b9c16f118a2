/**
 * The page's handle on the ONNX worker (../worker/onnx.worker.ts), started on
 * the first "Run ONNX export" and kept for later runs. This module is itself
 * imported on demand, so the page's bundle holds only that import.
 */
import * as Comlink from 'comlink';
import type { OnnxRunnerApi } from '../worker/onnx-runner';

let runner: { api: Comlink.Remote<OnnxRunnerApi>; worker: Worker } | null = null;

export function onnxRunner(): Comlink.Remote<OnnxRunnerApi> {
  if (!runner) {
    const worker = new Worker(new URL('../worker/onnx.worker.ts', import.meta.url), { type: 'module', name: 'peft-studio-onnx' });
    runner = { api: Comlink.wrap<OnnxRunnerApi>(worker), worker };
  }
  return runner.api;
}

export const proxy = Comlink.proxy;
