/**
 * A tensor is a GPU buffer from the pool with a row-major shape, f32 or i32
 * elements (4 bytes either way). `requiresGrad` marks trainable leaves and
 * everything computed from them; `grad` is allocated (zeroed) on first use by
 * backward kernels, which accumulate into it (llm.c style).
 *
 * Frozen base weights may be stored compactly (`dtype` 'f16' or 'bf16'): two
 * 16-bit values per u32 word, element 2i in the low half (little-endian, as
 * safetensors stores them), so the buffer holds ceil(size / 2) words. Only
 * kernels that declare a binding `packed` read such a tensor (the engine
 * refuses any other binding), and `Engine.read` unpacks it on the host.
 *
 * A tensor larger than the device's storage-binding limit is split into row
 * blocks (`blocks`, each a tensor of its own over rows [rowStart, rowStart +
 * rows)); the split tensor has no buffer, and only ops that walk its blocks
 * (embedding, the logits matmul) accept it.
 */
import type { Engine } from './engine';

/** How a tensor's elements are stored: f32 (or i32), or two 16-bit floats per u32. */
export type StorageDtype = 'f32' | 'f16' | 'bf16';

/** Bytes a tensor of `n` elements takes in `dtype` (packed: whole u32 words). */
export function storageBytes(n: number, dtype: StorageDtype): number {
  return dtype === 'f32' ? n * 4 : Math.ceil(n / 2) * 4;
}

export class Tensor {
  private ownGrad: Tensor | null = null;
  requiresGrad = false;
  disposed = false;
  /** Set on reshaped aliases: the tensor that owns the buffer and the gradient. */
  base: Tensor | null = null;
  /** Row blocks of a split tensor (see the header), in row order; null otherwise. */
  blocks: Tensor[] | null = null;
  /** First row of this tensor inside the split tensor it is a block of (0 otherwise). */
  rowStart = 0;

  constructor(
    readonly engine: Engine,
    readonly shape: number[],
    private readonly buf: GPUBuffer | null,
    public name = '',
    readonly dtype: StorageDtype = 'f32',
  ) {}

  get buffer(): GPUBuffer {
    if (!this.buf) {
      throw new Error(
        `${this.name || 'tensor'} [${this.shape}] is split into ${this.blocks?.length ?? 0} row blocks (larger than one storage binding); this op does not take split tensors`,
      );
    }
    return this.buf;
  }

  /** Whether the tensor is stored as packed 16-bit floats. */
  get packed(): boolean {
    return this.dtype !== 'f32';
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Bytes of its storage (the bound range of its buffer). */
  get byteSize(): number {
    return storageBytes(this.size, this.dtype);
  }

  get grad(): Tensor | null {
    return this.base ? this.base.grad : this.ownGrad;
  }

  set grad(g: Tensor | null) {
    if (this.base) this.base.grad = g;
    else this.ownGrad = g;
  }

  /** The zero-initialised gradient buffer, allocated on first call (shared with aliases). */
  gradOrZeros(): Tensor {
    if (this.base) return this.base.gradOrZeros();
    if (this.packed || this.blocks) {
      throw new Error(
        `${this.name || 'tensor'} is a frozen base weight stored ${this.packed ? `as packed ${this.dtype}` : 'in row blocks'} and gets no gradient; a method that trains it must take it as f32 (model.param) first`,
      );
    }
    if (!this.ownGrad) {
      // The gradient lives as long as its tensor (disposed with it), not as long as
      // the scope that happens to run backward: a parameter's gradient must
      // survive the micro-batch scope for accumulation, clipping and the update.
      this.ownGrad = this.engine.persist(this.engine.zeros(this.shape, this.name ? `${this.name}.grad` : 'grad'));
    }
    return this.ownGrad;
  }

  /**
   * The same elements under another shape. The alias shares the buffer and
   * the gradient with this tensor, so autograd flows through it.
   */
  reshape(shape: number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== this.size) throw new Error(`reshape: cannot view ${this.name || 'tensor'} [${this.shape}] as [${shape}]`);
    return this.alias(shape);
  }

  /** A leading slice of the buffer seen under `shape` (KV caches); no gradient of its own. */
  prefix(shape: number[]): Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n > this.size) throw new Error(`prefix: [${shape}] is larger than ${this.name || 'tensor'} [${this.shape}]`);
    return this.alias(shape);
  }

  private alias(shape: number[]): Tensor {
    if (this.blocks) throw new Error(`${this.name || 'tensor'} is split into row blocks and cannot be viewed as [${shape}]`);
    const t = new Tensor(this.engine, shape, this.buffer, this.name, this.dtype);
    t.base = this.base ?? this;
    t.requiresGrad = this.requiresGrad;
    return t;
  }

  dispose(): void {
    if (this.disposed || this.base) return;
    this.disposed = true;
    if (this.blocks) for (const b of this.blocks) b.dispose();
    else this.engine.release(this);
    if (this.ownGrad) {
      this.ownGrad.dispose();
      this.ownGrad = null;
    }
  }

  read(): Promise<Float32Array> {
    return this.engine.read(this);
  }
}
