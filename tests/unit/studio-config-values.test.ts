/** What the studio's config holds: the chosen method's options and the shared ones, never another method's (src/ui/config-form.ts configValues). */
import { describe, expect, test } from 'vitest';
import { allOptions } from '../../src/config/schema';
import { builtinMethods } from '../../src/methods/registry';
import { configValues, defaultValues, methodGroups, methodKeys, validateValues } from '../../src/ui/config-form';
import { compactConfig, encodeShareData, decodeShareData } from '../../src/run/share-link';
import { toYaml } from '../../src/config/yaml';

const base = () => defaultValues({ model_name_or_path: 'stories260K', dataset: 'sst2' });

describe('config values of the chosen method', () => {
  test("an option of a method left behind stays in the form but not in the config, its YAML or its link", () => {
    const options = allOptions();
    // VeRA's rank set, then LoRA chosen.
    const values = { ...base(), ...methodKeys('vera'), vera_rank: 7, ...methodKeys('lora'), lora_rank: 4 };
    const chosen = configValues(values, options);
    expect(chosen.vera_rank).toBeUndefined();
    expect(chosen.lora_rank).toBe(4);
    const config = validateValues(chosen).config!;
    expect(config.lora_rank).toBe(4);
    expect(toYaml(config)).not.toMatch(/vera_rank/);
    expect(Object.keys(compactConfig(config))).not.toContain('vera_rank');
    expect(decodeShareData(encodeShareData(config)).config.vera_rank).not.toBe(7);
    // Back to VeRA: its value is still there.
    expect(configValues({ ...values, ...methodKeys('vera') }, options).vera_rank).toBe(7);
  });

  test("for every method, the config keeps exactly the shared groups and that method's own", () => {
    const options = allOptions();
    const shared = new Set(['model', 'method', 'dataset', 'output', 'train', 'eval', 'predict', 'compat']);
    const full = base();
    for (const m of builtinMethods.keys()) {
      const values = { ...full, ...methodKeys(m) };
      const mine = new Set(methodGroups(m, options));
      const kept = Object.keys(configValues(values, options));
      for (const o of options) {
        if (!(o.key in values)) continue;
        expect(kept.includes(o.key), `${m}: ${o.key} (${o.group})`).toBe(shared.has(o.group) || mine.has(o.group));
      }
      expect(validateValues(configValues(values, options)).problems.get('finetuning_type'), m).toBeUndefined();
    }
  });
});
