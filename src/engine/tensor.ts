/**
 * A tensor is a GPU buffer from the pool with a row-major shape, f32 or i32
 * elements (4 bytes either way). `requiresGrad` marks trainable leaves and
 * everything computed from them; `grad` is allocated (zeroed) on first use by
 * backward kernels, which accumulate into it (llm.c style).
 */
import type { Engine } from './engine';

export class Tensor {
  private ownGrad: Tensor | null = null;
  requiresGrad = false;
  disposed = false;
  /** Set on reshaped aliases: the tensor that owns the buffer and the gradient. */
  base: Tensor | null = null;

  constructor(
    readonly engine: Engine,
    readonly shape: number[],
    readonly buffer: GPUBuffer,
    public name = '',
  ) {}

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
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
    const t = new Tensor(this.engine, shape, this.buffer, this.name);
    t.base = this.base ?? this;
    t.requiresGrad = this.requiresGrad;
    return t;
  }

  dispose(): void {
    if (this.disposed || this.base) return;
    this.disposed = true;
    this.engine.release(this);
    if (this.ownGrad) {
      this.ownGrad.dispose();
      this.ownGrad = null;
    }
  }

  read(): Promise<Float32Array> {
    return this.engine.read(this);
  }
}
