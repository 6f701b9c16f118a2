import { describe, it, expect } from 'vitest';
import { gpuEngine } from '../helpers/gpu';
import { checkOp, randn, rng } from '../helpers/check-op';
import { rope, ropeCpu, ropeInvFreq, type RopeScaling } from '../../src/engine/ops/rope';
import { Tape } from '../../src/engine/tape';
import wgsl from '../../shaders/rope.wgsl?raw';

const llama32: RopeScaling = {
  rope_type: 'llama3',
  factor: 32,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

/** HF _compute_llama3_parameters written out step by step, torch.where for torch.where. */
function hfLlama3(D: number, theta: number, s: RopeScaling): number[] {
  const invFreq = Array.from({ length: D / 2 }, (_, i) => 1.0 / theta ** ((2 * i) / D));
  const factor = s.factor!,
    low = s.low_freq_factor!,
    high = s.high_freq_factor!;
  const oldContextLen = s.original_max_position_embeddings!;
  const lowFreqWavelen = oldContextLen / low;
  const highFreqWavelen = oldContextLen / high;
  return invFreq.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    const invFreqLlama = wavelen > lowFreqWavelen ? f / factor : f;
    const smoothFactor = (oldContextLen / wavelen - low) / (high - low);
    const smoothed = ((1 - smoothFactor) * invFreqLlama) / factor + smoothFactor * invFreqLlama;
    const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    return isMedium ? smoothed : invFreqLlama;
  });
}

describe('rope', () => {
  it('rope.wgsl compiles', async () => {
    const e = await gpuEngine();
    await e.compileCheck(wgsl, 'rope.wgsl');
  });

  // [B, T, H, D]: size 1, odd counts, pair counts not a multiple of the workgroup.
  const shapes: [number, number, number, number][] = [
    [1, 1, 1, 2],
    [1, 3, 2, 8],
    [2, 5, 3, 16],
    [2, 7, 3, 34],
    [1, 9, 5, 64],
  ];
  for (const [B, T, H, D] of shapes) {
    for (const scaling of [null, llama32]) {
      it(`B${B} T${T} H${H} D${D} ${scaling ? 'llama3' : 'default'}`, async () => {
        const e = await gpuEngine();
        const r = rng(B * 1000 + T * 100 + H * 10 + D);
        // Left-padded style offsets per batch row plus large positions.
        const pos = new Int32Array(B * T);
        for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) pos[b * T + t] = b * 37 + t + (t % 3 === 2 ? 5000 : 0);
        const theta = scaling ? 500000 : 10000;
        const inv = ropeInvFreq(D, theta, scaling);
        await checkOp(e, {
          name: 'rope',
          inputs: [
            { name: 'x', shape: [B, T, H, D], data: randn(B * T * H * D, r), grad: true },
            { name: 'pos', shape: [B * T], data: pos, int: true },
          ],
          gpu: (e, [x, p]) => rope(e, x, p, { theta, scaling }),
          cpu: ([x, p]) => ropeCpu(x, p, B, T, H, D, inv),
          samples: 10,
          atol: 5e-6,
          rtol: 0,
        });
      });
    }
  }

  it('large positions (KV-cache offsets up to 131071) stay accurate', async () => {
    const e = await gpuEngine();
    const [B, T, H, D] = [1, 6, 1, 8];
    const pos = Int32Array.from([0, 1, 4095, 8191, 100_000, 131_071]);
    const inv = ropeInvFreq(D, 10000, null);
    await checkOp(e, {
      name: 'rope far',
      inputs: [
        { name: 'x', shape: [B, T, H, D], data: randn(B * T * H * D, rng(11)), grad: true },
        { name: 'pos', shape: [B * T], data: pos, int: true },
      ],
      gpu: (e, [x, p]) => rope(e, x, p, { theta: 10000 }),
      cpu: ([x, p]) => ropeCpu(x, p, B, T, H, D, inv),
      atol: 5e-6,
      rtol: 0,
    });
  });

  it('ropeInvFreq: default, linear and llama3 match HF', () => {
    const def = ropeInvFreq(8, 10000, null);
    expect(Array.from(def)).toEqual([1, 0.1, 0.01, 0.001].map((v, i) => 1 / 10000 ** (i / 4)));
    expect(def[1]).toBeCloseTo(0.1, 15);
    expect(Array.from(ropeInvFreq(8, 10000, { rope_type: 'default' }))).toEqual(Array.from(def));
    const lin = ropeInvFreq(8, 10000, { type: 'linear', factor: 4 });
    lin.forEach((v, i) => expect(v).toBeCloseTo(def[i] / 4, 15));

    const D = 64,
      theta = 500000;
    const got = ropeInvFreq(D, theta, llama32);
    const want = hfLlama3(D, theta, llama32);
    got.forEach((v, i) => expect(v).toBeCloseTo(want[i], 15));
    // Pinned values (Python float64, same formula): i <= 14 high band (kept),
    // 15..17 smoothed, >= 18 divided by factor.
    const pinned: [number, number][] = [
      [0, 1.0],
      [1, 0.6636012376960885],
      [14, 0.0032114459947525913],
      [15, 0.001290547928209264],
      [16, 0.00042955679655936815],
      [17, 9.70828780262767e-5],
      [18, 1.9461638184831125e-5],
      [31, 9.418306725434909e-8],
    ];
    for (const [i, v] of pinned) expect(got[i] / v).toBeCloseTo(1, 12);
    expect(got[18]).toBeCloseTo(1 / theta ** (36 / 64) / 32, 18);
  });

  it('unsupported scaling and bad shapes throw clear errors', async () => {
    expect(() => ropeInvFreq(8, 10000, { rope_type: 'yarn', factor: 2 })).toThrow(/'yarn' is not supported/);
    expect(() => ropeInvFreq(8, 10000, { rope_type: 'llama3', factor: 8 })).toThrow(/low_freq_factor/);
    expect(() => ropeInvFreq(7, 10000, null)).toThrow(/even/);
    const e = await gpuEngine();
    e.beginScope();
    const x = e.zeros([1, 3, 2, 4]);
    expect(() => rope(e, x, e.upload(new Int32Array(2), [2]))).toThrow(/2 positions for 3 token rows/);
    e.endScope();
  });

  it('backward undoes the forward (rotation is orthogonal)', async () => {
    const e = await gpuEngine();
    e.beginScope();
    const [B, T, H, D] = [2, 3, 2, 6];
    const xd = randn(B * T * H * D, rng(3));
    const x = e.upload(xd, [B, T, H, D]);
    x.requiresGrad = true;
    const p = e.upload(Int32Array.from([3, 4, 5, 0, 1, 2]), [B * T]);
    const tape = new Tape();
    e.tape = tape;
    const invFreq = e.upload(Float32Array.from(ropeInvFreq(D, 10000)), [D / 2]);
    const y = rope(e, x, p, invFreq); // the inverse-frequency tensor may stand for the options
    e.tape = null;
    // Seeding dy = y gives dx = R^T R x = x.
    tape.backward(y, await e.read(y));
    const dx = await e.read(x.grad!);
    dx.forEach((v, i) => expect(v).toBeCloseTo(xd[i], 5));
    e.endScope();
  });
});
