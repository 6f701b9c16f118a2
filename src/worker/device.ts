/**
 * The worker's one GPU device, acquired on first use and again after a loss,
 * and the queue that runs GPU work one call at a time, in call order. A long
 * job (an evaluation) calls yieldTurn() between batches, so calls queued
 * meanwhile (a Playground generation) run there instead of waiting for it.
 *
 * Holders of GPU objects (the base model, a run's session) register a reset
 * callback: when a lost device is replaced, what lived on it is dropped.
 */
import { Engine } from '../engine/engine';
import { acquireDevice } from '../gpu/device';
import { MatmulTuner, autotuneEnabled, keyValueTuneStore } from '../engine/matmul-tune';
import { idbKeyValueStore } from '../hub/cache';
import type { DeviceLostError } from '../errors';
import { KEY_LIMITS, type GpuInfo } from './api';

export class DeviceSlot {
  private engine: Promise<Engine> | null = null;
  private busy = false;
  private readonly waiting: (() => void)[] = [];
  private readonly resets: (() => void)[] = [];
  private readonly losses: ((err: DeviceLostError) => void)[] = [];

  constructor(private readonly gpu: GPU | undefined) {}

  /** Called when a lost device is replaced by a new one. */
  onReset(fn: () => void): void {
    this.resets.push(fn);
  }

  /** Called at once when the device is lost (its lost promise settles), before any call notices. */
  onLost(fn: (err: DeviceLostError) => void): void {
    this.losses.push(fn);
  }

  /**
   * Test hook (the device-loss e2e test): destroy the device from outside
   * the engine, as a driver reset would; the loss is reported as a real one.
   */
  async simulateLoss(): Promise<void> {
    const e = await this.engine;
    e?.device.destroy();
  }

  /** The engine, acquiring the device on first use and again after a device loss. */
  acquire(): Promise<Engine> {
    const current = this.engine;
    if (current) {
      return current.then((e) => {
        if (!e.ctx.lost) return e;
        for (const fn of this.resets) fn();
        this.engine = null;
        return this.acquire();
      });
    }
    const next = acquireDevice(this.gpu, { onLost: (err) => this.losses.forEach((fn) => fn(err)) }).then(async (ctx) => {
      const e = new Engine(ctx);
      // Matmul kernels per shape class, timed once per adapter and kept in IndexedDB (GPUs; SwiftShader keeps its measured default).
      if (autotuneEnabled(ctx.adapterInfo)) e.matmulTuner = await MatmulTuner.open(e, keyValueTuneStore(idbKeyValueStore('peft-studio-autotune', 'tables')));
      return e;
    });
    // A failed acquisition is retried on the next call (the user may change a flag and retry).
    next.catch(() => {
      if (this.engine === next) this.engine = null;
    });
    this.engine = next;
    return next;
  }

  /** Run `fn` after every GPU call queued before it (one at a time on the device). */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    await this.lock();
    try {
      return await fn();
    } finally {
      this.unlock();
    }
  }

  /** Inside an exclusive job: let the calls queued since it began run, then continue after them. */
  async yieldTurn(): Promise<void> {
    if (!this.waiting.length) return;
    this.unlock();
    await this.lock();
  }

  private lock(): Promise<void> {
    if (!this.busy) {
      this.busy = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Hand the device to the next queued call (it stays busy), or free it. */
  private unlock(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.busy = false;
  }

  async info(): Promise<GpuInfo> {
    const { ctx } = await this.acquire();
    const limits: Record<string, number> = {};
    for (const k of KEY_LIMITS) limits[k] = ctx.limits[k];
    return { adapter: { ...ctx.adapterInfo }, features: [...ctx.features].sort(), limits };
  }
}
