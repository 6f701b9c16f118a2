/** The built CLI (`npm run build:cli`) as a user runs it: exit code, stdout and stderr, never a throw. */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

export const cliBin = path.resolve('bin/peft-studio.mjs');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CliResult> {
  try {
    const r = await promisify(execFile)('node', [cliBin, ...args], { maxBuffer: 1 << 26, env: opts.env ?? process.env, cwd: opts.cwd });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** The logged training steps (entries with a loss) of a run folder's trainer_log.jsonl. */
export function trainLog(dir: string): { loss: number; [k: string]: unknown }[] {
  return readFileSync(path.join(dir, 'trainer_log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((l) => l.loss !== undefined);
}
