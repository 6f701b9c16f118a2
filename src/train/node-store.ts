/** RunStore over output_dir (Node): checkpoints written to a temp dir, then renamed. */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { readFileBytes } from '../hub/node';
import type { FileMap, RunStore } from './store';

export class FolderRunStore implements RunStore {
  constructor(readonly dir: string) {}

  async writeCheckpoint(name: string, files: FileMap): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const final = path.join(this.dir, name);
    const tmp = path.join(this.dir, `.${name}.${randomBytes(4).toString('hex')}.tmp`);
    await fs.mkdir(tmp);
    try {
      for (const [f, data] of Object.entries(files)) await fs.writeFile(path.join(tmp, f), data);
      // Replace an older copy of the same step only once the new one is complete.
      await fs.rm(final, { recursive: true, force: true });
      await fs.rename(tmp, final);
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  async readCheckpoint(name: string): Promise<Record<string, Uint8Array> | null> {
    const dir = path.join(this.dir, name);
    let entries: string[];
    try {
      entries = await fs.readdir(dir);
    } catch {
      return null;
    }
    const out: Record<string, Uint8Array> = {};
    for (const f of entries) {
      // A checkpoint's files are .json and .safetensors: a stray file (a core dump, a 2 GB copy) is not read.
      if (!/\.(json|safetensors)$/.test(f)) continue;
      const file = path.join(dir, f);
      if (!(await fs.stat(file)).isFile()) continue;
      out[f] = await readFileBytes(file); // no 2 GiB limit, unlike fs.readFile
    }
    return out;
  }

  async listCheckpoints(): Promise<string[]> {
    try {
      return (await fs.readdir(this.dir)).filter((n) => /^checkpoint-\d+$/.test(n));
    } catch {
      return [];
    }
  }

  async writeFile(name: string, data: Uint8Array | string): Promise<void> {
    // name may hold a sub-folder (predict_<key>/generated_predictions.jsonl).
    const dest = path.join(this.dir, name);
    await fs.mkdir(path.dirname(dest), { recursive: true });
    const tmp = path.join(path.dirname(dest), `.${path.basename(name)}.${randomBytes(4).toString('hex')}.tmp`);
    await fs.writeFile(tmp, data);
    await fs.rename(tmp, dest);
  }

  async appendLog(line: string): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    await fs.appendFile(path.join(this.dir, 'trainer_log.jsonl'), line + '\n');
  }
}
