// Method folders register their options (lora_rank ...) and finetuning_type choices.
import '../../src/methods/registry';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors';
import { validateConfig } from '../../src/config/schema';
import { formatFloat, parseConfigText, toYaml } from '../../src/config/yaml';

const text = `### model
model_name_or_path: stories260K

### method
finetuning_type: lora
lora_rank: 16
lora_target: q_proj,v_proj

### dataset
dataset: data/train.jsonl
cutoff_len: 512

### output
output_dir: out/run1

### train
learning_rate: 1.0e-4
num_train_epochs: 2.0
lr_scheduler_type: cosine
`;

function errorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('parseConfigText', () => {
  it('reads a LLaMA-Factory style file', () => {
    const raw = parseConfigText(text, [], 'train.yaml');
    expect(raw).toEqual({
      model_name_or_path: 'stories260K',
      finetuning_type: 'lora',
      lora_rank: 16,
      lora_target: 'q_proj,v_proj',
      dataset: 'data/train.jsonl',
      cutoff_len: 512,
      output_dir: 'out/run1',
      learning_rate: 1e-4,
      num_train_epochs: 2,
      lr_scheduler_type: 'cosine',
    });
    expect(validateConfig(raw).lora_target).toEqual(['q_proj', 'v_proj']);
  });

  it('reads 5e-5 as a number (YAML 1.2) and an empty file as {}', () => {
    expect(parseConfigText('learning_rate: 5e-5\n', [], 'a.yaml')).toEqual({ learning_rate: 5e-5 });
    expect(parseConfigText('', [], 'a.yaml')).toEqual({});
    expect(parseConfigText('# only a comment\n', [], 'a.yaml')).toEqual({});
  });

  it('applies key=value overrides parsed as YAML scalars', () => {
    const raw = parseConfigText(
      text,
      ['learning_rate=3e-4', 'packing=true', 'template=', 'lora_target=[k_proj, v_proj]', 'run_name=a=b', 'seed=7'],
      'train.yaml',
    );
    expect(raw.learning_rate).toBe(3e-4);
    expect(raw.packing).toBe(true);
    expect(raw.template).toBeNull();
    expect(raw.lora_target).toEqual(['k_proj', 'v_proj']);
    expect(raw.run_name).toBe('a=b');
    expect(raw.seed).toBe(7);
    expect(validateConfig(raw).lora_target).toEqual(['k_proj', 'v_proj']);
  });

  it('refuses a malformed override', () => {
    expect(errorOf(() => parseConfigText('', ['learning_rate'], 'x')).message).toBe(
      "Override 'learning_rate' must have the form key=value (e.g. learning_rate=1e-4).",
    );
    expect(errorOf(() => parseConfigText('', ['=3'], 'x')).message).toMatch(/^Override '=3' must have the form key=value/);
    expect(errorOf(() => parseConfigText('', ['lora_target=[a, b'], 'x')).message).toMatch(/^Override 'lora_target=\[a, b': the value is not valid YAML/);
  });

  it('names the source and line of a YAML syntax error', () => {
    const e = errorOf(() => parseConfigText('model_name_or_path: m\noutput_dir: out\nlora_target: [q_proj, v_proj\ncutoff_len: 8\n', [], 'train.yaml'));
    expect(e.message).toMatch(/^train\.yaml, line 4, column 1: /);
    expect(e.message).toMatch(/Fix the YAML syntax of train\.yaml/);
    const tab = errorOf(() => parseConfigText('a: 1\nb:\n\t- 1\n', [], 'tabs.yaml'));
    expect(tab.message).toMatch(/^tabs\.yaml, line 3, column 1: Tabs are not allowed/);
  });

  it('refuses duplicate keys and a top level that is not a mapping', () => {
    expect(errorOf(() => parseConfigText('seed: 1\nseed: 2\n', [], 'dup.yaml')).message).toMatch(/^dup\.yaml, line 2, column 1: Map keys must be unique/);
    expect(errorOf(() => parseConfigText('- a\n- b\n', [], 'list.yaml')).message).toBe(
      'list.yaml, line 1: the top level must be a mapping of "key: value" lines, not a list.',
    );
    expect(errorOf(() => parseConfigText('\n\njust text\n', [], 'scalar.yaml')).message).toBe(
      'scalar.yaml, line 3: the top level must be a mapping of "key: value" lines, not a single value.',
    );
  });
});

describe('toYaml', () => {
  it('writes floats the way PyYAML reads them', () => {
    expect(formatFloat(3)).toBe('3.0');
    expect(formatFloat(5e-5)).toBe('0.00005');
    expect(formatFloat(1e-8)).toBe('1.0e-08');
    expect(formatFloat(2.5e-7)).toBe('2.5e-07');
    expect(formatFloat(1e21)).toBe('1.0e+21');
    expect(formatFloat(0.05)).toBe('0.05');
  });

  it('writes required keys, changed keys and the always-written ones under group headings', () => {
    const c = validateConfig(parseConfigText(text, [], 'train.yaml'));
    expect(toYaml(c)).toBe(
      [
        '### model',
        'model_name_or_path: stories260K',
        '',
        '### method',
        'stage: sft',
        'do_train: true',
        'finetuning_type: lora',
        '',
        '### dataset',
        'dataset: data/train.jsonl',
        'cutoff_len: 512',
        '',
        '### output',
        'output_dir: out/run1',
        'logging_steps: 10',
        '',
        '### train',
        'learning_rate: 0.0001',
        'num_train_epochs: 2.0',
        'lr_scheduler_type: cosine',
        '',
        '### lora',
        'lora_rank: 16',
        'lora_target: q_proj,v_proj',
        '',
      ].join('\n'),
    );
  });

  it('round-trips through parseConfigText and validateConfig', () => {
    const c = validateConfig({
      model_name_or_path: 'owner/model',
      output_dir: 'out dir/with: colon',
      dataset: 'sst2',
      run_name: 'true',
      adapter_name_or_path: '123',
      endpoint: 'http://127.0.0.1:8080',
      adam_epsilon: 1e-7,
      weight_decay: 1e-5,
      learning_rate: 2e-4,
      temperature: null,
      top_k: null,
      resume_from_checkpoint: true,
      lora_target: ['q_proj', 'k_proj'],
      report_to: 'wandb',
      val_size: 0.1,
      save_steps: 0.05,
      eval_steps: 20,
      eval_strategy: 'steps',
      packing: true,
      max_samples: 1000,
      num_train_epochs: 1.5,
      template: 'alpaca',
    });
    const yaml = toYaml(c);
    expect(yaml).toContain('run_name: "true"');
    expect(yaml).toContain('adam_epsilon: 1.0e-07');
    expect(yaml).toContain('weight_decay: 0.00001');
    expect(yaml).toContain('temperature: null');
    expect(yaml).toContain('eval_steps: 20\n');
    expect(validateConfig(parseConfigText(yaml, [], 'roundtrip.yaml'))).toEqual(c);
    const full = toYaml(c, { full: true });
    expect(full).toContain('lora_rank: 8');
    expect(full).toContain('trust_remote_code: false');
    expect(validateConfig(parseConfigText(full, [], 'full.yaml'))).toEqual(c);
  });

  it('writes multi-line and odd strings as quoted scalars that parse back', () => {
    const c = validateConfig({ model_name_or_path: 'm', output_dir: 'o', dataset: 'd', run_name: 'line one\nline two: "x" # y' });
    const yaml = toYaml(c);
    expect(validateConfig(parseConfigText(yaml, [], 'r.yaml')).run_name).toBe('line one\nline two: "x" # y');
  });
});
