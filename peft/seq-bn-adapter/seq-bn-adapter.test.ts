/** seq-bn-adapter (Pfeiffer, SeqBnConfig) against METHODS.md §17: y = x + h + A(x + h) after the MLP. */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { randomWeights, tinyConfig } from '../../tests/helpers/models';
import { maxAbsDiff } from '../../tests/helpers/check-op';
import { seededRandom } from '../../src/model/generate';
import { modelFromWeights } from '../../src/model/load';
import { bottleneckSuite, logits, randomizeAdapter } from '../bn-adapter/bottleneck-suite';
import bn from '../bn-adapter/method';
import seq from './method';

bottleneckSuite({
  name: 'seq-bn-adapter',
  method: seq,
  storiesCount: 2900,
  smollmCount: 1_262_520,
  lr: 1e-2,
  variants: [
    {},
    { ln_before: true, init_weights: 'houlsby', non_linearity: 'leakyrelu' },
    // The library's residual_before_ln false: the adapter's residual is its input x + h (x counted twice).
    { residual_before_ln: false, ln_after: true, non_linearity: 'sigmoid' },
  ],
});

describe('seq-bn-adapter', () => {
  it('differs from a Houlsby adapter at the same point only by its input (x + h instead of h)', async () => {
    const e = await gpuEngine();
    const cfg = tinyConfig();
    const model = modelFromWeights(e, cfg, randomWeights(cfg, 3));
    const ids = [2, 9, 4, 30, 7];
    const pf = seq.attach({ e, model, config: { reduction_factor: 4 }, random: seededRandom(1) });
    randomizeAdapter(e, pf, 0.4, 2);
    const files = await pf.exportAdapter();
    const a = await logits(e, model, ids);
    pf.detach();
    // The same weights as a sequential adapter after the MLP that sees h (Houlsby placement, output point only).
    const hb = bn.attach({ e, model, config: { reduction_factor: 4, mh_adapter: false, non_linearity: 'relu' }, random: seededRandom(1) });
    hb.importAdapter(files);
    const b = await logits(e, model, ids);
    expect(maxAbsDiff(a, b)).toBeGreaterThan(1e-3);
    hb.detach();
    // …and original_ln_before: true turns it into exactly the Pfeiffer adapter.
    const same = bn.attach({
      e,
      model,
      config: { reduction_factor: 4, mh_adapter: false, non_linearity: 'relu', original_ln_before: true },
      random: seededRandom(1),
    });
    same.importAdapter(files);
    expect(Array.from(await logits(e, model, ids))).toEqual(Array.from(a));
    same.detach();
    model.dispose();
  });
});

describe('seq-bn-adapter FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('seq-bn-adapter: one insertion point per layer, 2·2·d·m per token', () => {
    expect(probe(seq).extra).toBe(TOKENS_LAYERS * 1024);
  });
});
