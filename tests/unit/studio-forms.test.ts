/** The studio's schema-driven forms: problems land on their fields, method selection round-trips, counts ignore unrelated problems. */
import { describe, expect, test } from 'vitest';
import { allOptions } from '../../src/config/schema';
import { builtinMethods } from '../../src/methods/registry';
import { countConfig, defaultValues, groupMethods, methodGroups, methodKeys, methodOf, problemKey, validateValues } from '../../src/ui/config-form';
import { estimateTrainingBytes } from '../../src/ui/memory';

const base = () => defaultValues({ model_name_or_path: 'stories260K', dataset: 'sst2' });

describe('studio forms', () => {
  test('defaults validate, and each problem is filed under its key', () => {
    expect(validateValues(base()).config).not.toBeNull();
    const v = validateValues({ ...base(), lora_rank: 0, learning_rate: 'fast', dataset: null });
    expect(v.config).toBeNull();
    expect(v.problems.get('lora_rank')?.[0]).toMatch(/lora_rank: 0 is out of range/);
    expect(v.problems.get('learning_rate')?.[0]).toMatch(/learning_rate: expected a number/);
    const keys = new Set(allOptions().map((o) => o.key));
    expect(problemKey("Missing required key 'output_dir': ...", keys)).toBe('output_dir');
    expect(problemKey('Nothing to do: set do_train', keys)).toBe('');
  });

  test('selecting a method sets LLaMA-Factory flags that select it back', () => {
    for (const m of builtinMethods.keys()) {
      const values = { ...base(), ...methodKeys(m) };
      expect(methodOf(values), m).toBe(m);
      expect(validateValues(values).problems.get('finetuning_type'), m).toBeUndefined();
    }
    expect(methodKeys('qlora')).toMatchObject({ finetuning_type: 'lora', quantization_bit: 4 });
    expect(methodKeys('galore')).toMatchObject({ finetuning_type: 'full', use_galore: true });
  });

  test('every method folder is in one family or under Plug-ins; LoRA-family forms show the lora group', () => {
    const methods = [...builtinMethods.keys()];
    const grouped = groupMethods(methods);
    expect(grouped.flatMap((f) => f.methods).sort()).toEqual([...methods].sort());
    expect(methodGroups('dora', allOptions())).toContain('lora');
    expect(methodGroups('qlora', allOptions())).toEqual(expect.arrayContaining(['lora', 'quantization']));
    expect(methodGroups('lora', allOptions())).not.toContain('train');
  });

  test('the count config ignores problems outside the method (no dataset yet) but not inside it', () => {
    const values = { ...base(), dataset: null, learning_rate: -1 };
    expect(validateValues(values).config).toBeNull();
    expect(countConfig(values, allOptions())?.lora_rank).toBe(8);
    expect(countConfig({ ...values, lora_rank: 0 }, allOptions())).toBeNull();
  });

  test('the memory estimate: resident bytes, 12 bytes per trainable parameter, activations of all layers or (recomputing) of one', () => {
    const m = { repo: 'x', revision: 'main', modelType: 'llama', hiddenSize: 64, numLayers: 5, numHeads: 8, numKvHeads: 4, intermediateSize: 172, vocabSize: 512, maxPositionEmbeddings: 512, numParams: 260_000, loadMs: 0 };
    const stored = estimateTrainingBytes(m, { trainable: 1000, batch: 2, seq: 10 });
    expect(stored.weights).toBe(4 * (260_000 + 1000));
    expect(stored.trainable).toBe(12_000);
    const layer = 6 * 64 + 3 * 172 + 3 * 8 * 8 + 3 * 4 * 8;
    const head = 4 * 64 + 2 * 512;
    expect(stored.activations).toBe(Math.round(4 * 2 * 10 * (5 * (2 * layer + 2 + 16) + head) * (17 / 16)));
    expect(stored.total).toBe(stored.weights + stored.trainable + stored.activations);
    const recomputed = estimateTrainingBytes(m, { trainable: 1000, batch: 2, seq: 10, recompute: true, residentBytes: 123 });
    expect(recomputed.weights).toBe(123);
    expect(recomputed.activations).toBe(Math.round(4 * 2 * 10 * (5 * 64 + 2 * 64 + 2 * layer + 2 + 16 + head) * (17 / 16)));
    expect(recomputed.activations).toBeLessThan(stored.activations);
  });
});
