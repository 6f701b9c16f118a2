/**
 * Every method's form in the studio, in one browser session on stories260K:
 * the Method screen lists what the catalogue (the method folders) says, each
 * method shows its description and the options it requires; a required
 * option left empty blocks Start with its message; the trainable count equals
 * `peft-studio methods --counts` for the same config; Start trains 2 steps,
 * whose measured peak of GPU memory is within 15 % of the Model panel's
 * training-memory estimate for the method.
 * After QLoRA (which quantizes the base of its own run, and must not touch
 * the base the counts are taken on), LoRA's count is still the CLI's.
 *
 * No method is named here: the list comes from the page.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, onTestFailed, test } from 'vitest';
import { runCli } from '../tests/helpers/cli';
import { storiesDir } from '../tests/helpers/models';
import { launchChromium, recordConsole } from './support/browser';
import { serveStudio, startHubServer, type HubServer } from './support/servers';

const REPO = 'stories260K';
/** Required options get this value (num_virtual_tokens: kept small so the prompt methods train fast). */
const REQUIRED_VALUE = '4';

let studio: { url: string; close(): Promise<void> };
let hub: HubServer;
let browser: Browser;
let work: string;
let cliCounts: Record<string, { trainable: number; total: number } | { error: string }>;

beforeAll(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'peft-studio-methods-e2e-'));
  // The CLI's counts for the studio's config: the same model, each method's defaults, required options set.
  const config = path.join(work, 'counts.yaml');
  writeFileSync(config, `model_name_or_path: ${storiesDir()}\nnum_virtual_tokens: ${REQUIRED_VALUE}\n`);
  const [s, h, counts] = await Promise.all([serveStudio(), startHubServer(), runCli(['methods', '--counts', config, '--json'])]);
  [studio, hub] = [s, h];
  expect(counts.code, counts.stderr).toBe(0);
  cliCounts = JSON.parse(counts.stdout);
  browser = await launchChromium({ webgpu: true });
});

afterAll(async () => {
  await browser?.close();
  await Promise.all([studio?.close(), hub?.close()]);
  if (work) rmSync(work, { recursive: true, force: true });
});

async function setOption(page: Page, key: string, value: string): Promise<void> {
  const field = page.locator(`[data-testid=opt-${key}]:visible`).first();
  const select = field.locator('select');
  if (await select.count()) return void (await select.selectOption(value));
  const input = field.locator('input');
  await input.fill(value);
  await input.dispatchEvent('change');
}

async function waitFor(page: Page, ok: string, error: string, timeout: number): Promise<void> {
  const hit = await page.waitForSelector(`${ok}, ${error}`, { timeout });
  if (await hit.evaluate((el, sel) => el.matches(sel), error)) throw new Error(`The page shows an error: ${(await hit.textContent())?.trim()}`);
}

/** The count the Method screen shows once it is current for the form's values. */
async function shownCount(page: Page): Promise<number> {
  await page.click('[data-testid=nav-method]');
  const el = await page.waitForSelector('[data-testid=trainable-count][data-state=current]', { timeout: 60_000 });
  return Number(await el.getAttribute('data-trainable'));
}

function cliCount(name: string): number {
  const c = cliCounts[name];
  if (!c || 'error' in c) throw new Error(`peft-studio methods --counts has no count for ${name}: ${JSON.stringify(c)}`);
  return c.trainable;
}

describe('every method in the studio', () => {
  test("forms show each method's required options; counts equal the CLI's; Start trains 2 steps; LoRA-family counts survive QLoRA", async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
    const log = recordConsole(page);
    onTestFailed(async () => {
      console.log(`--- browser console ---\n${log.join('\n')}\n--- end ---`);
      await page.screenshot({ path: path.join(work, 'methods-failure.png'), fullPage: true }).catch(() => undefined);
    });
    await page.goto(`${studio.url}/?endpoint=${encodeURIComponent(hub.url)}`);
    await waitFor(page, '[data-testid=gpu-status][data-state=ready]', '[data-testid=gpu-status][data-state=unavailable]', 60_000);
    await page.click('[data-testid=nav-model]');
    await page.click('[data-testid=load]');
    await waitFor(page, '[data-testid=model-panel][data-state=loaded]', '[data-testid=load-error]', 120_000);

    // Data and training settings shared by every method: a few sst2 rows, 2 steps of batch 2.
    await page.click('[data-testid=nav-data]');
    for (const [k, v] of [
      ['max_samples', '4'],
      // Shorter than every example: each batch is cutoff_len tokens, the length the memory estimate assumes.
      ['cutoff_len', '16'],
      ['val_size', '0'],
    ])
      await setOption(page, k, v);
    await page.selectOption('[data-testid=dataset-registry]', 'sst2');
    await waitFor(page, '[data-testid=data-screen][data-state=ready]', '[data-testid=data-error]', 60_000);
    await page.click('[data-testid=nav-train]');
    for (const [k, v] of [
      ['per_device_train_batch_size', '2'],
      ['max_steps', '2'],
      ['logging_steps', '1'],
      ['save_steps', '100'],
    ])
      await setOption(page, k, v);

    await page.click('[data-testid=nav-method]');
    const methods = await page.$$eval('[data-testid^=method-]:not([data-testid=method-screen]):not([data-testid=method-description])', (els) =>
      els.map((e) => e.getAttribute('value')!).filter(Boolean),
    );
    // The page lists exactly the methods the CLI counted (both from the installed method folders).
    expect([...methods].sort()).toEqual(Object.keys(cliCounts).sort());
    const timings: Record<string, number> = {};
    const memory: Record<string, number> = {};
    // A fresh page starts on finetuning_type's default method.
    const defaultMethod = await page.$eval('[data-testid^=method-]:checked', (e) => (e as HTMLInputElement).value);
    let flaggedAfterDefault = false;

    for (const m of methods) {
      const t0 = Date.now();
      await page.click('[data-testid=nav-method]');
      await page.check(`[data-testid=method-${m}]`);
      await page.waitForSelector(`[data-testid=method-screen][data-method="${m}"]`);
      expect((await page.textContent('[data-testid=method-description]'))?.length, m).toBeGreaterThan(20);
      // Required options are on the form; left empty, they block Start with their message.
      const required = await page.$$eval('[data-testid=method-screen] [data-required=true]', (els) => els.map((e) => e.getAttribute('data-key')!));
      for (const key of required) {
        await setOption(page, key, '');
        await page.click('[data-testid=nav-train]');
        expect(await page.isDisabled('[data-testid=start]'), `${m}: Start with ${key} empty`).toBe(true);
        expect(await page.textContent('[data-testid=config-invalid]'), m).toContain(`${key}: required by`);
        await page.click('[data-testid=nav-method]');
        await setOption(page, key, REQUIRED_VALUE);
      }
      const count = await shownCount(page);
      expect(count, `${m}: studio count vs peft-studio methods --counts`).toBe(cliCount(m));

      await page.click('[data-testid=nav-train]');
      expect(await page.$('[data-testid=config-invalid]'), m).toBeNull();
      const before = await page.getAttribute('[data-testid=train-screen]', 'data-run');
      await page.click('[data-testid=start]');
      await page.waitForFunction(
        (prev) => {
          const el = document.querySelector('[data-testid=train-screen]');
          return !!el && el.getAttribute('data-run') !== prev && el.getAttribute('data-run') !== '';
        },
        before,
        { timeout: 60_000 },
      );
      await waitFor(page, '[data-testid=train-screen][data-status=done]', '[data-testid=train-error], [data-testid=train-screen][data-status=failed]', 120_000);
      expect(await page.$$('[data-testid=log-row]'), m).toHaveLength(2);
      timings[m] = Date.now() - t0;
      // The Model panel's training-memory estimate for this method and batch against the run's measured peak.
      const estimate = Number(await page.getAttribute(`[data-testid=memory-estimate][data-method="${m}"]`, 'data-bytes'));
      const peak = Number(await page.getAttribute('[data-testid=peak-memory]', 'data-bytes'));
      memory[m] = +(estimate / peak).toFixed(3);
      expect(Math.abs(estimate / peak - 1), `${m}: estimate ${estimate} B, peak ${peak} B`).toBeLessThan(0.15);

      // After a method that changes how its base is held (a selecting flag on the default's type: QLoRA's quantization),
      // the default method's count on the base model is still the CLI's.
      const flag = await page.getAttribute(`[data-testid=method-${m}]`, 'data-flag');
      if (flag && m !== defaultMethod) {
        flaggedAfterDefault = true;
        await page.click('[data-testid=nav-method]');
        await page.check(`[data-testid=method-${defaultMethod}]`);
        expect(await shownCount(page), `${defaultMethod} after ${m}`).toBe(cliCount(defaultMethod));
      }
    }
    expect(flaggedAfterDefault).toBe(true);
    console.log('per-method time (ms, select + count + 2 steps):', timings);
    console.log('per-method memory estimate / measured peak:', memory);
    await page.close();
    // Twenty methods, each counted and trained for 2 steps on SwiftShader.
  }, 900_000);
});
