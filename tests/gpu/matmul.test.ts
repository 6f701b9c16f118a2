import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { GEMV_MAX_M, matmul, matmulCpu, matmulKernel, matmulVariants } from '../../src/engine/ops/matmul';

describe('matmul', () => {
  const shapes: [number, number, number, number][] = [
    [1, 1, 1, 1],
    [3, 5, 7, 1],
    [65, 17, 33, 1],
    [64, 64, 64, 1],
    [70, 129, 20, 2],
    [2, 100, 3, 3],
    // register-tiled kernels (K % 4 == 0, N % 4 == 0): partial 8-row and 16-column blocks, batches
    [68, 20, 12, 2],
    [13, 36, 8, 1],
    [4, 4, 4, 3],
  ];
  for (const [M, N, K, batch] of shapes) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        it(`M${M} N${N} K${K} b${batch} tA${+transA} tB${+transB}`, async () => {
          const e = await gpuEngine();
          const r = rng(M * 131 + N * 7 + K + (transA ? 1000 : 0) + (transB ? 2000 : 0));
          const res = await checkOp(e, {
            name: 'matmul',
            inputs: [
              {
                name: 'A',
                shape: batch > 1 ? [batch, transA ? K : M, transA ? M : K] : [transA ? K : M, transA ? M : K],
                data: randn(batch * M * K, r),
                grad: true,
              },
              {
                name: 'B',
                shape: batch > 1 ? [batch, transB ? N : K, transB ? K : N] : [transB ? N : K, transB ? K : N],
                data: randn(batch * K * N, r),
                grad: true,
              },
            ],
            gpu: (e, [A, B]) => matmul(e, A, B, { transA, transB, batch, alpha: 0.5 }),
            cpu: ([A, B]) => matmulCpu(A, B, M, N, K, { transA, transB, batch, alpha: 0.5 }),
            samples: 8,
          });
          expect(res.fwdErr).toBeLessThan(1e-3);
        });
      }
    }
  }

  // v4 with 8 and with 16 rows per thread (the default depends on the adapter):
  // every layout, partial row and column blocks, batches, alpha, beta and bias.
  for (const RM of [8, 16] as const) {
    it(`register-tiled v4, ${RM} rows per thread: layouts, edges, batch, beta, bias`, async () => {
      const e = await gpuEngine();
      e.beginScope();
      const r = rng(RM);
      for (const [M, N, K, batch] of [
        [36, 20, 12, 2],
        [20, 52, 8, 1],
        [4, 4, 4, 1],
      ]) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            const Ad = randn(batch * M * K, r),
              Bd = randn(batch * K * N, r),
              C0 = randn(batch * M * N, r),
              bd = randn(N, r);
            const A = e.upload(Ad, [batch * M * K]),
              B = e.upload(Bd, [batch * K * N]);
            const C = e.upload(C0, [batch * M * N]),
              bias = e.upload(bd, [N]);
            matmulKernel(e, C, A, B, M, N, K, { transA, transB, batch, alpha: 0.5, beta: 2, bias, rowsPerThread: RM });
            const got = await e.read(C);
            const want = matmulCpu(Ad, Bd, M, N, K, { transA, transB, batch, alpha: 0.5, bias: bd });
            let err = 0;
            for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - (want[i] + 2 * C0[i])));
            expect(err, `M${M} N${N} K${K} b${batch} tA${+transA} tB${+transB}`).toBeLessThan(1e-4);
          }
        }
      }
      e.endScope();
    });
  }

  it('bias on the vec4 path (N % 4 == 0) and accumulation into C', async () => {
    const e = await gpuEngine();
    const r = rng(19);
    const [M, N, K] = [20, 36, 16];
    await checkOp(e, {
      name: 'linear+bias vec4',
      inputs: [
        { name: 'X', shape: [M, K], data: randn(M * K, r), grad: true },
        { name: 'W', shape: [N, K], data: randn(N * K, r), grad: true },
        { name: 'b', shape: [N], data: randn(N, r), grad: true },
      ],
      gpu: (e, [X, W, b]) => matmul(e, X, W, { transB: true, bias: b }),
      cpu: ([X, W, b]) => matmulCpu(X, W, M, N, K, { transB: true, bias: b }),
    });
  });

  it('bias and its gradient', async () => {
    const e = await gpuEngine();
    const r = rng(9);
    const [M, N, K] = [37, 19, 23];
    await checkOp(e, {
      name: 'linear+bias',
      inputs: [
        { name: 'X', shape: [M, K], data: randn(M * K, r), grad: true },
        { name: 'W', shape: [N, K], data: randn(N * K, r), grad: true },
        { name: 'b', shape: [N], data: randn(N, r), grad: true },
      ],
      gpu: (e, [X, W, b]) => matmul(e, X, W, { transB: true, bias: b }),
      cpu: ([X, W, b]) => matmulCpu(X, W, M, N, K, { transB: true, bias: b }),
    });
  });

  it('frozen weights get no gradient dispatch', async () => {
    const e = await gpuEngine();
    const { Tape } = await import('../../src/engine/tape');
    e.beginScope();
    const X = e.upload(randn(8 * 4, rng(1)), [8, 4]);
    const W = e.upload(randn(4 * 4, rng(2)), [4, 4]);
    X.requiresGrad = true;
    const tape = new Tape();
    e.tape = tape;
    const Y = matmul(e, X, W, { transB: true });
    e.tape = null;
    const before = e.dispatchCount;
    tape.backward(Y);
    expect(e.dispatchCount - before).toBe(1); // dX only
    expect(W.grad).toBeNull();
    e.endScope();
  });
});

// The GPU kernels (workgroup-memory v5, subgroup v6) through the same check
// helper: forward against the float64 reference and both gradients against
// finite differences, every layout, odd shapes, batches; then alpha, beta and
// bias on the raw kernel.
describe('matmul v5 (workgroup tiles, 8x8 per thread) and v6 (subgroups)', () => {
  const variants = ['v5', 'v6'] as const;
  for (const variant of variants) {
    it(`${variant}: forward and gradients, every layout, odd shapes and batches`, async () => {
      const e = await gpuEngine();
      // SwiftShader has the subgroups feature; an adapter without it cannot run v6 at all.
      if (variant === 'v6') expect(e.ctx.features.has('subgroups')).toBe(true);
      for (const [M, N, K, batch] of [
        [1, 1, 1, 1],
        [65, 17, 33, 1],
        [70, 129, 20, 2],
        [3, 5, 7, 3],
        [64, 64, 64, 1],
      ] as const) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            const r = rng(M * 131 + N * 7 + K + (transA ? 1000 : 0) + (transB ? 2000 : 0));
            const res = await checkOp(e, {
              name: `matmul ${variant} M${M} N${N} K${K} b${batch} tA${+transA} tB${+transB}`,
              inputs: [
                {
                  name: 'A',
                  shape: batch > 1 ? [batch, transA ? K : M, transA ? M : K] : [transA ? K : M, transA ? M : K],
                  data: randn(batch * M * K, r),
                  grad: true,
                },
                {
                  name: 'B',
                  shape: batch > 1 ? [batch, transB ? N : K, transB ? K : N] : [transB ? N : K, transB ? K : N],
                  data: randn(batch * K * N, r),
                  grad: true,
                },
              ],
              gpu: (e, [A, B]) => matmul(e, A, B, { transA, transB, batch, alpha: 0.5, variant }),
              cpu: ([A, B]) => matmulCpu(A, B, M, N, K, { transA, transB, batch, alpha: 0.5 }),
              samples: 4,
            });
            expect(res.fwdErr).toBeLessThan(1e-3);
          }
        }
      }
    });

    it(`${variant}: alpha, beta and bias on the raw kernel`, async () => {
      const e = await gpuEngine();
      e.beginScope();
      const r = rng(variant.length * 17);
      for (const [M, N, K, batch] of [
        [67, 130, 19, 2],
        [5, 3, 70, 1],
      ]) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            const Ad = randn(batch * M * K, r),
              Bd = randn(batch * K * N, r),
              C0 = randn(batch * M * N, r),
              bd = randn(N, r);
            const A = e.upload(Ad, [batch * M * K]),
              B = e.upload(Bd, [batch * K * N]);
            const C = e.upload(C0, [batch * M * N]),
              bias = e.upload(bd, [N]);
            matmulKernel(e, C, A, B, M, N, K, { transA, transB, batch, alpha: 0.5, beta: 2, bias, variant });
            const got = await e.read(C);
            const want = matmulCpu(Ad, Bd, M, N, K, { transA, transB, batch, alpha: 0.5, bias: bd });
            let err = 0;
            for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - (want[i] + 2 * C0[i])));
            expect(err, `M${M} N${N} K${K} b${batch} tA${+transA} tB${+transB}`).toBeLessThan(1e-4);
          }
        }
      }
      e.endScope();
    });
  }
});

// gemv (decoding: few rows of x Wᵀ) through the same helper: forward against
// float64 and gradients (the backward runs the default kernels: dX = dY W and
// dW = dYᵀ x are not x Wᵀ) for M = 1..8, odd N and K (the any-K load path,
// partial column blocks), K % 4 == 0 (vec4 loads), batches; then beta and
// bias on the raw kernel with 1 thread per column block (CPU adapters) and the
// GPUs' 32 lanes with their workgroup-memory sum.
describe('matmul gemv (few rows, x Wᵀ)', () => {
  it('forward and gradients: M 1..8, odd and vec4 N, K, batches', async () => {
    const e = await gpuEngine();
    for (const [M, N, K, batch] of [
      [1, 1, 1, 1],
      [1, 37, 13, 1],
      [2, 300, 20, 1],
      [3, 5, 7, 2],
      [4, 259, 64, 1],
      [5, 17, 33, 1],
      [8, 12, 16, 3],
    ] as const) {
      const r = rng(M * 131 + N * 7 + K);
      const res = await checkOp(e, {
        name: `matmul gemv M${M} N${N} K${K} b${batch}`,
        inputs: [
          { name: 'A', shape: batch > 1 ? [batch, M, K] : [M, K], data: randn(batch * M * K, r), grad: true },
          { name: 'B', shape: batch > 1 ? [batch, N, K] : [N, K], data: randn(batch * K * N, r), grad: true },
        ],
        gpu: (e, [A, B]) => matmul(e, A, B, { transB: true, batch, alpha: 0.5, variant: 'gemv' }),
        cpu: ([A, B]) => matmulCpu(A, B, M, N, K, { transB: true, batch, alpha: 0.5 }),
        samples: 4,
      });
      expect(res.fwdErr).toBeLessThan(1e-4);
    }
  });

  for (const lanes of [1, 32] as const) {
    it(`${lanes} lane(s) per column block: beta, bias, rows past a row block`, async () => {
      const e = await gpuEngine();
      e.beginScope();
      const r = rng(lanes);
      for (const [M, N, K, batch] of [
        [1, 133, 260, 1],
        [3, 70, 19, 2],
        [6, 257, 36, 1],
      ]) {
        const Ad = randn(batch * M * K, r),
          Bd = randn(batch * K * N, r),
          C0 = randn(batch * M * N, r),
          bd = randn(N, r);
        const A = e.upload(Ad, [batch * M * K]),
          B = e.upload(Bd, [batch * K * N]);
        const C = e.upload(C0, [batch * M * N]),
          bias = e.upload(bd, [N]);
        matmulKernel(e, C, A, B, M, N, K, { transB: true, batch, alpha: 0.5, beta: 2, bias, variant: 'gemv', gemvLanes: lanes });
        const got = await e.read(C);
        const want = matmulCpu(Ad, Bd, M, N, K, { transB: true, batch, alpha: 0.5, bias: bd });
        let err = 0;
        for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - (want[i] + 2 * C0[i])));
        expect(err, `M${M} N${N} K${K} b${batch}`).toBeLessThan(1e-4);
      }
      e.endScope();
    });
  }

  it('is listed only for x Wᵀ with at most GEMV_MAX_M rows; forcing it elsewhere names the kernels that can run', async () => {
    const e = await gpuEngine();
    expect(matmulVariants(e, GEMV_MAX_M, 64, 64, { transB: true })).toContain('gemv');
    expect(matmulVariants(e, GEMV_MAX_M + 1, 64, 64, { transB: true })).not.toContain('gemv');
    expect(matmulVariants(e, 1, 64, 64, {})).not.toContain('gemv');
    expect(matmulVariants(e, 1, 64, 64, { transA: true, transB: true })).not.toContain('gemv');
    // Packed: K % 4 == 0 (one vec2<u32> per 4 values of a row).
    expect(matmulVariants(e, 1, 37, 64, { transB: true }, 'bf16')).toContain('gemv');
    expect(matmulVariants(e, 1, 37, 66, { transB: true }, 'bf16')).not.toContain('gemv');
    e.beginScope();
    const A = e.zeros([16 * 4]),
      B = e.zeros([4 * 4]),
      C = e.zeros([16 * 4]);
    expect(() => matmulKernel(e, C, A, B, 16, 4, 4, { transB: true, variant: 'gemv' })).toThrow(/kernel gemv cannot run 16x4x4.*it can run as v4/);
    e.endScope();
  });
});
