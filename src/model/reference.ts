/**
 * The whole LLaMA-family forward pass in float64 on the CPU: the reference
 * the WGSL model is tested against (nanoGPT-style: one readable function).
 * Weights use Hugging Face names; a `<linear>.bias` is applied when present
 * (qwen2 q/k/v, llama attention_bias / mlp_bias); lm_head falls back to the
 * embeddings when tied.
 */
import type { ModelConfig } from './config';
import { ropeInvFreq } from '../engine/ops/rope';

export type WeightMap = Map<string, ArrayLike<number>>;

/**
 * Where a float64 method reference (the bottleneck adapters') changes the
 * residual adds of a layer: given the sub-layer output h and the stream x
 * entering it, return the stream after the sub-layer. Default: x + h.
 */
export interface ReferenceHooks {
  attentionResidual?: (layer: number, h: Float64Array, x: Float64Array) => ArrayLike<number>;
  mlpResidual?: (layer: number, h: Float64Array, x: Float64Array) => ArrayLike<number>;
}

/** Logits [T, V] for one unpadded sequence. */
export function referenceForward(cfg: ModelConfig, w: WeightMap, ids: number[], hooks: ReferenceHooks = {}): Float64Array[] {
  const C = cfg.hiddenSize,
    D = cfg.headDim,
    Hq = cfg.numHeads,
    Hkv = cfg.numKvHeads;
  const T = ids.length,
    V = cfg.vocabSize;
  const get = (n: string) => {
    const t = w.get(n);
    if (!t) throw new Error(`reference: missing weight ${n}`);
    return t;
  };
  const emb = get('model.embed_tokens.weight');
  let x = ids.map((id) => Float64Array.from({ length: C }, (_, c) => emb[id * C + c]));

  const rms = (v: Float64Array, g: ArrayLike<number>) => {
    let ss = 0;
    for (const a of v) ss += a * a;
    const r = 1 / Math.sqrt(ss / v.length + cfg.rmsNormEps);
    return v.map((a, i) => a * r * g[i]);
  };
  const linear = (name: string, v: Float64Array, outF: number) => {
    const W = get(`${name}.weight`),
      b = w.get(`${name}.bias`);
    const inF = v.length;
    const out = new Float64Array(outF);
    for (let o = 0; o < outF; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) s += W[o * inF + i] * v[i];
      out[o] = s;
    }
    return out;
  };
  const invFreq = ropeInvFreq(D, cfg.ropeTheta, cfg.ropeScaling);
  const rope = (v: Float64Array, heads: number, pos: number) => {
    const out = v.slice();
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < D / 2; i++) {
        const a = pos * invFreq[i];
        const c = Math.cos(a),
          s = Math.sin(a);
        const x1 = v[h * D + i],
          x2 = v[h * D + i + D / 2];
        out[h * D + i] = x1 * c - x2 * s;
        out[h * D + i + D / 2] = x2 * c + x1 * s;
      }
    }
    return out;
  };

  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const q: Float64Array[] = [],
      k: Float64Array[] = [],
      v: Float64Array[] = [];
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
        const scores = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let s = 0; s <= t; s++) {
          let d = 0;
          for (let i = 0; i < D; i++) d += q[t][h * D + i] * k[s][kh * D + i];
          scores[s] = d / Math.sqrt(D);
          mx = Math.max(mx, scores[s]);
        }
        let z = 0;
        for (let s = 0; s <= t; s++) z += scores[s] = Math.exp(scores[s] - mx);
        for (let s = 0; s <= t; s++) {
          for (let i = 0; i < D; i++) att[h * D + i] += (scores[s] / z) * v[s][kh * D + i];
        }
      }
      const o = linear(`${p}.self_attn.o_proj`, att, C);
      x[t] = hooks.attentionResidual ? Float64Array.from(hooks.attentionResidual(l, o, x[t])) : x[t].map((a, i) => a + o[i]);
      const h2 = rms(x[t], get(`${p}.post_attention_layernorm.weight`));
      const g = linear(`${p}.mlp.gate_proj`, h2, cfg.intermediateSize);
      const u = linear(`${p}.mlp.up_proj`, h2, cfg.intermediateSize);
      const m = g.map((a, i) => (a / (1 + Math.exp(-a))) * u[i]);
      const d = linear(`${p}.mlp.down_proj`, m, C);
      x[t] = hooks.mlpResidual ? Float64Array.from(hooks.mlpResidual(l, d, x[t])) : x[t].map((a, i) => a + d[i]);
    }
  }
  const head = w.has('lm_head.weight') ? 'lm_head' : 'model.embed_tokens';
  return x.map((xt) => linear(head, rms(xt, get('model.norm.weight')), V));
}
