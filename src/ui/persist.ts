/**
 * The experiment under edit survives a reload: the form values (the config,
 * every method's options, so switching back to a method finds them again)
 * and the Evaluate screen's settings are kept in IndexedDB, and read back
 * before a share link (which wins) is applied.
 */
import { allOptions } from '../config/schema';
import { idbKeyValueStore, type KeyValueStore } from '../hub/cache';

const KEY = 'experiment';
const VERSION = 1;

export interface SavedExperiment {
  values: Record<string, unknown>;
  evaluate: Record<string, unknown>;
}

let kv: KeyValueStore | null = null;
function store(): KeyValueStore {
  kv ??= idbKeyValueStore('peft-studio-ui', 'state');
  return kv;
}

/** Keys the schema knows (an option removed since the save is dropped, not sent to validation). */
function known(values: unknown): Record<string, unknown> {
  if (!values || typeof values !== 'object') return {};
  const keys = new Set(allOptions().map((o) => o.key));
  return Object.fromEntries(Object.entries(values as Record<string, unknown>).filter(([k]) => keys.has(k)));
}

export async function loadExperiment(): Promise<SavedExperiment | null> {
  const saved = (await store()
    .get(KEY)
    .catch(() => undefined)) as { version?: number; values?: unknown; evaluate?: unknown } | undefined;
  if (!saved || saved.version !== VERSION) return null;
  return { values: known(saved.values), evaluate: known(saved.evaluate) };
}

export function saveExperiment(e: SavedExperiment): Promise<void> {
  return store().set(KEY, { version: VERSION, values: e.values, evaluate: e.evaluate });
}
