/**
 * The Evaluate screen's own settings: bounds of an interactive evaluation and
 * PSCP's constants. They live apart from the experiment config (studio.values)
 * so they never reach a training config, its YAML or a share link; they
 * override the run's config for one evaluation only.
 */
import { validateValues } from './config-form';
import type { FieldStore } from './field-store';

export const EVALUATE_KEYS = [
  'max_predict_samples',
  'max_new_tokens',
  'per_device_eval_batch_size',
  'pscp_cp',
  'pscp_cf',
  'pscp_cm',
  'pscp_bp',
  'pscp_bf',
  'pscp_bm',
];

/** Set values only; a key left out takes the run's value, or "auto" for the two bounds. */
export const evaluateValues: Record<string, unknown> = $state({});

const problems = $derived.by(() => {
  const set = Object.fromEntries(Object.entries(evaluateValues).filter(([, v]) => v !== null && v !== undefined));
  // Checked by the same schema as a config: the experiment's required keys are stood in for.
  return validateValues({ output_dir: 'evaluate', dataset: 'evaluate', ...set }).problems;
});

export const evaluateStore: FieldStore = {
  get: (key) => evaluateValues[key],
  set: (key, value) => {
    if (value === null || value === undefined) delete evaluateValues[key];
    else evaluateValues[key] = value;
  },
  problems: (key) => problems.get(key) ?? [],
};

/** What evaluateRun gets: the set keys (the worker fills in the bounded defaults for the rest). */
export function evaluateOverrides(): Record<string, unknown> {
  return Object.fromEntries(
    EVALUATE_KEYS.filter((k) => evaluateValues[k] !== undefined && evaluateValues[k] !== null).map((k) => [k, $state.snapshot(evaluateValues[k])]),
  );
}
