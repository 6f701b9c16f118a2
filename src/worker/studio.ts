/**
 * The engine side of StudioApi. Host-agnostic: the GPU object, the Hub file
 * cache and the run store are injected (`navigator.gpu` and IndexedDB in the
 * worker), so nothing here touches the DOM or Node.
 *
 * One device per worker, acquired on first use. Two models may be resident:
 * the base model of the Model screen (previews, parameter counts, base
 * generation) and the current run's model with its method attached (training,
 * evaluation, adapter generation). Calls that use the GPU run one after
 * another; pause, stop and cancel act at once.
 *
 * Training goes through src/run/experiment.ts, the same wiring as
 * `peft-studio train`, so a config and seed give the CLI's losses.
 */
import { zipSync } from 'fflate';
import { allOptions, validateConfig, type ExperimentConfig } from '../config/schema';
import { toYaml } from '../config/yaml';
import { encodeTurn } from '../data/template';
import type { SftDatasets } from '../data/sft';
import { entryLabelWords } from '../data/entry';
import { Engine } from '../engine/engine';
import { ConfigError, HubError } from '../errors';
import { normalizeAnswer } from '../eval/predict';
import { runPredictions } from '../eval/run-predict';
import { acquireDevice } from '../gpu/device';
import { cacheKey, DirectoryHandleSource, HubSource, IdbCache, idbKeyValueStore, type FileCache, type FileSource, type KeyValueStore } from '../hub/index';
import { readAdapter } from '../methods/adapter-io';
import { adapterFileMap } from '../methods/adapter-files';
import { builtinMethods, methodNameFor, resolveMethod } from '../methods/registry';
import { generate, seededRandom } from '../model/generate';
import type { LlamaModel } from '../model/llama';
import { loadModel } from '../model/load';
import { configWithBiasFlags } from '../model/bias-flags';
import { serializeSafetensors } from '../model/safetensors';
import { loadTokenizer, type Tokenizer } from '../model/tokenizer';
import { createTrainer, padIdOf, prepareExperiment, type Prepared } from '../run/experiment';
import { IdbRunStore, newRunId, RunIndex, type RunRecord } from '../run/idb-store';
import type { Trainer } from '../train/trainer';
import {
  datasetCatalogue, datasetInfoJson, isUserFile, loadExperimentData, loadPredictionData, previewExamples, readUserTable, userEntry, userExamples,
  USER_DATASET_INFO, type DataFiles, type DataHost,
} from './data';
import { parseDatasetInfo, registerDatasets } from '../data/registry';
import type { DatasetEntry } from '../data/entry';
import { hasDataset } from '../data/registry';
import { KEY_LIMITS } from './api';
import type {
  Catalogue, ColumnMapping, DataFile, DataFileInfo, DataPreview, EvalOptions, EvalResult, ExportFile, GenerateOptions, GenerateResult, GpuInfo, LoadModelOptions,
  LoadProgress, LogPoint, ModelSummary, PredictionInfo, RunInfo, StorageInfo, StudioApi, TrainCallbacks, TrainableCount,
} from './api';

// The same modules the registry loads: which option groups each method folder declares.
const methodConfigs = import.meta.glob<Record<string, unknown>>('../../peft/*/config.ts', { eager: true });

/** Progress events cross postMessage; send at most one per file per interval, and always the last. */
const PROGRESS_INTERVAL_MS = 50;

/** A run's model, method, data and (while it can still train) trainer, resident on the GPU. */
interface Session {
  id: string;
  config: ExperimentConfig;
  prepared: Prepared;
  data: SftDatasets;
  trainer: Trainer | null;
  store: IdbRunStore;
}

export class Studio implements StudioApi {
  private engine: Promise<Engine> | null = null;
  private loaded: { model: LlamaModel; tokenizer: Tokenizer; summary: ModelSummary; endpoint: string } | null = null;
  private running: AbortController | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private dataFiles: DataFiles = new Map();
  /** Entries made from picked files with a column mapping: key → entry. */
  private userEntries = new Map<string, DatasetEntry>();
  private session: Session | null = null;
  private control: { abort: AbortController; mode: 'pause' | 'stop' | null } | null = null;
  private readonly runs: RunIndex;
  /** Model folders picked in this page, by name (what model_name_or_path then says). */
  private readonly folders = new Map<string, FileSource>();

  constructor(
    private readonly gpu: GPU | undefined,
    /** Browser file cache for Hub downloads; injected so another host can pass its own. */
    private readonly makeCache: () => FileCache | undefined = () => new IdbCache(),
    runStore?: KeyValueStore,
  ) {
    this.runs = new RunIndex(runStore);
  }

  async gpuInfo(): Promise<GpuInfo> {
    const { ctx } = await this.device();
    const limits: Record<string, number> = {};
    for (const k of KEY_LIMITS) limits[k] = ctx.limits[k];
    return { adapter: { ...ctx.adapterInfo }, features: [...ctx.features].sort(), limits };
  }

  loadModel(opts: LoadModelOptions, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary> {
    const repo = opts.repo.trim();
    const revision = opts.revision?.trim() || 'main';
    // HubSource checks the endpoint, repo id and revision and names what is wrong.
    const source = new HubSource({ endpoint: opts.endpoint.trim(), repo, revision, kind: 'model', cache: opts.cache === false ? undefined : this.makeCache() });
    return this.loadFrom(source, repo, revision, source.endpoint, onProgress);
  }

  loadModelFolder(folder: FileSystemDirectoryHandle, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary> {
    const source = new DirectoryHandleSource(folder);
    this.folders.set(folder.name, source);
    return this.loadFrom(source, folder.name, 'local folder', 'folder', onProgress);
  }

  async cacheStatus(endpoint: string, repo: string, revision: string): Promise<{ files: number; bytes: number }> {
    const cache = this.makeCache();
    const prefix = cacheKey(new HubSource({ endpoint, repo, kind: 'model' }).endpoint, repo, revision, '');
    let files = 0, bytes = 0;
    for (const key of (await cache?.list?.()) ?? []) {
      if (!key.startsWith(prefix)) continue;
      files++;
      const m = (await hubCacheMeta().get(`meta:${key}`).catch(() => undefined)) as { size?: number } | undefined;
      bytes += typeof m?.size === 'number' ? m.size : 0;
    }
    return { files, bytes };
  }

  private loadFrom(source: FileSource, repo: string, revision: string, endpoint: string, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary> {
    return this.exclusive(async () => {
      const e = await this.device();
      this.unload();
      const t0 = performance.now();
      const report = throttle(onProgress);
      const loaded = await loadModel(e, source, { onProgress: report.push });
      report.flush();
      if (!loaded.tokenizer) throw new ConfigError(`${repo} was loaded without a tokenizer; generation needs tokenizer.json.`);
      const c = loaded.model.config;
      const summary: ModelSummary = {
        repo, revision, modelType: c.modelType, hiddenSize: c.hiddenSize, numLayers: c.numLayers, numHeads: c.numHeads,
        numKvHeads: c.numKvHeads, intermediateSize: c.intermediateSize, vocabSize: c.vocabSize,
        maxPositionEmbeddings: c.maxPositionEmbeddings, numParams: loaded.model.numParams(), loadMs: performance.now() - t0,
      };
      this.loaded = { model: loaded.model, tokenizer: loaded.tokenizer, summary, endpoint };
      return summary;
    });
  }

  generate(opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult> {
    return this.generateWith(null, opts, onToken);
  }

  generateWith(runId: string | null, opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult> {
    return this.exclusive(async () => {
      let model: LlamaModel, tokenizer: Tokenizer;
      if (runId === null) {
        if (!this.loaded) throw new ConfigError('No model is loaded: load one before generating.');
        ({ model, tokenizer } = this.loaded);
      } else {
        const s = await this.sessionFor(runId);
        ({ model, tokenizer } = s.prepared);
      }
      return this.generateOn(model, tokenizer, opts, onToken);
    });
  }

  private async generateOn(model: LlamaModel, tokenizer: Tokenizer, opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult> {
    if (model.e.ctx.lost) throw model.e.ctx.lost;
    const maxNewTokens = Math.floor(opts.maxNewTokens);
    if (!(maxNewTokens >= 1)) throw new ConfigError(`Max new tokens must be at least 1, got ${opts.maxNewTokens}.`);
    if (!(opts.temperature >= 0)) throw new ConfigError(`Temperature must be 0 (greedy) or more, got ${opts.temperature}.`);
    const promptIds = tokenizer.encode(opts.prompt);
    if (promptIds.length === 0) throw new ConfigError('The prompt encodes to no tokens: type some text.');
    const context = model.config.maxPositionEmbeddings;
    if (promptIds.length + maxNewTokens > context) {
      throw new ConfigError(`The prompt (${promptIds.length} tokens) plus ${maxNewTokens} new tokens exceeds the model's context of ${context}: shorten one of them.`);
    }
    // Same stop set as the CLI: llama2.c-style models end a story with BOS.
    const stopIds = [...new Set([tokenizer.eosTokenId, model.config.bosTokenId, ...model.config.eosTokenIds])].filter((x): x is number => typeof x === 'number');
    const text = continuation(tokenizer, promptIds);
    const ids: number[] = [];
    const abort = new AbortController();
    this.running = abort;
    const t0 = performance.now();
    let out: number[] = ids;
    try {
      out = await generate(model, promptIds, {
        maxNewTokens, temperature: opts.temperature, topK: opts.topK, topP: opts.topP, seed: opts.seed, stopIds, signal: abort.signal,
        onToken: (id) => {
          ids.push(id);
          onToken?.(id, text(ids));
        },
      });
    } catch (err) {
      if (!abort.signal.aborted) throw err;
    } finally {
      this.running = null;
    }
    return { ids: out, promptIds, text: text(out), cancelled: abort.signal.aborted, ms: performance.now() - t0 };
  }

  cancel(): void {
    this.running?.abort();
  }

  // -------------------------------------------------------------------------
  // Forms

  async catalogue(): Promise<Catalogue> {
    const groups: Record<string, string[]> = {};
    for (const [file, mod] of Object.entries(methodConfigs)) {
      const folder = file.split('/').at(-2)!;
      const specs = Object.values(mod).filter(Array.isArray).flat() as { group?: unknown }[];
      groups[folder] = [...new Set(specs.map((s) => s?.group).filter((g): g is string => typeof g === 'string'))];
    }
    return { methods: [...builtinMethods.keys()].sort(), options: allOptions().map((o) => ({ ...o })), groups, datasets: datasetCatalogue() };
  }

  countTrainable(raw: Record<string, unknown>): Promise<TrainableCount> {
    return this.exclusive(async () => {
      const config = validateConfig(raw, 'studio');
      if (!this.loaded) throw new ConfigError('Load the model (Model) to count trainable parameters.');
      const { model, tokenizer } = this.loaded;
      // Attach to the base model, count, detach: every method restores the base on detach.
      const method = resolveMethod(config).attach({ e: model.e, model, config, random: seededRandom(Number(config.seed)), tokenizer });
      try {
        await method.ready;
        const trainable = method.trainable().reduce((a, p) => a + p.tensor.size, 0);
        return { trainable, total: model.numParams(), method: methodNameFor(config) };
      } finally {
        method.detach();
        model.e.flush();
      }
    });
  }

  async putDataFile(file: DataFile): Promise<{ name: string; bytes: number }> {
    const name = file.name.split(/[\\/]/).pop() ?? '';
    if (!name) throw new ConfigError('The data file has no name.');
    this.dataFiles.set(name, file.bytes);
    return { name, bytes: file.bytes.byteLength };
  }

  async inspectDataFile(name: string): Promise<DataFileInfo> {
    const rows = await readUserTable(name, this.dataFiles);
    const columns = [...new Set(rows.slice(0, 50).flatMap((r) => Object.keys(r)))];
    const text = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v) ?? '').slice(0, 200);
    const sample = rows.slice(0, 3).map((r) => Object.fromEntries(columns.map((c) => [c, text(r[c])])));
    return { name, rows: rows.length, columns, sample, alpaca: /\.jsonl$/i.test(name) && columns.includes('instruction') && columns.includes('output') };
  }

  async mapDataFile(name: string, mapping: ColumnMapping): Promise<string> {
    if (!this.dataFiles.has(name)) throw new ConfigError(`The file ${name} is not loaded here: pick it in Data.`);
    const entry = userEntry(name, mapping);
    const rows = await readUserTable(name, this.dataFiles, 50);
    for (const c of [mapping.prompt, mapping.response, mapping.query].filter((x): x is string => !!x)) {
      if (rows.length && !(c in rows[0])) throw new ConfigError(`${name} has no column "${c}" (its columns: ${Object.keys(rows[0]).join(', ')}).`);
    }
    this.registerUserEntries([entry]);
    return entry.key;
  }

  private registerUserEntries(entries: DatasetEntry[]): void {
    for (const e of entries) this.userEntries.set(e.key, e);
    registerDatasets(entries);
  }

  /** The picked files and entries the config's datasets use (kept with a run). */
  private userDataOf(config: ExperimentConfig): { files: string[]; entries: DatasetEntry[] } {
    const keys = String(config.dataset ?? '').split(',').map((k) => k.trim().replace(/\[.*\]$/, ''));
    const entries = keys.map((k) => this.userEntries.get(k)).filter((e): e is DatasetEntry => !!e);
    const files = new Set(entries.flatMap((e) => e.sources.flatMap((s) => Object.values(s.splits).flat())));
    if (isUserFile(config, this.dataFiles)) files.add(String(config.dataset));
    return { files: [...files].filter((f) => this.dataFiles.has(f)), entries };
  }

  async previewData(raw: Record<string, unknown>, count: number): Promise<DataPreview> {
    const config = validateConfig(raw, 'studio');
    const tok = await this.tokenizerFor(config);
    const examples = await previewExamples(config, this.dataHost());
    const cutoff = config.cutoff_len;
    const lengths: number[] = [];
    const shown: DataPreview['examples'] = [];
    for (const ex of examples) {
      const { source, target } = encodeTurn(tok, ex, config.template);
      lengths.push(source.length + target.length);
      if (shown.length < count) {
        shown.push({ prompt: tok.decode(source, { skipSpecialTokens: false }), response: tok.decode(target, { skipSpecialTokens: false }), promptTokens: source.length, responseTokens: target.length });
      }
    }
    const data = await loadExperimentData(tok, config, padIdOf(tok), this.dataHost());
    return { rows: examples.length, train: data.train.length, val: data.val.length, truncated: data.truncated, cutoffLen: cutoff, lengths, examples: shown };
  }

  // -------------------------------------------------------------------------
  // Runs

  startRun(raw: Record<string, unknown>, cb: TrainCallbacks): Promise<RunInfo> {
    return this.exclusive(async () => {
      const config = validateConfig(raw, 'studio');
      // A missing data file fails before anything is downloaded.
      this.checkData(config);
      const e = await this.device();
      const id = newRunId();
      const dataFile = this.userDataOf(config).files[0];
      const now = Date.now();
      const record: RunRecord = {
        id, name: config.run_name ?? `${methodNameFor(config)} · ${config.model_name_or_path}`, createdAt: now, updatedAt: now, status: 'running',
        config, dataFile, step: 0, totalSteps: 0, trainableParams: 0, numParams: 0,
        modelFolder: this.folders.has(String(config.model_name_or_path)) ? String(config.model_name_or_path) : undefined,
      };
      await this.runs.put(record);
      const store = this.runs.store(id, config.save_total_limit);
      try {
        // Picked files (and their column mapping) travel with the run: a resume after a reload needs nothing from the page.
        const own = this.userDataOf(config);
        for (const f of own.files) await store.writeFile(`data/${f}`, this.dataFiles.get(f)!);
        if (own.entries.length) await store.writeFile(USER_DATASET_INFO, datasetInfoJson(own.entries));
        this.dropSession();
        const report = throttle(cb.onProgress ? (p) => cb.onProgress!(p) : undefined);
        const prepared = await prepareExperiment(e, config, this.sourcesFor(config), { onProgress: report.push });
        report.flush();
        const data = await loadExperimentData(prepared.tokenizer, config, padIdOf(prepared.tokenizer), this.dataHost());
        const trainer = createTrainer(e, prepared, data, config, store);
        this.session = { id, config, prepared, data, trainer, store };
        await this.runs.update(id, { totalSteps: trainer.totalSteps, trainableParams: trainer.trainableCount(), numParams: prepared.model.numParams() });
      } catch (err) {
        await this.fail(id, err);
        throw err;
      }
      return this.drive(cb);
    });
  }

  resumeRun(id: string, cb: TrainCallbacks): Promise<RunInfo> {
    return this.exclusive(async () => {
      const record = await this.runs.get(id);
      if (!record) throw new ConfigError(`Run ${id} does not exist.`);
      if (record.status === 'done' || record.status === 'stopped') throw new ConfigError(`Run ${record.name} has finished; start a new run to train further.`);
      if (this.session?.id !== id || !this.session.trainer) {
        const config = validateConfig(record.config, `run ${record.name}`);
        const store = this.runs.store(id, config.save_total_limit);
        this.checkFolder(record);
        if (record.dataFile) await this.restoreDataFile(store, record.dataFile);
        this.checkData(config);
        this.dropSession();
        const e = await this.device();
        const report = throttle(cb.onProgress ? (p) => cb.onProgress!(p) : undefined);
        const prepared = await prepareExperiment(e, config, this.sourcesFor(config), { onProgress: report.push });
        report.flush();
        const data = await loadExperimentData(prepared.tokenizer, config, padIdOf(prepared.tokenizer), this.dataHost());
        const trainer = createTrainer(e, prepared, data, config, store);
        // The newest complete checkpoint: weights, optimizer moments, step and log.
        await trainer.resume();
        await store.writeLog(trainer.log.map((l) => JSON.stringify(l)));
        this.session = { id, config, prepared, data, trainer, store };
        await this.runs.update(id, { step: trainer.step, totalSteps: trainer.totalSteps, trainableParams: trainer.trainableCount(), numParams: prepared.model.numParams() });
      }
      return this.drive(cb);
    });
  }

  pauseRun(): void {
    if (this.control) {
      this.control.mode = 'pause';
      this.control.abort.abort();
    }
  }

  stopRun(): void {
    if (this.control) {
      this.control.mode = 'stop';
      this.control.abort.abort();
    }
  }

  /** Run the session's trainer until it ends, pauses or stops; record the outcome. */
  private async drive(cb: TrainCallbacks): Promise<RunInfo> {
    const s = this.session!;
    const trainer = s.trainer!;
    const control = { abort: new AbortController(), mode: null as 'pause' | 'stop' | null };
    this.control = control;
    cb.onStatus?.(await this.info(await this.runs.update(s.id, { status: 'running', error: undefined })));
    try {
      await trainer.run({
        signal: control.abort.signal,
        onStep: (step, total) => cb.onStep?.(step, total),
        onLog: (entry) => cb.onLog?.(entry),
      });
      if (control.mode === 'pause' && trainer.step < trainer.totalSteps) {
        await trainer.saveCheckpoint();
        const info = await this.info(await this.runs.update(s.id, { status: 'paused', step: trainer.step }));
        cb.onStatus?.(info);
        return info;
      }
      const info = await this.info(await this.finish(s, control.mode === 'stop' && trainer.step < trainer.totalSteps ? 'stopped' : 'done'));
      cb.onStatus?.(info);
      return info;
    } catch (err) {
      await this.fail(s.id, err, trainer.step);
      const record = await this.runs.get(s.id);
      if (record) cb.onStatus?.(await this.info(record));
      throw err;
    } finally {
      this.control = null;
    }
  }

  /** Write the adapter (HF PEFT layout) and results into the run, as `peft-studio train` writes output_dir. */
  private async finish(s: Session, status: 'done' | 'stopped'): Promise<RunRecord> {
    const trainer = s.trainer!;
    const { method, model } = s.prepared;
    const files = await method.exportAdapter();
    if (files.config.export_format === 'hf_model') {
      // full / GaLore: the trained weights are a whole HF model folder.
      await s.store.writeFile('model.safetensors', serializeSafetensors(files.tensors, { format: 'pt' }));
      const base = this.sourcesFor(s.config).model;
      for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
        if (await base.has(f)) await s.store.writeFile(f, await base.get(f));
      }
    } else {
      for (const [name, data] of Object.entries(adapterFileMap(files))) await s.store.writeFile(name, data);
    }
    for (const [sub, extra] of (await method.extraAdapters?.()) ?? []) {
      for (const [name, data] of Object.entries(adapterFileMap(extra))) await s.store.writeFile(`${sub}/${name}`, data);
    }
    const last = [...trainer.log].reverse().find((l) => l.loss !== undefined);
    const evalLast = [...trainer.log].reverse().find((l) => l.eval_loss !== undefined);
    const summary = {
      train_loss: last?.loss, eval_loss: evalLast?.eval_loss, global_step: trainer.step,
      train_runtime: last?.elapsed_time ?? 0, tokens_per_s: last?.tokens_per_s, peak_gpu_bytes: model.e.pool.peak,
      trainable_params: trainer.trainableCount(),
    };
    await s.store.writeFile('all_results.json', JSON.stringify(summary, null, 2) + '\n');
    // The optimizer moments are no longer needed: free them; the adapter stays attached for evaluation.
    trainer.dispose();
    s.trainer = null;
    return this.runs.update(s.id, { status, step: trainer.step, summary });
  }

  private async fail(id: string, err: unknown, step?: number): Promise<void> {
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    await this.runs.update(id, { status: 'failed', error: message, ...(step !== undefined ? { step } : {}) }).catch(() => undefined);
  }

  async listRuns(): Promise<RunInfo[]> {
    const sizes = await this.runs.sizes();
    return Promise.all((await this.runs.list()).map((r) => this.info(r, sizes)));
  }

  async runLog(id: string): Promise<LogPoint[]> {
    const lines = await this.runs.store(id).readLog();
    return lines.map((l) => JSON.parse(l) as LogPoint);
  }

  deleteRun(id: string): Promise<void> {
    if (this.control && this.session?.id === id) throw new ConfigError('This run is training: stop it before deleting it.');
    return this.exclusive(async () => {
      if (this.session?.id === id) this.dropSession();
      await this.runs.delete(id);
    });
  }

  private async info(r: RunRecord, sizes?: Map<string, number>): Promise<RunInfo> {
    const store = this.runs.store(r.id);
    // A run marked running that this worker is not training was interrupted (tab closed, crash).
    const status = r.status === 'running' && !(this.control && this.session?.id === r.id) ? 'failed' : r.status;
    return {
      id: r.id, name: r.name, createdAt: r.createdAt, updatedAt: r.updatedAt, status, config: r.config, method: methodNameFor(r.config),
      step: r.step, totalSteps: r.totalSteps, trainableParams: r.trainableParams, numParams: r.numParams, summary: r.summary, metrics: r.metrics,
      error: status !== r.status ? 'The run was interrupted (the tab was closed or crashed) while training.' : r.error,
      checkpoints: (await store.listCheckpoints()).sort((a, b) => stepOf(a) - stepOf(b)),
      files: (await store.listFiles()).filter((f) => !f.startsWith('data/')).sort(),
      bytes: sizes?.get(r.id) ?? 0,
    };
  }

  // -------------------------------------------------------------------------
  // Evaluate

  evaluateRun(id: string, opts: EvalOptions, onProgress?: (done: number, total: number) => void): Promise<EvalResult> {
    return this.exclusive(async () => {
      const s = await this.sessionFor(id);
      const { model, tokenizer } = s.prepared;
      const record = await this.runs.get(id);
      // Greedy predictions (METRICS.md); the form's evaluation settings over the run's config.
      const config = validateConfig({ ...s.config, ...(opts.overrides ?? {}), do_sample: false }, `run ${record?.name ?? id}`);
      const metrics: Record<string, number | string | null> = {};
      if (s.data.val.length) {
        const trainer = s.trainer ?? createTrainer(model.e, s.prepared, s.data, config, s.store);
        try {
          metrics.eval_loss = round(await trainer.evaluate());
        } finally {
          if (trainer !== s.trainer) trainer.dispose();
        }
        metrics.perplexity = round(Math.exp(metrics.eval_loss));
      }
      const { sets } = await loadPredictionData(tokenizer, config, this.dataHost());
      const log = (await this.runs.store(id).readLog()).map((l) => JSON.parse(l) as LogPoint);
      const speeds = log.map((l) => l.tokens_per_s).filter((v): v is number => typeof v === 'number');
      const costs = {
        trainableParams: s.prepared.method.trainable().reduce((a, p) => a + p.tensor.size, 0),
        // PSCP's memory term is the peak measured while training (the pool's peak).
        peakBytes: record?.summary?.peak_gpu_bytes ?? Math.max(0, ...log.map((l) => l.peak_gpu_bytes ?? 0)),
        trainTokensPerSecond: speeds.length ? speeds.reduce((a, b) => a + b, 0) / speeds.length : null,
      };
      const r = await runPredictions(model, tokenizer, config, sets, costs, { onProgress });
      // predict_results.json last, as the CLI writes it.
      for (const [name, data] of Object.entries(r.files).sort(([a], [b]) => (a === 'predict_results.json' ? 1 : b === 'predict_results.json' ? -1 : 0))) {
        await s.store.writeFile(name, data);
      }
      const flat = (obj: Record<string, unknown>, prefix = '') => {
        for (const [k, v] of Object.entries(obj)) {
          if (typeof v === 'number' || typeof v === 'string' || v === null) metrics[prefix + k] = typeof v === 'number' ? round(v) : v;
          else if (v && typeof v === 'object' && sets.length > 1 && !prefix) flat(v as Record<string, unknown>, `${k}.`);
        }
      };
      flat(r.results);
      const predictions: PredictionInfo[] = [];
      for (const set of sets) {
        const file = r.files[sets.length > 1 ? `predict_${set.entry.key}/generated_predictions.jsonl` : 'generated_predictions.jsonl'] ?? '';
        const words = (entryLabelWords(set.entry) ?? []).map((w) => normalizeAnswer(w));
        for (const line of file.split('\n').filter(Boolean)) {
          const row = JSON.parse(line) as { prompt: string; predict: string; label: string };
          const p = normalizeAnswer(row.predict);
          const verdict = words.length && !words.includes(p) ? 'invalid' : p === normalizeAnswer(row.label) ? 'correct' : 'wrong';
          predictions.push({ ...row, verdict });
        }
      }
      await this.runs.update(id, { metrics });
      return { runId: id, metrics, predictions };
    });
  }

  /** The run's model with its trained adapter, loading both when another run (or none) is resident. */
  private async sessionFor(id: string): Promise<Session> {
    if (this.session?.id === id) return this.session;
    const record = await this.runs.get(id);
    if (!record) throw new ConfigError(`Run ${id} does not exist.`);
    const config = validateConfig(record.config, `run ${record.name}`);
    const store = this.runs.store(id, config.save_total_limit);
    const adapter = await this.adapterSource(store);
    if (!adapter) throw new ConfigError(`Run ${record.name} has no adapter yet (no finished training and no checkpoint).`);
    this.checkFolder(record);
    if (record.dataFile) await this.restoreDataFile(store, record.dataFile);
    this.checkData(config);
    this.dropSession();
    const e = await this.device();
    const prepared = await prepareExperiment(e, config, this.sourcesFor(config));
    prepared.method.importAdapter(await readAdapter(adapter));
    const data = await loadExperimentData(prepared.tokenizer, config, padIdOf(prepared.tokenizer), this.dataHost());
    this.session = { id, config, prepared, data, trainer: null, store };
    return this.session;
  }

  /** The run's adapter files: the final ones, else the newest checkpoint's. */
  private async adapterSource(store: IdbRunStore): Promise<FileSource | null> {
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

  /** A run's picked files and column mappings, back from its storage. */
  private async restoreDataFile(store: IdbRunStore, name: string): Promise<void> {
    for (const f of await store.listFiles()) {
      if (!f.startsWith('data/')) continue;
      const file = f.slice(5);
      if (this.dataFiles.has(file)) continue;
      const v = await store.readFile(f);
      if (v !== null) this.dataFiles.set(file, typeof v === 'string' ? new TextEncoder().encode(v) : v);
    }
    if (!this.dataFiles.has(name)) throw new ConfigError(`The run's data file ${name} is missing from browser storage; pick it again in Data.`);
    const info = await store.readFile(USER_DATASET_INFO);
    if (info !== null) this.registerUserEntries(parseDatasetInfo(typeof info === 'string' ? info : new TextDecoder().decode(info), USER_DATASET_INFO));
  }

  // -------------------------------------------------------------------------
  // Export

  async exportFiles(id: string): Promise<ExportFile[]> {
    const record = await this.runs.get(id);
    if (!record) throw new ConfigError(`Run ${id} does not exist.`);
    const store = this.runs.store(id);
    const out: ExportFile[] = [];
    const names = await store.listFiles();
    if (!names.includes('adapter_model.safetensors') && !names.includes('model.safetensors')) {
      // Paused or interrupted: the newest checkpoint's adapter.
      const latest = await store.latestCheckpoint();
      const ckpt = latest ? await store.readCheckpoint(latest) : null;
      for (const f of ['adapter_config.json', 'adapter_model.safetensors']) if (ckpt?.[f]) out.push({ name: f, data: ckpt[f] });
    }
    for (const name of names.sort()) {
      const v = await store.readFile(name);
      if (v === null) continue;
      // The user's data file sits beside config.yaml, where `dataset:` finds it.
      out.push({ name: name.startsWith('data/') ? name.slice(5) : name, data: v });
    }
    const yaml = `# PEFT Studio run ${record.name} (${record.id}).\n# Run it headless: peft-studio train config.yaml\n${toYaml(record.config)}`;
    out.push({ name: 'config.yaml', data: yaml });
    const log = await store.readLog();
    if (log.length) out.push({ name: 'trainer_log.jsonl', data: log.join('\n') + '\n' });
    return out;
  }

  async exportZip(id: string): Promise<Uint8Array> {
    const files = await this.exportFiles(id);
    const enc = new TextEncoder();
    return zipSync(Object.fromEntries(files.map((f) => [f.name, typeof f.data === 'string' ? enc.encode(f.data) : f.data])), { level: 6 });
  }

  exportMerged(id: string): Promise<Uint8Array> {
    return this.exclusive(async () => {
      const s = await this.sessionFor(id);
      const { model, method } = s.prepared;
      if (!method.merge) throw new ConfigError(`${methodNameFor(s.config)} cannot be merged into the base weights; download the adapter instead.`);
      try {
        await method.merge();
        const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
        for (const [name, t] of model.params) tensors.set(name, { shape: t.shape, data: await model.e.read(t) });
        const files: Record<string, Uint8Array> = { 'model.safetensors': serializeSafetensors(tensors, { format: 'pt' }) };
        const base = this.sourcesFor(s.config).model;
        for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
          if (await base.has(f)) files[f] = await base.get(f);
        }
        // BitFit on llama: the merged biases need attention_bias / mlp_bias, as the CLI writes them.
        const flagged = files['config.json'] ? configWithBiasFlags(new TextDecoder().decode(files['config.json']), tensors.keys()) : null;
        if (flagged !== null) files['config.json'] = new TextEncoder().encode(flagged);
        return zipSync(files, { level: 6 });
      } finally {
        // The merged weights replaced the base in this session: reload it next time.
        this.dropSession();
      }
    });
  }

  // -------------------------------------------------------------------------
  // Storage

  async storageInfo(): Promise<StorageInfo> {
    const est = await navigator.storage?.estimate?.().catch(() => undefined);
    const cached = new Map<string, { repo: string; files: number; bytes: number }>();
    const cache = this.makeCache();
    const meta = hubCacheMeta();
    for (const key of (await cache?.list?.()) ?? []) {
      const [endpoint, repo] = key.split('|');
      const name = `${repo} (${endpoint})`;
      const entry = cached.get(name) ?? { repo: name, files: 0, bytes: 0 };
      entry.files++;
      const m = (await meta.get(`meta:${key}`).catch(() => undefined)) as { size?: number } | undefined;
      entry.bytes += typeof m?.size === 'number' ? m.size : 0;
      cached.set(name, entry);
    }
    const sizes = await this.runs.sizes();
    const runs = (await this.runs.list()).map((r) => ({ id: r.id, name: r.name, bytes: sizes.get(r.id) ?? 0 }));
    return { usage: est?.usage ?? null, quota: est?.quota ?? null, cached: [...cached.values()], runs };
  }

  clearStorage(what: 'cache' | 'runs'): Promise<void> {
    if (what === 'runs' && this.control) throw new ConfigError('A run is training: stop it before deleting every run.');
    return this.exclusive(async () => {
      if (what === 'cache') await this.makeCache()?.clear();
      else {
        this.dropSession();
        await this.runs.clear();
      }
    });
  }

  // -------------------------------------------------------------------------

  /** A run on a picked folder's model needs that folder picked again after a reload. */
  private checkFolder(record: RunRecord): void {
    if (record.modelFolder && !this.folders.has(record.modelFolder)) {
      throw new ConfigError(`Run ${record.name} trained the model in the folder "${record.modelFolder}": pick that folder again in Model, then retry.`);
    }
  }

  private dataHost(): DataHost {
    return { files: this.dataFiles, cache: this.makeCache(), userKeys: new Set(this.userEntries.keys()) };
  }

  /** A picked file the config names must be here (a registry key is fetched later). */
  private checkData(config: ExperimentConfig): void {
    const spec = String(config.dataset ?? '').trim();
    if (!spec) throw new ConfigError('dataset is not set: pick a built-in dataset or a .jsonl file in Data.');
    if (!hasDataset(spec.split(',')[0].trim())) userExamples(spec, this.dataFiles);
  }

  private sourcesFor(config: ExperimentConfig): { model: FileSource; adapter?: FileSource } {
    const endpoint = String(config.endpoint);
    const name = String(config.model_name_or_path);
    const folder = this.folders.get(name);
    const model = folder ?? new HubSource({ endpoint, repo: name, kind: 'model', cache: this.makeCache() });
    const adapter = config.adapter_name_or_path
      ? new HubSource({ endpoint, repo: String(config.adapter_name_or_path), kind: 'model', cache: this.makeCache() })
      : undefined;
    return { model, adapter };
  }

  private async tokenizerFor(config: ExperimentConfig): Promise<Tokenizer> {
    const l = this.loaded;
    if (l && l.summary.repo === config.model_name_or_path && (l.endpoint === 'folder' || l.endpoint === new HubSource({ endpoint: String(config.endpoint), repo: l.summary.repo, kind: 'model' }).endpoint)) {
      return l.tokenizer;
    }
    return loadTokenizer(this.sourcesFor(config).model);
  }

  /** The engine, acquiring the device on first use and again after a device loss. */
  private device(): Promise<Engine> {
    const current = this.engine;
    if (current) {
      return current.then((e) => {
        if (!e.ctx.lost) return e;
        this.loaded = null;
        this.session = null;
        this.engine = null;
        return this.device();
      });
    }
    const next = acquireDevice(this.gpu).then((ctx) => new Engine(ctx));
    // A failed acquisition is retried on the next call (the user may change a flag and retry).
    next.catch(() => {
      if (this.engine === next) this.engine = null;
    });
    this.engine = next;
    return next;
  }

  private unload(): void {
    if (!this.loaded) return;
    this.loaded.model.dispose();
    this.loaded.model.e.flush();
    this.loaded = null;
  }

  private dropSession(): void {
    const s = this.session;
    if (!s) return;
    this.session = null;
    s.trainer?.dispose();
    s.prepared.method.detach();
    s.prepared.model.dispose();
    s.prepared.model.e.flush();
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

function stepOf(name: string): number {
  return Number(/(\d+)$/.exec(name)?.[1] ?? -1);
}

function round(x: number, digits = 6): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** The Hub cache's own meta records (size per file), read without loading the files. */
function hubCacheMeta(): KeyValueStore {
  return idbKeyValueStore('peft-studio', 'hub-files');
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

/**
 * Text of the continuation: decode prompt + new ids and drop the prompt's
 * text, so a leading space of the first new token survives (SentencePiece
 * decoders strip it at the start of a sequence).
 */
function continuation(tok: Tokenizer, promptIds: number[]): (ids: number[]) => string {
  const opts = { skipSpecialTokens: true };
  const prefix = tok.decode(promptIds, opts);
  return (ids) => {
    const full = tok.decode([...promptIds, ...ids], opts);
    return full.startsWith(prefix) ? full.slice(prefix.length) : tok.decode(ids, opts);
  };
}

function throttle(fn: ((p: LoadProgress) => void) | undefined): { push(p: LoadProgress): void; flush(): void } {
  const last = new Map<string, number>();
  const pending = new Map<string, LoadProgress>();
  return {
    push(p) {
      if (!fn) return;
      const now = performance.now();
      const done = p.total > 0 && p.loaded >= p.total;
      if (done || now - (last.get(p.file) ?? -Infinity) >= PROGRESS_INTERVAL_MS) {
        last.set(p.file, now);
        pending.delete(p.file);
        fn({ file: p.file, loaded: p.loaded, total: p.total });
      } else {
        pending.set(p.file, { file: p.file, loaded: p.loaded, total: p.total });
      }
    },
    flush() {
      for (const p of pending.values()) fn?.(p);
      pending.clear();
    },
  };
}

