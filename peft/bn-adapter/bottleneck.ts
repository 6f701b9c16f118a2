/**
 * Bottleneck adapters as the Adapters library applies them to LLaMA
 * (METHODS.md §17), shared by bn-adapter (Houlsby, DoubleSeqBnConfig),
 * seq-bn-adapter (Pfeiffer, SeqBnConfig) and par-adapter (He et al.,
 * ParBnConfig).
 *
 * One adapter module (input width d, bottleneck m = max(1, floor(d / reduction_factor))):
 *   A(z) = dropout( (act(LNb?(z) Wdᵀ + bd) Wuᵀ + bu) · scaling ),   then LNa? (see below)
 * Wd [m, d], Wu [d, m]; `scaling` a fixed float (a constant vector for mulVec)
 * or a trainable per-channel vector ("channel").
 *
 * Insertion (the model hands the sub-layer output h before its residual add
 * and the un-normalised residual stream x, then adds x itself):
 *   sequential (Houlsby, Pfeiffer), at the attention and/or MLP output:
 *     z = original_ln_before ? x + h : h
 *     r = residual_before_ln ? h : z
 *     out = ln_after ? (adapter_residual_before_ln ? LNa(A(z) + r) : LNa(A(z)) + r) : A(z) + r
 *     hook returns out, so the layer computes y = x + out
 *     (Houlsby: y = x + h + A(h); Pfeiffer: y = x + h + A(x + h)).
 *   parallel: y = x + h + LNa?(A(x)), x the stream entering the block
 *     (MLP point: parallelMlp returns LNa?(A(x)); attention point: h + LNa?(A(x))).
 * Gradients flow through ordinary ops (layernorm, matmul with bias,
 * activation, mulVec, dropout, add), so the residual-stream gradient picks up
 * the adapter's Jacobian (Pfeiffer: through z = x + h; parallel: into x).
 *
 * Export: the Adapters library's folder (layout 'adapters', §2.2) with keys
 *   model.layers.{i}.{attention,output}_adapters.adapters.<name>.{adapter_down.0, adapter_up}.{weight,bias}
 * (ln_before: adapter_down.0 is the LayerNorm, the Linear adapter_down.1, and
 * the same LayerNorm is also saved as adapter_norm_before — the library's
 * state dict lists that shared module under both names; ln_after:
 * adapter_norm_after; channel scaling: scaling). Not mergeable (non-linear).
 */
import { activation, activationKind } from 'peft-studio/engine/ops/activation';
import { add } from 'peft-studio/engine/ops/add';
import { trainingDropout } from 'peft-studio/engine/ops/dropout';
import { layernorm } from 'peft-studio/engine/ops/layernorm';
import { matmul } from 'peft-studio/engine/ops/matmul';
import { mulVec } from 'peft-studio/engine/ops/mul';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { pythonJson } from 'peft-studio/methods/adapter-files';
import { readOptions } from 'peft-studio/methods/options';
import {
  gaussian,
  normal,
  uniform,
  type ActivationTensor,
  type AdapterFiles,
  type AttachedMethod,
  type HostTensor,
  type MethodContext,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { bottleneckOptions, INIT_WEIGHTS, NON_LINEARITIES } from './config';
import { sha1Hex } from './sha1';

export type BnMethodName = 'bn-adapter' | 'seq-bn-adapter' | 'par-adapter';
type InitWeights = (typeof INIT_WEIGHTS)[number];

/** Per-method defaults: the Adapters config class, with PEFT-Factory's reduction_factor 16. */
export const BN_DEFAULTS: Record<
  BnMethodName,
  {
    configClass: string;
    mh: boolean;
    out: boolean;
    olb: boolean;
    parallel: boolean;
    nonLinearity: string;
    init: InitWeights;
    scaling: number;
  }
> = {
  'bn-adapter': { configClass: 'DoubleSeqBnConfig', mh: true, out: true, olb: false, parallel: false, nonLinearity: 'swish', init: 'bert', scaling: 1.0 },
  'seq-bn-adapter': { configClass: 'SeqBnConfig', mh: false, out: true, olb: true, parallel: false, nonLinearity: 'relu', init: 'bert', scaling: 1.0 },
  'par-adapter': { configClass: 'ParBnConfig', mh: false, out: true, olb: false, parallel: true, nonLinearity: 'relu', init: 'mam_adapter', scaling: 4.0 },
};

/** The resolved settings of one attachment. */
export interface BnSettings {
  method: BnMethodName;
  reductionFactor: number;
  nonLinearity: string;
  /** A fixed factor, or 'channel' (a trainable vector of d values, init 1). */
  scaling: number | 'channel';
  init: InitWeights;
  lnBefore: boolean;
  lnAfter: boolean;
  dropout: number;
  adapterName: string;
  mh: boolean;
  out: boolean;
  parallel: boolean;
  originalLnBefore: boolean;
  residualBeforeLn: boolean;
  adapterResidualBeforeLn: boolean;
}

/** Validate the experiment keys (or the keys configFromAdapter produced) against the method's defaults. */
export function resolveBnSettings(method: BnMethodName, c: Record<string, unknown>): BnSettings {
  const def = BN_DEFAULTS[method];
  // `scaling` may also be 'channel' in an imported Adapters config (configFromAdapter), which the spec (a float) does not take.
  const scalingRaw = c.scaling === null || c.scaling === undefined ? def.scaling : c.scaling;
  const o = readOptions(bottleneckOptions, { ...c, scaling: undefined }, method);
  const act = o.non_linearity ?? def.nonLinearity;
  activationKind(act);
  let scaling: number | 'channel';
  if (scalingRaw === 'channel') scaling = 'channel';
  else if (typeof scalingRaw === 'number' && Number.isFinite(scalingRaw)) scaling = scalingRaw;
  else {
    throw new ConfigError(
      `scaling ${JSON.stringify(scalingRaw)}: use a number (the fixed factor on the adapter output; ${def.scaling} for ${method})${scalingRaw === 'learned' ? '; a learned scalar scaling is not supported here' : ''}.`,
    );
  }
  const adapterName = o.adapter_name;
  if (!/^[^.\s/\\]+$/.test(adapterName)) {
    throw new ConfigError(
      `adapter_name '${adapterName}': it becomes part of tensor keys (…adapters.<name>.…) and a folder name, so it must be non-empty without '.', '/', '\\' or spaces (e.g. 'sst2').`,
    );
  }
  const mh = o.mh_adapter ?? def.mh;
  const out = o.output_adapter ?? def.out;
  if (!mh && !out) throw new ConfigError(`mh_adapter and output_adapter are both false: the ${method} would add no adapter. Set at least one to true.`);
  return {
    method,
    reductionFactor: o.reduction_factor,
    nonLinearity: act,
    scaling,
    init: o.init_weights ?? def.init,
    lnBefore: o.ln_before,
    lnAfter: o.ln_after,
    dropout: o.dropout,
    adapterName,
    mh,
    out,
    parallel: def.parallel,
    originalLnBefore: o.original_ln_before ?? def.olb,
    residualBeforeLn: o.residual_before_ln,
    adapterResidualBeforeLn: o.adapter_residual_before_ln,
  };
}

/** Bottleneck width m = int(d // reduction_factor), at least 1. */
export function bottleneckSize(d: number, reductionFactor: number): number {
  return Math.max(1, Math.floor(d / reductionFactor));
}

type Point = 'attention' | 'output';
const POINT_PREFIX: Record<Point, string> = { attention: 'attention_adapters', output: 'output_adapters' };

interface LayerNormParams {
  w: Tensor;
  b: Tensor;
}
interface AdapterModule {
  prefix: string;
  lnBefore: LayerNormParams | null;
  Wd: Tensor;
  bd: Tensor;
  Wu: Tensor;
  bu: Tensor;
  lnAfter: LayerNormParams | null;
  /** Trainable per-channel scaling, or null (fixed scaling). */
  channel: Tensor | null;
}

/** torch.nn.init.trunc_normal_(mean 0, std, a = −2·std, b = 2·std), by rejection. */
function truncNormal(n: number, std: number, random: () => number): Float32Array {
  const g = gaussian(random);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let z: number;
    do z = g();
    while (Math.abs(z) > 2);
    out[i] = std * z;
  }
  return out;
}

/** Initial values of one module's down/up weights (biases are always 0). */
function initWeights(init: InitWeights, m: number, d: number, random: () => number): { Wd: Float32Array; Wu: Float32Array } {
  switch (init) {
    case 'bert':
      return { Wd: normal(m * d, 0.02, random), Wu: normal(d * m, 0.02, random) };
    case 'mam_adapter':
      // kaiming_uniform_(a=√5) on Wd [m, d]: U(−1/√d, 1/√d); Wu = 0 makes the adapter an exact no-op.
      return { Wd: uniform(m * d, 1 / Math.sqrt(d), random), Wu: new Float32Array(d * m) };
    case 'houlsby':
      return { Wd: truncNormal(m * d, 0.01, random), Wu: truncNormal(d * m, 0.01, random) };
  }
}

/** The adapter_config.json "config" dict: every BnConfig field (PEFT-Factory adds adapter_name). */
export function bnConfigDict(s: BnSettings): Record<string, unknown> {
  return {
    adapter_name: s.adapterName,
    adapter_residual_before_ln: s.adapterResidualBeforeLn,
    architecture: null,
    cross_adapter: false,
    dropout: s.dropout,
    factorized_phm_W: true,
    factorized_phm_rule: false,
    hypercomplex_nonlinearity: 'glorot-uniform',
    init_weights: s.init,
    init_weights_seed: null,
    inv_adapter: null,
    inv_adapter_reduction_factor: null,
    is_parallel: s.parallel,
    leave_out: [],
    learn_phm: true,
    ln_after: s.lnAfter,
    ln_before: s.lnBefore,
    mh_adapter: s.mh,
    non_linearity: s.nonLinearity,
    original_ln_after: true,
    original_ln_before: s.originalLnBefore,
    output_adapter: s.out,
    phm_bias: true,
    phm_c_init: 'normal',
    phm_dim: 4,
    phm_init_range: 0.0001,
    phm_layer: false,
    phm_rank: 1,
    reduction_factor: s.reductionFactor,
    residual_before_ln: s.residualBeforeLn,
    scaling: s.scaling,
    shared_W_phm: false,
    shared_phm_rule: true,
    stochastic_depth: 0.0,
    use_gating: false,
  };
}

/** Defaults the library drops before hashing, so hashes match across its versions. */
const HASH_IGNORE_DEFAULT: Record<string, unknown> = {
  phm_layer: true,
  phm_dim: 4,
  factorized_phm_W: true,
  shared_W_phm: false,
  shared_phm_rule: true,
  factorized_phm_rule: false,
  phm_c_init: 'normal',
  phm_init_range: 0.0001,
  learn_phm: true,
  hypercomplex_nonlinearity: 'glorot-uniform',
  phm_rank: 1,
  phm_bias: true,
  init_weights: 'bert',
  scaling: 1.0,
};

/**
 * config_id as the library computes it: drop falsy entries (recursively in
 * mappings), drop the version-stable defaults above, json.dumps(sort_keys),
 * SHA-1, first 16 hex digits. Informational: loaders do not check it.
 */
export function adaptersConfigId(config: Record<string, unknown>): string {
  const minimize = (v: unknown): unknown => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      const falsy = !x || (Array.isArray(x) && x.length === 0) || (typeof x === 'object' && Object.keys(x as object).length === 0);
      if (!falsy) o[k] = minimize(x);
    }
    return o;
  };
  const min = minimize(config) as Record<string, unknown>;
  for (const [k, v] of Object.entries(HASH_IGNORE_DEFAULT)) if (min[k] === v) delete min[k];
  return sha1Hex(new TextEncoder().encode(pythonJson(min, { floatKeys: new Set(['scaling', 'dropout', 'stochastic_depth', 'phm_init_range']) }))).slice(0, 16);
}

const MODEL_CLASS: Record<string, string> = { llama: 'LlamaAdapterModel', mistral: 'MistralAdapterModel', qwen2: 'Qwen2AdapterModel' };

/**
 * Experiment keys of an Adapters-library adapter_config.json (architecture
 * null = a bottleneck adapter): is_parallel → par-adapter; otherwise
 * original_ln_before → seq-bn-adapter (Pfeiffer), else bn-adapter (Houlsby);
 * mh_adapter / output_adapter are carried over, so any placement reloads.
 * Returns null for anything that is not an Adapters bottleneck config.
 */
export function keysFromAdaptersConfig(file: Record<string, unknown>): Record<string, unknown> | null {
  const c = file.config as Record<string, unknown> | undefined;
  if (!c || typeof c !== 'object' || Array.isArray(c) || file.peft_type !== undefined) return null;
  if (!('architecture' in c) || !('reduction_factor' in c || 'mh_adapter' in c)) return null;
  if (c.architecture !== null && c.architecture !== 'bottleneck') {
    throw new ConfigError(
      `This Adapters-library adapter has architecture '${String(c.architecture)}'; only bottleneck adapters (architecture null: Houlsby, Pfeiffer, parallel) load here.`,
    );
  }
  const unsupported: string[] = [];
  if (c.phm_layer) unsupported.push('phm_layer (Compacter)');
  if (c.use_gating) unsupported.push('use_gating');
  if (c.inv_adapter) unsupported.push('inv_adapter');
  if (Array.isArray(c.leave_out) && c.leave_out.length > 0) unsupported.push('leave_out');
  if (c.reduction_factor !== undefined && typeof c.reduction_factor !== 'number') unsupported.push('a per-layer reduction_factor mapping');
  if (c.original_ln_after === false) unsupported.push('original_ln_after false');
  if (unsupported.length)
    throw new ConfigError(`This Adapters-library adapter uses ${unsupported.join(', ')}, which PEFT Studio's bottleneck adapters do not implement.`);
  const method: BnMethodName = c.is_parallel ? 'par-adapter' : c.original_ln_before ? 'seq-bn-adapter' : 'bn-adapter';
  let act = c.non_linearity;
  // Configs written before the library versioned them spell gelu_new 'gelu' and gelu 'gelu_orig'.
  if (file.version === undefined && typeof act === 'string') act = ({ gelu: 'gelu_new', gelu_orig: 'gelu' } as Record<string, string>)[act] ?? act;
  return {
    finetuning_type: method,
    reduction_factor: c.reduction_factor,
    non_linearity: act,
    scaling: c.scaling,
    init_weights: c.init_weights,
    ln_before: !!c.ln_before,
    ln_after: !!c.ln_after,
    dropout: c.dropout ?? 0,
    adapter_name: typeof file.name === 'string' ? file.name : (c.adapter_name ?? 'default'),
    mh_adapter: !!c.mh_adapter,
    output_adapter: !!c.output_adapter,
    original_ln_before: !!c.original_ln_before,
    residual_before_ln: c.residual_before_ln === undefined ? true : !!c.residual_before_ln,
    adapter_residual_before_ln: !!c.adapter_residual_before_ln,
  };
}

/** The PeftMethod of one of the three folders. */
const BN_INFO: Record<BnMethodName, { label: string; description: string; order: number }> = {
  'bn-adapter': {
    label: 'Bottleneck adapter (Houlsby)',
    description: 'Trained bottleneck MLPs (down, activation, up) after the attention and MLP blocks of every layer.',
    order: 17,
  },
  'seq-bn-adapter': {
    label: 'Sequential adapter (Pfeiffer)',
    description: 'One trained bottleneck MLP after the MLP block of every layer, fed the block output plus the residual stream.',
    order: 17.1,
  },
  'par-adapter': {
    label: 'Parallel adapter',
    description: 'A trained bottleneck MLP beside the MLP block of every layer, fed the residual stream and added to the MLP output.',
    order: 17.2,
  },
};

export function bottleneckMethod(name: BnMethodName): PeftMethod {
  return {
    name,
    ...BN_INFO[name],
    family: 'Adapters, scaling and bias',
    options: bottleneckOptions,
    /**
     * Per token per insertion point: 2·d·m (down) + 2·m·d (up), m =
     * ⌊d / reduction_factor⌋; points per layer: mh_adapter and output_adapter.
     */
    flops(ctx) {
      const s = resolveBnSettings(name, ctx.config);
      const d = ctx.model.hiddenSize;
      const m = bottleneckSize(d, s.reductionFactor);
      const points = (s.mh ? 1 : 0) + (s.out ? 1 : 0);
      return { flops: ctx.batch * ctx.seq * ctx.model.numLayers * points * (2 * d * m + 2 * m * d) };
    },
    configFromAdapter(c) {
      const keys = keysFromAdaptersConfig(c);
      return keys && keys.finetuning_type === name ? keys : null;
    },
    attach: (ctx) => attachBottleneck(ctx, resolveBnSettings(name, ctx.config)),
  };
}

function attachBottleneck(ctx: MethodContext, s: BnSettings): AttachedMethod {
  const { e, model, config } = ctx;
  const d = model.config.hiddenSize;
  const m = bottleneckSize(d, s.reductionFactor);
  const N = model.config.numLayers;
  const points: Point[] = [...(s.mh ? (['attention'] as const) : []), ...(s.out ? (['output'] as const) : [])];
  const owned: Tensor[] = [];
  const param = (data: Float32Array, shape: number[], name: string): Tensor => {
    const t = e.persist(e.upload(data, shape, name));
    t.requiresGrad = true;
    owned.push(t);
    return t;
  };
  const layerNorm = (prefix: string): LayerNormParams => ({
    w: param(new Float32Array(d).fill(1), [d], `${prefix}.weight`),
    b: param(new Float32Array(d), [d], `${prefix}.bias`),
  });
  const modules = new Map<string, AdapterModule>();
  for (let l = 0; l < N; l++) {
    for (const pt of points) {
      const prefix = `model.layers.${l}.${POINT_PREFIX[pt]}.adapters.${s.adapterName}`;
      const lnBefore = s.lnBefore ? layerNorm(`${prefix}.adapter_down.0`) : null;
      const down = `${prefix}.adapter_down.${s.lnBefore ? 1 : 0}`;
      const w = initWeights(s.init, m, d, ctx.random);
      modules.set(`${l}:${pt}`, {
        prefix,
        lnBefore,
        Wd: param(w.Wd, [m, d], `${down}.weight`),
        bd: param(new Float32Array(m), [m], `${down}.bias`),
        Wu: param(w.Wu, [d, m], `${prefix}.adapter_up.weight`),
        bu: param(new Float32Array(d), [d], `${prefix}.adapter_up.bias`),
        lnAfter: s.lnAfter ? layerNorm(`${prefix}.adapter_norm_after`) : null,
        channel: s.scaling === 'channel' ? param(new Float32Array(d).fill(1), [d], `${prefix}.scaling`) : null,
      });
    }
  }
  // A fixed scaling other than 1 multiplies through a constant vector (mulVec's gradient into it is skipped).
  const fixedScale =
    typeof s.scaling === 'number' && s.scaling !== 1 ? e.persist(e.upload(new Float32Array(d).fill(s.scaling), [d], 'bn_adapter.scaling')) : null;
  if (fixedScale) owned.push(fixedScale);

  /** dropout((act(LNb?(z) Wdᵀ + bd) Wuᵀ + bu) · scaling): the module output before ln_after and residuals. */
  const core = (mod: AdapterModule, z: Tensor): Tensor => {
    const zn = mod.lnBefore ? layernorm(e, z, mod.lnBefore.w, mod.lnBefore.b, undefined, 'bn_adapter.ln_before') : z;
    const a = activation(e, matmul(e, zn, mod.Wd, { transB: true, bias: mod.bd, name: 'bn_adapter.down' }), s.nonLinearity, 'bn_adapter.act');
    let o = matmul(e, a, mod.Wu, { transB: true, bias: mod.bu, name: 'bn_adapter.up' });
    const scale = mod.channel ?? fixedScale;
    if (scale) o = mulVec(e, o, scale, 'bn_adapter.scaled');
    o = trainingDropout(e, o, s.dropout, `${mod.prefix}.dropout`);
    return o;
  };
  const lnAfter = (mod: AdapterModule, t: Tensor) => (mod.lnAfter ? layernorm(e, t, mod.lnAfter.w, mod.lnAfter.b, undefined, 'bn_adapter.ln_after') : t);
  /** Sequential adapter on sub-layer output h with residual stream x; the model adds x afterwards. */
  const sequential = (mod: AdapterModule, h: Tensor, x: Tensor): Tensor => {
    const z = s.originalLnBefore ? add(e, h, x) : h;
    const r = s.residualBeforeLn ? h : z;
    const o = core(mod, z);
    if (!mod.lnAfter) return add(e, o, r);
    return s.adapterResidualBeforeLn ? lnAfter(mod, add(e, o, r)) : add(e, lnAfter(mod, o), r);
  };
  const parallel = (mod: AdapterModule, x: Tensor): Tensor => lnAfter(mod, core(mod, x));

  const detachHooks = model.attach({
    afterAttention: (l, h, x) => {
      const mod = modules.get(`${l}:attention`);
      if (!mod) return h;
      return s.parallel ? add(e, h, parallel(mod, x)) : sequential(mod, h, x);
    },
    afterMlp: (l, h, x) => {
      const mod = s.parallel ? undefined : modules.get(`${l}:output`);
      return mod ? sequential(mod, h, x) : h;
    },
    parallelMlp: (l, x) => {
      const mod = s.parallel ? modules.get(`${l}:output`) : undefined;
      return mod ? parallel(mod, x) : null;
    },
  });

  /** Export key → tensor (ln_before's LayerNorm appears twice, as the library's state dict has it). */
  const exported = (): [string, Tensor][] => {
    const out: [string, Tensor][] = [];
    for (const mod of modules.values()) {
      if (mod.lnBefore) {
        out.push([`${mod.prefix}.adapter_down.0.weight`, mod.lnBefore.w], [`${mod.prefix}.adapter_down.0.bias`, mod.lnBefore.b]);
      }
      const down = `${mod.prefix}.adapter_down.${mod.lnBefore ? 1 : 0}`;
      out.push([`${down}.weight`, mod.Wd], [`${down}.bias`, mod.bd], [`${mod.prefix}.adapter_up.weight`, mod.Wu], [`${mod.prefix}.adapter_up.bias`, mod.bu]);
      if (mod.lnAfter) out.push([`${mod.prefix}.adapter_norm_after.weight`, mod.lnAfter.w], [`${mod.prefix}.adapter_norm_after.bias`, mod.lnAfter.b]);
      if (mod.channel) out.push([`${mod.prefix}.scaling`, mod.channel]);
      if (mod.lnBefore) {
        out.push([`${mod.prefix}.adapter_norm_before.weight`, mod.lnBefore.w], [`${mod.prefix}.adapter_norm_before.bias`, mod.lnBefore.b]);
      }
    }
    return out;
  };

  /**
   * One module's forward tensors per token (see core, sequential, parallel):
   * [d]-wide outputs, [m]-wide ones, and LayerNorm statistics (mean, rstd; no gradient).
   */
  const lnCount = (s.lnBefore ? 1 : 0) + (s.lnAfter ? 1 : 0);
  const perModule = {
    // adapter_up, each LayerNorm, the scaling, the dropout, and the sum with the sub-layer output (sequential: the
    // residual add, plus z = x + h with original_ln_before; parallel: the attention hook's add or the model's add of parallelMlp's branch)
    wide: 1 + lnCount + (s.scaling !== 1 ? 1 : 0) + (s.dropout > 0 ? 1 : 0) + 1 + (!s.parallel && s.originalLnBefore ? 1 : 0),
    stats: 2 * lnCount,
  };

  return {
    memory() {
      const activations: ActivationTensor[] = [];
      for (const key of modules.keys()) {
        const layer = Number(key.split(':')[0]);
        activations.push({ layer, perToken: d, count: perModule.wide }, { layer, perToken: m, count: 2 });
        if (perModule.stats) activations.push({ layer, perToken: 1, count: perModule.stats, grad: false });
      }
      // Only output adapters: the first trainable tensor is at the end of layer 0, whose own activations get no gradient.
      return { activations, gradientFromLayer: s.mh ? 0 : 1 };
    },
    trainable(): TrainableParam[] {
      const out: TrainableParam[] = [];
      for (const mod of modules.values()) {
        // HF decay groups: linear weights and the scaling vector decay; biases and LayerNorm parameters do not.
        if (mod.lnBefore)
          out.push(
            { name: `${mod.prefix}.adapter_down.0.weight`, tensor: mod.lnBefore.w, decay: false },
            { name: `${mod.prefix}.adapter_down.0.bias`, tensor: mod.lnBefore.b, decay: false },
          );
        const down = `${mod.prefix}.adapter_down.${mod.lnBefore ? 1 : 0}`;
        out.push(
          { name: `${down}.weight`, tensor: mod.Wd, decay: true },
          { name: `${down}.bias`, tensor: mod.bd, decay: false },
          { name: `${mod.prefix}.adapter_up.weight`, tensor: mod.Wu, decay: true },
          { name: `${mod.prefix}.adapter_up.bias`, tensor: mod.bu, decay: false },
        );
        if (mod.lnAfter)
          out.push(
            { name: `${mod.prefix}.adapter_norm_after.weight`, tensor: mod.lnAfter.w, decay: false },
            { name: `${mod.prefix}.adapter_norm_after.bias`, tensor: mod.lnAfter.b, decay: false },
          );
        if (mod.channel) out.push({ name: `${mod.prefix}.scaling`, tensor: mod.channel, decay: true });
      }
      return out;
    },
    async exportAdapter(): Promise<AdapterFiles> {
      const tensors = new Map<string, HostTensor>();
      for (const [key, t] of exported()) tensors.set(key, { shape: [...t.shape], data: await e.read(t) });
      const inner = bnConfigDict(s);
      return {
        layout: 'adapters',
        adapterName: s.adapterName,
        config: {
          config: inner,
          config_id: adaptersConfigId(inner),
          hidden_size: d,
          model_class: MODEL_CLASS[model.config.modelType] ?? 'LlamaAdapterModel',
          model_name: config.model_name_or_path ?? null,
          model_type: model.config.modelType,
          name: s.adapterName,
          version: 'adapters.1.2.0',
        },
        tensors,
      };
    },
    importAdapter(files: AdapterFiles): void {
      // Tensors are matched by their place after "adapters.<name>.", so an adapter saved under another name loads too.
      const byPlace = new Map<string, HostTensor>();
      for (const [k, t] of files.tensors) {
        const hit = /^(?:.*\.)?layers\.(\d+)\.(attention_adapters|output_adapters)\.adapters\.[^.]+\.(.+)$/.exec(k);
        if (hit) byPlace.set(`${hit[1]}.${hit[2]}.${hit[3]}`, t);
      }
      for (const [key, t] of exported()) {
        if (key.includes('.adapter_norm_before.')) continue; // the same tensor as adapter_down.0
        const hit = /^model\.layers\.(\d+)\.(\w+)\.adapters\.[^.]+\.(.+)$/.exec(key)!;
        const src = byPlace.get(`${hit[1]}.${hit[2]}.${hit[3]}`);
        if (!src) {
          throw new ConfigError(
            `The adapter has no tensor for ${key}; was it trained with the same ${s.method} placement (mh_adapter ${s.mh}, output_adapter ${s.out}), ln_before ${s.lnBefore} and model?`,
          );
        }
        if (src.shape.join() !== t.shape.join()) {
          throw new ConfigError(
            `Adapter tensor ${key} has shape [${src.shape}], expected [${t.shape}] (hidden size ${d}, reduction_factor ${s.reductionFactor} → bottleneck ${m}).`,
          );
        }
        e.write(t, src.data);
      }
    },
    detach(): void {
      detachHooks();
      for (const t of owned) t.dispose();
      owned.length = 0;
      modules.clear();
    },
  };
}

/** Trainable parameters of one module: 2·m·d + m + d (+ 2d per LayerNorm, + d for channel scaling). */
export function bottleneckModuleParams(d: number, m: number, opts: { lnBefore?: boolean; lnAfter?: boolean; channel?: boolean } = {}): number {
  return 2 * m * d + m + d + (opts.lnBefore ? 2 * d : 0) + (opts.lnAfter ? 2 * d : 0) + (opts.channel ? d : 0);
}
