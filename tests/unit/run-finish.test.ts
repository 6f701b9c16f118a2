/** The one finish path (src/run/finish.ts): all_results.json meanings and file order, for the CLI and the worker alike. */
import { describe, expect, it } from 'vitest';
import { meanTrainLoss, trainResults, writePredictionFiles } from '../../src/run/finish';
import type { FileMap, RunStore } from '../../src/train/store';
import type { LogEntry } from '../../src/train/trainer';

const entry = (step: number, loss?: number, evalLoss?: number): LogEntry => ({
  current_steps: step,
  total_steps: 10,
  loss,
  eval_loss: evalLoss,
  epoch: step / 10,
  percentage: step * 10,
  elapsed_time: step,
  peak_gpu_bytes: 0,
});

describe('all_results.json', () => {
  it('train_loss is the mean over every step: each logged window weighs by its step count', () => {
    // logging_steps 4 over 10 steps: windows 1-4, 5-8, 9-10 (the last step always logs).
    const log = [entry(4, 2), entry(4, undefined, 1.9), entry(8, 1), entry(10, 0.5)];
    expect(meanTrainLoss(log)).toBeCloseTo((2 * 4 + 1 * 4 + 0.5 * 2) / 10, 12);
    expect(meanTrainLoss([entry(1, 3)])).toBe(3);
    expect(meanTrainLoss([])).toBeUndefined();
  });

  it('a resumed log (restored from the checkpoint) still averages from step 1', () => {
    const log = [entry(1, 4), entry(2, 2), entry(3, 3)];
    expect(meanTrainLoss(log)).toBeCloseTo(3, 12);
  });

  it('speeds count optimizer-step time only; runtime is the whole wall time', () => {
    const log = [entry(5, 2), entry(5, undefined, 1.5), entry(10, 1)];
    const r = trainResults({ step: 10, log, stats: { tokens: 8000, steps: 10, trainMs: 2000, runMs: 5000 }, trainableCount: () => 123 }, 4096);
    expect(r).toEqual({
      train_loss: 1.5,
      eval_loss: 1.5,
      global_step: 10,
      epoch: 1,
      train_runtime: 5,
      train_tokens_per_s: 4000,
      train_steps_per_second: 2,
      trainable_params: 123,
      peak_gpu_bytes: 4096,
    });
    const none = trainResults({ step: 10, log, stats: { tokens: 0, steps: 0, trainMs: 0, runMs: 1 }, trainableCount: () => 1 }, 0);
    expect(none.train_tokens_per_s).toBeNull();
  });
});

describe('prediction files', () => {
  it('predict_results.json is written last (a grid reads it as "this cell is done")', async () => {
    const order: string[] = [];
    const store: RunStore = {
      async writeFile(name) {
        order.push(name);
      },
      async writeCheckpoint(_n: string, _f: FileMap) {},
      async readCheckpoint() {
        return null;
      },
      async listCheckpoints() {
        return [];
      },
      async appendLog() {},
      async writeLog() {},
      async writeFiles() {},
    };
    await writePredictionFiles(store, {
      'predict_results.json': '{}',
      'predict_a/generated_predictions.jsonl': '',
      'predict_a/predict_results.json': '{}',
      'generated_predictions.jsonl': '',
    });
    expect(order).toEqual(['predict_a/generated_predictions.jsonl', 'predict_a/predict_results.json', 'generated_predictions.jsonl', 'predict_results.json']);
  });
});
