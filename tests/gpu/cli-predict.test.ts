/**
 * do_predict and grids through the built CLI, end to end on real rows:
 * LoRA on a small sst2 slice for a few steps, predictions on a few dev rows,
 * the files PEFT-Factory writes and the metric keys (not the scores: a 260K
 * story model is not a classifier). A predict-only run from that kind of
 * adapter over five task families at once (sst2, stsb, conala, svamp, gsm8k),
 * every file checked; a run whose one set cannot be scored keeps the others;
 * an Alpaca .jsonl as eval set. A two-cell grid, rerun to show that finished
 * cells are skipped.
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
  `model_name_or_path=${storiesDir()}`,
  `dataset_dir=${datasets}`,
  'dataset=sst2',
  'max_samples=8',
  'max_steps=3',
  'val_size=0',
  'eval_strategy=no',
  'save_steps=100',
  'eval_steps=100',
  'cutoff_len=128',
  'max_new_tokens=6',
  'do_sample=false',
  'per_device_eval_batch_size=4',
];

/** The sst2 LoRA run of the first test; its output folder is also the adapter the predict-only test loads. */
let sst2Run: Promise<{ out: string; code: number; stderr: string }> | null = null;
const trainedOnSst2 = () =>
  (sst2Run ??= (async () => {
    const out = tmp();
    const r = await cli(['train', config, ...small, 'do_predict=true', 'eval_dataset=sst2_eval', `output_dir=${out}`]);
    return { out, code: r.code, stderr: r.stderr };
  })());

describe('peft-studio train with do_predict', () => {
  it('trains LoRA on an sst2 slice, predicts dev rows, writes generated_predictions.jsonl and predict_results.json', async () => {
    const { out, ...r } = await trainedOnSst2();
    expect(r.code, r.stderr).toBe(0);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'all_results.json', 'generated_predictions.jsonl', 'predict_results.json']) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    const lines = readFileSync(path.join(out, 'generated_predictions.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.length).toBe(8);
    for (const l of lines) {
      expect(Object.keys(l)).toEqual(['prompt', 'predict', 'label']);
      expect(['negative', 'positive']).toContain(l.label);
      expect(l.prompt).toContain('Classify the following sentence into negative and positive classes.');
    }
    const res = JSON.parse(readFileSync(path.join(out, 'predict_results.json'), 'utf8'));
    for (const k of [
      'predict_accuracy',
      'predict_macro_f1',
      'predict_binary_f1',
      'predict_invalid',
      'headline_metric',
      'performance',
      'pscp',
      'pscp_extra_flops',
      'trainable_params',
      'tflops_total',
      'tflops_extra',
      'peak_memory_gb',
      'latency_ms_per_token',
      'train_tokens_per_s',
      'predict_runtime',
    ]) {
      expect(res, k).toHaveProperty(k);
    }
    expect(res.headline_metric).toBe('macro_f1');
    expect(res.trainable_params).toBe(5 * 8 * (64 + 64 + 64 + 32)); // LoRA r 8 on q, v of stories260K
    expect(res.peak_memory_gb).toBeGreaterThan(0);
    expect(res.tflops_total).toBeGreaterThan(res.tflops_extra);
  });

  it('predict-only from an adapter: method and options from its adapter_config.json, PSCP memory from its all_results.json; five task families in one run, every file checked', async () => {
    const { out: adapter, ...t } = await trainedOnSst2();
    expect(t.code, t.stderr).toBe(0);
    const trained = JSON.parse(readFileSync(path.join(adapter, 'all_results.json'), 'utf8'));
    const out = tmp();
    const keys = ['sst2_eval', 'stsb_eval', 'conala_eval', 'svamp_eval', 'gsm8k_eval'];
    // lora_rank / lora_target here disagree with the adapter on purpose: the adapter's own config wins.
    const r = await cli([
      'train',
      config,
      `model_name_or_path=${storiesDir()}`,
      `dataset_dir=${datasets}`,
      'do_train=false',
      'do_predict=true',
      `adapter_name_or_path=${adapter}`,
      'lora_rank=16',
      'lora_target=all',
      `eval_dataset=${keys.join(',')}`,
      'max_predict_samples=2',
      'max_new_tokens=8',
      'cutoff_len=160',
      'per_device_eval_batch_size=2',
      `output_dir=${out}`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('method lora and its options from adapter_config.json');
    expect(r.stderr).toContain('lora_rank 16 → 8');
    expect(r.stderr).toContain('lora_target ["all"] → ["q_proj","v_proj"]');
    expect(r.stderr).toContain(`peak of training (${adapter}/all_results.json)`);
    const all = JSON.parse(readFileSync(path.join(out, 'predict_results.json'), 'utf8'));
    expect(Object.keys(all)).toEqual(keys);
    const labelOk: Record<string, (l: string) => boolean> = {
      sst2_eval: (l) => ['negative', 'positive'].includes(l),
      stsb_eval: (l) => /^\d\.\d+$/.test(l),
      conala_eval: (l) => l.length > 0,
      svamp_eval: (l) => /^\(.*\) = -?\d+\.\d+$/.test(l), // "( 78.0 - 22.0 ) = 56.0", PEFT-Factory's target
      gsm8k_eval: (l) => /\n#### -?[\d,.]+$/.test(l), // the worked answer, "#### n" last
    };
    const metricKeys: Record<string, string[]> = {
      sst2_eval: ['predict_accuracy', 'predict_macro_f1'],
      stsb_eval: ['predict_pearson', 'predict_spearman'],
      conala_eval: ['predict_rouge-1', 'predict_rouge-2', 'predict_rouge-l', 'predict_bleu-4', 'predict_token_accuracy'],
      svamp_eval: ['predict_numeric_accuracy', 'predict_equation_consistency'],
      gsm8k_eval: ['predict_numeric_accuracy', 'predict_invalid'],
    };
    for (const k of keys) {
      const dir = path.join(out, `predict_${k}`);
      expect(r.stderr, k).toContain(`predict ${k}: written to ${dir}/`);
      const rows = readFileSync(path.join(dir, 'generated_predictions.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(rows.length, k).toBe(2);
      for (const row of rows) {
        expect(Object.keys(row), k).toEqual(['prompt', 'predict', 'label']);
        expect(labelOk[k](row.label), `${k} label ${JSON.stringify(row.label)}`).toBe(true);
      }
      const res = JSON.parse(readFileSync(path.join(dir, 'predict_results.json'), 'utf8'));
      expect(res).toEqual(all[k]);
      for (const m of metricKeys[k]) expect(typeof res[m], `${k} ${m}`).toBe('number');
      expect(res.trainable_params).toBe(5 * 8 * (64 + 64 + 64 + 32)); // the adapter's r 8 on q, v
      expect(res.peak_memory_gb).toBe(trained.peak_gpu_bytes / 1e9);
      expect(res.peak_memory_source).toBe(`training (${adapter}/all_results.json)`);
    }
    expect(all.conala_eval.predict_token_accuracy).toBeGreaterThanOrEqual(0);
    expect(all.conala_eval.predict_token_accuracy).toBeLessThanOrEqual(1);
    // PEFT-Factory's compute_metrics reads the number after the last '####' of the label.
    const g = readFileSync(path.join(out, 'predict_gsm8k_eval', 'generated_predictions.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    for (const row of g) expect(Number.isFinite(Number(row.label.split('####').at(-1).trim().replace(/,/g, '')))).toBe(true);
  });

  it("a set whose metric fails keeps every other set's files and exits 2; an Alpaca .jsonl is an eval set; a missing one is refused before training", async () => {
    const dir = tmp();
    writeFileSync(path.join(dir, 'bad.jsonl'), '{"q": "1 + 1?", "a": "2"}\n{"q": "2 + 2?", "a": "4"}\n');
    writeFileSync(
      path.join(dir, 'mine.jsonl'),
      '{"instruction": "Say hi", "input": "", "output": "hi there"}\n{"instruction": "Count", "input": "to two", "output": "one two"}\n',
    );
    writeFileSync(
      path.join(dir, 'info.json'),
      JSON.stringify({
        // A math entry whose answers lack GSM8K's "#### n": its metric cannot score them.
        bad_math: {
          task: 'math',
          metric: 'gsm8k',
          instruction: 'Answer.',
          split: 'test',
          formatter: 'columns',
          columns: { prompt: 'q', response: 'a' },
          sources: [{ type: 'file', dir, splits: { test: ['bad.jsonl'] } }],
        },
      }),
    );
    const out = path.join(dir, 'out');
    const base = [
      `model_name_or_path=${storiesDir()}`,
      `dataset_dir=${datasets}`,
      `dataset_info=${path.join(dir, 'info.json')}`,
      'do_predict=true',
      'max_predict_samples=2',
      'max_new_tokens=4',
      'cutoff_len=128',
      `output_dir=${out}`,
    ];
    const r = await cli(['train', config, ...base, 'do_train=false', `eval_dataset=sst2_eval,bad_math,${path.join(dir, 'mine.jsonl')}`]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain('could not be scored');
    expect(r.stderr).toContain("bad_math: Gold answer 0 has no number after '####'");
    expect(existsSync(path.join(out, 'predict_results.json'))).toBe(false);
    expect(existsSync(path.join(out, 'predict_bad_math', 'generated_predictions.jsonl'))).toBe(true);
    expect(existsSync(path.join(out, 'predict_bad_math', 'predict_results.json'))).toBe(false);
    const sst2 = JSON.parse(readFileSync(path.join(out, 'predict_sst2_eval', 'predict_results.json'), 'utf8'));
    expect(sst2.headline_metric).toBe('macro_f1');
    expect(sst2.peak_memory_source).toBe('prediction (no training)'); // no adapter, no training: says so
    expect(r.stderr).toContain('PSCP memory term: ');
    const mine = JSON.parse(readFileSync(path.join(out, 'predict_mine.jsonl', 'predict_results.json'), 'utf8'));
    expect(mine.headline_metric).toBe('rouge-l');
    expect(typeof mine['predict_token_accuracy']).toBe('number');
    const rows = readFileSync(path.join(out, 'predict_mine.jsonl', 'generated_predictions.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(rows.map((x) => x.label)).toEqual(['hi there', 'one two']);
    expect(rows[1].prompt).toContain('Count\nto two');
    // A missing eval file is refused before a model is loaded or a step trained.
    const out2 = path.join(dir, 'out2');
    const m = await cli(['train', config, ...base, `output_dir=${out2}`, 'dataset=sst2', `eval_dataset=${path.join(dir, 'nope.jsonl')}`]);
    expect(m.code).toBe(2);
    expect(m.stderr).toContain(`eval_dataset '${path.join(dir, 'nope.jsonl')}': the file does not exist`);
    expect(existsSync(out2)).toBe(false);
  });

  it('a grid whose cell names a missing eval .jsonl is refused before any cell runs', async () => {
    const out = tmp();
    const grid = path.join(out, 'grid.yaml');
    writeFileSync(
      grid,
      [
        `base: ${config}`,
        `output_dir: ${path.join(out, 'cells')}`,
        'seeds: [1]',
        'datasets: [sst2, cola]',
        'methods:',
        '  lora: { finetuning_type: lora }',
        'dataset_overrides:',
        `  cola: { eval_dataset: ${path.join(out, 'missing.jsonl')} }`,
      ].join('\n'),
    );
    const r = await cli(['grid', grid, ...small.filter((o) => !o.startsWith('dataset='))]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`eval_dataset '${path.join(out, 'missing.jsonl')}': the file does not exist`);
    expect(existsSync(path.join(out, 'cells'))).toBe(false);
  });

  it('a grid runs its cells, writes results.csv / results.md, and skips finished cells when rerun', async () => {
    const out = tmp();
    const grid = path.join(out, 'grid.yaml');
    writeFileSync(
      grid,
      [
        `base: ${config}`,
        `output_dir: ${path.join(out, 'cells')}`,
        'seeds: [1]',
        'datasets: [sst2]',
        'methods:',
        '  lora: { finetuning_type: lora, lora_rank: 4, lora_target: [q_proj, v_proj] }',
        '  bitfit: { finetuning_type: bitfit, learning_rate: 0.01 }',
      ].join('\n'),
    );
    const overrides = small.filter((o) => !o.startsWith('dataset='));
    const first = await cli(['grid', grid, ...overrides]);
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ cells: 2, ran: 2 });
    const md = readFileSync(path.join(out, 'cells', 'results.md'), 'utf8');
    expect(md).toMatch(/^\| method \| trainable params \| sst2 \| mean \| PSCP \|/);
    expect(md).toContain('| lora | 4,480 |'); // 5 layers × r 4 × ((64 + 64) + (64 + 32))
    expect(md).toContain('| bitfit | 480 |');
    const csv = readFileSync(path.join(out, 'cells', 'results.csv'), 'utf8')
      .trim()
      .split('\n');
    expect(csv.length).toBe(3);
    expect(csv[0]).toContain('predict_macro_f1');
    const again = await cli(['grid', grid, ...overrides]);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ cells: 2, ran: 0 });
    expect(again.stderr).toContain('finished earlier, skipped');
  });
});
