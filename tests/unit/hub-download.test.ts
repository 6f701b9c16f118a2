/**
 * Hub downloads against the local hub server with injected faults: 503s are
 * retried with backoff; a connection cut or stalled mid-body is resumed with
 * Range (or restarted where the server ignores it); an HTML page standing in
 * for a file, and a body whose size differs from the announced one, are
 * refused and never cached; an error about a cached file's content names the
 * cache file to delete. Timeouts and delays are milliseconds here.
 */
import { describe, it, expect } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { HubError, ModelFormatError } from '../../src/errors';
import { HubSource, type HubSourceOptions } from '../../src/hub/hub-source';
import { MemoryCache } from '../../src/hub/cache';
import { NodeFolderCache, hubStallTimeoutMs } from '../../src/hub/node';
import { readConfig } from '../../src/model/load';
import { getJson } from '../../src/hub/source';
import { testHubRoot, useHubServer } from '../helpers/hub-server';

const hub = useHubServer();
const modelDir = path.join(testHubRoot(), 'models', 'stories260K');
const weights = readFileSync(path.join(modelDir, 'model.safetensors'));
const WEIGHTS = '/stories260K/resolve/main/model.safetensors';

const source = (opts: Partial<HubSourceOptions> = {}) =>
  new HubSource({ endpoint: hub.url, repo: 'stories260K', kind: 'model', retryDelayMs: 1, stallTimeoutMs: 2000, ...opts });
const catchError = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: unknown) => e as Error,
  );
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(b);

describe('Hub downloads under faults', () => {
  it('retries 503s with backoff, then gives up with a HubError naming the status', async () => {
    hub.reset();
    hub.fault({ match: 'model.safetensors', kind: 'status', status: 503, times: 2 });
    expect(same(await source().get('model.safetensors'), weights)).toBe(true);
    expect(hub.requests.filter((r) => r.path === WEIGHTS).map((r) => r.status)).toEqual([503, 503, 200]);

    hub.reset();
    hub.fault({ match: 'config.json', kind: 'status', status: 502, times: 10 });
    const t0 = performance.now();
    const err = await catchError(source({ retries: 2, retryDelayMs: 20 }).get('config.json'));
    expect(err).toBeInstanceOf(HubError);
    expect(err!.message).toMatch(/HTTP 502/);
    expect(hub.count('config.json')).toBe(3);
    // Backoff 20 ms, then 40 ms.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(55);
    // A 404 is not transient: one request.
    hub.reset();
    await expect(source().get('nope.bin')).rejects.toMatchObject({ status: 404 });
    expect(hub.count('nope.bin')).toBe(1);
  });

  it('a connection cut mid-body resumes with Range from the last byte; a server that ignores Range restarts it', async () => {
    hub.reset();
    const cache = new MemoryCache();
    hub.fault({ match: 'model.safetensors', kind: 'truncate', afterBytes: 100_000 });
    const got = await source({ cache }).get('model.safetensors');
    expect(same(got, weights)).toBe(true);
    const reqs = hub.requests.filter((r) => r.path === WEIGHTS);
    expect(reqs.map((r) => [r.status, r.range])).toEqual([
      [200, undefined],
      [206, 'bytes=100000-'],
    ]);
    expect(same((await cache.get(source().cacheKey('model.safetensors')))!, weights)).toBe(true);

    hub.reset();
    hub.fault([
      { match: 'model.safetensors', kind: 'truncate', afterBytes: 70_000 },
      { match: 'model.safetensors', kind: 'norange' },
    ]);
    expect(same(await source().get('model.safetensors'), weights)).toBe(true);
    expect(hub.requests.filter((r) => r.path === WEIGHTS).map((r) => [r.status, r.range])).toEqual([
      [200, undefined],
      [200, 'bytes=70000-'],
    ]);
  });

  it('a stalled connection times out and resumes; a connection that keeps stalling is a HubError saying so', async () => {
    hub.reset();
    hub.fault({ match: 'model.safetensors', kind: 'stall', afterBytes: 50_000 });
    const t0 = performance.now();
    expect(same(await source({ stallTimeoutMs: 300 }).get('model.safetensors'), weights)).toBe(true);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(300);
    expect(hub.requests.filter((r) => r.path === WEIGHTS).map((r) => r.range)).toEqual([undefined, 'bytes=50000-']);

    hub.reset();
    hub.fault({ match: 'tokenizer.json', kind: 'stall', afterBytes: 10, times: 5 });
    const cache = new MemoryCache();
    const err = await catchError(source({ stallTimeoutMs: 200, retries: 1, cache }).get('tokenizer.json'));
    expect(err).toBeInstanceOf(HubError);
    expect(err!.message).toMatch(/Download of tokenizer\.json from stories260K stalled: no data for 0\.2 s \(\d+ bytes received\).*HF_HUB_DOWNLOAD_TIMEOUT/);
    expect(await cache.list()).toEqual([]);
    // The CLI's setting: HF_HUB_DOWNLOAD_TIMEOUT seconds, default 30.
    expect(hubStallTimeoutMs({})).toBe(30_000);
    expect(hubStallTimeoutMs({ HF_HUB_DOWNLOAD_TIMEOUT: '2.5' })).toBe(2500);
    expect(() => hubStallTimeoutMs({ HF_HUB_DOWNLOAD_TIMEOUT: 'soon' })).toThrow(/HF_HUB_DOWNLOAD_TIMEOUT="soon" is not a positive number of seconds/);
  });

  it('an HTML page in place of a file is refused at once and not cached', async () => {
    hub.reset();
    const cache = new MemoryCache();
    hub.fault({ match: 'config.json', kind: 'html' });
    const err = await catchError(source({ cache }).get('config.json'));
    expect(err).toBeInstanceOf(HubError);
    expect(err!.message).toMatch(/The server sent an HTML page instead of config\.json .*not the file\. It was not kept\./);
    expect(hub.count('config.json')).toBe(1);
    expect(await cache.list()).toEqual([]);
    // Sniffed from the bytes too, whatever the Content-Type says.
    const page = new TextEncoder().encode('  <!doctype html><html><body>503</body></html>');
    const s = new HubSource({
      repo: 'x',
      kind: 'model',
      retries: 0,
      fetch: (async () => new Response(page, { headers: { 'content-type': 'application/octet-stream' } })) as unknown as typeof fetch,
    });
    await expect(s.get('model.safetensors')).rejects.toThrow(/HTML page instead of model\.safetensors/);
    expect((await s.get('README.html')).byteLength).toBe(page.byteLength);
  });

  it("keeps a body only when its size is the server's: X-Linked-Size short or long is refused", async () => {
    const cache = new MemoryCache();
    const reply = (n: number, headers: Record<string, string>) => (async () => new Response(new Uint8Array(n).fill(7), { headers })) as unknown as typeof fetch;
    const short = new HubSource({ repo: 'x', kind: 'model', retries: 0, cache, fetch: reply(10, { 'x-linked-size': '20', 'content-encoding': 'gzip' }) });
    await expect(short.get('a.bin')).rejects.toThrow(/truncated: 10 of 20 bytes/);
    const long = new HubSource({ repo: 'x', kind: 'model', retries: 0, cache, fetch: reply(30, { 'x-linked-size': '20', 'content-encoding': 'gzip' }) });
    await expect(long.get('a.bin')).rejects.toThrow(/has 30 bytes where the server announced 20 .* it was not kept/);
    expect(await cache.list()).toEqual([]);
  });

  it('an error about a cached file names the cache file to delete', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ps-hubcache-'));
    const cache = new NodeFolderCache(dir);
    const s = source({ cache });
    // A bad file that made it into the cache (an older version, a mirror's error): verified bytes, wrong content.
    await cache.put(s.cacheKey('config.json'), new TextEncoder().encode('{"model_type": "llama", "hidden_size": '));
    const file = cache.location(s.cacheKey('config.json'));
    const err = await catchError(readConfig(s));
    expect(err).toBeInstanceOf(ModelFormatError);
    expect(err!.message).toContain(`It was read from the download cache: delete ${file} to download it again.`);
    expect(file).toMatch(new RegExp(`^${dir}/[0-9a-f]{64}\\.bin \\(and [0-9a-f]{64}\\.json beside it\\)$`));
    await cache.put(s.cacheKey('tokenizer_config.json'), new TextEncoder().encode('not json'));
    await expect(getJson(s, 'tokenizer_config.json')).rejects.toThrow(/delete .*\.bin .*to download it again/);
    // Not cached: no hint.
    await expect(getJson(source(), 'tokenizer.json')).resolves.toBeTruthy();
  });

  it('a long download may be cut more often than `retries`, as long as each connection makes 16 MiB of progress', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'ps-bigfile-'));
    mkdirSync(path.join(root, 'models', 'big'), { recursive: true });
    const big = Buffer.alloc(40 << 20);
    for (let i = 0; i < big.length; i += 4096) big[i] = (i >> 12) & 255;
    writeFileSync(path.join(root, 'models', 'big', 'model.safetensors'), big);
    const { startHubServer } = await import('../helpers/hub-server');
    const server = await startHubServer({ root });
    try {
      const src = new HubSource({ endpoint: server.url, repo: 'big', kind: 'model', retries: 1, retryDelayMs: 1 });
      server.fault({ match: 'model.safetensors', kind: 'truncate', afterBytes: 17 << 20, times: 2 });
      expect(same(await src.get('model.safetensors'), big)).toBe(true);
      expect(server.requests.map((r) => r.range)).toEqual([undefined, `bytes=${17 << 20}-`, `bytes=${34 << 20}-`]);
      server.reset();
      // Cuts after little progress each: one retry, then the error.
      server.fault({ match: 'model.safetensors', kind: 'truncate', afterBytes: 1 << 20, times: 3 });
      await expect(src.get('model.safetensors')).rejects.toThrow(/interrupted|truncated/);
      expect(server.requests).toHaveLength(2);
    } finally {
      await server.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
