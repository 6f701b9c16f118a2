#!/usr/bin/env node
// The CLI is built by Vite (WGSL imported as text, as in the browser) into dist-cli/.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const entry = path.join(here, '..', 'dist-cli', 'cli.mjs');
if (!existsSync(entry)) {
  process.stderr.write('peft-studio: the CLI is not built yet; run `npm run build:cli` (npm install does it).\n');
  process.exit(1);
}
process.env.VK_ICD_FILENAMES ??= '/usr/lib/chromium/vk_swiftshader_icd.json';
const { run } = await import(entry);
await run(process.argv.slice(2));
