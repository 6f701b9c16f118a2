/**
 * The Node host: Dawn through the `webgpu` package. Only Node entry points
 * (CLI, tests, bench) import this file, so the browser bundle never sees Dawn.
 */
import { create, globals } from 'webgpu';

let gpu: GPU | null = null;

export function nodeGpu(): GPU {
  if (!gpu) {
    // WebGPU constants (GPUBufferUsage, ...) are globals in the browser.
    Object.assign(globalThis, globals);
    gpu = create([]) as GPU;
  }
  return gpu;
}
