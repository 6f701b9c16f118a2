/**
 * SVFT, PEFT-Factory's plug-in (METHODS.md §10.1). Per targeted linear
 * W [out, in], with the fp64 SVD W = U diag(σ) Vᵀ (σ descending):
 *   n = clamp(rank or min(out, in), 1, min(out, in)); keep the top n triplets,
 *   or with fill_orthonormal append random orthonormal vectors (σ = 0) up to
 *   min(out, in);
 *   W' = U (diag(s_base) + σ(gate) M) V,   y = x W'ᵀ (+ bias)
 * U [out, n], V (= Vh) [n, in] and s_base are frozen buffers; M is sparse with
 * trainable values δ at the pattern positions (banded |i − j| ≤ off_diag,
 * random, or top_k by |σ_i σ_j|), sorted row-major; δ = 0 and gate = 0 at
 * init, so the layer is U diag(σ) V = W at full rank.
 * Evaluated as z = x Vᵀ, z' = z (diag(s) + σ(g) M)ᵀ (peft/svft/ops.ts),
 * y = z' Uᵀ: two dense matmuls and a sparse step, never W' itself.
 *
 * The SVD runs on the CPU after reading W back, so initialisation is
 * asynchronous: await `ready` before the first forward.
 * Export: every svft_ tensor, u, v, s_base, row_idx, col_idx, delta, gate (0-d),
 * under base_model.model.<module>.svft_layers.<name>. Merge: W ← W' (exact).
 */
import { matmul } from 'peft-studio/engine/ops/matmul';
import { svftPattern, svftScaleRows, svftSpectral, uploadSvftPattern, type SvftPattern } from './ops';
import type { Tensor } from 'peft-studio/engine/tensor';
import { ConfigError } from 'peft-studio/errors';
import { flopsTargets } from 'peft-studio/eval/flops';
import { readOptions, targetModules } from 'peft-studio/methods/options';
import { svdFull, svdTopR } from 'peft-studio/methods/svd';
import {
  firstLayerOf,
  gaussian,
  layerOf,
  matchTargets,
  type AdapterFiles,
  type AttachedMethod,
  type HostTensor,
  type MethodContext,
  type PeftMethod,
  type TrainableParam,
} from 'peft-studio/methods/types';
import { SPECTRAL_FAMILY } from '../oft/method';
import { svftOptions } from './config';

/** Everything SVFT reads, in form order. */
const options = [targetModules, ...svftOptions] as const;

export type SvftPatternName = 'banded' | 'random' | 'top_k';

export interface AttachedSvft extends AttachedMethod {
  /** Resolves once every target holds its SVD (and any import issued before is applied). */
  readonly ready: Promise<void>;
}

interface SvftLayer {
  outF: number;
  inF: number;
  /** Spectral size: columns of U, rows of V. */
  n: number;
  U: Tensor;
  V: Tensor;
  s: Tensor;
  delta: Tensor;
  gate: Tensor;
  pattern: SvftPattern | null;
  patT: Tensor | null;
}

export interface SvftSettings {
  targets: string[];
  rank: number | null;
  offDiag: number;
  pattern: SvftPatternName;
  fillOrthonormal: boolean;
}

export function svftSettings(config: Record<string, unknown>): SvftSettings {
  const o = readOptions(options, config, 'svft');
  return { targets: o.target_modules ?? ['q_proj', 'k_proj'], rank: o.rank, offDiag: o.off_diag, pattern: o.pattern, fillOrthonormal: o.fill_orthonormal };
}

/** Spectral size n of a layer: min(out, in) when filling or at full rank, else clamp(rank, 1, min(out, in)). */
export function svftSize(outF: number, inF: number, rank: number | null, fillOrthonormal: boolean): number {
  const nMax = Math.min(outF, inF);
  const n = Math.max(1, Math.min(rank ?? nMax, nMax));
  return fillOrthonormal ? nMax : n;
}

/** PEFT-Factory's target count for random / top_k: the size of a width-d band, clamped to [1, n²]. */
export function svftTargetCount(n: number, d: number): number {
  return Math.max(1, Math.min(n * (2 * d + 1) - d * (d + 1), n * n));
}

/** Positions (i, j) of the pattern, before de-duplication and sorting (svftPattern does both). */
export function svftPositions(n: number, d: number, pattern: SvftPatternName, s: ArrayLike<number>, random: () => number): { rows: number[]; cols: number[] } {
  const rows: number[] = [],
    cols: number[] = [];
  if (pattern === 'banded') {
    for (let i = 0; i < n; i++) {
      for (let j = Math.max(0, i - d); j <= Math.min(n - 1, i + d); j++) {
        rows.push(i);
        cols.push(j);
      }
    }
    return { rows, cols };
  }
  const k = svftTargetCount(n, d);
  const N = n * n;
  if (pattern === 'random') {
    // k distinct flat positions, uniformly (Floyd's sampling without replacement).
    const chosen = new Set<number>();
    for (let j = N - k; j < N; j++) {
      const t = Math.floor(random() * (j + 1));
      chosen.add(chosen.has(t) ? j : t);
    }
    for (const f of chosen) {
      rows.push(Math.floor(f / n));
      cols.push(f % n);
    }
    return { rows, cols };
  }
  // top_k of |σ_i σ_j|: best-first walk of the outer product (σ sorted descending,
  // so (i, j) dominates (i+1, j) and (i, j+1)); ties broken by flat index.
  const a = Array.from({ length: n }, (_, i) => Math.abs(s[i]));
  const order = Array.from(a.keys()).sort((x, y) => a[y] - a[x] || x - y);
  const val = (i: number, j: number) => a[order[i]] * a[order[j]];
  const heap: [number, number, number][] = [];
  const less = (p: [number, number, number], q: [number, number, number]) => p[0] > q[0] || (p[0] === q[0] && p[1] * n + p[2] < q[1] * n + q[2]);
  const push = (x: [number, number, number]) => {
    heap.push(x);
    let c = heap.length - 1;
    while (c > 0) {
      const par = (c - 1) >> 1;
      if (!less(heap[c], heap[par])) break;
      [heap[c], heap[par]] = [heap[par], heap[c]];
      c = par;
    }
  };
  const pop = () => {
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      let c = 0;
      for (;;) {
        const l = 2 * c + 1,
          r = l + 1;
        let m = c;
        if (l < heap.length && less(heap[l], heap[m])) m = l;
        if (r < heap.length && less(heap[r], heap[m])) m = r;
        if (m === c) break;
        [heap[c], heap[m]] = [heap[m], heap[c]];
        c = m;
      }
    }
    return top;
  };
  const seen = new Set<number>([0]);
  push([val(0, 0), 0, 0]);
  while (rows.length < k) {
    const [, i, j] = pop();
    rows.push(order[i]);
    cols.push(order[j]);
    for (const [ii, jj] of [
      [i + 1, j],
      [i, j + 1],
    ]) {
      if (ii < n && jj < n && !seen.has(ii * n + jj)) {
        seen.add(ii * n + jj);
        push([val(ii, jj), ii, jj]);
      }
    }
  }
  return { rows, cols };
}

/** Number of pattern positions for a layer of spectral size n (after de-duplication). */
export function svftPatternSize(n: number, d: number, pattern: SvftPatternName): number {
  if (pattern !== 'banded') return svftTargetCount(n, d);
  let k = 0;
  for (let i = 0; i < n; i++) k += Math.min(n - 1, i + d) - Math.max(0, i - d) + 1;
  return k;
}

/**
 * `cols` orthonormal vectors of length `len` (torch.nn.init.orthogonal_ of a
 * Gaussian matrix: Gram–Schmidt, i.e. QR with a positive diagonal), as
 * column-major: vector c at [c·len, (c+1)·len).
 */
function randomOrthonormal(len: number, cols: number, gauss: () => number): Float64Array {
  const Q = new Float64Array(len * cols);
  for (let c = 0; c < cols; c++) {
    const v = Q.subarray(c * len, (c + 1) * len);
    for (let pass = 0; pass < 4; pass++) {
      if (pass === 0 || norm(v) < 1e-8) for (let i = 0; i < len; i++) v[i] = gauss();
      for (let rep = 0; rep < 2; rep++) {
        for (let p = 0; p < c; p++) {
          const w = Q.subarray(p * len, (p + 1) * len);
          let dot = 0;
          for (let i = 0; i < len; i++) dot += v[i] * w[i];
          for (let i = 0; i < len; i++) v[i] -= dot * w[i];
        }
      }
      if (norm(v) > 1e-8) break;
    }
    const nv = norm(v);
    for (let i = 0; i < len; i++) v[i] /= nv;
  }
  return Q;
}

function norm(v: Float64Array): number {
  let s = 0;
  for (const x of v) s += x * x;
  return Math.sqrt(s);
}

/** U [out, n], Vh [n, in], s [n] of a layer (float32, ready to upload). */
export function svftBasis(W: Float32Array, outF: number, inF: number, set: SvftSettings, random: () => number) {
  const nMax = Math.min(outF, inF);
  const keep = Math.max(1, Math.min(set.rank ?? nMax, nMax));
  const n = svftSize(outF, inF, set.rank, set.fillOrthonormal);
  const svd = keep === nMax ? svdFull(W, outF, inF) : svdTopR(W, outF, inF, keep, -1);
  const k = svd.k;
  const U = new Float32Array(outF * n),
    V = new Float32Array(n * inF),
    s = new Float32Array(n);
  for (let j = 0; j < keep; j++) {
    s[j] = svd.S[j];
    for (let o = 0; o < outF; o++) U[o * n + j] = svd.U[o * k + j];
    for (let c = 0; c < inF; c++) V[j * inF + c] = svd.V[c * k + j];
  }
  if (n > keep) {
    // fill_orthonormal: orthonormal among themselves (not against the kept vectors), σ = 0, as the plug-in.
    const g = gaussian(random);
    const ue = randomOrthonormal(outF, n - keep, g);
    const ve = randomOrthonormal(inF, n - keep, g);
    for (let j = keep; j < n; j++) {
      for (let o = 0; o < outF; o++) U[o * n + j] = ue[(j - keep) * outF + o];
      for (let c = 0; c < inF; c++) V[j * inF + c] = ve[(j - keep) * inF + c];
    }
  }
  return { U, V, s, n };
}

const prefix = (name: string) => `base_model.model.${name}.svft_layers`;

export const svft: PeftMethod = {
  name: 'svft',
  label: 'SVFT',
  family: SPECTRAL_FAMILY,
  description: 'Trains a sparse pattern of the singular-value matrix of each targeted weight (W = U (S + M) Vᵀ); default targets q_proj, k_proj.',
  order: 10.1,
  options,
  peftType: 'SVFT',
  /**
   * The base matmul of a target is replaced by z = x Vᵀ (2·n·in),
   * z' = z (diag(s) + σ(g)M)ᵀ (2·(n + k), k the pattern size), y = z' Uᵀ
   * (2·n·out): negative extra when a truncated rank makes it cheaper.
   */
  flops(ctx) {
    const s = svftSettings(ctx.config);
    const replaced: string[] = [];
    let f = 0;
    for (const l of flopsTargets(ctx.linears, s.targets, 'target_modules', 'svft')) {
      const n = svftSize(l.outF, l.inF, s.rank, s.fillOrthonormal);
      const k = svftPatternSize(n, s.offDiag, s.pattern);
      f += ctx.batch * ctx.seq * (2 * n * l.inF + 2 * (n + k) + 2 * n * l.outF);
      replaced.push(l.name);
    }
    return { flops: f, replaced };
  },
  configFromAdapter(c) {
    return {
      finetuning_type: 'svft',
      target_modules: c.target_modules ?? null,
      rank: c.rank ?? null,
      off_diag: c.off_diag ?? 1,
      pattern: c.pattern ?? 'banded',
      fill_orthonormal: !!c.fill_orthonormal,
    };
  },
  attach(ctx: MethodContext): AttachedSvft {
    const { e, model, config } = ctx;
    const set = svftSettings(config);
    const targets = matchTargets(model.linearNames(), set.targets);
    if (targets.length === 0) {
      throw new ConfigError(`target_modules ${JSON.stringify(set.targets)} matches no linear layer; use names such as q_proj, k_proj or 'all'.`);
    }
    const layers = new Map<string, SvftLayer>();
    // Shapes are known now (k too: only top_k's positions wait for σ); contents come with the SVD.
    for (const name of targets) {
      const [outF, inF] = model.weightShape(`${name}.weight`);
      const n = svftSize(outF, inF, set.rank, set.fillOrthonormal);
      const k = svftPatternSize(n, set.offDiag, set.pattern);
      const t = (shape: number[], what: string) => e.persist(e.zeros(shape, `${name}.svft.${what}`));
      const l: SvftLayer = {
        outF,
        inF,
        n,
        U: t([outF, n], 'u'),
        V: t([n, inF], 'v'),
        s: t([n], 's_base'),
        delta: t([k], 'delta'),
        gate: t([1], 'gate'),
        pattern: null,
        patT: null,
      };
      l.delta.requiresGrad = l.gate.requiresGrad = true;
      layers.set(name, l);
    }
    let initialised = false;
    let cancelled = false;
    let initError: Error | null = null;

    const setPattern = (l: SvftLayer, rows: ArrayLike<number>, cols: ArrayLike<number>) => {
      const pat = svftPattern(l.n, rows, cols);
      l.patT?.dispose();
      l.pattern = pat;
      l.patT = e.persist(uploadSvftPattern(e, pat));
    };

    const init = async () => {
      for (const [name, l] of layers) {
        const W = await e.read(model.param(`${name}.weight`));
        if (cancelled) return;
        const { U, V, s } = svftBasis(W, l.outF, l.inF, set, ctx.random);
        e.write(l.U, U);
        e.write(l.V, V);
        e.write(l.s, s);
        const pos = svftPositions(l.n, set.offDiag, set.pattern, s, ctx.random);
        setPattern(l, pos.rows, pos.cols);
        if (l.pattern!.k !== l.delta.size) throw new Error(`SVFT ${name}: pattern has ${l.pattern!.k} positions, δ was sized ${l.delta.size}`);
      }
      initialised = true;
    };
    let chain: Promise<void> = init().catch((err: Error) => {
      initError = err;
      throw err;
    });
    // Nobody may be awaiting yet: keep an unobserved failure from crashing the host; it resurfaces in ready/forward.
    chain.catch(() => {});

    const detachHooks = model.attach({
      linear: (name, x, inner) => {
        const l = layers.get(name);
        if (!l) return inner(x);
        if (!initialised) throw initError ?? new ConfigError("SVFT is still computing its SVDs: await the attached method's `ready` before the first forward.");
        // y = ((x Vᵀ)(diag(s) + σ(g) M)ᵀ) Uᵀ + bias; the base weight is not read.
        const z = matmul(e, x, l.V, { transB: true, name: `${name}.svft_z` });
        const zs = svftSpectral(e, z, l.s, l.delta, l.gate, l.pattern!, l.patT!, `${name}.svft_zs`);
        return matmul(e, zs, l.U, { transB: true, bias: model.params.get(`${name}.bias`) ?? null, name });
      },
    });

    const tensorKeys = ['u', 'v', 's_base', 'row_idx', 'col_idx', 'delta', 'gate'] as const;

    const self: AttachedSvft = {
      get ready() {
        return chain;
      },
      // Per target: z = x Vᵀ and its spectral mix [tokens, n] (the output replaces the base linear's).
      memory: () => ({
        activations: [...layers].map(([name, l]) => ({ layer: layerOf(name), perToken: l.n, count: 2 })),
        gradientFromLayer: firstLayerOf(layers.keys()),
      }),
      trainable(): TrainableParam[] {
        const out: TrainableParam[] = [];
        for (const [name, l] of layers) {
          out.push({ name: `${prefix(name)}.delta`, tensor: l.delta });
          out.push({ name: `${prefix(name)}.gate`, tensor: l.gate });
        }
        return out;
      },
      async exportAdapter(): Promise<AdapterFiles> {
        await chain;
        const tensors = new Map<string, HostTensor>();
        for (const [name, l] of layers) {
          const p = prefix(name);
          const pat = l.pattern!;
          tensors.set(`${p}.u`, { shape: [l.outF, l.n], data: await e.read(l.U) });
          tensors.set(`${p}.v`, { shape: [l.n, l.inF], data: await e.read(l.V) });
          tensors.set(`${p}.s_base`, { shape: [l.n], data: await e.read(l.s) });
          // int64 buffers in PyTorch; written as integer-valued floats until HostTensor carries a dtype (see the report).
          tensors.set(`${p}.row_idx`, { shape: [pat.k], data: Float32Array.from(pat.rows), dtype: 'I64' });
          tensors.set(`${p}.col_idx`, { shape: [pat.k], data: Float32Array.from(pat.cols), dtype: 'I64' });
          tensors.set(`${p}.delta`, { shape: [pat.k], data: await e.read(l.delta) });
          tensors.set(`${p}.gate`, { shape: [], data: await e.read(l.gate) });
        }
        const modules = [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort();
        return { config: svftAdapterConfig(config, set, modules), tensors };
      },
      importAdapter(files: AdapterFiles): void {
        const apply = () => {
          for (const [name, l] of layers) {
            const p = prefix(name);
            const get = (k: (typeof tensorKeys)[number], shape: number[]) => {
              const src = files.tensors.get(`${p}.${k}`);
              if (!src) throw new ConfigError(`The adapter has no tensor ${p}.${k}; was it trained with the same target_modules and model?`);
              if (src.shape.join() !== shape.join()) {
                throw new ConfigError(
                  `Adapter tensor ${p}.${k} has shape [${src.shape}], expected [${shape}]; set rank, off_diag, pattern and fill_orthonormal as in its adapter_config.json.`,
                );
              }
              return src.data;
            };
            const k = l.delta.size;
            e.write(l.U, get('u', [l.outF, l.n]));
            e.write(l.V, get('v', [l.n, l.inF]));
            e.write(l.s, get('s_base', [l.n]));
            setPattern(l, get('row_idx', [k]), get('col_idx', [k]));
            if (l.pattern!.k !== k) throw new ConfigError(`Adapter ${p}.row_idx/col_idx hold ${l.pattern!.k} distinct positions, expected ${k}.`);
            // The file's order is row-major sorted (the plug-in's torch.unique); δ follows it.
            e.write(l.delta, get('delta', [k]));
            const g = files.tensors.get(`${p}.gate`);
            if (!g || g.data.length !== 1) throw new ConfigError(`The adapter has no scalar ${p}.gate.`);
            e.write(l.gate, g.data);
          }
        };
        if (initialised) apply();
        else {
          chain = chain.then(apply);
          chain.catch(() => {});
        }
      },
      async merge(): Promise<void> {
        await chain;
        // W ← U (diag(s) + σ(g) M) V (exact; with a truncated rank the tail is dropped, as the plug-in).
        const tape = e.tape;
        e.tape = null;
        for (const [name, l] of layers) {
          e.beginScope();
          const SV = svftScaleRows(e, l.V, l.s, l.delta, l.gate, l.pattern!, l.patT!);
          matmul(e, l.U, SV, { out: model.param(`${name}.weight`) });
          e.endScope();
        }
        e.tape = tape;
        await e.sync();
        self.detach();
      },
      detach(): void {
        cancelled = true;
        detachHooks();
        for (const l of layers.values()) for (const t of [l.U, l.V, l.s, l.delta, l.gate, l.patT]) t?.dispose();
        layers.clear();
      },
    };
    return self;
  },
};

/** adapter_config.json: PEFT-Factory's SVFTConfig fields and PEFT's base fields (METHODS.md §10.1). */
export function svftAdapterConfig(config: Record<string, unknown>, set: SvftSettings, modules: string[]): Record<string, unknown> {
  return {
    auto_mapping: null,
    base_model_name_or_path: config.model_name_or_path ?? null,
    fill_orthonormal: set.fillOrthonormal,
    inference_mode: true,
    off_diag: set.offDiag,
    pattern: set.pattern,
    peft_type: 'SVFT',
    peft_version: '0.17.1',
    rank: set.rank,
    revision: null,
    target_modules: modules,
    task_type: 'CAUSAL_LM',
  };
}

export default svft;
