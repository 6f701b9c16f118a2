/**
 * Load a Hugging Face model folder or Hub repo onto the GPU: config.json,
 * model.safetensors or a sharded index, and the tokenizer.
 */
import type { Engine } from '../engine/engine';
import type { Tensor } from '../engine/tensor';
import { ModelFormatError } from '../errors';
import { getCapped, jsonLimit, type FileSource } from '../hub/source';
import { parseModelConfig, type ModelConfig } from './config';
import { LlamaModel } from './llama';
import { parseSafetensors, parseSafetensorsHeader, safetensorsHeaderSize } from './safetensors';
import { loadTokenizer, type Tokenizer } from './tokenizer';
import { checkWeights, ignoredWarning, type WeightsCheck } from './weights';

export interface Progress {
  file: string;
  loaded: number;
  total: number;
}

export interface LoadOptions {
  onProgress?: (p: Progress) => void;
  /** Skip the tokenizer (tests with random weights). */
  tokenizer?: boolean;
  /** Notes that are not errors (tensors not part of the architecture); default console.warn. */
  warn?: (message: string) => void;
}

export async function readConfig(source: FileSource): Promise<ModelConfig> {
  const bytes = await getCapped(source, 'config.json', jsonLimit('config.json'));
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new ModelFormatError(`config.json in ${source.id} is not valid JSON: ${(err as Error).message}`);
  }
  return parseModelConfig(json, `${source.id}/config.json`);
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
    throw new ModelFormatError(`${source.id}/${index} is not valid JSON (${(err as Error).message}). Download it again.`);
  }
  const map = idx !== null && typeof idx === 'object' && !Array.isArray(idx) ? (idx as { weight_map?: unknown }).weight_map : undefined;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) {
    throw new ModelFormatError(`${source.id}/${index} has no "weight_map" object (tensor name → shard file). Download it again.`);
  }
  const files = Object.values(map as Record<string, unknown>);
  const bad = files.find((f) => typeof f !== 'string' || !f.endsWith('.safetensors'));
  if (bad !== undefined) throw new ModelFormatError(`${source.id}/${index} names ${JSON.stringify(bad)} as a shard; shards are .safetensors files. Download the index again.`);
  if (!files.length) throw new ModelFormatError(`${source.id}/${index} has an empty "weight_map". Download it again.`);
  return [...new Set(files as string[])];
}

/**
 * Host-side weights (float32) of a checkpoint, from one file or a sharded
 * index. With `config`, only the tensors the config uses are converted (the
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
    if (!ranged) headerShapes(parseSafetensorsHeader(bytes, `${source.id}/${f}`));
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

export async function loadModel(e: Engine, source: FileSource, opts: LoadOptions = {}): Promise<{ model: LlamaModel; tokenizer: Tokenizer | null; config: ModelConfig }> {
  const config = await readConfig(source);
  const host = await readWeights(source, opts.onProgress, config, opts.warn);
  const model = modelFromWeights(e, config, host, opts.warn);
  const tokenizer = opts.tokenizer === false ? null : await loadTokenizer(source);
  return { model, tokenizer, config };
}

/** The model on the GPU: the weights are checked against the config (checkWeights) and only those it uses are uploaded. */
export function modelFromWeights(
  e: Engine,
  config: ModelConfig,
  host: Map<string, { shape: number[]; data: Float32Array }>,
  warn: (message: string) => void = (m) => console.warn(`peft-studio: ${m}`),
): LlamaModel {
  const check = checkWeights(config, new Map([...host].map(([n, t]) => [n, t.shape])), 'the weights');
  const note = ignoredWarning(check, 'the weights');
  if (note) warn(note);
  const weights = new Map<string, Tensor>();
  for (const [name, t] of host) {
    if (!check.use.has(name)) continue;
    weights.set(name, e.persist(e.upload(t.data, t.shape, name)));
  }
  const hasHead = weights.has('lm_head.weight');
  if (config.tieWordEmbeddings && hasHead) weights.delete('lm_head.weight');
  return new LlamaModel(e, config, weights);
}
