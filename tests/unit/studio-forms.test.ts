/** The studio's schema-driven forms: problems land on their fields, method selection round-trips, counts ignore unrelated problems. */
import { describe, expect, test } from 'vitest';
import { allOptions } from '../../src/config/schema';
import { builtinMethods, methodInfos } from '../../src/methods/registry';
import { countConfig, defaultValues, groupMethods, methodKeys, methodOf, problemKey, validateValues } from '../../src/ui/config-form';
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
    const infos = methodInfos();
    for (const m of builtinMethods.keys()) {
      const values = { ...base(), ...methodKeys(m, infos) };
      expect(methodOf(values, infos), m).toBe(m);
      expect(validateValues(values).problems.get('finetuning_type'), m).toBeUndefined();
      // Picking another method afterwards turns this one's flag off again.
      const back = { ...values, ...methodKeys(infos[0].name, infos) };
      expect(methodOf(back, infos), m).toBe(infos[0].name);
    }
    const flagged = infos.filter((i) => i.select);
    expect(flagged.length).toBeGreaterThan(0);
    for (const i of flagged) expect(methodKeys(i.name, infos)).toMatchObject({ finetuning_type: i.select!.finetuning_type, [i.select!.key]: i.select!.value });
  });

  test('every method is in exactly one family; its form lists only registered keys, its flag hidden', () => {
    const infos = methodInfos();
    const grouped = groupMethods(infos);
    expect(grouped.flatMap((f) => f.methods.map((m) => m.name)).sort()).toEqual(infos.map((i) => i.name).sort());
    const keys = new Set(allOptions().map((o) => o.key));
    for (const i of infos) {
      for (const k of i.options) expect(keys.has(k), `${i.name}: ${k}`).toBe(true);
      for (const k of i.required) expect(i.options, i.name).toContain(k);
      if (i.select) expect(i.options, i.name).not.toContain(i.select.key);
      expect(i.description.length, i.name).toBeGreaterThan(10);
    }
  });

  test('the count config ignores problems outside the method (no dataset yet) but not inside it', () => {
    const infos = methodInfos();
    const values = { ...base(), dataset: null, learning_rate: -1 };
    expect(validateValues(values).config).toBeNull();
    expect(countConfig(values, infos)?.lora_rank).toBe(8);
    expect(countConfig({ ...values, lora_rank: 0 }, infos)).toBeNull();
  });

  test('the memory estimate: resident bytes, 12 bytes per trainable parameter, activations of all layers or (recomputing) of one', () => {
    const m = {
      repo: 'x',
      revision: 'main',
      modelType: 'llama',
      hiddenSize: 64,
      numLayers: 5,
      numHeads: 8,
      numKvHeads: 4,
      intermediateSize: 172,
      vocabSize: 512,
      maxPositionEmbeddings: 512,
      numParams: 260_000,
      loadMs: 0,
    };
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
