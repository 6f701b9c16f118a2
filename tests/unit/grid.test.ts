/** Benchmark grid files: validation, cell expansion, results tables from hand-made cell results. */
import { describe, it, expect } from 'vitest';
import path from 'node:path';
import { gridCells, headline, parseGrid, resultsCsv, resultsMarkdown, type CellResult } from '../../src/eval/grid';
import '../../src/methods/registry';

const base = { model_name_or_path: 'models/stories260K', max_steps: 5, per_device_train_batch_size: 4 };
const noBase = () => {
  throw new Error('no base file here');
};

describe('grid files', () => {
  it('expand to method × dataset × seed cells, each a validated config with its own folder', () => {
    const spec = parseGrid(
      {
        base,
        output_dir: 'runs/g',
        seeds: [1, 2],
        datasets: ['sst2', 'cola'],
        methods: { lora: { lora_rank: 4, lora_target: ['q_proj', 'v_proj'] }, 'lora-r8': { finetuning_type: 'lora', lora_rank: 8 } },
        dataset_overrides: { cola: { max_new_tokens: 8 } },
      },
      'g.yaml',
      noBase,
    );
    const cells = gridCells(spec, path.join);
    expect(cells.length).toBe(2 * 2 * 2);
    expect(cells[0]).toMatchObject({ method: 'lora', dataset: 'sst2', seed: 1, dir: path.join('runs/g', 'lora', 'sst2', 'seed-1') });
    expect(cells[0].config).toMatchObject({
      finetuning_type: 'lora',
      lora_rank: 4,
      dataset: 'sst2',
      eval_dataset: 'sst2_eval',
      seed: 1,
      do_predict: true,
      max_steps: 5,
    });
    expect(cells.find((c) => c.dataset === 'cola')!.config.max_new_tokens).toBe(8);
    expect(cells.find((c) => c.method === 'lora-r8')!.config.lora_rank).toBe(8);
  });

  it('name what is wrong: unknown keys, empty lists, repeated seeds, bad cell configs', () => {
    const ok = { base, output_dir: 'o', seeds: [1], datasets: ['sst2'], methods: { lora: {} } };
    expect(() => parseGrid({ ...ok, method: {} }, 'g.yaml', noBase)).toThrow(/unknown grid key 'method'/);
    expect(() => parseGrid({ ...ok, seeds: [] }, 'g.yaml', noBase)).toThrow(/'seeds' must be a non-empty list/);
    expect(() => parseGrid({ ...ok, seeds: [1, 1] }, 'g.yaml', noBase)).toThrow(/seeds repeat/);
    expect(() => parseGrid({ ...ok, methods: { '../x': {} } }, 'g.yaml', noBase)).toThrow(/names a folder/);
    expect(() => parseGrid({ ...ok, dataset_overrides: { cola: {} } }, 'g.yaml', noBase)).toThrow(/not in datasets/);
    const bad = parseGrid({ ...ok, methods: { lora: { lora_rank: 0 } } }, 'g.yaml', noBase);
    expect(() => gridCells(bad, path.join)).toThrow(/grid cell lora \/ sst2 \/ seed 1[\s\S]*lora_rank/);
  });

  it('results: headline metric per task, CSV per cell, markdown mean ± std over seeds', () => {
    expect(headline({ accuracy: 0.9, macro_f1: 0.8 })).toEqual({ name: 'macro_f1', value: 0.8 });
    expect(headline({ 'rouge-l': 42 })).toEqual({ name: 'rouge-l', value: 0.42 });
    expect(headline({ numeric_accuracy: 0.25 })).toEqual({ name: 'numeric_accuracy', value: 0.25 });
    const cells: CellResult[] = [
      { method: 'lora', dataset: 'sst2', seed: 1, results: { macro_f1: 0.5, trainable_params: 1280, pscp: 0.4 } },
      { method: 'lora', dataset: 'sst2', seed: 2, results: { macro_f1: 0.7, trainable_params: 1280, pscp: 0.6 } },
      { method: 'lora', dataset: 'svamp', seed: 1, results: { numeric_accuracy: 0.1, trainable_params: 1280, pscp: 0.1 } },
      { method: 'ia3', dataset: 'sst2', seed: 1, results: { macro_f1: 0.3, trainable_params: 1180, note: 'a, "b"' } },
    ];
    const csv = resultsCsv(cells).trim().split('\n');
    expect(csv[0]).toBe('method,dataset,seed,headline_name,headline,macro_f1,note,numeric_accuracy,pscp,trainable_params');
    expect(csv[4]).toBe('ia3,sst2,1,macro_f1,0.3,0.3,"a, ""b""",,,1180');
    const md = resultsMarkdown(cells, {
      datasets: ['sst2', 'svamp'],
      methods: new Map([
        ['lora', {}],
        ['ia3', {}],
      ]),
      seeds: [1, 2],
    })
      .trim()
      .split('\n');
    // sst2: mean 0.6, sample std 0.1414 → 60.0 ± 14.1; svamp one of two seeds; mean of dataset means (0.6 + 0.1) / 2.
    expect(md[2]).toBe('| lora | 1,280 | 60.0 ± 14.1 | 10.0 ± 0.0 (1/2) | 35.0 | 0.3667 |');
    expect(md[3]).toBe('| ia3 | 1,180 | 30.0 ± 0.0 (1/2) | – | 30.0 | – |');
  });
});
