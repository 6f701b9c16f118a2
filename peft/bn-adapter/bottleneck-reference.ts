/**
 * Test reference: the LLaMA forward in float64 (src/model/reference.ts, its
 * residual hooks) with bottleneck adapters inserted exactly as METHODS.md §17
 * writes them,
 * reading the adapter tensors by their exported Adapters-library keys. The
 * bottleneck tests compare the WGSL model with attached adapters against it,
 * so the placement (h vs x + h vs x), the residuals, ln_before/ln_after,
 * scaling and the export key layout are all checked independently of the
 * hook code.
 */
import { activationCpu } from '../../src/engine/ops/activation';
import type { HostTensor } from '../../src/methods/types';
import type { ModelConfig } from '../../src/model/config';
import { referenceForward, type WeightMap } from '../../src/model/reference';
import type { BnSettings } from './bottleneck';

type Vec = Float64Array<ArrayBufferLike>;

export function bottleneckReferenceForward(cfg: ModelConfig, w: WeightMap, ids: number[], s: BnSettings, adapter: Map<string, HostTensor>): Vec[] {
  const C = cfg.hiddenSize;
  const at = (n: string) => {
    const t = adapter.get(n);
    if (!t) throw new Error(`reference: the export has no ${n}`);
    return t.data;
  };
  const layerNorm = (v: Vec, g: ArrayLike<number>, b: ArrayLike<number>) => {
    const mu = v.reduce((a, x) => a + x, 0) / v.length;
    const varr = v.reduce((a, x) => a + (x - mu) ** 2, 0) / v.length;
    const r = 1 / Math.sqrt(varr + 1e-5);
    return v.map((x, i) => (x - mu) * r * g[i] + b[i]);
  };
  const affine = (W: ArrayLike<number>, b: ArrayLike<number> | undefined, v: Vec, outF: number) => {
    const out = new Float64Array(outF);
    for (let o = 0; o < outF; o++) {
      let acc = b ? b[o] : 0;
      for (let i = 0; i < v.length; i++) acc += W[o * v.length + i] * v[i];
      out[o] = acc;
    }
    return out;
  };
  const add = (a: Vec, b: Vec) => a.map((x, i) => x + b[i]);

  // One adapter module on input z: dropout is off (inference).
  const core = (prefix: string, z: Vec): Vec => {
    const zn = s.lnBefore ? layerNorm(z, at(`${prefix}.adapter_down.0.weight`), at(`${prefix}.adapter_down.0.bias`)) : z;
    const down = `${prefix}.adapter_down.${s.lnBefore ? 1 : 0}`;
    const m = adapter.get(`${down}.weight`)!.shape[0];
    const a = activationCpu(affine(at(`${down}.weight`), at(`${down}.bias`), zn, m), s.nonLinearity);
    const u = affine(at(`${prefix}.adapter_up.weight`), at(`${prefix}.adapter_up.bias`), Float64Array.from(a), C);
    const sc = s.scaling === 'channel' ? at(`${prefix}.scaling`) : null;
    return u.map((x, i) => x * (sc ? sc[i] : (s.scaling as number)));
  };
  const lnA = (prefix: string, v: Vec) => (s.lnAfter ? layerNorm(v, at(`${prefix}.adapter_norm_after.weight`), at(`${prefix}.adapter_norm_after.bias`)) : v);
  /** Layer output y for sub-layer output h and residual x (the model adds x). */
  const place = (prefix: string, h: Vec, x: Vec): Vec => {
    if (s.parallel) return add(add(x, h), lnA(prefix, core(prefix, x)));
    const z = s.originalLnBefore ? add(h, x) : h;
    const r = s.residualBeforeLn ? h : z;
    const o = core(prefix, z);
    const out = !s.lnAfter ? add(o, r) : s.adapterResidualBeforeLn ? lnA(prefix, add(o, r)) : add(lnA(prefix, o), r);
    return add(x, out);
  };

  return referenceForward(cfg, w, ids, {
    attentionResidual: s.mh ? (l, o, x) => place(`model.layers.${l}.attention_adapters.adapters.${s.adapterName}`, o, x) : undefined,
    mlpResidual: s.out ? (l, d, x) => place(`model.layers.${l}.output_adapters.adapters.${s.adapterName}`, d, x) : undefined,
  });
}
