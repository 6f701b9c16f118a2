import { defineConfig } from 'vitest/config';

// Long runs on large model shapes, outside `npm test`:
//   npx vitest run -c bench/vitest.bench.config.ts
export default defineConfig({
  test: {
    include: ['bench/**/*.bench.test.ts'],
    testTimeout: 3_600_000,
    hookTimeout: 600_000,
    pool: 'forks',
    maxWorkers: 1,
    reporters: ['verbose'],
    env: {
      VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES ?? '/usr/lib/chromium/vk_swiftshader_icd.json',
    },
  },
});
