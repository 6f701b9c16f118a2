/**
 * A model loaded from the Hub (the local hub server) through IdbCache (an
 * in-memory KeyValueStore standing in for IndexedDB, 64 KiB chunks) and
 * through NodeFolderCache, cold (streamed download) and warm (range reads
 * from the cache), gives the local-folder load's logits, bit for bit; no
 * read is larger than the largest tensor and no stored value larger than a
 * chunk. tests/unit/hub-stream.test.ts covers resumes, faults and refusals.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Engine } from '../../src/engine/engine';
import { IdbCache, type FileCache, type KeyValueStore } from '../../src/hub/cache';
import { HubSource } from '../../src/hub/hub-source';
import { LocalFolderSource, NodeFolderCache } from '../../src/hub/node';
import type { FileSource } from '../../src/hub/source';
import { modelFromStream, readConfig, streamWeights } from '../../src/model/load';
import { gpuEngine } from '../helpers/gpu';
import { testHubRoot, useHubServer } from '../helpers/hub-server';

const hub = useHubServer();
const modelDir = path.join(testHubRoot(), 'models', 'stories260K');
const CHUNK = 64 << 10;
const LARGEST = 131072; // the embedding, 512 x 64 f32
const ids = Int32Array.from([1, 403, 407, 261, 378, 410, 262, 296, 270, 1, 52, 300]);

let e: Engine;
let want: Float32Array;

/** Loads through streamWeights (recording the largest read) and returns the logits of `ids`. */
async function logits(source: FileSource): Promise<{ y: Float32Array; maxRead: number }> {
  const config = await readConfig(source);
  const stats = { maxRead: 0 };
  const model = await modelFromStream(e, config, streamWeights(source, config, { stats, warn: () => {} }));
  try {
    return { y: await e.read(model.forward(ids, 1)), maxRead: stats.maxRead };
  } finally {
    model.dispose();
  }
}

function store(): KeyValueStore & { largest: number } {
  const map = new Map<string, unknown>();
  const s = {
    largest: 0,
    get: async (k: string) => {
      const v = map.get(k);
      if (v instanceof Uint8Array) s.largest = Math.max(s.largest, v.byteLength);
      return v;
    },
    set: async (k: string, v: unknown) => {
      if (v instanceof Uint8Array) s.largest = Math.max(s.largest, v.byteLength);
      map.set(k, v);
    },
    del: async (k: string) => void map.delete(k),
    keys: async () => [...map.keys()],
    clear: async () => map.clear(),
  };
  return s;
}

beforeAll(async () => {
  e = await gpuEngine();
  want = (await logits(new LocalFolderSource(modelDir))).y;
});

describe('Hub loads through the caches give the local-folder logits', () => {
  const hubSource = (cache: FileCache) => new HubSource({ endpoint: hub.url, repo: 'stories260K', kind: 'model', cache });
  it('IdbCache: cold, then warm with no request', async () => {
    const kv = store();
    const cache = new IdbCache({ store: kv, chunkSize: CHUNK });
    for (const phase of ['cold', 'warm']) {
      hub.reset();
      const { y, maxRead } = await logits(hubSource(cache));
      expect(y, phase).toEqual(want);
      expect(maxRead, phase).toBeLessThanOrEqual(LARGEST);
      if (phase === 'warm') expect(hub.requests).toEqual([]);
    }
    expect(kv.largest).toBeLessThanOrEqual(CHUNK);
  });

  it('NodeFolderCache: cold, then warm (a new cache object) with no request', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'peft-hubstream-gpu-'));
    try {
      for (const phase of ['cold', 'warm']) {
        hub.reset();
        const { y, maxRead } = await logits(hubSource(new NodeFolderCache(dir)));
        expect(y, phase).toEqual(want);
        expect(maxRead, phase).toBeLessThanOrEqual(LARGEST);
        if (phase === 'warm') expect(hub.requests).toEqual([]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
