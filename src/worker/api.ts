/**
 * The engine worker's API: the one interface the worker exposes through
 * comlink and the UI calls. Everything here crosses postMessage, so it is
 * plain data (structured-clone) except the callbacks, which the caller wraps
 * in `Comlink.proxy`. Errors arrive as `Error`s whose `name` is one of the
 * classes in src/errors.ts (comlink keeps name and message).
 */

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
}

export interface LoadModelOptions {
  /** Hub base URL, e.g. https://huggingface.co or a local mirror. */
  endpoint: string;
  /** Repo id, e.g. `stories260K` or `owner/name`. */
  repo: string;
  revision?: string;
  /** Keep downloaded files in IndexedDB for the next visit (default true). */
  cache?: boolean;
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
  numParams: number;
  /** Wall time of the whole load (download, parse, upload), ms. */
  loadMs: number;
}

export interface GenerateOptions {
  prompt: string;
  maxNewTokens: number;
  /** 0 means greedy (argmax). */
  temperature: number;
  topK?: number;
  topP?: number;
  seed?: number;
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

export interface StudioApi {
  /** Acquire WebGPU in the worker (once) and describe the device. */
  gpuInfo(): Promise<GpuInfo>;
  /** Download (or read from cache) and upload a model; progress per file. Replaces any loaded model. */
  loadModel(opts: LoadModelOptions, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary>;
  /**
   * Generate from the loaded model. `onToken` gets each new id and the
   * continuation text decoded so far (whole, not a delta: a byte-fallback
   * token can change the last characters).
   */
  generate(opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult>;
  /** Stop the running generation; it resolves with what it has. */
  cancel(): void;
}
