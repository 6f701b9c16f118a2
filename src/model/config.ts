/**
 * config.json of the LLaMA family (Llama, Mistral, Qwen2), read into one
 * shape the model builder uses. Defaults are those of the transformers
 * config classes (LlamaConfig, MistralConfig, Qwen2Config), so a config that
 * leaves a key out means what it means in Python.
 */
import { ModelFormatError } from '../errors';

export type ModelType = 'llama' | 'mistral' | 'qwen2';

export const SUPPORTED_ARCHITECTURES: Readonly<Record<ModelType, string>> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
};

/** rope_scaling as written in config.json ({rope_type|type, factor, ...}). */
export type RopeScaling = Record<string, unknown> & { rope_type?: string; type?: string; factor?: number };

export interface ModelConfig {
  modelType: ModelType;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** config head_dim, or hiddenSize / numHeads. */
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** null for plain RoPE. */
  ropeScaling: RopeScaling | null;
  /** No lm_head.weight: the output projection is embed_tokens. */
  tieWordEmbeddings: boolean;
  /**
   * Which attention projections carry a bias. Llama: attention_bias applies to
   * q, k, v and o alike. Qwen2: q, k, v always have one, o never.
   * Mistral: none.
   */
  attentionBias: { qkv: boolean; o: boolean };
  /** gate/up/down_proj biases (Llama's mlp_bias). */
  mlpBias: boolean;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  /** eos_token_id as a list (configs write an int or a list). */
  eosTokenIds: number[];
  /** Sliding-window attention span in tokens, null when every layer attends to everything. */
  slidingWindow: number | null;
}

const DEFAULTS: Record<
  ModelType,
  { rmsNormEps: number; maxPositionEmbeddings: number; bosTokenId: number | null; eosTokenId: number | null; ropeTheta: number }
> = {
  llama: { rmsNormEps: 1e-6, maxPositionEmbeddings: 2048, bosTokenId: 1, eosTokenId: 2, ropeTheta: 10000 },
  mistral: { rmsNormEps: 1e-6, maxPositionEmbeddings: 4096 * 32, bosTokenId: 1, eosTokenId: 2, ropeTheta: 10000 },
  qwen2: { rmsNormEps: 1e-6, maxPositionEmbeddings: 32768, bosTokenId: null, eosTokenId: null, ropeTheta: 10000 },
};

/**
 * Sanity limits on config.json sizes, checked before anything is allocated
 * from them (a 1e9-layer config must fail in microseconds, not abort V8). They
 * are far above any LLaMA-family model published (Llama 3.1 405B: hidden 16,384,
 * FFN 53,248, 126 layers, 128 heads, head_dim 128, vocab 128,256); the weights
 * must then agree with the config tensor by tensor (src/model/weights.ts).
 */
export const MODEL_LIMITS = {
  hidden_size: 65_536,
  intermediate_size: 262_144,
  num_hidden_layers: 1_024,
  num_attention_heads: 1_024,
  num_key_value_heads: 1_024,
  head_dim: 1_024,
  vocab_size: 4_194_304,
  max_position_embeddings: 16_777_216,
  sliding_window: 16_777_216,
} as const;

const own = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

function supportedList(): string {
  return Object.entries(SUPPORTED_ARCHITECTURES)
    .map(([t, a]) => `${a} (model_type "${t}")`)
    .join(', ');
}

export function parseModelConfig(json: unknown, source: string): ModelConfig {
  const fail = (problem: string, fix: string): never => {
    throw new ModelFormatError(`${source}: ${problem}. ${fix}`);
  };
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    fail('config.json is not a JSON object', 'Check that the file is a Hugging Face config.json.');
  }
  const c = json as Record<string, unknown>;

  // model_type decides; architectures must agree when present.
  const architectures = Array.isArray(c.architectures) ? c.architectures.filter((a): a is string => typeof a === 'string') : [];
  let modelType: ModelType | undefined;
  if (typeof c.model_type === 'string') {
    if (!own(SUPPORTED_ARCHITECTURES, c.model_type)) {
      fail(`unsupported model_type "${c.model_type}"${architectures.length ? ` (${architectures.join(', ')})` : ''}`, `Supported: ${supportedList()}.`);
    }
    modelType = c.model_type as ModelType;
  } else {
    const found = Object.entries(SUPPORTED_ARCHITECTURES).find(([, a]) => architectures.includes(a));
    if (!found) {
      fail(architectures.length ? `unsupported architecture ${architectures.join(', ')}` : 'missing field "model_type"', `Supported: ${supportedList()}.`);
    }
    modelType = found![0] as ModelType;
  }
  const type = modelType!;
  if (architectures.length > 0 && !architectures.includes(SUPPORTED_ARCHITECTURES[type])) {
    fail(`unsupported architecture ${architectures.join(', ')} for model_type "${type}" (a causal LM head is needed)`, `Supported: ${supportedList()}.`);
  }
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu' && c.hidden_act !== 'swish') {
    fail(`hidden_act "${String(c.hidden_act)}" is not supported (the LLaMA family uses "silu")`, 'Use a model with hidden_act "silu".');
  }

  const posInt = (key: string, fallback?: number): number => {
    const v = c[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      return fail(`missing field "${key}"`, "Add it to config.json (see the model card) or use the model's original config.json.");
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      return fail(`field "${key}" is ${JSON.stringify(v)}, not a positive integer`, 'Fix config.json.');
    }
    const limit = own(MODEL_LIMITS, key) ? MODEL_LIMITS[key as keyof typeof MODEL_LIMITS] : undefined;
    if (limit !== undefined && v > limit) {
      return fail(
        `field "${key}" is ${v}, above PEFT Studio's limit of ${limit} (no LLaMA-family model is that large)`,
        'Fix config.json; the limits are listed in the README (Models).',
      );
    }
    return v;
  };
  const posNum = (key: string, fallback: number): number => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
      return fail(`field "${key}" is ${JSON.stringify(v)}, not a positive number`, 'Fix config.json.');
    }
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') return fail(`field "${key}" is ${JSON.stringify(v)}, not true or false`, 'Fix config.json.');
    return v;
  };
  const tokenId = (v: unknown, key: string): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      return fail(`field "${key}" is ${JSON.stringify(v)}, not a token id`, 'Fix config.json.');
    }
    return v;
  };

  const d = DEFAULTS[type];
  const hiddenSize = posInt('hidden_size');
  const intermediateSize = posInt('intermediate_size');
  const numLayers = posInt('num_hidden_layers');
  const numHeads = posInt('num_attention_heads');
  const numKvHeads = posInt('num_key_value_heads', numHeads);
  const vocabSize = posInt('vocab_size');
  if (numHeads % numKvHeads !== 0) {
    fail(`num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`, 'Fix config.json.');
  }
  let headDim: number;
  if (c.head_dim !== undefined && c.head_dim !== null) {
    headDim = posInt('head_dim');
  } else {
    if (hiddenSize % numHeads !== 0) {
      fail(`hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}) and there is no head_dim`, 'Add "head_dim" to config.json.');
    }
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) fail(`head_dim ${headDim} is odd; RoPE rotates pairs`, 'Fix config.json.');

  // transformers >= 5 folds rope_theta and rope_scaling into rope_parameters.
  const ropeParameters = c.rope_parameters;
  let ropeTheta: number;
  let ropeScaling: RopeScaling | null;
  if (ropeParameters !== undefined && ropeParameters !== null && c.rope_theta === undefined) {
    if (typeof ropeParameters !== 'object' || Array.isArray(ropeParameters)) {
      fail('field "rope_parameters" is not an object', 'Fix config.json.');
    }
    const rp = ropeParameters as RopeScaling;
    ropeTheta = rp.rope_theta === undefined || rp.rope_theta === null ? d.ropeTheta : (rp.rope_theta as number);
    ropeScaling = (rp.rope_type ?? rp.type ?? 'default') === 'default' ? null : { ...rp };
  } else {
    ropeTheta = posNum('rope_theta', d.ropeTheta);
    const rs = c.rope_scaling;
    if (rs === undefined || rs === null) {
      ropeScaling = null;
    } else if (typeof rs !== 'object' || Array.isArray(rs)) {
      ropeScaling = fail('field "rope_scaling" is not an object or null', 'Fix config.json.');
    } else {
      ropeScaling = { ...(rs as RopeScaling) };
    }
  }
  if (typeof ropeTheta !== 'number' || !(ropeTheta > 0) || !Number.isFinite(ropeTheta))
    fail(`rope_theta is ${JSON.stringify(ropeTheta)}, not a positive number`, 'Fix config.json.');
  if (ropeScaling) {
    const kind = ropeScaling.rope_type ?? ropeScaling.type;
    if (typeof kind !== 'string') {
      fail('rope_scaling has no "rope_type" (or "type")', 'Fix config.json (e.g. "rope_type": "llama3").');
    }
    // Every factor divides or scales frequencies: 0, negative, NaN or Infinity would give NaN or Infinity angles.
    for (const key of ['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings', 'beta_fast', 'beta_slow', 'attention_factor']) {
      if (!own(ropeScaling, key) || ropeScaling[key] === null) continue;
      const v = ropeScaling[key];
      if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
        fail(`rope_scaling.${key} is ${JSON.stringify(v)}, not a positive number`, 'Fix config.json.');
      }
    }
  }

  let attentionBias: ModelConfig['attentionBias'];
  if (type === 'qwen2') attentionBias = { qkv: true, o: false };
  else if (type === 'llama') {
    const b = bool('attention_bias', false);
    attentionBias = { qkv: b, o: b };
  } else attentionBias = { qkv: false, o: false };

  const eosRaw = c.eos_token_id === undefined ? d.eosTokenId : c.eos_token_id;
  const eosTokenIds = eosRaw === null ? [] : Array.isArray(eosRaw) ? eosRaw.map((v, i) => tokenId(v, `eos_token_id[${i}]`)) : [tokenId(eosRaw, 'eos_token_id')];
  const bosRaw = c.bos_token_id === undefined ? d.bosTokenId : c.bos_token_id;
  const bosTokenId = bosRaw === null ? null : tokenId(bosRaw, 'bos_token_id');

  // Mistral: sliding_window (null disables it). Qwen2: only with use_sliding_window
  // (transformers then applies it from layer max_window_layers on; released
  // Qwen2/2.5 checkpoints all ship use_sliding_window: false).
  let slidingWindow: number | null = null;
  if (type === 'mistral') {
    slidingWindow = c.sliding_window === undefined ? 4096 : c.sliding_window === null ? null : posInt('sliding_window');
  } else if (type === 'qwen2' && bool('use_sliding_window', false)) {
    slidingWindow = c.sliding_window === null ? null : posInt('sliding_window', 4096);
  }

  return {
    modelType: type,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps: posNum('rms_norm_eps', d.rmsNormEps),
    ropeTheta,
    ropeScaling,
    tieWordEmbeddings: bool('tie_word_embeddings', false),
    attentionBias,
    mlpBias: type === 'llama' ? bool('mlp_bias', false) : false,
    maxPositionEmbeddings: posInt('max_position_embeddings', d.maxPositionEmbeddings),
    bosTokenId,
    eosTokenIds,
    slidingWindow,
  };
}
