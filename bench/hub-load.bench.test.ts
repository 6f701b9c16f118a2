/**
 * Host memory of a Hub load of a large shape: Llama-3.2-1B's shape
 * (HUB_LOAD_SHAPE picks another bench/<name>.config.json) as one BF16
 * safetensors file with random weights (written once under .cache/bench/,
 * shared with `peft-studio bench`), served over HTTP by scripts/hub-server.mjs
 * in a child process (its buffers are not this process's memory) and loaded
 * with HubSource through a NodeFolderCache:
 *
 *   local   the same file from the folder (positioned reads), for reference
 *   cold    empty cache: the streamed download, tensors uploaded as they
 *           arrive, the file written into the cache on the way
 *   warm    a new cache object on the filled folder (a new process): the file
 *           is hashed once (verify sha256), then tensors are range reads
 *   whole   HUB_LOAD_WHOLE=1: the path Hub loads took before streaming (the
 *           whole shard downloaded into memory, then uploaded), for comparison
 *
 * For each: load time and the process RSS (sampled every 20 ms) above its
 * baseline, and that less the GPU pool's bytes (SwiftShader's GPU memory is
 * process memory). Results: bench-results/bench-hub-load.json.
 *
 *   npx vitest run -c bench/vitest.bench.config.ts bench/hub-load
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { expect, test } from 'vitest';
import { writeRandomCheckpoint } from '../src/cli/bench';
import { Engine } from '../src/engine/engine';
import { acquireDevice } from '../src/gpu/device';
import { nodeGpu } from '../src/gpu/node';
import { HubSource } from '../src/hub/hub-source';
import { LocalFolderSource, NodeFolderCache } from '../src/hub/node';
import type { FileSource } from '../src/hub/source';
import { parseModelConfig } from '../src/model/config';
import { loadModel } from '../src/model/load';

const SHAPE = process.env.HUB_LOAD_SHAPE ?? 'llama3.2-1b';
const rss = () => process.memoryUsage().rss;

/** Starts scripts/hub-server.mjs on `root` in a child process; resolves with its URL and a stop function. */
async function hubServer(root: string): Promise<{ url: string; stop: () => void }> {
  const child = spawn(process.execPath, ['scripts/hub-server.mjs', root], { env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`hub-server exited (${code})`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = /listening on (http:\S+)/.exec(line);
      if (m) resolve(m[1]);
    });
  });
  return { url, stop: () => child.kill() };
}

const CHILD = process.env.HUB_LOAD_CHILD;
const MODES = ['local', 'cold', 'warm', ...(process.env.HUB_LOAD_WHOLE === '1' ? ['whole'] : [])];

/** Peak RSS of this process so far (Linux: VmHWM), or 0 where /proc is not there. */
function vmHwm(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * One load in this process (a child of the test below: every load starts in a
 * fresh process, since memory a previous load freed stays in the RSS and
 * would hide the next load's growth).
 */
test.runIf(!!CHILD)(`one ${SHAPE} load (${CHILD})`, async () => {
  const { HUB_LOAD_URL: url, HUB_LOAD_CACHE: cacheDir, HUB_LOAD_DIR: dir, HUB_LOAD_OUT: out } = process.env as Record<string, string>;
  const e = new Engine(await acquireDevice(nodeGpu(), { timestamps: false }));
  const hub = (cache?: NodeFolderCache) => new HubSource({ endpoint: url, repo: SHAPE, kind: 'model', cache });
  const sources: Record<string, () => FileSource> = {
    local: () => new LocalFolderSource(dir),
    cold: () => hub(new NodeFolderCache(cacheDir)),
    warm: () => hub(new NodeFolderCache(cacheDir)),
    whole: () => {
      const src = hub();
      // Without readRange: streamWeights takes the whole shard with get(), as Hub loads did before streaming.
      return { id: src.id, get: (p, cb, o) => src.get(p, cb, o), has: (p) => src.has(p) };
    },
  };
  (globalThis as { gc?: () => void }).gc?.();
  const baseline = rss();
  let peak = baseline;
  const timer = setInterval(() => (peak = Math.max(peak, rss())), 20);
  const t0 = performance.now();
  const { model } = await loadModel(e, sources[CHILD!](), { tokenizer: false, warn: () => {} });
  await e.sync();
  clearInterval(timer);
  peak = Math.max(peak, rss());
  const gpu = e.pool.current;
  const r = {
    load_ms: Math.round(performance.now() - t0),
    host_rss_baseline_bytes: baseline,
    host_peak_rss_bytes: peak,
    host_peak_rss_vmhwm_bytes: vmHwm(),
    host_rss_above_baseline_bytes: peak - baseline,
    gpu_bytes_after_load: gpu,
    host_rss_above_baseline_less_gpu_bytes: peak - baseline - gpu,
  };
  model.dispose();
  e.ctx.destroy();
  writeFileSync(out, JSON.stringify({ ...r, adapter: e.ctx.adapterInfo }));
});

test.runIf(!CHILD)(`${SHAPE} shape, BF16 file, from a local Hub server through the Node folder cache: host memory cold and warm`, async () => {
  const configText = readFileSync(path.join('bench', `${SHAPE}.config.json`), 'utf8');
  const cfg = parseModelConfig(JSON.parse(configText), `bench/${SHAPE}.config.json`);
  const dir = path.resolve('.cache', 'bench', `${SHAPE}-bf16`);
  const tw = performance.now();
  writeRandomCheckpoint(dir, configText, cfg, 'BF16');
  const fileBytes = statSync(path.join(dir, 'model.safetensors')).size;
  console.log(`hub-load: ${dir}/model.safetensors, ${(fileBytes / 2 ** 30).toFixed(2)} GiB, ready in ${((performance.now() - tw) / 1000).toFixed(1)} s`);

  const root = mkdtempSync(path.join(tmpdir(), 'hub-load-root-'));
  const cacheDir = mkdtempSync(path.join(tmpdir(), 'hub-load-cache-'));
  mkdirSync(path.join(root, 'models', SHAPE), { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) symlinkSync(path.join(dir, f), path.join(root, 'models', SHAPE, f));
  const server = await hubServer(root);
  try {
    const results: Record<string, unknown> = { model: `${SHAPE} shape (random weights, BF16 file)`, file_bytes: fileBytes };
    for (const mode of MODES) {
      const out = path.join(root, `${mode}.json`);
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn('npx', ['vitest', 'run', '-c', 'bench/vitest.bench.config.ts', 'bench/hub-load'], {
          env: { ...process.env, HUB_LOAD_CHILD: mode, HUB_LOAD_URL: server.url, HUB_LOAD_CACHE: cacheDir, HUB_LOAD_DIR: dir, HUB_LOAD_OUT: out },
          stdio: 'inherit',
        });
        child.on('exit', resolve);
      });
      expect(code, `the ${mode} load`).toBe(0);
      const r = JSON.parse(readFileSync(out, 'utf8')) as Record<string, number> & { adapter: unknown };
      results.adapter ??= r.adapter;
      delete (r as { adapter?: unknown }).adapter;
      results[mode] = r;
      console.log(
        `hub-load ${mode}: ${(r.load_ms / 1000).toFixed(1)} s, RSS +${(r.host_rss_above_baseline_bytes / 1e9).toFixed(2)} GB above baseline, ` +
          `${(r.host_rss_above_baseline_less_gpu_bytes / 1e9).toFixed(2)} GB less the GPU's ${(r.gpu_bytes_after_load / 1e9).toFixed(2)} GB`,
      );
    }
    mkdirSync('bench-results', { recursive: true });
    writeFileSync(path.join('bench-results', 'bench-hub-load.json'), JSON.stringify(results, null, 2) + '\n');
    const cached = new NodeFolderCache(cacheDir).paths(new HubSource({ endpoint: server.url, repo: SHAPE, kind: 'model' }).cacheKey('model.safetensors')).data;
    expect(statSync(cached).size).toBe(fileBytes);
    // The target: at most 1.5 GB above the baseline, beyond the GPU's own buffers.
    for (const k of ['cold', 'warm'] as const)
      expect((results[k] as { host_rss_above_baseline_less_gpu_bytes: number }).host_rss_above_baseline_less_gpu_bytes).toBeLessThan(1.5e9);
  } finally {
    server.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(cacheDir, { recursive: true, force: true });
  }
});
