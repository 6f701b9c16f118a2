/**
 * PiSSA (METHODS.md §8): LoRA whose A, B start from the principal singular
 * triplets of W, with the frozen base replaced by the residual.
 *
 *   W = U S Vᵀ,  S' = S[:r] / s
 *   B = U[:, :r] diag(√S')   [out, r]      A = diag(√S') V[:, :r]ᵀ   [r, in]
 *   W_res = W − s·B A                       (written into model.param(W))
 *
 * so W_res + s·BA = W at step 0. Forward, backward, trainable tensors and
 * export keys are LoRA's (peft/lora/method.ts does all of it here).
 * pissa_iter = k ≥ 0: randomized SVD with k subspace iterations (PEFT
 * "pissa_niter_k"); -1: exact SVD ("pissa"). The SVD runs on the CPU in
 * float64 (src/methods/svd.ts) after reading W back, so initialisation is
 * asynchronous: await `ready` before training (a training forward before then
 * throws). The Gaussian sketch of each layer is seeded by the module name, so
 * re-attaching to the same base rebuilds the same W_res (native adapters with
 * pissa_niter_k reload exactly here; Python PEFT draws a different sketch).
 *
 * Export (§8): `exportAdapter` writes the native form (LoRA keys with the
 * trained A, B; init_lora_weights "pissa" / "pissa_niter_k"). `exportConverted`
 * writes the rank-2r LoRA for the unmodified base (LLaMA-Factory
 * pissa_convert): A' = [A; A₀], B' = [B, −B₀], r' = 2r, alpha' = 2α (α√2 with
 * rsLoRA), init_lora_weights true, so s'·B'A' = s·(BA − B₀A₀).
 * `extraAdapters` names both sub-folders LLaMA-Factory writes with
 * pissa_convert (pissa_init/, pissa_converted/).
 * Merge: W_res + s·BA (exact). Detach restores W = W_res + s·B₀A₀.
 */
import { matmulKernel } from 'peft-studio/engine/ops/matmul';
import { ConfigError } from 'peft-studio/errors';
import { readOptions } from 'peft-studio/methods/options';
import { svdTopR } from 'peft-studio/methods/svd';
import { type AdapterFiles, type AttachedMethod, type HostTensor, type MethodContext, type PeftMethod } from 'peft-studio/methods/types';
import { loraOptions } from '../lora/config';
import { LORA_FAMILY, lora, loraFlops, loraKeysFromAdapter, loraSettings, loraTargets } from '../lora/method';
import { pissaOptions } from './config';

export interface AttachedPissa extends AttachedMethod {
  /** Resolves when every target holds its SVD initialisation (and any import issued before is applied). */
  readonly ready: Promise<void>;
  /** The adapter as a plain rank-2r LoRA on the original base weights (§8 form 2). */
  exportConverted(): Promise<AdapterFiles>;
  /** Sub-folders LLaMA-Factory writes next to the adapter: pissa_init/ always, pissa_converted/ with pissa_convert. */
  extraAdapters(): Promise<Map<string, AdapterFiles>>;
  /** Seconds the SVDs took (CPU), per target, once ready. */
  readonly svdSeconds: Map<string, number>;
}

interface Initial {
  A0: Float32Array;
  B0: Float32Array;
  outF: number;
  inF: number;
}

const key = (name: string, which: 'A' | 'B') => `base_model.model.${name}.lora_${which}.weight`;

/** FNV-1a of the module name: a per-layer sketch seed independent of run seeds. */
function nameSeed(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** PEFT's init_lora_weights value for a pissa_iter. */
export function pissaInitName(iters: number): string {
  return iters === -1 ? 'pissa' : `pissa_niter_${iters}`;
}

/**
 * A, B and W_res of one weight (row-major, float32 like PEFT's fp32 path):
 * W_res is formed in float64 from the float32-rounded A and B, so that the
 * model's float32 forward sees W_res + s·BA = W up to one rounding of W_res.
 */
export function pissaInit(W: Float32Array, outF: number, inF: number, r: number, s: number, iters: number, seed: number) {
  const { U, S, V } = svdTopR(W, outF, inF, r, iters, { seed });
  const root = Array.from(S, (x) => Math.sqrt(x / s));
  const B = new Float32Array(outF * r);
  const A = new Float32Array(r * inF);
  for (let o = 0; o < outF; o++) for (let j = 0; j < r; j++) B[o * r + j] = U[o * r + j] * root[j];
  for (let j = 0; j < r; j++) for (let i = 0; i < inF; i++) A[j * inF + i] = root[j] * V[i * r + j];
  const Wres = new Float32Array(outF * inF);
  const row = new Float64Array(r);
  for (let o = 0; o < outF; o++) {
    for (let j = 0; j < r; j++) row[j] = s * B[o * r + j];
    for (let i = 0; i < inF; i++) {
      let ba = 0;
      for (let j = 0; j < r; j++) ba += row[j] * A[j * inF + i];
      Wres[o * inF + i] = W[o * inF + i] - ba;
    }
  }
  return { A, B, Wres, S };
}

export interface PissaMethod extends PeftMethod {
  attach(ctx: MethodContext): AttachedPissa;
}

export const pissa: PissaMethod = {
  name: 'pissa',
  label: 'PiSSA',
  family: LORA_FAMILY,
  description: 'LoRA started from the principal singular vectors of each weight; the frozen base keeps the residual.',
  order: 8,
  options: [...loraOptions, ...pissaOptions],
  select: { finetuning_type: 'lora', key: 'pissa_init', value: true },
  flops: (ctx) => ({ flops: loraFlops(ctx, 'pissa') }),
  peftType: 'LORA',
  configFromAdapter(c) {
    const init = String(c.init_lora_weights ?? '');
    const match = /^pissa(?:_niter_(\d+))?$/.exec(init);
    if (!match || c.use_dora) return null;
    return { ...loraKeysFromAdapter(c), pissa_init: true, pissa_iter: match[1] === undefined ? -1 : Number(match[1]) };
  },
  attach(ctx: MethodContext): AttachedPissa {
    const { e, model, config } = ctx;
    const { r, alpha, s, lora_target, use_rslora } = loraSettings(config, 'pissa');
    const { pissa_iter: iters, pissa_convert } = readOptions(pissaOptions, config, 'pissa');
    const targets = loraTargets(model, lora_target);
    for (const name of targets) {
      const [outF, inF] = model.param(`${name}.weight`).shape;
      if (r > Math.min(outF, inF)) {
        throw new ConfigError(`lora_rank ${r} exceeds the rank min(${outF}, ${inF}) of ${name}; PiSSA needs r ≤ min(out, in).`);
      }
    }
    // The LoRA attachment: A, B, the forward hook, export keys, merge.
    const inner = lora.attach(ctx);
    const tensors = new Map(inner.trainable().map((p) => [p.name, p.tensor]));
    const initial = new Map<string, Initial>();
    const svdSeconds = new Map<string, number>();
    let initialised = false;
    let cancelled = false;
    let initError: Error | null = null;

    const targetSet = new Set(targets);
    const guard = model.attach({
      linear: (name, x, next) => {
        if (!initialised && e.tape && targetSet.has(name)) {
          throw initError ?? new ConfigError("PiSSA is still computing its SVD initialisation: await the attached method's `ready` before training.");
        }
        return next(x);
      },
    });

    const init = async () => {
      for (const name of targets) {
        const Wt = model.param(`${name}.weight`);
        const [outF, inF] = Wt.shape;
        const W = await e.read(Wt);
        if (cancelled) return;
        const t0 = performance.now();
        const { A, B, Wres } = pissaInit(W, outF, inF, r, s, iters, nameSeed(name));
        svdSeconds.set(name, (performance.now() - t0) / 1000);
        // One synchronous block per layer: no forward can see W_res without its A, B.
        e.write(tensors.get(key(name, 'A'))!, A);
        e.write(tensors.get(key(name, 'B'))!, B);
        e.write(Wt, Wres);
        initial.set(name, { A0: A, B0: B, outF, inF });
      }
      initialised = true;
    };
    let chain: Promise<void> = init().catch((err: Error) => {
      initError = err;
      throw err;
    });
    // Nobody may be awaiting yet: keep an unobserved failure from crashing the host; it resurfaces in ready/hooks.
    chain.catch(() => {});

    let merged = false;
    const restoreBase = () => {
      // W = W_res + s·B₀A₀ for every layer already initialised.
      for (const [name, l] of initial) {
        const A0 = e.upload(l.A0, [r, l.inF]);
        const B0 = e.upload(l.B0, [l.outF, r]);
        matmulKernel(e, model.param(`${name}.weight`), B0, A0, l.outF, l.inF, r, { alpha: s, beta: 1 });
        A0.dispose();
        B0.dispose();
      }
      e.flush();
    };

    const nativeConfig = (files: AdapterFiles) => ({ ...files.config, init_lora_weights: pissaInitName(iters) });

    const self: AttachedPissa = {
      get ready() {
        return chain;
      },
      svdSeconds,
      trainable: () => inner.trainable(),
      // LoRA's forward (the residual base weight replaces W in place).
      memory: () => inner.memory?.() ?? {},
      async exportAdapter(): Promise<AdapterFiles> {
        await chain;
        const files = await inner.exportAdapter();
        return { config: nativeConfig(files), tensors: files.tensors };
      },
      importAdapter(files: AdapterFiles): void {
        // Native PiSSA: the SVD of the original base rebuilds W_res, then A, B come from the file.
        if (initialised) inner.importAdapter(files);
        else {
          chain = chain.then(() => inner.importAdapter(files));
          chain.catch(() => {});
        }
      },
      async exportConverted(): Promise<AdapterFiles> {
        await chain;
        const files = await inner.exportAdapter();
        const out = new Map<string, HostTensor>();
        for (const [name, l] of initial) {
          const A = files.tensors.get(key(name, 'A'))!.data;
          const B = files.tensors.get(key(name, 'B'))!.data;
          // A' = concat_rows(A, A₀) [2r, in];  B' = concat_cols(B, −B₀) [out, 2r].
          const A2 = new Float32Array(2 * r * l.inF);
          A2.set(A, 0);
          A2.set(l.A0, r * l.inF);
          const B2 = new Float32Array(l.outF * 2 * r);
          for (let o = 0; o < l.outF; o++) {
            for (let j = 0; j < r; j++) {
              B2[o * 2 * r + j] = B[o * r + j];
              B2[o * 2 * r + r + j] = -l.B0[o * r + j];
            }
          }
          out.set(key(name, 'A'), { shape: [2 * r, l.inF], data: A2 });
          out.set(key(name, 'B'), { shape: [l.outF, 2 * r], data: B2 });
        }
        const c = files.config;
        const double = (pattern: unknown, f: (v: number) => number) =>
          Object.fromEntries(Object.entries((pattern ?? {}) as Record<string, number>).map(([k, v]) => [k, f(v)]));
        return {
          config: {
            ...c,
            r: 2 * r,
            lora_alpha: use_rslora ? alpha * Math.SQRT2 : 2 * alpha,
            rank_pattern: double(c.rank_pattern, (v) => 2 * v),
            alpha_pattern: double(c.alpha_pattern, (v) => (use_rslora ? v * Math.SQRT2 : 2 * v)),
            init_lora_weights: true,
          },
          tensors: out,
        };
      },
      async extraAdapters(): Promise<Map<string, AdapterFiles>> {
        await chain;
        const out = new Map<string, AdapterFiles>();
        // pissa_init/: A₀, B₀ as LLaMA-Factory saves them (init_lora_weights written as true).
        const files = await inner.exportAdapter();
        const init = new Map<string, HostTensor>();
        for (const [name, l] of initial) {
          init.set(key(name, 'A'), { shape: [r, l.inF], data: l.A0 });
          init.set(key(name, 'B'), { shape: [l.outF, r], data: l.B0 });
        }
        out.set('pissa_init', { config: { ...files.config, init_lora_weights: true }, tensors: init });
        if (pissa_convert) out.set('pissa_converted', await self.exportConverted());
        return out;
      },
      async merge(): Promise<void> {
        await chain;
        guard();
        // LoRA's merge: W_res + s·BA, then its hooks and tensors go.
        await inner.merge!();
        merged = true;
        initial.clear();
      },
      detach(): void {
        cancelled = true;
        guard();
        if (!merged) {
          inner.detach();
          restoreBase();
        }
        initial.clear();
      },
    };
    return self;
  },
};

export default pissa;
