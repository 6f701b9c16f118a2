import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { embedding, embeddingCpu, embeddingCsr } from '../../src/engine/ops/embedding';
import { Tape } from '../../src/engine/tape';
import wgsl from '../../shaders/embedding.wgsl?raw';

function randomIds(n: number, V: number, r: () => number): Int32Array {
  return Int32Array.from({ length: n }, () => Math.floor(r() * V));
}

describe('embedding', () => {
  it('embedding.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'embedding.wgsl');
  });

  // [ids shape, V, C]: size 1, repeated ids (V < N), odd C, N*C and U*C not multiples of 256.
  const cases: [number[], number, number][] = [
    [[1], 1, 1],
    [[7], 3, 5],
    [[2, 3], 11, 4],
    [[300], 17, 5],
    [[40], 1000, 33],
    [[2, 65], 9, 1],
  ];
  for (const [shape, V, C] of cases) {
    it(`ids [${shape}] V${V} C${C}`, async () => {
      const e = await gpuEngine();
      const N = shape.reduce((a, b) => a * b, 1);
      const r = rng(N * 7 + V * 3 + C);
      const ids = randomIds(N, V, r);
      await checkOp(e, {
        name: 'embedding',
        inputs: [
          { name: 'ids', shape, data: ids, int: true },
          { name: 'table', shape: [V, C], data: randn(V * C, r), grad: true },
        ],
        gpu: (e, [idT, table]) => embedding(e, idT, table, ids),
        cpu: ([idv, table]) => embeddingCpu(idv, table, C),
        samples: 16,
      });
    });
  }

  it('CSR groups positions by id, ascending', () => {
    const { U, csr } = embeddingCsr(Int32Array.from([5, 2, 5, 0, 2, 5]));
    expect(U).toBe(3);
    expect(Array.from(csr)).toEqual([0, 2, 5, /* offsets */ 0, 1, 3, 6, /* positions */ 3, 1, 4, 0, 2, 5]);
  });

  it('gradient of a repeated id is the exact sum, deterministic across runs', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const [V, C, N] = [4, 3, 50];
    const ids = Int32Array.from({ length: N }, (_, n) => (n % 5 === 0 ? 1 : 3));
    const seed = randn(N * C, rng(8));
    const run = async () => {
      const idT = e.upload(ids, [N]);
      const table = e.upload(randn(V * C, rng(9)), [V, C]);
      table.requiresGrad = true;
      const tape = new Tape();
      e.tape = tape;
      const out = embedding(e, idT, table, ids);
      e.tape = null;
      tape.backward(out, seed);
      return e.read(table.grad!);
    };
    const a = await run();
    const b = await run();
    expect(Array.from(a)).toEqual(Array.from(b));
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let n = 0; n < N; n++) if (ids[n] === 3) s += seed[n * C + c];
      expect(a[3 * C + c]).toBeCloseTo(s, 4);
      expect(a[0 * C + c]).toBe(0);
      expect(a[2 * C + c]).toBe(0);
    }
    e.endScope();
  });

  it('out-of-range ids throw naming the id and the vocab size', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const table = e.zeros([10, 2]);
    for (const bad of [10, -1, 50]) {
      const ids = Int32Array.from([0, 3, bad]);
      expect(() => embedding(e, e.upload(ids, [3]), table, ids)).toThrow(new RegExp(`token id ${bad} at position 2 .*vocab size 10`));
    }
    expect(() => embeddingCpu([0, 10], new Float64Array(20), 2)).toThrow(/token id 10 .*vocab size 10/);
    expect(() => embedding(e, e.upload(Int32Array.from([1, 2]), [2]), table, Int32Array.from([1]))).toThrow(/1 host ids/);
    e.endScope();
  });

  it('frozen table: no tape entry, no CSR upload', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const ids = Int32Array.from([1, 0, 1]);
    const tape = new Tape();
    e.tape = tape;
    const out = embedding(e, e.upload(ids, [3]), e.upload(randn(4, rng(1)), [2, 2]), ids);
    e.tape = null;
    expect(tape.length).toBe(0);
    expect(out.shape).toEqual([3, 2]);
    e.endScope();
  });
});
