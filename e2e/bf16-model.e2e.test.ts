/**
 * The studio loads a BF16 checkpoint through the same loader as the CLI: a
 * BF16 copy of stories260K (2-D weights BF16, norms F32, as HF checkpoints
 * store them) is written into a temporary Hub mirror; the page loads it, its
 * weights stay packed BF16 on the GPU (half the f32 bytes), and the
 * Playground's greedy ids equal `peft-studio generate` on the same repo. The
 * weights stream into IndexedDB (two header Range requests, one download); a
 * second load, with base_dtype float32 chosen on the Model panel, reads them
 * back from IndexedDB with no request and holds them unpacked (f32).
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseSafetensors, serializeSafetensors, type TensorToWrite } from '../src/model/safetensors';
import { launchChromium, recordConsole } from './support/browser';
import { cliGreedy, referenceGreedy } from './support/reference';
import { serveStudio, startHubServer, testHubRoot, type HubServer } from './support/servers';

const REPO = 'stories260K-bf16';
const NEW_TOKENS = 12;

let studio: { url: string; close(): Promise<void> };
let hub: HubServer;
let root: string;
let browser: Browser;

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'peft-studio-bf16-'));
  const from = path.join(testHubRoot(), 'models/stories260K');
  const to = path.join(root, 'models', REPO);
  mkdirSync(to, { recursive: true });
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'])
    copyFileSync(path.join(from, f), path.join(to, f));
  const st = parseSafetensors(new Uint8Array(readFileSync(path.join(from, 'model.safetensors'))), 'stories260K');
  const out = new Map<string, TensorToWrite>();
  for (const [name, t] of st.tensors) out.set(name, { shape: t.shape, data: t.data, dtype: t.shape.length === 2 ? 'BF16' : 'F32' });
  writeFileSync(path.join(to, 'model.safetensors'), serializeSafetensors(out, { format: 'pt' }));
  [studio, hub] = await Promise.all([serveStudio(), startHubServer({ root })]);
  browser = await launchChromium({ webgpu: true });
});

afterAll(async () => {
  await browser?.close();
  await Promise.all([studio?.close(), hub?.close()]);
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('a BF16 model in the studio', () => {
  test("loads packed (bf16 on the GPU) and generates the CLI's greedy ids", async () => {
    const page = await (await browser.newContext()).newPage();
    const log = recordConsole(page);
    try {
      await page.goto(`${studio.url}/?endpoint=${encodeURIComponent(hub.url)}`);
      await page.waitForSelector('[data-testid=gpu-status][data-state=ready]', { timeout: 60_000 });
      await page.click('[data-testid=nav-model]');
      await page.fill('[data-testid=repo]', REPO);
      await page.click('[data-testid=load]');
      await page.waitForSelector('[data-testid=model-panel][data-state=loaded], [data-testid=load-error]', { timeout: 120_000 });
      expect(await page.$('[data-testid=load-error]')).toBeNull();
      expect(await page.textContent('[data-testid=weight-dtype]')).toBe('bf16');
      expect(hub.count(`/${REPO}/resolve/main/model.safetensors`)).toBeGreaterThanOrEqual(1);
      // The weights streamed through IndexedDB: the header by two Range requests, then one download; a second load reads only the cache.
      const weights = hub.requests.filter((r) => r.path === `/${REPO}/resolve/main/model.safetensors` && r.method === 'GET');
      expect(weights.map((r) => [r.status, r.range ?? null])).toEqual([
        [206, 'bytes=0-7'],
        [206, expect.stringMatching(/^bytes=0-\d+$/)],
        [200, null],
      ]);
      expect(await page.getAttribute('[data-testid=load-progress] li[data-file="model.safetensors"]', 'data-cached')).not.toBe('true');

      const { prompt } = referenceGreedy(0, NEW_TOKENS);
      await page.click('[data-testid=nav-playground]');
      await page.fill('[data-testid=prompt]', prompt);
      await page.fill('[data-testid=max-new-tokens]', String(NEW_TOKENS));
      await page.click('[data-testid=generate]');
      await page.waitForSelector('[data-testid=gen-output-base][data-state=done], [data-testid=generate-error]', { timeout: 120_000 });
      expect(await page.$('[data-testid=generate-error]')).toBeNull();
      const browserIds = JSON.parse((await page.textContent('[data-testid=gen-ids-base]')) ?? 'null');
      const cli = await cliGreedy({ endpoint: hub.url, repo: REPO, prompt, maxNewTokens: NEW_TOKENS });
      expect(browserIds).toEqual(cli.ids);
      expect(browserIds).toHaveLength(NEW_TOKENS);

      // (The CLI above downloads through its own cache.)
      hub.reset();
      await page.click('[data-testid=nav-model]');
      // base_dtype float32 on the Model panel: the loaded copy says it is held otherwise until loaded again, unpacked.
      await page.selectOption('[data-testid=opt-base_dtype] select', 'float32');
      expect(await page.textContent('[data-testid=dtype-changed]')).toMatch(/base_dtype is now float32.*this copy stays bf16/);
      await page.click('[data-testid=load]');
      await page.waitForSelector('[data-testid=model-panel][data-state=loaded][data-loads="2"], [data-testid=load-error]', { timeout: 120_000 });
      expect(await page.$('[data-testid=load-error]')).toBeNull();
      expect(await page.textContent('[data-testid=weight-dtype]')).toBe('f32');
      expect(await page.textContent('[data-testid=model-summary]')).toContain('base_dtype float32');
      expect(await page.$('[data-testid=dtype-changed]')).toBeNull();
      // Only the probe for an optional file the repo lacks (chat_template.jinja: 404, never cached) reaches the server.
      expect(hub.requests.filter((r) => r.status !== 404)).toEqual([]);
      // ...and the panel says so.
      expect(await page.textContent('[data-testid=load-progress] li[data-file="model.safetensors"][data-cached=true]')).toContain('from the browser cache');
    } catch (err) {
      console.log(`--- browser console ---\n${log.join('\n')}\n--- end ---`);
      throw err;
    }
  });
});
