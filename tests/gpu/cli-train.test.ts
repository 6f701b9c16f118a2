/** `peft-studio train / export` and `--adapter` as a user runs them (CLI built by `npm run build:cli`). */
import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseSafetensors } from '../../src/model/safetensors';
import { storiesDir } from '../helpers/models';
import { runCli } from '../helpers/cli';

const config = path.resolve('examples/stories260k_lora.yaml');

const cli = (args: string[]) => runCli(args);

const tmp = () => mkdtempSync(path.join(tmpdir(), 'ps-train-'));
const losses = (dir: string) =>
  readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((l) => l.loss !== undefined);

describe('peft-studio train', () => {
  const base = [`model_name_or_path=${storiesDir()}`, 'lr_scheduler_type=constant', 'warmup_ratio=0', 'val_size=0', 'eval_strategy=no'];

  it('trains, checkpoints, writes an HF PEFT adapter; --adapter and the merged export give the same logits', async () => {
    const out = tmp();
    const r = await cli(['train', config, ...base, `output_dir=${out}`, 'max_steps=6', 'save_steps=3']);
    expect(r.code, r.stderr).toBe(0);
    // The log says how the base is held (base_dtype's effect): stories260K is an F32 file.
    expect(r.stdout + r.stderr).toMatch(/model: local:.*stories260K, base weights f32 on the GPU \(1\.04 MB\)/);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'trainer_log.jsonl', 'all_results.json', 'checkpoint-3', 'checkpoint-6']) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    const ac = JSON.parse(readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(ac).toMatchObject({ peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'], task_type: 'CAUSAL_LM' });
    const st = parseSafetensors(new Uint8Array(readFileSync(path.join(out, 'adapter_model.safetensors'))), 'adapter');
    expect([...st.tensors.keys()].sort()[0]).toBe('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    expect(st.tensors.size).toBe(20);
    expect(st.metadata).toEqual({ format: 'pt' });
    const log = losses(out);
    expect(log.length).toBe(6);
    expect(log[5].loss).toBeLessThan(log[0].loss);
    // HF meanings: train_loss is the mean over all steps (logging_steps 1: the mean of the six), not the last.
    const results = JSON.parse(readFileSync(path.join(out, 'all_results.json'), 'utf8'));
    expect(results.train_loss).toBeCloseTo(log.reduce((a: number, l: { loss: number }) => a + l.loss, 0) / 6, 5);
    expect(results.global_step).toBe(6);
    expect(results.train_runtime).toBeGreaterThan(0);
    expect(results.train_tokens_per_s).toBeGreaterThan(0);

    const text = 'Once upon a time';
    const a = await cli(['logits', '--model', storiesDir(), '--adapter', out, '--text', text]);
    expect(a.code, a.stderr).toBe(0);
    const merged = path.join(out, 'merged');
    const x = await cli(['export', config, ...base, `output_dir=${out}`, `export_dir=${merged}`]);
    expect(x.code, x.stderr).toBe(0);
    const m = await cli(['logits', '--model', merged, '--text', text]);
    expect(m.code, m.stderr).toBe(0);
    const plain = await cli(['logits', '--model', storiesDir(), '--text', text]);
    const la = JSON.parse(a.stdout).logits_last,
      lm = JSON.parse(m.stdout).logits_last,
      lp = JSON.parse(plain.stdout).logits_last;
    let d = 0,
      moved = 0;
    la.forEach((v: number, i: number) => {
      d = Math.max(d, Math.abs(v - lm[i]));
      moved = Math.max(moved, Math.abs(v - lp[i]));
    });
    expect(d).toBeLessThan(1e-4);
    expect(moved).toBeGreaterThan(1e-3); // the adapter changed the model
  });

  // Interrupted runs and resume: tests/gpu/kill-resume.test.ts (kill -9 at three points, dropout on).

  it('bad configs get clear errors', async () => {
    const cases: [string[], RegExp][] = [
      [['learnig_rate=0.1'], /Unknown key 'learnig_rate'.*learning_rate/],
      [['lora_rank=0'], /lora_rank/],
      [['learning_rate=-1'], /learning_rate.*-1/],
      [['model_name_or_path=/no/such/model'], /\/no\/such\/model/],
    ];
    for (const [over, msg] of cases) {
      const r = await cli(['train', config, `output_dir=${tmp()}`, ...over]);
      expect(r.code, over.join(' ')).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
  });
});
