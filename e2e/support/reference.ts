/** What the studio's output is compared with: the model's golden ids and the Node CLI. */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, testHubRoot } from './servers';

interface ReferencePrompt {
  prompt: string;
  input_ids: number[];
  /** Prompt ids followed by 40 greedy ids. */
  greedy_40_ids: number[];
}

export interface Greedy {
  prompt: string;
  promptIds: number[];
  ids: number[];
}

/** The first `n` greedy ids after prompt `index` of stories260K's reference.json (float32 numpy). */
export function referenceGreedy(index: number, n: number): Greedy {
  const file = path.join(testHubRoot(), 'models/stories260K/reference.json');
  const ref = JSON.parse(readFileSync(file, 'utf8')) as { prompts: ReferencePrompt[] };
  const p = ref.prompts[index];
  if (!p) throw new Error(`${file} has no prompts[${index}]`);
  const start = p.input_ids.length;
  if (p.greedy_40_ids.length < start + n) throw new Error(`${file}: prompts[${index}] has fewer than ${n} greedy ids`);
  return { prompt: p.prompt, promptIds: p.input_ids, ids: p.greedy_40_ids.slice(start, start + n) };
}

/** `peft-studio generate ... --ids` in Node (Dawn on SwiftShader): the ids it prints as JSON. */
export async function cliGreedy(opts: { endpoint: string; repo: string; prompt: string; maxNewTokens: number }): Promise<Greedy & { ms: number }> {
  const bin = path.join(ROOT, 'bin/peft-studio.mjs');
  if (!existsSync(path.join(ROOT, 'dist-cli/cli.mjs'))) {
    throw new Error('The CLI is not built (dist-cli/cli.mjs): run `npm run build:cli` first (npm run test:e2e does).');
  }
  const args = [
    bin,
    'generate',
    '--model',
    opts.repo,
    '--endpoint',
    opts.endpoint,
    '--prompt',
    opts.prompt,
    '--max-new-tokens',
    String(opts.maxNewTokens),
    '--temperature',
    '0',
    '--ids',
  ];
  const t0 = Date.now();
  const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
    execFile(process.execPath, args, { cwd: ROOT, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`node ${args.join(' ')} failed (${err.message})\nstdout:\n${stdout}\nstderr:\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
  const line = stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{') && l.includes('"ids"'));
  if (!line) throw new Error(`The CLI printed no {"prompt_ids", "ids"} line.\nstdout:\n${stdout}\nstderr:\n${stderr}`);
  const out = JSON.parse(line) as { prompt_ids: number[]; ids: number[] };
  return { prompt: opts.prompt, promptIds: out.prompt_ids, ids: out.ids, ms: Date.now() - t0 };
}
