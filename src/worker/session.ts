/**
 * The run resident on the GPU: its model with the method attached, its
 * encoded data, and its trainer while it can still train. One at a time;
 * opening another run's session drops this one.
 */
import { validateConfig, type ExperimentConfig } from '../config/schema';
import type { SftDatasets } from '../data/sft';
import { ConfigError, EngineBusyError, HubError, type DeviceLostError } from '../errors';
import type { FileSource } from '../hub/index';
import { readAdapter } from '../methods/adapter-io';
import { padIdOf, prepareExperiment, type Prepared } from '../run/experiment';
import type { IdbRunStore, RunIndex, RunRecord } from '../run/idb-store';
import type { Trainer } from '../train/trainer';
import { loadExperimentData } from './data';
import type { DeviceSlot } from './device';
import type { BaseModel } from './model';
import type { UserData } from './user-data';

export interface Session {
  id: string;
  config: ExperimentConfig;
  prepared: Prepared;
  data: SftDatasets;
  trainer: Trainer | null;
  store: IdbRunStore;
}

export class Sessions {
  current: Session | null = null;
  /** The training in progress: its abort signal and how it should end. */
  control: { abort: AbortController; mode: 'pause' | 'stop' | null; onLost?: (err: DeviceLostError) => void } | null = null;
  /**
   * A job that lets others run between its batches (an evaluation) pins the
   * session: they may use it (generate with the same run) but not replace,
   * change or drop it.
   */
  private pin: { id: string; what: string } | null = null;

  constructor(
    private readonly device: DeviceSlot,
    private readonly base: BaseModel,
    private readonly data: UserData,
    private readonly runs: RunIndex,
  ) {
    device.onReset(() => (this.current = null));
  }

  /** Whether run `id` (or any run, without an id) is training in this worker now. */
  training(id?: string): boolean {
    return !!this.control && (id === undefined || this.current?.id === id);
  }

  /** Run `fn` with the run's session pinned (see `pin`). */
  async pinned<T>(id: string, what: string, fn: (s: Session) => Promise<T>): Promise<T> {
    const s = await this.open(id);
    this.pin = { id, what };
    try {
      return await fn(s);
    } finally {
      this.pin = null;
    }
  }

  /** Refuse to change the resident session while a pinned job uses it. */
  assertFree(action: string): void {
    if (this.pin) throw new EngineBusyError(`${this.pin.what} is using its run's model: wait for it or cancel it, then ${action}.`);
  }

  /** The run's model with its trained adapter, loading both when another run (or none) is resident. */
  async open(id: string): Promise<Session> {
    if (this.current?.id === id) return this.current;
    this.assertFree('use another run');
    const record = await this.runs.get(id);
    if (!record) throw new ConfigError(`Run ${id} does not exist.`);
    const config = validateConfig(record.config, `run ${record.name}`);
    const store = this.runs.store(id, config.save_total_limit);
    const adapter = await adapterSource(store);
    if (!adapter) throw new ConfigError(`Run ${record.name} has no adapter yet (no finished training and no checkpoint).`);
    await this.restoreInputs(record, store, config);
    this.drop();
    const e = await this.device.acquire();
    const prepared = await prepareExperiment(e, config, this.base.sourcesFor(config));
    prepared.method.importAdapter(await readAdapter(adapter));
    const data = await loadExperimentData(prepared.tokenizer, config, padIdOf(prepared.tokenizer), this.data.host());
    this.current = { id, config, prepared, data, trainer: null, store };
    return this.current;
  }

  /** What a run needs from the page after a reload: its picked model folder, its data file. */
  async restoreInputs(record: RunRecord, store: IdbRunStore, config: ExperimentConfig): Promise<void> {
    // A run on a picked folder's model needs that folder picked again after a reload.
    if (record.modelFolder && !this.base.folders.has(record.modelFolder)) {
      throw new ConfigError(`Run ${record.name} trained the model in the folder "${record.modelFolder}": pick that folder again in Model, then retry.`);
    }
    if (record.dataFile) await this.data.restore(store, record.dataFile);
    this.data.check(config);
  }

  drop(): void {
    const s = this.current;
    if (!s) return;
    this.assertFree('continue');
    this.current = null;
    s.trainer?.dispose();
    s.prepared.method.detach();
    s.prepared.model.dispose();
    s.prepared.model.e.flush();
  }
}

/** The run's adapter files: the final ones, else the newest checkpoint's. */
async function adapterSource(store: IdbRunStore): Promise<FileSource | null> {
  const files = new Map<string, Uint8Array>();
  const own = await store.readFile('adapter_model.safetensors');
  if (own) {
    for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
      const v = await store.readFile(f);
      if (v !== null) files.set(f, typeof v === 'string' ? new TextEncoder().encode(v) : v);
    }
  } else {
    const latest = await store.latestCheckpoint();
    const ckpt = latest ? await store.readCheckpoint(latest) : null;
    if (!ckpt?.['adapter_model.safetensors']) return null;
    for (const [k, v] of Object.entries(ckpt)) files.set(k, v);
  }
  return memorySource(`run:${store.runId}`, files);
}

/** A FileSource over files already in memory (a run's adapter). */
function memorySource(id: string, files: Map<string, Uint8Array>): FileSource {
  return {
    id,
    async get(path) {
      const f = files.get(path);
      if (!f) throw new HubError(`${id} has no ${path}.`, `${id}/${path}`, 404);
      return f;
    },
    async has(path) {
      return files.has(path);
    },
  };
}
