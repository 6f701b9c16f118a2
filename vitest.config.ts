import { defineConfig } from 'vitest/config';

// GPU tests run on Dawn with Chromium's SwiftShader Vulkan driver (see README).
export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts', 'peft/**/*.test.ts', 'templates/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // One Dawn instance per worker; GPU files are heavy, so run them in few forks.
    pool: 'forks',
    maxWorkers: 2,
    env: {
      VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES ?? '/usr/lib/chromium/vk_swiftshader_icd.json',
    },
  },
});
