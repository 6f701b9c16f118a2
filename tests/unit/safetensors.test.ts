import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ModelFormatError } from '../../src/errors';
import {
  decodeTensorData,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  parseSafetensors,
  parseSafetensorsHeader,
  safetensorsHeaderSize,
  serializeSafetensors,
} from '../../src/model/safetensors';
import { testHubRoot } from '../helpers/hub-server';

/** A file with a hand-written header and data bytes; the header is used verbatim. */
function build(header: unknown, data: Uint8Array | number, opts: { pad?: boolean; lengthOverride?: bigint } = {}): Uint8Array {
  let json = typeof header === 'string' ? header : JSON.stringify(header);
  if (opts.pad !== false) while ((8 + json.length) % 8) json += ' ';
  const h = new TextEncoder().encode(json);
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + body.length);
  new DataView(out.buffer).setBigUint64(0, opts.lengthOverride ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(body, 8 + h.length);
  return out;
}

function expectError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ModelFormatError);
  const msg = (err as Error).message;
  expect(msg).toContain('bad.safetensors');
  for (const p of parts) {
    if (typeof p === 'string') expect(msg).toContain(p);
    else expect(msg).toMatch(p);
  }
}

describe('safetensors round trip', () => {
  it('writes F32 with an 8-byte aligned, space-padded header and reads it back', () => {
    const a = Float32Array.from({ length: 6 }, (_, i) => i * 0.5 - 1);
    const b = new Float32Array([Math.PI]);
    const empty = new Float32Array(0);
    const bytes = serializeSafetensors(
      { 'model.a.weight': { shape: [2, 3], data: a }, b: { shape: [1], data: b }, z: { shape: [0, 4], data: empty } },
      { format: 'pt' },
    );
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect((8 + n) % 8).toBe(0);
    const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(headerText.trimEnd().endsWith('}')).toBe(true);
    expect(/ *$/.exec(headerText)![0].length).toBeLessThan(8);

    const file = parseSafetensors(bytes, 'round.safetensors');
    expect(file.metadata).toEqual({ format: 'pt' });
    expect([...file.tensors.keys()]).toEqual(['model.a.weight', 'b', 'z']);
    expect(file.tensors.get('model.a.weight')).toEqual({ dtype: 'F32', shape: [2, 3], data: a });
    expect(file.tensors.get('b')!.data[0]).toBe(Math.fround(Math.PI));
    expect(file.tensors.get('z')!.shape).toEqual([0, 4]);
    expect(file.tensors.get('z')!.data.length).toBe(0);
  });

  it('writes F16 and BF16 with round-to-nearest-even and reads them as float32', () => {
    const values = new Float32Array([0, -0, 1, -2.5, 65504, 1e-7, 3.140625, 1 / 3, 70000, -Infinity, NaN]);
    const bytes = serializeSafetensors({
      h: { shape: [values.length], data: values, dtype: 'F16' },
      b: { shape: [values.length], data: values, dtype: 'BF16' },
    });
    const file = parseSafetensors(bytes, 'half.safetensors');
    const h = file.tensors.get('h')!;
    const b = file.tensors.get('b')!;
    expect(h.dtype).toBe('F16');
    expect(b.dtype).toBe('BF16');
    for (let i = 0; i < values.length; i++) {
      expect(h.data[i]).toBe(Math.fround(f16ToF32(f32ToF16(values[i]))));
      if (Number.isNaN(values[i])) expect(b.data[i]).toBeNaN();
      else if (!Number.isFinite(values[i])) expect(b.data[i]).toBe(values[i]);
      else expect(Math.abs(b.data[i] - values[i])).toBeLessThanOrEqual(Math.abs(values[i]) * 2 ** -8);
    }
    expect(h.data[4]).toBe(65504);
    expect(h.data[8]).toBe(Infinity); // 70000 overflows half
    expect(h.data[5]).toBeCloseTo(1.1920928955078125e-7, 12); // subnormal half: 2 * 2^-24
    expect(h.data[10]).toBeNaN();
  });

  it('half conversion is exact on all 65536 patterns (f16 -> f32 -> f16)', () => {
    const wrong: number[] = [];
    for (let i = 0; i < 65536; i++) {
      const f = f16ToF32(i);
      if (!Number.isNaN(f) && f32ToF16(f) !== i) wrong.push(i);
    }
    expect(wrong).toEqual([]);
    // ties go to even
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
  });

  it('reads F64, integer dtypes, F8 and unaligned F16 data', () => {
    const f64 = new Float64Array([1.5, -2.25]);
    const i32 = new Int32Array([-7, 123456]);
    const u8 = new Uint8Array([0, 255]);
    const e5m2 = new Uint8Array([0x3c, 0xc0]); // 1.0, -2.0
    const e4m3 = new Uint8Array([0x38, 0x7f, 0x01]); // 1.0, NaN, 2^-9
    const data = new Uint8Array(16 + 8 + 2 + 2 + 3);
    data.set(new Uint8Array(f64.buffer), 0);
    data.set(new Uint8Array(i32.buffer), 16);
    data.set(u8, 24);
    data.set(e5m2, 26);
    data.set(e4m3, 28);
    const file = parseSafetensors(
      build(
        {
          d: { dtype: 'F64', shape: [2], data_offsets: [0, 16] },
          i: { dtype: 'I32', shape: [2], data_offsets: [16, 24] },
          u: { dtype: 'U8', shape: [2], data_offsets: [24, 26] },
          e5: { dtype: 'F8_E5M2', shape: [2], data_offsets: [26, 28] },
          e4: { dtype: 'F8_E4M3', shape: [3], data_offsets: [28, 31] },
        },
        data,
      ),
      'mixed.safetensors',
    );
    expect([...file.tensors.get('d')!.data]).toEqual([1.5, -2.25]);
    expect([...file.tensors.get('i')!.data]).toEqual([-7, 123456]);
    expect([...file.tensors.get('u')!.data]).toEqual([0, 255]);
    expect([...file.tensors.get('e5')!.data]).toEqual([1, -2]);
    const e4 = file.tensors.get('e4')!.data;
    expect(e4[0]).toBe(1);
    expect(e4[1]).toBeNaN();
    expect(e4[2]).toBe(2 ** -9);

    // F16 at an odd absolute offset: copied, not viewed.
    const raw = new Uint8Array(5);
    new DataView(raw.buffer).setUint16(1, 0x3c00, true);
    new DataView(raw.buffer).setUint16(3, 0xc000, true);
    expect([...decodeTensorData(raw.subarray(1), 'F16')]).toEqual([1, -2]);
  });

  it('F32 tensors are views of the file unless copy is asked for', () => {
    const bytes = serializeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } });
    const view = parseSafetensors(bytes, 'v.safetensors').tensors.get('w')!.data;
    expect(view.buffer).toBe(bytes.buffer);
    const copy = parseSafetensors(bytes, 'v.safetensors', { copy: true }).tensors.get('w')!.data;
    expect(copy.buffer).not.toBe(bytes.buffer);
    expect([...copy]).toEqual([1, 2]);
    const some = parseSafetensors(bytes, 'v.safetensors', { filter: (n) => n !== 'w' });
    expect(some.tensors.size).toBe(0);
  });

  it('parses only the header from a prefix of the file', () => {
    const bytes = serializeSafetensors({ a: { shape: [1000], data: new Float32Array(1000) } });
    const need = safetensorsHeaderSize(bytes.subarray(0, 8), 'big.safetensors', bytes.length);
    const header = parseSafetensorsHeader(bytes.subarray(0, need), 'big.safetensors', bytes.length);
    expect(header.dataStart).toBe(need);
    expect(header.dataLength).toBe(4000);
    expect(header.tensors.get('a')).toEqual({ dtype: 'F32', shape: [1000], dataOffsets: [0, 4000] });
  });

  it('reads stories260K/model.safetensors (47 tensors, tied embeddings)', () => {
    const file = path.join(testHubRoot(), 'models', 'stories260K', 'model.safetensors');
    const st = parseSafetensors(new Uint8Array(readFileSync(file)), 'model.safetensors');
    expect(st.tensors.size).toBe(47);
    expect(st.metadata.format).toBe('pt');
    expect(st.tensors.get('model.embed_tokens.weight')!.shape).toEqual([512, 64]);
    expect(st.tensors.get('model.layers.0.self_attn.k_proj.weight')!.shape).toEqual([32, 64]);
    expect(st.tensors.get('model.layers.4.mlp.down_proj.weight')!.shape).toEqual([64, 172]);
    expect(st.tensors.has('lm_head.weight')).toBe(false);
    for (const t of st.tensors.values()) expect(t.data.every(Number.isFinite)).toBe(true);
  });

  it('refuses to write inconsistent tensors', () => {
    expect(() => serializeSafetensors({ a: { shape: [2, 2], data: new Float32Array(3) } })).toThrow(ModelFormatError);
    expect(() => serializeSafetensors({ __metadata__: { shape: [1], data: new Float32Array(1) } })).toThrow(/reserved/);
    expect(() => serializeSafetensors({ a: { shape: [-1], data: new Float32Array(0) } })).toThrow(ModelFormatError);
  });
});

describe('malformed safetensors files', () => {
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };

  it('a file shorter than 8 bytes is truncated', () => {
    expectError(() => parseSafetensors(new Uint8Array(5), 'bad.safetensors'), 'truncated');
  });

  it('header length larger than the file', () => {
    const f = build(ok, 8, { lengthOverride: 5000n });
    expectError(() => parseSafetensors(f, 'bad.safetensors'), 'header length 5000 is larger than the file', 'download it again');
  });

  it('absurd header length (> 100 MB, or above 2^32)', () => {
    expectError(() => parseSafetensors(build(ok, 8, { lengthOverride: 200_000_000n }), 'bad.safetensors'), 'absurd');
    expectError(() => parseSafetensors(build(ok, 8, { lengthOverride: 2n ** 40n }), 'bad.safetensors'), 'absurd', 'Git LFS pointer');
    // A Git LFS pointer file: "version https://git-lfs..." read as a u64 is absurd.
    const lfs = new TextEncoder().encode('version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n');
    expectError(() => parseSafetensors(lfs, 'bad.safetensors'), 'absurd');
  });

  it('invalid JSON header', () => {
    expectError(() => parseSafetensors(build('{"a": {"dtype": "F32",', 8), 'bad.safetensors'), 'not valid UTF-8 JSON');
    expectError(() => parseSafetensors(build('[1, 2]', 0), 'bad.safetensors'), 'not a JSON object');
    const badUtf8 = build('{"a":1}', 0);
    badUtf8[9] = 0xff;
    expectError(() => parseSafetensors(badUtf8, 'bad.safetensors'), 'not valid UTF-8 JSON');
  });

  it('unknown dtype', () => {
    const f = build({ a: { dtype: 'F12', shape: [2], data_offsets: [0, 8] } }, 8);
    expectError(() => parseSafetensors(f, 'bad.safetensors'), 'unknown dtype "F12"', 'tensor "a"', 'F32, F16 or BF16');
  });

  it('malformed shape or entry', () => {
    expectError(() => parseSafetensors(build({ a: { dtype: 'F32', shape: [2.5], data_offsets: [0, 8] } }, 8), 'bad.safetensors'), 'shape');
    expectError(() => parseSafetensors(build({ a: 7 }, 0), 'bad.safetensors'), 'tensor "a"');
    expectError(() => parseSafetensors(build({ __metadata__: [1], ...ok }, 8), 'bad.safetensors'), '__metadata__');
  });

  it('offsets out of range', () => {
    expectError(() => parseSafetensors(build({ a: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, 8), 'bad.safetensors'), 'out of range');
    expectError(() => parseSafetensors(build({ a: { dtype: 'F32', shape: [2], data_offsets: [-8, 0] } }, 8), 'bad.safetensors'), 'out of range');
    expectError(() => parseSafetensors(build({ a: { dtype: 'F32', shape: [2], data_offsets: [0] } }, 8), 'bad.safetensors'), 'out of range');
  });

  it('shape and byte size disagree', () => {
    const f = build({ a: { dtype: 'F16', shape: [2, 3], data_offsets: [0, 8] } }, 8);
    expectError(() => parseSafetensors(f, 'bad.safetensors'), 'needs 12 bytes', 'span 8');
  });

  it('overlapping offsets', () => {
    const f = build({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12);
    expectError(() => parseSafetensors(f, 'bad.safetensors'), 'overlaps "a"');
  });

  it('a hole between tensors, or bytes after the last one', () => {
    const gap = build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, 12);
    expectError(() => parseSafetensors(gap, 'bad.safetensors'), 'not contiguous', '4 bytes unused');
    const startGap = build({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8);
    expectError(() => parseSafetensors(startGap, 'bad.safetensors'), 'not contiguous');
    const trailing = build(ok, 12);
    expectError(() => parseSafetensors(trailing, 'bad.safetensors'), 'not contiguous', '4 bytes after the last tensor');
  });

  it('a truncated file (data shorter than the header says)', () => {
    const full = serializeSafetensors({ a: { shape: [4], data: new Float32Array(4) }, b: { shape: [4], data: new Float32Array(4) } });
    expectError(() => parseSafetensors(full.subarray(0, full.length - 3), 'bad.safetensors'), 'truncated', 'tensor "b"', 'download it again');
    // cut inside the header
    expectError(() => parseSafetensors(full.subarray(0, 20), 'bad.safetensors'), 'larger than the file');
  });
});

describe('I64 index buffers', () => {
  it('round-trips integer data written as I64 and refuses non-integers', async () => {
    const { serializeSafetensors, parseSafetensors } = await import('../../src/model/safetensors');
    const bytes = serializeSafetensors({ idx: { shape: [3], data: Float32Array.from([0, 7, 4095]), dtype: 'I64' } });
    const back = parseSafetensors(bytes, 'idx.safetensors');
    expect(back.tensors.get('idx')!.dtype).toBe('I64');
    expect(Array.from(back.tensors.get('idx')!.data)).toEqual([0, 7, 4095]);
    expect(() => serializeSafetensors({ idx: { shape: [1], data: Float32Array.from([1.5]), dtype: 'I64' } })).toThrow(/integers/);
  });
});
