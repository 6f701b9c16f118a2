/**
 * PEFT-Bench's PEFT Soft Cost Penalties score (METRICS.md):
 *
 *   PSCP = P · (1 + M_p/C_p)^(−β_p) · (1 + M_f/C_f)^(−β_f) · (1 + M_m/C_m)^(−β_m)
 *
 *   P    task performance in [0, 1] (src/eval/metrics.ts headlineMetric)
 *   M_p  trainable parameters of the method               C_p  pscp_cp (5e8)
 *   M_f  TFLOPs of one forward pass of a 1×512 probe      C_f  pscp_cf (10)
 *        (src/eval/flops.ts, counted analytically)
 *   M_m  peak GPU memory during training in GB (10⁹ bytes), measured by the
 *        buffer pool — never typed in                      C_m  pscp_cm (94)
 *   β_p, β_f, β_m  pscp_bp, pscp_bf, pscp_bm (1; the paper's main table uses 2)
 *
 * Two scores are reported, because the two sources disagree on M_f:
 * `pscp_total_flops` uses the whole forward (what PEFT-Factory's framework
 * computes, with DeepSpeed's profiler on the adapted model), `pscp_extra_flops`
 * only the method's addition over the base model (the PEFT-Bench paper's
 * definition). Beside them: the inputs, and what PSCP hides — measured
 * inference latency (ms per generated token) and training throughput
 * (tokens/s), passed through. PEFT-Factory rounds PSCP to two decimals; we
 * do not.
 */
import { ConfigError } from '../errors';

export interface PscpConstants {
  cp: number;
  cf: number;
  cm: number;
  bp: number;
  bf: number;
  bm: number;
}

export const DEFAULT_PSCP_CONSTANTS: Readonly<PscpConstants> = { cp: 5e8, cf: 10, cm: 94, bp: 1, bf: 1, bm: 1 };

/** The constants from a config's pscp_* keys (defaults where a key is absent). */
export function pscpConstantsFrom(config: Record<string, unknown>): PscpConstants {
  const get = (key: string, d: number): number => {
    const v = config[key];
    if (v === undefined || v === null) return d;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${key}: expected a number, got ${JSON.stringify(v)}.`);
    return v;
  };
  const d = DEFAULT_PSCP_CONSTANTS;
  return {
    cp: get('pscp_cp', d.cp),
    cf: get('pscp_cf', d.cf),
    cm: get('pscp_cm', d.cm),
    bp: get('pscp_bp', d.bp),
    bf: get('pscp_bf', d.bf),
    bm: get('pscp_bm', d.bm),
  };
}

export interface PscpInputs {
  /** P in [0, 1]. */
  performance: number;
  /** Which metric P is (e.g. macro_f1). */
  performanceMetric: string;
  trainableParams: number;
  /** FLOPs (not TFLOPs) of one probe forward: the whole model with the method. */
  flopsTotal: number;
  /** FLOPs the method adds over the base model on the same probe (may be negative, e.g. truncated SVFT). */
  flopsExtra: number;
  /** Peak GPU memory during training, bytes, as measured. */
  peakMemoryBytes: number;
  /** Measured inference latency, ms per generated token (null: not measured). */
  latencyMsPerToken: number | null;
  /** Measured training throughput, tokens/s (null: no training in this run). */
  trainTokensPerSecond: number | null;
}

export interface PscpReport {
  pscp_total_flops: number;
  pscp_extra_flops: number;
  performance: number;
  performance_metric: string;
  trainable_params: number;
  tflops_total: number;
  tflops_extra: number;
  peak_memory_gb: number;
  latency_ms_per_token: number | null;
  train_tokens_per_s: number | null;
  constants: PscpConstants;
}

/** PSCP from P and the three costs in their PSCP units (parameters, TFLOPs, GB). */
export function pscpScore(P: number, params: number, tflops: number, gb: number, c: PscpConstants = DEFAULT_PSCP_CONSTANTS): number {
  const factor = (m: number, C: number, beta: number, what: string): number => {
    const base = 1 + m / C;
    if (!(base > 0)) throw new ConfigError(`PSCP: 1 + ${what}/C = ${base} is not positive; check the ${what} input and its constant.`);
    return base ** -beta;
  };
  return P * factor(params, c.cp, c.bp, 'M_p') * factor(tflops, c.cf, c.bf, 'M_f') * factor(gb, c.cm, c.bm, 'M_m');
}

export function computePscp(inputs: PscpInputs, constants: PscpConstants = DEFAULT_PSCP_CONSTANTS): PscpReport {
  const { performance: P } = inputs;
  if (!(P >= 0 && P <= 1))
    throw new ConfigError(`PSCP: performance ${P} (${inputs.performanceMetric}) is not in [0, 1]; pass a fraction, e.g. macro-F1, or ROUGE-L / 100.`);
  for (const [k, v] of [
    ['cp', constants.cp],
    ['cf', constants.cf],
    ['cm', constants.cm],
  ] as const) {
    if (!(v > 0 && Number.isFinite(v))) throw new ConfigError(`pscp_${k}: ${v} must be a positive number.`);
  }
  for (const [k, v] of [
    ['bp', constants.bp],
    ['bf', constants.bf],
    ['bm', constants.bm],
  ] as const) {
    if (!(v >= 0 && Number.isFinite(v))) throw new ConfigError(`pscp_${k}: ${v} must be a number ≥ 0.`);
  }
  const nonNegative: [string, number][] = [
    ['trainableParams', inputs.trainableParams],
    ['flopsTotal', inputs.flopsTotal],
    ['peakMemoryBytes', inputs.peakMemoryBytes],
  ];
  for (const [k, v] of nonNegative) {
    if (!(v >= 0 && Number.isFinite(v))) throw new ConfigError(`PSCP: ${k} ${v} must be a finite number ≥ 0.`);
  }
  if (!Number.isFinite(inputs.flopsExtra)) throw new ConfigError(`PSCP: flopsExtra ${inputs.flopsExtra} must be finite.`);
  const tflopsTotal = inputs.flopsTotal / 1e12;
  const tflopsExtra = inputs.flopsExtra / 1e12;
  const gb = inputs.peakMemoryBytes / 1e9;
  return {
    pscp_total_flops: pscpScore(P, inputs.trainableParams, tflopsTotal, gb, constants),
    pscp_extra_flops: pscpScore(P, inputs.trainableParams, tflopsExtra, gb, constants),
    performance: P,
    performance_metric: inputs.performanceMetric,
    trainable_params: inputs.trainableParams,
    tflops_total: tflopsTotal,
    tflops_extra: tflopsExtra,
    peak_memory_gb: gb,
    latency_ms_per_token: inputs.latencyMsPerToken,
    train_tokens_per_s: inputs.trainTokensPerSecond,
    constants: { ...constants },
  };
}
