/**
 * A tensor is a GPU buffer from the pool with a row-major shape, f32 or i32
 * elements (4 bytes either way). `requiresGrad` marks trainable leaves and
 * everything computed from them; `grad` is allocated (zeroed) on first use by
 * backward kernels, which accumulate into it (llm.c style).
 */
import type { Engine } from './engine';

export class Tensor {
  grad: Tensor | null = null;
  requiresGrad = false;
  disposed = false;

  constructor(
    readonly engine: Engine,
    readonly shape: number[],
    readonly buffer: GPUBuffer,
    public name = '',
  ) {}

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** The zero-initialised gradient buffer, allocated on first call. */
  gradOrZeros(): Tensor {
    if (!this.grad) {
      this.grad = this.engine.zeros(this.shape, this.name ? `${this.name}.grad` : 'grad');
    }
    return this.grad;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.engine.release(this);
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  read(): Promise<Float32Array> {
    return this.engine.read(this);
  }
}
