/**
 * The Node host: Dawn through the `webgpu` package. Only Node entry points
 * (CLI, tests, bench) import this file, so the browser bundle never sees Dawn.
 */
import { create, globals } from 'webgpu';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import type { TuneEntry, TuneStore } from '../engine/matmul-tune';

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

/**
 * The matmul autotuner's table in Node (src/engine/matmul-tune.ts): one JSON
 * file, { adapter: { shape class: entry } }, by default
 * <PEFT_STUDIO_CACHE or ~/.cache/peft-studio>/matmul-autotune.json. Written to
 * a temporary file and renamed, so a killed run never leaves half a file.
 */
export function nodeTuneStore(
  file = path.join(process.env.PEFT_STUDIO_CACHE || path.join(homedir(), '.cache', 'peft-studio'), 'matmul-autotune.json'),
): TuneStore {
  const readAll = async (): Promise<Record<string, Record<string, TuneEntry>>> => {
    try {
      const all = JSON.parse(await readFile(file, 'utf8'));
      return all && typeof all === 'object' && !Array.isArray(all) ? all : {};
    } catch {
      return {};
    }
  };
  return {
    async load(adapter) {
      const t = (await readAll())[adapter];
      return t && typeof t === 'object' ? t : {};
    },
    async save(adapter, table) {
      const all = await readAll();
      all[adapter] = table;
      await mkdir(path.dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify(all, null, 1));
      await rename(tmp, file);
    },
  };
}
