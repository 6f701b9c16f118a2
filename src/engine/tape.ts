/**
 * The tape: ops push a closure that encodes their backward dispatches while
 * the forward runs; `backward` replays them in reverse. An op records only when
 * one of its inputs requires grad, and each backward closure skips the
 * gradient of any frozen input, so frozen weights cost no weight-gradient
 * kernels at all.
 */
import type { Tensor } from './tensor';

/** Where a training forward sits in its run: what its random draws (dropout masks) are functions of. */
export interface TapeOptions {
  /** The run's seed (config `seed`). Default 0. */
  seed?: number;
  /** The micro-batch number counted from the start of the run (step · accumulation + i). Default 0. */
  microBatch?: number;
}

export class Tape {
  private entries: { name: string; fn: () => void }[] = [];
  readonly seed: number;
  readonly microBatch: number;
  private draws = new Map<string, number>();

  constructor(opts: TapeOptions = {}) {
    this.seed = (opts.seed ?? 0) >>> 0;
    this.microBatch = (opts.microBatch ?? 0) >>> 0;
  }

  /**
   * How many random draws call site `site` has made in this forward before
   * this one (0, 1, ...). With the seed and the micro-batch it names a draw
   * without any counter that outlives the tape, so a resumed run repeats the
   * masks of an uninterrupted one (see dropoutSeed in ops/dropout.ts).
   */
  nextDraw(site: string): number {
    const n = this.draws.get(site) ?? 0;
    this.draws.set(site, n + 1);
    return n;
  }

  record(name: string, fn: () => void): void {
    this.entries.push({ name, fn });
  }

  /**
   * A tape for a recomputed region (src/engine/checkpoint.ts): it records the
   * region's backward on its own and, where random draws depend on the tape
   * (which forward this is, how many draws came before), it continues from
   * this tape's state, so the region's first run and its recomputation draw
   * the same numbers as an unrecomputed forward would.
   */
  fork(): Tape {
    const t = new Tape({ seed: this.seed, microBatch: this.microBatch });
    t.draws = new Map(this.draws);
    return t;
  }

  /** Continue after a region's first run: take over its random-draw state (see fork). */
  join(region: Tape): void {
    this.draws = new Map(region.draws);
  }

  get length(): number {
    return this.entries.length;
  }

  /** Seed d(loss)/d(out) = `seed` (a constant or one value per element) and run every recorded backward in reverse. */
  backward(loss: Tensor, seed: number | Float32Array = 1): void {
    const g = loss.gradOrZeros();
    loss.engine.write(g, typeof seed === 'number' ? new Float32Array(loss.size).fill(seed) : seed);
    this.replay();
  }

  /** Run every recorded backward in reverse, the outputs' gradients already in place, and forget them. */
  replay(): void {
    for (let i = this.entries.length - 1; i >= 0; i--) this.entries[i].fn();
    this.entries = [];
  }
}

export function needsGrad(...ts: (Tensor | null | undefined)[]): boolean {
  return ts.some((t) => t?.requiresGrad);
}
