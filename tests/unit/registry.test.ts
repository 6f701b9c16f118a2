import { describe, it, expect } from 'vitest';
import { builtinMethods, methodNameFor, resolveMethod } from '../../src/methods/registry';
import { validateConfig } from '../../src/config/schema';

describe('method registry', () => {
  it('finds every built-in method folder', () => {
    for (const m of ['lora', 'qlora', 'dora', 'pissa', 'oft', 'svft', 'full', 'galore']) expect(builtinMethods.has(m), m).toBe(true);
  });
  it('maps LLaMA-Factory flags to method folders', () => {
    expect(methodNameFor({ finetuning_type: 'lora', quantization_bit: 4 })).toBe('qlora');
    expect(methodNameFor({ finetuning_type: 'lora', use_dora: true })).toBe('dora');
    expect(methodNameFor({ finetuning_type: 'lora', pissa_init: true })).toBe('pissa');
    expect(methodNameFor({ finetuning_type: 'full', use_galore: true })).toBe('galore');
    expect(methodNameFor({ finetuning_type: 'lora', use_dora: false, quantization_bit: null })).toBe('lora');
    expect(methodNameFor({})).toBe('lora');
    expect(resolveMethod({ finetuning_type: 'oft' }).name).toBe('oft');
    expect(() => resolveMethod({ finetuning_type: 'nope' })).toThrow(/Available: .*lora/);
  });
  it('method options join the schema: OFT and SVFT keys validate, typos are named', () => {
    const base = { model_name_or_path: 'm', output_dir: 'o', dataset: 'd.jsonl' };
    expect(() => validateConfig({ ...base, finetuning_type: 'oft', oft_block_size: 32, oft_rank: 0 })).not.toThrow();
    expect(() => validateConfig({ ...base, finetuning_type: 'oft', oft_blok_size: 32 })).toThrow(/oft_block_size/);
  });
});
