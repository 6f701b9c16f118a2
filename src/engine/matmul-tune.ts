/**
 * Matmul autotuning: which kernel (src/engine/ops/matmul.ts: v1, v3, v4, v5,
 * v6) runs a call is chosen per adapter and shape class by timing every
 * kernel that can run it, once, and remembered (IndexedDB in the browser, a
 * JSON file in Node: the host injects the store).
 *
 * A shape class is the layout (transA, transB), the power-of-two bucket of
 * M, N and K (⌈log2⌉), batched or not, the list of kernels that can run it
 * (the vec4 preconditions) and, for a packed B (f16 / bf16 base weights),
 * its dtype: each dtype has its own kernels' unpack cost, so f16 and bf16 are
 * timed apart from each other and from f32. Every call of a class runs the
 * same kernel.
 *
 * When: a call whose class is not in the table runs the default kernel and
 * leaves its class pending; `settle()` (the trainer calls it after its first
 * step) times the pending classes on operands of the call's shape: one
 * untimed dispatch (pipeline compilation), then as many as fit in
 * `budgetMs` (at least 1, at most 20), per kernel. The fastest wins. Classes
 * whose operands would take more than `maxBytes` of extra GPU memory (a
 * 128k-vocabulary head) are not timed and keep the default.
 *
 * Whether: on by default on GPUs; off on CPU adapters (SwiftShader), whose
 * measured default (v4, see matmulVariants) the bench's autotune table
 * confirms, and where runs must repeat bit for bit across hosts (kernels sum
 * in different orders, so a different choice changes the last bits).
 * PEFT_STUDIO_AUTOTUNE=on|off|auto (CLI) overrides.
 */
import type { Engine, MatmulChooser } from './engine';
import { isCpuAdapter, type GpuContext } from '../gpu/device';
import { matmulKernel, type MatmulKernelOptions, type MatmulVariant } from './ops/matmul';
import type { KeyValueStore } from '../hub/cache';
import { storageBytes, type StorageDtype } from './tensor';

export interface TuneEntry {
  variant: MatmulVariant;
  /** ms per call of each kernel timed, on the call that created the entry. */
  ms: Partial<Record<MatmulVariant, number>>;
  /** The timed call: M x N x K. */
  shape: [number, number, number];
}

/** Where one adapter's table lives between runs. */
export interface TuneStore {
  load(adapter: string): Promise<Record<string, TuneEntry>>;
  save(adapter: string, table: Record<string, TuneEntry>): Promise<void>;
}

export type AutotuneSetting = 'auto' | 'on' | 'off';

export function autotuneEnabled(info: GpuContext['adapterInfo'], setting: AutotuneSetting = 'auto'): boolean {
  return setting === 'on' || (setting === 'auto' && !isCpuAdapter(info));
}

/** The table key of an adapter: its reported identity. */
export function adapterKey(info: GpuContext['adapterInfo']): string {
  return [info.vendor, info.architecture, info.device, info.description].join('|');
}

export function shapeClass(M: number, N: number, K: number, o: MatmulKernelOptions, variants: MatmulVariant[], dtypeB: StorageDtype = 'f32'): string {
  const b = (x: number) => Math.ceil(Math.log2(Math.max(1, x)));
  // f32 keys are those of tables saved before packed B was tuned.
  const packed = dtypeB === 'f32' ? '' : ` B${dtypeB}`;
  return `tA${o.transA ? 1 : 0}tB${o.transB ? 1 : 0} M${b(M)} N${b(N)} K${b(K)} ${(o.batch ?? 1) > 1 ? 'batched' : 'single'} ${variants.join(',')}${packed}`;
}

interface Pending {
  M: number;
  N: number;
  K: number;
  o: MatmulKernelOptions;
  variants: MatmulVariant[];
  /** B's storage: the kernels are timed on a packed B of this dtype. */
  dtypeB?: StorageDtype;
}

export interface TunerOptions {
  budgetMs?: number;
  maxBytes?: number;
}

export class MatmulTuner implements MatmulChooser {
  readonly table = new Map<string, TuneEntry>();
  private pending = new Map<string, Pending>();
  private readonly budgetMs: number;
  private readonly maxBytes: number;

  constructor(
    readonly adapter: string,
    private store: TuneStore | null = null,
    opts: TunerOptions = {},
  ) {
    this.budgetMs = opts.budgetMs ?? 30;
    this.maxBytes = opts.maxBytes ?? 256 * 2 ** 20;
  }

  /** A tuner with the adapter's stored table (an unreadable store starts empty: tuning again is the fix). */
  static async open(e: Engine, store: TuneStore | null, opts: TunerOptions = {}): Promise<MatmulTuner> {
    const t = new MatmulTuner(adapterKey(e.ctx.adapterInfo), store, opts);
    const saved: Record<string, TuneEntry> = store ? await store.load(t.adapter).catch(() => ({})) : {};
    for (const [k, v] of Object.entries(saved)) t.table.set(k, v);
    return t;
  }

  choose(M: number, N: number, K: number, o: MatmulKernelOptions, variants: MatmulVariant[], dtypeB: StorageDtype = 'f32'): MatmulVariant | undefined {
    if (variants.length < 2) return undefined;
    const key = shapeClass(M, N, K, o, variants, dtypeB);
    const hit = this.table.get(key);
    if (hit) return variants.includes(hit.variant) ? hit.variant : undefined;
    if (!this.pending.has(key))
      this.pending.set(key, { M, N, K, o: { transA: o.transA, transB: o.transB, batch: o.batch, strideA: o.strideA, strideB: o.strideB }, variants, dtypeB });
    return undefined;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** Time every pending class, then save the table. */
  async settle(e: Engine): Promise<void> {
    if (!this.pending.size) return;
    const todo = [...this.pending.entries()];
    this.pending.clear();
    for (const [key, p] of todo) {
      const entry = await this.time(e, p);
      if (entry) this.table.set(key, entry);
    }
    await this.store?.save(this.adapter, Object.fromEntries(this.table)).catch(() => undefined);
  }

  /** Time each kernel on zero operands of the call's shape (B in the call's dtype); null when they would exceed maxBytes. */
  async time(e: Engine, p: Pending): Promise<TuneEntry | null> {
    const { M, N, K } = p;
    const dtypeB = p.dtypeB ?? 'f32';
    const batch = p.o.batch ?? 1;
    const aSize = batch * (p.o.strideA ?? M * K),
      bSize = batch * (p.o.strideB ?? K * N),
      cSize = batch * M * N;
    if (4 * (aSize + cSize) + storageBytes(bSize, dtypeB) > this.maxBytes) return null;
    e.beginScope();
    try {
      const A = e.zeros([aSize], 'tune.A'),
        B = dtypeB === 'f32' ? e.zeros([bSize], 'tune.B') : e.uploadPacked(new Uint16Array(bSize), [bSize], dtypeB, 'tune.B'),
        C = e.zeros([cSize], 'tune.C');
      const ms: Partial<Record<MatmulVariant, number>> = {};
      for (const variant of p.variants) {
        const run = () => matmulKernel(e, C, A, B, M, N, K, { ...p.o, variant });
        run();
        await e.sync();
        let t0 = performance.now();
        run();
        await e.sync();
        const once = performance.now() - t0;
        const reps = Math.max(1, Math.min(20, Math.floor(this.budgetMs / Math.max(once, 1e-3))));
        t0 = performance.now();
        for (let i = 0; i < reps; i++) run();
        await e.sync();
        ms[variant] = +((performance.now() - t0) / reps).toFixed(3);
      }
      const variant = p.variants.reduce((best, v) => (ms[v]! < ms[best]! ? v : best));
      return { variant, ms, shape: [M, N, K] };
    } finally {
      e.endScope();
    }
  }
}

/** The table in a key-value store (the browser's IndexedDB through idb-keyval): key `matmul-autotune:<adapter>`. */
export function keyValueTuneStore(kv: KeyValueStore): TuneStore {
  const key = (adapter: string) => `matmul-autotune:${adapter}`;
  return {
    async load(adapter) {
      const t = await kv.get(key(adapter));
      return t && typeof t === 'object' ? (t as Record<string, TuneEntry>) : {};
    },
    save: (adapter, table) => kv.set(key(adapter), table),
  };
}
