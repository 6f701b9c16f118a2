/**
 * The engine: a GPU context plus one pending command encoder. Ops encode
 * compute passes into it; `flush()` submits. Uniform parameters of every
 * dispatch go into one arena per flush (256-byte slots) written with a single
 * writeBuffer, so a training step is a handful of submits, not hundreds.
 *
 * Binding convention for every kernel: @group(0) @binding(0) is the uniform
 * params struct; bindings 1..n are storage buffers in the order the op passes
 * them, each read-only or read_write as the dispatch says.
 */
import { GpuError, ShaderCompileError } from '../errors';
import { scoped, type GpuContext } from '../gpu/device';
import { Tensor } from './tensor';
import type { Tape } from './tape';

export interface Binding {
  tensor: Tensor;
  write?: boolean;
}

const UNIFORM_SLOT = 256;
const ARENA_BYTES = 64 * 1024;

interface Arena {
  buffer: GPUBuffer;
  bytes: Uint8Array;
  used: number;
}

export class Engine {
  readonly device: GPUDevice;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private pipelines = new Map<string, GPUComputePipeline>();
  private layouts = new Map<string, { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout }>();
  private modules = new Map<string, GPUShaderModule>();
  private arenas: Arena[] = [];
  private arenaIndex = 0;
  private arenaFree: Arena[] = [];
  /** Tensors released while commands using them are still unsubmitted. */
  private pendingRelease: Tensor[] = [];
  /** Active tape (autograd recording) or null. */
  tape: Tape | null = null;
  /** Tensors created since the scope began, released by `endScope`. */
  private scopes: Set<Tensor>[] = [];
  dispatchCount = 0;
  /** Optional per-kernel timer (timestamp queries); see ./timer.ts. */
  timer: { wrap(name: string): GPUComputePassTimestampWrites | undefined } | null = null;

  constructor(readonly ctx: GpuContext) {
    this.device = ctx.device;
    // Errors outside our scopes (bind groups, dispatches) land here.
    this.device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      this.asyncError ??= new GpuError(`GPU error: ${ev.error.message}`);
    };
  }

  get pool() {
    return this.ctx.pool;
  }

  // ---- tensors -------------------------------------------------------------

  empty(shape: number[], name?: string): Tensor {
    this.checkLost();
    const n = shape.reduce((a, b) => a * b, 1);
    const buf = this.pool.acquire(n * 4, name);
    const t = new Tensor(this, shape, buf, name);
    this.scopes.at(-1)?.add(t);
    return t;
  }

  zeros(shape: number[], name?: string): Tensor {
    const t = this.empty(shape, name);
    this.clear(t);
    return t;
  }

  /** Upload host data. Flushes first: a pooled buffer may still be read by unsubmitted work. */
  upload(data: Float32Array | Int32Array | Uint32Array | number[], shape: number[], name?: string): Tensor {
    const t = this.empty(shape, name);
    this.write(t, data);
    return t;
  }

  /**
   * Upload host data. Small uploads go through a staging buffer copied inside
   * the pending encoder, so they stay in order with the dispatches around
   * them (a pooled buffer may still be read by unsubmitted work) without a
   * submit; large ones flush and use queue.writeBuffer.
   */
  write(t: Tensor, data: Float32Array | Int32Array | Uint32Array | number[]): void {
    const arr = Array.isArray(data) ? new Float32Array(data) : data;
    if (arr.length !== t.size) throw new GpuError(`write: ${arr.length} values for tensor '${t.name}' of ${t.size}`);
    if (arr.byteLength > (1 << 20) || arr.byteLength === 0) {
      this.flush();
      this.device.queue.writeBuffer(t.buffer, 0, arr.buffer, arr.byteOffset, arr.byteLength);
      return;
    }
    const staging = this.device.createBuffer({ size: Math.ceil(arr.byteLength / 4) * 4, usage: GPUBufferUsage.COPY_SRC, mappedAtCreation: true });
    new Uint8Array(staging.getMappedRange()).set(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength));
    staging.unmap();
    this.endPass();
    this.enc().copyBufferToBuffer(staging, 0, t.buffer, 0, staging.size);
    this.staging.push(staging);
  }

  /** Staging buffers of uploads in the pending encoder; destroyed after its submit. */
  private staging: GPUBuffer[] = [];

  async read(t: Tensor): Promise<Float32Array> {
    return new Float32Array(await this.readBytes(t));
  }

  async readInt(t: Tensor): Promise<Int32Array> {
    return new Int32Array(await this.readBytes(t));
  }

  /** Read `n` elements starting at element `offset` (e.g. the last row of logits). */
  async readRegion(t: Tensor, offset: number, n: number): Promise<Float32Array> {
    return new Float32Array(await this.readBytes(t, offset, n));
  }

  private async readBytes(t: Tensor, offset = 0, n = t.size): Promise<ArrayBuffer> {
    this.checkLost();
    const bytes = n * 4;
    const staging = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.endPass();
    this.enc().copyBufferToBuffer(t.buffer, offset * 4, staging, 0, bytes);
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const out = staging.getMappedRange().slice(0);
    staging.destroy();
    this.checkLost();
    return out;
  }

  clear(t: Tensor): void {
    this.endPass();
    this.enc().clearBuffer(t.buffer, 0, Math.ceil((t.size * 4) / 4) * 4);
  }

  copy(dst: Tensor, src: Tensor): void {
    this.copyRegion(dst, 0, src, 0, src.size);
  }

  /** Copy `n` elements from src[srcOffset..] to dst[dstOffset..] (offsets in elements). */
  copyRegion(dst: Tensor, dstOffset: number, src: Tensor, srcOffset: number, n: number): void {
    if (n === 0) return;
    this.endPass();
    this.enc().copyBufferToBuffer(src.buffer, srcOffset * 4, dst.buffer, dstOffset * 4, n * 4);
  }

  /** Give a tensor's buffer back to the pool once the pending commands are submitted. */
  release(t: Tensor): void {
    this.pendingRelease.push(t);
    for (const s of this.scopes) s.delete(t);
  }

  /** Buffers released inside a pending encoder may be reused by later dispatches of the same encoder: queue order keeps that safe. */
  releaseNow(t: Tensor): void {
    this.pool.release(t.buffer);
  }

  beginScope(): void {
    this.scopes.push(new Set());
  }

  /** Release every tensor created in the scope except `keep`. */
  endScope(...keep: (Tensor | null | undefined)[]): void {
    const s = this.scopes.pop();
    if (!s) return;
    for (const k of keep) if (k) s.delete(k);
    const parent = this.scopes.at(-1);
    for (const k of keep) if (k && parent) parent.add(k);
    for (const t of s) t.dispose();
  }

  /** Detach a tensor from the current scope so that it outlives it (parameters, caches). */
  persist<T extends Tensor>(t: T): T {
    for (const s of this.scopes) s.delete(t);
    return t;
  }

  // ---- kernels ---------------------------------------------------------------

  /** First asynchronous GPU error (compile, validation, out of memory); thrown at the next sync. */
  private asyncError: Error | null = null;

  private module(code: string, label: string): GPUShaderModule {
    let m = this.modules.get(code);
    if (!m) {
      m = scoped(this.device, `compiling ${label}`, () => this.device.createShaderModule({ code, label }), (err) => (this.asyncError ??= err));
      this.modules.set(code, m);
      // Compiler messages carry line numbers; surface them instead of a bare validation error.
      m.getCompilationInfo?.().then((info) => {
        const errors = info.messages.filter((x) => x.type === 'error');
        if (errors.length) {
          // Replaces the generic validation error of the same failure: this one names the line.
          this.asyncError = new ShaderCompileError(
            `WGSL of ${label} does not compile:\n` + errors.map((x) => `  line ${x.lineNum}:${x.linePos}: ${x.message}`).join('\n'),
          );
        }
      });
    }
    return m;
  }

  private layout(key: string): { bgl: GPUBindGroupLayout; pl: GPUPipelineLayout } {
    let l = this.layouts.get(key);
    if (!l) {
      const entries: GPUBindGroupLayoutEntry[] = [
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
      ];
      for (let i = 0; i < key.length; i++) {
        entries.push({
          binding: i + 1,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: key[i] === 'w' ? 'storage' : 'read-only-storage' },
        });
      }
      const bgl = this.device.createBindGroupLayout({ entries });
      l = { bgl, pl: this.device.createPipelineLayout({ bindGroupLayouts: [bgl] }) };
      this.layouts.set(key, l);
    }
    return l;
  }

  pipeline(code: string, entry: string, layoutKey: string, constants?: Record<string, number>): GPUComputePipeline {
    const key = `${entry}|${layoutKey}|${JSON.stringify(constants ?? {})}|${code}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const module = this.module(code, entry);
      p = scoped(this.device, `creating pipeline '${entry}'`, () => this.device.createComputePipeline({
        label: entry,
        layout: this.layout(layoutKey).pl,
        compute: { module, entryPoint: entry, constants },
      }), (err) => (this.asyncError ??= err));
      this.pipelines.set(key, p);
    }
    return p;
  }

  /**
   * Compile every entry point of a WGSL source now and report compiler errors
   * with line numbers (pipeline creation errors are otherwise asynchronous).
   */
  async compileCheck(code: string, label: string): Promise<void> {
    const m = this.device.createShaderModule({ code, label });
    const info = await m.getCompilationInfo();
    const errors = info.messages.filter((x) => x.type === 'error');
    if (errors.length) {
      throw new ShaderCompileError(
        `WGSL in ${label} does not compile:\n` + errors.map((e) => `  line ${e.lineNum}:${e.linePos}: ${e.message}`).join('\n'),
      );
    }
  }

  /**
   * Encode one dispatch. `params` are packed as 32-bit words: numbers are u32
   * unless listed in `floats` (indices of f32 words) — or pass a prepared
   * ArrayBuffer.
   */
  dispatch(
    code: string,
    entry: string,
    params: ArrayBuffer,
    bindings: Binding[],
    workgroups: [number, number?, number?],
    constants?: Record<string, number>,
  ): void {
    this.checkLost();
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const maxWg = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxWg || y > maxWg || z > maxWg) {
      throw new GpuError(`${entry}: ${x}x${y}x${z} workgroups exceed maxComputeWorkgroupsPerDimension ${maxWg}`);
    }
    const layoutKey = bindings.map((b) => (b.write ? 'w' : 'r')).join('');
    const pipeline = this.pipeline(code, entry, layoutKey, constants);
    const { buffer, offset } = this.uniform(params);
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer, offset, size: Math.max(16, params.byteLength) } }];
    bindings.forEach((b, i) => {
      entries.push({ binding: i + 1, resource: { buffer: b.tensor.buffer, offset: 0, size: Math.max(4, b.tensor.size * 4) } });
    });
    const bindGroup = this.device.createBindGroup({ layout: this.layout(layoutKey).bgl, entries });
    const timestampWrites = this.timer?.wrap(entry);
    if (timestampWrites) {
      this.endPass();
      const p = this.enc().beginComputePass({ timestampWrites });
      p.setPipeline(pipeline);
      p.setBindGroup(0, bindGroup);
      p.dispatchWorkgroups(x, y, z);
      p.end();
    } else {
      const pass = this.computePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
    }
    this.dispatchCount++;
  }

  private uniform(params: ArrayBuffer): { buffer: GPUBuffer; offset: number } {
    let a = this.arenas[this.arenaIndex];
    if (!a || a.used + UNIFORM_SLOT > ARENA_BYTES) {
      if (a) this.arenaIndex++;
      a = this.arenas[this.arenaIndex];
      if (!a) {
        a = this.arenaFree.pop() ?? {
          buffer: this.device.createBuffer({ size: ARENA_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST }),
          bytes: new Uint8Array(ARENA_BYTES),
          used: 0,
        };
        a.used = 0;
        this.arenas[this.arenaIndex] = a;
      }
    }
    const offset = a.used;
    a.bytes.set(new Uint8Array(params), offset);
    a.used += UNIFORM_SLOT;
    return { buffer: a.buffer, offset };
  }

  private enc(): GPUCommandEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  private computePass(): GPUComputePassEncoder {
    if (!this.pass) this.pass = this.enc().beginComputePass();
    return this.pass;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Submit everything encoded so far. */
  flush(): void {
    this.endPass();
    if (this.encoder) {
      // Uniform arenas are written just before the submit that uses them;
      // queue order makes later writes invisible to this command buffer.
      for (let i = 0; i <= this.arenaIndex && i < this.arenas.length; i++) {
        const a = this.arenas[i];
        if (a.used) this.device.queue.writeBuffer(a.buffer, 0, a.bytes.buffer, 0, a.used);
      }
      this.device.queue.submit([this.encoder.finish()]);
      this.encoder = null;
      for (const b of this.staging) b.destroy();
      this.staging = [];
      this.arenaFree.push(...this.arenas);
      this.arenas = [];
      this.arenaIndex = 0;
    }
    for (const t of this.pendingRelease) this.pool.release(t.buffer);
    this.pendingRelease = [];
  }

  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.checkLost();
  }

  private checkLost(): void {
    if (this.ctx.lost) throw this.ctx.lost;
    const err = this.asyncError ?? this.pool.error;
    if (err) {
      this.asyncError = null;
      this.pool.error = null;
      throw err;
    }
  }
}

/** Pack uniform params: `u` words as u32, `f` words as f32, in the order given. */
export function params(...words: (number | { f: number } | { i: number })[]): ArrayBuffer {
  const n = Math.max(4, Math.ceil(words.length / 4) * 4);
  const buf = new ArrayBuffer(n * 4);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  const i32 = new Int32Array(buf);
  words.forEach((w, k) => {
    if (typeof w === 'number') u[k] = w >>> 0;
    else if ('f' in w) f[k] = w.f;
    else i32[k] = w.i;
  });
  return buf;
}
