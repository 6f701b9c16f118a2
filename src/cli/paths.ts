/**
 * Output paths of the CLI (output_dir, export_dir, --out): checked and created
 * before any work, one component at a time, so a path that cannot hold files
 * fails at once with a sentence instead of a stack trace, hours later, or never
 * (Node's recursive mkdir loops forever on /proc/<new>: the kernel answers
 * ENOENT for a folder whose parent exists).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../errors';

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException)?.code;

/** What an fs error code means to a person. */
export const FS_MEANINGS: Record<string, string> = {
  EISDIR: 'it is a folder where a file is needed',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EPERM: 'the operation is not permitted here',
  EACCES: 'permission denied',
  EROFS: 'the file system is read-only',
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is used up',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'too many symbolic links (a link loop?)',
  EEXIST: 'something already exists there',
  ENOENT: 'it does not exist (or this file system does not allow creating it)',
  EBUSY: 'it is busy',
  EMFILE: 'too many open files',
  EXDEV: 'it is on another device',
  EINVAL: 'the file system refuses this name or operation',
};

/** The sentence for an fs error (used by the CLI for any that reaches the top). */
export function fsErrorMessage(err: NodeJS.ErrnoException & { dest?: string }): string {
  const what = FS_MEANINGS[err.code ?? ''] ?? err.message;
  const where = err.path ? `${err.path}${err.dest ? ` → ${err.dest}` : ''}` : '(unknown path)';
  return `cannot ${err.syscall ?? 'use'} ${where}: ${what} (${err.code}). Choose a path you can write to (output_dir, export_dir, --out), or fix its permissions.`;
}

/**
 * Makes `dir` exist as a folder this process can write, or throws a
 * ConfigError naming `key`, the path, and why. Never recurses into mkdir.
 */
export async function ensureWritableDir(dir: string, key: string): Promise<string> {
  const abs = path.resolve(dir);
  const bad = (why: string): never => {
    throw new ConfigError(`${key} ${dir}: ${why}. Choose a folder you can write to.`);
  };
  const missing: string[] = [];
  let cur = abs;
  for (;;) {
    let st: Awaited<ReturnType<typeof fs.stat>> | null = null;
    try {
      st = await fs.stat(cur);
    } catch (e) {
      const code = errno(e);
      if (code === 'ENOTDIR') bad(`${FS_MEANINGS.ENOTDIR} (${cur})`);
      if (code !== 'ENOENT') bad(`cannot look at ${cur}: ${FS_MEANINGS[code ?? ''] ?? (e as Error).message}`);
    }
    if (st) {
      if (!st.isDirectory()) bad(cur === abs ? 'it is a file, not a folder' : `${cur} is a file, not a folder`);
      break;
    }
    const parent = path.dirname(cur);
    if (parent === cur) break;
    missing.unshift(cur);
    cur = parent;
  }
  for (const m of missing) {
    try {
      await fs.mkdir(m);
    } catch (e) {
      if (errno(e) !== 'EEXIST') bad(`cannot create the folder ${m}: ${FS_MEANINGS[errno(e) ?? ''] ?? (e as Error).message} (${errno(e)})`);
    }
  }
  // A folder can exist and still refuse files (/proc, /sys, read-only mounts, permissions).
  const probe = path.join(abs, `.peft-studio-write-test-${randomBytes(4).toString('hex')}`);
  try {
    const fh = await fs.open(probe, 'wx');
    await fh.close();
    await fs.rm(probe, { force: true });
  } catch (e) {
    bad(`files cannot be written in it: ${FS_MEANINGS[errno(e) ?? ''] ?? (e as Error).message} (${errno(e)})`);
  }
  return abs;
}
