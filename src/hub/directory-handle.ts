/**
 * A folder the user picked in the browser (showDirectoryPicker), read through
 * the File System Access API. The folder is the repo root.
 */
import { HubError } from '../errors';
import { fileTooLarge, readStream, validateFilePath, type FileSource, type GetOptions, type ProgressCallback } from './source';

/** The part of FileSystemDirectoryHandle this source uses. */
export interface DirectoryHandleLike {
  readonly name: string;
  getDirectoryHandle(name: string): Promise<DirectoryHandleLike>;
  getFileHandle(name: string): Promise<{ getFile(): Promise<Blob> }>;
}

function isMissing(e: unknown): boolean {
  const name = (e as { name?: string })?.name;
  return name === 'NotFoundError' || name === 'TypeMismatchError';
}

export class DirectoryHandleSource implements FileSource {
  readonly id: string;

  constructor(private readonly handle: FileSystemDirectoryHandle | DirectoryHandleLike) {
    this.id = `folder:${handle.name}`;
  }

  private async file(path: string): Promise<Blob> {
    validateFilePath(path);
    const parts = path.split('/');
    const fileName = parts.pop()!;
    try {
      let dir = this.handle as DirectoryHandleLike;
      for (const p of parts) dir = await dir.getDirectoryHandle(p);
      return await (await dir.getFileHandle(fileName)).getFile();
    } catch (e) {
      if (isMissing(e)) {
        throw new HubError(`${path} was not found in the folder "${this.handle.name}". Pick the folder that holds config.json.`, `${this.id}/${path}`, 404);
      }
      throw new HubError(
        `Could not read ${path} from the folder "${this.handle.name}": ${(e as Error).message}. Grant read permission and pick the folder again.`,
        `${this.id}/${path}`,
      );
    }
  }

  async get(path: string, onProgress?: ProgressCallback, opts: GetOptions = {}): Promise<Uint8Array> {
    const blob = await this.file(path);
    if (opts.maxBytes !== undefined && blob.size > opts.maxBytes) throw fileTooLarge(this.id, path, blob.size, opts.maxBytes);
    try {
      return await readStream(blob.stream(), path, blob.size, onProgress);
    } catch (e) {
      throw new HubError(`Reading ${path} from the folder "${this.handle.name}" failed: ${(e as Error).message}.`, `${this.id}/${path}`);
    }
  }

  async readRange(path: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number }> {
    const blob = await this.file(path);
    return { bytes: new Uint8Array(await blob.slice(start, end).arrayBuffer()), size: blob.size };
  }

  async has(path: string): Promise<boolean> {
    try {
      await this.file(path);
      return true;
    } catch (e) {
      if (e instanceof HubError && e.status === 404) return false;
      throw e;
    }
  }
}
