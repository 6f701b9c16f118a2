/**
 * Runs in IndexedDB (idb-keyval): the browser's output_dir.
 *
 * Layout of one key-value store (keys are strings):
 *   run:<id>                       RunRecord (config, status, summary)
 *   log:<id>/<n>                   trainer log lines (JSON strings), chunk n of LOG_CHUNK lines:
 *                                  a step rewrites only the last chunk, not the whole log
 *   file:<id>/<name>               a file of the run (adapter, metrics, predictions)
 *   ckpt:<id>/<ckpt>/<file>        a checkpoint's files
 *   ckptmeta:<id>/<ckpt>           { files: name → size }, written LAST
 *
 * A checkpoint exists only once its meta record does, and a read checks every
 * file against the sizes in the meta: a tab closed mid-write leaves data
 * without meta, which reads as "no such checkpoint" and is swept on the next
 * write. Overwriting deletes the meta first. A quota error becomes a
 * StorageQuotaError that says how many bytes were needed and how many are
 * free, so the UI can offer to delete old runs.
 */
import type { TrainResults } from './finish';
import { PeftStudioError } from '../errors';
import { idbKeyValueStore, type KeyValueStore } from '../hub/cache';
import { latestCheckpoint, type FileMap, type RunStore } from '../train/store';

/** IndexedDB refused a write for lack of space. */
export class StorageQuotaError extends PeftStudioError {
  override name = 'StorageQuotaError';
  constructor(
    readonly neededBytes: number,
    readonly usage: number | null,
    readonly quota: number | null,
    what: string,
  ) {
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    const free = usage !== null && quota !== null ? ` This site uses ${mib(usage)} of its ${mib(quota)} quota.` : '';
    super(
      `Browser storage is full: writing ${what} needs ${mib(neededBytes)}.${free} Delete old runs or clear the model cache (Storage), then resume from the last checkpoint.`,
    );
  }
}

export type RunStatus = 'running' | 'paused' | 'stopped' | 'done' | 'failed';

/** The run's all_results.json (src/run/finish.ts). */
export type RunSummary = TrainResults;

export interface RunRecord {
  id: string;
  name: string;
  createdAt: number;
  updatedAt: number;
  status: RunStatus;
  /** The validated experiment config (snake_case keys, as in YAML). */
  config: Record<string, unknown>;
  /** The user's data file, if the dataset is one (kept under file:<id>/data/<name>). */
  dataFile?: string;
  /** The model came from a folder picked in the page (by this name), not from the Hub. */
  modelFolder?: string;
  step: number;
  totalSteps: number;
  trainableParams: number;
  numParams: number;
  /** Whether its method folds into the base weights (the attached method has `merge`); unset in runs stored before it was recorded. */
  mergeable?: boolean;
  summary?: RunSummary;
  /** Evaluation results (eval_loss, accuracy, PSCP, ...). */
  metrics?: Record<string, number | string | null>;
  error?: string;
}

const enc = new TextEncoder();

function byteSize(v: Uint8Array | string): number {
  return typeof v === 'string' ? enc.encode(v).byteLength : v.byteLength;
}

function isQuotaError(err: unknown): boolean {
  const e = err as { name?: string; message?: string } | null;
  return !!e && (e.name === 'QuotaExceededError' || /quota/i.test(String(e.message ?? '')));
}

async function estimate(): Promise<{ usage: number | null; quota: number | null }> {
  const est = await globalThis.navigator?.storage?.estimate?.().catch(() => undefined);
  return { usage: est?.usage ?? null, quota: est?.quota ?? null };
}

/** Set, turning a quota failure into StorageQuotaError. */
async function put(kv: KeyValueStore, key: string, value: unknown, bytes: number, what: string): Promise<void> {
  try {
    await kv.set(key, value);
  } catch (err) {
    if (!isQuotaError(err)) throw err;
    const { usage, quota } = await estimate();
    throw new StorageQuotaError(bytes, usage, quota, what);
  }
}

let shared: KeyValueStore | null = null;

/** The studio's run store (one IndexedDB database, opened on first use). */
export function runsKeyValueStore(): KeyValueStore {
  shared ??= idbKeyValueStore('peft-studio-runs', 'runs');
  return shared;
}

/** Lines per log chunk: a step's append writes at most this many lines (4,000 steps: ~32 MB written, not 1.7 GB). */
export const LOG_CHUNK = 64;

/** The RunStore of one run. */
export class IdbRunStore implements RunStore {
  /** The last log chunk (its number and lines), once read. */
  private tail: { n: number; lines: string[] } | null = null;

  constructor(
    readonly runId: string,
    private readonly kv: KeyValueStore = runsKeyValueStore(),
    /** Keep at most this many checkpoints (save_total_limit); null keeps all. */
    private readonly keep: number | null = null,
  ) {
    if (!/^[A-Za-z0-9_-]+$/.test(runId)) throw new PeftStudioError(`Run id '${runId}' must be letters, digits, '-' and '_'.`);
  }

  async writeCheckpoint(name: string, files: FileMap): Promise<void> {
    const meta = `ckptmeta:${this.runId}/${name}`;
    // An older copy of the same step stops being valid before any of its files change.
    await this.kv.del(meta);
    await this.sweep();
    const sizes: Record<string, number> = {};
    const total = Object.values(files).reduce((a, v) => a + byteSize(v), 0);
    for (const [f, data] of Object.entries(files)) {
      const bytes = typeof data === 'string' ? enc.encode(data) : data;
      sizes[f] = bytes.byteLength;
      await put(this.kv, `ckpt:${this.runId}/${name}/${f}`, ownBytes(bytes), total, `checkpoint ${name}`);
    }
    await put(this.kv, meta, { files: sizes, writtenAt: Date.now() }, 64, `checkpoint ${name}`);
    if (this.keep !== null) {
      const names = (await this.listCheckpoints()).sort((a, b) => stepOf(b) - stepOf(a));
      for (const old of names.slice(this.keep)) await this.deleteCheckpoint(old);
    }
  }

  async readCheckpoint(name: string): Promise<Record<string, Uint8Array> | null> {
    const meta = (await this.kv.get(`ckptmeta:${this.runId}/${name}`)) as { files?: Record<string, number> } | undefined;
    if (!meta?.files) return null;
    const out: Record<string, Uint8Array> = {};
    for (const [f, size] of Object.entries(meta.files)) {
      const data = asBytes(await this.kv.get(`ckpt:${this.runId}/${name}/${f}`));
      // A file that does not match its recorded size makes the whole checkpoint invalid.
      if (!data || data.byteLength !== size) return null;
      out[f] = data;
    }
    return out;
  }

  async listCheckpoints(): Promise<string[]> {
    const prefix = `ckptmeta:${this.runId}/`;
    return (await this.kv.keys()).filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  }

  async latestCheckpoint(): Promise<string | null> {
    return latestCheckpoint(await this.listCheckpoints());
  }

  async deleteCheckpoint(name: string): Promise<void> {
    await this.kv.del(`ckptmeta:${this.runId}/${name}`);
    const prefix = `ckpt:${this.runId}/${name}/`;
    for (const k of await this.kv.keys()) if (k.startsWith(prefix)) await this.kv.del(k);
  }

  /** Files of checkpoints without a meta record: writes that never finished. */
  private async sweep(): Promise<void> {
    const keys = await this.kv.keys();
    const complete = new Set(keys.filter((k) => k.startsWith(`ckptmeta:${this.runId}/`)).map((k) => k.slice(`ckptmeta:${this.runId}/`.length)));
    const prefix = `ckpt:${this.runId}/`;
    for (const k of keys) {
      if (!k.startsWith(prefix)) continue;
      const ckpt = k.slice(prefix.length).split('/')[0];
      if (!complete.has(ckpt)) await this.kv.del(k);
    }
  }

  async writeFile(name: string, data: Uint8Array | string): Promise<void> {
    // One put is one IndexedDB transaction: the file is there whole or not at all.
    await put(this.kv, `file:${this.runId}/${name}`, typeof data === 'string' ? data : ownBytes(data), byteSize(data), name);
  }

  async writeFiles(files: FileMap, commit: string): Promise<void> {
    // The old commit file goes first and the new one comes last: a tab closed part way leaves no commit file.
    await this.kv.del(`file:${this.runId}/${commit}`);
    for (const [name, data] of Object.entries(files)) if (name !== commit) await this.writeFile(name, data);
    await this.writeFile(commit, files[commit]);
  }

  async readFile(name: string): Promise<Uint8Array | string | null> {
    const v = await this.kv.get(`file:${this.runId}/${name}`);
    return typeof v === 'string' ? v : (asBytes(v) ?? null);
  }

  async listFiles(): Promise<string[]> {
    const prefix = `file:${this.runId}/`;
    return (await this.kv.keys()).filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
  }

  async appendLog(line: string): Promise<void> {
    this.tail ??= await this.readTail();
    if (this.tail.lines.length >= LOG_CHUNK) this.tail = { n: this.tail.n + 1, lines: [] };
    this.tail.lines.push(line);
    await put(this.kv, this.logKey(this.tail.n), this.tail.lines, line.length, 'the training log');
  }

  async readLog(): Promise<string[]> {
    const out: string[] = [];
    // A log written before chunks (one array under log:<id>) comes first.
    for (const k of [`log:${this.runId}`, ...(await this.chunks()).map((n) => this.logKey(n))]) {
      const v = await this.kv.get(k);
      if (Array.isArray(v)) out.push(...v.filter((x): x is string => typeof x === 'string'));
    }
    return out;
  }

  /**
   * Replace the log (resume: the checkpoint's log_history is the truth). The new
   * chunks overwrite the old ones before the surplus goes, so a reader at any
   * moment (the page reloads the log while a resumed run starts) sees the old log
   * or the new one chunk by chunk, never an empty one.
   */
  async writeLog(lines: string[]): Promise<void> {
    const old = await this.chunks();
    const total = lines.reduce((a, l) => a + l.length, 0);
    let n = 0;
    for (let i = 0; i < lines.length; i += LOG_CHUNK, n++) await put(this.kv, this.logKey(n), lines.slice(i, i + LOG_CHUNK), total, 'the training log');
    await this.kv.del(`log:${this.runId}`);
    for (const k of old) if (k >= n) await this.kv.del(this.logKey(k));
    this.tail = lines.length ? { n: n - 1, lines: lines.slice((n - 1) * LOG_CHUNK) } : { n: 0, lines: [] };
  }

  private logKey(n: number): string {
    return `log:${this.runId}/${String(n).padStart(6, '0')}`;
  }

  /** The numbers of the log's chunks, in order. */
  private async chunks(): Promise<number[]> {
    const prefix = `log:${this.runId}/`;
    return (await this.kv.keys())
      .filter((k) => k.startsWith(prefix))
      .map((k) => Number(k.slice(prefix.length)))
      .filter(Number.isInteger)
      .sort((a, b) => a - b);
  }

  private async readTail(): Promise<{ n: number; lines: string[] }> {
    if (Array.isArray(await this.kv.get(`log:${this.runId}`))) {
      // Move a pre-chunk log into chunks once, so appends stay small.
      await this.writeLog(await this.readLog());
      return this.tail!;
    }
    const n = (await this.chunks()).at(-1);
    if (n === undefined) return { n: 0, lines: [] };
    const v = await this.kv.get(this.logKey(n));
    return { n, lines: Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [] };
  }
}

/** The list of runs (their records) and whole-run operations. */
export class RunIndex {
  constructor(private readonly kv: KeyValueStore = runsKeyValueStore()) {}

  store(id: string, keep: number | null = null): IdbRunStore {
    return new IdbRunStore(id, this.kv, keep);
  }

  async list(): Promise<RunRecord[]> {
    const keys = (await this.kv.keys()).filter((k) => k.startsWith('run:'));
    const out: RunRecord[] = [];
    for (const k of keys) {
      const r = (await this.kv.get(k)) as RunRecord | undefined;
      if (r && typeof r.id === 'string') out.push(r);
    }
    return out.sort((a, b) => b.createdAt - a.createdAt);
  }

  async get(id: string): Promise<RunRecord | null> {
    return ((await this.kv.get(`run:${id}`)) as RunRecord | undefined) ?? null;
  }

  async put(record: RunRecord): Promise<void> {
    await put(this.kv, `run:${record.id}`, { ...record, updatedAt: Date.now() }, JSON.stringify(record).length, `run ${record.name}`);
  }

  async update(id: string, patch: Partial<RunRecord>): Promise<RunRecord> {
    const r = await this.get(id);
    if (!r) throw new PeftStudioError(`Run ${id} does not exist (deleted in another tab?).`);
    const next = { ...r, ...patch };
    await this.put(next);
    return next;
  }

  /** Bytes held by each run (checkpoints, files, log). */
  async sizes(): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    for (const k of await this.kv.keys()) {
      const m = /^(?:ckpt|file|log):([A-Za-z0-9_-]+)/.exec(k);
      if (!m) continue;
      const v = await this.kv.get(k);
      const n =
        typeof v === 'string' ? v.length : v instanceof Uint8Array ? v.byteLength : Array.isArray(v) ? v.reduce((a: number, x) => a + String(x).length, 0) : 0;
      sizes.set(m[1], (sizes.get(m[1]) ?? 0) + n);
    }
    return sizes;
  }

  async delete(id: string): Promise<void> {
    // The record goes first, so a half-deleted run is never listed.
    await this.kv.del(`run:${id}`);
    const owned = new RegExp(`^(?:ckptmeta|ckpt|file|log):${id}(?:/|$)`);
    for (const k of await this.kv.keys()) if (owned.test(k)) await this.kv.del(k);
  }

  async clear(): Promise<void> {
    await this.kv.clear();
  }
}

function stepOf(name: string): number {
  return Number(/^checkpoint-(\d+)$/.exec(name)?.[1] ?? -1);
}

function asBytes(v: unknown): Uint8Array | undefined {
  return v instanceof Uint8Array ? v : v instanceof ArrayBuffer ? new Uint8Array(v) : undefined;
}

/** Structured clone stores a view's whole buffer: store exactly the bytes. */
function ownBytes(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : b.slice();
}

/** A new run id: time-ordered and unique enough for one browser. */
export function newRunId(now = Date.now()): string {
  const rand = Math.floor(Math.random() * 36 ** 4)
    .toString(36)
    .padStart(4, '0');
  return `${new Date(now).toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-')}-${rand}`;
}
