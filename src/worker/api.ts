/**
 * The engine worker's API: the one interface the worker exposes through
 * comlink and the UI calls. Everything here crosses postMessage, so it is
 * plain data (structured-clone) except the callbacks, which the caller wraps
 * in `Comlink.proxy`. Errors arrive as `Error`s whose `name` is one of the
 * classes in src/errors.ts (comlink keeps name and message).
 */
import type { OptionSpec } from '../config/schema';
import type { TrainResults } from '../run/finish';
import type { MethodInfo } from '../methods/select';
import type { MethodMemory } from '../methods/types';
import type { LogEntry } from '../train/trainer';

export interface GpuInfo {
  adapter: { vendor: string; architecture: string; device: string; description: string };
  /** Features of the device the engine got (what kernels may use). */
  features: string[];
  /** The limits in KEY_LIMITS, as granted to the device. */
  limits: Record<string, number>;
}

/** Limits that decide which models and batch sizes fit (see src/gpu/device.ts). */
export const KEY_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupsPerDimension',
] as const;

export interface LoadProgress {
  /** Path inside the repo, e.g. `model.safetensors`. */
  file: string;
  loaded: number;
  /** Bytes expected; 0 when the server did not say. */
  total: number;
  /** Read from the browser cache (IndexedDB), not downloaded. */
  cached?: boolean;
}

export interface LoadModelOptions {
  /** Hub base URL, e.g. https://huggingface.co or a local mirror. */
  endpoint: string;
  /** Repo id, e.g. `stories260K` or `owner/name`. */
  repo: string;
  revision?: string;
  /** Keep downloaded files in IndexedDB for the next visit (default true). */
  cache?: boolean;
  /** How the base weights are held on the GPU: the experiment's base_dtype (and torch_dtype, used when base_dtype is auto), as a run holds them. */
  baseDtype?: unknown;
  torchDtype?: unknown;
}

export interface ModelSummary {
  repo: string;
  revision: string;
  modelType: string;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  /** Per-head size (head_dim; hidden / heads when the config has none). */
  headDim?: number;
  numParams: number;
  /** The tokenizer has a chat template (the Playground renders prompts with it by default). */
  chatTemplate?: boolean;
  /** Wall time of the whole load (download, parse, upload), ms. */
  loadMs: number;
  /** Storage of the 2-D base weights on the GPU: 'f32', 'f16', 'bf16' (packed, the file's dtype), or a mix such as 'bf16+f32'. */
  weightDtype?: string;
  /** GPU bytes of the base weights as stored (packed 16-bit: half of f32). */
  weightBytes?: number;
  /** The base_dtype the weights were loaded with (auto: the checkpoint's dtype). */
  baseDtype?: string;
}

export interface GenerateOptions {
  prompt: string;
  maxNewTokens: number;
  /** 0 means greedy (argmax). */
  temperature: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /**
   * Render the prompt as a user turn of this prompt template before generating (src/data/template.ts):
   * a name (default, alpaca, chat ...), or null for the model's own (chat when the tokenizer has a chat
   * template, else default). Left out: the prompt is plain text to continue.
   */
  template?: string | null;
}

export interface GenerateResult {
  /** The new token ids, without the prompt. */
  ids: number[];
  /** The prompt as the tokenizer encoded it (with BOS when the tokenizer adds one). */
  promptIds: number[];
  /** The decoded continuation (the text after the prompt). */
  text: string;
  /** True when `cancel()` stopped the generation early; `ids` holds what was generated. */
  cancelled: boolean;
  ms: number;
}

/** What the studio can configure: the methods and every option of the one schema. */
export interface Catalogue {
  /** The installed methods (built-in folders and plug-ins), in list order: what each says about itself. */
  methods: MethodInfo[];
  /** Every registered option (built-in and methods'), in registration order. */
  options: OptionSpec[];
  /** Built-in datasets (registry keys), when the registry is present. */
  datasets: DatasetInfo[];
}

export interface DatasetInfo {
  key: string;
  task?: string;
  description?: string;
}

/** A user's data file, read by the page (picked or dropped) and handed to the worker. */
export interface DataFile {
  name: string;
  bytes: Uint8Array;
}

export interface ColumnMapping {
  prompt: string;
  query?: string;
  response: string;
  instruction?: string;
}

export interface DataFileInfo {
  name: string;
  rows: number;
  columns: string[];
  /** The first rows, values as text (cut to 200 characters). */
  sample: Record<string, string>[];
  /** Has instruction and output columns: trains as Alpaca rows without a mapping. */
  alpaca: boolean;
}

export interface TrainableCount {
  trainable: number;
  total: number;
  method: string;
  /**
   * GPU bytes a run of this config will hold before its first step: the Model
   * screen's model with the method attached (measured, corrected for work the
   * count skipped) plus the run's own copy of the model's weights. The memory
   * estimate's resident term.
   */
  residentBytes?: number;
  /** Trainable parameters the trainer's AdamW updates (the rest update themselves): the estimate's optimizer term. */
  adamw?: number;
  /** Virtual tokens the method prepends to every sequence. */
  virtualTokens?: number;
  /** What the method's forward keeps for the backward (AttachedMethod.memory). */
  memory?: MethodMemory;
}

export interface DataPreview {
  /** Examples read from the dataset (after max_samples). */
  rows: number;
  train: number;
  val: number;
  /** Examples longer than cutoff_len (cut by the LLaMA-Factory rule). */
  truncated: number;
  cutoffLen: number;
  /** Untruncated token length (prompt + response) of every example. */
  lengths: number[];
  /** The first examples as the model sees them: rendered prompt and response, token counts. */
  examples: { prompt: string; response: string; promptTokens: number; responseTokens: number }[];
}

export type RunStatus = 'running' | 'paused' | 'stopped' | 'done' | 'failed';

/** One trainer_log.jsonl entry, as the trainer writes it (the worker forwards them unchanged). */
export type LogPoint = LogEntry;

export interface RunInfo {
  id: string;
  name: string;
  createdAt: number;
  updatedAt: number;
  status: RunStatus;
  config: Record<string, unknown>;
  method: string;
  step: number;
  totalSteps: number;
  trainableParams: number;
  numParams: number;
  /** Whether the run's method merges into the base weights (merged and ONNX exports); undefined until the run has attached it, and for runs stored before this was recorded. */
  mergeable?: boolean;
  /** all_results.json of a finished run (HF meanings: train_loss is the mean over training). */
  summary?: TrainResults;
  metrics?: Record<string, number | string | null>;
  error?: string;
  /** Complete checkpoints, oldest first. */
  checkpoints: string[];
  /** Files of the run (adapter, results, predictions). */
  files: string[];
  /** Bytes the run holds in IndexedDB. */
  bytes: number;
}

export interface TrainCallbacks {
  /** Model download / cache read progress of the run's model. */
  onProgress?(p: LoadProgress): void;
  onStep?(step: number, total: number): void;
  onLog?(entry: LogPoint): void;
  /** Evaluation during training: validation batches done of total (0 / total when it starts). */
  onEvaluate?(done: number, total: number): void;
  /** The run record after each status change (created, paused, done, failed...). */
  onStatus?(run: RunInfo): void;
}

export interface EvalOptions {
  /**
   * Config keys that override the run's for this evaluation (max_predict_samples, max_new_tokens, pscp_*, ...).
   * max_new_tokens and max_predict_samples left out (or null) take the bounded defaults of the dataset
   * family (src/eval/budget.ts): a label word for classification, not 1024 tokens.
   */
  overrides?: Record<string, unknown>;
}

/** What an evaluation is doing: the validation loss's batches, then the predictions' examples. */
export interface EvalProgress {
  phase: 'loss' | 'predict';
  done: number;
  total: number;
  /** The settings in use (sent with the predict phase). */
  settings?: EvalSettings;
}

export interface EvalSettings {
  maxNewTokens: number;
  maxPredictSamples: number | null;
  /** Why these bounds (the dataset family's needs), when they are the defaults. */
  reason: string | null;
}

export interface PredictionInfo {
  prompt: string;
  predict: string;
  label: string;
  /** correct / wrong, or invalid when the answer is none of the label words (classification). */
  verdict: 'correct' | 'wrong' | 'invalid';
}

export interface EvalResult {
  runId: string;
  /** Empty when cancelled (nothing is stored then). */
  metrics: Record<string, number | string | null>;
  predictions: PredictionInfo[];
  cancelled: boolean;
  /** The bounds used; null when cancelled before the predictions began. */
  settings: EvalSettings | null;
}

export interface StorageInfo {
  usage: number | null;
  quota: number | null;
  /** Cached Hub files (models, datasets), by repo. */
  cached: { repo: string; files: number; bytes: number }[];
  runs: { id: string; name: string; bytes: number }[];
}

export interface ExportFile {
  name: string;
  data: Uint8Array | string;
}

export interface StudioApi {
  /** Acquire WebGPU in the worker (once) and describe the device. */
  gpuInfo(): Promise<GpuInfo>;
  /** Download (or read from cache) and upload a model; progress per file. Replaces any loaded model. */
  loadModel(opts: LoadModelOptions, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary>;
  /**
   * Load a model from a folder the user picked (or dropped): a Hub-layout
   * folder with config.json. Runs whose model_name_or_path is the folder's
   * name read it from there (until the page is closed).
   */
  loadModelFolder(
    folder: FileSystemDirectoryHandle,
    onProgress?: (p: LoadProgress) => void,
    opts?: Pick<LoadModelOptions, 'baseDtype' | 'torchDtype'>,
  ): Promise<ModelSummary>;
  /** Which of a repo's files are in the browser cache. */
  cacheStatus(endpoint: string, repo: string, revision: string): Promise<{ files: number; bytes: number }>;
  /**
   * Generate from the loaded model. `onToken` gets each new id and the
   * continuation text decoded so far (whole, not a delta: a byte-fallback
   * token can change the last characters).
   */
  generate(opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult>;
  /** Stop the running generation; it resolves with what it has. */
  cancel(): void;

  /** Methods, options and datasets for the forms (no GPU needed). */
  catalogue(): Promise<Catalogue>;
  /** Trainable parameters of a config's method on the loaded model (attached, counted, detached). */
  countTrainable(config: Record<string, unknown>): Promise<TrainableCount>;
  /** Keep a user data file for previews and runs (by its name, which the config's dataset names). */
  putDataFile(file: DataFile): Promise<{ name: string; bytes: number }>;
  /** A picked file's columns and first rows, and whether it is Alpaca-shaped (instruction / output). */
  inspectDataFile(name: string): Promise<DataFileInfo>;
  /**
   * Make a picked file a dataset with a column mapping (a custom registry
   * entry, the `columns` formatter); returns its key. The config then names
   * it as `dataset` with `dataset_info: dataset_info.json`, which Export
   * writes beside the file.
   */
  mapDataFile(name: string, mapping: ColumnMapping): Promise<string>;
  /** How the config's dataset renders and tokenizes (the model's tokenizer). */
  previewData(config: Record<string, unknown>, examples: number): Promise<DataPreview>;

  /** Train a new run; resolves when it finishes, pauses, stops or fails (then rejects). */
  startRun(config: Record<string, unknown>, cb: TrainCallbacks): Promise<RunInfo>;
  /** Continue a paused run, or one interrupted by a crash, from its newest checkpoint. */
  resumeRun(id: string, cb: TrainCallbacks): Promise<RunInfo>;
  /** Stop after the current step and save a checkpoint (resumable). */
  pauseRun(): void;
  /** Stop after the current step and keep the adapter as it is. */
  stopRun(): void;
  /** Test hook: destroy the GPU device as a driver reset would (the studio then reports a device loss). */
  simulateDeviceLoss(): Promise<void>;
  listRuns(): Promise<RunInfo[]>;
  runLog(id: string): Promise<LogPoint[]>;
  deleteRun(id: string): Promise<void>;
  /**
   * Validation loss and predictions of a run's adapter; metrics stored with the run. Progress comes
   * from the first batch on; generation (Playground) runs between its batches.
   */
  evaluateRun(id: string, opts: EvalOptions, onProgress?: (p: EvalProgress) => void): Promise<EvalResult>;
  /** Stop the running evaluation after its current batch; it resolves with `cancelled` and stores nothing. */
  cancelEvaluation(): void;
  /** Generate with a run's adapter (`runId`) or with the loaded base model (null). */
  generateWith(runId: string | null, opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult>;
  /** The run's files for download: adapter (HF PEFT layout), config.yaml, logs, results, predictions. */
  exportFiles(id: string): Promise<ExportFile[]>;
  /** The same files as one zip. */
  exportZip(id: string): Promise<Uint8Array>;
  /** The base model with the run's adapter merged in, as a zipped HF model folder (methods that can merge). */
  exportMerged(id: string): Promise<Uint8Array>;
  /** The merged model as the folder transformers.js loads (onnx/model.onnx, config.json, tokenizer files), zipped (methods that can merge). */
  exportOnnx(id: string): Promise<Uint8Array>;
  storageInfo(): Promise<StorageInfo>;
  /** Delete cached Hub files ('cache'), every run ('runs'), or the runs not among `keep`. */
  clearStorage(what: 'cache' | 'runs'): Promise<void>;
}
