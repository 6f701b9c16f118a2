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
    // Dawn zero-fills workgroup memory in every shader by default; our kernels write
    // workgroup memory before reading it, and the zero-fill costs seconds of
    // compile time per pipeline on SwiftShader.
    gpu = create(['enable-dawn-features=disable_workgroup_init']) as GPU;
  }
  return gpu;
}
