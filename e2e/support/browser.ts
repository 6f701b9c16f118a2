/**
 * Chromium for the e2e tests: /usr/bin/chromium through playwright-core, with
 * WebGPU on SwiftShader (no GPU needed), a throwaway profile (playwright's
 * launch makes one) and no network chatter.
 */
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = process.env.PEFT_STUDIO_CHROMIUM ?? '/usr/bin/chromium';

export const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--use-webgpu-adapter=swiftshader'];

const QUIET_FLAGS = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export function launchChromium(opts: { webgpu: boolean }): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...QUIET_FLAGS, ...(opts.webgpu ? WEBGPU_FLAGS : [])],
  });
}

/** Everything the page and its workers print, with errors, for a failure report. */
export function recordConsole(page: Page): string[] {
  const lines: string[] = [];
  const t0 = Date.now();
  const stamp = () => `+${((Date.now() - t0) / 1000).toFixed(2)}s`;
  page.on('console', (m) => lines.push(`${stamp()} [${m.worker() ? 'worker ' : ''}${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => lines.push(`${stamp()} [pageerror] ${e.stack ?? e.message}`));
  page.on('requestfailed', (r) => lines.push(`${stamp()} [requestfailed] ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('crash', () => lines.push(`${stamp()} [crash] the page crashed`));
  return lines;
}
