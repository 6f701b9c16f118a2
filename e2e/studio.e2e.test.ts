/**
 * The studio in a real browser: /usr/bin/chromium with WebGPU on SwiftShader
 * loads stories260K from the local Hub mirror through the engine worker and
 * generates greedily; the ids must equal the model's golden ids
 * (reference.json) and the Node CLI's. Without WebGPU the page must say so
 * and name the browsers that have it.
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, onTestFailed, test } from 'vitest';
import { launchChromium, recordConsole } from './support/browser';
import { cliGreedy, referenceGreedy, type Greedy } from './support/reference';
import { ROOT, serveStudio, startHubServer, type HubServer } from './support/servers';

const RESULTS = path.join(ROOT, 'test-results');
const REPO = 'stories260K';
const NEW_TOKENS = 20;

let studio: { url: string; close(): Promise<void> };
let hub: HubServer;
const timings: Record<string, number> = {};

beforeAll(async () => {
  mkdirSync(RESULTS, { recursive: true });
  for (const f of readdirSync(RESULTS)) if (f.endsWith('-failure.png')) rmSync(path.join(RESULTS, f));
  [studio, hub] = await Promise.all([serveStudio(), startHubServer()]);
});

afterAll(async () => {
  await Promise.all([studio?.close(), hub?.close()]);
  if (Object.keys(timings).length) {
    writeFileSync(path.join(RESULTS, 'e2e-timings.json'), JSON.stringify(timings, null, 2) + '\n');
    console.log('e2e timings (ms):', timings);
  }
});

/** A fresh page whose console is printed, with a screenshot, when the test fails. */
async function openPage(browser: Browser, name: string, init?: () => void): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const log = recordConsole(page);
  onTestFailed(async () => {
    console.log(`--- browser console (${name}) ---\n${log.join('\n') || '(empty)'}\n--- end ---`);
    await page.screenshot({ path: path.join(RESULTS, `${name}-failure.png`), fullPage: true }).catch(() => undefined);
  });
  return page;
}

/** Wait for one of two outcomes; an error panel fails the test with its text. */
async function waitFor(page: Page, ok: string, error: string, timeout: number): Promise<void> {
  const hit = await page.waitForSelector(`${ok}, ${error}`, { timeout });
  if (await hit.evaluate((el, sel) => el.matches(sel), error)) {
    throw new Error(`The page shows an error: ${(await hit.textContent())?.trim()}`);
  }
}

describe('studio with WebGPU (SwiftShader)', () => {
  let browser: Browser;
  let cliHub: HubServer;
  let cli: Promise<Greedy & { ms: number }>;

  beforeAll(async () => {
    const reference = referenceGreedy(0, NEW_TOKENS);
    // The CLI runs on Dawn while the browser works; its ids are compared below.
    // It has a Hub server of its own, so the page's request log is the page's.
    cliHub = await startHubServer();
    cli = cliGreedy({ endpoint: cliHub.url, repo: REPO, prompt: reference.prompt, maxNewTokens: NEW_TOKENS });
    cli.catch(() => undefined);
    browser = await launchChromium({ webgpu: true });
  });

  afterAll(async () => {
    await browser?.close();
    await cli?.catch(() => undefined);
    await cliHub?.close();
  });

  test(`loads ${REPO} from the Hub mirror and generates the reference's and the CLI's greedy ids`, async () => {
    const reference = referenceGreedy(0, NEW_TOKENS);
    const page = await openPage(browser, 'studio-generate');
    let t = Date.now();
    await page.goto(`${studio.url}/?endpoint=${encodeURIComponent(hub.url)}`);

    await waitFor(page, '[data-testid=gpu-status][data-state=ready]', '[data-testid=gpu-status][data-state=unavailable]', 60_000);
    timings.webgpuReady = Date.now() - t;
    expect(await page.textContent('[data-testid=gpu-adapter]')).toContain('swiftshader');
    expect(await page.inputValue('[data-testid=endpoint]')).toBe(hub.url);
    expect(await page.inputValue('[data-testid=repo]')).toBe(REPO);

    t = Date.now();
    hub.reset();
    await page.click('[data-testid=load]');
    await waitFor(page, '[data-testid=model-panel][data-state=loaded][data-loads="1"]', '[data-testid=load-error]', 120_000);
    timings.load = Date.now() - t;
    const files = await page.$$eval('[data-testid=load-progress] li', (lis) =>
      lis.map((li) => ({ file: li.getAttribute('data-file'), done: li.getAttribute('data-done') === 'true', text: li.textContent })),
    );
    expect(files.map((f) => f.file)).toContain('model.safetensors');
    // A fresh profile: the weights came from the mirror, not from IndexedDB.
    expect(hub.count(`/${REPO}/resolve/main/model.safetensors`)).toBeGreaterThanOrEqual(1);
    for (const f of files) expect(f, `progress of ${f.file}`).toMatchObject({ done: true });
    expect(await page.textContent('[data-testid=model-summary]')).toMatch(/260\.\d+ K parameters/);

    await page.fill('[data-testid=prompt]', reference.prompt);
    await page.fill('[data-testid=max-new-tokens]', String(NEW_TOKENS));
    await page.fill('[data-testid=temperature]', '0');
    t = Date.now();
    await page.click('[data-testid=generate]');
    await waitFor(page, '[data-testid=gen-output][data-state=done]', '[data-testid=generate-error]', 120_000);
    timings.generate = Date.now() - t;
    await page.screenshot({ path: path.join(RESULTS, 'studio-generate.png'), fullPage: true });

    const promptIds = JSON.parse((await page.textContent('[data-testid=prompt-ids]')) ?? 'null');
    const ids = JSON.parse((await page.textContent('[data-testid=gen-ids]')) ?? 'null');
    const text = (await page.textContent('[data-testid=gen-text]')) ?? '';
    console.log(`page: ${JSON.stringify(ids)}\n      ${JSON.stringify(text)}`);
    expect(promptIds).toEqual(reference.promptIds);
    expect(ids).toEqual(reference.ids);
    expect(text.startsWith(`${reference.prompt},`)).toBe(true);

    // Loading again reads every file from IndexedDB: nothing is downloaded.
    hub.reset();
    t = Date.now();
    await page.click('[data-testid=load]');
    await waitFor(page, '[data-testid=model-panel][data-state=loaded][data-loads="2"]', '[data-testid=load-error]', 120_000);
    timings.reloadFromCache = Date.now() - t;
    expect(hub.requests.filter((r) => r.status === 200), 'files downloaded by the second load').toEqual([]);
    expect(await page.textContent('[data-testid=model-summary]')).toMatch(/260\.\d+ K parameters/);

    const node = await cli;
    timings.cli = node.ms;
    console.log(`cli:  ${JSON.stringify(node.ids)}`);
    expect(node.promptIds).toEqual(promptIds);
    expect(ids).toEqual(node.ids);
  });
});

describe('studio without WebGPU', () => {
  let browser: Browser;

  beforeAll(async () => {
    // No WebGPU flags: Chromium on Linux then has navigator.gpu but no adapter.
    browser = await launchChromium({ webgpu: false });
  });

  afterAll(async () => {
    await browser?.close();
  });

  test('a browser without navigator.gpu gets the capability message, and loading is off', async () => {
    const page = await openPage(browser, 'studio-no-navigator-gpu', () => {
      delete (Navigator.prototype as { gpu?: unknown }).gpu;
    });
    await page.goto(studio.url + '/');
    await page.waitForSelector('[data-testid=gpu-status][data-state=unavailable]', { timeout: 30_000 });
    const message = (await page.textContent('[data-testid=webgpu-missing]')) ?? '';
    expect(message).toContain('navigator.gpu is missing');
    expect(message).toMatch(/Chrome or Edge 113\+/);
    expect(message).toContain('--enable-unsafe-webgpu');
    expect(await page.isDisabled('[data-testid=load]')).toBe(true);
    await page.screenshot({ path: path.join(RESULTS, 'studio-no-webgpu.png'), fullPage: true });
  });

  test('a browser with navigator.gpu but no adapter gets the worker\'s WebGPUNotAvailableError', async () => {
    const page = await openPage(browser, 'studio-no-adapter');
    await page.goto(studio.url + '/');
    await page.waitForSelector('[data-testid=gpu-status][data-state=unavailable]', { timeout: 30_000 });
    expect(await page.getAttribute('[data-testid=gpu-error]', 'data-error')).toBe('WebGPUNotAvailableError');
    expect(await page.textContent('[data-testid=webgpu-missing]')).toContain('no GPU adapter');
    expect(await page.isDisabled('[data-testid=load]')).toBe(true);
  });
});
