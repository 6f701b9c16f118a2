/**
 * Load a Hugging Face model folder or Hub repo onto the GPU: config.json,
 * model.safetensors or a sharded index, and the tokenizer.
 *
 * Weights stream: the shard headers are checked against config.json
 * (checkWeights) first, then one tensor at a time is read (a positioned
 * read where the source has readRange: a local file, a picked folder, the
 * Hub's cache; from the Hub itself, one streamed download per shard that
 * hands over each tensor as it arrives and fills the cache on the way;
 * otherwise one shard in memory at a time), converted to its storage dtype
 * and uploaded, so the host holds at most one tensor (plus its conversion
 * and a download chunk), never the model. Storage (`base_dtype`):
 *   auto      2-D weights keep the file's dtype: F16 / BF16 stay packed 16-bit
 *             on the GPU (two per u32, unpacked inside the kernels), F32 stays f32
 *   float32   everything f32 (the reference path)
 *   float16 / bfloat16   2-D weights rounded (to nearest even) to that dtype
 * 1-D tensors (norm weights, biases) are always f32: they are a few KB, and
 * methods that train them (LN tuning, BitFit) need f32 anyway.
 * A weight larger than the engine's binding limit (Engine.maxBindingBytes) is
 * split into row blocks (see Tensor).
 */
import type { Engine } from '../engine/engine';
import { rowsPerBlock, roundToHalves } from '../engine/ops/packed';
import type { StorageDtype, Tensor } from '../engine/tensor';
import { storageBytes } from '../engine/tensor';
import { DTYPE_ALIASES } from '../config/schema';
import { ConfigError, ModelFormatError } from '../errors';
import { cacheHint, getCapped, jsonLimit, type FileSource } from '../hub/source';
import { parseModelConfig, type ModelConfig } from './config';
import { LlamaModel } from './llama';
import {
  decodeTensorData,
  parseSafetensors,
  parseSafetensorsHeader,
  safetensorsHeaderSize,
  type SafetensorsDtype,
  type SafetensorsHeader,
} from './safetensors';
import { loadTokenizer, type Tokenizer } from './tokenizer';
import { checkWeightDtypes, checkWeights, ignoredWarning, type WeightsCheck } from './weights';

export interface Progress {
  file: string;
  loaded: number;
  total: number;
}

/** How frozen base weights are stored on the GPU (see the header). */
export type BaseDtype = 'auto' | 'float32' | 'float16' | 'bfloat16';
export const BASE_DTYPES: readonly BaseDtype[] = ['auto', 'float32', 'float16', 'bfloat16'];

export interface LoadOptions {
  onProgress?: (p: Progress) => void;
  /** Skip the tokenizer (tests with random weights). */
  tokenizer?: boolean;
  /** Notes that are not errors (tensors not part of the architecture); default console.warn. */
  warn?: (message: string) => void;
  /** Storage of the base weights; default auto (the file's dtype). */
  baseDtype?: BaseDtype;
}

/** One tensor on its way to the GPU: its file bytes in its file dtype, or f32 values. */
export type HostWeight = { name: string; shape: number[]; dtype: SafetensorsDtype; bytes: Uint8Array } | { name: string; shape: number[]; data: Float32Array };

const defaultWarn = (m: string) => console.warn(`peft-studio: ${m}`);

/** Throws ConfigError unless `v` is a base_dtype value (torch spellings "torch.bfloat16", "bf16"... and "auto"). */
export function parseBaseDtype(v: unknown, key = 'base_dtype'): BaseDtype {
  if (v === undefined || v === null || v === '') return 'auto';
  const s = String(v);
  const d = (Object.prototype.hasOwnProperty.call(DTYPE_ALIASES, s) ? DTYPE_ALIASES[s] : s) as BaseDtype;
  if (!BASE_DTYPES.includes(d)) throw new ConfigError(`${key}: ${JSON.stringify(v)} is not a base weight dtype; use one of ${BASE_DTYPES.join(', ')}.`);
  return d;
}

/** The base storage an experiment config asks for: base_dtype, else torch_dtype, else auto. */
export function baseDtypeOf(config: Record<string, unknown>): BaseDtype {
  const b = parseBaseDtype(config.base_dtype, 'base_dtype');
  return b !== 'auto' ? b : parseBaseDtype(config.torch_dtype, 'torch_dtype');
}

/**
 * Pool bytes of a loaded model's weights, or of another load of the same
 * model with `base` (auto: as this one holds them; 1-D tensors are f32
 * either way): the memory estimate's base-weight term.
 */
export function weightPoolBytes(model: LlamaModel, base: BaseDtype = 'auto'): number {
  let n = 0;
  for (const t of model.params.values()) {
    const dtype = base === 'auto' || t.shape.length < 2 ? t.dtype : base === 'float32' ? 'f32' : base === 'float16' ? 'f16' : 'bf16';
    for (const b of t.blocks ?? [t]) n += model.e.pool.bytesFor(storageBytes(b.size, dtype));
  }
  return n;
}

export async function readConfig(source: FileSource): Promise<ModelConfig> {
  const bytes = await getCapped(source, 'config.json', jsonLimit('config.json'));
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new ModelFormatError(`config.json in ${source.id} is not valid JSON: ${(err as Error).message}.${await cacheHint(source, 'config.json')}`);
  }
  try {
    return parseModelConfig(json, `${source.id}/config.json`);
  } catch (err) {
    if (err instanceof ModelFormatError) err.message += await cacheHint(source, 'config.json');
    throw err;
  }
}

/** The safetensors files of a checkpoint: model.safetensors, or the shards a sharded index names. */
async function weightFiles(source: FileSource): Promise<string[]> {
  if (await source.has('model.safetensors')) return ['model.safetensors'];
  const index = 'model.safetensors.index.json';
  if (!(await source.has(index))) {
    throw new ModelFormatError(`${source.id} has neither model.safetensors nor ${index}; only safetensors checkpoints are supported.`);
  }
  let idx: unknown;
  try {
    idx = JSON.parse(new TextDecoder().decode(await getCapped(source, index, jsonLimit(index))));
  } catch (err) {
    if ((err as Error).name === 'FileTooLargeError') throw err;
    throw new ModelFormatError(`${source.id}/${index} is not valid JSON (${(err as Error).message}). Download it again.${await cacheHint(source, index)}`);
  }
  const map = idx !== null && typeof idx === 'object' && !Array.isArray(idx) ? (idx as { weight_map?: unknown }).weight_map : undefined;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new ModelFormatError(`${source.id}/${index} has no "weight_map" object (tensor name → shard file). Download it again.`);
  }
  const files = Object.values(map as Record<string, unknown>);
  const bad = files.find((f) => typeof f !== 'string' || !f.endsWith('.safetensors'));
  if (bad !== undefined)
    throw new ModelFormatError(`${source.id}/${index} names ${JSON.stringify(bad)} as a shard; shards are .safetensors files. Download the index again.`);
  if (!files.length) throw new ModelFormatError(`${source.id}/${index} has an empty "weight_map". Download it again.`);
  return [...new Set(files as string[])];
}

/**
 * Host-side weights (float32) of a checkpoint, the whole model at once, from
 * one file or a sharded index: a helper for references and tests (float64
 * forward, gradient checks), not the loading path (loadModel streams). With `config`, only the tensors the config uses are converted (the
 * headers are checked against it first: checkWeights).
 */
export async function readWeights(
  source: FileSource,
  onProgress?: (p: Progress) => void,
  config?: ModelConfig,
  warn: (message: string) => void = (m) => console.warn(`peft-studio: ${m}`),
): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const files = await weightFiles(source);
  const shapes = new Map<string, number[]>();
  const headerShapes = (h: { tensors: Map<string, { shape: number[] }> }) => {
    for (const [t, info] of h.tensors) shapes.set(t, info.shape);
  };
  // Where the source reads part of a file: every header (length, JSON, offsets against the real file size) and its
  // agreement with the config are checked before the first data byte is read.
  const ranged = !!(source.readRange && config);
  let check: WeightsCheck | null = null;
  if (ranged) {
    for (const f of files) {
      const name = `${source.id}/${f}`;
      const prefix = await source.readRange!(f, 0, 8);
      const n = safetensorsHeaderSize(prefix.bytes, name, prefix.size);
      const head = await source.readRange!(f, 0, n);
      headerShapes(parseSafetensorsHeader(head.bytes, name, head.size));
    }
    check = checkWeights(config!, shapes, source.id);
  }
  const loaded: { f: string; bytes: Uint8Array }[] = [];
  for (const f of files) {
    const bytes = await source.get(f, onProgress);
    if (!ranged) {
      try {
        headerShapes(parseSafetensorsHeader(bytes, `${source.id}/${f}`));
      } catch (err) {
        if (err instanceof ModelFormatError) err.message += await cacheHint(source, f);
        throw err;
      }
    }
    loaded.push({ f, bytes });
  }
  let use: Set<string> | null = null;
  if (config) {
    check ??= checkWeights(config, shapes, source.id);
    const note = ignoredWarning(check, source.id);
    if (note) warn(note);
    use = check.use;
  }
  for (const { f, bytes } of loaded) {
    const st = parseSafetensors(bytes, `${source.id}/${f}`, use ? { filter: (n) => use.has(n) } : {});
    for (const [name, t] of st.tensors) out.set(name, { shape: t.shape, data: t.data });
  }
  return out;
}

/**
 * The tensors of a checkpoint that `config` uses, one at a time in file
 * order, as file bytes, after every header was checked against the config
 * (checkWeights). With readRange each tensor's bytes are read alone (with
 * readRanges, in one front-to-back pass over each file: a Hub download,
 * cached on the way, that starts only once the headers passed); otherwise
 * one shard is in memory at a time (and, for several shards, the check runs
 * on each shard's header as it arrives, completed after the last).
 * `stats.maxRead` records the largest single read (tests check the bound).
 */
export async function* streamWeights(
  source: FileSource,
  config: ModelConfig,
  opts: { onProgress?: (p: Progress) => void; warn?: (message: string) => void; stats?: { maxRead: number } } = {},
): AsyncGenerator<HostWeight & { dtype: SafetensorsDtype; bytes: Uint8Array }> {
  const files = await weightFiles(source);
  const stats = opts.stats;
  const note = (c: WeightsCheck) => {
    const msg = ignoredWarning(c, source.id);
    if (msg) (opts.warn ?? defaultWarn)(msg);
  };
  const shapes = new Map<string, number[]>();
  const dtypes = new Map<string, SafetensorsDtype>();
  const record = (h: SafetensorsHeader) => {
    for (const [t, info] of h.tensors) {
      shapes.set(t, info.shape);
      dtypes.set(t, info.dtype);
    }
  };
  const noteRead = (n: number) => {
    if (stats) stats.maxRead = Math.max(stats.maxRead, n);
  };
  if (source.readRange) {
    const read = async (f: string, start: number, end: number) => {
      noteRead(end - start);
      return source.readRange!(f, start, end);
    };
    const headers: SafetensorsHeader[] = [];
    for (const f of files) {
      const name = `${source.id}/${f}`;
      const prefix = await read(f, 0, 8);
      const n = safetensorsHeaderSize(prefix.bytes, name, prefix.size);
      const head = await read(f, 0, n);
      const h = parseSafetensorsHeader(head.bytes, name, head.size);
      record(h);
      headers.push(h);
    }
    const check = checkWeights(config, shapes, source.id);
    checkWeightDtypes(dtypes, check.use, source.id);
    note(check);
    for (let i = 0; i < files.length; i++) {
      const h = headers[i];
      const total = h.dataStart + h.dataLength;
      const entries = [...h.tensors].filter(([key]) => check.use.has(key)).sort((a, b) => a[1].dataOffsets[0] - b[1].dataOffsets[0]);
      const ranges = entries.map(([, info]) => [h.dataStart + info.dataOffsets[0], h.dataStart + info.dataOffsets[1]] as const);
      for (const [s, e] of ranges) noteRead(e - s);
      const reads: AsyncIterable<Uint8Array> = source.readRanges
        ? source.readRanges(files[i], ranges, opts.onProgress)
        : (async function* () {
            for (const [s, e] of ranges) {
              const { bytes } = await source.readRange!(files[i], s, e);
              opts.onProgress?.({ file: files[i], loaded: e, total });
              yield bytes;
            }
          })();
      let k = 0;
      for await (const bytes of reads) {
        const [key, info] = entries[k++];
        const [begin, end] = info.dataOffsets;
        if (bytes.byteLength !== end - begin) {
          throw new ModelFormatError(
            `${source.id}/${files[i]}: tensor "${key}" was cut short (${bytes.byteLength} of ${end - begin} bytes); the file changed while loading or is truncated. Download it again.${await cacheHint(source, files[i])}`,
          );
        }
        yield { name: key, shape: info.shape, dtype: info.dtype, bytes };
      }
    }
    return;
  }
  for (const f of files) {
    const bytes = await source.get(f, opts.onProgress);
    noteRead(bytes.byteLength);
    const h = parseSafetensorsHeader(bytes, `${source.id}/${f}`);
    record(h);
    // One file: the whole check before any upload. Shards: the tensors this config expects pass now, the check completes after the last shard.
    const check = files.length === 1 ? checkWeights(config, shapes, source.id) : null;
    if (check) note(check);
    const use = check?.use;
    checkWeightDtypes(dtypes, use ?? new Set([...h.tensors.keys()].filter((k) => mayUse(config, k))), source.id);
    for (const [key, info] of h.tensors) {
      if (use ? !use.has(key) : !mayUse(config, key)) continue;
      const [begin, end] = info.dataOffsets;
      yield { name: key, shape: info.shape, dtype: info.dtype, bytes: bytes.subarray(h.dataStart + begin, h.dataStart + end) };
    }
  }
  if (files.length > 1) note(checkWeights(config, shapes, source.id));
}

/** Whether a tensor may be one the config uses (names only; checkWeights decides with shapes). */
function mayUse(config: ModelConfig, name: string): boolean {
  if (name === 'model.embed_tokens.weight' || name === 'model.norm.weight' || name === 'lm_head.weight') return true;
  const m = /^model\.layers\.(\d+)\./.exec(name);
  return !!m && Number(m[1]) < config.numLayers;
}

/** The storage dtype of a weight: see the header. */
export function storageOf(shape: number[], fileDtype: SafetensorsDtype, base: BaseDtype): StorageDtype {
  if (shape.length < 2) return 'f32';
  if (base === 'float16') return 'f16';
  if (base === 'bfloat16') return 'bf16';
  if (base === 'auto') return fileDtype === 'F16' ? 'f16' : fileDtype === 'BF16' ? 'bf16' : 'f32';
  return 'f32';
}

/** The 16-bit bits of a weight in `dtype`: the file's own bytes when they already are, else rounded from f32. */
function halvesOf(w: HostWeight, dtype: 'f16' | 'bf16'): Uint16Array {
  if ('bytes' in w && w.dtype === (dtype === 'f16' ? 'F16' : 'BF16')) {
    const b = w.bytes;
    return b.byteOffset % 2 === 0 ? new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2) : new Uint16Array(b.slice().buffer);
  }
  return roundToHalves(f32Of(w), dtype);
}

function f32Of(w: HostWeight): Float32Array {
  return 'data' in w ? w.data : decodeTensorData(w.bytes, w.dtype, false);
}

/**
 * Upload one weight in `dtype`, split into row blocks when it exceeds the
 * engine's binding limit. The returned tensor is persistent.
 */
export function uploadWeight(e: Engine, w: HostWeight, dtype: StorageDtype): Tensor {
  const n = w.shape.reduce((a, b) => a * b, 1);
  // Convert once (the host holds this one tensor, never more), then upload whole or by row blocks.
  const f32 = dtype === 'f32' ? f32Of(w) : null;
  const halves = dtype === 'f32' ? null : halvesOf(w, dtype);
  const upload = (lo: number, hi: number, shape: number[], name: string): Tensor =>
    e.persist(f32 ? e.upload(f32.subarray(lo, hi), shape, name) : e.uploadPacked(halves!.subarray(lo, hi), shape, dtype as 'f16' | 'bf16', name));
  if (storageBytes(n, dtype) <= e.maxBindingBytes || w.shape.length !== 2) return upload(0, n, w.shape, w.name);
  const [R, C] = w.shape;
  if (storageBytes(C, dtype) > e.maxBindingBytes) {
    throw new ConfigError(`${w.name}: one row (${C} ${dtype} values) is larger than the binding limit of ${e.maxBindingBytes} bytes; raise the limit.`);
  }
  const rows = rowsPerBlock(C, dtype, e.maxBindingBytes);
  const blocks: Tensor[] = [];
  for (let r = 0; r < R; r += rows) {
    const hi = Math.min(R, r + rows);
    blocks.push(upload(r * C, hi * C, [hi - r, C], `${w.name}[${r}:${hi}]`));
  }
  return e.persist(e.splitTensor(w.shape, blocks, w.name));
}

/** A tied head is the embedding: never uploaded twice. */
function skipWeight(config: ModelConfig, name: string): boolean {
  return config.tieWordEmbeddings && name === 'lm_head.weight';
}

/**
 * Build the model from weights that arrive one at a time (a file stream, or
 * random weights generated lazily by a bench): each is converted, uploaded
 * and dropped before the next is taken.
 */
export async function modelFromStream(
  e: Engine,
  config: ModelConfig,
  weights: AsyncIterable<HostWeight> | Iterable<HostWeight>,
  opts: { baseDtype?: BaseDtype } = {},
): Promise<LlamaModel> {
  const base = opts.baseDtype ?? 'auto';
  const out = new Map<string, Tensor>();
  try {
    for await (const w of weights) {
      if (skipWeight(config, w.name)) continue;
      out.set(w.name, uploadWeight(e, w, storageOf(w.shape, 'dtype' in w ? w.dtype : 'F32', base)));
    }
    return new LlamaModel(e, config, out);
  } catch (err) {
    for (const t of out.values()) t.dispose();
    throw err;
  }
}

export async function loadModel(
  e: Engine,
  source: FileSource,
  opts: LoadOptions = {},
): Promise<{ model: LlamaModel; tokenizer: Tokenizer | null; config: ModelConfig }> {
  const config = await readConfig(source);
  const weights = streamWeights(source, config, { onProgress: opts.onProgress, warn: opts.warn });
  const model = await modelFromStream(e, config, weights, { baseDtype: opts.baseDtype });
  const tokenizer = opts.tokenizer === false ? null : await loadTokenizer(source);
  return { model, tokenizer, config };
}

/**
 * The model on the GPU from host f32 weights held in a map (tests, small
 * references): the weights are checked against the config (checkWeights) and
 * only those it uses are uploaded. `baseDtype` float16 / bfloat16 rounds the
 * 2-D weights and stores them packed, as a checkpoint of that dtype would load.
 * The 4th argument is the warn callback or { warn, baseDtype }.
 */
export function modelFromWeights(
  e: Engine,
  config: ModelConfig,
  host: Map<string, { shape: number[]; data: Float32Array }>,
  opts: ((message: string) => void) | { warn?: (message: string) => void; baseDtype?: BaseDtype } = {},
): LlamaModel {
  const { warn = defaultWarn, baseDtype = 'auto' } = typeof opts === 'function' ? { warn: opts } : opts;
  const check = checkWeights(config, new Map([...host].map(([n, t]) => [n, t.shape])), 'the weights');
  const note = ignoredWarning(check, 'the weights');
  if (note) warn(note);
  const weights = new Map<string, Tensor>();
  for (const [name, t] of host) {
    if (!check.use.has(name) || skipWeight(config, name)) continue;
    weights.set(name, uploadWeight(e, { name, shape: t.shape, data: t.data }, storageOf(t.shape, 'F32', baseDtype)));
  }
  return new LlamaModel(e, config, weights);
}
