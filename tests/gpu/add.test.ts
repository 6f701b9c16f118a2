import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { add, addCpu, grid1d } from '../../src/engine/ops/add';
import { Tape } from '../../src/engine/tape';
import wgsl from '../../shaders/add.wgsl?raw';

describe('add', () => {
  it('add.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'add.wgsl');
  });

  const shapes: number[][] = [[1], [7], [3, 5], [256], [257], [2, 3, 129], [1000]];
  for (const shape of shapes) {
    it(`[${shape}]`, async () => {
      const e = await gpuEngine();
      const n = shape.reduce((a, b) => a * b, 1);
      const r = rng(n * 17 + shape.length);
      await checkOp(e, {
        name: 'add',
        inputs: [
          { name: 'a', shape, data: randn(n, r), grad: true },
          { name: 'b', shape, data: randn(n, r), grad: true },
        ],
        gpu: (e, [a, b]) => add(e, a, b),
        cpu: ([a, b]) => addCpu(a, b),
        samples: 8,
      });
    });
  }

  it('x + x accumulates twice into the same gradient', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const x = e.upload(randn(10, rng(3)), [10]);
    x.requiresGrad = true;
    const tape = new Tape();
    e.tape = tape;
    const y = add(e, x, x);
    e.tape = null;
    tape.backward(y, 1.5);
    expect(Array.from(await e.read(x.grad!))).toEqual(new Array(10).fill(3));
    e.endScope();
  });

  it('frozen input gets no gradient; shape mismatch throws', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const a = e.upload(randn(6, rng(4)), [2, 3]);
    const b = e.upload(randn(6, rng(5)), [2, 3]);
    a.requiresGrad = true;
    const tape = new Tape();
    e.tape = tape;
    const y = add(e, a, b);
    e.tape = null;
    const before = e.dispatchCount;
    tape.backward(y);
    expect(e.dispatchCount - before).toBe(1);
    expect(b.grad).toBeNull();
    expect(() => add(e, a, e.empty([3, 2]))).toThrow(/same shape/);
    e.endScope();
  });

  it('out: into a given tensor, in place (dst += src), and a + a in place', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const ad = randn(300, rng(6)),
      bd = randn(300, rng(7));
    const a = e.upload(ad, [300]);
    const b = e.upload(bd, [300]);
    const c = e.zeros([300]);
    expect(add(e, a, b, { out: c })).toBe(c);
    const sum = await e.read(c);
    sum.forEach((v, i) => expect(v).toBeCloseTo(ad[i] + bd[i], 6));
    expect(add(e, a, b, { out: a })).toBe(a);
    expect(Array.from(await e.read(a))).toEqual(Array.from(sum));
    add(e, b, b, { out: b.reshape([3, 100]).reshape([300]) });
    (await e.read(b)).forEach((v, i) => expect(v).toBeCloseTo(2 * bd[i], 6));
    a.requiresGrad = true;
    e.tape = new Tape();
    expect(() => add(e, a, b, { out: a })).toThrow(/not differentiable/);
    e.tape = null;
    e.endScope();
  });

  it('grid goes 2-D past the per-dimension workgroup limit', async () => {
    const e = await gpuEngine();
    const max = e.ctx.limits.maxComputeWorkgroupsPerDimension;
    expect(grid1d(e, 100)).toEqual([1, 1]);
    const [x, y] = grid1d(e, max * 256 + 1);
    expect(y).toBe(2);
    expect(x * y * 256).toBeGreaterThanOrEqual(max * 256 + 1);
    expect(x).toBeLessThanOrEqual(max);
  });
});
