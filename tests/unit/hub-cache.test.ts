import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
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

/** An in-memory stand-in for idb-keyval that records the order of writes. */
function fakeStore(): KeyValueStore & { map: Map<string, unknown>; log: string[] } {
  const map = new Map<string, unknown>();
  const log: string[] = [];
  return {
    map,
    log,
    get: async (k) => map.get(k),
    set: async (k, v) => {
      log.push(`set ${k}`);
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
  it('writes the data first and the meta record last', async () => {
    const store = fakeStore();
    const c = new IdbCache({ store });
    await c.put(key, bytes);
    expect(store.log).toEqual([`set data:${key}`, `set meta:${key}`]);
    expect([...(await c.get(key))!]).toEqual([...bytes]);
    expect(await c.has(key)).toBe(true);
    expect(await c.list()).toEqual([key]);
  });

  it('stores exactly the bytes of a view, not its whole buffer', async () => {
    const store = fakeStore();
    const c = new IdbCache({ store });
    const big = new Uint8Array(4096);
    await c.put(key, big.subarray(10, 20));
    expect((store.map.get(`data:${key}`) as Uint8Array).buffer.byteLength).toBe(10);
  });

  it('data without meta, or of the wrong size, is a miss', async () => {
    const store = fakeStore();
    const c = new IdbCache({ store });
    store.map.set(`data:${key}`, bytes); // interrupted before the meta record
    expect(await c.get(key)).toBeUndefined();
    expect(await c.has(key)).toBe(false);
    await c.put(key, bytes);
    store.map.set(`data:${key}`, bytes.subarray(0, 500));
    expect(await c.get(key)).toBeUndefined();
    expect(store.map.size).toBe(0); // the damaged entry was deleted
  });

  it('verifies SHA-256 when asked', async () => {
    const store = fakeStore();
    const c = new IdbCache({ store, verify: 'sha256' });
    await c.put(key, bytes);
    const changed = bytes.slice();
    changed[3] ^= 1;
    store.map.set(`data:${key}`, changed);
    expect(await c.get(key)).toBeUndefined();
    await c.put(key, bytes);
    await c.clear();
    expect(await c.list()).toEqual([]);
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
