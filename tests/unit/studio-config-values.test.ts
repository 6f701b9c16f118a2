/** What the studio's config holds: the chosen method's options and the shared ones, never another method's (src/ui/config-form.ts configValues). */
import { describe, expect, test } from 'vitest';
import { builtinMethods, methodInfos } from '../../src/methods/registry';
import { configValues, defaultValues, invalidExperimentMessage, methodKeys, validateValues } from '../../src/ui/config-form';
import { compactConfig, encodeShareData, decodeShareData } from '../../src/run/share-link';
import { toYaml } from '../../src/config/yaml';

const base = () => defaultValues({ model_name_or_path: 'stories260K', dataset: 'sst2' });

describe('config values of the chosen method', () => {
  test('an option of a method left behind stays in the form but not in the config, its YAML or its link', () => {
    const infos = methodInfos();
    // VeRA's rank set, then LoRA chosen.
    const values = { ...base(), ...methodKeys('vera', infos), vera_rank: 7, ...methodKeys('lora', infos), lora_rank: 4 };
    const chosen = configValues(values, infos);
    expect(chosen.vera_rank).toBeUndefined();
    expect(chosen.lora_rank).toBe(4);
    const config = validateValues(chosen).config!;
    expect(config.lora_rank).toBe(4);
    expect(toYaml(config)).not.toMatch(/vera_rank/);
    expect(Object.keys(compactConfig(config))).not.toContain('vera_rank');
    expect(decodeShareData(encodeShareData(config)).config.vera_rank).not.toBe(7);
    // Back to VeRA: its value is still there.
    expect(configValues({ ...values, ...methodKeys('vera', infos) }, infos).vera_rank).toBe(7);
  });

  test("for every method, the config keeps its own form keys and the shared ones, and drops every other method's", () => {
    const infos = methodInfos();
    const owned = new Set(infos.flatMap((m) => m.options));
    const flags = new Set(infos.flatMap((m) => (m.select ? [m.select.key] : [])));
    for (const m of builtinMethods.keys()) {
      const values = { ...base(), ...methodKeys(m, infos) };
      const mine = new Set(infos.find((i) => i.name === m)!.options);
      const kept = new Set(Object.keys(configValues(values, infos)));
      for (const key of Object.keys(values)) {
        expect(kept.has(key), `${m}: ${key}`).toBe(!owned.has(key) || mine.has(key) || flags.has(key));
      }
      expect(validateValues(configValues(values, infos)).problems.get('finetuning_type'), m).toBeUndefined();
    }
  });

  test('an action blocked by an invalid experiment says which problems block it (Data: Preview did nothing)', () => {
    expect(invalidExperimentMessage(validateValues(base()), 'Previewing the data')).toBeNull();
    const msg = invalidExperimentMessage(validateValues({ ...base(), lora_rank: 0, learning_rate: 'fast' }), 'Previewing the data');
    expect(msg).toMatch(
      /^Previewing the data needs a valid experiment; it has 2 problems:\n {2}- learning_rate: expected a number.*\n {2}- lora_rank: 0 is out of range/s,
    );
    expect(msg).toMatch(/the Train screen lists them all\.$/);
  });
});
