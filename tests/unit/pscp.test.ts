import { describe, expect, it } from 'vitest';
import { computePscp, DEFAULT_PSCP_CONSTANTS, pscpConstantsFrom, pscpScore, type PscpInputs } from '../../src/eval/pscp';
import { ConfigValidationError, validateConfig } from '../../src/config/schema';
import { ConfigError } from '../../src/errors';

// Each cost equal to its constant halves the score (β = 1): (1 + C/C)^(−1) = 1/2.
const inputs: PscpInputs = {
  performance: 0.9,
  performanceMetric: 'macro_f1',
  trainableParams: 5e8,
  flopsTotal: 10e12, // 10 TFLOPs
  flopsExtra: 0,
  peakMemoryBytes: 94e9, // 94 GB
  latencyMsPerToken: 12.5,
  trainTokensPerSecond: 3000,
};

describe('computePscp', () => {
  it('hand-worked: total-FLOPs and extra-FLOPs scores, inputs and pass-through fields', () => {
    const r = computePscp(inputs);
    expect(r.pscp_total_flops).toBeCloseTo(0.9 * 0.5 * 0.5 * 0.5, 14); // 0.1125
    expect(r.pscp_extra_flops).toBeCloseTo(0.9 * 0.5 * 1 * 0.5, 14); // 0.225: M_f = 0
    expect(r).toMatchObject({
      performance: 0.9,
      performance_metric: 'macro_f1',
      trainable_params: 5e8,
      tflops_total: 10,
      tflops_extra: 0,
      peak_memory_gb: 94,
      latency_ms_per_token: 12.5,
      train_tokens_per_s: 3000,
      constants: DEFAULT_PSCP_CONSTANTS,
    });
  });

  it('β = 2 (the paper table) squares each penalty', () => {
    const r = computePscp(inputs, { ...DEFAULT_PSCP_CONSTANTS, bp: 2, bf: 2, bm: 2 });
    expect(r.pscp_total_flops).toBeCloseTo(0.9 / 64, 14);
  });

  it('small costs: a stories260K-sized LoRA run', () => {
    // P 0.6, 46 240 parameters, 0.000648 TFLOPs total, 0.0000473 extra, 0.05 GB
    const P = 0.6,
      Mp = 46240,
      gb = 0.05;
    const r = computePscp({ ...inputs, performance: P, trainableParams: Mp, flopsTotal: 648_445_952, flopsExtra: 47_349_760, peakMemoryBytes: gb * 1e9 });
    const expected = (tf: number) => P / ((1 + Mp / 5e8) * (1 + tf / 10) * (1 + gb / 94));
    expect(r.pscp_total_flops).toBeCloseTo(expected(648_445_952 / 1e12), 14);
    expect(r.pscp_extra_flops).toBeCloseTo(expected(47_349_760 / 1e12), 14);
    expect(r.pscp_extra_flops).toBeGreaterThan(r.pscp_total_flops);
  });

  it('a method cheaper than the base (negative extra) is allowed; zero cost leaves P', () => {
    expect(pscpScore(0.5, 0, 0, 0)).toBe(0.5);
    expect(computePscp({ ...inputs, flopsExtra: -1e12 }).pscp_extra_flops).toBeCloseTo(0.9 * 0.5 * (1 / 0.9) * 0.5, 14);
  });

  it('rejects a performance outside [0, 1] and invalid costs or constants', () => {
    expect(() => computePscp({ ...inputs, performance: 42 })).toThrow(/not in \[0, 1\]/);
    expect(() => computePscp({ ...inputs, performance: Number.NaN })).toThrow(ConfigError);
    expect(() => computePscp({ ...inputs, trainableParams: -1 })).toThrow(ConfigError);
    expect(() => computePscp({ ...inputs, peakMemoryBytes: Number.POSITIVE_INFINITY })).toThrow(ConfigError);
    expect(() => computePscp(inputs, { ...DEFAULT_PSCP_CONSTANTS, cf: 0 })).toThrow(/pscp_cf/);
    expect(() => computePscp({ ...inputs, flopsExtra: -20e12 })).toThrow(/not positive/);
  });
});

describe('PSCP options', () => {
  const base = { model_name_or_path: 'stories260K', output_dir: 'out', do_train: false, do_predict: true };

  it('are config keys with PEFT-Bench defaults', () => {
    const c = validateConfig(base);
    expect(pscpConstantsFrom(c)).toEqual({ cp: 5e8, cf: 10, cm: 94, bp: 1, bf: 1, bm: 1 });
    expect(pscpConstantsFrom(validateConfig({ ...base, pscp_bp: 2, pscp_bf: 2, pscp_bm: 2, pscp_cm: 80 }))).toEqual({
      cp: 5e8,
      cf: 10,
      cm: 80,
      bp: 2,
      bf: 2,
      bm: 2,
    });
  });

  it('are validated', () => {
    expect(() => validateConfig({ ...base, pscp_cp: 0 })).toThrow(ConfigValidationError);
    expect(() => validateConfig({ ...base, pscp_bf: -1 })).toThrow(ConfigValidationError);
  });
});
