/**
 * Kill-and-resume matrix for `peft-studio train` (the built CLI), dropout on:
 * one run killed with SIGKILL during a training step, its resumption killed
 * during a checkpoint write, the next one killed during the final adapter
 * export, and a last resume_from_checkpoint: true logs each step once with
 * exactly the losses of an uninterrupted run and writes a bit-identical
 * adapter. (A chain, not three separate runs: each CLI start costs seconds
 * of shader compilation.) Along the way: a second run on a live run's
 * output_dir is refused, each killed run's stale lock is taken over, the
 * half-written checkpoint is swept, and save_total_limit keeps one checkpoint.
 */
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { storiesDir } from '../helpers/models';
import { cliBin, runCli } from '../helpers/cli';

const config = path.resolve('examples/stories260k_lora.yaml');
// 8 steps, checkpoints at 3 and 6 (8 is not one: the export kill must redo steps 7-8), eval every 3.
const args = (out: string) => [
  'train',
  config,
  `model_name_or_path=${storiesDir()}`,
  `output_dir=${out}`,
  'lora_dropout=0.1',
  'max_steps=8',
  'save_steps=3',
  'eval_steps=3',
  'save_total_limit=1',
];
const tmp = () => mkdtempSync(path.join(tmpdir(), 'ps-kill-'));

/** The log without wall-clock fields: what must repeat exactly. */
const log = (dir: string) =>
  readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const { current_steps, loss, eval_loss, lr, grad_norm } = JSON.parse(l);
      return { current_steps, loss, eval_loss, lr, grad_norm };
    });
const lossLines = (dir: string) => {
  try {
    return readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('"loss"')).length;
  } catch {
    return 0;
  }
};

/** Start the CLI; `killWhen` (polled) sends SIGKILL from outside. Resolves with how it ended. */
function train(out: string, opts: { resume?: boolean; env?: Record<string, string>; killWhen?: () => boolean } = {}) {
  const child = spawn('node', [cliBin, ...args(out), ...(opts.resume ? ['resume_from_checkpoint=true'] : [])], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.resume();
  let timer: NodeJS.Timeout | undefined;
  if (opts.killWhen) timer = setInterval(() => opts.killWhen!() && child.kill('SIGKILL'), 5);
  return {
    child,
    done: new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
      child.on('exit', (code, signal) => {
        clearInterval(timer);
        resolve({ code, signal, stderr });
      }),
    ),
  };
}

describe('kill -9 and resume (dropout on)', () => {
  it('killed during a step, then a checkpoint write, then the final export, the resumed run equals the uninterrupted one', async () => {
    const full = tmp(),
      dir = tmp();
    // The uninterrupted run goes alongside the chain of interrupted ones.
    const baseline = train(full);

    // 1. From outside, once step 4 is logged (checkpoint-3 is on disk): the process is in step 5.
    const first = train(dir, { killWhen: () => lossLines(dir) >= 4 });
    // A live run's output_dir is refused, before any model is loaded.
    while (!existsSync(path.join(dir, '.peft-studio.lock'))) await new Promise((r) => setTimeout(r, 5));
    const second = await runCli(args(dir));
    expect(second.code).toBe(2);
    expect(second.stderr).toMatch(/output_dir .* is in use by another run \(process \d+/);
    const k1 = await first.done;
    expect(k1.signal, k1.stderr).toBe('SIGKILL');
    expect(readdirSync(dir).filter((n) => /^checkpoint-/.test(n))).toEqual(['checkpoint-3']);
    expect(lossLines(dir)).toBeGreaterThanOrEqual(4);

    // 2. Resumed (the stale lock taken over), then killed inside the write of checkpoint-6: one file in its temporary folder.
    const k2 = await train(dir, { resume: true, env: { PEFT_STUDIO_KILL_AT: 'checkpoint-write:1' } }).done;
    expect(k2.signal, k2.stderr).toBe('SIGKILL');
    expect(readdirSync(dir).filter((n) => n.startsWith('.checkpoint-6.'))).toHaveLength(1);
    expect(readdirSync(dir).filter((n) => /^checkpoint-/.test(n))).toEqual(['checkpoint-3']);

    // 3. Resumed again (the half checkpoint swept), killed with adapter_model.safetensors in place but no adapter_config.json.
    const k3 = await train(dir, { resume: true, env: { PEFT_STUDIO_KILL_AT: 'export-write' } }).done;
    expect(k3.signal, k3.stderr).toBe('SIGKILL');
    expect(k3.stderr).toMatch(/removed 1 unfinished write\(s\) of an interrupted run: \.checkpoint-6\./);
    expect(existsSync(path.join(dir, 'adapter_model.safetensors'))).toBe(true);
    expect(existsSync(path.join(dir, 'adapter_config.json'))).toBe(false);
    expect(
      readdirSync(dir).filter((n) => /^checkpoint-/.test(n)),
      'save_total_limit 1',
    ).toEqual(['checkpoint-6']);

    // 4. Resumed from checkpoint-6: steps 7-8 again, then the export.
    const done = await train(dir, { resume: true }).done;
    expect(done.code, done.stderr).toBe(0);
    const b = await baseline.done;
    expect(b.code, b.stderr).toBe(0);
    const want = log(full);
    expect(want.filter((l) => l.loss !== undefined)).toHaveLength(8);
    expect(log(dir)).toEqual(want);
    expect(readFileSync(path.join(dir, 'adapter_model.safetensors')).equals(readFileSync(path.join(full, 'adapter_model.safetensors'))), 'adapter bytes').toBe(
      true,
    );
    expect(readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')).toBe(readFileSync(path.join(full, 'adapter_config.json'), 'utf8'));
    expect(
      readdirSync(dir).filter((n) => n.startsWith('.') || /^checkpoint-/.test(n)),
      'no leftovers, no lock',
    ).toEqual(['checkpoint-6']);
  }, 600_000); // six CLI processes: ~25 s on an idle 2-core machine, minutes on a loaded one
});
