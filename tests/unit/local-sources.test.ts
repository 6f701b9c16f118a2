import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, HubError } from '../../src/errors';
import { DirectoryHandleSource, HubSource, isNotFound, type DirectoryHandleLike, type FileProgress } from '../../src/hub/index';
import { defaultCacheDir, LocalFolderSource, sourceFor } from '../../src/hub/node';
import { testHubRoot, useHubServer } from '../helpers/hub-server';

const modelDir = path.join(testHubRoot(), 'models', 'stories260K');
const hub = useHubServer();
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'peft-local-'));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

describe('LocalFolderSource', () => {
  it('reads files with progress and reports missing ones as 404', async () => {
    const s = new LocalFolderSource(modelDir);
    expect(s.id).toBe(`local:${modelDir}`);
    const events: FileProgress[] = [];
    const bytes = await s.get('original/tok512.bin', (p) => events.push(p));
    expect(bytes.byteLength).toBe(6227);
    expect(events.at(-1)).toEqual({ file: 'original/tok512.bin', loaded: 6227, total: 6227 });
    expect(await s.has('config.json')).toBe(true);
    expect(await s.has('original')).toBe(false); // a folder is not a file
    expect(await s.has('nope.json')).toBe(false);
    const err = await s.get('nope.json').catch((e) => e);
    expect(err).toBeInstanceOf(HubError);
    expect(isNotFound(err)).toBe(true);
    expect(err.message).toContain('nope.json');
    await expect(s.get('../../README.md')).rejects.toBeInstanceOf(ConfigError);
    await expect(s.get('/etc/passwd')).rejects.toBeInstanceOf(ConfigError);
  });
});

/** A FileSystemDirectoryHandle look-alike over a plain object tree. */
function handle(name: string, tree: Record<string, unknown>): DirectoryHandleLike {
  const notFound = () => Object.assign(new Error(`${name}: not found`), { name: 'NotFoundError' });
  return {
    name,
    async getDirectoryHandle(n) {
      const v = tree[n];
      if (v === undefined) throw notFound();
      if (v instanceof Uint8Array) throw Object.assign(new Error('is a file'), { name: 'TypeMismatchError' });
      return handle(n, v as Record<string, unknown>);
    },
    async getFileHandle(n) {
      const v = tree[n];
      if (v === undefined) throw notFound();
      if (!(v instanceof Uint8Array)) throw Object.assign(new Error('is a folder'), { name: 'TypeMismatchError' });
      return { getFile: async () => new Blob([v as Uint8Array<ArrayBuffer>]) };
    },
  };
}

describe('DirectoryHandleSource', () => {
  const config = readFileSync(path.join(modelDir, 'config.json'));
  const tok = readFileSync(path.join(modelDir, 'original', 'tok512.bin'));
  const root = handle('stories260K', { 'config.json': new Uint8Array(config), original: { 'tok512.bin': new Uint8Array(tok) } });

  it('reads nested files with progress', async () => {
    const s = new DirectoryHandleSource(root);
    expect(s.id).toBe('folder:stories260K');
    const events: FileProgress[] = [];
    const b = await s.get('original/tok512.bin', (p) => events.push(p));
    expect(Buffer.from(b).equals(tok)).toBe(true);
    expect(events.at(-1)).toEqual({ file: 'original/tok512.bin', loaded: tok.length, total: tok.length });
    expect(Buffer.from(await s.get('config.json')).equals(config)).toBe(true);
  });

  it('missing files and folders are 404; bad paths are ConfigError', async () => {
    const s = new DirectoryHandleSource(root);
    expect(await s.has('config.json')).toBe(true);
    expect(await s.has('missing.json')).toBe(false);
    expect(await s.has('nope/x.json')).toBe(false);
    expect(await s.has('original')).toBe(false);
    const err = await s.get('missing.json').catch((e) => e);
    expect(isNotFound(err)).toBe(true);
    expect(err.message).toContain('stories260K');
    await expect(s.get('../x')).rejects.toBeInstanceOf(ConfigError);
  });

  it('other failures (permission) are HubErrors, not 404', async () => {
    const denied: DirectoryHandleLike = {
      name: 'locked',
      getDirectoryHandle: async () => {
        throw Object.assign(new Error('denied'), { name: 'NotAllowedError' });
      },
      getFileHandle: async () => {
        throw Object.assign(new Error('denied'), { name: 'NotAllowedError' });
      },
    };
    const err = await new DirectoryHandleSource(denied).get('config.json').catch((e) => e);
    expect(err).toBeInstanceOf(HubError);
    expect(isNotFound(err)).toBe(false);
    expect(err.message).toMatch(/permission/);
  });
});

describe('sourceFor', () => {
  it('a folder on disk is a LocalFolderSource', () => {
    const s = sourceFor(modelDir);
    expect(s).toBeInstanceOf(LocalFolderSource);
    expect(s.id).toBe(`local:${modelDir}`);
  });

  it('a repo id is a HubSource that caches under <cacheDir>/hub', async () => {
    const cacheDir = path.join(tmp, 'cache');
    const s = sourceFor('stories260K', { endpoint: hub.url, cacheDir });
    expect(s).toBeInstanceOf(HubSource);
    expect((s as HubSource).kind).toBe('model');
    hub.reset();
    await s.get('config.json');
    await sourceFor('stories260K', { endpoint: hub.url, cacheDir }).get('config.json');
    expect(hub.count()).toBe(1);
    expect(readdirSync(path.join(cacheDir, 'hub')).length).toBe(2);
    const d = sourceFor('nyu-mll/glue', { endpoint: hub.url, kind: 'dataset', cache: null });
    expect((d as HubSource).url('README.md')).toBe(`${hub.url}/datasets/nyu-mll/glue/resolve/main/README.md`);
  });

  it('paths that do not exist, files and invalid ids are ConfigErrors', () => {
    const file = path.join(tmp, 'a-file.json');
    writeFileSync(file, '{}');
    mkdirSync(path.join(tmp, 'folder'), { recursive: true });
    expect(() => sourceFor('./definitely/not/here')).toThrow(/does not exist/);
    expect(() => sourceFor('/definitely/not/here')).toThrow(ConfigError);
    expect(() => sourceFor(file)).toThrow(/is a file/);
    expect(() => sourceFor('a/b/c')).toThrow(/neither a folder on disk nor a Hub repo id/);
    expect(() => sourceFor('https://huggingface.co/gpt2')).toThrow(ConfigError);
    expect(() => sourceFor('')).toThrow(ConfigError);
    expect(sourceFor(path.join(tmp, 'folder'))).toBeInstanceOf(LocalFolderSource);
  });

  it('the default cache dir is PEFT_STUDIO_CACHE or ~/.cache/peft-studio', () => {
    const saved = process.env.PEFT_STUDIO_CACHE;
    try {
      process.env.PEFT_STUDIO_CACHE = '/somewhere/else';
      expect(defaultCacheDir()).toBe('/somewhere/else');
      delete process.env.PEFT_STUDIO_CACHE;
      expect(defaultCacheDir()).toMatch(/[/\\]\.cache[/\\]peft-studio$/);
    } finally {
      if (saved === undefined) delete process.env.PEFT_STUDIO_CACHE;
      else process.env.PEFT_STUDIO_CACHE = saved;
    }
  });
});
