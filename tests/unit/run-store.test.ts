/**
 * IdbRunStore over an in-memory key-value store: checkpoints are complete or
 * absent (meta written last, sizes checked), quota failures name the bytes,
 * runs are listed, sized and deleted whole.
 */
import { describe, expect, test } from 'vitest';
import type { KeyValueStore } from '../../src/hub/cache';
import { IdbRunStore, LOG_CHUNK, RunIndex, StorageQuotaError, newRunId, type RunRecord } from '../../src/run/idb-store';

class MapKv implements KeyValueStore {
  map = new Map<string, unknown>();
  /** Fail the n-th set from now (simulates a tab closed or a full disk mid-write). */
  failAt: { n: number; err: Error } | null = null;
  async get(k: string) {
    return this.map.get(k);
  }
  async set(k: string, v: unknown) {
    if (this.failAt && this.failAt.n-- === 0) {
      const err = this.failAt.err;
      this.failAt = null;
      throw err;
    }
    this.map.set(k, v);
  }
  async del(k: string) {
    this.map.delete(k);
  }
  async keys() {
    return [...this.map.keys()];
  }
  async clear() {
    this.map.clear();
  }
}

const files = () => ({ 'a.bin': new Uint8Array([1, 2, 3]), 'trainer_state.json': '{"global_step":2}' });

describe('IdbRunStore', () => {
  test('a checkpoint reads back as written; its meta is the last key written', async () => {
    const kv = new MapKv();
    const s = new IdbRunStore('r1', kv);
    await s.writeCheckpoint('checkpoint-2', files());
    expect([...kv.map.keys()].at(-1)).toBe('ckptmeta:r1/checkpoint-2');
    const back = await s.readCheckpoint('checkpoint-2');
    expect(back?.['a.bin']).toEqual(new Uint8Array([1, 2, 3]));
    expect(new TextDecoder().decode(back!['trainer_state.json'])).toBe('{"global_step":2}');
    expect(await s.listCheckpoints()).toEqual(['checkpoint-2']);
  });

  test('an interrupted write leaves no checkpoint, and the older one stays valid', async () => {
    const kv = new MapKv();
    const s = new IdbRunStore('r1', kv);
    await s.writeCheckpoint('checkpoint-2', files());
    kv.failAt = { n: 1, err: new Error('tab closed') };
    await expect(s.writeCheckpoint('checkpoint-4', files())).rejects.toThrow('tab closed');
    expect(await s.readCheckpoint('checkpoint-4')).toBeNull();
    expect(await s.listCheckpoints()).toEqual(['checkpoint-2']);
    expect(await s.latestCheckpoint()).toBe('checkpoint-2');
    // The next write sweeps the orphaned file.
    await s.writeCheckpoint('checkpoint-6', files());
    expect([...kv.map.keys()].filter((k) => k.startsWith('ckpt:r1/checkpoint-4'))).toEqual([]);
  });

  test('a damaged file (size differs from the meta) invalidates the checkpoint', async () => {
    const kv = new MapKv();
    const s = new IdbRunStore('r1', kv);
    await s.writeCheckpoint('checkpoint-2', files());
    kv.map.set('ckpt:r1/checkpoint-2/a.bin', new Uint8Array([1, 2]));
    expect(await s.readCheckpoint('checkpoint-2')).toBeNull();
  });

  test('rewriting a step drops the old meta before touching its files', async () => {
    const kv = new MapKv();
    const s = new IdbRunStore('r1', kv);
    await s.writeCheckpoint('checkpoint-2', files());
    kv.failAt = { n: 0, err: new Error('crash') };
    await expect(s.writeCheckpoint('checkpoint-2', { 'a.bin': new Uint8Array([9, 9, 9, 9]) })).rejects.toThrow('crash');
    expect(await s.readCheckpoint('checkpoint-2')).toBeNull();
  });

  test('save_total_limit keeps the newest checkpoints', async () => {
    const s = new IdbRunStore('r1', new MapKv(), 2);
    for (const step of [1, 2, 10, 3]) await s.writeCheckpoint(`checkpoint-${step}`, files());
    expect((await s.listCheckpoints()).sort()).toEqual(['checkpoint-10', 'checkpoint-3']);
  });

  test('a quota failure says how many bytes were needed', async () => {
    const kv = new MapKv();
    const s = new IdbRunStore('r1', kv);
    const quota = Object.assign(new Error('The quota has been exceeded.'), { name: 'QuotaExceededError' });
    kv.failAt = { n: 0, err: quota };
    const big = new Uint8Array(3 * 2 ** 20);
    const err = await s.writeFile('adapter_model.safetensors', big).catch((e) => e);
    expect(err).toBeInstanceOf(StorageQuotaError);
    expect(err.neededBytes).toBe(big.byteLength);
    expect(err.message).toMatch(/needs 3\.0 MiB.*Delete old runs/);
  });

  test('files and the log round-trip; a view stores only its own bytes', async () => {
    const kv = new MapKv();
    const s = new IdbRunStore('r1', kv);
    const buf = new Uint8Array([0, 1, 2, 3, 4, 5]);
    await s.writeFile('x.bin', buf.subarray(2, 4));
    expect(((await s.readFile('x.bin')) as Uint8Array).buffer.byteLength).toBe(2);
    await s.writeFile('m.json', '{}');
    expect(await s.readFile('m.json')).toBe('{}');
    expect((await s.listFiles()).sort()).toEqual(['m.json', 'x.bin']);
    await s.appendLog('a');
    await new IdbRunStore('r1', kv).appendLog('b');
    expect(await s.readLog()).toEqual(['a', 'b']);
  });

  test('the log is appended per chunk: a step writes at most LOG_CHUNK lines, not the whole log; writeLog replaces it', async () => {
    const kv = new MapKv();
    let written = 0,
      largest = 0;
    const set = kv.set.bind(kv);
    kv.set = async (k: string, v: unknown) => {
      if (k.startsWith('log:')) {
        const n = (v as string[]).length;
        written += n;
        largest = Math.max(largest, n);
      }
      return set(k, v);
    };
    const s = new IdbRunStore('r1', kv);
    const line = (i: number) => JSON.stringify({ current_steps: i, loss: 1 / i });
    for (let i = 1; i <= 1000; i++) await s.appendLog(line(i));
    expect(largest).toBe(LOG_CHUNK);
    // Rewriting the whole log per step would write 1000·1001/2 = 500,500 lines.
    expect(written).toBeLessThan(1000 * (LOG_CHUNK / 2 + 1));
    expect(await s.readLog()).toEqual(Array.from({ length: 1000 }, (_, i) => line(i + 1)));
    expect((await kv.keys()).filter((k) => k.startsWith('log:r1/'))).toHaveLength(Math.ceil(1000 / LOG_CHUNK));
    // Resume cuts the log back to the checkpoint's history; appends continue after it.
    await s.writeLog([line(1), line(2)]);
    await s.appendLog(line(3));
    expect(await new IdbRunStore('r1', kv).readLog()).toEqual([line(1), line(2), line(3)]);
    // A log stored whole by an older version is read, then moved into chunks on the next append.
    await kv.set('log:r2', ['x', 'y']);
    const old = new IdbRunStore('r2', kv);
    expect(await old.readLog()).toEqual(['x', 'y']);
    await old.appendLog('z');
    expect(await kv.get('log:r2')).toBeUndefined();
    expect(await old.readLog()).toEqual(['x', 'y', 'z']);
  });

  test('run ids are checked', () => {
    expect(() => new IdbRunStore('../x', new MapKv())).toThrow(/letters, digits/);
    expect(newRunId(Date.UTC(2025, 0, 2, 3, 4, 5))).toMatch(/^20250102-030405-[a-z0-9]{4}$/);
  });
});

describe('RunIndex', () => {
  const record = (id: string, createdAt: number): RunRecord => ({
    id,
    name: id,
    createdAt,
    updatedAt: createdAt,
    status: 'done',
    config: {},
    step: 1,
    totalSteps: 1,
    trainableParams: 1,
    numParams: 2,
  });

  test('lists newest first, sizes and deletes a run with everything it owns', async () => {
    const kv = new MapKv();
    const idx = new RunIndex(kv);
    await idx.put(record('r1', 1));
    await idx.put(record('r10', 2));
    await idx.store('r1').writeCheckpoint('checkpoint-1', files());
    await idx.store('r10').writeFile('f', new Uint8Array(5));
    expect((await idx.list()).map((r) => r.id)).toEqual(['r10', 'r1']);
    const sizes = await idx.sizes();
    expect(sizes.get('r10')).toBe(5);
    expect(sizes.get('r1')).toBe(3 + 17);
    await idx.delete('r1');
    expect((await idx.list()).map((r) => r.id)).toEqual(['r10']);
    expect([...kv.map.keys()].some((k) => k.includes(':r1/') || k === 'run:r1')).toBe(false);
    expect(await idx.store('r10').readFile('f')).toEqual(new Uint8Array(5));
    expect((await idx.update('r10', { status: 'failed' })).status).toBe('failed');
  });
});
