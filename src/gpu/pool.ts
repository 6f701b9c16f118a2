/**
 * Buffer pool with byte accounting. Storage buffers are bucketed by size
 * (rounded up to a power-of-two-ish class) and reused; every byte the device
 * holds through the pool is counted in `current`, and `peak` keeps the high
 * water mark, which training reports as peak GPU memory.
 */
import { GpuError } from '../errors';
import { scoped } from './device';

const STORAGE = 0x80 /* STORAGE */ | 0x4 /* COPY_SRC */ | 0x8; /* COPY_DST */

/** Round a byte size up to its bucket: multiples of 256 B up to 4 KiB, then 1/8 power-of-two steps. */
export function bucketSize(bytes: number): number {
  const b = Math.max(16, bytes);
  if (b <= 4096) return Math.ceil(b / 256) * 256;
  const p = 2 ** Math.floor(Math.log2(b));
  const step = p / 8;
  return Math.ceil(b / step) * step;
}

export class BufferPool {
  /** Bytes held by live (acquired) buffers plus free buffers kept for reuse. */
  current = 0;
  /** Bytes held by acquired buffers only. */
  inUse = 0;
  peak = 0;
  private free = new Map<number, GPUBuffer[]>();

  /** The first asynchronous allocation error (out of memory), thrown by the engine at its next sync. */
  error: GpuError | null = null;

  constructor(
    private device: GPUDevice,
    private maxBufferSize: number,
  ) {}

  acquire(bytes: number, label?: string): GPUBuffer {
    const size = bucketSize(bytes);
    if (size > this.maxBufferSize) {
      throw new GpuError(
        `Buffer '${label ?? '?'}' needs ${size} bytes, above this adapter's maxBufferSize ${this.maxBufferSize}: use a smaller batch or model.`,
      );
    }
    const list = this.free.get(size);
    let buf = list?.pop();
    if (!buf) {
      buf = scoped(
        this.device,
        `allocating ${size} bytes for '${label ?? 'tensor'}'`,
        () => this.device.createBuffer({ size, usage: STORAGE, label }),
        (err) => (this.error ??= err),
      );
      this.current += size;
    }
    this.inUse += size;
    if (this.inUse > this.peak) this.peak = this.inUse;
    return buf;
  }

  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.inUse -= size;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buf);
  }

  /** Return cached free buffers to the driver. */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.current -= b.size;
        b.destroy();
      }
    }
    this.free.clear();
  }

  /** Bytes a buffer of `bytes` takes from the pool (its size class). */
  bytesFor(bytes: number): number {
    return bucketSize(bytes);
  }

  resetPeak(): void {
    this.peak = this.inUse;
  }
}
