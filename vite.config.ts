/**
 * The studio page: Svelte UI on the main thread, the engine in an ES-module
 * Web Worker (src/worker). WGSL is imported as text with `?raw`, which Vite
 * handles natively. Tests have their own configs (vitest.config.ts,
 * e2e/vitest.e2e.config.ts).
 */
import { builtinModules } from 'node:module';
import path from 'node:path';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig, type Plugin } from 'vite';

const NODE_ONLY = new Set(['webgpu', ...builtinModules]);

/**
 * Fail the build when project code reachable from the page or the worker
 * imports something that only exists in Node: the `webgpu` package (Dawn),
 * a node built-in, or a Node host module (`src/<area>/node.ts`). Browser and
 * Node differ only in what is injected (DESIGN.md, "Same code, two hosts").
 */
export function browserOnly(): Plugin {
  return {
    name: 'peft-studio:browser-only',
    enforce: 'pre',
    resolveId(source, importer) {
      if (!importer || importer.includes('/node_modules/') || importer.startsWith('\0')) return null;
      const from = path.relative(process.cwd(), importer);
      let what = '';
      if (source.startsWith('node:') || NODE_ONLY.has(source)) what = `'${source}', which only exists in Node`;
      else if (source.startsWith('.')) {
        const target = path.resolve(path.dirname(importer), source);
        if (/\/src\/[^/]+\/node(\.ts)?$/.test(target)) what = `'${source}', a Node host module`;
      }
      if (what) {
        this.error(
          `${from} imports ${what}. The page and its worker must not load Node code: ` +
            'inject the GPU (navigator.gpu), file storage and Hub cache instead, and import Node hosts only from Node entries (src/cli, tests).',
        );
      }
      return null;
    },
  };
}

/**
 * The one .wasm file the studio loads: onnxruntime-web's WebGPU build
 * (`onnxruntime-web/webgpu`, WebGPU and wasm execution providers), fetched by
 * the Playground's ONNX worker. transformers.js (tokenizers, in the engine
 * worker) imports the same build, so the same file; onnxruntime-web's other
 * builds (plain wasm, JSEP, JSPI) must not come in through some import, or
 * dist/ would carry 15-28 MB files no page fetches.
 */
const LOADED_WASM = [/^ort-wasm-simd-threaded\.asyncify-[\w-]+\.wasm$/];

export function onlyLoadedWasm(): Plugin {
  return {
    name: 'peft-studio:only-loaded-wasm',
    generateBundle(_options, bundle) {
      for (const file of Object.keys(bundle)) {
        const name = file.split('/').pop()!;
        if (name.endsWith('.wasm') && !LOADED_WASM.some((re) => re.test(name))) {
          this.error(
            `dist/ would ship ${file}, a wasm file the studio never loads. Import onnxruntime-web/webgpu (as src/worker/onnx-runner.ts does), not another onnxruntime-web build, or add the file to LOADED_WASM in vite.config.ts if a page really fetches it.`,
          );
        }
      }
    },
  };
}

// The UI tells the worker's errors apart by `name` (src/ui/errors.ts), and
// src/errors.ts takes it from the class name, which minifying would mangle.
const keepNames = { output: { keepNames: true } };

export default defineConfig({
  // Relative asset URLs: dist/ works from any sub-path of a static host.
  base: './',
  plugins: [svelte({ configFile: false, compilerOptions: { runes: true } }), browserOnly(), onlyLoadedWasm()],
  worker: {
    format: 'es',
    // Worker bundles get only these plugins, not the ones above.
    plugins: () => [browserOnly(), onlyLoadedWasm()],
    rolldownOptions: keepNames,
  },
  build: {
    outDir: 'dist',
    target: 'es2022',
    sourcemap: true,
  },
  server: { host: '127.0.0.1' },
  preview: { host: '127.0.0.1' },
});
