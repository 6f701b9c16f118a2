/**
 * Per-kernel GPU timings through timestamp queries. One small class owns the
 * query set; when the device lacks 'timestamp-query' it does nothing, so
 * callers never branch on support.
 */
export class KernelTimer {
  readonly enabled: boolean;
  private querySet: GPUQuerySet | null = null;
  private names: string[] = [];
  private capacity: number;

  constructor(
    private device: GPUDevice,
    features: Set<string>,
    capacity = 4096,
  ) {
    this.enabled = features.has('timestamp-query');
    this.capacity = capacity;
    if (this.enabled) this.querySet = device.createQuerySet({ type: 'timestamp', count: capacity * 2 });
  }

  /** Timestamp writes for the next pass, or undefined when full / unsupported. */
  wrap(name: string): GPUComputePassTimestampWrites | undefined {
    if (!this.querySet || this.names.length >= this.capacity) return undefined;
    const i = this.names.length;
    this.names.push(name);
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  /** Total milliseconds and call count per kernel since the last collect; resets. */
  async collect(): Promise<Record<string, { ms: number; calls: number }>> {
    const out: Record<string, { ms: number; calls: number }> = {};
    if (!this.querySet || this.names.length === 0) return out;
    const n = this.names.length * 2;
    const resolve = this.device.createBuffer({ size: n * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.device.createBuffer({ size: n * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.resolveQuerySet(this.querySet, 0, n, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, n * 8);
    this.device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const ts = new BigInt64Array(read.getMappedRange().slice(0));
    read.destroy();
    resolve.destroy();
    this.names.forEach((name, i) => {
      const ms = Number(ts[2 * i + 1] - ts[2 * i]) / 1e6;
      const r = (out[name] ??= { ms: 0, calls: 0 });
      if (ms >= 0 && ms < 1e5) r.ms += ms;
      r.calls++;
    });
    this.names = [];
    return out;
  }
}
