/**
 * Load a Hugging Face model folder or Hub repo onto the GPU: config.json,
 * model.safetensors or a sharded index, and the tokenizer.
 */
import type { Engine } from '../engine/engine';
import type { Tensor } from '../engine/tensor';
import { ModelFormatError } from '../errors';
import type { FileSource } from '../hub/source';
import { parseModelConfig, type ModelConfig } from './config';
import { LlamaModel } from './llama';
import { parseSafetensors } from './safetensors';
import { loadTokenizer, type Tokenizer } from './tokenizer';

export interface Progress {
  file: string;
  loaded: number;
  total: number;
}

export interface LoadOptions {
  onProgress?: (p: Progress) => void;
  /** Skip the tokenizer (tests with random weights). */
  tokenizer?: boolean;
}

export async function readConfig(source: FileSource): Promise<ModelConfig> {
  const bytes = await source.get('config.json');
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new ModelFormatError(`config.json in ${source.id} is not valid JSON: ${(err as Error).message}`);
  }
  return parseModelConfig(json, `${source.id}/config.json`);
}

/** Host-side weights (float32) of a checkpoint, from one file or a sharded index. */
export async function readWeights(source: FileSource, onProgress?: (p: Progress) => void): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  let files = ['model.safetensors'];
  if (!(await source.has('model.safetensors'))) {
    if (!(await source.has('model.safetensors.index.json'))) {
      throw new ModelFormatError(`${source.id} has neither model.safetensors nor model.safetensors.index.json; only safetensors checkpoints are supported.`);
    }
    const idx = JSON.parse(new TextDecoder().decode(await source.get('model.safetensors.index.json'))) as { weight_map?: Record<string, string> };
    if (!idx.weight_map) throw new ModelFormatError(`${source.id}/model.safetensors.index.json has no weight_map`);
    files = [...new Set(Object.values(idx.weight_map))];
  }
  for (const f of files) {
    const bytes = await source.get(f, onProgress);
    const st = parseSafetensors(bytes, `${source.id}/${f}`);
    for (const [name, t] of st.tensors) out.set(name, { shape: t.shape, data: t.data });
  }
  return out;
}

export async function loadModel(e: Engine, source: FileSource, opts: LoadOptions = {}): Promise<{ model: LlamaModel; tokenizer: Tokenizer | null; config: ModelConfig }> {
  const config = await readConfig(source);
  const host = await readWeights(source, opts.onProgress);
  const model = modelFromWeights(e, config, host);
  const tokenizer = opts.tokenizer === false ? null : await loadTokenizer(source);
  return { model, tokenizer, config };
}

export function modelFromWeights(e: Engine, config: ModelConfig, host: Map<string, { shape: number[]; data: Float32Array }>): LlamaModel {
  const weights = new Map<string, Tensor>();
  for (const [name, t] of host) {
    // Rotary caches and other buffers some checkpoints carry are not weights.
    if (name.endsWith('rotary_emb.inv_freq')) continue;
    weights.set(name, e.persist(e.upload(t.data, t.shape, name)));
  }
  const hasHead = weights.has('lm_head.weight');
  if (config.tieWordEmbeddings && hasHead) weights.delete('lm_head.weight');
  return new LlamaModel(e, config, weights);
}
