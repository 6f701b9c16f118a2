/**
 * A model folder in the layout transformers.js loads:
 *
 *   config.json               the base's, with "transformers.js_config": {"dtype": "fp32"}
 *                             so a plain pipeline() call picks onnx/model.onnx
 *   generation_config.json    tokenizer.json  tokenizer_config.json  special_tokens_map.json  (copied)
 *   onnx/model.onnx           float32 weights
 *   onnx/model_fp16.onnx      (optional) float16 weights, float32 activations
 *   onnx/model_quantized.onnx (optional) int8 weights, one scale per output channel
 *   onnx/<file>_data[_N]      the weights of a model over 2 GiB (ONNX external data), in chunks
 *
 * Host-agnostic: files in, files out (the CLI writes them to a folder, the
 * studio zips them).
 */
import { ConfigError, ModelFormatError } from '../../errors';
import type { FileSource } from '../../hub/source';
import type { LlamaModel } from '../../model/llama';
import type { AttachedMethod } from '../../methods/types';
import { parseModelConfig } from '../../model/config';
import { configWithBiasFlags } from '../../model/bias-flags';
import { buildDecoderGraph, ONNX_IR_VERSION, ONNX_OPSET, type HostWeight, type OnnxWeightType } from './llama';

export { ONNX_OPSET, ONNX_IR_VERSION, type OnnxWeightType } from './llama';

/** transformers.js's file name for each weight type (its dtype → suffix table). */
export const ONNX_FILE_NAMES: Readonly<Record<OnnxWeightType, string>> = {
  fp32: 'onnx/model.onnx',
  fp16: 'onnx/model_fp16.onnx',
  q8: 'onnx/model_quantized.onnx',
};

/** Files copied unchanged from the base model when it has them. */
export const COPIED_FILES = ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'] as const;

/** A protobuf message (a whole .onnx file, external data aside) is at most 2 GiB. */
const PROTOBUF_LIMIT = 2 ** 31 - 1;

export function parseOnnxWeightTypes(value: unknown): OnnxWeightType[] {
  const list =
    value === undefined || value === null
      ? ['fp32']
      : Array.isArray(value)
        ? value.map(String)
        : String(value)
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean);
  const known = Object.keys(ONNX_FILE_NAMES);
  for (const t of list) {
    if (!known.includes(t))
      throw new ConfigError(`export_onnx_dtypes: '${t}' is not a weight type; use a comma-separated list of ${known.join(', ')} (fp32 is always written).`);
  }
  return ['fp32', ...list.filter((t) => t !== 'fp32')] as OnnxWeightType[];
}

export interface OnnxFolderInput {
  /** The base model's config.json text. */
  configText: string;
  /** The merged weights by Hugging Face name (float32). */
  weights: ReadonlyMap<string, HostWeight>;
  /** The base model's other files (COPIED_FILES), by name; missing ones are skipped. */
  baseFiles: ReadonlyMap<string, Uint8Array>;
  /** Weight types to write (default fp32 only). */
  weightTypes?: readonly OnnxWeightType[];
  producerVersion?: string;
  /**
   * Weights above this many bytes go to external data files
   * (onnx/model.onnx_data, _1, ... in chunks of at most this size); default
   * just under protobuf's 2 GiB message limit, so small models stay one file.
   */
  externalDataAbove?: number;
}

/** Every file of the folder, by relative path. */
export function onnxModelFiles(input: OnnxFolderInput): Map<string, Uint8Array> {
  const enc = new TextEncoder();
  const configText = configWithBiasFlags(input.configText, input.weights.keys()) ?? input.configText;
  const json = JSON.parse(configText) as Record<string, unknown>;
  const cfg = parseModelConfig(json, 'config.json');
  if (cfg.modelType === 'qwen2' && cfg.slidingWindow !== null) {
    throw new ModelFormatError(
      'ONNX export: config.json sets use_sliding_window for qwen2, whose window applies only from layer max_window_layers on; the exporter does not build per-layer windows. Set use_sliding_window to false (released Qwen2 checkpoints do).',
    );
  }
  const files = new Map<string, Uint8Array>();
  const limit = input.externalDataAbove ?? PROTOBUF_LIMIT - (64 << 20);
  // transformers.js_config.use_external_data_format: data chunks per file name ({"model.onnx": 2} → model.onnx_data, model.onnx_data_1).
  const externalChunks: Record<string, number> = {};
  for (const type of input.weightTypes ?? ['fp32']) {
    const graph = buildDecoderGraph(cfg, input.weights, type);
    const file = ONNX_FILE_NAMES[type];
    const base = file.slice('onnx/'.length);
    if (graph.weightBytes > limit) {
      // Small tensors (norm weights, constants) stay inline, as Optimum leaves them.
      const chunks = graph.externalize(`${base}_data`, 1024, limit);
      chunks.forEach((data, i) => files.set(`onnx/${base}_data${i === 0 ? '' : `_${i}`}`, data));
      externalChunks[base] = chunks.length;
    }
    files.set(
      file,
      graph.encode({
        opset: ONNX_OPSET,
        irVersion: ONNX_IR_VERSION,
        name: String(json._name_or_path ?? cfg.modelType),
        producerVersion: input.producerVersion ?? '',
      }),
    );
  }
  json['transformers.js_config'] = {
    ...(json['transformers.js_config'] as object | undefined),
    dtype: 'fp32',
    ...(Object.keys(externalChunks).length ? { use_external_data_format: externalChunks } : {}),
  };
  files.set('config.json', enc.encode(JSON.stringify(json, null, 2) + '\n'));
  for (const name of COPIED_FILES) {
    const data = input.baseFiles.get(name);
    if (data) files.set(name, data);
  }
  return files;
}

/**
 * Merge the method into the base weights and return the ONNX folder, by
 * relative path (for the CLI's folder and the studio's zip alike). The
 * model's base weights are changed: the caller disposes of it or reloads.
 */
export async function mergedOnnxFiles(
  model: LlamaModel,
  method: AttachedMethod,
  base: FileSource,
  weightTypes: readonly OnnxWeightType[] = ['fp32'],
): Promise<Record<string, Uint8Array>> {
  await method.merge!();
  const weights = new Map<string, HostWeight>();
  for (const [name, t] of model.params) weights.set(name, { shape: t.shape, data: await model.e.read(t) });
  const baseFiles = new Map<string, Uint8Array>();
  for (const f of COPIED_FILES) if (await base.has(f)) baseFiles.set(f, await base.get(f));
  const configText = new TextDecoder().decode(await base.get('config.json'));
  return Object.fromEntries(onnxModelFiles({ configText, weights, baseFiles, weightTypes }));
}
