import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors';
import {
  closest,
  ConfigValidationError,
  editDistance,
  effectiveEvalSteps,
  knownKeys,
  optionSpec,
  registerFinetuningType,
  registerOptions,
  validateConfig,
  type OptionSpec,
} from '../../src/config/schema';
import { loraOptions } from '../../peft/lora/config';
import { loraSettings } from '../../peft/lora/method';
// The method folders register their options and finetuning_type choices (the CLI and the worker import it too).
import '../../src/methods/registry';

const base = { model_name_or_path: 'stories260K', output_dir: 'out', dataset: 'data.jsonl' };

/** The problems of an invalid config (fails the test if it validates). */
function problems(raw: Record<string, unknown>): string[] {
  try {
    validateConfig(raw);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigValidationError);
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigValidationError).problems;
  }
  throw new Error('expected a ConfigValidationError');
}

describe('validateConfig: defaults', () => {
  it('fills HF / LLaMA-Factory defaults and keeps snake_case keys', () => {
    const c = validateConfig(base);
    // The config type is derived from the specs.
    const typed: [number, string[] | null, string | boolean | null, 'linear' | 'cosine' | 'constant' | 'constant_with_warmup', number | null, string | null] = [
      c.cutoff_len,
      c.dataset_task_ids,
      c.resume_from_checkpoint,
      c.lr_scheduler_type,
      c.max_samples,
      c.finetuning_type,
    ];
    expect(typed).toHaveLength(6);
    // @ts-expect-error cutoff_len is a number
    const wrong: string = c.cutoff_len;
    expect(wrong).toBe(2048);
    expect(c.model_name_or_path).toBe('stories260K');
    expect(c.finetuning_type).toBe('lora');
    expect(c.stage).toBe('sft');
    expect(c.cutoff_len).toBe(2048);
    expect(c.per_device_train_batch_size).toBe(8);
    expect(c.gradient_accumulation_steps).toBe(1);
    expect(c.learning_rate).toBe(5e-5);
    expect(c.weight_decay).toBe(0);
    expect([c.adam_beta1, c.adam_beta2, c.adam_epsilon]).toEqual([0.9, 0.999, 1e-8]);
    expect(c.num_train_epochs).toBe(3);
    expect(c.max_steps).toBe(-1);
    expect(c.lr_scheduler_type).toBe('linear');
    expect([c.warmup_ratio, c.warmup_steps]).toEqual([0, 0]);
    expect([c.logging_steps, c.save_steps, c.eval_steps]).toEqual([10, 500, null]);
    expect(c.seed).toBe(42);
    expect(c.max_grad_norm).toBe(1);
    expect([c.do_train, c.do_eval, c.do_predict, c.predict_with_generate]).toEqual([true, false, false, false]);
    expect([c.packing, c.train_on_prompt, c.val_size, c.max_samples, c.template]).toEqual([false, false, 0, null, null]);
    expect(c.resume_from_checkpoint).toBeNull();
    expect(c.endpoint).toBe('https://huggingface.co');
    expect([c.lora_rank, c.lora_alpha, c.lora_dropout]).toEqual([8, null, 0]);
    expect(c.lora_target).toEqual(['all']);
    expect([c.use_rslora, c.use_dora, c.pissa_init, c.pissa_iter]).toEqual([false, false, false, 16]);
    expect([c.quantization_bit, c.quantization_type, c.double_quantization]).toEqual([null, 'nf4', true]);
    expect([c.use_galore, c.galore_rank, c.galore_update_interval, c.galore_scale, c.galore_proj_type]).toEqual([false, 16, 200, 2, 'std']);
    expect(c.galore_target).toEqual(['all']);
  });

  it('resolves unset lora_alpha to 2 × rank and unset eval_steps to logging_steps', () => {
    const c = validateConfig({ ...base, lora_rank: 16 });
    expect(loraSettings(c).alpha).toBe(32);
    expect(loraSettings(validateConfig({ ...base, lora_alpha: 8 })).alpha).toBe(8);
    expect(effectiveEvalSteps(c)).toBe(10);
    expect(effectiveEvalSteps(validateConfig({ ...base, eval_steps: 25 }))).toBe(25);
  });

  it('accepts lists as comma-separated strings or YAML lists', () => {
    expect(validateConfig({ ...base, lora_target: 'q_proj, v_proj' }).lora_target).toEqual(['q_proj', 'v_proj']);
    expect(validateConfig({ ...base, lora_target: ['k_proj', 'down_proj'] }).lora_target).toEqual(['k_proj', 'down_proj']);
    expect(problems({ ...base, lora_target: '' })[0]).toMatch(/^lora_target: the list is empty/);
    expect(problems({ ...base, lora_target: [1, 2] })[0]).toMatch(/^lora_target: expected a list of names/);
  });

  it('takes resume_from_checkpoint as a flag, a path or null', () => {
    expect(validateConfig({ ...base, resume_from_checkpoint: true }).resume_from_checkpoint).toBe(true);
    expect(validateConfig({ ...base, resume_from_checkpoint: 'out/checkpoint-500' }).resume_from_checkpoint).toBe('out/checkpoint-500');
    expect(validateConfig({ ...base, resume_from_checkpoint: null }).resume_from_checkpoint).toBeNull();
    expect(problems({ ...base, resume_from_checkpoint: 5 })[0]).toMatch(/expected a string or true\/false or null, got the number 5/);
  });

  it('takes val_size and save_steps as a fraction below 1 or a whole count', () => {
    expect(validateConfig({ ...base, val_size: 0.1 }).val_size).toBe(0.1);
    expect(validateConfig({ ...base, val_size: 100 }).val_size).toBe(100);
    expect(validateConfig({ ...base, save_steps: 0.05, logging_steps: 5 }).save_steps).toBe(0.05);
    expect(problems({ ...base, val_size: 1.5 })).toEqual(['val_size: 1.5 is neither a fraction below 1 nor a whole count (an integer ≥ 1).']);
    expect(problems({ ...base, val_size: -0.1 })).toEqual(['val_size: -0.1 is out of range; it must be ≥ 0 and ≤ 1e9.']);
    expect(problems({ ...base, save_steps: 0 })).toEqual(['save_steps: 0 is out of range; it must be > 0 and ≤ 1e9.']);
  });
});

describe('validateConfig: problems', () => {
  it("base_dtype / torch_dtype take transformers' and PyTorch's spellings (torch.bfloat16, bf16, half) as the dtype they name", () => {
    expect(validateConfig({ ...base, torch_dtype: 'torch.bfloat16' }).torch_dtype).toBe('bfloat16');
    expect(validateConfig({ ...base, torch_dtype: 'torch.float16' }).torch_dtype).toBe('float16');
    expect(validateConfig({ ...base, base_dtype: 'bf16' }).base_dtype).toBe('bfloat16');
    expect(validateConfig({ ...base, base_dtype: 'half', torch_dtype: 'torch.half' }).base_dtype).toBe('float16');
    expect(validateConfig({ ...base, base_dtype: 'fp32' }).base_dtype).toBe('float32');
    expect(problems({ ...base, base_dtype: 'bfloat16', torch_dtype: 'torch.float16' })).toEqual([
      "base_dtype: 'bfloat16' and torch_dtype: 'float16' disagree; set one of them.",
    ]);
    expect(problems({ ...base, torch_dtype: 'torch.int8' })[0]).toMatch(/^torch_dtype: 'torch\.int8' is not one of auto, float32, float16, bfloat16\./);
  });

  it('names an unknown key and the closest known one', () => {
    expect(problems({ ...base, learnig_rate: 1e-4 })).toEqual(["Unknown key 'learnig_rate' — did you mean 'learning_rate'?"]);
    expect(problems({ ...base, lora_rnak: 4 })).toEqual(["Unknown key 'lora_rnak' — did you mean 'lora_rank'?"]);
    expect(problems({ ...base, banana: 1 })[0]).toBe("Unknown key 'banana'. It is not a PEFT Studio or LLaMA-Factory option; remove it.");
  });

  it('names the key, the value and the expected type', () => {
    expect(problems({ ...base, learning_rate: 'fast' })).toEqual(['learning_rate: expected a number, got the string "fast".']);
    expect(problems({ ...base, learning_rate: '1e-4' })).toEqual(['learning_rate: expected a number, got the string "1e-4". Write the number without quotes.']);
    expect(problems({ ...base, cutoff_len: 512.5 })).toEqual(['cutoff_len: expected an integer, got the number 512.5.']);
    expect(problems({ ...base, packing: 'yes' })).toEqual(['packing: expected true or false, got the string "yes". Write true or false without quotes.']);
    expect(problems({ ...base, output_dir: 42 })).toEqual(['output_dir: expected a string, got the number 42. Quote it in YAML if it is a name.']);
    expect(problems({ ...base, seed: null })).toEqual(['seed: must be set (expected an integer), got null.']);
    expect(problems({ ...base, lora_rank: [8] })).toEqual(['lora_rank: expected an integer, got the list [8].']);
  });

  it('names the key, the value and the allowed range', () => {
    expect(problems({ ...base, cutoff_len: 0 })).toEqual(['cutoff_len: 0 is out of range; it must be ≥ 1 and ≤ 131072.']);
    expect(problems({ ...base, adam_beta1: 1 })).toEqual(['adam_beta1: 1 is out of range; it must be ≥ 0 and < 1.']);
    expect(problems({ ...base, lora_dropout: 1 })).toEqual(['lora_dropout: 1 is out of range; it must be ≥ 0 and < 1.']);
    expect(problems({ ...base, warmup_ratio: 1.5 })).toEqual(['warmup_ratio: 1.5 is out of range; it must be ≥ 0 and ≤ 1.']);
    expect(problems({ ...base, quantization_bit: 8 })).toEqual(['quantization_bit: 8 is out of range; it must be ≥ 4 and ≤ 4.']);
    expect(problems({ ...base, max_steps: -2 })).toEqual(['max_steps: -2 is out of range; it must be ≥ -1 and ≤ 1e9.']);
  });

  it('lists the choices of an enum', () => {
    expect(problems({ ...base, lr_scheduler_type: 'cosin' })).toEqual([
      "lr_scheduler_type: 'cosin' is not one of linear, cosine, constant, constant_with_warmup. Did you mean 'cosine'?",
    ]);
    const [t] = problems({ ...base, template: 'llama3' });
    expect(t).toMatch(/^template: 'llama3' is not one of default, alpaca, empty, chat\. .*use 'chat'/);
    const [f] = problems({ ...base, finetuning_type: 'my-method' });
    // The choices are the installed method folders, in list order (PeftMethod.order).
    expect(f).toMatch(
      /^finetuning_type: 'my-method' is not one of lora, qlora, dora, pissa, vera, oft, full, svft, galore, prompt-tuning, prefix-tuning, p-tuning-v2, p-tuning, mtp, bn-adapter, seq-bn-adapter, par-adapter, ia3, lntuning, bitfit\./,
    );
  });

  it('names missing required keys', () => {
    const p = problems({ dataset: 'x.jsonl' });
    expect(p).toHaveLength(2);
    expect(p[0]).toMatch(/^Missing required key 'model_name_or_path': /);
    expect(p[1]).toMatch(/^Missing required key 'output_dir': /);
  });

  it('reports every problem at once, one per line', () => {
    const raw = { model_name_or_path: 'm', learnig_rate: 1e-4, cutoff_len: -5, packing: 1, lr_scheduler_type: 'cosine_annealing' };
    const p = problems(raw);
    expect(p).toEqual([
      "Unknown key 'learnig_rate' — did you mean 'learning_rate'?",
      'cutoff_len: -5 is out of range; it must be ≥ 1 and ≤ 131072.',
      'packing: expected true or false, got the number 1.',
      expect.stringMatching(/^Missing required key 'output_dir'/),
      "lr_scheduler_type: 'cosine_annealing' is not one of linear, cosine, constant, constant_with_warmup.",
    ]);
    let message = '';
    try {
      validateConfig(raw, 'train.yaml');
    } catch (e) {
      message = (e as Error).message;
    }
    const lines = message.split('\n');
    expect(lines[0]).toBe('train.yaml: 5 problems in the config:');
    expect(lines.slice(1)).toEqual(p.map((x) => `  - ${x}`));
  });

  it('checks options against each other once each is valid', () => {
    expect(problems({ ...base, dataset: null })).toEqual([expect.stringMatching(/^dataset: required when do_train is true/)]);
    expect(problems({ ...base, use_galore: true })).toEqual(["use_galore: GaLore is an optimizer for finetuning_type: full, not 'lora'."]);
    expect(validateConfig({ ...base, use_galore: true, finetuning_type: 'full' }).use_galore).toBe(true);
    expect(problems({ ...base, quantization_bit: 4, finetuning_type: 'ia3' })[0]).toMatch(
      /^quantization_bit: a quantized base model trains only with QLoRA \(finetuning_type lora\), not 'ia3'/,
    );
    expect(problems({ ...base, quantization_bit: 4, use_dora: true })).toEqual([
      expect.stringMatching(/^quantization_bit: quantization_bit and use_dora each select a method \(qlora, dora\); they do not combine/),
    ]);
    expect(problems({ ...base, finetuning_type: 'prefix-tuning' })).toEqual([expect.stringMatching(/^num_virtual_tokens: required by Prefix tuning\./)]);
    expect(problems({ ...base, eval_strategy: 'steps' })[0]).toMatch(/^eval_strategy: 'steps' needs validation data/);
    expect(validateConfig({ ...base, eval_strategy: 'steps', val_size: 0.1 }).eval_strategy).toBe('steps');
  });

  it('accepts the keys of a PEFT-Factory example config', () => {
    const c = validateConfig({
      seed: 1,
      model_name_or_path: 'meta-llama/Meta-Llama-3-8B-Instruct',
      trust_remote_code: true,
      flash_attn: 'auto',
      use_cache: false,
      stage: 'sft',
      do_train: true,
      finetuning_type: 'lora',
      lora_rank: 16,
      lora_alpha: 16,
      lora_dropout: 0.05,
      lora_target: 'k_proj,v_proj,down_proj',
      dataset: 'sst2',
      template: 'chat',
      cutoff_len: 2048,
      overwrite_cache: true,
      preprocessing_num_workers: 8,
      dataloader_num_workers: 2,
      packing: false,
      output_dir: 'out',
      logging_steps: 5,
      save_steps: 0.05,
      overwrite_output_dir: true,
      save_only_model: false,
      plot_loss: true,
      include_num_input_tokens_seen: true,
      load_best_model_at_end: true,
      save_total_limit: 1,
      per_device_train_batch_size: 4,
      learning_rate: 5e-5,
      num_train_epochs: 10.0,
      weight_decay: 1e-5,
      lr_scheduler_type: 'cosine',
      bf16: true,
      ddp_timeout: 180000000,
      resume_from_checkpoint: null,
      warmup_ratio: 0.1,
      optim: 'adamw_torch',
      report_to: ['wandb'],
      run_name: 'x',
      per_device_eval_batch_size: 4,
      eval_strategy: 'steps',
      eval_steps: 0.05,
      val_size: 0.1,
    });
    expect(c.lora_target).toEqual(['k_proj', 'v_proj', 'down_proj']);
    expect(c.report_to).toEqual(['wandb']);
  });
});

describe('option registry', () => {
  it('registers a method group and its finetuning_type', () => {
    const specs: OptionSpec[] = [
      { key: 'my_virtual_tokens', type: 'int', default: 20, min: 1, help: 'Virtual tokens.', group: 'my-method' },
      { key: 'my_prompt_init', type: 'enum', default: 'RANDOM', choices: ['RANDOM', 'TEXT'], help: 'Init.', group: 'my-method' },
    ];
    registerOptions('my-method', specs);
    registerFinetuningType('my-method');
    expect(knownKeys()).toContain('my_virtual_tokens');
    const c = validateConfig({ ...base, finetuning_type: 'my-method', my_virtual_tokens: 100 });
    expect(c.my_virtual_tokens).toBe(100);
    expect(c.my_prompt_init).toBe('RANDOM');
    expect(problems({ ...base, my_virtual_token: 1 })).toEqual(["Unknown key 'my_virtual_token' — did you mean 'my_virtual_tokens'?"]);
    expect(problems({ ...base, my_virtual_tokens: 0 })).toEqual(['my_virtual_tokens: 0 is out of range; it must be ≥ 1 and ≤ 1e9.']);
  });

  it("lets a method folder replace its own options but not take another group's", () => {
    registerOptions('lora', loraOptions);
    expect(optionSpec('lora_dropout')!.max).toBe(1);
    expect(optionSpec('lora_dropout')!.exclusiveMax).toBe(true);
    expect(() => registerOptions('mine', [{ key: 'learning_rate', type: 'float', default: 1, help: 'x', group: 'mine' }])).toThrow(
      /already defined by group 'train'/,
    );
    expect(() => registerOptions('mine', [{ key: 'x_y', type: 'float', default: 1, help: 'x', group: 'other' }])).toThrow(/declares group 'other'/);
    expect(() => registerOptions('mine', [{ key: 'bad_default', type: 'int', default: 0.5, help: 'x', group: 'mine' }])).toThrow(
      /Default of option 'bad_default' is invalid/,
    );
    expect(() => registerFinetuningType('Bad Name')).toThrow(ConfigError);
  });
});

describe('closest key', () => {
  it('is the Levenshtein nearest within a third of the length', () => {
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(editDistance('', 'abc')).toBe(3);
    expect(closest('learnig_rate', ['learning_rate', 'lora_rank'])).toBe('learning_rate');
    expect(closest('seedz', ['seed', 'stage'])).toBe('seed');
    expect(closest('completely_different', ['seed'])).toBeUndefined();
  });
});

describe('numeric bounds', () => {
  it('every numeric option of the bundled methods and the schema declares a maximum; numbers beyond it are refused', async () => {
    const { builtinOptions } = await import('../../src/config/schema');
    const folders = import.meta.glob<Record<string, unknown>>('../../peft/*/config.ts', { eager: true });
    const { sharedOptions } = await import('../../src/methods/options');
    const specs: OptionSpec[] = [
      ...builtinOptions,
      ...sharedOptions,
      ...Object.values(folders).flatMap((m) => Object.values(m).filter(Array.isArray).flat() as OptionSpec[]),
    ];
    expect(specs.length).toBeGreaterThan(100);
    const unbounded = specs.filter((s) => (s.type === 'int' || s.type === 'float') && s.max === undefined).map((s) => `${s.group}.${s.key}`);
    expect(unbounded).toEqual([]);
    for (const key of ['cutoff_len', 'per_device_train_batch_size', 'max_steps', 'galore_rank', 'lora_rank', 'gradient_accumulation_steps', 'max_new_tokens']) {
      const p = problems({ ...base, [key]: 1e12 });
      expect(p).toHaveLength(1);
      expect(p[0]).toMatch(new RegExp(`^${key}: 1000000000000 is out of range; it must be .* and ≤ `));
    }
    // A spec without max (a plug-in's) is still bounded.
    registerOptions('bounded-demo', [{ key: 'bounded_demo_x', type: 'float', default: 0, help: 'x', group: 'bounded-demo' }]);
    expect(problems({ ...base, bounded_demo_x: 1e300 })).toEqual(['bounded_demo_x: 1e+300 is out of range; it must be ≥ -1e9 and ≤ 1e9.']);
  });
});
