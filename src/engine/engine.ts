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
import { GpuError, ModelFormatError, ShaderCompileError } from '../errors';
import { f16ToF32 } from '../model/safetensors';
import { scoped, type GpuContext } from '../gpu/device';
import { Tensor, storageBytes, type StorageDtype } from './tensor';
import type { Tape } from './tape';
import type { MatmulKernelOptions, MatmulVariant } from './ops/matmul';

/** Picks a matmul kernel per call (the autotuner, src/engine/matmul-tune.ts); undefined keeps the default. `dtypeB`: B's storage (packed f16 / bf16 weights are read by their own kernels). */
export interface MatmulChooser {
  choose(M: number, N: number, K: number, o: MatmulKernelOptions, variants: MatmulVariant[], dtypeB?: StorageDtype): MatmulVariant | undefined;
  /** Decide the calls left undecided since the last settle (time them); the trainer calls it after its first step. */
  settle?(e: Engine): Promise<void>;
}

export interface Binding {
  tensor: Tensor;
  write?: boolean;
  /** The kernel reads this binding as packed 16-bit floats (array<u32>); only such bindings may hold a packed tensor. */
  packed?: boolean;
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
  /** Optional matmul kernel choice per shape class (autotuned); null: every call runs the measured default. */
  matmulTuner: MatmulChooser | null = null;
  /** Optional per-kernel timer (timestamp queries); see ./timer.ts. */
  timer: { wrap(name: string): GPUComputePassTimestampWrites | undefined } | null = null;

  /**
   * The largest tensor (bytes) bound in one piece: weights above it are split
   * into row blocks at load. The device's limits by default (acquireDevice
   * requests the adapter's largest); tests lower it to make splitting run on
   * small models. Never above the device's own limits.
   */
  maxBindingBytes: number;

  constructor(readonly ctx: GpuContext) {
    this.device = ctx.device;
    this.maxBindingBytes = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
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

  /** An uninitialised tensor stored as packed 16-bit floats (see Tensor). */
  emptyPacked(shape: number[], dtype: Exclude<StorageDtype, 'f32'>, name?: string): Tensor {
    this.checkLost();
    const n = shape.reduce((a, b) => a * b, 1);
    const t = new Tensor(this, shape, this.pool.acquire(storageBytes(n, dtype), name), name, dtype);
    this.scopes.at(-1)?.add(t);
    return t;
  }

  /** Upload 16-bit float bits (f16 or bf16, one value per u16) as a packed tensor. */
  uploadPacked(bits: Uint16Array, shape: number[], dtype: Exclude<StorageDtype, 'f32'>, name?: string): Tensor {
    const t = this.emptyPacked(shape, dtype, name);
    if (bits.length !== t.size) throw new GpuError(`uploadPacked: ${bits.length} values for tensor '${name}' of ${t.size}`);
    // Odd counts are padded to a whole word.
    const words = bits.length % 2 ? Uint16Array.from({ length: bits.length + 1 }, (_, i) => bits[i] ?? 0) : bits;
    this.writeBytes(t, new Uint8Array(words.buffer, words.byteOffset, words.byteLength));
    return t;
  }

  /**
   * A tensor made of row blocks (each a tensor of `shape[1..]` rows, in
   * order, together covering shape[0] rows); it owns the blocks.
   */
  splitTensor(shape: number[], blocks: Tensor[], name?: string): Tensor {
    const rows = blocks.reduce((a, b) => a + b.shape[0], 0);
    if (rows !== shape[0]) throw new GpuError(`splitTensor ${name}: blocks hold ${rows} rows, the shape [${shape}] has ${shape[0]}`);
    const t = new Tensor(this, shape, null, name, blocks[0].dtype);
    let r = 0;
    for (const b of blocks) {
      this.persist(b);
      b.rowStart = r;
      r += b.shape[0];
    }
    t.blocks = blocks;
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
    if (arr.length !== t.size) {
      throw new ModelFormatError(
        `Tensor '${t.name}' [${t.shape.join(', ')}] holds ${t.size} values, but ${arr.length} were given to it: the file (adapter, checkpoint or weights) was made for another shape (rank, target modules, model or config). Use files made for this model and config.`,
      );
    }
    if (t.packed) throw new GpuError(`write: '${t.name}' is stored as packed ${t.dtype}; take it as f32 first (model.param unpacks a base weight)`);
    this.writeBytes(t, new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength));
  }

  private writeBytes(t: Tensor, arr: Uint8Array): void {
    if (arr.byteLength > 1 << 20 || arr.byteLength === 0) {
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

  /** The values as f32 on the host: packed tensors are unpacked, split tensors joined. */
  async read(t: Tensor): Promise<Float32Array> {
    if (t.blocks) {
      const out = new Float32Array(t.size);
      let at = 0;
      for (const b of t.blocks) {
        const part = await this.read(b);
        out.set(part, at);
        at += part.length;
      }
      return out;
    }
    if (t.packed) {
      const h = new Uint16Array(await this.readBytes(t, 0, t.byteSize / 4), 0, t.size);
      return unpackHalves(h, t.dtype);
    }
    return new Float32Array(await this.readBytes(t));
  }

  async readInt(t: Tensor): Promise<Int32Array> {
    return new Int32Array(await this.readBytes(t));
  }

  /** Read `n` elements starting at element `offset` (e.g. the last row of logits). */
  async readRegion(t: Tensor, offset: number, n: number): Promise<Float32Array> {
    if (t.packed) throw new GpuError(`readRegion: '${t.name}' is packed ${t.dtype}; read it whole`);
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
    if (t.packed) throw new GpuError(`clear: '${t.name}' is stored as packed ${t.dtype}`);
    this.endPass();
    this.enc().clearBuffer(t.buffer, 0, Math.ceil((t.size * 4) / 4) * 4);
  }

  copy(dst: Tensor, src: Tensor): void {
    this.copyRegion(dst, 0, src, 0, src.size);
  }

  /** Copy `n` elements from src[srcOffset..] to dst[dstOffset..] (offsets in elements). */
  copyRegion(dst: Tensor, dstOffset: number, src: Tensor, srcOffset: number, n: number): void {
    if (n === 0) return;
    if (dst.packed || src.packed)
      throw new GpuError(`copyRegion: '${(dst.packed ? dst : src).name}' is stored as packed ${(dst.packed ? dst : src).dtype}; copy f32 tensors only`);
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
      m = scoped(
        this.device,
        `compiling ${label}`,
        () => this.device.createShaderModule({ code, label }),
        (err) => (this.asyncError ??= err),
      );
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
      const entries: GPUBindGroupLayoutEntry[] = [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } }];
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
      p = scoped(
        this.device,
        `creating pipeline '${entry}'`,
        () =>
          this.device.createComputePipeline({
            label: entry,
            layout: this.layout(layoutKey).pl,
            compute: { module, entryPoint: entry, constants },
          }),
        (err) => (this.asyncError ??= err),
      );
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
      throw new ShaderCompileError(`WGSL in ${label} does not compile:\n` + errors.map((e) => `  line ${e.lineNum}:${e.linePos}: ${e.message}`).join('\n'));
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
    const maxBinding = this.ctx.limits.maxStorageBufferBindingSize;
    for (const b of bindings) {
      if (b.tensor.packed && !b.packed) {
        throw new GpuError(
          `${entry}: '${b.tensor.name}' is stored as packed ${b.tensor.dtype} but this kernel reads f32; take the weight as f32 first (model.param unpacks a base weight)`,
        );
      }
      if (b.tensor.byteSize > maxBinding) {
        throw new GpuError(
          `${entry}: '${b.tensor.name}' [${b.tensor.shape}] takes ${b.tensor.byteSize} bytes, above this adapter's maxStorageBufferBindingSize ${maxBinding}: use a smaller batch or sequence length.`,
        );
      }
    }
    const layoutKey = bindings.map((b) => (b.write ? 'w' : 'r')).join('');
    const pipeline = this.pipeline(code, entry, layoutKey, constants);
    const { buffer, offset } = this.uniform(params);
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer, offset, size: Math.max(16, params.byteLength) } }];
    bindings.forEach((b, i) => {
      entries.push({ binding: i + 1, resource: { buffer: b.tensor.buffer, offset: 0, size: Math.max(4, b.tensor.byteSize) } });
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

/** f16 or bf16 bits → f32 (bf16 is the top half of an f32; f16 through a table). */
export function unpackHalves(h: Uint16Array, dtype: StorageDtype): Float32Array {
  if (dtype === 'bf16') {
    const bits = new Uint32Array(h.length);
    for (let i = 0; i < h.length; i++) bits[i] = h[i] << 16;
    return new Float32Array(bits.buffer);
  }
  halfTable ??= Float32Array.from({ length: 65536 }, (_, i) => f16ToF32(i));
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) out[i] = halfTable[h[i]];
  return out;
}
let halfTable: Float32Array | null = null;

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
