import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Browser tests: real Chromium (/usr/bin/chromium) driven by playwright-core,
// WebGPU on SwiftShader. Expects dist/ from `vite build` and the CLI from
// `npm run build:cli` (the test:e2e script builds both first).
export default defineConfig({
  test: {
    root: fileURLToPath(new URL('..', import.meta.url)),
    include: ['e2e/**/*.e2e.test.ts'],
    testTimeout: 240_000,
    hookTimeout: 120_000,
    // One browser at a time: SwiftShader is CPU-bound.
    fileParallelism: false,
    reporters: ['verbose'],
  },
});
