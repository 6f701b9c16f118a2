import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { randn, rng } from '../helpers/check-op';
import { argmax, argmaxCpu } from '../../src/engine/ops/argmax';

describe('argmax (row-wise, first maximum on ties)', () => {
  for (const [N, V] of [
    [1, 1],
    [5, 7],
    [9, 513],
    [3, 5000],
  ]) {
    it(`N${N} V${V}: random rows and rows of ties equal the host scan`, async () => {
      const e = await gpuEngine();
      const r = rng(N * 31 + V);
      const x = randn(N * V, r);
      // Ties: a row of equal values (first column wins) and a row whose maximum repeats in columns handled by different threads.
      if (N > 2) {
        x.fill(0.5, 0, V);
        const row = V;
        for (const j of [V - 1, Math.floor(V / 3), Math.floor(V / 2) + 1]) x[row + j] = 9;
      }
      e.beginScope();
      const got = await e.readInt(argmax(e, e.upload(x, [N, V])));
      e.endScope();
      expect(Array.from(got)).toEqual(Array.from(argmaxCpu(x, N, V)));
      if (N > 2) expect(got[0]).toBe(0);
    });
  }

  it('chunks write into one output at their row offset', async () => {
    const e = await gpuEngine();
    const [N, V] = [7, 300];
    const x = randn(N * V, rng(5));
    e.beginScope();
    const all = e.upload(x, [N, V]);
    const out = e.empty([N]);
    for (const [at, len] of [
      [0, 3],
      [3, 3],
      [6, 1],
    ]) {
      const part = e.empty([len, V]);
      e.copyRegion(part, 0, all, at * V, len * V);
      argmax(e, part, { out, at });
    }
    const got = await e.readInt(out);
    e.endScope();
    expect(Array.from(got)).toEqual(Array.from(argmaxCpu(x, N, V)));
  });
});
