/**
 * `peft-studio train` with `dataset: sst2` (a registry key) end to end: the
 * built CLI reads the split from the test Hub (parquet, Hub URL layout),
 * encodes it with the default template, trains LoRA on stories260K for a few
 * steps and writes the adapter. The same run from a Hub-layout folder
 * (dataset_dir) gives the same losses.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { storiesDir } from '../helpers/models';
import { testHubRoot, useHubServer } from '../helpers/hub-server';
import { runCli } from '../helpers/cli';

const config = path.resolve('examples/stories260k_lora.yaml');

const cli = (args: string[]) => runCli(args, { env: { ...process.env, PEFT_STUDIO_CACHE: mkdtempSync(path.join(tmpdir(), 'ps-cache-')) } });

const losses = (dir: string): number[] =>
  readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((l) => l.loss !== undefined)
    .map((l) => l.loss);

describe('peft-studio train with a registry dataset', () => {
  const hub = useHubServer();
  const args = (out: string) => [
    'train',
    config,
    `model_name_or_path=${storiesDir()}`,
    `output_dir=${out}`,
    'dataset=sst2',
    'cutoff_len=160',
    'max_samples=8',
    'val_size=0',
    'eval_strategy=no',
    'max_steps=2',
    'per_device_train_batch_size=4',
    'lr_scheduler_type=constant',
    'warmup_ratio=0',
    'save_steps=100',
  ];

  it('trains on sst2 from the Hub and from a Hub-layout folder, with the same losses', async () => {
    const a = mkdtempSync(path.join(tmpdir(), 'ps-sst2-'));
    const r = await cli([...args(a), `endpoint=${hub.url}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(
      /data: sst2 \(train\) from hub:http:\/\/127\.0\.0\.1:\d+\/datasets\/nyu-mll\/glue@main sst2\/train-00000-of-00001\.parquet: 8 examples/,
    );
    expect(r.stderr).toMatch(/data: 8 train, 0 val examples/);
    expect(hub.count('/datasets/nyu-mll/glue/resolve/main/sst2/train-00000-of-00001.parquet')).toBeGreaterThan(0);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'trainer_log.jsonl']) expect(existsSync(path.join(a, f)), f).toBe(true);
    const la = losses(a);
    expect(la).toHaveLength(2);
    expect(la.every(Number.isFinite)).toBe(true);

    const b = mkdtempSync(path.join(tmpdir(), 'ps-sst2-'));
    const s = await cli([...args(b), `dataset_dir=${path.join(testHubRoot(), 'datasets')}`, 'endpoint=http://127.0.0.1:9']);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stderr).toMatch(/data: sst2 \(train\) from local:/);
    expect(losses(b)).toEqual(la);
  });

  it('a typo in the dataset key gets the closest key', async () => {
    const r = await cli([...args(mkdtempSync(path.join(tmpdir(), 'ps-sst2-'))), 'dataset=sst-2', `endpoint=${hub.url}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Unknown dataset "sst-2"\. Did you mean "sst2"\?/);
  });
});
