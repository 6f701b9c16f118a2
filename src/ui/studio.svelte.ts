/**
 * The page's state, shared by every screen: the engine handle, the method
 * catalogue, the experiment config under edit (validated on every change),
 * the loaded model, the runs and the live training state. Screens read and
 * write it directly; the worker does all the work.
 */
import { optionSpec, registerConfigCheck, registerFinetuningType, registerOptions, type OptionSpec } from '../config/schema';
import { selectionProblems } from '../methods/select';
import type { Catalogue, LogPoint, ModelSummary, RunInfo, TrainableCount } from '../worker/api';
import { configValues, countConfig, defaultValues, validateValues, type Validation } from './config-form';
import type { EngineClient } from './engine';
import type { FieldStore } from './field-store';
import type { Problem } from './errors';
import { pageParams } from './params';

export type Screen = 'start' | 'model' | 'method' | 'data' | 'train' | 'evaluate' | 'playground' | 'runs' | 'export';

export const SCREENS: { id: Screen; title: string }[] = [
  { id: 'start', title: 'Start' },
  { id: 'model', title: 'Model' },
  { id: 'method', title: 'Method' },
  { id: 'data', title: 'Data' },
  { id: 'train', title: 'Train' },
  { id: 'evaluate', title: 'Evaluate' },
  { id: 'playground', title: 'Playground' },
  { id: 'runs', title: 'Runs' },
  { id: 'export', title: 'Export' },
];

export interface LiveRun {
  run: RunInfo | null;
  log: LogPoint[];
  step: number;
  total: number;
  /** Wall-clock ms when the current stretch of training started (for tokens/s and ETA). */
  startedAt: number;
  stepAtStart: number;
  /** Evaluation during training: batches done / total while it runs, else null. */
  evaluating: { done: number; total: number; since: number } | null;
}

export function emptyLive(run: RunInfo | null, startedAt = 0): LiveRun {
  return { run, log: [], step: 0, total: 0, startedAt, stepAtStart: 0, evaluating: null };
}

class StudioState {
  screen = $state<Screen>('start');
  engine = $state.raw<EngineClient | null>(null);
  catalogue = $state.raw<Catalogue | null>(null);
  values = $state<Record<string, unknown>>({});
  model = $state.raw<ModelSummary | null>(null);
  /** Bumped when the base model changes, so derived numbers are recomputed. */
  modelVersion = $state(0);
  count = $state.raw<TrainableCount | null>(null);
  countProblem = $state<string | null>(null);
  runs = $state.raw<RunInfo[]>([]);
  /** The run the Train, Evaluate, Playground and Export screens show. */
  currentRunId = $state<string | null>(null);
  live = $state<LiveRun>(emptyLive(null));
  training = $state(false);
  /** The data file picked in Data (its name is the config's dataset). */
  dataFile = $state<{ name: string; bytes: number } | null>(null);
  linkProblem = $state<Problem | null>(null);
  linkNote = $state<string | null>(null);
  /** The storage problem (quota) to show with a way out. */
  storageProblem = $state<Problem | null>(null);

  /** The values a config is made of: those of the chosen method's options and the shared ones (see configValues). */
  readonly chosen = $derived(this.catalogue ? configValues(this.values, this.catalogue.methods) : this.values);
  /** The experiment config (start, YAML, share link) and the problems of each field. */
  readonly validation: Validation = $derived(validateValues(this.chosen));
  /** The experiment config as form fields read and write it. */
  readonly fields: FieldStore = {
    get: (key) => this.values[key],
    set: (key, value) => this.set(key, value),
    problems: (key) => this.validation.problems.get(key) ?? [],
  };
  /** What a trainable-parameter count is computed for (the method's options), and its identity. */
  readonly countTarget = $derived.by(() => {
    const c = this.catalogue;
    return c ? countConfig(this.values, c.methods) : null;
  });
  readonly countTargetKey = $derived(JSON.stringify(this.countTarget));
  /** The countTargetKey the current `count` was computed for. */
  countKey = $state('');

  constructor() {
    // The methods' own rules as data (required options, one selecting flag), so a problem blocks Start here, not only in the worker.
    registerConfigCheck((config) => (this.catalogue ? selectionProblems(config, this.catalogue.methods, (key) => optionSpec(key)?.help ?? '') : []));
    const p = pageParams();
    this.values = defaultValues({ model_name_or_path: p.repo, endpoint: p.endpoint });
  }

  /** The method options the worker registered join this page's schema, so validation here matches the worker's. */
  setCatalogue(c: Catalogue): void {
    for (const spec of c.options as OptionSpec[]) registerOptions(spec.group, [spec]);
    for (const m of c.methods) registerFinetuningType(m.name, m.isDefault);
    this.catalogue = c;
    // Fill defaults of options registered just now (and finetuning_type's, which exists once methods are installed), keep everything already set.
    const filled = { ...defaultValues(), ...this.values };
    for (const spec of c.options as OptionSpec[]) {
      if (filled[spec.key] === null && !spec.nullable && spec.default !== undefined) filled[spec.key] = spec.default;
    }
    this.values = filled;
  }

  set(key: string, value: unknown): void {
    this.values[key] = value;
  }

  setMany(patch: Record<string, unknown>): void {
    for (const [k, v] of Object.entries(patch)) this.values[k] = v;
  }

  /** A whole experiment (a share link, a run's config): every key not in it goes back to its default. */
  replaceValues(config: Record<string, unknown>): void {
    const p = pageParams();
    this.values = { ...defaultValues({ model_name_or_path: p.repo, endpoint: p.endpoint }), ...config };
  }

  currentRun(): RunInfo | null {
    return this.runs.find((r) => r.id === this.currentRunId) ?? null;
  }

  async refreshRuns(): Promise<void> {
    const e = this.engine;
    if (!e) return;
    this.runs = await e.call(e.api.listRuns());
  }
}

export const studio = new StudioState();
