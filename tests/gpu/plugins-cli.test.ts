/**
 * Method plug-ins through the built CLI (`npm run build:cli`): a copy of
 * templates/method in a temporary PEFT_DIR outside the repo is listed, trains,
 * exports, merges and reloads; kernels that do not compile are reported with
 * the WGSL line; peft/vera loads as a plug-in unchanged (only its name
 * collides with the bundled copy); configs cannot name code to load.
 */
import { describe, it, expect } from 'vitest';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { storiesDir } from '../helpers/models';
import { gpuEngine } from '../helpers/gpu';
import { loadPlugins } from '../../src/methods/plugins';
import { installedMethods } from '../../src/methods/registry';
import { PluginError } from '../../src/errors';
import { runCli } from '../helpers/cli';
import { testHubRoot } from '../helpers/hub-server';

const data = path.resolve('examples/data/tiny_stories_alpaca.jsonl');
/** do_predict on two sst2 dev rows, so PSCP (which needs the method's FLOPs) is computed. */
const predict = {
  do_predict: true,
  eval_dataset: 'sst2_eval',
  dataset_dir: path.join(testHubRoot(), 'datasets'),
  max_predict_samples: 2,
  max_new_tokens: 2,
  do_sample: false,
};

/** Run the CLI from a neutral working directory (not the repo), with PEFT_DIR when given. */
function cli(args: string[], peftDir?: string) {
  const env = { ...process.env };
  delete env.PEFT_DIR;
  if (peftDir !== undefined) env.PEFT_DIR = peftDir;
  return runCli(args, { env, cwd: tmpdir() });
}

/** A PEFT_DIR holding a copy of the template as plug-in `name` (method, group, keys and peft_type renamed). */
function templatePlugin(name: string, edit?: (file: string, text: string) => string): string {
  const root = mkdtempSync(path.join(tmpdir(), 'ps-peftdir-'));
  const dir = path.join(root, name);
  cpSync(path.resolve('templates/method'), dir, { recursive: true });
  rmSync(path.join(dir, 'method.test.ts'));
  const id = name.replace(/-/g, '_');
  for (const f of readdirSync(dir)) {
    let text = readFileSync(path.join(dir, f), 'utf8')
      .replaceAll("'my-method'", `'${name}'`)
      .replaceAll('my_method_', `${id}_`)
      .replaceAll('MY_METHOD', id.toUpperCase());
    if (edit) text = edit(f, text);
    writeFileSync(path.join(dir, f), text);
  }
  return root;
}

function yaml(file: string, lines: Record<string, unknown>): string {
  writeFileSync(
    file,
    Object.entries(lines)
      .map(([k, v]) => `${k}: ${v}`)
      .join('\n') + '\n',
  );
  return file;
}

const lastLogits = (stdout: string) => JSON.parse(stdout.trim().split('\n').at(-1)!).logits_last as number[];
const maxDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

describe('method plug-ins in the CLI', () => {
  it('a template copy in PEFT_DIR: listed by `methods`, trains 2 steps, predicts with PSCP (its own flops()), its adapter reloads with --adapter, export merges it', async () => {
    const peft = templatePlugin('scale-demo');
    const listed = await cli(['methods'], peft);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/^finetuning_type\s+kind\s+peft_type\s+source$/m);
    expect(listed.stdout).toMatch(/^lora\s+built-in\s+LORA\s+peft\/lora \(bundled\)$/m);
    expect(listed.stdout).toMatch(/^vera\s+built-in\s+VERA\s+peft\/vera \(bundled\)$/m);
    expect(listed.stdout).toContain(`scale-demo`);
    expect(listed.stdout).toMatch(new RegExp(`^scale-demo\\s+plug-in\\s+SCALE_DEMO\\s+${path.join(peft, 'scale-demo').replace(/[/.]/g, '\\$&')}$`, 'm'));
    const plain = await cli(['methods']);
    expect(plain.stdout).not.toContain('scale-demo');

    const work = mkdtempSync(path.join(tmpdir(), 'ps-plugin-run-'));
    const out = path.join(work, 'out');
    const config = yaml(path.join(work, 'train.yaml'), {
      model_name_or_path: storiesDir(),
      finetuning_type: 'scale-demo',
      scale_demo_target: 'q_proj,v_proj,down_proj',
      dataset: data,
      template: 'default',
      cutoff_len: 64,
      output_dir: out,
      per_device_train_batch_size: 2,
      learning_rate: 0.05,
      lr_scheduler_type: 'constant',
      max_steps: 2,
      logging_steps: 1,
      save_steps: 100,
      ...predict,
    });
    const t = await cli(['train', config], peft);
    expect(t.code, t.stderr).toBe(0);
    expect(t.stderr).toMatch(/scale-demo: 800 trainable/); // 5 layers × (q 64 + v 32 + down 64)
    expect(JSON.parse(t.stdout)).toMatchObject({ global_step: 2, trainable_params: 5 * (64 + 32 + 64) });
    // PSCP from the plug-in's flops(): one multiply per output of each target per token, 512 · 800 on the 1×512 probe.
    const res = JSON.parse(readFileSync(path.join(out, 'predict_results.json'), 'utf8'));
    expect(res.predict_samples).toBe(2);
    expect(res.tflops_extra * 1e12).toBeCloseTo(512 * 800, 3);
    expect(res.pscp).toBeGreaterThanOrEqual(0);
    expect(readFileSync(path.join(out, 'generated_predictions.jsonl'), 'utf8').trim().split('\n')).toHaveLength(2);
    const ac = JSON.parse(readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(ac).toMatchObject({ peft_type: 'SCALE_DEMO', target_modules: ['down_proj', 'q_proj', 'v_proj'] });

    // Without PEFT_DIR the train config names a method that is not installed.
    const missing = await cli(['train', config, 'overwrite_output_dir=true']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/finetuning_type: 'scale-demo' is not one of .*lora/);

    const text = 'Once upon a time';
    const withAdapter = await cli(['logits', '--model', storiesDir(), '--adapter', out, '--text', text], peft);
    expect(withAdapter.code, withAdapter.stderr).toBe(0);
    const noPlugin = await cli(['logits', '--model', storiesDir(), '--adapter', out, '--text', text]);
    expect(noPlugin.code).toBe(2);
    expect(noPlugin.stderr).toMatch(/No method here loads adapters of peft_type 'SCALE_DEMO'/);
    const base = await cli(['logits', '--model', storiesDir(), '--text', text]);
    expect(maxDiff(lastLogits(withAdapter.stdout), lastLogits(base.stdout))).toBeGreaterThan(1e-3);

    const merged = path.join(work, 'merged');
    const x = await cli(['export', config, `export_dir=${merged}`], peft);
    expect(x.code, x.stderr).toBe(0);
    const m = await cli(['logits', '--model', merged, '--text', text]);
    expect(m.code, m.stderr).toBe(0);
    expect(maxDiff(lastLogits(m.stdout), lastLogits(withAdapter.stdout))).toBeLessThan(1e-4);
    // Seven CLI runs (one with do_predict): 120 s is not enough on a loaded 2-core machine.
  }, 300_000);

  it('a kernel that does not compile stops every command with the WGSL compiler message, file and line', async () => {
    const peft = templatePlugin('broken-kernel', (f, text) =>
      f === 'kernel.wgsl' ? text.replace('dst[i] = a[i] * (1.0 + b[i % p.C]);', 'dst[i] = a[i] * (1.0 + b[i % p.C]) + not_declared;') : text,
    );
    const line =
      readFileSync(path.join(peft, 'broken-kernel', 'kernel.wgsl'), 'utf8')
        .split('\n')
        .findIndex((l) => l.includes('not_declared')) + 1;
    const r = await cli(['methods'], peft);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`WGSL in ${path.join(peft, 'broken-kernel', 'kernel.wgsl')} does not compile`);
    expect(r.stderr).toMatch(new RegExp(`line ${line}:\\d+: .*not_declared`));
    const l = await cli(['logits', '--model', storiesDir(), '--text', 'x'], peft);
    expect(l.code).toBe(2);
    expect(l.stderr).toContain('does not compile');
  });

  it('in-process with an engine, kernels are compiled before anything is installed: one broken kernel installs nothing', async () => {
    const e = await gpuEngine();
    const good = templatePlugin('kernel-good');
    const bad = templatePlugin('kernel-bad', (f, text) => (f === 'kernel.wgsl' ? text.replace('var acc = 0.0;', 'var acc: u32 = 0.0;') : text));
    const before = installedMethods().length;
    const err = await loadPlugins({ peftDir: `${good}${path.delimiter}${bad}`, engine: e, warn: () => {} }).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(PluginError);
    expect((err as Error).message).toMatch(/A method plug-in has a problem:\n  - WGSL in \S+kernel-bad\/kernel\.wgsl does not compile:\n\s+line \d+:\d+: /);
    expect(installedMethods().length).toBe(before);
    const ok = await loadPlugins({ peftDir: good, engine: e, warn: () => {} });
    expect(ok.installed.map((m) => m.name)).toEqual(['kernel-good']);
  });

  it('peft/vera in PEFT_DIR loads as a plug-in: as it is, its only problem is the name of the bundled copy; renamed, it trains through the CLI', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'ps-vera-'));
    cpSync(path.resolve('peft/vera'), path.join(root, 'vera'), { recursive: true });
    const r = await cli(['methods'], root);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('A method plug-in has a problem:');
    expect(r.stderr).toContain(`${path.join(root, 'vera')}: method 'vera' collides with the built-in method 'vera' from peft/vera`);
    expect(r.stderr.match(/^\s+- /gm)?.length).toBe(1);

    // The same code under another name (method, group and option keys renamed): a working plug-in.
    const peft = mkdtempSync(path.join(tmpdir(), 'ps-vera-plugin-'));
    const dir = path.join(peft, 'vera-plugin');
    cpSync(path.resolve('peft/vera'), dir, { recursive: true });
    rmSync(path.join(dir, 'vera.test.ts'));
    for (const f of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
      const text = readFileSync(path.join(dir, f), 'utf8')
        .replaceAll("'vera'", "'vera-plugin'")
        .replace(/\bvera_(rank|target|dropout|d_initial|projection_prng_key|save_projection)\b/g, 'veraplug_$1');
      writeFileSync(path.join(dir, f), text);
    }
    const work = mkdtempSync(path.join(tmpdir(), 'ps-vera-run-'));
    const out = path.join(work, 'out');
    const config = yaml(path.join(work, 'train.yaml'), {
      model_name_or_path: storiesDir(),
      finetuning_type: 'vera-plugin',
      veraplug_rank: 16,
      dataset: data,
      template: 'default',
      cutoff_len: 64,
      output_dir: out,
      per_device_train_batch_size: 2,
      learning_rate: 0.02,
      max_steps: 2,
      logging_steps: 1,
      save_steps: 100,
      ...predict,
    });
    const t = await cli(['train', config], peft);
    expect(t.code, t.stderr).toBe(0);
    expect(JSON.parse(t.stdout).trainable_params).toBe(5 * (64 + 16 + 32 + 16));
    // VeRA's flops(): 2·r·(in + out) per token per target: 512 · 5 · 2 · 16 · ((64 + 64) + (64 + 32)).
    const res = JSON.parse(readFileSync(path.join(out, 'predict_results.json'), 'utf8'));
    expect(res.tflops_extra * 1e12).toBeCloseTo(512 * 5 * 2 * 16 * (128 + 96), 3);
    expect(res.pscp).toBeGreaterThanOrEqual(0);
    expect(JSON.parse(readFileSync(path.join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({
      peft_type: 'VERA',
      r: 16,
      target_modules: ['q_proj', 'v_proj'],
    });
  });

  it('configs name installed methods only: a path or URL as finetuning_type is an error listing the installed methods; no code runs', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'ps-evil-'));
    const evil = path.join(root, 'evil');
    cpSync(path.resolve('templates/method'), evil, { recursive: true });
    const mark = path.join(root, 'LOADED');
    writeFileSync(
      path.join(evil, 'method.ts'),
      `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(mark)}, 'x');\nexport default { name: 'evil', attach() {} };\n`,
    );
    const work = mkdtempSync(path.join(tmpdir(), 'ps-evil-run-'));
    for (const t of ['../../evil', evil, 'https://example.com/evil/method.js']) {
      const config = yaml(path.join(work, 'c.yaml'), {
        model_name_or_path: storiesDir(),
        finetuning_type: JSON.stringify(t),
        dataset: data,
        output_dir: path.join(work, 'o'),
      });
      const r = await cli(['train', config]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/finetuning_type: '.*' is not one of lora, .*vera/);
    }
    const r = await cli(['methods'], 'https://example.com/plugins');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/PEFT_DIR 'https:\/\/example\.com\/plugins' is a URL\. Methods are code/);
    expect(existsSync(mark)).toBe(false);
  });
});
