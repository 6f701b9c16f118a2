/**
 * The LLaMA-family model (llama, mistral, qwen2) built from engine ops, with
 * named insertion points so that PEFT methods attach without editing it.
 *
 * Legend: B batch, T new tokens, S keys (past + new, + prefix), C hidden,
 * Hq / Hkv query / key-value heads, D head dim, F intermediate, V vocab.
 *
 * Insertion points (see `ModelHooks`):
 *   linear        wrap any linear by module name ("model.layers.3.self_attn.q_proj")
 *   inputEmbeds   virtual tokens before the input embeddings (prompt tuning,
 *                 p-tuning, MTP); the logits cover the real tokens only
 *   kvPrefix      extra key/value rows per layer (prefix tuning, p-tuning v2),
 *                 with positionShift moving real tokens to positions P, P+1, ...
 *   afterAttention / afterMlp / parallelMlp   bottleneck adapters
 *   scaleActivation  k, v and MLP activation scaling (IA3)
 *   normWeight    replace an RMSNorm weight (LN tuning)
 *   trainable biases: `addBias()` on a named linear (BitFit)
 */
import type { Engine } from '../engine/engine';
import type { Tensor } from '../engine/tensor';
import { checkpoint } from '../engine/checkpoint';
import { add } from '../engine/ops/add';
import { concatSeq, sliceSeq } from '../engine/ops/concat';
import { attention } from '../engine/ops/attention';
import { embedding } from '../engine/ops/embedding';
import { matmul } from '../engine/ops/matmul';
import { rmsnorm } from '../engine/ops/rmsnorm';
import { rope, ropeInvFreq } from '../engine/ops/rope';
import { swiglu } from '../engine/ops/swiglu';
import { toF32 } from '../engine/ops/packed';
import type { ModelConfig } from './config';
import { AdapterLimitError, ModelFormatError } from '../errors';

export type LinearFn = (x: Tensor) => Tensor;

export interface HookContext {
  e: Engine;
  model: LlamaModel;
  B: number;
  /** Tokens in this forward call (after virtual tokens were added, for hooks after embeddings). */
  T: number;
  /** Positions already in the KV cache before this call (0 without a cache, or at prefill). */
  past: number;
  /** Per-sequence task ids [B] (multitask prompt tuning), when the caller gave them. */
  taskIds?: Int32Array;
}

export interface ModelHooks {
  /** Wrap the linear `name`: return the output given the input and the inner (base or previous wrapper) function. */
  linear?: (name: string, x: Tensor, inner: LinearFn, ctx: HookContext) => Tensor;
  /**
   * Prepend P virtual tokens: return [B, T + P, C] embeddings, or null to leave
   * them. Called only when nothing is cached yet (training, or the prefill of
   * generation); later generation steps find the virtual tokens in the cache.
   * The model drops the virtual positions before the head: logits stay [B, T, V].
   */
  inputEmbeds?: (embeds: Tensor, ctx: HookContext) => { embeds: Tensor; virtualTokens: number } | null;
  /** How many virtual tokens inputEmbeds adds per sequence (KV caches reserve room for them). */
  virtualTokens?: () => number;
  /**
   * Once per forward, after the input embeddings and before the first layer:
   * where a method computes what every layer shares (prefix tuning's Z). A
   * tensor made here lives for the whole forward and backward; one made
   * inside a layer hook lives only as long as that layer's recomputation
   * region when gradient checkpointing is on.
   */
  beginForward?: (ctx: HookContext) => void;
  /** Per-layer key/value prefixes, each [B, P, Hkv, D] (post-RoPE space, visible to every query). */
  kvPrefix?: (layer: number, ctx: HookContext) => { k: Tensor; v: Tensor } | null;
  /**
   * First position id of the real tokens (HF prefix tuning: the prefix counts
   * as cached positions, so real tokens sit at P, P+1, ...). Summed over hooks.
   */
  positionShift?: () => number;
  /** After o_proj, before the residual add: return the (possibly adapted) attention output. `residualIn` is the layer input x. */
  afterAttention?: (layer: number, out: Tensor, residualIn: Tensor, ctx: HookContext) => Tensor;
  /** After down_proj, before the residual add. `residualIn` is the (un-normalised) stream entering the MLP block. */
  afterMlp?: (layer: number, out: Tensor, residualIn: Tensor, ctx: HookContext) => Tensor;
  /** A branch parallel to the MLP, added to its output: gets the un-normalised stream and the normed MLP input. */
  parallelMlp?: (layer: number, residualIn: Tensor, mlpIn: Tensor, ctx: HookContext) => Tensor | null;
  /** Scale an activation: 'k' and 'v' after their projections (before RoPE), 'ffn' the input of down_proj. */
  scaleActivation?: (layer: number, kind: 'k' | 'v' | 'ffn', x: Tensor, ctx: HookContext) => Tensor;
  /**
   * Replace an RMSNorm weight, by module name ("model.layers.0.input_layernorm",
   * "model.norm"): return the weight to use (LN tuning's trainable copy).
   */
  normWeight?: (name: string, w: Tensor, ctx: HookContext) => Tensor;
}

export interface ForwardOptions {
  /** [B*T] 1 = real token, 0 = padding (right or left). */
  attentionMask?: Int32Array;
  cache?: KVCache;
  /** Per-sequence task ids [B], passed to hooks (multitask prompt tuning). */
  taskIds?: Int32Array;
  /**
   * Recompute each decoder layer's activations during the backward instead of
   * keeping them (`gradient_checkpointing`): activation memory of one layer
   * instead of all, for a second forward of every layer. Only while a tape
   * records and without a cache; see src/engine/checkpoint.ts.
   */
  gradientCheckpointing?: boolean;
}

/** Per-layer key/value cache for generation: [B, capacity, Hkv, D] each. */
export class KVCache {
  length = 0;
  /** Key mask of the cached positions, [B, capacity]. */
  mask: Int32Array;
  /** Next position id per sequence. */
  nextPos: Int32Array;
  constructor(
    readonly k: Tensor[],
    readonly v: Tensor[],
    readonly B: number,
    readonly capacity: number,
  ) {
    this.mask = new Int32Array(B * capacity);
    this.nextPos = new Int32Array(B);
  }
  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
  }
}

export class LlamaModel {
  readonly params = new Map<string, Tensor>();
  /** weightDtype() as loaded, before any method unpacked a weight: the dtype a merged export is written in. */
  readonly loadedWeightDtype: string;
  private hookList: ModelHooks[] = [];
  private invFreq: Tensor;

  constructor(
    readonly e: Engine,
    readonly config: ModelConfig,
    weights: Map<string, Tensor>,
  ) {
    for (const [k, t] of weights) {
      t.name = k;
      e.persist(t);
      this.params.set(k, t);
    }
    this.loadedWeightDtype = this.weightDtype();
    for (const name of [...this.linearNames(), 'lm_head']) if (this.params.has(`${name}.bias`)) this.checkSplitBias(name);
    const need = ['model.embed_tokens.weight', 'model.norm.weight'];
    for (let l = 0; l < config.numLayers; l++) {
      const p = `model.layers.${l}`;
      for (const n of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']) {
        need.push(`${p}.${n}.weight`);
      }
      need.push(`${p}.input_layernorm.weight`, `${p}.post_attention_layernorm.weight`);
    }
    if (!config.tieWordEmbeddings) need.push('lm_head.weight');
    const missing = need.filter((n) => !weights.has(n));
    if (missing.length) {
      throw new ModelFormatError(
        `The checkpoint lacks ${missing.length} weight(s) the ${config.modelType} architecture needs, e.g. ${missing.slice(0, 3).join(', ')}` +
          (missing.includes('lm_head.weight') ? ' (set tie_word_embeddings: true in config.json if the head is tied)' : ''),
      );
    }
    this.invFreq = e.persist(
      e.upload(Float32Array.from(ropeInvFreq(config.headDim, config.ropeTheta, config.ropeScaling)), [config.headDim / 2], 'rope.inv_freq'),
    );
  }

  /** Attach a set of hooks (a PEFT method). Hooks of later attachments wrap earlier ones. */
  attach(hooks: ModelHooks): () => void {
    this.hookList.push(hooks);
    return () => {
      this.hookList = this.hookList.filter((h) => h !== hooks);
    };
  }

  /** Shapes of weights whose f32 storage a method released (QLoRA keeps them quantized). */
  readonly releasedShapes = new Map<string, number[]>();

  /**
   * A weight as f32, for methods that compute with, write or train it (SVD
   * inits, merges, DoRA norms, full fine-tuning). A base weight stored packed
   * (f16 / bf16) is unpacked in place on first use and stays f32 from then on;
   * the model's own forward reads `stored` and never forces this.
   */
  param(name: string): Tensor {
    const t = this.stored(name);
    if (!t.packed && !t.blocks) return t;
    // Join row blocks when the f32 tensor fits one binding; else keep f32 blocks.
    let f: Tensor;
    if (t.blocks && t.size * 4 <= this.e.maxBindingBytes) {
      f = this.e.empty(t.shape, name);
      for (const b of t.blocks) {
        const part = b.packed ? toF32(this.e, b) : b;
        this.e.copyRegion(f, b.rowStart * t.shape[1], part, 0, part.size);
        if (part !== b) part.dispose();
      }
    } else {
      f = toF32(this.e, t, name);
    }
    f = this.e.persist(f);
    f.name = name;
    this.params.set(name, f);
    t.dispose();
    return f;
  }

  /** A weight as stored: f32, packed 16-bit (frozen base weights) or split in row blocks. */
  stored(name: string): Tensor {
    const t = this.params.get(name);
    if (!t) {
      if (this.releasedShapes.has(name)) {
        throw new Error(`${name} is no longer held in f32 (a method, e.g. QLoRA, replaced it); use the method's own path`);
      }
      throw new Error(`No parameter named ${name}`);
    }
    return t;
  }

  /** Unpack every packed base weight to f32 (before all weights train). */
  unpackWeights(): void {
    for (const [name, t] of [...this.params]) if (t.packed || t.blocks) this.param(name);
  }

  /** How the 2-D base weights are stored: 'f32', 'f16', 'bf16', or e.g. 'bf16+f32' when they differ. */
  weightDtype(): string {
    const kinds = new Set<string>();
    for (const t of this.params.values()) if (t.shape.length === 2) kinds.add(t.dtype);
    return [...kinds].sort().join('+') || 'f32';
  }

  /** Bytes the base weights take on the GPU as stored. */
  weightBytes(): number {
    let n = 0;
    for (const t of this.params.values()) n += t.blocks ? t.blocks.reduce((a, b) => a + b.byteSize, 0) : t.byteSize;
    return n;
  }

  /** Shape of a weight, also after its f32 storage was released. */
  weightShape(name: string): number[] {
    return this.params.get(name)?.shape ?? this.releasedShapes.get(name) ?? this.stored(name).shape;
  }

  /**
   * Free a base weight's f32 buffer: the method that calls this computes the
   * linear itself in its `linear` hook (never calling `inner`).
   */
  releaseWeight(name: string): void {
    const t = this.stored(name);
    this.releasedShapes.set(name, t.shape);
    this.params.delete(name);
    t.dispose();
  }

  /** Module names of every linear layer ("model.layers.0.self_attn.q_proj", ..., "lm_head"). */
  linearNames(): string[] {
    const out: string[] = [];
    for (let l = 0; l < this.config.numLayers; l++) {
      for (const n of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']) {
        out.push(`model.layers.${l}.${n}`);
      }
    }
    return out;
  }

  /** Add a (zero) bias to a linear that has none, e.g. for BitFit on llama. */
  addBias(name: string, init?: Float32Array): Tensor {
    this.checkSplitBias(name);
    const out = this.weightShape(`${name}.weight`)[0];
    const b = this.e.persist(init ? this.e.upload(init, [out]) : this.e.zeros([out]));
    b.name = `${name}.bias`;
    this.params.set(b.name, b);
    return b;
  }

  /**
   * A weight split into row blocks (beyond one GPU binding) is read only as x Wᵀ
   * without a bias: refuse a bias on one by name, before a forward fails in a kernel.
   */
  private checkSplitBias(name: string): void {
    const w = this.params.get(`${name}.weight`);
    if (!w?.blocks) return;
    throw new AdapterLimitError(
      `${name}.weight (${w.shape.join(' × ')}) is larger than this GPU's binding limit (${this.e.maxBindingBytes.toLocaleString('en-US')} bytes) ` +
        `and is split into row blocks, which cannot be used with a bias (${name}.bias). Use a GPU whose maxStorageBufferBindingSize holds it` +
        (w.dtype === 'f32' ? ', or hold the base in 16 bits (base_dtype: bfloat16) to halve it.' : '.'),
    );
  }

  /** Free every GPU buffer the model holds (weights, gradients, RoPE table). */
  dispose(): void {
    for (const t of this.params.values()) t.dispose();
    this.params.clear();
    this.invFreq.dispose();
    this.hookList = [];
  }

  numParams(): number {
    let n = 0;
    for (const [k, t] of this.params) if (k !== 'lm_head.weight' || !this.config.tieWordEmbeddings) n += t.size;
    // Weights a method holds in its own format (QLoRA's NF4) still count.
    for (const shape of this.releasedShapes.values()) n += shape.reduce((a, b) => a * b, 1);
    return n;
  }

  /** Freeze or unfreeze every base weight. */
  setTrainable(trainable: boolean): void {
    if (trainable) this.unpackWeights();
    for (const t of this.params.values()) t.requiresGrad = trainable;
  }

  /** Virtual tokens the attached hooks add to each sequence. */
  virtualTokens(): number {
    return this.hookList.reduce((a, h) => a + (h.virtualTokens?.() ?? 0), 0);
  }

  /** A cache for `capacity` real tokens per sequence (room for virtual tokens is added). */
  newCache(B: number, capacity: number): KVCache {
    const { numLayers, numKvHeads, headDim } = this.config;
    capacity += this.virtualTokens();
    const k: Tensor[] = [],
      v: Tensor[] = [];
    for (let l = 0; l < numLayers; l++) {
      k.push(this.e.persist(this.e.zeros([B, capacity, numKvHeads, headDim], `cache.k.${l}`)));
      v.push(this.e.persist(this.e.zeros([B, capacity, numKvHeads, headDim], `cache.v.${l}`)));
    }
    return new KVCache(k, v, B, capacity);
  }

  linear(name: string, x: Tensor, ctx: HookContext): Tensor {
    // The base weight is looked up only when the innermost function runs, so a
    // hook that replaces the base path (QLoRA) works after releaseWeight().
    let f: LinearFn = (xx) => matmul(this.e, xx, this.stored(`${name}.weight`), { transB: true, bias: this.params.get(`${name}.bias`) ?? null, name });
    for (const h of this.hookList) {
      if (!h.linear) continue;
      const inner = f,
        hook = h.linear;
      f = (xx) => hook(name, xx, inner, ctx);
    }
    return f(x);
  }

  private norm(name: string, x: Tensor, ctx: HookContext): Tensor {
    let w = this.param(`${name}.weight`);
    for (const h of this.hookList) if (h.normWeight) w = h.normWeight(name, w, ctx);
    return rmsnorm(this.e, x, w, this.config.rmsNormEps);
  }

  /**
   * Logits [B, T, V] for token ids [B*T] (virtual tokens are not in the
   * logits). With a cache, the new tokens are appended to it; all sequences
   * advance together (left-pad prompts of different lengths, mask 0).
   * [B*T, V] in one tensor: consumers that read some rows, or a vocabulary
   * beyond one binding, go through src/model/logits.ts.
   */
  forward(ids: Int32Array, B: number, opts: ForwardOptions = {}): Tensor {
    return this.head(this.hidden(ids, B, opts));
  }

  /**
   * The final-normed hidden states [B, T, C] of the real tokens: what the head
   * reads. forward = head(hidden); generation, scoring and the loss take the
   * rows they need and run the head on chunks of one binding (./logits.ts).
   */
  hidden(ids: Int32Array, B: number, opts: ForwardOptions = {}): Tensor {
    const e = this.e,
      cfg = this.config;
    const T0 = ids.length / B;
    if (!Number.isInteger(T0)) throw new Error(`forward: ${ids.length} ids do not split into batch ${B}`);
    const C = cfg.hiddenSize,
      D = cfg.headDim,
      Hq = cfg.numHeads,
      Hkv = cfg.numKvHeads;
    const mask = opts.attentionMask ?? new Int32Array(ids.length).fill(1);
    const cache = opts.cache;

    const idsT = e.upload(ids, [B * T0], 'input_ids');
    let x = embedding(e, idsT, this.stored('model.embed_tokens.weight'), ids).reshape([B, T0, C]);
    const past = cache ? cache.length : 0;
    let ctx: HookContext = { e, model: this, B, T: T0, past, taskIds: opts.taskIds };
    let virtual = 0;
    if (past === 0) {
      for (const h of this.hookList) {
        const r = h.inputEmbeds?.(x, ctx);
        if (r) {
          x = r.embeds;
          virtual += r.virtualTokens;
        }
      }
    }
    const T = T0 + virtual;
    ctx = { ...ctx, T };
    const shift = this.hookList.reduce((a, h) => a + (h.positionShift?.() ?? 0), 0);

    // Positions and key mask. Virtual tokens are real (mask 1) and come first.
    const S = past + T;
    if (cache && S > cache.capacity) throw new Error(`KV cache full: ${S} > ${cache.capacity} positions`);
    const fullMask = new Int32Array(B * T);
    const positions = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      let pos = cache && past > 0 ? cache.nextPos[b] : shift;
      for (let t = 0; t < T; t++) {
        const m = t < virtual ? 1 : mask[b * T0 + t - virtual];
        fullMask[b * T + t] = m;
        // HF: position_ids = cumsum(mask) - 1, padding positions set to 1.
        positions[b * T + t] = m ? pos : 1;
        if (m) pos++;
      }
      if (cache) cache.nextPos[b] = pos;
    }
    let keyMaskHost = fullMask;
    if (cache) {
      for (let b = 0; b < B; b++) cache.mask.set(fullMask.subarray(b * T, (b + 1) * T), b * cache.capacity + past);
      // B = 1 attends over the first S cached rows; B > 1 over the whole capacity (see below).
      const L = B === 1 ? S : cache.capacity;
      keyMaskHost = new Int32Array(B * L);
      for (let b = 0; b < B; b++) keyMaskHost.set(cache.mask.subarray(b * cache.capacity, b * cache.capacity + L), b * L);
    }
    const posT = e.upload(positions, [B * T], 'positions');
    // Without prefixes every layer sees the same key mask: uploaded once per
    // forward, before the layers (a tensor created inside a recomputed layer
    // lives only as long as that layer's region).
    const sharedMask = e.upload(keyMaskHost, [B, keyMaskHost.length / B], 'key_mask');
    for (const hk of this.hookList) hk.beginForward?.(ctx);

    const layer = (l: number, x: Tensor): Tensor => {
      const p = `model.layers.${l}`;
      const h = this.norm(`${p}.input_layernorm`, x, ctx);
      let q = this.linear(`${p}.self_attn.q_proj`, h, ctx);
      let k = this.linear(`${p}.self_attn.k_proj`, h, ctx);
      let v = this.linear(`${p}.self_attn.v_proj`, h, ctx);
      for (const hk of this.hookList) {
        if (hk.scaleActivation) {
          k = hk.scaleActivation(l, 'k', k, ctx);
          v = hk.scaleActivation(l, 'v', v, ctx);
        }
      }
      q = rope(e, q.reshape([B, T, Hq, D]), posT, this.invFreq);
      k = rope(e, k.reshape([B, T, Hkv, D]), posT, this.invFreq);
      v = v.reshape([B, T, Hkv, D]);

      let keys = k,
        values = v,
        keyLen = T,
        prefixLen = 0;
      if (cache) {
        const cap = cache.capacity,
          row = Hkv * D;
        for (let b = 0; b < B; b++) {
          e.copyRegion(cache.k[l], (b * cap + past) * row, k, b * T * row, T * row);
          e.copyRegion(cache.v[l], (b * cap + past) * row, v, b * T * row, T * row);
        }
        // One sequence: the first S rows are contiguous. Several: attend over
        // the whole capacity; positions past S have key mask 0.
        const L = B === 1 ? S : cap;
        keys = B === 1 ? cache.k[l].prefix([1, S, Hkv, D]) : cache.k[l];
        values = B === 1 ? cache.v[l].prefix([1, S, Hkv, D]) : cache.v[l];
        keyLen = L;
      }
      let keyMask = keyMaskHost;
      for (const hk of this.hookList) {
        const pre = hk.kvPrefix?.(l, ctx);
        if (!pre) continue;
        const P = pre.k.shape[1];
        keys = concatSeq(e, pre.k, keys, B, P, keyLen, Hkv * D);
        values = concatSeq(e, pre.v, values, B, P, keyLen, Hkv * D);
        const km = new Int32Array(B * (P + keyLen));
        for (let b = 0; b < B; b++) {
          km.fill(1, b * (P + keyLen), b * (P + keyLen) + P);
          km.set(keyMask.subarray(b * keyLen, (b + 1) * keyLen), b * (P + keyLen) + P);
        }
        keyMask = km;
        keyLen += P;
        prefixLen += P;
      }
      const keyMaskT = prefixLen === 0 ? sharedMask : e.upload(keyMask, [B, keyLen], 'key_mask');
      const att = attention(e, q, keys, values, { keyMask: keyMaskT, queryOffset: prefixLen + past, prefixLen });
      let o = this.linear(`${p}.self_attn.o_proj`, att.reshape([B, T, Hq * D]), ctx);
      for (const hk of this.hookList) if (hk.afterAttention) o = hk.afterAttention(l, o, x, ctx);
      x = add(e, x, o);

      const h2 = this.norm(`${p}.post_attention_layernorm`, x, ctx);
      const g = this.linear(`${p}.mlp.gate_proj`, h2, ctx);
      const u = this.linear(`${p}.mlp.up_proj`, h2, ctx);
      let m = swiglu(e, g, u);
      for (const hk of this.hookList) if (hk.scaleActivation) m = hk.scaleActivation(l, 'ffn', m, ctx);
      let d = this.linear(`${p}.mlp.down_proj`, m, ctx);
      for (const hk of this.hookList) {
        const par = hk.parallelMlp?.(l, x, h2, ctx);
        if (par) d = add(e, d, par);
      }
      for (const hk of this.hookList) if (hk.afterMlp) d = hk.afterMlp(l, d, x, ctx);
      return add(e, x, d);
    };

    // Recomputation needs a tape (training) and no cache (a recomputed layer
    // would write its keys and values into the cache twice).
    const recompute = !!opts.gradientCheckpointing && !!e.tape && !cache;
    for (let l = 0; l < cfg.numLayers; l++) {
      x = recompute ? checkpoint(e, x, (xin) => layer(l, xin), `layers.${l}`) : layer(l, x);
    }
    if (cache) cache.length = S;
    if (virtual > 0) x = sliceSeq(e, x, B, T, virtual, T0, C);
    return this.norm('model.norm', x, ctx);
  }

  /** Logits [..., V] of final-normed hidden states [..., C] (the tied or own head, row blocks included). */
  head(x: Tensor): Tensor {
    const w = this.stored(this.config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
    return matmul(this.e, x, w, { transB: true, name: 'logits' }).reshape([...x.shape.slice(0, -1), this.config.vocabSize]);
  }
}
