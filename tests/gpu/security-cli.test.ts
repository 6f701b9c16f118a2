/**
 * The security model through the built CLI (`npm run build:cli`):
 * plug-ins run only from folders named by PEFT_DIR / --peft-dir (never ./peft
 * of the working directory), and HF_TOKEN goes only to the default Hub or an
 * endpoint the user named (--endpoint, HF_ENDPOINT), never to one a config file
 * names and never over plain http to another machine. A local server logs the
 * headers it receives.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { runCli } from '../helpers/cli';
import { tokenRefusal } from '../../src/hub/hub-source';

function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ['PEFT_DIR', 'HF_TOKEN', 'HF_ENDPOINT']) delete env[k];
  return { ...env, PEFT_STUDIO_CACHE: mkdtempSync(path.join(tmpdir(), 'ps-sec-cache-')), ...extra };
}

/** A Hub that knows no repo, logging every request's headers. */
async function headerLogger(host: string): Promise<{ url: string; seen: IncomingHttpHeaders[]; close: () => void }> {
  const seen: IncomingHttpHeaders[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers);
    res.writeHead(404, { 'x-error-code': 'RepoNotFound' }).end('not found');
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, seen, close: () => server.close() };
}

const servers: { close: () => void }[] = [];
afterAll(() => servers.forEach((s) => s.close()));

describe('security: plug-ins are opt-in', () => {
  it('code planted in ./peft of the working directory never runs without PEFT_DIR / --peft-dir; named, it runs and the CLI says so', async () => {
    const cwd = mkdtempSync(path.join(tmpdir(), 'ps-cloned-experiment-'));
    const mark = path.join(cwd, 'PLANTED_CODE_RAN');
    mkdirSync(path.join(cwd, 'peft', 'evil'), { recursive: true });
    const plant = `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(mark)}, 'x');\n`;
    writeFileSync(path.join(cwd, 'peft', 'evil', 'config.ts'), plant + 'export const options = [] as const;\n');
    writeFileSync(
      path.join(cwd, 'peft', 'evil', 'method.ts'),
      plant + "export default { name: 'evil', description: 'Plants a file.', flops() { return { flops: 0 }; }, attach() { throw new Error('x'); } };\n",
    );

    // `logits` with no --text stops at argument checking, after the plug-in scan: no GPU, no model.
    for (const args of [['logits', '--model', 'x'], ['train', 'missing.yaml'], ['nonsense']]) {
      const r = await runCli(args, { env: cleanEnv(), cwd });
      expect(r.code, r.stderr).toBe(2);
      expect(existsSync(mark)).toBe(false);
      expect(r.stderr).not.toContain('plug-in folders loaded');
    }
    // Named, the same folder loads (so the check above can fail), and the CLI prints which folders it loaded.
    const viaEnv = await runCli(['logits', '--model', 'x'], { env: cleanEnv({ PEFT_DIR: './peft' }), cwd });
    expect(existsSync(mark)).toBe(true);
    expect(viaEnv.stderr).toContain(`plug-in folders loaded: ${path.join(cwd, 'peft')}`);
    const viaFlag = await runCli(['logits', '--peft-dir', path.join(cwd, 'peft'), '--model', 'x'], { env: cleanEnv(), cwd });
    expect(viaFlag.stderr).toContain(`plug-in folders loaded: ${path.join(cwd, 'peft')} (methods: evil)`);
    expect(viaFlag.stderr).toContain('logits: --text');
  });
});

describe('security: where HF_TOKEN goes', () => {
  it('a config-named endpoint gets no token; --endpoint and HF_ENDPOINT (loopback http) do', async () => {
    const hub = await headerLogger('127.0.0.1');
    servers.push(hub);
    const cwd = mkdtempSync(path.join(tmpdir(), 'ps-token-'));
    const cfg = path.join(cwd, 'train.yaml');
    writeFileSync(
      cfg,
      [
        `model_name_or_path: org/private-model`,
        `endpoint: ${hub.url}`,
        'finetuning_type: lora',
        `dataset: ${path.resolve('examples/data/tiny_stories_alpaca.jsonl')}`,
        `output_dir: ${path.join(cwd, 'out')}`,
        'max_steps: 1',
      ].join('\n') + '\n',
    );

    const fromConfig = await runCli(['train', cfg], { env: cleanEnv({ HF_TOKEN: 'hf_secret_1' }), cwd });
    expect(fromConfig.code).toBe(2);
    expect(hub.seen.length).toBeGreaterThan(0);
    expect(hub.seen.some((h) => h.authorization)).toBe(false);
    expect(fromConfig.stderr).toContain(`HF_TOKEN: the Hub token is not sent to ${hub.url}: only a config or link names it`);

    hub.seen.length = 0;
    const viaEnv = await runCli(['train', cfg], { env: cleanEnv({ HF_TOKEN: 'hf_secret_2', HF_ENDPOINT: hub.url }), cwd });
    expect(viaEnv.code).toBe(2);
    expect(hub.seen.length).toBeGreaterThan(0);
    expect(hub.seen.every((h) => h.authorization === 'Bearer hf_secret_2')).toBe(true);

    hub.seen.length = 0;
    const viaFlag = await runCli(['logits', '--model', 'org/private-model', '--endpoint', hub.url, '--text', 'x'], {
      env: cleanEnv({ HF_TOKEN: 'hf_secret_3' }),
      cwd,
    });
    expect(viaFlag.code).toBe(2);
    expect(viaFlag.stderr).toMatch(/not found or is private/);
    expect(hub.seen.length).toBeGreaterThan(0);
    expect(hub.seen.every((h) => h.authorization === 'Bearer hf_secret_3')).toBe(true);
  });

  it('never over plain http to another machine, even to an endpoint the user named', async () => {
    expect(tokenRefusal('http://10.1.2.3:8080', ['http://10.1.2.3:8080'])).toMatch(/plain http to another machine/);
    expect(tokenRefusal('http://[::1]:9', [])).toMatch(/only a config or link names it/);
    expect(tokenRefusal('http://[::1]:9', ['http://[::1]:9'])).toBeNull();
    expect(tokenRefusal('https://huggingface.co', [])).toBeNull();
    expect(tokenRefusal('https://huggingface.co.evil.example', [])).toMatch(/only a config or link names it/);
    // A real request to this machine's non-loopback address: the header never arrives.
    const ip = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    expect(ip, 'this test needs a non-loopback IPv4 interface').toBeTruthy();
    const hub = await headerLogger('0.0.0.0');
    servers.push(hub);
    const url = hub.url.replace('0.0.0.0', ip!);
    const r = await runCli(['logits', '--model', 'org/private-model', '--endpoint', url, '--text', 'x'], { env: cleanEnv({ HF_TOKEN: 'hf_secret_4' }) });
    expect(r.code).toBe(2);
    expect(hub.seen.length).toBeGreaterThan(0);
    expect(hub.seen.some((h) => h.authorization)).toBe(false);
    expect(r.stderr).toContain('plain http to another machine');
  });
});
