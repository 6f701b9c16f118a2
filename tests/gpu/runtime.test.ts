/** The GPU runtime: limits, pool accounting, compile and allocation errors. */
import { describe, it, expect } from 'vitest';
import { acquireDevice } from '../../src/gpu/device';
import { nodeGpu } from '../../src/gpu/node';
import { bucketSize } from '../../src/gpu/pool';
import { Engine, params } from '../../src/engine/engine';
import { AdapterLimitError, GpuError, ShaderCompileError, WebGPUNotAvailableError } from '../../src/errors';
import { gpuEngine } from '../helpers/gpu';

describe('GPU runtime', () => {
  it('no GPU object gives WebGPUNotAvailableError', async () => {
    await expect(acquireDevice(undefined)).rejects.toBeInstanceOf(WebGPUNotAvailableError);
  });

  it('a limit above the adapter fails early with a named error', async () => {
    const err = await acquireDevice(nodeGpu(), { needs: { maxStorageBufferBindingSize: 2 ** 52 } }).catch((e) => e);
    expect(err).toBeInstanceOf(AdapterLimitError);
    expect(err.message).toMatch(/maxStorageBufferBindingSize/);
  });

  it('the pool accounts current and peak bytes and reuses buffers', async () => {
    const e = await gpuEngine();
    e.flush();
    const base = e.pool.inUse;
    e.pool.resetPeak();
    e.beginScope();
    const a = e.empty([1000]);
    const b = e.empty([3000]);
    expect(e.pool.inUse - base).toBe(bucketSize(4000) + bucketSize(12000));
    const peak = e.pool.peak;
    a.dispose();
    b.dispose();
    e.flush();
    expect(e.pool.inUse).toBe(base);
    const current = e.pool.current;
    const c = e.empty([1000]); // same bucket: reused, no new bytes
    expect(e.pool.current).toBe(current);
    expect(e.pool.peak).toBe(peak);
    e.endScope();
    e.flush();
    expect(e.pool.inUse).toBe(base);
    expect(c.disposed).toBe(true);
  });

  it('a kernel that does not compile surfaces a ShaderCompileError with its line', async () => {
    const ctx = await acquireDevice(nodeGpu());
    const e = new Engine(ctx);
    const bad = '@group(0) @binding(0) var<uniform> p: vec4<u32>;\n@compute @workgroup_size(1) fn broken() {\n  let x: f32 = undefined_thing;\n}\n';
    e.beginScope();
    const t = e.zeros([4]);
    e.dispatch(bad, 'broken', params(0), [{ tensor: t, write: true }], [1]);
    const err = await e.sync().catch((x) => x);
    expect(err).toBeInstanceOf(ShaderCompileError);
    expect(err.message).toMatch(/line 3/);
    e.endScope();
    ctx.destroy();
  });

  it('a buffer above maxBufferSize is refused with a named error', async () => {
    const e = await gpuEngine();
    expect(() => e.empty([e.ctx.limits.maxBufferSize])).toThrow(GpuError);
  });
});
