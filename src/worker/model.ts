/**
 * The Model screen's base model in the worker: loading it from the Hub (with
 * the browser's file cache) or from a picked folder, where a config's model
 * files come from, and the trainable-parameter count of a method on it.
 */
import { validateConfig, type ExperimentConfig } from '../config/schema';
import { ConfigError } from '../errors';
import { cacheKey, DirectoryHandleSource, HubSource, idbKeyValueStore, type FileCache, type FileSource, type KeyValueStore } from '../hub/index';
import { countTrainable } from '../methods/count';
import type { LlamaModel } from '../model/llama';
import { baseDtypeOf, loadModel, weightPoolBytes, type BaseDtype } from '../model/load';
import { loadTokenizer, type Tokenizer } from '../model/tokenizer';
import type { LoadModelOptions, LoadProgress, ModelSummary, TrainableCount } from './api';
import type { DeviceSlot } from './device';

/** Progress events cross postMessage; send at most one per file per interval, and always the last. */
const PROGRESS_INTERVAL_MS = 50;

export interface LoadedModel {
  model: LlamaModel;
  tokenizer: Tokenizer;
  summary: ModelSummary;
  /** The Hub endpoint it came from, or 'folder'. */
  endpoint: string;
}

export class BaseModel {
  loaded: LoadedModel | null = null;
  /** Model folders picked in this page, by name (what model_name_or_path then says). */
  readonly folders = new Map<string, FileSource>();

  constructor(
    private readonly device: DeviceSlot,
    /** Browser file cache for Hub downloads; injected so another host can pass its own. */
    readonly makeCache: () => FileCache | undefined,
  ) {
    device.onReset(() => (this.loaded = null));
  }

  load(opts: LoadModelOptions, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary> {
    const repo = opts.repo.trim();
    const revision = opts.revision?.trim() || 'main';
    // HubSource checks the endpoint, repo id and revision and names what is wrong.
    // Checked before any download: a typo is a ConfigError naming the values.
    const baseDtype = baseDtypeOf({ base_dtype: opts.baseDtype, torch_dtype: opts.torchDtype });
    const source = new HubSource({ endpoint: opts.endpoint.trim(), repo, revision, kind: 'model', cache: opts.cache === false ? undefined : this.makeCache() });
    return this.loadFrom(source, repo, revision, source.endpoint, baseDtype, onProgress);
  }

  loadFolder(
    folder: FileSystemDirectoryHandle,
    onProgress?: (p: LoadProgress) => void,
    opts: Pick<LoadModelOptions, 'baseDtype' | 'torchDtype'> = {},
  ): Promise<ModelSummary> {
    const baseDtype = baseDtypeOf({ base_dtype: opts.baseDtype, torch_dtype: opts.torchDtype });
    const source = new DirectoryHandleSource(folder);
    this.folders.set(folder.name, source);
    return this.loadFrom(source, folder.name, 'local folder', 'folder', baseDtype, onProgress);
  }

  async cacheStatus(endpoint: string, repo: string, revision: string): Promise<{ files: number; bytes: number }> {
    const cache = this.makeCache();
    const prefix = cacheKey(new HubSource({ endpoint, repo, kind: 'model' }).endpoint, repo, revision, '');
    let files = 0,
      bytes = 0;
    for (const key of (await cache?.list?.()) ?? []) {
      if (!key.startsWith(prefix)) continue;
      files++;
      const m = (await hubCacheMeta()
        .get(`meta:${key}`)
        .catch(() => undefined)) as { size?: number } | undefined;
      bytes += typeof m?.size === 'number' ? m.size : 0;
    }
    return { files, bytes };
  }

  private loadFrom(
    source: FileSource,
    repo: string,
    revision: string,
    endpoint: string,
    baseDtype: BaseDtype,
    onProgress?: (p: LoadProgress) => void,
  ): Promise<ModelSummary> {
    return this.device.exclusive(async () => {
      const e = await this.device.acquire();
      this.unload();
      const t0 = performance.now();
      const report = throttle(onProgress);
      const loaded = await loadModel(e, source, { onProgress: report.push, baseDtype });
      report.flush();
      if (!loaded.tokenizer) throw new ConfigError(`${repo} was loaded without a tokenizer; generation needs tokenizer.json.`);
      const c = loaded.model.config;
      const summary: ModelSummary = {
        repo,
        revision,
        modelType: c.modelType,
        hiddenSize: c.hiddenSize,
        numLayers: c.numLayers,
        numHeads: c.numHeads,
        numKvHeads: c.numKvHeads,
        intermediateSize: c.intermediateSize,
        vocabSize: c.vocabSize,
        headDim: c.headDim,
        maxPositionEmbeddings: c.maxPositionEmbeddings,
        numParams: loaded.model.numParams(),
        loadMs: performance.now() - t0,
        weightDtype: loaded.model.weightDtype(),
        weightBytes: loaded.model.weightBytes(),
        baseDtype,
        chatTemplate: !!loaded.tokenizer.chatTemplate,
      };
      this.loaded = { model: loaded.model, tokenizer: loaded.tokenizer, summary, endpoint };
      return summary;
    });
  }

  /** The loaded model, or a sentence saying to load one first. */
  require(forWhat: string): LoadedModel {
    if (!this.loaded) throw new ConfigError(`No base model is loaded: load one in Model before ${forWhat}.`);
    return this.loaded;
  }

  countTrainable(raw: Record<string, unknown>): Promise<TrainableCount> {
    return this.device.exclusive(async () => {
      const config = validateConfig(raw, 'studio');
      const { model, tokenizer } = this.require('counting trainable parameters');
      // countOnly: methods skip work that would change the base (QLoRA's quantization), so every count sees the same model.
      const count = await countTrainable(model, config, tokenizer);
      // A run loads its own copy of the model (prepareExperiment) beside this one, which stays loaded: training holds
      // both, and the method on the copy. (Not the pool's bytes now: it may still hold the last run's model.)
      return { ...count, residentBytes: weightPoolBytes(model) + weightPoolBytes(model, baseDtypeOf(config)) + count.methodBytes };
    });
  }

  /** Where the config's model (and adapter_name_or_path) files come from: a picked folder, else the Hub. */
  sourcesFor(config: ExperimentConfig): { model: FileSource; adapter?: FileSource } {
    const endpoint = String(config.endpoint);
    const name = String(config.model_name_or_path);
    const folder = this.folders.get(name);
    const model = folder ?? new HubSource({ endpoint, repo: name, kind: 'model', cache: this.makeCache() });
    const adapter = config.adapter_name_or_path
      ? new HubSource({ endpoint, repo: String(config.adapter_name_or_path), kind: 'model', cache: this.makeCache() })
      : undefined;
    return { model, adapter };
  }

  /** The config's tokenizer: the loaded model's when it is the same model, else read from its files. */
  async tokenizerFor(config: ExperimentConfig): Promise<Tokenizer> {
    const l = this.loaded;
    if (
      l &&
      l.summary.repo === config.model_name_or_path &&
      (l.endpoint === 'folder' || l.endpoint === new HubSource({ endpoint: String(config.endpoint), repo: l.summary.repo, kind: 'model' }).endpoint)
    ) {
      return l.tokenizer;
    }
    return loadTokenizer(this.sourcesFor(config).model);
  }

  unload(): void {
    if (!this.loaded) return;
    this.loaded.model.dispose();
    this.loaded.model.e.flush();
    this.loaded = null;
  }
}

/** The Hub cache's own meta records (size per file), read without loading the files. */
export function hubCacheMeta(): KeyValueStore {
  return idbKeyValueStore('peft-studio', 'hub-files');
}

export function throttle(fn: ((p: LoadProgress) => void) | undefined): { push(p: LoadProgress): void; flush(): void } {
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
        fn({ file: p.file, loaded: p.loaded, total: p.total, ...(p.cached ? { cached: true } : {}) });
      } else {
        pending.set(p.file, { file: p.file, loaded: p.loaded, total: p.total, ...(p.cached ? { cached: true } : {}) });
      }
    },
    flush() {
      for (const p of pending.values()) fn?.(p);
      pending.clear();
    },
  };
}
