import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { crossEntropy, crossEntropyCpu, IGNORE_INDEX } from '../../src/engine/ops/cross_entropy';
import type { CrossEntropyReduction } from '../../src/engine/ops/cross_entropy';
import { ConfigError } from '../../src/errors';
import { Tape } from '../../src/engine/tape';

function makeLabels(N: number, V: number, r: () => number, ignoreEvery = 0): Int32Array {
  const y = new Int32Array(N);
  for (let n = 0; n < N; n++) y[n] = ignoreEvery && n % ignoreEvery === 1 ? IGNORE_INDEX : Math.floor(r() * V);
  return y;
}

describe('cross_entropy', () => {
  const cases: [number, number, number, CrossEntropyReduction][] = [
    [1, 1, 0, 'mean'],
    [7, 13, 3, 'mean'],
    [33, 1000, 4, 'mean'],
    [5, 300, 2, 'none'],
    [9, 257, 3, 'sum'],
    [3, 152_000, 0, 'mean'],
    // v2 kernels (V % 4 == 0, V <= CE_ROW_MAX_V): every reduction
    [17, 512, 5, 'sum'],
    [4, 8, 0, 'none'],
    [70, 2048, 6, 'mean'],
  ];
  for (const [N, V, ignoreEvery, reduction] of cases) {
    it(`N${N} V${V} ignore every ${ignoreEvery || '-'} ${reduction}`, async () => {
      const e = await gpuEngine();
      const r = rng(N * 1009 + V);
      const labels = makeLabels(N, V, r, ignoreEvery);
      const res = await checkOp(e, {
        name: 'cross_entropy',
        inputs: [
          { name: 'logits', shape: [N, V], data: randn(N * V, r, 3), grad: true },
          { name: 'labels', shape: [N], data: labels, int: true },
        ],
        gpu: (e, [x, y]) => crossEntropy(e, x, y, { reduction }),
        cpu: ([x, y]) => crossEntropyCpu(x, y, N, V, reduction),
        samples: 12,
      });
      expect(res.fwdErr).toBeLessThan(1e-4);
    });
  }

  it('gradients land on the label and on the softmax (large V, sampled directly)', async () => {
    // Finite differences sample V = 152000 entries sparsely; check the label entries exactly.
    const e = await gpuEngine();
    const [N, V] = [2, 152_000];
    const r = rng(3);
    const x = randn(N * V, r, 2);
    const y = Int32Array.of(151_999, 7);
    e.beginScope();
    const logits = e.upload(x, [N, V]);
    logits.requiresGrad = true;
    const tape = new Tape();
    e.tape = tape;
    const loss = crossEntropy(e, logits, y);
    e.tape = null;
    tape.backward(loss);
    const g = await e.read(logits.grad!);
    for (let n = 0; n < N; n++) {
      let m = -Infinity;
      for (let j = 0; j < V; j++) m = Math.max(m, x[n * V + j]);
      let s = 0;
      for (let j = 0; j < V; j++) s += Math.exp(x[n * V + j] - m);
      for (const j of [0, 1, y[n], V - 1]) {
        const want = (Math.exp(x[n * V + j] - m) / s - (j === y[n] ? 1 : 0)) / N;
        expect(Math.abs(g[n * V + j] - want)).toBeLessThan(1e-6);
      }
    }
    e.endScope();
  });

  it('all labels ignored: loss 0, no NaN, zero gradient', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const logits = e.upload(randn(4 * 10, rng(1)), [4, 10]);
    logits.requiresGrad = true;
    const tape = new Tape();
    e.tape = tape;
    const loss = crossEntropy(e, logits, new Int32Array(4).fill(IGNORE_INDEX));
    e.tape = null;
    tape.backward(loss);
    expect((await e.read(loss))[0]).toBe(0);
    for (const v of await e.read(logits.grad!)) expect(v).toBe(0);
    e.endScope();
  });

  it('backward accumulates into an existing gradient', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const [N, V] = [3, 5];
    const x = randn(N * V, rng(2));
    const y = Int32Array.of(1, IGNORE_INDEX, 4);
    const grad = async (preset: number) => {
      const logits = e.upload(x, [N, V]);
      logits.requiresGrad = true;
      e.write(logits.gradOrZeros(), new Float32Array(N * V).fill(preset));
      const tape = new Tape();
      e.tape = tape;
      const loss = crossEntropy(e, logits, y);
      e.tape = null;
      tape.backward(loss, 2);
      return e.read(logits.grad!);
    };
    const a = await grad(0),
      b = await grad(1);
    for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i] + 1, 6);
    for (let j = 0; j < V; j++) expect(a[V + j]).toBe(0); // ignored row
    e.endScope();
  });

  it('host labels out of range: a clear error; GPU labels out of range: NaN loss', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const logits = e.upload(randn(3 * 8, rng(4)), [3, 8]);
    expect(() => crossEntropy(e, logits, Int32Array.of(1, 8, 2))).toThrow(ConfigError);
    expect(() => crossEntropy(e, logits, Int32Array.of(1, 8, 2))).toThrow(/label 8 at row 1 is outside the vocabulary \[0, 8\)/);
    expect(() => crossEntropy(e, logits, Int32Array.of(-1, 0, 2))).toThrow(/label -1 at row 0/);
    const gpuLabels = e.upload(Int32Array.of(1, 8, 2), [3]);
    const loss = crossEntropy(e, logits, gpuLabels);
    expect(Number.isNaN((await e.read(loss))[0])).toBe(true);
    e.endScope();
  });
});
