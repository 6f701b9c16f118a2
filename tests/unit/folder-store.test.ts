/**
 * FolderRunStore (output_dir in Node) and its lock: checkpoints appear whole
 * or not at all and rotate by save_total_limit; leftovers of killed writes are
 * swept; several files are published as a unit; a live run's lock refuses a
 * second run, a dead or reused pid's lock is taken over; an unusable
 * output_dir is a named error.
 */
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { FolderRunStore, LOCK_FILE, OutputDirError, lockOutputDir } from '../../src/train/node-store';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'ps-store-'));
const deadPid = () => Number(execFileSync('node', ['-e', 'process.stdout.write(String(process.pid))']));

describe('FolderRunStore', () => {
  it('writes checkpoints whole, keeps the newest save_total_limit, reads them back', async () => {
    const dir = tmp();
    const s = new FolderRunStore(dir, { keep: 2 });
    for (const step of [1, 2, 3]) await s.writeCheckpoint(`checkpoint-${step}`, { 'a.safetensors': new Uint8Array([step]), 'b.json': `{"s":${step}}` });
    expect((await s.listCheckpoints()).sort()).toEqual(['checkpoint-2', 'checkpoint-3']);
    expect(readdirSync(dir).sort()).toEqual(['checkpoint-2', 'checkpoint-3']);
    const c = await s.readCheckpoint('checkpoint-3');
    expect([...c!['a.safetensors']]).toEqual([3]);
    expect(new TextDecoder().decode(c!['b.json'])).toBe('{"s":3}');
    // Rewriting a step replaces it whole.
    await s.writeCheckpoint('checkpoint-3', { 'a.safetensors': new Uint8Array([9]) });
    expect(Object.keys((await s.readCheckpoint('checkpoint-3'))!)).toEqual(['a.safetensors']);
    expect(await s.readCheckpoint('checkpoint-7')).toBeNull();
  });

  it('sweeps leftovers of interrupted writes and ignores files named like checkpoints', async () => {
    const dir = tmp();
    mkdirSync(path.join(dir, '.checkpoint-4.abcd1234.tmp'));
    mkdirSync(path.join(dir, '.checkpoint-2.abcd1234.tmp.old'));
    writeFileSync(path.join(dir, '.adapter_config.json.0011aabb.tmp'), 'x');
    writeFileSync(path.join(dir, 'checkpoint-9'), 'a file, not a checkpoint');
    writeFileSync(path.join(dir, 'keep.txt'), 'x');
    const s = new FolderRunStore(dir);
    expect((await s.sweep()).sort()).toEqual(['.adapter_config.json.0011aabb.tmp', '.checkpoint-2.abcd1234.tmp.old', '.checkpoint-4.abcd1234.tmp']);
    expect(readdirSync(dir).sort()).toEqual(['checkpoint-9', 'keep.txt']);
    expect(await s.listCheckpoints()).toEqual([]);
  });

  it('publishes several files as a unit, the commit file last, sub-folders whole', async () => {
    const dir = tmp();
    const s = new FolderRunStore(dir);
    await s.writeFiles({ 'adapter_config.json': '{"r":1}', 'adapter_model.safetensors': new Uint8Array([1, 2]) }, 'adapter_config.json');
    await s.writeFiles({ 'adapter_config.json': '{"r":2}', 'adapter_model.safetensors': new Uint8Array([3]) }, 'adapter_config.json');
    expect(readdirSync(dir).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')).toBe('{"r":2}');
    expect([...readFileSync(path.join(dir, 'adapter_model.safetensors'))]).toEqual([3]);
    await expect(s.writeFiles({ 'a.bin': 'x' }, 'config.json')).rejects.toThrow(/commit file config\.json/);
    // Sub-folders (PiSSA's pissa_init/) move in whole, replacing the old one.
    await s.writeFiles({ 'adapter_config.json': '{"r":3}', 'pissa_init/adapter_config.json': 'old', 'pissa_init/x.bin': 'x' }, 'adapter_config.json');
    await s.writeFiles({ 'adapter_config.json': '{"r":4}', 'pissa_init/adapter_config.json': 'new' }, 'adapter_config.json');
    expect(readdirSync(path.join(dir, 'pissa_init'))).toEqual(['adapter_config.json']);
    expect(readFileSync(path.join(dir, 'pissa_init', 'adapter_config.json'), 'utf8')).toBe('new');
    expect(readdirSync(dir).filter((n) => n.startsWith('.'))).toEqual([]);
    await s.appendLog('a');
    await s.appendLog('b');
    await s.writeLog(['c']);
    expect(readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8')).toBe('c\n');
  });
});

describe('lockOutputDir', () => {
  it('refuses a second run while the first holds the lock; released, the folder is free again', async () => {
    const dir = path.join(tmp(), 'out');
    mkdirSync(dir);
    const release = await lockOutputDir(dir);
    const held = JSON.parse(readFileSync(path.join(dir, LOCK_FILE), 'utf8'));
    expect(held).toMatchObject({ pid: process.pid, host: hostname() });
    const err = await lockOutputDir(dir).then(
      () => null,
      (x) => x,
    );
    expect(err).toBeInstanceOf(OutputDirError);
    expect(err.message).toMatch(
      new RegExp(
        `output_dir .*out is in use by another run \\(process ${process.pid}, since .*\\)\\. Wait for it to finish, or choose another output_dir\\. If no such run exists, delete .*${LOCK_FILE.replace('.', '\\.')}\\.`,
      ),
    );
    await release();
    expect(readdirSync(dir)).toEqual([]);
    await (
      await lockOutputDir(dir)
    )();
  });

  it('takes over a stale lock: a dead pid, a reused pid (other start time), an unreadable lock; not another host', async () => {
    const dir = tmp();
    const file = path.join(dir, LOCK_FILE);
    const stale = [
      JSON.stringify({ pid: deadPid(), host: hostname(), start: null, since: 'then' }),
      JSON.stringify({ pid: process.pid, host: hostname(), start: '1', since: 'then' }),
      '{"pid": 12',
    ];
    for (const text of stale) {
      writeFileSync(file, text);
      const release = await lockOutputDir(dir);
      expect(JSON.parse(readFileSync(file, 'utf8')).pid).toBe(process.pid);
      await release();
      expect(readdirSync(dir)).toEqual([]);
    }
    writeFileSync(file, JSON.stringify({ pid: 1, host: 'elsewhere.example', start: null, since: 'then' }));
    await expect(lockOutputDir(dir)).rejects.toThrow(/in use by another run \(process 1 on elsewhere\.example/);
  });

  it('an output_dir that is a file, or inside one, is a named error', async () => {
    const file = path.join(tmp(), 'a-file');
    writeFileSync(file, 'x');
    await expect(lockOutputDir(file)).rejects.toThrow(OutputDirError);
    await expect(lockOutputDir(file)).rejects.toThrow(/output_dir .*a-file exists and is a file, not a folder/);
    await expect(lockOutputDir(path.join(file, 'sub'))).rejects.toThrow(
      /output_dir .*a-file\/sub is, or is inside, a file rather than a folder\. Choose another output_dir\./,
    );
  });
});
