import { defineConfig } from 'vitest/config';

// Two projects: `unit` (CPU only, seconds: npm run test:unit) and `gpu` (kernels, model, methods, CLI
// on Dawn with Chromium's SwiftShader Vulkan driver: npm run test:gpu). `vitest run` runs both;
// the browser tests have their own config (e2e/vitest.e2e.config.ts, npm run test:e2e).
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // One Dawn instance per worker; GPU files are heavy, so run them in few forks.
    pool: 'forks',
    maxWorkers: 2,
    env: {
      VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES ?? '/usr/lib/chromium/vk_swiftshader_icd.json',
    },
    projects: [
      { extends: true, test: { name: 'unit', include: ['tests/unit/**/*.test.ts'] } },
      { extends: true, test: { name: 'gpu', include: ['tests/gpu/**/*.test.ts', 'peft/**/*.test.ts', 'templates/**/*.test.ts'] } },
    ],
  },
});
