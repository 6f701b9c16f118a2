/**
 * Where a run keeps its files: output_dir in Node, IndexedDB in the browser.
 * Checkpoints are written whole or not at all (the store writes to a
 * temporary place and renames), so a crash never leaves half a checkpoint
 * that `resume_from_checkpoint` would read back.
 */
export type FileMap = Record<string, Uint8Array | string>;

export interface RunStore {
  /** Atomically write checkpoint `name` (e.g. "checkpoint-20") with these files. */
  writeCheckpoint(name: string, files: FileMap): Promise<void>;
  readCheckpoint(name: string): Promise<Record<string, Uint8Array> | null>;
  /** Checkpoint names, complete ones only. */
  listCheckpoints(): Promise<string[]>;
  /** Atomically write one file of the run (adapter, metrics). */
  writeFile(name: string, data: Uint8Array | string): Promise<void>;
  appendLog(line: string): Promise<void>;
}

/** In-memory store (tests, and the browser before IndexedDB persistence). */
export class MemoryRunStore implements RunStore {
  checkpoints = new Map<string, Record<string, Uint8Array>>();
  files = new Map<string, Uint8Array | string>();
  log: string[] = [];
  async writeCheckpoint(name: string, files: FileMap) {
    const enc = new TextEncoder();
    this.checkpoints.set(name, Object.fromEntries(Object.entries(files).map(([k, v]) => [k, typeof v === 'string' ? enc.encode(v) : v])));
  }
  async readCheckpoint(name: string) {
    return this.checkpoints.get(name) ?? null;
  }
  async listCheckpoints() {
    return [...this.checkpoints.keys()];
  }
  async writeFile(name: string, data: Uint8Array | string) {
    this.files.set(name, data);
  }
  async appendLog(line: string) {
    this.log.push(line);
  }
}

/** "checkpoint-120" → 120; the newest is the largest step. */
export function latestCheckpoint(names: string[]): string | null {
  const steps = names.map((n) => /^checkpoint-(\d+)$/.exec(n)).filter((m): m is RegExpExecArray => !!m);
  if (!steps.length) return null;
  return steps.sort((a, b) => Number(b[1]) - Number(a[1]))[0][0];
}
