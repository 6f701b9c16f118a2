/**
 * GaLore (METHODS.md §11): full fine-tuning (every weight trains, as
 * peft/full) with GaLore's AdamW, whose moments for the targeted 2-D weights
 * live in a rank-r projection of the gradient. Selected by finetuning_type:
 * full + use_galore.
 *
 * Per targeted weight W [m, n] with gradient G (t = its step before the
 * increment, r = min(galore_rank, m, n)):
 *   every galore_update_interval steps (t mod gap = 0): G = U S Vh (float64
 *   SVD on the host, from a GPU read-back), projector(s) from the top r:
 *     right  R = Vh[:r, :]  [r, n]   Ĝ = G Rᵀ  [m, r]   Δ = N R
 *     left   L = U[:, :r]   [m, r]   Ĝ = Lᵀ G  [r, n]   Δ = L N
 *     full   both           Ĝ = Lᵀ G Rᵀ [r, r]       Δ = L N R
 *   (std: right when m ≥ n, else left; reverse_std the other way round)
 *   m ← β1 m + (1−β1) Ĝ;  v ← β2 v + (1−β2) Ĝ²;  N = m / (√v + eps)
 *   W ← (W − step · scale · Δ) (1 − lr·wd),   step = lr √(1−β2^t) / (1−β1^t)
 * The moments are neither reset nor rotated when the projector changes. The
 * gradient is clipped (the trainer's GPU clip factor) before projection.
 * Every other trainable tensor (embeddings, norms, an untied lm_head, biases)
 * takes the same AdamW without projection: §11 runs galore_torch.AdamW on all
 * groups, so they too get eps outside the bias correction and decay after the
 * step (HF decay rule: none on norms and biases).
 *
 * On the GPU a GaLore step is: one matmul to project, one moments kernel
 * (writing N over Ĝ), one matmul that projects back and applies step, scale
 * and decay (W = β W + α N R with β = 1 − lr·wd, α = −step·scale·β); two
 * more with proj_type full. Optimizer state per weight: m and v in the
 * low-rank shape plus the projector(s) — see `galoreStateShapes`.
 *
 * galore_layerwise: galore_torch steps each parameter from its gradient hook,
 * so the gradient is used unclipped and there is no gradient accumulation;
 * here the math is reproduced (clip ignored, accumulation rejected), not the
 * memory saving of freeing each gradient early.
 *
 * Export: the trained model, as peft/full (HF names, model.safetensors).
 */
import type { Engine } from 'peft-studio/engine/engine';
import type { Tensor } from 'peft-studio/engine/tensor';
import { matmulKernel } from 'peft-studio/engine/ops/matmul';
import { galoreAdamwStep, galoreMoments, galoreStepSize } from './ops';
import { ConfigError } from 'peft-studio/errors';
import { readOptions } from 'peft-studio/methods/options';
import { svdTopR } from 'peft-studio/methods/svd';
import type { ActivationTensor, AdapterFiles, AttachedMethod, MethodContext, OptimizerUpdate, PeftMethod, TrainableParam } from 'peft-studio/methods/types';
import { attachFull, FULL_FAMILY } from '../full/method';
import { galoreOptions } from './config';

export type GaloreProjType = 'std' | 'reverse_std' | 'right' | 'left' | 'full';
export type GaloreSide = 'left' | 'right' | 'full';

export interface GaloreSettings {
  rank: number;
  updateInterval: number;
  scale: number;
  projType: GaloreProjType;
  layerwise: boolean;
}

export function galoreSettings(config: Record<string, unknown>): GaloreSettings & { targets: string[] } {
  const o = readOptions(galoreOptions, config, 'galore');
  return {
    rank: o.galore_rank,
    updateInterval: o.galore_update_interval,
    scale: o.galore_scale,
    projType: o.galore_proj_type,
    layerwise: o.galore_layerwise,
    targets: o.galore_target,
  };
}

/** Which side a [m, n] gradient is projected on (§11 table). */
export function galoreSide(projType: GaloreProjType, m: number, n: number): GaloreSide {
  switch (projType) {
    case 'std':
      return m >= n ? 'right' : 'left';
    case 'reverse_std':
      return m >= n ? 'left' : 'right';
    default:
      return projType;
  }
}

/** Shapes of the low-rank moments and the projectors of one [m, n] weight. */
export function galoreStateShapes(projType: GaloreProjType, rank: number, m: number, n: number) {
  const r = Math.min(rank, m, n);
  const side = galoreSide(projType, m, n);
  const low: [number, number] = side === 'right' ? [m, r] : side === 'left' ? [r, n] : [r, r];
  return {
    side,
    r,
    low,
    left: side === 'right' ? null : ([m, r] as [number, number]),
    right: side === 'left' ? null : ([r, n] as [number, number]),
  };
}

/** Module names GaLore projects: LLaMA-Factory's `any(target in name)` over the linear layers ('all': every one). */
export function galoreTargets(linearNames: string[], target: unknown): string[] {
  const list =
    target === undefined || target === null
      ? ['all']
      : typeof target === 'string'
        ? target
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : (target as string[]);
  if (list.length === 1 && list[0] === 'all') return linearNames;
  return linearNames.filter((name) => list.some((t) => name.includes(t)));
}

interface ProjectedState {
  m: number;
  n: number;
  side: GaloreSide;
  r: number;
  low: [number, number];
  expAvg: Tensor;
  expAvgSq: Tensor;
  /** U[:, :r], [m, r] (left and full). */
  left: Tensor | null;
  /** Vh[:r, :], [r, n] (right and full). */
  right: Tensor | null;
  /** A projector has been computed or may have been restored (checkpoint). */
  hasProjector: boolean;
}

export function attachGalore(ctx: MethodContext): AttachedMethod {
  const { e, model, config } = ctx;
  const s = galoreSettings(config);
  if (s.layerwise && Number(config.gradient_accumulation_steps ?? 1) > 1) {
    throw new ConfigError(
      'galore_layerwise steps each weight as soon as its gradient is ready, so it cannot accumulate gradients: set gradient_accumulation_steps: 1 or galore_layerwise: false.',
    );
  }
  const targets = galoreTargets(model.linearNames(), s.targets);
  if (targets.length === 0) {
    throw new ConfigError(`galore_target ${JSON.stringify(s.targets)} matches no linear layer; use 'all' or names such as q_proj, v_proj, mlp.`);
  }
  const targetWeights = new Set(targets.map((t) => `${t}.weight`));
  const inner = attachFull(ctx);
  const owned: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => {
    owned.push(e.persist(t));
    return t;
  };
  const ones = s.layerwise ? keep(e.upload(new Float32Array([1]), [1], 'galore.no_clip')) : null;
  // An update returns a Promise only at projector refreshes (GPU read-back + SVD);
  // a second update while one is pending means the caller did not await it.
  let pending = 0;
  // projectedStep's scratch per projected weight (the low-rank gradient; proj_type full: two more), released
  // only when the step's commands are submitted, so all of them at once: the memory estimate's share of the update.
  const scratch: ActivationTensor[] = [];

  const params: TrainableParam[] = inner.trainable().map((p) => {
    if (targetWeights.has(p.name) && p.tensor.shape.length === 2) {
      const [m, n] = p.tensor.shape;
      const sh = galoreStateShapes(s.projType, s.rank, m, n);
      scratch.push({ fixed: sh.low[0] * sh.low[1], grad: false, update: true });
      if (sh.side === 'full') scratch.push({ fixed: sh.r * n, grad: false, update: true }, { fixed: m * sh.r, grad: false, update: true });
      const st: ProjectedState = {
        m,
        n,
        side: sh.side,
        r: sh.r,
        low: sh.low,
        expAvg: keep(e.zeros(sh.low, `${p.name}.galore_exp_avg`)),
        expAvgSq: keep(e.zeros(sh.low, `${p.name}.galore_exp_avg_sq`)),
        left: sh.left ? keep(e.zeros(sh.left, `${p.name}.galore_proj_left`)) : null,
        right: sh.right ? keep(e.zeros(sh.right, `${p.name}.galore_proj_right`)) : null,
        hasProjector: false,
      };
      return {
        ...p,
        update: (u: OptimizerUpdate) => {
          if (pending) throw new Error(notAwaited);
          const t = u.step - 1;
          if (!st.hasProjector || t % s.updateInterval === 0) {
            pending++;
            return (async () => {
              try {
                await refreshProjector(e, u.grad, st);
              } finally {
                pending--;
              }
              projectedStep(e, p.tensor, u, st, s, ones ?? u.clip);
            })();
          }
          projectedStep(e, p.tensor, u, st, s, ones ?? u.clip);
        },
        state: () => {
          // A checkpoint may write these (resume): from then on the projector is the saved one.
          st.hasProjector = true;
          const out = new Map<string, Tensor>([
            ['galore_exp_avg', st.expAvg],
            ['galore_exp_avg_sq', st.expAvgSq],
          ]);
          if (st.left) out.set('galore_proj_left', st.left);
          if (st.right) out.set('galore_proj_right', st.right);
          return out;
        },
      };
    }
    const expAvg = keep(e.zeros(p.tensor.shape, `${p.name}.galore_exp_avg`));
    const expAvgSq = keep(e.zeros(p.tensor.shape, `${p.name}.galore_exp_avg_sq`));
    return {
      ...p,
      update: (u: OptimizerUpdate) => {
        if (pending) throw new Error(notAwaited);
        galoreAdamwStep(e, p.tensor, u.grad, expAvg, expAvgSq, ones ?? u.clip, u);
      },
      state: () =>
        new Map([
          ['galore_exp_avg', expAvg],
          ['galore_exp_avg_sq', expAvgSq],
        ]),
    };
  });

  return {
    trainable: () => params,
    memory: () => ({ activations: scratch }),
    async exportAdapter(): Promise<AdapterFiles> {
      const files = await inner.exportAdapter();
      return {
        config: {
          ...files.config,
          use_galore: true,
          galore_target: targets.length === model.linearNames().length ? 'all' : [...new Set(targets.map((t) => t.split('.').at(-1)!))].sort(),
          galore_rank: s.rank,
          galore_update_interval: s.updateInterval,
          galore_scale: s.scale,
          galore_proj_type: s.projType,
          galore_layerwise: s.layerwise,
        },
        tensors: files.tensors,
      };
    },
    importAdapter: (files) => inner.importAdapter(files),
    async merge(): Promise<void> {
      await inner.merge!();
      this.detach();
    },
    detach(): void {
      inner.detach();
      for (const t of owned) t.dispose();
      owned.length = 0;
    },
  };
}

const notAwaited =
  'GaLore: an optimizer update started while a projector refresh (GPU read-back + SVD) was still running. ' +
  'The trainer must await TrainableParam.update, which returns a Promise at refresh steps.';

/** P from the top-r singular vectors of the current gradient (float64 SVD on the host). */
async function refreshProjector(e: Engine, grad: Tensor, st: ProjectedState): Promise<void> {
  const G = await e.read(grad);
  const { U, V, k } = svdTopR(G, st.m, st.n, st.r, -1);
  if (st.left) {
    // U is m×k row-major: U[:, :r] is the whole of it (k = r).
    e.write(st.left, Float32Array.from(U));
  }
  if (st.right) {
    // Vh[:r, :] = Vᵀ: R[j][c] = V[c][j].
    const R = new Float32Array(st.r * st.n);
    for (let j = 0; j < st.r; j++) for (let c = 0; c < st.n; c++) R[j * st.n + c] = V[c * k + j];
    e.write(st.right, R);
  }
  st.hasProjector = true;
}

/** Project, update the low-rank moments, project back onto W with step, scale and decay (§11). */
function projectedStep(e: Engine, W: Tensor, u: OptimizerUpdate, st: ProjectedState, s: GaloreSettings, clip: Tensor): void {
  const { m, n, r, side } = st;
  const G = u.grad;
  const low = e.empty(st.low, 'galore.low_rank_grad');
  let tmp: Tensor | null = null;
  if (side === 'right') matmulKernel(e, low, G, st.right!, m, r, n, { transB: true });
  else if (side === 'left') matmulKernel(e, low, st.left!, G, r, n, m, { transA: true });
  else {
    tmp = e.empty([r, n], 'galore.tmp');
    matmulKernel(e, tmp, st.left!, G, r, n, m, { transA: true });
    matmulKernel(e, low, tmp, st.right!, r, r, n, { transB: true });
  }
  galoreMoments(e, low, st.expAvg, st.expAvgSq, clip, u);
  const decay = 1 - u.lr * u.weightDecay;
  const alpha = -galoreStepSize(u) * s.scale * decay;
  if (side === 'right') matmulKernel(e, W, low, st.right!, m, n, r, { alpha, beta: decay });
  else if (side === 'left') matmulKernel(e, W, st.left!, low, m, n, r, { alpha, beta: decay });
  else {
    tmp!.dispose();
    tmp = e.empty([m, r], 'galore.tmp');
    matmulKernel(e, tmp, st.left!, low, m, r, r, {});
    matmulKernel(e, W, tmp, st.right!, m, n, r, { alpha, beta: decay });
  }
  tmp?.dispose();
  low.dispose();
}

export const galore: PeftMethod = {
  name: 'galore',
  label: 'GaLore',
  family: FULL_FAMILY,
  description: 'Full fine-tuning whose AdamW moments live in a low-rank projection of each gradient (refreshed by SVD).',
  order: 11,
  options: galoreOptions,
  select: { finetuning_type: 'full', key: 'use_galore', value: true },
  configProblems(c) {
    if (!c.use_galore || c.finetuning_type === 'full') return [];
    return [`use_galore: GaLore is an optimizer for finetuning_type: full, not '${String(c.finetuning_type)}'.`];
  },
  // The forward is the base model's: GaLore changes only the optimizer.
  flops: () => ({ flops: 0 }),
  attach: attachGalore,
};

export default galore;
