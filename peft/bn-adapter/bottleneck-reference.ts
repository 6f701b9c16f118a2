/**
 * Test reference: the LLaMA forward in float64 (as src/model/reference.ts)
 * with bottleneck adapters inserted exactly as METHODS.md §17 writes them,
 * reading the adapter tensors by their exported Adapters-library keys. The
 * bottleneck tests compare the WGSL model with attached adapters against it,
 * so the placement (h vs x + h vs x), the residuals, ln_before/ln_after,
 * scaling and the export key layout are all checked independently of the
 * hook code.
 */
import { activationCpu } from '../../src/engine/ops/activation';
import { ropeInvFreq } from '../../src/engine/ops/rope';
import type { HostTensor } from '../../src/methods/types';
import type { ModelConfig } from '../../src/model/config';
import type { WeightMap } from '../../src/model/reference';
import type { BnSettings } from './bottleneck';

type Vec = Float64Array<ArrayBufferLike>;

export function bottleneckReferenceForward(cfg: ModelConfig, w: WeightMap, ids: number[], s: BnSettings, adapter: Map<string, HostTensor>): Vec[] {
  const C = cfg.hiddenSize, D = cfg.headDim, Hq = cfg.numHeads, Hkv = cfg.numKvHeads, V = cfg.vocabSize, T = ids.length;
  const get = (n: string) => {
    const t = w.get(n);
    if (!t) throw new Error(`reference: missing weight ${n}`);
    return t;
  };
  const at = (n: string) => {
    const t = adapter.get(n);
    if (!t) throw new Error(`reference: the export has no ${n}`);
    return t.data;
  };
  const rms = (v: Vec, g: ArrayLike<number>) => {
    let ss = 0;
    for (const a of v) ss += a * a;
    const r = 1 / Math.sqrt(ss / v.length + cfg.rmsNormEps);
    return v.map((a, i) => a * r * g[i]);
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
  const linear = (name: string, v: Vec, outF: number) => affine(get(`${name}.weight`), w.get(`${name}.bias`), v, outF);
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

  const emb = get('model.embed_tokens.weight');
  const x: Vec[] = ids.map((id) => Float64Array.from({ length: C }, (_, c) => emb[id * C + c]));
  const invFreq = ropeInvFreq(D, cfg.ropeTheta, cfg.ropeScaling);
  const rope = (v: Vec, heads: number, pos: number) => {
    const out = v.slice();
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < D / 2; i++) {
        const c = Math.cos(pos * invFreq[i]), sn = Math.sin(pos * invFreq[i]);
        const x1 = v[h * D + i], x2 = v[h * D + i + D / 2];
        out[h * D + i] = x1 * c - x2 * sn;
        out[h * D + i + D / 2] = x2 * c + x1 * sn;
      }
    }
    return out;
  };
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const pre = (point: string) => `${p}.${point}.adapters.${s.adapterName}`;
    const q: Vec[] = [], k: Vec[] = [], v: Vec[] = [];
    for (let t = 0; t < T; t++) {
      const h = rms(x[t], get(`${p}.input_layernorm.weight`));
      q.push(rope(linear(`${p}.self_attn.q_proj`, h, Hq * D), Hq, t));
      k.push(rope(linear(`${p}.self_attn.k_proj`, h, Hkv * D), Hkv, t));
      v.push(linear(`${p}.self_attn.v_proj`, h, Hkv * D));
    }
    const group = Hq / Hkv;
    for (let t = 0; t < T; t++) {
      const att = new Float64Array(Hq * D);
      for (let h = 0; h < Hq; h++) {
        const kh = Math.floor(h / group);
        const sc = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let j = 0; j <= t; j++) {
          let dot = 0;
          for (let i = 0; i < D; i++) dot += q[t][h * D + i] * k[j][kh * D + i];
          sc[j] = dot / Math.sqrt(D);
          mx = Math.max(mx, sc[j]);
        }
        let z = 0;
        for (let j = 0; j <= t; j++) z += (sc[j] = Math.exp(sc[j] - mx));
        for (let j = 0; j <= t; j++) for (let i = 0; i < D; i++) att[h * D + i] += (sc[j] / z) * v[j][kh * D + i];
      }
      const o = linear(`${p}.self_attn.o_proj`, att, C);
      x[t] = s.mh ? place(pre('attention_adapters'), o, x[t]) : add(x[t], o);
      const h2 = rms(x[t], get(`${p}.post_attention_layernorm.weight`));
      const g = linear(`${p}.mlp.gate_proj`, h2, cfg.intermediateSize);
      const u = linear(`${p}.mlp.up_proj`, h2, cfg.intermediateSize);
      const d = linear(`${p}.mlp.down_proj`, g.map((a, i) => (a / (1 + Math.exp(-a))) * u[i]), C);
      x[t] = s.out ? place(pre('output_adapters'), d, x[t]) : add(x[t], d);
    }
  }
  const head = w.has('lm_head.weight') ? 'lm_head' : 'model.embed_tokens';
  return x.map((xt) => linear(head, rms(xt, get('model.norm.weight')), V));
}
