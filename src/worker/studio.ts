/**
 * The engine side of StudioApi. Host-agnostic: the GPU object is injected
 * (`navigator.gpu` in the worker), so nothing here touches the DOM or Node.
 *
 * One device per worker, acquired on first use; one model at a time. Calls
 * that use the GPU run one after another (a load never overlaps a
 * generation); `cancel()` is the exception and acts at once.
 */
import { Engine } from '../engine/engine';
import { ConfigError } from '../errors';
import { acquireDevice } from '../gpu/device';
import { HubSource, IdbCache, type FileCache } from '../hub/index';
import { generate } from '../model/generate';
import { loadModel } from '../model/load';
import { KEY_LIMITS } from './api';
import type { GenerateOptions, GenerateResult, GpuInfo, LoadModelOptions, LoadProgress, ModelSummary, StudioApi } from './api';

type Loaded = Awaited<ReturnType<typeof loadModel>>;
type Tokenizer = NonNullable<Loaded['tokenizer']>;

/** Progress events cross postMessage; send at most one per file per interval, and always the last. */
const PROGRESS_INTERVAL_MS = 50;

export class Studio implements StudioApi {
  private engine: Promise<Engine> | null = null;
  private loaded: (Loaded & { tokenizer: Tokenizer; summary: ModelSummary }) | null = null;
  private running: AbortController | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly gpu: GPU | undefined,
    /** Browser file cache for Hub downloads; injected so another host can pass its own. */
    private readonly makeCache: () => FileCache | undefined = () => new IdbCache(),
  ) {}

  async gpuInfo(): Promise<GpuInfo> {
    const { ctx } = await this.device();
    const limits: Record<string, number> = {};
    for (const k of KEY_LIMITS) limits[k] = ctx.limits[k];
    return { adapter: { ...ctx.adapterInfo }, features: [...ctx.features].sort(), limits };
  }

  loadModel(opts: LoadModelOptions, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary> {
    return this.exclusive(async () => {
      const repo = opts.repo.trim();
      const revision = opts.revision?.trim() || 'main';
      // HubSource checks the endpoint, repo id and revision and names what is wrong.
      const source = new HubSource({ endpoint: opts.endpoint.trim(), repo, revision, kind: 'model', cache: opts.cache === false ? undefined : this.makeCache() });
      const e = await this.device();
      this.unload();
      const t0 = performance.now();
      const report = throttle(onProgress);
      const loaded = await loadModel(e, source, { onProgress: report.push });
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
        maxPositionEmbeddings: c.maxPositionEmbeddings,
        numParams: loaded.model.numParams(),
        loadMs: performance.now() - t0,
      };
      this.loaded = { ...loaded, tokenizer: loaded.tokenizer, summary };
      return summary;
    });
  }

  generate(opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult> {
    return this.exclusive(async () => {
      const loaded = this.loaded;
      if (!loaded) throw new ConfigError('No model is loaded: load one before generating.');
      const { model, tokenizer, summary } = loaded;
      if (model.e.ctx.lost) throw model.e.ctx.lost;
      const maxNewTokens = Math.floor(opts.maxNewTokens);
      if (!(maxNewTokens >= 1)) throw new ConfigError(`Max new tokens must be at least 1, got ${opts.maxNewTokens}.`);
      if (!(opts.temperature >= 0)) throw new ConfigError(`Temperature must be 0 (greedy) or more, got ${opts.temperature}.`);
      const promptIds = tokenizer.encode(opts.prompt);
      if (promptIds.length === 0) throw new ConfigError('The prompt encodes to no tokens: type some text.');
      if (promptIds.length + maxNewTokens > summary.maxPositionEmbeddings) {
        throw new ConfigError(
          `The prompt (${promptIds.length} tokens) plus ${maxNewTokens} new tokens exceeds the model's context of ${summary.maxPositionEmbeddings}: shorten one of them.`,
        );
      }
      // Same stop set as the CLI: llama2.c-style models end a story with BOS.
      const stopIds = [...new Set([tokenizer.eosTokenId, model.config.bosTokenId, ...model.config.eosTokenIds])].filter(
        (x): x is number => typeof x === 'number',
      );
      const text = continuation(tokenizer, promptIds);
      const ids: number[] = [];
      const abort = new AbortController();
      this.running = abort;
      const t0 = performance.now();
      let out: number[] = ids;
      try {
        out = await generate(model, promptIds, {
          maxNewTokens,
          temperature: opts.temperature,
          topK: opts.topK,
          topP: opts.topP,
          seed: opts.seed,
          stopIds,
          signal: abort.signal,
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
    });
  }

  cancel(): void {
    this.running?.abort();
  }

  /** The engine, acquiring the device on first use and again after a device loss. */
  private device(): Promise<Engine> {
    const current = this.engine;
    if (current) {
      return current.then((e) => {
        if (!e.ctx.lost) return e;
        this.loaded = null;
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

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
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
