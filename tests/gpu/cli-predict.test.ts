/**
 * do_predict and grids through the built CLI, end to end on real rows:
 * LoRA on a small sst2 slice for a few steps, predictions on a few dev rows,
 * the files PEFT-Factory writes and the metric keys (not the scores: a 260K
 * story model is not a classifier). A two-cell grid, rerun to show that
 * finished cells are skipped.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { storiesDir } from '../helpers/models';
import { testHubRoot } from '../helpers/hub-server';
import { runCli } from '../helpers/cli';

const config = path.resolve('examples/stories260k_lora.yaml');
const datasets = path.join(testHubRoot(), 'datasets');
const tmp = () => mkdtempSync(path.join(tmpdir(), 'ps-predict-'));

const cli = (args: string[]) => runCli(args);

const small = [
  `model_name_or_path=${storiesDir()}`, `dataset_dir=${datasets}`, 'dataset=sst2', 'max_samples=8', 'max_steps=3', 'val_size=0',
  'save_steps=100', 'eval_steps=100', 'cutoff_len=128', 'max_new_tokens=6', 'do_sample=false', 'per_device_eval_batch_size=4',
];

describe('peft-studio train with do_predict', () => {
  it('trains LoRA on an sst2 slice, predicts dev rows, writes generated_predictions.jsonl and predict_results.json', async () => {
    const out = tmp();
    const r = await cli(['train', config, ...small, 'do_predict=true', 'eval_dataset=sst2_eval', `output_dir=${out}`]);
    expect(r.code, r.stderr).toBe(0);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'all_results.json', 'generated_predictions.jsonl', 'predict_results.json']) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    const lines = readFileSync(path.join(out, 'generated_predictions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.length).toBe(8);
    for (const l of lines) {
      expect(Object.keys(l)).toEqual(['prompt', 'predict', 'label']);
      expect(['negative', 'positive']).toContain(l.label);
      expect(l.prompt).toContain('Classify the following sentence into negative and positive classes.');
    }
    const res = JSON.parse(readFileSync(path.join(out, 'predict_results.json'), 'utf8'));
    for (const k of ['predict_accuracy', 'predict_macro_f1', 'predict_binary_f1', 'predict_invalid', 'headline_metric', 'performance', 'pscp', 'pscp_extra_flops',
      'trainable_params', 'tflops_total', 'tflops_extra', 'peak_memory_gb', 'latency_ms_per_token', 'train_tokens_per_s', 'predict_runtime']) {
      expect(res, k).toHaveProperty(k);
    }
    expect(res.headline_metric).toBe('macro_f1');
    expect(res.trainable_params).toBe(5 * 8 * (64 + 64 + 64 + 32)); // LoRA r 8 on q, v of stories260K
    expect(res.peak_memory_gb).toBeGreaterThan(0);
    expect(res.tflops_total).toBeGreaterThan(res.tflops_extra);
  });

  it('a grid runs its cells, writes results.csv / results.md, and skips finished cells when rerun', async () => {
    const out = tmp();
    const grid = path.join(out, 'grid.yaml');
    writeFileSync(grid, [
      `base: ${config}`,
      `output_dir: ${path.join(out, 'cells')}`,
      'seeds: [1]',
      'datasets: [sst2]',
      'methods:',
      '  lora: { finetuning_type: lora, lora_rank: 4, lora_target: [q_proj, v_proj] }',
      '  bitfit: { finetuning_type: bitfit, learning_rate: 0.01 }',
    ].join('\n'));
    const overrides = small.filter((o) => !o.startsWith('dataset='));
    const first = await cli(['grid', grid, ...overrides]);
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ cells: 2, ran: 2 });
    const md = readFileSync(path.join(out, 'cells', 'results.md'), 'utf8');
    expect(md).toMatch(/^\| method \| trainable params \| sst2 \| mean \| PSCP \|/);
    expect(md).toContain('| lora | 4,480 |'); // 5 layers × r 4 × ((64 + 64) + (64 + 32))
    expect(md).toContain('| bitfit | 480 |');
    const csv = readFileSync(path.join(out, 'cells', 'results.csv'), 'utf8').trim().split('\n');
    expect(csv.length).toBe(3);
    expect(csv[0]).toContain('predict_macro_f1');
    const again = await cli(['grid', grid, ...overrides]);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ cells: 2, ran: 0 });
    expect(again.stderr).toContain('finished earlier, skipped');
  });
});
