/** The Train screen's memory estimate for a run: the Model panel's figure when the page's count describes the run (src/ui/memory.ts estimateForRun). */
import { describe, expect, test } from 'vitest';
import { methodInfos } from '../../src/methods/registry';
import { configValues, countConfig, defaultValues, methodKeys, validateValues } from '../../src/ui/config-form';
import { estimateForConfig, estimateForRun } from '../../src/ui/memory';
import type { TrainableCount } from '../../src/worker/api';

// stories260K's shape (../shared/hub/models/stories260K/config.json).
const model = { repo: 'stories260K', hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKvHeads: 4, vocabSize: 512, numParams: 260_000 };
const count: TrainableCount = { trainable: 2560, total: 262_560, method: 'x', residentBytes: 1_100_000 };

describe('memory estimate of a run', () => {
  test("a run started from the form gets the panel's estimate; other method options, batch or model do not reuse the count", () => {
    const infos = methodInfos();
    const values = { ...defaultValues({ model_name_or_path: 'stories260K', dataset: 'sst2' }), per_device_train_batch_size: 4, cutoff_len: 64 };
    // What App.svelte counts for (countTargetKey) and what startRun sends (the validated config).
    const countKey = JSON.stringify(countConfig(values, infos));
    const config = validateValues(configValues(values, infos)).config!;
    const panel = estimateForConfig(model, count, values);
    expect(estimateForRun(model, count, countKey, config, infos)).toEqual(panel);

    // The run batches 8: the same count, its own batch (activations double-ish), not the form's.
    const bigger = estimateForRun(model, count, countKey, { ...config, per_device_train_batch_size: 8 }, infos)!;
    expect(bigger.activations).toBeGreaterThan(panel.activations);
    expect(bigger.weights).toBe(panel.weights);

    // Another method (or the same one with other options): the count is not this run's.
    const other = infos.find((m) => !m.isDefault && !m.select && m.required.length === 0)!;
    const otherConfig = validateValues(configValues({ ...values, ...methodKeys(other.name, infos) }, infos)).config!;
    expect(estimateForRun(model, count, countKey, otherConfig, infos)).toBeNull();
    // Another model loaded in the panel.
    expect(estimateForRun({ ...model, repo: 'other' }, count, countKey, config, infos)).toBeNull();
  });
});
