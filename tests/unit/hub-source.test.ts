import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, HubError } from '../../src/errors';
import { HubSource, isNotFound, MemoryCache, type FileProgress } from '../../src/hub/index';
import { NodeFolderCache } from '../../src/hub/node';
import { testHubRoot, useHubServer } from '../helpers/hub-server';

const hub = useHubServer();
const modelDir = path.join(testHubRoot(), 'models', 'stories260K');
let tmp: string;

beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'peft-hub-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => hub.reset());

function catchError(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e) => e,
  );
}

describe('HubSource URLs and validation', () => {
  it('builds resolve URLs for models and datasets, encoding the revision as one segment', () => {
    const m = new HubSource({ repo: 'HuggingFaceTB/SmolLM2-135M', kind: 'model' });
    expect(m.url('config.json')).toBe('https://huggingface.co/HuggingFaceTB/SmolLM2-135M/resolve/main/config.json');
    const d = new HubSource({ endpoint: 'http://127.0.0.1:9/', repo: 'ybisk/piqa', revision: 'refs/convert/parquet', kind: 'dataset' });
    expect(d.url('plain_text/validation/0000.parquet')).toBe(
      'http://127.0.0.1:9/datasets/ybisk/piqa/resolve/refs%2Fconvert%2Fparquet/plain_text/validation/0000.parquet',
    );
    expect(d.url('a b/c#d?.json')).toBe('http://127.0.0.1:9/datasets/ybisk/piqa/resolve/refs%2Fconvert%2Fparquet/a%20b/c%23d%3F.json');
    const prefixed = new HubSource({ endpoint: 'https://mirror.example/hf/', repo: 'gpt2', kind: 'model' });
    expect(prefixed.url('config.json')).toBe('https://mirror.example/hf/gpt2/resolve/main/config.json');
    expect(d.id).toBe('hub:http://127.0.0.1:9/datasets/ybisk/piqa@refs/convert/parquet');
  });

  it('refuses bad repo ids and paths with ConfigError', () => {
    for (const repo of ['', '../etc', 'a/../b', 'https://huggingface.co/gpt2', 'a/b/c', '/abs', 'a--b', '-a', 'a b', 'x'.repeat(97)]) {
      expect(() => new HubSource({ repo, kind: 'model' }), repo).toThrow(ConfigError);
    }
    const s = new HubSource({ repo: 'gpt2', kind: 'model' });
    for (const p of ['', '../config.json', 'a/../../b', '/etc/passwd', 'a//b', './a', 'https://evil.example/x', 'a\\b', 'a\u0000b']) {
      expect(() => s.url(p), p).toThrow(ConfigError);
    }
    expect(() => new HubSource({ repo: 'gpt2', kind: 'model', revision: '../x' })).toThrow(ConfigError);
    expect(() => new HubSource({ repo: 'gpt2', kind: 'bogus' as 'model' })).toThrow(ConfigError);
  });

  it('refuses a bad endpoint with HubError', () => {
    for (const endpoint of ['not a url', 'ftp://example.com', 'file:///tmp', 'https://u:p@huggingface.co', 'https://huggingface.co/?x=1']) {
      expect(() => new HubSource({ endpoint, repo: 'gpt2', kind: 'model' }), endpoint).toThrow(HubError);
    }
  });
});

describe('HubSource against the local hub server', () => {
  it('downloads a file with progress', async () => {
    const s = new HubSource({ endpoint: hub.url, repo: 'stories260K', kind: 'model' });
    const events: FileProgress[] = [];
    const bytes = await s.get('model.safetensors', (p) => events.push(p));
    const want = readFileSync(path.join(modelDir, 'model.safetensors'));
    expect(Buffer.from(bytes).equals(want)).toBe(true);
    expect(events.length).toBeGreaterThan(1);
    for (let i = 1; i < events.length; i++) expect(events[i].loaded).toBeGreaterThan(events[i - 1].loaded);
    expect(events.at(-1)).toEqual({ file: 'model.safetensors', loaded: want.length, total: want.length });
    expect(hub.count('/stories260K/resolve/main/model.safetensors')).toBe(1);
  });

  it('reads nested paths, at any revision', async () => {
    const m = new HubSource({ endpoint: hub.url, repo: 'stories260K', revision: 'refs/pr/1', kind: 'model' });
    expect((await m.get('original/tok512.bin')).byteLength).toBe(6227);
    expect(hub.requests.at(-1)!.path).toBe('/stories260K/resolve/refs%2Fpr%2F1/original/tok512.bin');
  });

  it('reads dataset repos at an encoded revision', async () => {
    const d = new HubSource({ endpoint: hub.url, repo: 'ybisk/piqa', revision: 'refs/convert/parquet', kind: 'dataset' });
    const pq = await d.get('plain_text/validation/0000.parquet');
    expect(new TextDecoder().decode(pq.subarray(0, 4))).toBe('PAR1');
    expect(hub.requests.at(-1)!.path).toBe('/datasets/ybisk/piqa/resolve/refs%2Fconvert%2Fparquet/plain_text/validation/0000.parquet');
  });

  it('a second read is a cache hit and makes no request', async () => {
    const cache = new NodeFolderCache(path.join(tmp, 'hit'));
    const s = new HubSource({ endpoint: hub.url, repo: 'stories260K', kind: 'model', cache });
    const first = await s.get('config.json');
    expect(hub.count()).toBe(1);
    const events: FileProgress[] = [];
    const second = await s.get('config.json', (p) => events.push(p));
    expect(hub.count()).toBe(1);
    expect(Buffer.from(second).equals(Buffer.from(first))).toBe(true);
    expect(events).toEqual([{ file: 'config.json', loaded: first.length, total: first.length, cached: true }]);
    expect(await s.has('config.json')).toBe(true);
    expect(hub.count()).toBe(1);
    // Another source with the same cache but another revision misses.
    const other = new HubSource({ endpoint: hub.url, repo: 'stories260K', revision: 'v2', kind: 'model', cache });
    await other.get('config.json');
    expect(hub.count()).toBe(2);
    expect(await cache.list()).toEqual([`${hub.url}|stories260K|main|config.json`, `${hub.url}|stories260K|v2|config.json`].sort());
  });

  it('a corrupted cache entry is ignored, refetched and repaired', async () => {
    const dir = path.join(tmp, 'corrupt');
    const cache = new NodeFolderCache(dir);
    const s = new HubSource({ endpoint: hub.url, repo: 'stories260K', kind: 'model', cache });
    const want = await s.get('tokenizer.json');
    const bin = readdirSync(dir).find((f) => f.endsWith('.bin'))!;

    truncateSync(path.join(dir, bin), 100); // truncated
    expect(Buffer.from(await s.get('tokenizer.json')).equals(Buffer.from(want))).toBe(true);
    expect(hub.count('tokenizer.json')).toBe(2);

    const flipped = readFileSync(path.join(dir, bin));
    flipped[10] ^= 0xff; // same size, different bytes
    writeFileSync(path.join(dir, bin), flipped);
    expect(Buffer.from(await s.get('tokenizer.json')).equals(Buffer.from(want))).toBe(true);
    expect(hub.count('tokenizer.json')).toBe(3);

    await s.get('tokenizer.json');
    expect(hub.count('tokenizer.json')).toBe(3); // repaired: a hit again
  });

  it('404 is a HubError naming the repo, the file and the URL', async () => {
    const s = new HubSource({ endpoint: hub.url, repo: 'stories260K', kind: 'model', cache: new MemoryCache() });
    const err = await catchError(s.get('missing.json'));
    expect(err).toBeInstanceOf(HubError);
    const h = err as HubError;
    expect(h.status).toBe(404);
    expect(h.url).toBe(`${hub.url}/stories260K/resolve/main/missing.json`);
    expect(h.message).toContain('stories260K');
    expect(h.message).toContain('missing.json');
    expect(h.message).toContain(h.url);
    expect(isNotFound(err)).toBe(true);
    expect(await s.has('missing.json')).toBe(false);
    expect(await s.has('config.json')).toBe(true);
    expect(hub.count((r) => r.method === 'HEAD')).toBe(2);
    const unknownRepo = new HubSource({ endpoint: hub.url, repo: 'nobody/nothing', kind: 'dataset' });
    expect(isNotFound(await catchError(unknownRepo.get('README.md')))).toBe(true);
  });

  it('a network error is a HubError', async () => {
    // A port that was just closed refuses connections.
    const { startHubServer } = await import('../helpers/hub-server');
    const dead = await startHubServer();
    await dead.close();
    const s = new HubSource({ endpoint: dead.url, repo: 'stories260K', kind: 'model', retryDelayMs: 1 });
    const err = await catchError(s.get('config.json'));
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toMatch(/Network error fetching config\.json .*stories260K/);
    await expect(s.has('config.json')).rejects.toBeInstanceOf(HubError);
  });
});

describe('HubSource with an injected fetch', () => {
  it('a body shorter than Content-Length is a HubError and is not cached', async () => {
    const cache = new MemoryCache();
    const fetchFn = (async () => new Response(new Uint8Array(50), { status: 200, headers: { 'content-length': '100' } })) as unknown as typeof fetch;
    const s = new HubSource({ repo: 'gpt2', kind: 'model', cache, fetch: fetchFn, retries: 0 });
    const err = await catchError(s.get('model.safetensors'));
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toContain('truncated: 50 of 100 bytes');
    expect(await cache.list()).toEqual([]);
  });

  it('a stream that fails midway is a HubError', async () => {
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array(10));
        c.error(new Error('socket hang up'));
      },
    });
    const fetchFn = (async () => new Response(body, { status: 200 })) as unknown as typeof fetch;
    const s = new HubSource({ repo: 'gpt2', kind: 'model', fetch: fetchFn, retries: 0 });
    const err = await catchError(s.get('model.safetensors'));
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toContain('interrupted (socket hang up)');
  });

  it('sends the token; explains private/gated repos and other statuses', async () => {
    const seen: Headers[] = [];
    let status = 401;
    let code: string | null = 'RepoNotFound';
    const fetchFn = (async (_url: string, init: RequestInit) => {
      seen.push(new Headers(init.headers));
      return new Response('no', { status, headers: code ? { 'x-error-code': code } : {} });
    }) as unknown as typeof fetch;
    const s = new HubSource({ repo: 'meta-llama/Llama-3.2-1B', kind: 'model', fetch: fetchFn, token: 'hf_test', retries: 0 });
    let err = (await catchError(s.get('config.json'))) as HubError;
    expect(seen[0].get('authorization')).toBe('Bearer hf_test');
    expect(err.status).toBe(401);
    expect(err.message).toMatch(/not found or is private/);
    await expect(s.has('config.json')).rejects.toBeInstanceOf(HubError);
    code = 'GatedRepo';
    status = 403;
    err = (await catchError(s.get('config.json'))) as HubError;
    expect(err.message).toMatch(/gated/);
    code = null;
    status = 500;
    err = (await catchError(s.get('config.json'))) as HubError;
    expect(err.status).toBe(500);
    expect(err.message).toContain('HTTP 500');
  });

  it('a cache that fails to store does not fail the download', async () => {
    const cache = new MemoryCache();
    cache.put = async () => {
      throw new Error('QuotaExceededError');
    };
    const fetchFn = (async () => new Response(new Uint8Array([1, 2, 3]))) as unknown as typeof fetch;
    const s = new HubSource({ repo: 'gpt2', kind: 'model', cache, fetch: fetchFn });
    const warn = console.warn;
    console.warn = () => {};
    try {
      expect([...(await s.get('x.bin'))]).toEqual([1, 2, 3]);
    } finally {
      console.warn = warn;
    }
  });
});
