import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cacheKey, IdbCache, MemoryCache, type KeyValueStore } from '../../src/hub/cache';
import { NodeFolderCache } from '../../src/hub/node';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'peft-cache-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

const key = cacheKey('https://huggingface.co', 'org/model', 'main', 'model.safetensors');
const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);

describe('cacheKey', () => {
  it('is endpoint|repo|revision|path', () => {
    expect(key).toBe('https://huggingface.co|org/model|main|model.safetensors');
  });

  it("escapes '|' and '%' inside a part, so two different files never share a key", () => {
    const a = cacheKey('https://h', 'org/m', 'a|b', 'c');
    const b = cacheKey('https://h', 'org/m', 'a', 'b|c');
    expect(a).toBe('https://h|org/m|a%7Cb|c');
    expect(b).toBe('https://h|org/m|a|b%7Cc');
    expect(cacheKey('https://h', 'org/m', 'a%7Cb', 'c')).toBe('https://h|org/m|a%257Cb|c');
    expect(new Set([a, b, cacheKey('https://h', 'org/m', 'a%7Cb', 'c')]).size).toBe(3);
  });
});

describe('NodeFolderCache', () => {
  it('stores, lists, deletes and clears entries atomically', async () => {
    const dir = path.join(tmp, 'basic');
    const c = new NodeFolderCache(dir);
    expect(await c.get(key)).toBeUndefined();
    expect(await c.list()).toEqual([]);
    await c.put(key, bytes);
    expect(
      readdirSync(dir)
        .sort()
        .map((f) => path.extname(f)),
    ).toEqual(['.bin', '.json']); // no temporaries left
    expect([...(await c.get(key))!]).toEqual([...bytes]);
    expect(await c.has(key)).toBe(true);
    const meta = JSON.parse(
      readFileSync(
        path.join(
          dir,
          readdirSync(dir).find((f) => f.endsWith('.json'))!,
        ),
        'utf8',
      ),
    );
    expect(meta).toMatchObject({ key, size: 1000 });
    expect(meta.sha256).toMatch(/^[0-9a-f]{64}$/);
    await c.put('other', new Uint8Array(0));
    expect((await c.get('other'))!.byteLength).toBe(0);
    expect(await c.list()).toEqual(['other', key].sort());
    await c.delete(key);
    expect(await c.get(key)).toBeUndefined();
    expect(await c.list()).toEqual(['other']);
    writeFileSync(path.join(dir, 'user-file.txt'), 'keep me');
    await c.clear();
    expect(readdirSync(dir)).toEqual(['user-file.txt']);
  });

  it('a truncated entry is a miss and is deleted', async () => {
    const dir = path.join(tmp, 'trunc');
    const c = new NodeFolderCache(dir);
    await c.put(key, bytes);
    truncateSync(
      path.join(
        dir,
        readdirSync(dir).find((f) => f.endsWith('.bin'))!,
      ),
      10,
    );
    expect(await c.has(key)).toBe(false);
    expect(await c.get(key)).toBeUndefined();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('changed bytes of the same size: a miss with sha256 verification, not with size only', async () => {
    const dir = path.join(tmp, 'flip');
    const flip = () => {
      const bin = path.join(
        dir,
        readdirSync(dir).find((f) => f.endsWith('.bin'))!,
      );
      const b = readFileSync(bin);
      b[0] ^= 1;
      writeFileSync(bin, b);
    };
    const strict = new NodeFolderCache(dir);
    await strict.put(key, bytes);
    flip();
    expect(await strict.get(key)).toBeUndefined();
    const lax = new NodeFolderCache(dir, { verify: 'size' });
    await lax.put(key, bytes);
    flip();
    expect((await lax.get(key))![0]).toBe(bytes[0] ^ 1);
  });

  it('data without its meta (an interrupted write) or with damaged meta is a miss', async () => {
    const dir = path.join(tmp, 'meta');
    const c = new NodeFolderCache(dir);
    await c.put(key, bytes);
    const meta = path.join(
      dir,
      readdirSync(dir).find((f) => f.endsWith('.json'))!,
    );
    writeFileSync(meta, '{"key": "mangled');
    expect(await c.get(key)).toBeUndefined();
    expect(existsSync(meta)).toBe(false);
    await c.put(key, bytes);
    unlinkSync(
      path.join(
        dir,
        readdirSync(dir).find((f) => f.endsWith('.json'))!,
      ),
    );
    expect(await c.get(key)).toBeUndefined();
    expect(await c.list()).toEqual([]);
  });
});

describe('NodeFolderCache streaming writes and range reads', () => {
  it('a partial download survives the writer (a new cache object resumes it); commit renames it into place with its SHA-256', async () => {
    const dir = path.join(tmp, 'writer');
    const first = (await new NodeFolderCache(dir).writer(key))!;
    await first.begin(0, '"e1"', bytes.byteLength);
    await first.append(bytes.subarray(0, 400));
    await first.close();
    expect(
      readdirSync(dir)
        .map((f) => f.replace(/^[0-9a-f]{64}/, 'h'))
        .sort(),
    ).toEqual(['h.part', 'h.part.json']);
    const c = new NodeFolderCache(dir);
    expect(await c.has(key)).toBe(false);
    expect(await c.getRange(key, 0, 10)).toBeUndefined();
    const w = (await c.writer(key))!;
    expect([w.written, w.etag, w.size]).toEqual([400, '"e1"', 1000]);
    // While it is held, another writer of the same key (here: this process again) gets none.
    expect(await c.writer(key)).toBeUndefined();
    expect([...(await w.read(390, 400))]).toEqual([...bytes.subarray(390, 400)]);
    await w.begin(400, '"e1"', 1000);
    await w.append(bytes.subarray(400));
    await w.commit();
    expect(
      readdirSync(dir)
        .map((f) => f.replace(/^[0-9a-f]{64}/, 'h'))
        .sort(),
    ).toEqual(['h.bin', 'h.json']);
    expect([...(await c.get(key))!]).toEqual([...bytes]);
    const meta = JSON.parse(
      readFileSync(
        path.join(
          dir,
          readdirSync(dir).find((f) => f.endsWith('.json'))!,
        ),
        'utf8',
      ),
    );
    expect(meta.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect([...(await c.getRange(key, 995, 2000))!.bytes]).toEqual([...bytes.subarray(995)]);
    // A whole file put over a partial download replaces it.
    const partial = (await c.writer('other'))!;
    await partial.begin(0, null, 10);
    await partial.append(bytes.subarray(0, 5));
    await partial.close();
    await c.put('other', bytes.subarray(0, 10));
    expect(existsSync(c.paths('other').part)).toBe(false);
    expect([...(await c.get('other'))!]).toEqual([...bytes.subarray(0, 10)]);
  });

  it("a lock left by a process that is gone is taken over; a live process's is respected", async () => {
    const dir = path.join(tmp, 'lock');
    const c = new NodeFolderCache(dir);
    const lock = c.paths(key).lock;
    mkdirSync(dir, { recursive: true });
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    writeFileSync(lock, String(dead));
    const w = (await c.writer(key))!;
    expect(readFileSync(lock, 'utf8')).toBe(String(process.pid));
    await w.discard();
    expect(existsSync(lock)).toBe(false);
    writeFileSync(lock, String(process.ppid)); // alive
    expect(await c.writer(key)).toBeUndefined();
    await c.clear();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a range read hashes the file once per process (sha256), and a changed file is a miss', async () => {
    const dir = path.join(tmp, 'range-verify');
    const c = new NodeFolderCache(dir);
    await c.put(key, bytes);
    const bin = c.paths(key).data;
    const b = readFileSync(bin);
    b[900] ^= 1;
    writeFileSync(bin, b);
    expect(await new NodeFolderCache(dir, { verify: 'size' }).getRange(key, 0, 10)).toBeDefined();
    expect(await c.getRange(key, 0, 10)).toBeUndefined();
    expect(existsSync(bin)).toBe(false);
  });
});

/** An in-memory stand-in for idb-keyval that records the order of writes and the largest value written and read. */
function fakeStore(): KeyValueStore & { map: Map<string, unknown>; log: string[]; largest: { set: number; get: number } } {
  const map = new Map<string, unknown>();
  const log: string[] = [];
  const largest = { set: 0, get: 0 };
  const size = (v: unknown) => (v instanceof Uint8Array ? v.byteLength : 0);
  return {
    map,
    log,
    largest,
    get: async (k) => {
      largest.get = Math.max(largest.get, size(map.get(k)));
      return map.get(k);
    },
    set: async (k, v) => {
      log.push(`set ${k}`);
      largest.set = Math.max(largest.set, size(v));
      map.set(k, v);
    },
    del: async (k) => {
      map.delete(k);
    },
    keys: async () => [...map.keys()],
    clear: async () => map.clear(),
  };
}

describe('IdbCache (with an injected key-value store)', () => {
  it('stores a file in chunks, the meta record last; a range read touches only its chunks', async () => {
    const store = fakeStore();
    const c = new IdbCache({ store, chunkSize: 300 });
    await c.put(key, bytes);
    expect(store.log.filter((l) => !l.startsWith('set part:'))).toEqual([0, 1, 2, 3].map((i) => `set chunk:${key}|${i}`).concat(`set meta:${key}`));
    expect(store.largest.set).toBe(300);
    expect((store.map.get(`chunk:${key}|3`) as Uint8Array).byteLength).toBe(100);
    expect(store.map.has(`part:${key}`)).toBe(false);
    expect([...(await c.get(key))!]).toEqual([...bytes]);
    expect(await c.has(key)).toBe(true);
    expect(await c.list()).toEqual([key]);
    const gets: string[] = [];
    const get = store.get;
    store.get = async (k) => (gets.push(k), get(k));
    const r = (await c.getRange(key, 550, 620))!;
    expect(r.size).toBe(1000);
    expect([...r.bytes]).toEqual([...bytes.subarray(550, 620)]);
    expect(gets).toEqual([`meta:${key}`, `chunk:${key}|1`, `chunk:${key}|2`]);
    expect([...(await c.getRange(key, 990, 5000))!.bytes]).toEqual([...bytes.subarray(990)]);
  });

  it('stores exactly the bytes of a view, not its whole buffer', async () => {
    const store = fakeStore();
    const c = new IdbCache({ store });
    const big = new Uint8Array(4096);
    await c.put(key, big.subarray(10, 20));
    expect((store.map.get(`chunk:${key}|0`) as Uint8Array).buffer.byteLength).toBe(10);
  });

  it('chunks without meta (an interrupted write), or a missing or short chunk, is a miss and the entry is deleted', async () => {
    const store = fakeStore();
    const c = new IdbCache({ store, chunkSize: 256 });
    await c.put(key, bytes);
    store.map.delete(`meta:${key}`); // interrupted before the meta record
    expect(await c.get(key)).toBeUndefined();
    expect(await c.has(key)).toBe(false);
    await c.put(key, bytes);
    store.map.set(`chunk:${key}|2`, bytes.subarray(0, 100));
    expect(await c.getRange(key, 0, 10)).toBeDefined(); // chunk 0 is fine
    expect(await c.getRange(key, 500, 600)).toBeUndefined();
    expect(store.map.size).toBe(0); // the damaged entry was deleted, every chunk of it
    await c.put(key, bytes);
    store.map.delete(`chunk:${key}|1`);
    expect(await c.get(key)).toBeUndefined();
    expect(store.map.size).toBe(0);
  });

  it('verifies SHA-256 per chunk when asked', async () => {
    const store = fakeStore();
    const c = new IdbCache({ store, verify: 'sha256', chunkSize: 400 });
    await c.put(key, bytes);
    const chunk = (store.map.get(`chunk:${key}|1`) as Uint8Array).slice();
    chunk[3] ^= 1;
    store.map.set(`chunk:${key}|1`, chunk);
    expect(await c.getRange(key, 0, 400)).toBeDefined(); // the range does not read chunk 1
    expect(await c.getRange(key, 700, 800)).toBeUndefined();
    await c.put(key, bytes);
    await c.clear();
    expect(await c.list()).toEqual([]);
  });

  it('entries stored whole by an older version still read; the first range read rewrites them as chunks', async () => {
    const store = fakeStore();
    store.map.set(`data:${key}`, bytes);
    store.map.set(`meta:${key}`, { key, size: bytes.byteLength, storedAt: 1 });
    const c = new IdbCache({ store, chunkSize: 256 });
    expect([...(await c.get(key))!]).toEqual([...bytes]);
    expect(store.map.has(`data:${key}`)).toBe(true);
    expect([...(await c.getRange(key, 200, 300))!.bytes]).toEqual([...bytes.subarray(200, 300)]);
    expect(store.map.has(`data:${key}`)).toBe(false);
    expect(store.map.get(`meta:${key}`)).toMatchObject({ size: 1000, chunkSize: 256 });
    expect([...(await c.get(key))!]).toEqual([...bytes]);
    // A whole entry of the wrong size is a miss, as before.
    store.map.set(`data:other`, bytes.subarray(0, 10));
    store.map.set(`meta:other`, { key: 'other', size: 11, storedAt: 1 });
    expect(await c.getRange('other', 0, 5)).toBeUndefined();
    expect(store.map.has('data:other')).toBe(false);
  });

  it('a writer keeps a partial record; a new cache on the same store resumes it and commits the whole file', async () => {
    const store = fakeStore();
    const first = await new IdbCache({ store, chunkSize: 128 }).writer(key);
    expect(first.written).toBe(0);
    await first.begin(0, '"v1"', bytes.byteLength);
    await first.append(bytes.subarray(0, 300));
    // A crash here keeps the two full chunks (256 bytes); closing keeps the short third one too.
    expect(store.map.get(`part:${key}`)).toMatchObject({ written: 256, etag: '"v1"', size: 1000, chunkSize: 128 });
    await first.close();
    expect(store.map.get(`part:${key}`)).toMatchObject({ written: 300 });
    const c = new IdbCache({ store, chunkSize: 512 });
    expect(await c.has(key)).toBe(false);
    const w = await c.writer(key);
    expect([w.written, w.etag, w.size]).toEqual([300, '"v1"', 1000]);
    expect([...(await w.read(100, 300))]).toEqual([...bytes.subarray(100, 300)]);
    await w.begin(300, '"v1"', 1000);
    for (let at = 300; at < 1000; at += 70) await w.append(bytes.subarray(at, Math.min(1000, at + 70)));
    await w.commit();
    expect([...(await c.get(key))!]).toEqual([...bytes]);
    expect(store.map.get(`meta:${key}`)).toMatchObject({ chunkSize: 128 }); // the partial's chunk size
    expect([...store.map.keys()].filter((k) => k.startsWith('part:'))).toEqual([]);
    // Starting over (the file changed) drops the old chunks.
    const again = await c.writer(key);
    await again.begin(0, '"v2"', 10);
    await again.append(bytes.subarray(0, 10));
    await again.commit();
    expect([...store.map.keys()].filter((k) => k.startsWith('chunk:'))).toEqual([`chunk:${key}|0`]);
    const gone = await c.writer('k2');
    await gone.begin(0, null, 700);
    await gone.append(bytes.subarray(0, 700 - 1));
    await gone.close();
    await (await c.writer('k2')).discard();
    expect([...store.map.keys()].some((k) => k.includes('k2'))).toBe(false);
  });
});

describe('MemoryCache', () => {
  it('keeps copies', async () => {
    const c = new MemoryCache();
    const b = new Uint8Array([1, 2]);
    await c.put('k', b);
    b[0] = 9;
    expect([...(await c.get('k'))!]).toEqual([1, 2]);
    expect(await c.list()).toEqual(['k']);
    await c.delete('k');
    expect(await c.get('k')).toBeUndefined();
  });
});
