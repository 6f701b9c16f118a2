/** par-adapter (He et al., ParBnConfig) against METHODS.md §17: y = x + h + A(x) beside the MLP, scaling 4, mam init. */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories } from '../../tests/helpers/models';
import { seededRandom } from '../../src/model/generate';
import { bottleneckModuleParams, bottleneckSize, resolveBnSettings } from '../bn-adapter/bottleneck';
import { bottleneckSuite, logits } from '../bn-adapter/bottleneck-suite';
import par from './method';

bottleneckSuite({
  name: 'par-adapter',
  method: par,
  storiesCount: 2900,
  smollmCount: 1_262_520,
  lr: 1e-2,
  variants: [
    {},
    { ln_before: true, ln_after: true, non_linearity: 'gelu_new', scaling: 'channel' },
    // A parallel adapter at the attention point too: y = x + h + A(x) there as well.
    { mh_adapter: true, non_linearity: 'swish', scaling: 2.5 },
  ],
});

describe('par-adapter', () => {
  it('defaults: scaling 4.0, relu, mam_adapter; the fresh adapter is an exact no-op (base logits bit for bit)', async () => {
    expect(resolveBnSettings('par-adapter', {})).toMatchObject({ scaling: 4, nonLinearity: 'relu', init: 'mam_adapter', parallel: true, mh: false, out: true });
    const e = await gpuEngine();
    const model = await loadStories(e);
    const ids = [1, 403, 407, 261, 378];
    const base = await logits(e, model, ids);
    const m = par.attach({ e, model, config: {}, random: seededRandom(1) });
    expect(Array.from(await logits(e, model, ids))).toEqual(Array.from(base));
    m.detach();
    model.dispose();
  });

  it("the Adapters library's own ParBnConfig width (reduction_factor 2): 20 960 parameters on stories260K", async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = par.attach({ e, model, config: { reduction_factor: 2 }, random: seededRandom(1) });
    expect(m.trainable().reduce((a, p) => a + p.tensor.size, 0)).toBe(20_960);
    expect(5 * bottleneckModuleParams(64, bottleneckSize(64, 2))).toBe(20_960);
    m.detach();
    model.dispose();
  });
});

describe('par-adapter FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('par-adapter: one insertion point per layer, 2·2·d·m per token', () => {
    // reduction_factor 2: m = 32
    expect(probe(par, { reduction_factor: 2 }).extra).toBe(TOKENS_LAYERS * 4 * 64 * 32);
  });
});
