/**
 * Training runs in the worker: start, resume, pause, stop, list, delete.
 * Training goes through src/run/experiment.ts and ends through
 * src/run/finish.ts, the same wiring as `peft-studio train`, so a config and
 * seed give the CLI's losses and the CLI's files.
 */
import { validateConfig } from '../config/schema';
import { ConfigError, PeftStudioError, type DeviceLostError } from '../errors';
import { methodNameFor } from '../methods/registry';
import { createTrainer, padIdOf, prepareExperiment } from '../run/experiment';
import { finishTraining } from '../run/finish';
import { newRunId, type IdbRunStore, type RunIndex, type RunRecord } from '../run/idb-store';
import type { ExperimentConfig } from '../config/schema';
import type { LogPoint, RunInfo, TrainCallbacks } from './api';
import { datasetInfoJson, loadExperimentData, USER_DATASET_INFO } from './data';
import type { DeviceSlot } from './device';
import { throttle, type BaseModel } from './model';
import type { Sessions } from './session';
import type { UserData } from './user-data';

export class Runs {
  constructor(
    private readonly device: DeviceSlot,
    private readonly base: BaseModel,
    private readonly data: UserData,
    private readonly sessions: Sessions,
    readonly index: RunIndex,
  ) {
    // A lost device is reported the moment it happens, not when the next GPU call fails.
    device.onLost((err) => this.sessions.control?.onLost?.(err));
  }

  start(raw: Record<string, unknown>, cb: TrainCallbacks): Promise<RunInfo> {
    return this.device.exclusive(async () => {
      const config = validateConfig(raw, 'studio');
      // A missing data file fails before anything is downloaded.
      this.data.check(config);
      await this.device.acquire();
      const id = newRunId();
      const own = this.data.of(config);
      const now = Date.now();
      const record: RunRecord = {
        id,
        name: config.run_name ?? `${methodNameFor(config)} · ${config.model_name_or_path}`,
        createdAt: now,
        updatedAt: now,
        status: 'running',
        config,
        dataFile: own.files[0],
        step: 0,
        totalSteps: 0,
        trainableParams: 0,
        numParams: 0,
        modelFolder: this.base.folders.has(String(config.model_name_or_path)) ? String(config.model_name_or_path) : undefined,
      };
      await this.index.put(record);
      const store = this.index.store(id, config.save_total_limit);
      try {
        // Picked files (and their column mapping) travel with the run: a resume after a reload needs nothing from the page.
        for (const f of own.files) await store.writeFile(`data/${f}`, this.data.files.get(f)!);
        if (own.entries.length) await store.writeFile(USER_DATASET_INFO, datasetInfoJson(own.entries));
        await this.load(id, config, store, cb, false);
      } catch (err) {
        await this.fail(id, err);
        throw err;
      }
      return this.drive(cb);
    });
  }

  resume(id: string, cb: TrainCallbacks): Promise<RunInfo> {
    return this.device.exclusive(async () => {
      const record = await this.index.get(id);
      if (!record) throw new ConfigError(`Run ${id} does not exist.`);
      if (record.status === 'done' || record.status === 'stopped') throw new ConfigError(`Run ${record.name} has finished; start a new run to train further.`);
      const s = this.sessions.current;
      if (s?.id !== id || !s.trainer) {
        const config = validateConfig(record.config, `run ${record.name}`);
        const store = this.index.store(id, config.save_total_limit);
        await this.sessions.restoreInputs(record, store, config);
        await this.load(id, config, store, cb, true);
      }
      return this.drive(cb);
    });
  }

  /** Model, method, data and trainer of a run become the session; `resume` reads the newest checkpoint. */
  private async load(id: string, config: ExperimentConfig, store: IdbRunStore, cb: TrainCallbacks, resume: boolean): Promise<void> {
    this.sessions.drop();
    const e = await this.device.acquire();
    const report = throttle(cb.onProgress ? (p) => cb.onProgress!(p) : undefined);
    const prepared = await prepareExperiment(e, config, this.base.sourcesFor(config), { onProgress: report.push });
    report.flush();
    const data = await loadExperimentData(prepared.tokenizer, config, padIdOf(prepared.tokenizer), this.data.host());
    const trainer = createTrainer(e, prepared, data, config, store);
    // The newest complete checkpoint: weights, optimizer moments, step and log (the trainer cuts the stored log back to it).
    if (resume) await trainer.resume();
    this.sessions.current = { id, config, prepared, data, trainer, store };
    await this.index.update(id, {
      step: trainer.step,
      totalSteps: trainer.totalSteps,
      trainableParams: trainer.trainableCount(),
      numParams: prepared.model.numParams(),
      // As the CLI decides NotMergeableError: the method's folder declares merge or not.
      mergeable: !!prepared.method.merge,
    });
  }

  pause(): void {
    this.end('pause');
  }

  stop(): void {
    this.end('stop');
  }

  private end(mode: 'pause' | 'stop'): void {
    const control = this.sessions.control;
    if (!control) return;
    control.mode = mode;
    control.abort.abort();
  }

  /** Run the session's trainer until it ends, pauses or stops; record the outcome. */
  private async drive(cb: TrainCallbacks): Promise<RunInfo> {
    const s = this.sessions.current!;
    const trainer = s.trainer!;
    const control: NonNullable<Sessions['control']> = { abort: new AbortController(), mode: null };
    this.sessions.control = control;
    let lost: DeviceLostError | null = null;
    control.onLost = (err) => {
      lost = err;
      // What lived on the device is gone: a resume loads the run again from its newest checkpoint.
      if (this.sessions.current === s) this.sessions.current = null;
      control.abort.abort();
      void this.lostRun(s.id, err, trainer.step).then((info) => info && cb.onStatus?.(info));
    };
    cb.onStatus?.(await this.info(await this.index.update(s.id, { status: 'running', error: undefined })));
    try {
      await trainer.run({
        signal: control.abort.signal,
        onStep: (step, total) => cb.onStep?.(step, total),
        onLog: (entry) => cb.onLog?.(entry),
        onEvaluate: (done, total) => cb.onEvaluate?.(done, total),
      });
      if (lost) throw lost;
      if (control.mode === 'pause' && trainer.step < trainer.totalSteps) {
        await trainer.saveCheckpoint();
        const info = await this.info(await this.index.update(s.id, { status: 'paused', step: trainer.step }));
        cb.onStatus?.(info);
        return info;
      }
      const status = control.mode === 'stop' && trainer.step < trainer.totalSteps ? 'stopped' : 'done';
      const summary = await finishTraining(trainer, s.prepared.method, s.store, this.base.sourcesFor(s.config).model, s.prepared.model.e.pool.peak);
      // The optimizer moments are no longer needed: free them; the adapter stays attached for evaluation.
      trainer.dispose();
      s.trainer = null;
      const info = await this.info(await this.index.update(s.id, { status, step: trainer.step, summary }));
      cb.onStatus?.(info);
      return info;
    } catch (err) {
      // A step cut short by a lost device fails in whatever GPU call it was in ("Failed to execute mapAsync"),
      // sometimes before device.lost settles: give it a moment, then report the loss itself.
      const e = s.prepared.model.e;
      if (!lost && !e.ctx.lost && !(err instanceof PeftStudioError)) await Promise.race([e.device.lost, new Promise((r) => setTimeout(r, 2000))]);
      const cause = lost ?? e.ctx.lost;
      if (cause) {
        if (this.sessions.current === s) this.sessions.current = null;
        const info = await this.lostRun(s.id, cause, trainer.step);
        if (info) cb.onStatus?.(info);
        throw cause;
      }
      await this.fail(s.id, err, trainer.step);
      const record = await this.index.get(s.id);
      if (record) cb.onStatus?.(await this.info(record));
      throw err;
    } finally {
      this.sessions.control = null;
    }
  }

  /** Mark a run whose device was lost as failed and resumable from its newest checkpoint (the UI offers Resume). */
  private async lostRun(id: string, err: DeviceLostError, step: number): Promise<RunInfo | null> {
    const checkpoint = await this.index.store(id).latestCheckpoint();
    const next = checkpoint ? `Resume continues from ${checkpoint}.` : 'No checkpoint was saved yet: start the run again.';
    const record = await this.index
      .update(id, { status: 'failed', step, error: `${err.name}: The GPU device was lost (${err.reason}) during training. ${next}` })
      .catch(() => null);
    return record ? this.info(record) : null;
  }

  private async fail(id: string, err: unknown, step?: number): Promise<void> {
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    await this.index.update(id, { status: 'failed', error: message, ...(step !== undefined ? { step } : {}) }).catch(() => undefined);
  }

  async list(): Promise<RunInfo[]> {
    const sizes = await this.index.sizes();
    return Promise.all((await this.index.list()).map((r) => this.info(r, sizes)));
  }

  async log(id: string): Promise<LogPoint[]> {
    const lines = await this.index.store(id).readLog();
    return lines.map((l) => JSON.parse(l) as LogPoint);
  }

  delete(id: string): Promise<void> {
    if (this.sessions.training(id)) throw new ConfigError('This run is training: stop it before deleting it.');
    return this.device.exclusive(async () => {
      if (this.sessions.current?.id === id) this.sessions.drop();
      await this.index.delete(id);
    });
  }

  async info(r: RunRecord, sizes?: Map<string, number>): Promise<RunInfo> {
    const store = this.index.store(r.id);
    // A run marked running that this worker is not training was interrupted (tab closed, crash).
    const status = r.status === 'running' && !this.sessions.training(r.id) ? 'failed' : r.status;
    return {
      id: r.id,
      name: r.name,
      createdAt: r.createdAt,
      updatedAt: r.updatedAt,
      status,
      config: r.config,
      method: methodNameFor(r.config),
      step: r.step,
      totalSteps: r.totalSteps,
      trainableParams: r.trainableParams,
      numParams: r.numParams,
      mergeable: r.mergeable,
      summary: r.summary,
      metrics: r.metrics,
      error: status !== r.status ? 'The run was interrupted (the tab was closed or crashed) while training.' : r.error,
      checkpoints: (await store.listCheckpoints()).sort((a, b) => stepOf(a) - stepOf(b)),
      files: (await store.listFiles()).filter((f) => !f.startsWith('data/')).sort(),
      bytes: sizes?.get(r.id) ?? 0,
    };
  }
}

function stepOf(name: string): number {
  return Number(/(\d+)$/.exec(name)?.[1] ?? -1);
}
