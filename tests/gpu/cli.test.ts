/** The peft-studio CLI as a user runs it (built by `npm run build:cli`, which `npm test` runs first). */
import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { testHubRoot, useHubServer } from '../helpers/hub-server';
import { runCli } from '../helpers/cli';

const modelDir = path.join(testHubRoot(), 'models', 'stories260K');
const reference = JSON.parse(readFileSync(path.join(modelDir, 'reference.json'), 'utf8'));

const cli = (args: string[], env: Record<string, string> = {}) => runCli(args, { env: { ...process.env, ...env } });

describe('peft-studio CLI', () => {
  const hub = useHubServer();

  it('is built', () => {
    expect(existsSync(path.resolve('dist-cli/cli.mjs')), 'run `npm run build:cli` first').toBe(true);
  });

  it('logits from a local folder match reference.json', async () => {
    const out = path.join(mkdtempSync(path.join(tmpdir(), 'ps-')), 'logits.json');
    const p = reference.prompts[1];
    const r = await cli(['logits', '--model', modelDir, '--text', p.prompt, '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const got = JSON.parse(readFileSync(out, 'utf8'));
    expect(got.input_ids).toEqual(p.input_ids);
    let d = 0;
    got.logits_last.forEach((v: number, i: number) => (d = Math.max(d, Math.abs(v - p.logits_last_position[i]))));
    expect(d).toBeLessThan(1e-4);
  });

  it('generate from the Hub mirror prints the greedy story', async () => {
    const cache = mkdtempSync(path.join(tmpdir(), 'ps-cache-'));
    const r = await cli(['generate', '--model', 'stories260K', '--endpoint', hub.url, '--prompt', 'Once upon a time', '--max-new-tokens', '20', '--ids'], {
      PEFT_STUDIO_CACHE: cache,
    });
    expect(r.code, r.stderr).toBe(0);
    const ids = JSON.parse(r.stdout.trim().split('\n').at(-1)!).ids;
    expect(ids).toEqual(reference.prompts[0].greedy_40_ids.slice(5, 25));
    expect(r.stdout).toMatch(/^Once upon a time, there was a little girl named Lily/);
  });

  it('a repo the Hub does not have gives a named 404 error', async () => {
    const cache = mkdtempSync(path.join(tmpdir(), 'ps-cache-'));
    const r = await cli(['logits', '--model', 'nobody/no-such-model', '--endpoint', hub.url, '--text', 'hi'], { PEFT_STUDIO_CACHE: cache });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/404|not found/i);
    expect(r.stderr).toMatch(/nobody\/no-such-model/);
    expect(r.stderr).not.toMatch(/at .*\.mjs:\d+/); // a sentence, not a stack trace
  });

  it('bad flags and values are named', async () => {
    const r1 = await cli(['generate', '--model', modelDir, '--prompt', 'x', '--temperature', 'hot']);
    expect(r1.code).toBe(2);
    expect(r1.stderr).toMatch(/--temperature/);
    const r2 = await cli(['logits', '--modle', modelDir]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/--modle/);
    const r3 = await cli(['frobnicate']);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toMatch(/Unknown command 'frobnicate'/);
  });
});
