/**
 * Streaming loads from the Hub (the local hub server, stories260K): the
 * headers are read with Range requests and checked against config.json
 * before the download starts; the download hands over one tensor at a time
 * and fills IdbCache (chunks of a tiny size here, so every multi-chunk path
 * runs) or NodeFolderCache on the way; a download cut off mid-file resumes
 * in a new HubSource from the persisted offset; a server that ignores Range
 * still works without reading whole files for a ranged read; entries stored
 * whole by an older IdbCache still load. Tensors are compared byte for byte
 * with the local-folder load (tests/gpu/hub-stream.test.ts compares logits).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { HubError, ModelFormatError } from '../../src/errors';
import { IdbCache, type FileCache, type KeyValueStore } from '../../src/hub/cache';
import { HubSource, type HubSourceOptions } from '../../src/hub/hub-source';
import { LocalFolderSource, NodeFolderCache } from '../../src/hub/node';
import type { FileProgress } from '../../src/hub/source';
import type { ModelConfig } from '../../src/model/config';
import { readConfig, streamWeights } from '../../src/model/load';
import { testHubRoot, useHubServer, type HubRequest } from '../helpers/hub-server';

const hub = useHubServer();
const modelDir = path.join(testHubRoot(), 'models', 'stories260K');
const file = readFileSync(path.join(modelDir, 'model.safetensors'));
const WEIGHTS = '/stories260K/resolve/main/model.safetensors';
const CHUNK = 64 << 10;
/** The largest tensor of stories260K (the embedding, 512 x 64 f32). */
const LARGEST = 131072;

let tmp: string;
let config: ModelConfig;
let local: Map<string, Buffer>;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), 'peft-hubstream-'));
  const src = new LocalFolderSource(modelDir);
  config = await readConfig(src);
  local = await tensors(src);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
beforeEach(() => hub.reset());

const source = (cache?: FileCache, opts: Partial<HubSourceOptions> = {}) =>
  new HubSource({ endpoint: hub.url, repo: 'stories260K', kind: 'model', cache, retryDelayMs: 1, stallTimeoutMs: 2000, ...opts });

async function tensors(
  src: HubSource | LocalFolderSource,
  opts: { stats?: { maxRead: number }; onProgress?: (p: FileProgress) => void; cfg?: ModelConfig } = {},
) {
  const out = new Map<string, Buffer>();
  for await (const w of streamWeights(src, opts.cfg ?? config, { stats: opts.stats, onProgress: opts.onProgress, warn: () => {} }))
    out.set(w.name, Buffer.from(w.bytes));
  return out;
}

/** The tensors' names in order and whether every one equals the local-folder load's bytes (toEqual on Buffers is slow). */
function same(got: Map<string, Buffer>): { names: string[]; equal: boolean } {
  return { names: [...got.keys()], equal: [...local].every(([k, v]) => got.get(k)?.equals(v)) && got.size === local.size };
}
const asLocal = () => ({ names: [...local.keys()], equal: true });

const weightRequests = () => hub.requests.filter((r) => r.path === WEIGHTS && r.method === 'GET');
const ranges = (rs: HubRequest[]) => rs.map((r) => [r.status, r.range]);

/** An in-memory KeyValueStore (IndexedDB's stand-in) recording the largest value written and read. */
function recordingStore(): KeyValueStore & { map: Map<string, unknown>; largest: { set: number; get: number } } {
  const map = new Map<string, unknown>();
  const largest = { set: 0, get: 0 };
  const size = (v: unknown) => (v instanceof Uint8Array ? v.byteLength : 0);
  return {
    map,
    largest,
    get: async (k) => {
      largest.get = Math.max(largest.get, size(map.get(k)));
      return map.get(k);
    },
    set: async (k, v) => {
      largest.set = Math.max(largest.set, size(v));
      map.set(k, v);
    },
    del: async (k) => void map.delete(k),
    keys: async () => [...map.keys()],
    clear: async () => map.clear(),
  };
}

describe('Hub loads stream one tensor at a time', () => {
  it('through IdbCache: one download after two header reads, chunks no larger than the chunk size, then a load with no request', async () => {
    const store = recordingStore();
    const cache = new IdbCache({ store, chunkSize: CHUNK });
    const stats = { maxRead: 0 };
    const events: FileProgress[] = [];
    expect(same(await tensors(source(cache), { stats, onProgress: (p) => p.file === 'model.safetensors' && events.push(p) }))).toEqual(asLocal());
    expect(stats.maxRead).toBeLessThanOrEqual(LARGEST);
    expect(store.largest.set).toBeLessThanOrEqual(CHUNK);
    expect(store.largest.get).toBeLessThanOrEqual(CHUNK);
    const n = 8 + Number(file.readBigUInt64LE(0));
    expect(ranges(weightRequests())).toEqual([
      [206, 'bytes=0-7'],
      [206, `bytes=0-${n - 1}`],
      [200, undefined],
    ]);
    expect(weightRequests().map((r) => r.bytes)).toEqual([8, n, file.length]);
    // Progress in file bytes, never backwards, ending whole.
    for (let i = 1; i < events.length; i++) expect(events[i].loaded).toBeGreaterThanOrEqual(events[i - 1].loaded);
    expect(events.at(-1)).toEqual({ file: 'model.safetensors', loaded: file.length, total: file.length });
    expect(Buffer.from((await cache.get(source().cacheKey('model.safetensors')))!).equals(file)).toBe(true);
    expect([...store.map.keys()].filter((k) => k.startsWith('part:'))).toEqual([]);

    hub.reset();
    store.largest.get = 0;
    const warm = { maxRead: 0 };
    const warmEvents: FileProgress[] = [];
    expect(same(await tensors(source(cache), { stats: warm, onProgress: (p) => p.file === 'model.safetensors' && warmEvents.push(p) }))).toEqual(asLocal());
    expect(hub.requests).toEqual([]);
    // Progress says the bytes came from the cache (the Model panel's "from the browser cache"); the download above said nothing of it.
    expect(warmEvents.length).toBeGreaterThan(0);
    expect(warmEvents.every((p) => p.cached === true)).toBe(true);
    expect(warmEvents.at(-1)).toEqual({ file: 'model.safetensors', loaded: file.length, total: file.length, cached: true });
    expect(events.some((p) => p.cached)).toBe(false);
    expect(warm.maxRead).toBeLessThanOrEqual(LARGEST);
    expect(store.largest.get).toBeLessThanOrEqual(CHUNK);
  });

  it('through NodeFolderCache: the same tensors cold and warm; the entry is the file, hashed', async () => {
    const dir = path.join(tmp, 'node');
    const cache = new NodeFolderCache(dir);
    expect(same(await tensors(source(cache)))).toEqual(asLocal());
    expect(weightRequests().map((r) => r.status)).toEqual([206, 206, 200]);
    expect(readdirSync(dir).filter((f) => /\.(part|lock)/.test(f))).toEqual([]);
    hub.reset();
    // A new cache object (a new process): the first range read hashes the file, then no request.
    expect(same(await tensors(source(new NodeFolderCache(dir))))).toEqual(asLocal());
    expect(hub.requests).toEqual([]);
    const bin = new NodeFolderCache(dir).paths(source().cacheKey('model.safetensors')).data;
    expect(readFileSync(bin).equals(file)).toBe(true);
  });

  it('without a cache the tensors come from the one streamed request', async () => {
    expect(same(await tensors(source()))).toEqual(asLocal());
    expect(ranges(weightRequests()).map((r) => r[0])).toEqual([206, 206, 200]);
  });

  it('a header that disagrees with config.json is refused after only the header bytes were fetched', async () => {
    const root = path.join(tmp, 'bad-hub');
    const repo = path.join(root, 'models', 'stories-bad');
    mkdirSync(repo, { recursive: true });
    copyFileSync(path.join(modelDir, 'model.safetensors'), path.join(repo, 'model.safetensors'));
    const cfg = JSON.parse(readFileSync(path.join(modelDir, 'config.json'), 'utf8'));
    writeFileSync(path.join(repo, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 6 }));
    const { startHubServer } = await import('../helpers/hub-server');
    const bad = await startHubServer({ root });
    try {
      const dir = path.join(tmp, 'bad-cache');
      const src = new HubSource({ endpoint: bad.url, repo: 'stories-bad', kind: 'model', cache: new NodeFolderCache(dir) });
      const err = await tensors(src, { cfg: await readConfig(src) }).then(
        () => null,
        (e: Error) => e,
      );
      expect(err).toBeInstanceOf(ModelFormatError);
      expect(err!.message).toMatch(/model\.layers\.5\./);
      const served = bad.requests.filter((r) => r.path.endsWith('model.safetensors')).reduce((a, r) => a + r.bytes, 0);
      const n = 8 + Number(file.readBigUInt64LE(0));
      console.log(`config mismatch: ${served} bytes of model.safetensors served (header ${n} B, file ${file.length} B)`);
      expect(served).toBe(8 + n);
      const p = new NodeFolderCache(dir).paths(src.cacheKey('model.safetensors'));
      expect([p.data, p.part].filter((f) => existsSync(f))).toEqual([]);
    } finally {
      await bad.close();
    }
  });
});

describe('an interrupted download resumes in a new HubSource', () => {
  const caches: [string, () => { make: () => FileCache; partial: () => number; stale: () => void }][] = [
    [
      'IdbCache',
      () => {
        const store = recordingStore();
        const key = source().cacheKey('model.safetensors');
        return {
          make: () => new IdbCache({ store, chunkSize: CHUNK }),
          partial: () => (store.map.get(`part:${key}`) as { written: number }).written,
          stale: () => ((store.map.get(`part:${key}`) as { etag: string }).etag = '"an older file"'),
        };
      },
    ],
    [
      'NodeFolderCache',
      () => {
        const dir = mkdtempSync(path.join(tmp, 'resume-'));
        const paths = new NodeFolderCache(dir).paths(source().cacheKey('model.safetensors'));
        return {
          make: () => new NodeFolderCache(dir),
          partial: () => statSync(paths.part).size,
          stale: () => writeFileSync(paths.partMeta, JSON.stringify({ ...JSON.parse(readFileSync(paths.partMeta, 'utf8')), etag: '"an older file"' })),
        };
      },
    ],
  ];
  for (const [name, setup] of caches) {
    it(`${name}: Range from the persisted offset, byte-identical at the end; a stale partial starts over`, async () => {
      const c = setup();
      hub.fault({ match: 'model.safetensors', kind: 'truncate', afterBytes: 300_000, whole: true });
      const err = await tensors(source(c.make(), { retries: 0 })).then(
        () => null,
        (e: Error) => e,
      );
      expect(err).toBeInstanceOf(HubError);
      expect(c.partial()).toBe(300_000);

      hub.reset();
      const cache = c.make();
      expect(same(await tensors(source(cache)))).toEqual(asLocal());
      expect(ranges(weightRequests()).at(-1)).toEqual([206, 'bytes=300000-']);
      expect(weightRequests().at(-1)!.bytes).toBe(file.length - 300_000);
      expect(Buffer.from((await cache.get(source().cacheKey('model.safetensors')))!).equals(file)).toBe(true);

      // A partial download of another version of the file is not spliced: the server answers If-Range whole.
      await cache.delete(source().cacheKey('model.safetensors'));
      hub.fault({ match: 'model.safetensors', kind: 'truncate', afterBytes: 200_000, whole: true });
      await expect(tensors(source(c.make(), { retries: 0 }))).rejects.toThrow(HubError);
      c.stale();
      hub.reset();
      expect(same(await tensors(source(c.make())))).toEqual(asLocal());
      expect(ranges(weightRequests()).at(-1)).toEqual([200, 'bytes=200000-']);
      expect(Buffer.from((await c.make().get(source().cacheKey('model.safetensors')))!).equals(file)).toBe(true);
    });
  }

  // A fetch body stream that errors drops the bytes it had received but not yet handed to a read (undici and Chromium
  // alike): bytes that arrived while the loader was busy (a cache write, a GPU upload) were lost to the resume. Here the
  // store takes 5 ms per write, as IndexedDB may, and the consumer 5 ms per range, as an upload may; the partial must
  // hold every byte the server sent before the cut.
  const slowStore = () => {
    const store = recordingStore();
    const set = store.set;
    store.set = async (k, v) => {
      await new Promise((r) => setTimeout(r, 5));
      return set(k, v);
    };
    return store;
  };
  for (const [what, chunkSize, cut] of [
    ['larger than one cache chunk', 16 << 10, 299_999],
    ['within the first cache chunk', 1 << 20, 300_001],
  ] as const) {
    it(`a cut ${what} keeps every byte sent before it, with a busy loader: a new HubSource asks for bytes=<cut>-`, async () => {
      const store = slowStore();
      const key = source().cacheKey('model.safetensors');
      hub.fault({ match: 'model.safetensors', kind: 'truncate', afterBytes: cut, whole: true });
      const wanted = Array.from({ length: 40 }, (_, i) => [i * 20_000, i * 20_000 + 1000] as const);
      const read = async () => {
        for await (const _ of source(new IdbCache({ store, chunkSize }), { retries: 0 }).readRanges('model.safetensors', wanted)) {
          void _;
          await new Promise((r) => setTimeout(r, 5));
        }
      };
      await expect(read()).rejects.toThrow(HubError);
      expect(weightRequests().at(-1)!.bytes).toBe(cut);
      expect((store.map.get(`part:${key}`) as { written: number }).written).toBe(cut);

      hub.reset();
      const cache = new IdbCache({ store, chunkSize });
      expect(same(await tensors(source(cache)))).toEqual(asLocal());
      expect(ranges(weightRequests()).at(-1)).toEqual([206, `bytes=${cut}-`]);
      expect(Buffer.from((await cache.get(key))!).equals(file)).toBe(true);
    });
  }

  it('inside one load, a cut resumes at the byte it reached (the streamed load, with a slow cache)', async () => {
    const store = slowStore();
    hub.fault({ match: 'model.safetensors', kind: 'truncate', afterBytes: 250_000, whole: true });
    const cache = new IdbCache({ store, chunkSize: 16 << 10 });
    expect(same(await tensors(source(cache)))).toEqual(asLocal());
    expect(ranges(weightRequests()).slice(2)).toEqual([
      [200, undefined],
      [206, 'bytes=250000-'],
    ]);
    expect(
      weightRequests()
        .slice(2)
        .map((r) => r.bytes),
    ).toEqual([250_000, file.length - 250_000]);
    expect(Buffer.from((await cache.get(source().cacheKey('model.safetensors')))!).equals(file)).toBe(true);
  });

  it('HubSource.cacheFile downloads into the cache without a load, resuming the same way', async () => {
    const dir = path.join(tmp, 'cachefile');
    hub.fault({ match: 'model.safetensors', kind: 'truncate', afterBytes: 123_457 });
    await expect(source(new NodeFolderCache(dir), { retries: 0 }).cacheFile('model.safetensors')).rejects.toThrow(HubError);
    hub.reset();
    expect(await source(new NodeFolderCache(dir)).cacheFile('model.safetensors')).toBe(true);
    expect(ranges(weightRequests())).toEqual([[206, 'bytes=123457-']]);
    expect(Buffer.from((await new NodeFolderCache(dir).get(source().cacheKey('model.safetensors')))!).equals(file)).toBe(true);
  });
});

describe('a server that ignores Range', () => {
  it('a ranged read stops reading the body after the bytes wanted; loads work, cached and resumed', async () => {
    hub.fault({ match: 'model.safetensors', kind: 'norange', times: 100 });
    // Counts the bytes taken out of each response body: the whole file is 1 MB.
    const pulled: number[] = [];
    const counting = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const res = await fetch(input, init);
      if (!res.body) return res;
      const i = pulled.push(0) - 1;
      const body = res.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(c, ctl) {
            pulled[i] += c.byteLength;
            ctl.enqueue(c);
          },
        }),
      );
      return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    }) as typeof fetch;
    const src = source(undefined, { fetch: counting });
    const head = await src.readRange('model.safetensors', 0, 8);
    expect([...head.bytes]).toEqual([...file.subarray(0, 8)]);
    expect(head.size).toBe(file.length);
    const mid = await src.readRange('model.safetensors', 500_000, 500_100);
    expect(Buffer.from(mid.bytes).equals(file.subarray(500_000, 500_100))).toBe(true);
    console.log(`norange: bytes pulled for a read of [0, 8): ${pulled[0]}, of [500000, 500100): ${pulled[1]} (file ${file.length})`);
    expect(pulled[0]).toBeLessThan(256 << 10);
    expect(pulled[1]).toBeLessThan(500_100 + (256 << 10));
    expect(weightRequests().map((r) => r.status)).toEqual([200, 200]);

    hub.reset();
    hub.fault([
      { match: 'model.safetensors', kind: 'truncate', afterBytes: 400_000, whole: true },
      { match: 'model.safetensors', kind: 'norange', times: 100 },
    ]);
    const store = recordingStore();
    const cache = new IdbCache({ store, chunkSize: CHUNK });
    const stats = { maxRead: 0 };
    expect(same(await tensors(source(cache), { stats }))).toEqual(asLocal());
    expect(ranges(weightRequests())).toEqual([
      [200, 'bytes=0-7'],
      [200, `bytes=0-${8 + Number(file.readBigUInt64LE(0)) - 1}`],
      [200, undefined],
      [200, 'bytes=400000-'],
    ]);
    expect(stats.maxRead).toBeLessThanOrEqual(LARGEST);
    expect(store.largest.set).toBeLessThanOrEqual(CHUNK);
    expect(Buffer.from((await cache.get(source().cacheKey('model.safetensors')))!).equals(file)).toBe(true);
  });
});

describe('IdbCache compatibility and failures', () => {
  it('entries stored whole by an older version load with no request, and are rewritten as chunks', async () => {
    const store = recordingStore();
    for (const f of ['config.json', 'model.safetensors']) {
      const key = source().cacheKey(f);
      const bytes = new Uint8Array(readFileSync(path.join(modelDir, f)));
      store.map.set(`data:${key}`, bytes);
      store.map.set(`meta:${key}`, { key, size: bytes.byteLength, storedAt: 1 });
    }
    const cache = new IdbCache({ store, chunkSize: CHUNK });
    const src = source(cache);
    expect((await readConfig(src)).numLayers).toBe(5);
    expect(same(await tensors(src))).toEqual(asLocal());
    expect(hub.requests).toEqual([]);
    const key = source().cacheKey('model.safetensors');
    expect(store.map.has(`data:${key}`)).toBe(false);
    expect(store.map.get(`meta:${key}`)).toMatchObject({ size: file.length, chunkSize: CHUNK });
    store.largest.get = 0;
    expect(same(await tensors(source(cache)))).toEqual(asLocal());
    expect(store.largest.get).toBeLessThanOrEqual(CHUNK);
  });

  it('a quota error while caching does not fail the load: it goes on uncached and leaves no partial entry', async () => {
    const store = recordingStore();
    const set = store.set;
    let chunks = 0;
    store.set = async (k, v) => {
      if (k.startsWith('chunk:') && ++chunks > 3) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
      return set(k, v);
    };
    const warned: string[] = [];
    const warn = console.warn;
    console.warn = (m: string) => warned.push(m);
    try {
      expect(same(await tensors(source(new IdbCache({ store, chunkSize: CHUNK }))))).toEqual(asLocal());
    } finally {
      console.warn = warn;
    }
    expect(warned.join('\n')).toMatch(/could not cache .*model\.safetensors: The quota has been exceeded\.; loading it without the cache/);
    expect([...store.map.keys()].filter((k) => k.includes('model.safetensors'))).toEqual([]);
    expect(existsSync(tmp)).toBe(true);
  });
});
