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

  test('the memory estimate: resident bytes, optimizer state, activations of all layers or (recomputing) of the largest one, and what the method says it keeps', () => {
    // Power-of-two shapes: every tensor is a whole pool size class, so bytes are 4 per value.
    const m = { hiddenSize: 64, numLayers: 5, numHeads: 8, numKvHeads: 4, headDim: 8, intermediateSize: 128, vocabSize: 512, numParams: 260_000 };
    const [B, S, L, C, F, V, Hq] = [4, 64, 5, 64, 128, 512, 8];
    const layer = 6 * C + 3 * F + 3 * 64 + 3 * 32; // forward outputs per position, each with a gradient
    const held = 2 * Hq + 2; // attention max / sum and two RMSNorm rstd: no gradient
    const head = C + 2 * C + 1 + 2 * V + 6; // embeddings, final norm and its gradient, its rstd, logits and gradient, ids / positions / mask / labels / loss / lse
    const bytes = (perToken: number, T = S) => 4 * B * T * perToken;

    const stored = estimateTrainingBytes(m, { trainable: 1000, batch: B, seq: S });
    expect(stored.weights).toBe(4 * (260_000 + 1000));
    expect(stored.trainable).toBe(12 * 1000);
    expect(stored.activations).toBe(bytes(L * (2 * layer + held) + head));
    expect(stored.total).toBe(stored.weights + stored.trainable + stored.activations);

    const recomputed = estimateTrainingBytes(m, { trainable: 1000, adamw: 600, batch: B, seq: S, recompute: true, residentBytes: 123 });
    expect(recomputed.weights).toBe(123);
    // Tensors that update themselves (GaLore) keep their state resident: a gradient only.
    expect(recomputed.trainable).toBe(4 * 1000 + 8 * 600);
    expect(recomputed.activations).toBe(bytes(L * C + 2 * C + 2 * layer + held + head));

    // A method's tensor in every layer counts L times stored, once recomputed; one in a single layer once either way.
    const everyLayer = { activations: Array.from({ length: L }, (_, l) => ({ layer: l, perToken: 16 })) };
    expect(estimateTrainingBytes(m, { trainable: 0, batch: B, seq: S, memory: everyLayer }).activations - stored.activations).toBe(L * bytes(2 * 16));
    const with2 = estimateTrainingBytes(m, { trainable: 0, batch: B, seq: S, recompute: true, memory: { activations: [{ layer: 2, perToken: 16 }] } });
    expect(with2.activations - recomputed.activations).toBe(bytes(2 * 16));
    // Outside the layers, per sequence or fixed, with or without a gradient; rounded up to the pool's size class (160 B → 256 B, 5000 B → 5120 B).
    const outside = estimateTrainingBytes(m, {
      trainable: 0,
      batch: B,
      seq: S,
      memory: { activations: [{ perSequence: 10, grad: false, count: 3 }, { fixed: 1250 }] },
    });
    expect(outside.activations - stored.activations).toBe(3 * 256 + 2 * 5120);

    // Scratch of the method's own update: on top of stored activations, past a recomputed step's peak.
    const scratch = { activations: [{ fixed: 1024, grad: false, update: true }] };
    expect(estimateTrainingBytes(m, { trainable: 0, batch: B, seq: S, memory: scratch }).activations - stored.activations).toBe(4096);
    expect(estimateTrainingBytes(m, { trainable: 0, batch: B, seq: S, recompute: true, memory: scratch }).activations).toBe(recomputed.activations);

    // Layers before the first trainable tensor keep their outputs without gradients.
    const late = estimateTrainingBytes(m, { trainable: 0, batch: B, seq: S, memory: { gradientFromLayer: 2 } });
    expect(stored.activations - late.activations).toBe(2 * bytes(layer));

    // Virtual tokens: the layers run on S + n positions; the model's input sequence and the real tokens sliced out of the output, with gradients.
    const n = 64;
    const virtual = estimateTrainingBytes(m, { trainable: 0, batch: B, seq: S, virtualTokens: n });
    expect(virtual.activations).toBe(bytes(L * (2 * layer + held), S + n) + bytes(head) + bytes(2 * C, S + n) + bytes(2 * C));
    // A key/value prefix of P rows: each layer concatenates P + S keys and values (4 Hkv·D-wide tensors with gradients) and a key mask.
    const P = 64;
    const prefix = estimateTrainingBytes(m, { trainable: 0, batch: B, seq: S, memory: { kvPrefixTokens: P } });
    expect(prefix.activations - stored.activations).toBe(L * bytes(4 * 32 + 1, S + P));
  });
});
