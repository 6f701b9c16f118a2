/** Shared Dawn device for GPU tests (one per test file's worker). */
import { acquireDevice } from '../../src/gpu/device';
import { nodeGpu } from '../../src/gpu/node';
import { Engine } from '../../src/engine/engine';

let engine: Promise<Engine> | null = null;

export function gpuEngine(): Promise<Engine> {
  engine ??= acquireDevice(nodeGpu(), { timestamps: false }).then((ctx) => new Engine(ctx));
  return engine;
}
