/** Storage screen in the worker: what the Hub cache and the runs hold in the browser, and clearing them. */
import { ConfigError } from '../errors';
import type { FileCache } from '../hub/index';
import type { RunIndex } from '../run/idb-store';
import type { StorageInfo } from './api';
import type { DeviceSlot } from './device';
import { hubCacheMeta } from './model';
import type { Sessions } from './session';

export async function storageInfo(cache: FileCache | undefined, runs: RunIndex): Promise<StorageInfo> {
  const est = await navigator.storage?.estimate?.().catch(() => undefined);
  const cached = new Map<string, { repo: string; files: number; bytes: number }>();
  const meta = hubCacheMeta();
  for (const key of (await cache?.list?.()) ?? []) {
    const [endpoint, repo] = key.split('|');
    const name = `${repo} (${endpoint})`;
    const entry = cached.get(name) ?? { repo: name, files: 0, bytes: 0 };
    entry.files++;
    const m = (await meta.get(`meta:${key}`).catch(() => undefined)) as { size?: number } | undefined;
    entry.bytes += typeof m?.size === 'number' ? m.size : 0;
    cached.set(name, entry);
  }
  const sizes = await runs.sizes();
  const list = (await runs.list()).map((r) => ({ id: r.id, name: r.name, bytes: sizes.get(r.id) ?? 0 }));
  return { usage: est?.usage ?? null, quota: est?.quota ?? null, cached: [...cached.values()], runs: list };
}

export function clearStorage(what: 'cache' | 'runs', cache: FileCache | undefined, device: DeviceSlot, sessions: Sessions, runs: RunIndex): Promise<void> {
  if (what === 'runs' && sessions.training()) throw new ConfigError('A run is training: stop it before deleting every run.');
  return device.exclusive(async () => {
    if (what === 'cache') await cache?.clear();
    else {
      sessions.drop();
      await runs.clear();
    }
  });
}
