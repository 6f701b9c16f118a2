/**
 * Starting, resuming, pausing and stopping runs from any screen, with the
 * live state (log, step) the Train screen draws. The worker does the work;
 * these only pass callbacks and record what comes back.
 */
import type { LoadProgress, LogPoint, RunInfo, TrainCallbacks } from '../worker/api';
import { proxy } from './engine';
import { describeError, type Problem } from './errors';
import { emptyLive, studio } from './studio.svelte';

/** Download progress of the run's model, per file (shown while a run starts). */
export const loadFiles: { list: LoadProgress[] } = $state({ list: [] });

/** A resumed run's stored log is fetched once the worker has cut it back to the checkpoint. */
let reloadLogFor: string | null = null;

async function reloadLog(run: RunInfo): Promise<void> {
  const engine = studio.engine;
  if (!engine) return;
  const stored = await engine.call(engine.api.runLog(run.id));
  // Entries up to the checkpoint come from storage; anything newer arrived live meanwhile.
  const live = studio.live.log.filter((l) => l.current_steps > run.step);
  studio.live.log = [...stored.filter((l) => l.current_steps <= run.step), ...live];
}

function callbacks(): TrainCallbacks {
  return proxy({
    onProgress(p: LoadProgress) {
      const i = loadFiles.list.findIndex((f) => f.file === p.file);
      if (i < 0) loadFiles.list.push(p);
      else loadFiles.list[i] = p;
    },
    onStep(step: number, total: number) {
      studio.live.step = step;
      studio.live.total = total;
    },
    onEvaluate(done: number, total: number) {
      const now = performance.now();
      const e = studio.live.evaluating;
      if (done < total) studio.live.evaluating = { done, total, since: e?.since ?? now };
      else {
        // The ETA is per training step: time spent evaluating does not count.
        if (e) studio.live.startedAt += now - e.since;
        studio.live.evaluating = null;
      }
    },
    onLog(entry: LogPoint) {
      studio.live.log.push(entry);
    },
    onStatus(run: RunInfo) {
      studio.live.run = run;
      studio.currentRunId = run.id;
      if (run.status === 'running') {
        if (reloadLogFor === run.id) {
          reloadLogFor = null;
          reloadLog(run).catch(() => undefined);
        }
        studio.live.startedAt = performance.now();
        studio.live.stepAtStart = run.step;
        studio.live.total = run.totalSteps;
      }
    },
  });
}

async function drive(pending: (cb: TrainCallbacks) => Promise<RunInfo>): Promise<Problem | null> {
  const engine = studio.engine;
  if (!engine || studio.training) return null;
  studio.training = true;
  studio.storageProblem = null;
  loadFiles.list = [];
  try {
    studio.live.run = await engine.call(pending(callbacks()));
    return null;
  } catch (err) {
    const problem = describeError(err);
    if (problem.name === 'StorageQuotaError') studio.storageProblem = problem;
    return problem;
  } finally {
    studio.training = false;
    studio.live.evaluating = null;
    await studio.refreshRuns().catch(() => undefined);
  }
}

export function startRun(): Promise<Problem | null> {
  const config = studio.validation.config;
  const engine = studio.engine;
  if (!config || !engine) return Promise.resolve(null);
  studio.live = emptyLive(null, performance.now());
  const snapshot = JSON.parse(JSON.stringify(config)) as Record<string, unknown>;
  return drive((cb) => engine.api.startRun(snapshot, cb));
}

export async function resumeRun(id: string): Promise<Problem | null> {
  const engine = studio.engine;
  if (!engine) return null;
  // A paused run in this tab keeps its curve; any other run's curve is read back
  // once the worker has restored its checkpoint (the log is cut back to it).
  if (studio.live.run?.id !== id || studio.live.run.status !== 'paused') {
    studio.live = emptyLive(studio.runs.find((r) => r.id === id) ?? null, performance.now());
    reloadLogFor = id;
  }
  studio.currentRunId = id;
  return drive((cb) => engine.api.resumeRun(id, cb));
}

/** Show a stored run's curves on the Train screen, with its whole config in every form. */
export async function openRun(id: string): Promise<void> {
  const engine = studio.engine;
  if (!engine || studio.training) return;
  const run = studio.runs.find((r) => r.id === id) ?? null;
  const log = await engine.call(engine.api.runLog(id));
  if (run) studio.replaceValues(run.config);
  studio.currentRunId = id;
  studio.live = { ...emptyLive(run), log, step: run?.step ?? 0, total: run?.totalSteps ?? 0 };
}

export function pauseRun(): void {
  studio.engine?.api.pauseRun();
}

export function stopRun(): void {
  studio.engine?.api.stopRun();
}
