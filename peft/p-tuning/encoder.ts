/**
 * P-tuning's prompt encoder (HF PEFT PromptEncoder, METHODS.md §15): the
 * prompt P [n_v, d] is a function of a trainable table X = embedding.weight
 * [n_v, d] (N(0, 1)), recomputed at every forward.
 *
 *   MLP:   P = L₄(relu(L₂(relu(L₀(X)))))              L₀: d→H, L₂: H→H, L₄: H→d
 *   LSTM:  P = L₂(relu(L₀(BiLSTM(X))))                 L₀: 2H→2H, L₂: 2H→d
 *
 * Lᵢ(x) = x Wᵢᵀ + bᵢ with nn.Linear's init U(±1/√in). The LSTM is torch's
 * nn.LSTM(d, H, num_layers, bidirectional, dropout between layers), every
 * weight and bias U(±1/√H). One direction of one layer over inputs x_t:
 *
 *   z_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh        [4H], gate order i, f, g, o
 *   i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o)
 *   c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t),   h_{−1} = c_{−1} = 0
 *
 * the reverse direction runs t = n_v−1 … 0; a layer's output is
 * [h_fwd, h_rev] per token (2H), the next layer's input (after dropout when
 * training). The GPU version is built from matmul, activation, mul, add and
 * sequence slices/concatenations, stepping over the n_v tokens (it runs once
 * per forward on n_v rows: plain and correct rather than fast); autograd
 * comes from those ops. `encodePromptCpu` is the float64 reference.
 *
 * Weight names are PEFT's in-model names under prompt_encoder.default:
 * embedding.weight, mlp_head.{0,2,4}.{weight,bias}, lstm_head.{weight,bias}_{ih,hh}_l{k}[_reverse].
 */
import type { Engine } from 'peft-studio/engine/engine';
import { activation } from 'peft-studio/engine/ops/activation';
import { add } from 'peft-studio/engine/ops/add';
import { concatSeq, sliceSeq } from 'peft-studio/engine/ops/concat';
import { dropout, dropoutMaskCpu } from 'peft-studio/engine/ops/dropout';
import { matmul } from 'peft-studio/engine/ops/matmul';
import { mul } from 'peft-studio/engine/ops/mul';
import type { Tensor } from 'peft-studio/engine/tensor';
import type { ActivationTensor } from 'peft-studio/methods/types';
import { normal } from '../prompt-tuning/prompt';

export type EncoderKind = 'MLP' | 'LSTM';

export interface EncoderSpec {
  kind: EncoderKind;
  /** Virtual tokens. */
  nV: number;
  /** Token dimension (hidden size of the model). */
  d: number;
  /** encoder_hidden_size. */
  H: number;
  /** LSTM layers (ignored by the MLP). */
  layers: number;
  /** Dropout between LSTM layers in training (ignored by the MLP). */
  dropout: number;
}

export interface EncoderParam {
  name: string;
  shape: number[];
  /** N(0, 1) for the table, else U(±bound). */
  init: { normal: true } | { bound: number };
}

/** The encoder's tensors in PEFT's order (embedding, lstm_head, mlp_head). */
export function encoderParams(s: EncoderSpec): EncoderParam[] {
  const out: EncoderParam[] = [{ name: 'embedding.weight', shape: [s.nV, s.d], init: { normal: true } }];
  const linear = (i: number, inF: number, outF: number) => {
    const bound = 1 / Math.sqrt(inF);
    out.push({ name: `mlp_head.${i}.weight`, shape: [outF, inF], init: { bound } }, { name: `mlp_head.${i}.bias`, shape: [outF], init: { bound } });
  };
  if (s.kind === 'MLP') {
    linear(0, s.d, s.H);
    linear(2, s.H, s.H);
    linear(4, s.H, s.d);
    return out;
  }
  const bound = 1 / Math.sqrt(s.H);
  for (let l = 0; l < s.layers; l++) {
    const inF = l === 0 ? s.d : 2 * s.H;
    for (const sfx of ['', '_reverse']) {
      out.push(
        { name: `lstm_head.weight_ih_l${l}${sfx}`, shape: [4 * s.H, inF], init: { bound } },
        { name: `lstm_head.weight_hh_l${l}${sfx}`, shape: [4 * s.H, s.H], init: { bound } },
        { name: `lstm_head.bias_ih_l${l}${sfx}`, shape: [4 * s.H], init: { bound } },
        { name: `lstm_head.bias_hh_l${l}${sfx}`, shape: [4 * s.H], init: { bound } },
      );
    }
  }
  linear(0, 2 * s.H, 2 * s.H);
  linear(2, 2 * s.H, s.d);
  return out;
}

/** Initial values (host), by name. */
export function initEncoderWeights(s: EncoderSpec, random: () => number): Map<string, Float32Array> {
  const w = new Map<string, Float32Array>();
  for (const p of encoderParams(s)) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    w.set(p.name, 'normal' in p.init ? normal(n, 1, random) : Float32Array.from({ length: n }, () => (random() * 2 - 1) * (p.init as { bound: number }).bound));
  }
  return w;
}

/** The pieces of a [1, L, W] row block: row t as [1, W]. */
function row(e: Engine, x: Tensor, L: number, t: number, W: number): Tensor {
  return sliceSeq(e, x.reshape([1, L, W]), 1, L, t, 1, W).reshape([1, W]);
}

/** Rows [1, W] stacked in order into [n, W] (pairwise concatenations: n log n copies). */
function stackRows(e: Engine, rows: Tensor[], W: number): Tensor {
  let parts = rows.map((r) => r.reshape([1, 1, W]));
  while (parts.length > 1) {
    const next: Tensor[] = [];
    for (let i = 0; i + 1 < parts.length; i += 2) {
      const a = parts[i],
        b = parts[i + 1];
      next.push(concatSeq(e, a, b, 1, a.shape[1], b.shape[1], W));
    }
    if (parts.length % 2) next.push(parts.at(-1)!);
    parts = next;
  }
  return parts[0].reshape([rows.length, W]);
}

/** One direction of one LSTM layer over x [n, in]: h [n, H] in token order. */
function lstmDirection(e: Engine, x: Tensor, Wih: Tensor, Whh: Tensor, bih: Tensor, bhh: Tensor, H: number, reverse: boolean): Tensor {
  const n = x.shape[0];
  // Input projections of all tokens at once: [n, 4H].
  const G = matmul(e, x, Wih, { transB: true, bias: bih, name: 'lstm.x_proj' });
  let h: Tensor = e.zeros([1, H], 'lstm.h0');
  let c: Tensor | null = null;
  const hs: Tensor[] = new Array(n);
  for (let s = 0; s < n; s++) {
    const t = reverse ? n - 1 - s : s;
    const z = add(e, row(e, G, n, t, 4 * H), matmul(e, h, Whh, { transB: true, bias: bhh, name: 'lstm.h_proj' }));
    const gate = (k: number, act: string) => activation(e, row(e, z, 4, k, H), act);
    const i = gate(0, 'sigmoid'),
      f = gate(1, 'sigmoid'),
      g = gate(2, 'tanh'),
      o = gate(3, 'sigmoid');
    const ig = mul(e, i, g);
    c = c ? add(e, mul(e, f, c), ig) : ig;
    h = mul(e, o, activation(e, c, 'tanh'));
    hs[t] = h;
  }
  return stackRows(e, hs, H);
}

/**
 * P [n_v, d] on the GPU. `dropoutSeed` (training only) applies the LSTM's
 * inter-layer dropout, layer l with seed dropoutSeed + l.
 */
export function encodePrompt(e: Engine, s: EncoderSpec, w: (name: string) => Tensor, dropoutSeed?: number): Tensor {
  const lin = (x: Tensor, i: number) =>
    matmul(e, x, w(`mlp_head.${i}.weight`), { transB: true, bias: w(`mlp_head.${i}.bias`), name: `prompt_encoder.mlp_head.${i}` });
  let x = w('embedding.weight');
  if (s.kind === 'MLP') {
    x = activation(e, lin(x, 0), 'relu');
    x = activation(e, lin(x, 2), 'relu');
    return lin(x, 4);
  }
  const { nV, H } = s;
  for (let l = 0; l < s.layers; l++) {
    const dir = (sfx: string, reverse: boolean) =>
      lstmDirection(
        e,
        x,
        w(`lstm_head.weight_ih_l${l}${sfx}`),
        w(`lstm_head.weight_hh_l${l}${sfx}`),
        w(`lstm_head.bias_ih_l${l}${sfx}`),
        w(`lstm_head.bias_hh_l${l}${sfx}`),
        H,
        reverse,
      );
    const fwd = dir('', false),
      rev = dir('_reverse', true);
    // Per token [h_fwd | h_rev]: [n_v, 2, H] = [n_v, 2H].
    x = concatSeq(e, fwd.reshape([nV, 1, H]), rev.reshape([nV, 1, H]), nV, 1, 1, H).reshape([nV, 2 * H]);
    if (l < s.layers - 1 && s.dropout > 0 && dropoutSeed !== undefined) x = dropout(e, x, s.dropout, dropoutSeed + l);
  }
  return lin(activation(e, lin(x, 0), 'relu'), 2);
}

/**
 * What encodePrompt leaves for the backward, by tensor (each with its
 * gradient unless marked): MLP three linear outputs and two ReLUs; LSTM per
 * layer and direction the input projection [n_v, 4H], per step its row, the
 * recurrent projection and their sum [4H], four gate slices and activations,
 * i⊙g, f⊙c and the new c (after the first step), tanh(c), h [H], then the
 * stacking of the n_v rows (pairwise concatenations, each with a backward
 * copy of its inputs' gradients), the [h_fwd | h_rev] concatenation and the
 * dropout between layers; then the head's two linears and ReLU.
 */
export function encoderActivations(s: EncoderSpec): ActivationTensor[] {
  const { nV, d, H } = s;
  if (s.kind === 'MLP') return [{ fixed: nV * H, count: 4 }, { fixed: nV * d }];
  const out: ActivationTensor[] = [];
  /** A concatenation of a and b values: its output and gradient, and the backward's copies of both inputs' gradients. */
  const concat = (a: number, b: number) => out.push({ fixed: a + b }, { fixed: a, grad: false }, { fixed: b, grad: false });
  for (let l = 0; l < s.layers; l++) {
    for (let dir = 0; dir < 2; dir++) {
      out.push({ fixed: nV * 4 * H }, { fixed: H, grad: false }, { fixed: 4 * H, count: 3 * nV }, { fixed: H, count: 13 * nV - 2 });
      let parts = new Array<number>(nV).fill(H);
      while (parts.length > 1) {
        const next: number[] = [];
        for (let i = 0; i + 1 < parts.length; i += 2) {
          concat(parts[i], parts[i + 1]);
          next.push(parts[i] + parts[i + 1]);
        }
        if (parts.length % 2) next.push(parts.at(-1)!);
        parts = next;
      }
    }
    concat(nV * H, nV * H);
    if (l < s.layers - 1 && s.dropout > 0) out.push({ fixed: nV * 2 * H });
  }
  out.push({ fixed: nV * 2 * H, count: 2 }, { fixed: nV * d });
  return out;
}

/** x Wᵀ + b in float64: x [n, in], W [out, in]. */
function linearCpu(x: Float64Array, n: number, inF: number, W: ArrayLike<number>, b: ArrayLike<number>, outF: number): Float64Array {
  const y = new Float64Array(n * outF);
  for (let r = 0; r < n; r++) {
    for (let o = 0; o < outF; o++) {
      let acc = b[o];
      for (let k = 0; k < inF; k++) acc += x[r * inF + k] * W[o * inF + k];
      y[r * outF + o] = acc;
    }
  }
  return y;
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** Float64 reference of encodePrompt (same dropout masks for the same seed). */
export function encodePromptCpu(s: EncoderSpec, w: (name: string) => ArrayLike<number>, dropoutSeed?: number): Float64Array {
  const { nV, d, H } = s;
  const relu = (a: Float64Array) => a.map((v) => Math.max(v, 0));
  const lin = (x: Float64Array, inF: number, i: number, outF: number) => linearCpu(x, nV, inF, w(`mlp_head.${i}.weight`), w(`mlp_head.${i}.bias`), outF);
  let x = Float64Array.from(w('embedding.weight'));
  if (s.kind === 'MLP') return lin(relu(lin(relu(lin(x, d, 0, H)), H, 2, H)), H, 4, d);
  let inF = d;
  for (let l = 0; l < s.layers; l++) {
    const out = new Float64Array(nV * 2 * H);
    for (const [dirIdx, sfx] of [
      [0, ''],
      [1, '_reverse'],
    ] as const) {
      const G = linearCpu(x, nV, inF, w(`lstm_head.weight_ih_l${l}${sfx}`), w(`lstm_head.bias_ih_l${l}${sfx}`), 4 * H);
      const Whh = w(`lstm_head.weight_hh_l${l}${sfx}`),
        bhh = w(`lstm_head.bias_hh_l${l}${sfx}`);
      let h = new Float64Array(H),
        c = new Float64Array(H);
      for (let st = 0; st < nV; st++) {
        const t = dirIdx ? nV - 1 - st : st;
        const z = linearCpu(h, 1, H, Whh, bhh, 4 * H);
        for (let j = 0; j < 4 * H; j++) z[j] += G[t * 4 * H + j];
        const hn = new Float64Array(H),
          cn = new Float64Array(H);
        for (let j = 0; j < H; j++) {
          const i = sigmoid(z[j]),
            f = sigmoid(z[H + j]),
            g = Math.tanh(z[2 * H + j]),
            o = sigmoid(z[3 * H + j]);
          cn[j] = f * c[j] + i * g;
          hn[j] = o * Math.tanh(cn[j]);
        }
        h = hn;
        c = cn;
        out.set(h, t * 2 * H + dirIdx * H);
      }
    }
    x = out;
    inF = 2 * H;
    if (l < s.layers - 1 && s.dropout > 0 && dropoutSeed !== undefined) {
      const mask = dropoutMaskCpu(x.length, s.dropout, dropoutSeed + l);
      x = x.map((v, i) => v * mask[i]);
    }
  }
  return lin(relu(lin(x, 2 * H, 0, 2 * H)), 2 * H, 2, d);
}
