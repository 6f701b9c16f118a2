import { defineConfig } from 'vite';

// The Node CLI, bundled by Vite so WGSL `?raw` imports work the same as in the
// browser build. Dependencies stay external (resolved from node_modules).
export default defineConfig({
  publicDir: false,
  build: {
    ssr: 'src/cli/main.ts',
    outDir: 'dist-cli',
    emptyOutDir: true,
    target: 'node20',
    rollupOptions: { output: { entryFileNames: 'cli.mjs', format: 'es' } },
    minify: false,
    sourcemap: true,
  },
});
