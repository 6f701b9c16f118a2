/**
 * bn-adapter (Houlsby, DoubleSeqBnConfig) against METHODS.md §17, plus what the
 * three bottleneck adapters share: initialisations, the Python-style config
 * JSON and config_id, and loading PEFT-Factory's nested output folder.
 */
import { describe, it, expect } from 'vitest';
import { probe, TOKENS_LAYERS } from '../../tests/helpers/flops-probe';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gpuEngine } from '../../tests/helpers/gpu';
import { loadStories, storiesDir } from '../../tests/helpers/models';
import { ConfigError } from '../../src/errors';
import { LocalFolderSource } from '../../src/hub/node';
import { seededRandom } from '../../src/model/generate';
import { adapterFileMap, pythonFloat, pythonJson } from '../../src/methods/adapter-files';
import { methodForAdapter, readAdapter } from '../../src/methods/adapter-io';
import { adaptersConfigId, bnConfigDict, keysFromAdaptersConfig, resolveBnSettings } from './bottleneck';
import { sha1Hex } from './sha1';
import { bottleneckSuite, logits, randomizeAdapter } from './bottleneck-suite';
import bn from './method';

bottleneckSuite({
  name: 'bn-adapter',
  method: bn,
  storiesCount: 5800,
  smollmCount: 2_525_040,
  lr: 1e-2,
  variants: [
    {},
    { ln_before: true, ln_after: true, scaling: 'channel', init_weights: 'houlsby', non_linearity: 'tanh' },
    { ln_after: true, adapter_residual_before_ln: true, non_linearity: 'gelu', scaling: 0.5 },
  ],
});

describe('bn-adapter', () => {
  it('initialisations: bert N(0, 0.02²), houlsby truncated at ±0.02, mam_adapter U(±1/√d) with Wu = 0; biases 0', async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const stats = async (init: string) => {
      const m = bn.attach({ e, model, config: { init_weights: init }, random: seededRandom(7) });
      const out: Record<string, Float32Array> = { down: new Float32Array(0), up: new Float32Array(0), bias: new Float32Array(0) };
      for (const p of m.trainable()) {
        const v = await e.read(p.tensor);
        const k = p.name.endsWith('bias') ? 'bias' : p.name.includes('adapter_down') ? 'down' : 'up';
        out[k] = Float32Array.from([...out[k], ...v]);
      }
      m.detach();
      return out;
    };
    const std = (v: Float32Array) => Math.sqrt(v.reduce((a, x) => a + x * x, 0) / v.length);
    const bert = await stats('bert');
    expect(std(bert.down)).toBeGreaterThan(0.018);
    expect(std(bert.down)).toBeLessThan(0.022);
    expect(std(bert.up)).toBeGreaterThan(0.018);
    expect(std(bert.up)).toBeLessThan(0.022);
    expect(bert.bias.every((x) => x === 0)).toBe(true);
    const h = await stats('houlsby');
    expect(Math.max(...h.down.map(Math.abs), ...h.up.map(Math.abs))).toBeLessThanOrEqual(0.02);
    expect(std(h.down)).toBeGreaterThan(0.0075); // truncated N(0, 0.01²) at 2σ has σ ≈ 0.0088
    expect(std(h.down)).toBeLessThan(0.01);
    const mam = await stats('mam_adapter');
    expect(Math.max(...mam.down.map(Math.abs))).toBeLessThanOrEqual(1 / 8);
    expect(Math.max(...mam.down.map(Math.abs))).toBeGreaterThan(0.1);
    expect(mam.up.every((x) => x === 0)).toBe(true);
    model.dispose();
  });

  it("init_weights mam_adapter is an exact no-op: the logits are the base model's, bit for bit", async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const ids = [1, 403, 407, 261, 378];
    const base = await logits(e, model, ids);
    const m = bn.attach({ e, model, config: { init_weights: 'mam_adapter' }, random: seededRandom(1) });
    expect(Array.from(await logits(e, model, ids))).toEqual(Array.from(base));
    m.detach();
    // bert init is small but not a no-op (METHODS.md Appendix D).
    const b = bn.attach({ e, model, config: {}, random: seededRandom(1) });
    expect(Array.from(await logits(e, model, ids))).not.toEqual(Array.from(base));
    b.detach();
    model.dispose();
  });

  it('Python-style JSON: float repr, sorted keys, ensure_ascii; config_id = SHA-1 of the minimised config', () => {
    expect(sha1Hex(new TextEncoder().encode('abc'))).toBe('a9993e364706816aba3e25717850c26c9cd0d89d');
    expect(sha1Hex(new Uint8Array(0))).toBe('da39a3ee5e6b4b0d3255bfef95601890afd80709');
    expect(sha1Hex(new TextEncoder().encode('a'.repeat(1000)))).toBe('291e9a6c66994949b57ba5e650361e98fc36b1ba');
    expect([1, 4, 0.5, 0.0001, 1e-5, 1.5e-7, 1e16, 123456789.25, -2, 0].map(pythonFloat)).toEqual([
      '1.0',
      '4.0',
      '0.5',
      '0.0001',
      '1e-05',
      '1.5e-07',
      '1e+16',
      '123456789.25',
      '-2.0',
      '0.0',
    ]);
    expect(pythonJson({ b: [1, 2], a: { scaling: 4, n: 'é' }, c: [] }, { floatKeys: new Set(['scaling']) })).toBe(
      '{"a": {"n": "\\u00e9", "scaling": 4.0}, "b": [1, 2], "c": []}',
    );
    expect(pythonJson({ b: 1, a: [true, null] }, { indent: 2 })).toBe('{\n  "a": [\n    true,\n    null\n  ],\n  "b": 1\n}');
    // The hash drops falsy values and the version-stable defaults, then hashes json.dumps(sort_keys=True):
    // for the Houlsby defaults that is exactly this string.
    const s = resolveBnSettings('bn-adapter', {});
    const minimised =
      '{"adapter_name": "default", "mh_adapter": true, "non_linearity": "swish", "original_ln_after": true, "output_adapter": true, "reduction_factor": 16, "residual_before_ln": true}';
    expect(adaptersConfigId(bnConfigDict(s))).toBe(sha1Hex(new TextEncoder().encode(minimised)).slice(0, 16));
  });

  it('maps Adapters-library configs to the three methods; refuses what it does not implement', () => {
    const lib = (over: Record<string, unknown>, top: Record<string, unknown> = {}) => ({
      config: { ...bnConfigDict(resolveBnSettings('bn-adapter', {})), ...over },
      name: 'x',
      version: 'adapters.1.2.0',
      ...top,
    });
    expect(keysFromAdaptersConfig(lib({}))!.finetuning_type).toBe('bn-adapter');
    expect(keysFromAdaptersConfig(lib({ mh_adapter: false, original_ln_before: true }))!.finetuning_type).toBe('seq-bn-adapter');
    expect(keysFromAdaptersConfig(lib({ mh_adapter: false, is_parallel: true, scaling: 4.0 }))!.finetuning_type).toBe('par-adapter');
    expect(methodForAdapter(lib({ mh_adapter: false, original_ln_before: true })).method.name).toBe('seq-bn-adapter');
    // Unversioned (old) configs spell gelu_new 'gelu', as the library renames on load.
    expect(keysFromAdaptersConfig(lib({ non_linearity: 'gelu' }, { version: undefined }))!.non_linearity).toBe('gelu_new');
    expect(keysFromAdaptersConfig(lib({ non_linearity: 'gelu' }))!.non_linearity).toBe('gelu');
    expect(() => keysFromAdaptersConfig(lib({ architecture: 'prefix_tuning' }))).toThrow(/architecture 'prefix_tuning'/);
    expect(() => keysFromAdaptersConfig(lib({ phm_layer: true, use_gating: true }))).toThrow(/phm_layer \(Compacter\), use_gating/);
    expect(() => keysFromAdaptersConfig(lib({ leave_out: [0, 1] }))).toThrow(ConfigError);
    // A PEFT config is not an Adapters config.
    expect(keysFromAdaptersConfig({ peft_type: 'LORA', r: 8 })).toBeNull();
  });

  it("loads PEFT-Factory's nested output folder (<output_dir>/<adapter_name>/ beside default/ with the head), in-process and through the CLI", async () => {
    const e = await gpuEngine();
    const model = await loadStories(e);
    const m = bn.attach({ e, model, config: { adapter_name: 'sst2', non_linearity: 'tanh', model_name_or_path: 'stories260K' }, random: seededRandom(5) });
    randomizeAdapter(e, m, 0.2, 6);
    const out = mkdtempSync(path.join(tmpdir(), 'ps-pf-'));
    const write = (dir: string, files: Record<string, Uint8Array | string>) => {
      mkdirSync(dir, { recursive: true });
      for (const [n, data] of Object.entries(files)) writeFileSync(path.join(dir, n), data);
    };
    write(path.join(out, 'sst2'), adapterFileMap(await m.exportAdapter()));
    write(path.join(out, 'default'), { 'head_config.json': '{"config": null, "name": "default"}', 'pytorch_model_head.bin': 'unused' });
    writeFileSync(path.join(out, 'trainer_state.json'), '{}');
    const files = await readAdapter(new LocalFolderSource(out));
    expect(files.adapterName).toBe('sst2');
    expect(methodForAdapter(files.config).config).toMatchObject({ finetuning_type: 'bn-adapter', non_linearity: 'tanh', adapter_name: 'sst2' });
    const r = await promisify(execFile)(
      'node',
      [path.resolve('bin/peft-studio.mjs'), 'logits', '--model', storiesDir(), '--adapter', out, '--text', 'Once upon a time'],
      { maxBuffer: 1 << 26 },
    );
    const res = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { input_ids: number[]; logits_last: number[] };
    const V = model.config.vocabSize;
    const here = await logits(e, model, res.input_ids);
    const last = here.subarray((res.input_ids.length - 1) * V);
    expect(Math.max(...res.logits_last.map((v, i) => Math.abs(v - last[i])))).toBeLessThan(1e-5);
    // Only the safetensors copy: still loads. Two adapters side by side: the error names them.
    const onlySt = path.join(out, 'only-st');
    const map = adapterFileMap(await m.exportAdapter());
    write(onlySt, { 'adapter_config.json': map['adapter_config.json'], 'adapter.safetensors': map['adapter.safetensors'] });
    expect((await readAdapter(new LocalFolderSource(onlySt))).tensors.size).toBe(40);
    await expect(readAdapter(new LocalFolderSource(out))).rejects.toThrow(/holds 2 adapters \(only-st, sst2\); pass the folder of the one to load/);
    m.detach();
    model.dispose();
  });

  // Python, where present: json.dumps reproduces our adapter_config.json byte for byte, the
  // library's config-hash recipe gives our config_id, and (with torch) torch.load reads the .bin.
  const runs = (py: string, code: string) => {
    try {
      execFileSync(py, ['-c', code], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };
  const pythons = ['python3', '/usr/bin/python3'];
  const python = pythons.find((py) => runs(py, 'import torch')) ?? pythons.find((py) => runs(py, 'import json'));
  it.skipIf(!python)(
    'Python reads the export as the Adapters library would (json.dumps round trip, config_id; torch.load where torch is installed)',
    async () => {
      const e = await gpuEngine();
      const model = await loadStories(e);
      const m = bn.attach({
        e,
        model,
        config: { adapter_name: 'sst2', ln_before: true, ln_after: true, scaling: 'channel', model_name_or_path: 'stories260K' },
        random: seededRandom(5),
      });
      randomizeAdapter(e, m, 0.2, 6);
      const dir = mkdtempSync(path.join(tmpdir(), 'ps-py-'));
      for (const [n, data] of Object.entries(adapterFileMap(await m.exportAdapter()))) writeFileSync(path.join(dir, n), data);
      const script = [
        'import hashlib, json, sys',
        'd = sys.argv[1]',
        'text = open(d + "/adapter_config.json").read()',
        'cfg = json.loads(text)',
        'same = json.dumps(cfg, indent=2, sort_keys=True) == text',
        'def minimize(x): return {k: minimize(v) for k, v in x.items() if v} if isinstance(x, dict) else x',
        'ignore = {"phm_layer": True, "phm_dim": 4, "factorized_phm_W": True, "shared_W_phm": False, "shared_phm_rule": True, "factorized_phm_rule": False, "phm_c_init": "normal", "phm_init_range": 0.0001, "learn_phm": True, "hypercomplex_nonlinearity": "glorot-uniform", "phm_rank": 1, "phm_bias": True, "init_weights": "bert", "scaling": 1.0}',
        'mc = minimize(cfg["config"])',
        'for k, v in ignore.items():',
        '    if mc.get(k, None) == v: del mc[k]',
        'cid = hashlib.sha1(json.dumps(mc, sort_keys=True).encode("utf-8")).hexdigest()[:16]',
        'out = {"same": same, "config_id": cid, "scaling_type": type(cfg["config"]["scaling"]).__name__}',
        'try:',
        '    import torch',
        '    sd = torch.load(d + "/pytorch_adapter.bin", weights_only=True)',
        '    out["tensors"] = {k: [list(v.shape), float(v.double().sum())] for k, v in sd.items()}',
        'except ImportError:',
        '    pass',
        'print(json.dumps(out))',
      ].join('\n');
      const res = JSON.parse(execFileSync(python!, ['-c', script, dir], { encoding: 'utf8' })) as {
        same: boolean;
        config_id: string;
        scaling_type: string;
        tensors?: Record<string, [number[], number]>;
      };
      const cfg = JSON.parse(readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'));
      expect(res.same, 'json.dumps(json.loads(file), indent=2, sort_keys=True) == file').toBe(true);
      expect(res.config_id).toBe(cfg.config_id);
      expect(res.scaling_type).toBe('str'); // "channel"
      console.log(
        `python ${python}: json round trip ${res.same}, config_id ${res.config_id}, torch.load ${res.tensors ? 'read ' + Object.keys(res.tensors).length + ' tensors' : 'not available'}`,
      );
      if (res.tensors) {
        const ours = (await m.exportAdapter()).tensors;
        expect(Object.keys(res.tensors).sort()).toEqual([...ours.keys()].sort());
        for (const [k, [shape, sum]] of Object.entries(res.tensors)) {
          expect(shape, k).toEqual(ours.get(k)!.shape);
          expect(sum).toBeCloseTo(
            ours.get(k)!.data.reduce((a, b) => a + b, 0),
            4,
          );
        }
      }
      m.detach();
      model.dispose();
    },
  );
});

describe('bn-adapter FLOPs (PSCP, stories260K 1×512 probe)', () => {
  it('bn-adapter: down and up projections at each insertion point', () => {
    // 2·2·d·m per point per token, m = d / 16 = 4; two points per layer
    expect(probe(bn).extra).toBe(TOKENS_LAYERS * 2 * (2 * 64 * 4 + 2 * 4 * 64)); // 5 242 880
    expect(probe(bn, { mh_adapter: false }).extra).toBe(TOKENS_LAYERS * 1024);
  });
});
