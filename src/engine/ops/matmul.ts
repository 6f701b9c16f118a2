/**
 * Matmul: C = alpha * op(A) @ op(B) + beta * C (+ bias), batched, with either
 * operand transposed. Legend: M rows of C, N columns, K the contracted size.
 *
 * Backward, for C = op(A) op(B) with upstream dC:
 *   C = A B     : dA = dC B^T,   dB = A^T dC
 *   C = A B^T   : dA = dC B,     dB = dC^T A
 *   C = A^T B   : dA = B dC^T,   dB = A dC
 *   C = A^T B^T : dA = B^T dC^T, dB = dC^T A^T
 * each itself a matmul accumulating (beta = 1) into the gradient buffer.
 */
import code from '../../../shaders/matmul.wgsl?raw';
import codeV2 from '../../../shaders/matmul_v2.wgsl?raw';
import codeV3 from '../../../shaders/matmul_v3.wgsl?raw';
import codeV4 from '../../../shaders/matmul_v4.wgsl?raw';
import codeV5 from '../../../shaders/matmul_v5.wgsl?raw';
import codeV6 from '../../../shaders/matmul_v6.wgsl?raw';
import codePackedB from '../../../shaders/matmul_packed_b.wgsl?raw';
import codeV5PackedRegion from '../../../shaders/matmul_v5_packed_b.wgsl?raw';
import codeV6PackedRegion from '../../../shaders/matmul_v6_packed_b.wgsl?raw';
import codeGemv from '../../../shaders/matmul_gemv.wgsl?raw';
import codeGemvScalarRegion from '../../../shaders/matmul_gemv_scalar.wgsl?raw';
import codeGemvPackedRegion from '../../../shaders/matmul_gemv_packed_b.wgsl?raw';
import { grid1d } from './add';
import { copyColumns, packedConstant, toF32 } from './packed';
import { isCpuAdapter } from '../../gpu/device';
import { params } from '../engine';
import type { Engine } from '../engine';
import { needsGrad } from '../tape';
import type { StorageDtype, Tensor } from '../tensor';

/**
 * v4 reading a packed B (f16 / bf16 base weights, two per u32): the same
 * kernel text with every load of B unpacked, derived here from matmul_v4.wgsl
 * so the two cannot drift. A vec4 of B is one vec2<u32> of the packed
 * buffer (same index), so the addressing is unchanged; DT picks f16 or bf16.
 */
const codeV4PackedB = derivePackedB(codeV4);

function derivePackedB(src: string): string {
  const decl = '@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;';
  if (!src.includes(decl)) throw new Error('matmul_v4.wgsl: the declaration of B changed; update derivePackedB');
  const out = src
    .replace(
      decl,
      `@group(0) @binding(2) var<storage, read> Bp: array<vec2<u32>>;
override DT: u32 = 1u;
fn ldB(i: u32) -> vec4<f32> {
  let w = Bp[i];
  if (DT == 1u) {
    return vec4<f32>(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u), bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u));
  }
  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}`,
    )
    .replace(/\bB\[([^[\]]+)\]/g, 'ldB($1)');
  if (/\bB\[/.test(out.replace(/\/\/.*$/gm, ''))) throw new Error('matmul_v4.wgsl: a load of B was not rewritten; update derivePackedB');
  return out;
}

/**
 * v5 and v6 reading a packed B: the kernel's "packed-B region" (its f32 B
 * binding, loads and the code that moves op(B) into the tile or the lanes)
 * replaced by matmul_packed_b.wgsl (the u32 binding, unpack2, loadB2: one
 * word gives two neighbours along B's stored rows) and the kernel's own
 * packed region, which loads pairs. The rest of the kernel (A, the FMAs, the
 * stores) is the f32 kernel's text.
 */
const codeV5PackedB = withPackedRegion(codeV5, codeV5PackedRegion, 'matmul_v5.wgsl');
const codeV6PackedB = withPackedRegion(codeV6, codeV6PackedRegion, 'matmul_v6.wgsl');

/** gemv with its load region (A and B) swapped: any K in f32, or a packed B (matmul_gemv.wgsl). */
const codeGemvScalar = withLoadRegion(codeGemvScalarRegion);
const codeGemvPackedB = withLoadRegion(codeGemvPackedRegion);

function withLoadRegion(region: string): string {
  const marked = /\/\/ load region begin\n[\s\S]*?\/\/ load region end\n/;
  if (!marked.test(codeGemv)) throw new Error('matmul_gemv.wgsl: no load region; update withLoadRegion');
  return codeGemv.replace(marked, () => region);
}

function withPackedRegion(src: string, region: string, file: string): string {
  const marked = /\/\/ packed-B region begin\n[\s\S]*?\/\/ packed-B region end\n/;
  if (!marked.test(src)) throw new Error(`${file}: no packed-B region; update withPackedRegion`);
  const out = src.replace(marked, () => `${codePackedB}\n${region}`);
  if (/\bB\[/.test(out.replace(/\/\/.*$/gm, ''))) throw new Error(`${file}: a load of B outside its packed-B region; move it inside`);
  return out;
}

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** Number of batches; A, B and C hold `batch` matrices back to back. (To share one B, flatten the batch into M.) */
  batch?: number;
  alpha?: number;
  bias?: Tensor | null;
  /** Write into this tensor instead of a new one; with `accumulate`, C += result. */
  out?: Tensor;
  accumulate?: boolean;
  name?: string;
  /** Run the forward matmul as this kernel, and the backward ones where their shapes allow it (tests of each variant); default: see matmulVariants. */
  variant?: MatmulVariant;
}

/**
 * The kernels a matmul can run as (v2 is only a baseline, see matmulKernelV2):
 *   v1  workgroup-memory 64x64 tiles, 4x4 per thread; any shape
 *   v3  8x4 register blocks, vec4 loads; K % 4 == 0 (and M % 4 when transA, N % 4 unless transB)
 *   v4  RM x 16 register blocks, vec4 loads and stores; v3's conditions, N % 4 == 0, strides % 4 == 0
 *   v5  workgroup-memory 64x64 tiles, 8x8 per thread; any shape (for GPUs)
 *   v6  subgroup shuffles, 64x16 per workgroup; any shape, needs the `subgroups` feature
 *   gemv  few rows (decoding): A Bᵀ only (transB, not transA), M <= GEMV_MAX_M; any N, K
 * v4, v5 and v6 also read a packed (f16 / bf16) B in the kernel: v4 under its
 * own conditions, v5 and v6 when B's stored rows (K when transB, else N) and
 * strideB are even (one u32 holds two neighbours of a row); gemv when K and
 * the batch strides are multiples of 4.
 */
export type MatmulVariant = 'v1' | 'v3' | 'v4' | 'v5' | 'v6' | 'gemv';

/** The most rows of A gemv runs (one workgroup covers up to 8 rows); up to it, gemv is the default for x Bᵀ (see matmulVariants). */
export const GEMV_MAX_M = 8;

export interface MatmulKernelOptions {
  transA?: boolean;
  transB?: boolean;
  batch?: number;
  strideA?: number;
  strideB?: number;
  alpha?: number;
  beta?: number;
  bias?: Tensor | null;
  /** v4's rows per thread; default 16 on CPU adapters, 8 on GPUs (tests force each). */
  rowsPerThread?: 8 | 16;
  /** gemv's threads per block of 4 columns (they split its k loop); default 1 on CPU adapters, 32 on GPUs (tests force each). */
  gemvLanes?: 1 | 2 | 4 | 8 | 16 | 32 | 64;
  /** Run this kernel (it must be one of matmulVariants for the call); default: the autotuned choice, else the measured default. */
  variant?: MatmulVariant;
}

/**
 * The variants that can run a call, the default first; `dtypeB` is B's
 * storage: for a packed B, the kernels that read it packed (possibly none:
 * then matmulKernel unpacks B first and the f32 list applies). The default is
 * the winner of the measurements on SwiftShader (below): gemv for x Bᵀ with
 * at most GEMV_MAX_M rows, else v4 wherever its vec4 preconditions hold, else
 * v3, else v1. v5 and v6 are for GPUs: they run only when chosen (the
 * autotuner, src/engine/matmul-tune.ts, or a test).
 *
 * gemv vs v4, ms per call on SwiftShader (f32 / bf16 B; bench/packed-matmul,
 * loaded 2-core host): 1x32000x256 36 / 29 vs 124 / 104, 4x32000x256 78 / 60
 * vs 156 / 111, 8x32000x256 112 / 107 vs 161 / 124; 1x2048x2048 19 / 18 vs
 * 69 / 63, 4x2048x2048 30 / 31 vs 51 / 60; 1x8192x2048 57 / 71 vs 332 / 183,
 * 4x8192x2048 124 / 135 vs 282 / 330, 8x8192x2048 253 / 388 vs 307 / 616.
 * gemv's lead shrinks with rows (it computes each row's dot products apart)
 * but holds at 8.
 *
 * Measured on SwiftShader, ms per call (v2 / v3 / v4 RM 8 / v4 RM 16, best of
 * 6 rounds under a noisy host; 16 threads per workgroup instead of 64
 * measured no better): 512x64x64 A B^T 7 / 2.5 / 1.6-1.9 / 1.5, 512x172x64
 * 20 / 12 / 4.5 / 2.8, 512x64x172 20 / 6 / 4.1 / 3.3, 512x512x64 60 / 20 /
 * 12.3 / 11, 512x64x512 A B 52 / 16 / 8.5, 512x8x64 (LoRA) 2.4 / 0.9 / 0.6 / 0.6.
 * v2 is kept as the baseline.
 */
export function matmulVariants(e: Engine, M: number, N: number, K: number, o: MatmulKernelOptions = {}, dtypeB: StorageDtype = 'f32'): MatmulVariant[] {
  const vec4 = K % 4 === 0 && (!o.transA || M % 4 === 0) && (o.transB || N % 4 === 0);
  const strideB = o.strideB ?? K * N;
  const strides4 = (o.strideA ?? M * K) % 4 === 0 && strideB % 4 === 0;
  const v4 = vec4 && N % 4 === 0 && strides4;
  const subgroups = e.ctx.features.has('subgroups');
  const gemv = !!o.transB && !o.transA && M <= GEMV_MAX_M;
  const out: MatmulVariant[] = [];
  if (dtypeB !== 'f32') {
    const pairs = (o.transB ? K : N) % 2 === 0 && strideB % 2 === 0;
    const gemvPacked = gemv && K % 4 === 0 && strides4;
    if (gemvPacked) out.push('gemv');
    if (v4) out.push('v4');
    if (pairs) out.push('v5');
    if (pairs && subgroups) out.push('v6');
    return out;
  }
  if (gemv) out.push('gemv');
  if (v4) out.push('v4');
  if (vec4) out.push('v3');
  out.push('v1', 'v5');
  if (subgroups) out.push('v6');
  return out;
}

/**
 * Encode the raw kernel. Shapes are implied by M, N, K; no autograd.
 *
 * A packed B is read in the kernel by the chosen one of v4, v5, v6 (and gemv
 * for few rows) whenever the default (v4, or gemv) can read it (every linear
 * of a real model, forward and dX, and the head or its row blocks): the
 * autotuner then chooses among them per packed dtype. A forced v5 / v6 reads it packed wherever its pair condition
 * holds. Otherwise (A packed, odd shapes) the packed operand is unpacked into
 * a temporary f32 copy first, which is correct everywhere and costs one
 * weight's f32 bytes while it runs.
 */
export function matmulKernel(e: Engine, C: Tensor, A: Tensor, B: Tensor, M: number, N: number, K: number, o: MatmulKernelOptions): void {
  const batch = o.batch ?? 1;
  const dtypeB = B.dtype;
  const variants = matmulVariants(e, M, N, K, o, dtypeB);
  if (A.packed || (B.packed && !(o.variant ? variants.includes(o.variant) : variants[0] === 'v4' || variants[0] === 'gemv'))) {
    const a = A.packed ? toF32(e, A) : A;
    const b = B.packed ? toF32(e, B) : B;
    matmulKernel(e, C, a, b, M, N, K, o);
    if (a !== A) a.dispose();
    if (b !== B) b.dispose();
    return;
  }
  const bias = o.bias ?? A; // any bound buffer; unused when hasBias = 0
  let variant = o.variant ?? e.matmulTuner?.choose(M, N, K, o, variants, dtypeB) ?? variants[0];
  if (!variants.includes(variant)) {
    if (o.variant)
      throw new Error(
        `matmul: kernel ${o.variant} cannot run ${M}x${N}x${K} (transA ${!!o.transA}, transB ${!!o.transB}); it can run as ${variants.join(', ')}`,
      );
    variant = variants[0];
  }
  const args = params(
    M,
    N,
    K,
    batch,
    o.transA ? 1 : 0,
    o.transB ? 1 : 0,
    o.strideA ?? M * K,
    o.strideB ?? K * N,
    M * N,
    o.bias ? 1 : 0,
    { f: o.alpha ?? 1 },
    { f: o.beta ?? 0 },
  );
  const bindings = [{ tensor: A }, { tensor: B, packed: B.packed }, { tensor: bias }, { tensor: C, write: true }];
  const layout = { TA: o.transA ? 1 : 0, TB: o.transB ? 1 : 0, ...(B.packed ? { DT: packedConstant(dtypeB) } : {}) };
  switch (variant) {
    case 'v4': {
      const RM = o.rowsPerThread ?? (isCpuAdapter(e.ctx.adapterInfo) ? 16 : 8);
      const [x, y] = grid1d(e, Math.ceil(M / RM) * Math.ceil(N / 16), 64);
      e.dispatch(B.packed ? codeV4PackedB : codeV4, 'matmul', args, bindings, [x, y, batch], { ...layout, RM });
      break;
    }
    case 'v3':
      e.dispatch(codeV3, 'matmul', args, bindings, [Math.ceil(N / 32), Math.ceil(M / 64), batch], layout);
      break;
    case 'v5':
      e.dispatch(B.packed ? codeV5PackedB : codeV5, 'matmul', args, bindings, [Math.ceil(N / 64), Math.ceil(M / 64), batch], layout);
      break;
    case 'gemv': {
      const TK = o.gemvLanes ?? (isCpuAdapter(e.ctx.adapterInfo) ? 1 : 32);
      const MR = M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8;
      const vec = K % 4 === 0 && (o.strideA ?? M * K) % 4 === 0 && (o.strideB ?? K * N) % 4 === 0;
      const src = B.packed ? codeGemvPackedB : vec ? codeGemv : codeGemvScalar;
      const [x, y] = grid1d(e, Math.ceil(N / ((4 * 64) / TK)) * Math.ceil(M / MR), 1);
      e.dispatch(src, 'matmul', args, bindings, [x, y, batch], { MR, TK, ...(B.packed ? { DT: packedConstant(dtypeB) } : {}) });
      break;
    }
    case 'v6':
      e.dispatch(B.packed ? codeV6PackedB : codeV6, 'matmul', args, bindings, [Math.ceil(N / 16), Math.ceil(M / 64), batch], layout);
      break;
    default:
      e.dispatch(code, 'matmul', args, bindings, [Math.ceil(N / 64), Math.ceil(M / 64), batch]);
  }
}

/** The v2 kernel (4x4 register blocks), kept as the baseline v3 is measured against; same preconditions as v3. */
export function matmulKernelV2(
  e: Engine,
  C: Tensor,
  A: Tensor,
  B: Tensor,
  M: number,
  N: number,
  K: number,
  o: { transA?: boolean; transB?: boolean; batch?: number; alpha?: number; beta?: number },
): void {
  const batch = o.batch ?? 1;
  e.dispatch(
    codeV2,
    'matmul',
    params(M, N, K, batch, o.transA ? 1 : 0, o.transB ? 1 : 0, M * K, K * N, M * N, 0, { f: o.alpha ?? 1 }, { f: o.beta ?? 0 }),
    [{ tensor: A }, { tensor: B }, { tensor: A }, { tensor: C, write: true }],
    [Math.ceil(N / 32), Math.ceil(M / 32), batch],
  );
}

/** out[n] (+)= sum over rows of X [M, N]. */
export function sumRowsKernel(e: Engine, out: Tensor, X: Tensor, M: number, N: number, accumulate: boolean): void {
  e.dispatch(code, 'sum_rows', params(M, N, accumulate ? 1 : 0), [{ tensor: X }, { tensor: out, write: true }], [Math.ceil(N / 64)]);
}

/**
 * C = op(A) @ op(B). A's last two dims (or, with batch=1, all leading dims
 * flattened) give M and K; B is a 2-D [K,N] (or [N,K] when transB) matrix or
 * a batch of them.
 */
export function matmul(e: Engine, A: Tensor, B: Tensor, o: MatmulOptions = {}): Tensor {
  const batch = o.batch ?? 1;
  const aRows = A.shape.length >= 2 ? A.size / batch / A.shape[A.shape.length - 1] : 1;
  const aCols = A.shape[A.shape.length - 1];
  const [M, K] = o.transA ? [aCols, aRows] : [aRows, aCols];
  const bRows = B.shape[B.shape.length - 2];
  const bCols = B.shape[B.shape.length - 1];
  const [Kb, N] = o.transB ? [bCols, bRows] : [bRows, bCols];
  if (K !== Kb) throw new Error(`matmul ${o.name ?? ''}: inner sizes differ (A ${A.shape}${o.transA ? 'ᵀ' : ''}, B ${B.shape}${o.transB ? 'ᵀ' : ''})`);
  const outShape = batch > 1 ? [batch, M, N] : o.transA ? [M, N] : [...A.shape.slice(0, -1), N];
  if (B.blocks) return matmulSplitB(e, A, B, M, N, K, outShape, o);
  if (A.blocks) throw new Error(`matmul ${o.name ?? ''}: A (${A.name}) is split into row blocks; only a split B (the head) is supported`);
  const C = o.out ?? e.empty(outShape, o.name);
  const strideB = K * N;
  matmulKernel(e, C, A, B, M, N, K, {
    transA: o.transA,
    transB: o.transB,
    batch,
    strideA: M * K,
    strideB,
    alpha: o.alpha,
    beta: o.accumulate ? 1 : 0,
    bias: o.bias,
    variant: o.variant,
  });
  if (e.tape && needsGrad(A, B, o.bias)) {
    C.requiresGrad = true;
    const alpha = o.alpha ?? 1;
    const tA = !!o.transA,
      tB = !!o.transB;
    // A forced kernel runs the backward matmuls too, where their shapes allow it.
    const forced = o.variant;
    const fits = (m: number, n: number, k: number, ko: MatmulKernelOptions) => (forced && matmulVariants(e, m, n, k, ko).includes(forced) ? forced : undefined);
    e.tape.record('matmul', () => {
      const dC = C.grad;
      if (!dC) return;
      if (A.requiresGrad) {
        const dA = A.gradOrZeros();
        // dA (stored layout) = alpha * [dC op(B)^T] or its transpose.
        if (!tA) {
          const ko: MatmulKernelOptions = { transB: !tB, batch, strideA: M * N, strideB, alpha, beta: 1 };
          matmulKernel(e, dA, dC, B, M, K, N, { ...ko, variant: fits(M, K, N, ko) });
        } else {
          const ko: MatmulKernelOptions = { transA: tB, transB: true, batch, strideA: strideB, strideB: M * N, alpha, beta: 1 };
          matmulKernel(e, dA, B, dC, K, M, N, { ...ko, variant: fits(K, M, N, ko) });
        }
      }
      if (B.requiresGrad) {
        const dB = B.gradOrZeros();
        if (!tB) {
          const ko: MatmulKernelOptions = { transA: !tA, batch, strideA: M * K, strideB: M * N, alpha, beta: 1 };
          matmulKernel(e, dB, A, dC, K, N, M, { ...ko, variant: fits(K, N, M, ko) });
        } else {
          const ko: MatmulKernelOptions = { transA: true, transB: tA, batch, strideA: M * N, strideB: M * K, alpha, beta: 1 };
          matmulKernel(e, dB, dC, A, N, K, M, { ...ko, variant: fits(N, K, M, ko) });
        }
      }
      if (o.bias?.requiresGrad) {
        sumRowsKernel(e, o.bias.gradOrZeros(), dC, batch * M, N, true);
      }
    });
  }
  return C;
}

/**
 * C = A Bᵀ for a B [N, K] split into row blocks B_j (a vocabulary-sized head
 * beyond one storage binding): C[:, r_j : r_j + n_j] = A B_jᵀ, computed per
 * block into a temporary and copied into its columns; backward
 * dA += dC[:, r_j : r_j + n_j] B_j, block by block. B is frozen (no dB).
 */
function matmulSplitB(e: Engine, A: Tensor, B: Tensor, M: number, N: number, K: number, outShape: number[], o: MatmulOptions): Tensor {
  if (!o.transB || o.transA || (o.batch ?? 1) > 1 || o.bias) {
    throw new Error(`matmul ${o.name ?? ''}: a split B (${B.name}) works only as x Bᵀ without batch or bias (the logits of a large vocabulary)`);
  }
  if (B.requiresGrad) throw new Error(`matmul ${o.name ?? ''}: ${B.name} is split into row blocks and cannot be trained`);
  const C = o.out ?? e.empty(outShape, o.name);
  const alpha = o.alpha ?? 1;
  for (const blk of B.blocks!) {
    const n = blk.shape[0];
    const part = e.empty([M, n], `${o.name ?? 'matmul'}.block`);
    matmulKernel(e, part, A, blk, M, n, K, { transB: true, alpha, variant: o.variant });
    copyColumns(e, C, part, M, n, { lds: n, sOff: 0, ldd: N, dOff: blk.rowStart, accumulate: o.accumulate });
    part.dispose();
  }
  if (e.tape && A.requiresGrad) {
    C.requiresGrad = true;
    e.tape.record('matmul_split', () => {
      const dC = C.grad;
      if (!dC) return;
      const dA = A.gradOrZeros();
      for (const blk of B.blocks!) {
        const n = blk.shape[0];
        const part = e.empty([M, n], `${o.name ?? 'matmul'}.dblock`);
        copyColumns(e, part, dC, M, n, { lds: N, sOff: blk.rowStart, ldd: n, dOff: 0 });
        matmulKernel(e, dA, part, blk, M, K, n, { alpha, beta: 1 });
        part.dispose();
      }
    });
  }
  return C;
}

/** Float64 CPU reference: C = alpha op(A) op(B) + beta C0 + bias. */
export function matmulCpu(
  A: ArrayLike<number>,
  B: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  o: { transA?: boolean; transB?: boolean; batch?: number; alpha?: number; bias?: ArrayLike<number> } = {},
): Float64Array {
  const batch = o.batch ?? 1;
  const C = new Float64Array(batch * M * N);
  for (let b = 0; b < batch; b++) {
    const ao = b * M * K,
      bo = b * K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const a = o.transA ? A[ao + k * M + m] : A[ao + m * K + k];
          const bb = o.transB ? B[bo + n * K + k] : B[bo + k * N + n];
          s += a * bb;
        }
        C[b * M * N + m * N + n] = (o.alpha ?? 1) * s + (o.bias ? o.bias[n] : 0);
      }
    }
  }
  return C;
}
