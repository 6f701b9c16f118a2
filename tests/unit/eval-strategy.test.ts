/** eval_strategy / eval_steps as their help says (HF TrainingArguments): 'no' never, 'steps' every eval_steps (unset: logging_steps), 'epoch' after each epoch. */
import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/schema';
import { trainOptions } from '../../src/run/experiment';

const base = {
  model_name_or_path: 'stories260K',
  dataset: 'sst2',
  output_dir: 'out',
  val_size: 0.1,
  per_device_train_batch_size: 4,
  gradient_accumulation_steps: 2,
  logging_steps: 5,
  max_steps: 100,
};
const data = { train: new Array(40), val: new Array(8) } as never;
const every = (extra: Record<string, unknown>) => trainOptions(validateConfig({ ...base, ...extra }), data, 0).evalSteps;

describe('evaluation during training', () => {
  it("'no' never evaluates, even with eval_steps set", () => {
    expect(every({})).toBe(0);
    expect(every({ eval_steps: 10 })).toBe(0);
  });
  it("'steps' evaluates every eval_steps; unset, every logging_steps; below 1, a fraction of the total", () => {
    expect(every({ eval_strategy: 'steps', eval_steps: 10 })).toBe(10);
    expect(every({ eval_strategy: 'steps' })).toBe(5);
    expect(every({ eval_strategy: 'steps', eval_steps: 0.25 })).toBe(25);
  });
  it("'epoch' evaluates every epoch's optimizer steps (40 examples / batch 4 / accumulation 2 = 5)", () => {
    expect(every({ eval_strategy: 'epoch' })).toBe(5);
  });
  it('no validation data: no evaluation', () => {
    expect(trainOptions(validateConfig({ ...base, eval_strategy: 'steps' }), { train: new Array(40), val: [] } as never, 0).evalSteps).toBe(0);
  });
});
