/**
 * RunStore over output_dir (Node), crash-safe:
 * - a checkpoint is written into a temporary folder, every file and the
 *   folder fsynced, then renamed into place (and the parent fsynced), so after
 *   a kill -9 or a power cut a `checkpoint-N` folder is complete or absent;
 * - the final adapter or a merged model (several files in one folder) is
 *   written the same way and moved in with its marker file
 *   (adapter_config.json, config.json) last;
 * - `lockOutputDir` keeps a second run out of a folder a live run writes;
 * - leftovers of interrupted writes (`.*.tmp`) are swept when a run takes the lock.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { PeftStudioError } from '../errors';
import { readFileBytes } from '../hub/node';
import type { FileMap, RunStore } from './store';

/** output_dir cannot be used: not a folder, not writable, or locked by a live run. */
export class OutputDirError extends PeftStudioError {
  override name = 'OutputDirError';
}

export const LOCK_FILE = '.peft-studio.lock';

const CHECKPOINT = /^checkpoint-\d+$/;

export class FolderRunStore implements RunStore {
  /** Keep at most this many checkpoints (save_total_limit; the newest by step); null keeps all. */
  readonly keep: number | null;

  constructor(
    readonly dir: string,
    opts: { keep?: number | null } = {},
  ) {
    this.keep = opts.keep ?? null;
  }

  async writeCheckpoint(name: string, files: FileMap): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const final = path.join(this.dir, name);
    const tmp = await this.tempFolder(name);
    try {
      let first = true;
      for (const [f, data] of Object.entries(files)) {
        await writeDurable(path.join(tmp, f), data);
        if (first) killPoint('checkpoint-write');
        first = false;
      }
      await syncDir(tmp);
      // An older copy of the same step is moved aside, not deleted, until the new one is in place.
      const old = (await exists(final)) ? `${tmp}.old` : null;
      if (old) await fs.rename(final, old);
      await fs.rename(tmp, final);
      await syncDir(this.dir);
      if (old) await fs.rm(old, { recursive: true, force: true });
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw err;
    }
    if (this.keep !== null) {
      const names = (await this.listCheckpoints()).sort((a, b) => stepOf(b) - stepOf(a));
      for (const stale of names.slice(this.keep)) await fs.rm(path.join(this.dir, stale), { recursive: true, force: true });
    }
  }

  async readCheckpoint(name: string): Promise<Record<string, Uint8Array> | null> {
    const dir = path.join(this.dir, name);
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch {
      return null;
    }
    const out: Record<string, Uint8Array> = {};
    for (const f of entries) {
      // A checkpoint's files are .json and .safetensors: a stray file (a core dump, a 2 GB copy) is not read.
      if (!f.isFile() || !/\.(json|safetensors)$/.test(f.name)) continue;
      out[f.name] = await readFileBytes(path.join(dir, f.name)); // no 2 GiB limit, unlike fs.readFile
    }
    return out;
  }

  async listCheckpoints(): Promise<string[]> {
    try {
      return (await fs.readdir(this.dir, { withFileTypes: true })).filter((d) => d.isDirectory() && CHECKPOINT.test(d.name)).map((d) => d.name);
    } catch {
      return [];
    }
  }

  async writeFile(name: string, data: Uint8Array | string): Promise<void> {
    // name may hold a sub-folder (predict_<key>/generated_predictions.jsonl).
    const dest = path.join(this.dir, name);
    await fs.mkdir(path.dirname(dest), { recursive: true });
    const tmp = path.join(path.dirname(dest), `.${path.basename(name)}.${randomBytes(4).toString('hex')}.tmp`);
    await writeDurable(tmp, data);
    await fs.rename(tmp, dest);
    await syncDir(path.dirname(dest));
  }

  /**
   * Write several files of output_dir as one unit: all are written and
   * fsynced in a temporary folder first; then the old `commit` file goes, the
   * others move in (a sub-folder, `sub/name` keys, as a whole), and `commit`
   * moves in last. A reader that finds `commit` (adapter_config.json, a
   * model's config.json) finds the files that belong to it; a kill part way
   * leaves no `commit` and no mix of old and new.
   */
  async writeFiles(files: FileMap, commit: string): Promise<void> {
    if (!(commit in files)) throw new Error(`writeFiles: the commit file ${commit} is not among the files`);
    await fs.mkdir(this.dir, { recursive: true });
    const tmp = await this.tempFolder('export');
    try {
      const subs = new Set<string>();
      for (const [f, data] of Object.entries(files)) {
        const dest = path.join(tmp, f);
        if (path.dirname(f) !== '.') {
          await fs.mkdir(path.dirname(dest), { recursive: true });
          subs.add(path.dirname(dest));
        }
        await writeDurable(dest, data);
      }
      for (const d of [...subs, tmp]) await syncDir(d);
      await fs.rm(path.join(this.dir, commit), { force: true });
      await syncDir(this.dir);
      const top = [...new Set(Object.keys(files).map((f) => f.split(/[\\/]/)[0]))].filter((t) => t !== commit);
      for (const t of top) {
        const dest = path.join(this.dir, t);
        // A sub-folder replaces the old one whole (moved aside into the temporary folder, removed with it).
        if ((await fs.stat(path.join(tmp, t))).isDirectory() && (await exists(dest))) await fs.rename(dest, path.join(tmp, `.${t}.old`));
        await fs.rename(path.join(tmp, t), dest);
        killPoint('export-write');
      }
      await syncDir(this.dir);
      await fs.rename(path.join(tmp, commit), path.join(this.dir, commit));
      await syncDir(this.dir);
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }

  async appendLog(line: string): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    await fs.appendFile(path.join(this.dir, 'trainer_log.jsonl'), line + '\n');
  }

  async writeLog(lines: string[]): Promise<void> {
    await this.writeFile('trainer_log.jsonl', lines.map((l) => l + '\n').join(''));
  }

  /** Remove `.*.tmp` leftovers of writes a killed run never finished (call while holding the lock). */
  async sweep(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch {
      return [];
    }
    const stale = names.filter((n) => n.startsWith('.') && /\.tmp(\.old)?$/.test(n));
    for (const n of stale) await fs.rm(path.join(this.dir, n), { recursive: true, force: true });
    return stale;
  }

  private async tempFolder(what: string): Promise<string> {
    const tmp = path.join(this.dir, `.${what}.${randomBytes(4).toString('hex')}.tmp`);
    await fs.mkdir(tmp);
    return tmp;
  }
}

function stepOf(name: string): number {
  return Number(/^checkpoint-(\d+)$/.exec(name)?.[1] ?? -1);
}

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

/** Write and fsync one file, so a rename that publishes it never points at unwritten blocks. */
async function writeDurable(file: string, data: Uint8Array | string): Promise<void> {
  const h = await fs.open(file, 'w');
  try {
    await h.writeFile(data);
    await h.sync();
  } finally {
    await h.close();
  }
}

/** fsync a folder, making the names created or renamed in it durable (a no-op where the platform refuses). */
async function syncDir(dir: string): Promise<void> {
  let h: fs.FileHandle | null = null;
  try {
    h = await fs.open(dir, 'r');
    await h.sync();
  } catch {
    // Windows cannot open or fsync a directory; its renames are durable on their own.
  } finally {
    await h?.close();
  }
}

/**
 * Test hook for the kill-and-resume tests: PEFT_STUDIO_KILL_AT=<point>[:<n>]
 * makes this process SIGKILL itself the n-th time (default 1st) it reaches
 * <point>: a crash at the worst moment, with no cleanup. Points:
 * checkpoint-write (one file of a checkpoint written, the rest not),
 * export-write (the final adapter part way into output_dir).
 */
const killCounts = new Map<string, number>();
function killPoint(point: string): void {
  const spec = process.env.PEFT_STUDIO_KILL_AT;
  if (!spec) return;
  const [name, nth] = spec.split(':');
  if (name !== point) return;
  const n = (killCounts.get(point) ?? 0) + 1;
  killCounts.set(point, n);
  if (n === Number(nth ?? 1)) process.kill(process.pid, 'SIGKILL');
}

interface LockInfo {
  pid: number;
  host: string;
  /** The process's start time (Linux /proc/<pid>/stat field 22), so a reused pid is not taken for the run. */
  start: string | null;
  since: string;
}

function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote `lock` still runs (on this host; another host's lock counts as live). */
function lockIsLive(lock: LockInfo): boolean {
  if (lock.host !== hostname()) return true;
  try {
    process.kill(lock.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const start = processStart(lock.pid);
  return !(lock.start && start && start !== lock.start);
}

function describeFsError(dir: string, err: unknown): OutputDirError {
  const code = (err as NodeJS.ErrnoException).code;
  const why: Record<string, string> = {
    EACCES: 'is not writable by this user (permission denied)',
    EPERM: 'is not writable (operation not permitted)',
    EROFS: 'is on a read-only file system',
    ENOTDIR: 'is, or is inside, a file rather than a folder',
    EEXIST: 'exists and is a file, not a folder',
    ENOSPC: 'is on a full disk',
    EDQUOT: 'is over the disk quota',
    ENAMETOOLONG: 'is too long a path',
  };
  return new OutputDirError(`output_dir ${dir} ${why[code ?? ''] ?? `cannot be written (${code ?? String(err)})`}. Choose another output_dir.`);
}

/**
 * Take output_dir's lock (the folder must exist: the CLI creates it with
 * ensureWritableDir first), so that no other run writes into it. A lock left
 * by a process that no longer runs (kill -9, or a pid since reused) is taken
 * over. Returns the function that releases the lock.
 */
export async function lockOutputDir(dir: string): Promise<() => Promise<void>> {
  const st = await fs.stat(dir).catch((err) => {
    throw describeFsError(dir, err);
  });
  if (!st.isDirectory()) throw describeFsError(dir, Object.assign(new Error('not a folder'), { code: 'EEXIST' }));
  const file = path.join(dir, LOCK_FILE);
  const mine: LockInfo = { pid: process.pid, host: hostname(), start: processStart(process.pid), since: new Date().toISOString() };
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await fs.writeFile(file, JSON.stringify(mine) + '\n', { flag: 'wx' });
      return async () => {
        // Only our own lock is removed.
        const now = await fs.readFile(file, 'utf8').catch(() => '');
        if (now === JSON.stringify(mine) + '\n') await fs.rm(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw describeFsError(dir, err);
    }
    let held: LockInfo | null = null;
    try {
      held = JSON.parse(await fs.readFile(file, 'utf8')) as LockInfo;
    } catch {
      // Unreadable or half-written (a kill between create and write): nobody can prove it live.
    }
    if (held && typeof held.pid === 'number' && lockIsLive(held)) {
      const where = held.host === hostname() ? `process ${held.pid}` : `process ${held.pid} on ${held.host}`;
      throw new OutputDirError(
        `output_dir ${dir} is in use by another run (${where}, since ${held.since}). Wait for it to finish, or choose another output_dir. ` +
          `If no such run exists, delete ${file}.`,
      );
    }
    // Stale: move it aside under a unique name (only one taker's rename succeeds), then try again.
    await fs.rename(file, `${file}.${randomBytes(4).toString('hex')}.stale`).then(
      (r) => r,
      () => undefined,
    );
    for (const n of await fs.readdir(dir)) if (n.startsWith(`${LOCK_FILE}.`) && n.endsWith('.stale')) await fs.rm(path.join(dir, n), { force: true });
  }
  throw new OutputDirError(`output_dir ${dir}: could not take its lock ${file} (another run keeps taking it). Choose another output_dir.`);
}
