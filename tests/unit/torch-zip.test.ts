/**
 * torch.save zip format (src/methods/torch-zip.ts): our writer read back by our
 * reader and checked byte by byte (zip records, alignment, pickle opcodes); a
 * file written by real torch (tests/fixtures/torch-zip, made by make.py with
 * torch 1.13) read by our reader; and, where a python3 with torch is present,
 * our file loaded by torch.load(weights_only=True).
 */
import { describe, it, expect } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  crc32,
  pickleOpcodes,
  pickleTensorDict,
  readStoredZip,
  readTorchZip,
  unpickleTensorDict,
  writeStoredZip,
  writeTorchZip,
} from '../../src/methods/torch-zip';
import { ModelFormatError } from '../../src/errors';

const fixtures = path.resolve('tests/fixtures/torch-zip');

function tensors() {
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  m.set('model.layers.0.attention_adapters.adapters.a.adapter_down.0.weight', {
    shape: [4, 8],
    data: Float32Array.from({ length: 32 }, (_, i) => Math.sin(i) * 0.1),
  });
  m.set('scalar', { shape: [], data: Float32Array.of(-0.5) });
  m.set('vec', { shape: [3], data: Float32Array.of(1, 2, 3) });
  m.set('four_d', { shape: [2, 1, 3, 2], data: Float32Array.from({ length: 12 }, (_, i) => i / 7) });
  m.set('big', { shape: [70001], data: Float32Array.from({ length: 70001 }, (_, i) => i * 1e-3) });
  m.set('empty', { shape: [0, 5], data: new Float32Array(0) });
  return m;
}

describe('torch zip', () => {
  it('crc32 matches the standard check value', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });

  it('round-trips a dict of float32 tensors exactly', () => {
    const src = tensors();
    const back = readTorchZip(writeTorchZip(src, 'pytorch_adapter'));
    expect([...back.keys()]).toEqual([...src.keys()]);
    for (const [k, t] of src) {
      expect(back.get(k)!.shape).toEqual(t.shape);
      expect(Array.from(back.get(k)!.data)).toEqual(Array.from(t.data));
    }
  });

  it('zip structure: stored entries under one folder, data 64-byte aligned, CRCs, central directory and end record', () => {
    const bytes = writeTorchZip(tensors(), 'pytorch_adapter');
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const entries = readStoredZip(bytes, 'test');
    expect(entries.map((x) => x.name)).toEqual([
      'pytorch_adapter/data.pkl',
      'pytorch_adapter/byteorder',
      ...[0, 1, 2, 3, 4, 5].map((k) => `pytorch_adapter/data/${k}`),
      'pytorch_adapter/version',
    ]);
    let expectedLocal = 0;
    for (const x of entries) {
      expect(x.dataOffset % 64, x.name).toBe(0);
      const data = bytes.subarray(x.dataOffset, x.dataOffset + x.size);
      expect(crc32(data)).toBe(x.crc);
      // Local header right before: signature, version 20, no flags, method 0 (stored), sizes, name.
      const nameLen = new TextEncoder().encode(x.name).length;
      const extraLen = x.dataOffset - expectedLocal - 30 - nameLen;
      expect(dv.getUint32(expectedLocal, true)).toBe(0x04034b50);
      expect(dv.getUint16(expectedLocal + 4, true)).toBe(20);
      expect(dv.getUint16(expectedLocal + 6, true)).toBe(0);
      expect(dv.getUint16(expectedLocal + 8, true)).toBe(0);
      expect(dv.getUint32(expectedLocal + 14, true)).toBe(x.crc);
      expect(dv.getUint32(expectedLocal + 18, true)).toBe(x.size);
      expect(dv.getUint32(expectedLocal + 22, true)).toBe(x.size);
      expect(dv.getUint16(expectedLocal + 26, true)).toBe(nameLen);
      expect(dv.getUint16(expectedLocal + 28, true)).toBe(extraLen);
      expect(new TextDecoder().decode(bytes.subarray(expectedLocal + 30, expectedLocal + 30 + nameLen))).toBe(x.name);
      if (extraLen > 0) {
        // torch's padding block: id "FB" (0x4246) and the length of what follows.
        expect(dv.getUint16(expectedLocal + 30 + nameLen, true)).toBe(0x4246);
        expect(dv.getUint16(expectedLocal + 32 + nameLen, true)).toBe(extraLen - 4);
      }
      expectedLocal = x.dataOffset + x.size;
    }
    const text = (name: string) => {
      const x = entries.find((y) => y.name === name)!;
      return new TextDecoder().decode(bytes.subarray(x.dataOffset, x.dataOffset + x.size));
    };
    expect(text('pytorch_adapter/byteorder')).toBe('little');
    expect(text('pytorch_adapter/version')).toBe('3\n');
    // Storage 1 is the scalar -0.5 as little-endian float32.
    const s1 = entries.find((y) => y.name === 'pytorch_adapter/data/1')!;
    expect(Array.from(bytes.subarray(s1.dataOffset, s1.dataOffset + 4))).toEqual([0x00, 0x00, 0x00, 0xbf]);
    // End record: 9 entries, central directory right after the last entry's data.
    const eocd = bytes.length - 22;
    expect(dv.getUint32(eocd, true)).toBe(0x06054b50);
    expect(dv.getUint16(eocd + 10, true)).toBe(9);
    expect(dv.getUint32(eocd + 16, true)).toBe(expectedLocal);
    expect(dv.getUint32(eocd + 12, true)).toBe(eocd - expectedLocal);
  });

  it('data.pkl is the protocol-2 opcode sequence torch writes for a tensor dict', () => {
    const one = pickleTensorDict([['w', { shape: [2, 3], numel: 6 }]]);
    expect(pickleOpcodes(one)).toEqual([
      'PROTO',
      'EMPTY_DICT',
      'BINUNICODE',
      'GLOBAL',
      'BINPUT',
      'MARK',
      'MARK',
      'BINUNICODE',
      'BINPUT',
      'GLOBAL',
      'BINPUT',
      'BINUNICODE',
      'BINUNICODE',
      'BINPUT',
      'BININT1',
      'TUPLE',
      'BINPERSID',
      'BININT1',
      'BININT1',
      'BININT1',
      'TUPLE2',
      'BININT1',
      'BININT1',
      'TUPLE2',
      'NEWFALSE',
      'GLOBAL',
      'BINPUT',
      'EMPTY_TUPLE',
      'REDUCE',
      'TUPLE',
      'REDUCE',
      'SETITEM',
      'STOP',
    ]);
    expect(Array.from(one.subarray(0, 3))).toEqual([0x80, 2, 0x7d]);
    const text = new TextDecoder('latin1').decode(one);
    expect(text).toContain('ctorch._utils\n_rebuild_tensor_v2\n');
    expect(text).toContain('ctorch\nFloatStorage\n');
    expect(text).toContain('ccollections\nOrderedDict\n');
    // Two tensors: MARK … SETITEMS, repeated globals and strings come from the memo.
    const two = pickleOpcodes(
      pickleTensorDict([
        ['a', { shape: [70000], numel: 70000 }],
        ['b', { shape: [1, 2, 3, 4], numel: 24 }],
      ]),
    );
    expect(two.slice(0, 3)).toEqual(['PROTO', 'EMPTY_DICT', 'MARK']);
    expect(two.filter((o) => o === 'GLOBAL').length).toBe(3);
    expect(two.filter((o) => o === 'BINGET').length).toBe(5);
    expect(two).toContain('BININT'); // 70000 > 65535
    expect(two.at(-2)).toBe('SETITEMS');
    const recs = unpickleTensorDict(pickleTensorDict([['b', { shape: [1, 2, 3, 4], numel: 24 }]]));
    expect(recs[0][1]).toMatchObject({ size: [1, 2, 3, 4], stride: [24, 12, 4, 1], offset: 0, storage: { key: '0', numel: 24, dtype: 'F32' } });
  });

  it('reads a checkpoint written by torch 1.13 (OrderedDict state dict with _metadata, views, half, bfloat16, zip64 end records)', () => {
    const got = readTorchZip(readFileSync(path.join(fixtures, 'torch-1.13.bin')), 'torch-1.13.bin');
    const want = JSON.parse(readFileSync(path.join(fixtures, 'expected.json'), 'utf8')).tensors as Record<
      string,
      { shape: number[]; data?: number[]; first?: number[]; last?: number[] }
    >;
    expect([...got.keys()]).toEqual(Object.keys(want));
    for (const [k, w] of Object.entries(want)) {
      const g = got.get(k)!;
      expect(g.shape, k).toEqual(w.shape);
      if (w.data) expect(Array.from(g.data), k).toEqual(w.data.map((v) => Math.fround(v)));
      else {
        expect(Array.from(g.data.subarray(0, 3))).toEqual(w.first!.map((v) => Math.fround(v)));
        expect(Array.from(g.data.subarray(-3))).toEqual(w.last!.map((v) => Math.fround(v)));
      }
    }
  });

  it('refuses anything outside the tensor-dict subset, without executing it', () => {
    const enc = new TextEncoder();
    // pickle.dumps of os.system('echo hi') by hand: GLOBAL posix system, arg tuple, REDUCE.
    const evil = Uint8Array.from([0x80, 2, ...enc.encode('cposix\nsystem\n'), 0x58, 7, 0, 0, 0, ...enc.encode('echo hi'), 0x85, 0x52, 0x2e]);
    expect(() => unpickleTensorDict(evil)).toThrow(/posix\.system/);
    expect(() => unpickleTensorDict(evil)).toThrow(ModelFormatError);
    const zip = writeStoredZip([
      ['archive/data.pkl', evil],
      ['archive/version', enc.encode('3\n')],
    ]);
    expect(() => readTorchZip(zip, 'evil.bin')).toThrow(/refers to posix\.system/);
    // A root that is not a dict, and an unknown opcode (BINFLOAT).
    expect(() => unpickleTensorDict(Uint8Array.from([0x80, 2, 0x29, 0x2e]))).toThrow(/root object is not a dict/);
    expect(() => unpickleTensorDict(Uint8Array.from([0x80, 2, 0x47, 0, 0, 0, 0, 0, 0, 0, 0, 0x2e]))).toThrow(/0x47/);
    // Truncated pickle and truncated zip.
    expect(() => unpickleTensorDict(Uint8Array.from([0x80, 2, 0x7d]))).toThrow(/without a STOP/);
    const good = writeTorchZip(tensors());
    expect(() => readTorchZip(good.subarray(0, good.length - 30), 'cut.bin')).toThrow(/cut\.bin is not a torch zip/);
    // A compressed entry (method 8) is refused by name.
    const z = writeStoredZip([['archive/data.pkl', pickleTensorDict([])]]).slice();
    const dv = new DataView(z.buffer);
    const cd = dv.getUint32(z.length - 22 + 16, true);
    dv.setUint16(cd + 10, 8, true);
    expect(() => readTorchZip(z, 'deflated.bin')).toThrow(/compressed \(method 8\)/);
    // Legacy (pre-1.6) torch files start with a pickle, not a zip.
    expect(() => readTorchZip(Uint8Array.from([0x80, 2, 0x8a, 10, ...new Array(40).fill(0)]), 'old.bin')).toThrow(/legacy/);
    // A corrupted storage fails its CRC.
    const c = writeTorchZip(new Map([['x', { shape: [2], data: Float32Array.of(1, 2) }]])).slice();
    const st = readStoredZip(c, 'c').find((x) => x.name.endsWith('data/0'))!;
    c[st.dataOffset] ^= 1;
    expect(() => readTorchZip(c, 'c.bin')).toThrow(/CRC/);
  });

  // The first python3 with torch: $PYTHON, python3 on PATH, or Debian's (apt-get install python3-torch).
  const python = [process.env.PYTHON, 'python3', '/usr/bin/python3'].find((py) => {
    if (!py) return false;
    try {
      execFileSync(py, ['-c', 'import torch'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  });

  it.skipIf(!python)('torch.load(weights_only=True) reads our file to the same values (needs python3 with torch)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'torchzip-'));
    const file = path.join(dir, 'pytorch_adapter.bin');
    const src = tensors();
    writeFileSync(file, writeTorchZip(src, 'pytorch_adapter'));
    const script = [
      'import json, sys, torch',
      'sd = torch.load(sys.argv[1], weights_only=True)',
      'print(json.dumps({k: {"shape": list(v.shape), "dtype": str(v.dtype), "sum": float(v.double().sum()), "first": v.flatten()[:3].tolist()} for k, v in sd.items()}))',
    ].join('\n');
    const out = JSON.parse(execFileSync(python!, ['-c', script, file], { encoding: 'utf8' })) as Record<
      string,
      { shape: number[]; dtype: string; sum: number; first: number[] }
    >;
    expect(Object.keys(out)).toEqual([...src.keys()]);
    for (const [k, t] of src) {
      expect(out[k].shape).toEqual(t.shape);
      expect(out[k].dtype).toBe('torch.float32');
      expect(out[k].first).toEqual(Array.from(t.data.subarray(0, 3)));
      expect(out[k].sum).toBeCloseTo(
        t.data.reduce((a, b) => a + b, 0),
        2,
      );
    }
  });
});
