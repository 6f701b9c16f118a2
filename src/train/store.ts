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
  /**
   * Write several files (names may hold one sub-folder) as a unit: `commit`
   * (one of them: adapter_config.json, config.json) is removed first and
   * written last, so whoever finds it finds the files that go with it.
   */
  writeFiles(files: FileMap, commit: string): Promise<void>;
  appendLog(line: string): Promise<void>;
  /** Replace the log (on resume the checkpoint's log_history is the truth: steps logged after it are redone). */
  writeLog(lines: string[]): Promise<void>;
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
  async writeFiles(files: FileMap, commit: string) {
    this.files.delete(commit);
    for (const [name, data] of Object.entries(files)) if (name !== commit) this.files.set(name, data);
    this.files.set(commit, files[commit]);
  }
  async appendLog(line: string) {
    this.log.push(line);
  }
  async writeLog(lines: string[]) {
    this.log = [...lines];
  }
}

/** "checkpoint-120" → 120; the newest is the largest step. */
export function latestCheckpoint(names: string[]): string | null {
  return checkpointsNewestFirst(names)[0] ?? null;
}

/** Checkpoint names ("checkpoint-<step>") by step, newest first; other names are left out. */
export function checkpointsNewestFirst(names: string[]): string[] {
  const steps = names.map((n) => /^checkpoint-(\d+)$/.exec(n)).filter((m): m is RegExpExecArray => !!m);
  return steps.sort((a, b) => Number(b[1]) - Number(a[1])).map((m) => m[0]);
}
