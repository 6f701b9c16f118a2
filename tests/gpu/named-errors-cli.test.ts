/**
 * Failures a user can cause end in one sentence and a non-zero exit, never a
 * stack trace or a hang, through the built CLI: output paths that cannot hold
 * files (/proc/<new> used to spin forever in Node's recursive mkdir; a file, a
 * path through a file, /sys), a YAML alias bomb, a cutoff_len that leaves no
 * trainable token (used to train on nothing with loss 0), logits that come out
 * NaN (used to print NaN and exit 0).
 */
import { describe, it, expect } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli } from '../helpers/cli';
import { storiesDir } from '../helpers/models';
import { parseSafetensors, serializeSafetensors } from '../../src/model/safetensors';
import { gpuEngine } from '../helpers/gpu';
import { ModelFormatError } from '../../src/errors';

const work = mkdtempSync(path.join(tmpdir(), 'ps-named-'));
const config = path.resolve('examples/stories260k_lora.yaml');
const model = `model_name_or_path=${storiesDir()}`;

function noTrace(r: { code: number; stderr: string }): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stderr).toMatch(/^peft-studio: /m);
}

describe('named errors through the CLI', () => {
  it('output_dir, export_dir and --out paths that cannot hold files: a sentence in about a second, no spin', async () => {
    const file = path.join(work, 'a-file');
    writeFileSync(file, 'x');
    for (const [dir, re] of [
      ['/proc/peft-studio-new', /output_dir \/proc\/peft-studio-new: cannot create the folder \/proc\/peft-studio-new: .*\(ENOENT\)/],
      ['/proc', /output_dir \/proc: files cannot be written in it/],
      [file, /output_dir .*a-file: it is a file, not a folder/],
      [path.join(file, 'x'), /output_dir .*a-file\/x: a part of the path is a file, not a folder/],
    ] as const) {
      const t0 = performance.now();
      const r = await runCli(['train', config, model, `output_dir=${dir}`, 'max_steps=1']);
      noTrace(r);
      expect(r.stderr).toMatch(re);
      expect(performance.now() - t0).toBeLessThan(60_000);
    }
    const x = await runCli(['export', config, model, `output_dir=${work}`, `export_dir=${path.join(file, 'm')}`]);
    noTrace(x);
    expect(x.stderr).toMatch(/export_dir .*a-file\/m: a part of the path is a file/);
    const out = await runCli(['logits', '--model', storiesDir(), '--text', 'x', '--out', '/proc/peft-studio-new/l.json']);
    noTrace(out);
    expect(out.stderr).toMatch(/--out \/proc\/peft-studio-new: cannot create the folder/);
  });

  it('a YAML alias bomb is refused by name', async () => {
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 8; i++)
      levels.push(
        `l${i}: &l${i} [${Array(10)
          .fill(i === 1 ? '*a' : `*l${i - 1}`)
          .join(',')}]`,
      );
    const f = path.join(work, 'bomb.yaml');
    writeFileSync(f, levels.join('\n') + '\nmodel_name_or_path: x\noutput_dir: o\n');
    const r = await runCli(['train', f]);
    noTrace(r);
    expect(r.stderr).toMatch(/bomb\.yaml: its YAML aliases \(\*name\) expand to too many values/);
  });

  it('a cutoff_len that leaves no trainable token stops before training', async () => {
    const r = await runCli(['train', config, model, `output_dir=${path.join(work, 'cut')}`, 'cutoff_len=1', 'max_steps=1']);
    noTrace(r);
    expect(r.stderr).toMatch(/No trainable tokens: after cutoff_len 1, none of the 12 training examples keeps a response token/);
  });

  it('NaN logits exit non-zero with NonFiniteOutputError naming the model', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ps-nan-model-'));
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(storiesDir(), f), path.join(dir, f));
    const st = parseSafetensors(readFileSync(path.join(storiesDir(), 'model.safetensors')), 'm', { copy: true });
    st.tensors.get('model.norm.weight')!.data[3] = Number.NaN;
    writeFileSync(path.join(dir, 'model.safetensors'), serializeSafetensors(new Map([...st.tensors].map(([k, t]) => [k, { shape: t.shape, data: t.data }]))));
    const r = await runCli(['logits', '--model', dir, '--text', 'Once upon a time']);
    noTrace(r);
    expect(r.stderr).toMatch(
      /logits: the model computed \d+ NaN and \d+ infinite logit\(s\) at the last position .* The weights \(or the adapter\) hold NaN\/Inf/,
    );
    expect(r.stdout).toBe('');
  });

  it('a tensor given the wrong number of values (an adapter or checkpoint of another rank) is a ModelFormatError naming the tensor', async () => {
    const e = await gpuEngine();
    const t = e.persist(e.zeros([4, 64], 'model.layers.0.self_attn.q_proj.lora_A'));
    expect(() => e.write(t, new Float32Array(8 * 64))).toThrow(ModelFormatError);
    expect(() => e.write(t, new Float32Array(8 * 64))).toThrow(
      /Tensor 'model\.layers\.0\.self_attn\.q_proj\.lora_A' \[4, 64\] holds 256 values, but 512 were given to it: .*made for another shape \(rank/,
    );
    t.dispose();
  });
});
