/**
 * The Playground's "ONNX (onnxruntime-web)" side: an exported folder (the
 * Export screen's zip) run by onnxruntime-web in its own worker, beside our
 * engine, so a user sees that the file they download works. WebGPU execution
 * provider where the browser has WebGPU, wasm otherwise (or when the WebGPU
 * provider fails to start). onnxruntime-web is imported on the first load:
 * nothing of it is in the page's or the engine worker's bundle.
 */
import { unzipSync } from 'fflate';
import { ConfigError, HubError, ModelFormatError } from '../errors';
import { onnxGreedy, type OrtModule, type OrtSession } from '../export/onnx/greedy';
import type { FileSource } from '../hub/source';
import { parseModelConfig, type ModelConfig } from '../model/config';
import { loadTokenizer, type Tokenizer } from '../model/tokenizer';
import type { GenerateResult } from './api';
import { continuation } from './generation';

export type OnnxProvider = 'webgpu' | 'wasm';

export interface OnnxLoadResult {
  provider: OnnxProvider;
  /** Why WebGPU was not used, when it was not. */
  note: string | null;
  modelBytes: number;
}

export interface OnnxGenerateResult extends GenerateResult {
  provider: OnnxProvider;
}

export interface OnnxRunnerApi {
  /** Unzip an exported folder; load its tokenizer and onnx/model.onnx ('auto': WebGPU where available, else wasm). */
  load(zip: Uint8Array, want?: 'auto' | 'wasm'): Promise<OnnxLoadResult>;
  /** Greedy decoding with the engine's stop set (EOS, and BOS for llama2.c-style models). */
  generate(prompt: string, maxNewTokens: number, onToken?: (id: number, text: string) => void): Promise<OnnxGenerateResult>;
  cancel(): void;
}

/** The unzipped folder as a FileSource, so the tokenizer loads exactly as from the Hub. */
class ZipSource implements FileSource {
  readonly id = 'onnx-export';
  constructor(private readonly files: Record<string, Uint8Array>) {}
  async get(path: string): Promise<Uint8Array> {
    const f = this.files[path];
    if (!f) throw new HubError(`The exported folder has no ${path}.`, path, 404);
    return f;
  }
  async has(path: string): Promise<boolean> {
    return path in this.files;
  }
}

export class OnnxRunner implements OnnxRunnerApi {
  private loaded: {
    ort: OrtModule;
    session: OrtSession & { release(): Promise<void> };
    config: ModelConfig;
    tokenizer: Tokenizer;
    provider: OnnxProvider;
  } | null = null;
  private running: AbortController | null = null;

  async load(zip: Uint8Array, want: 'auto' | 'wasm' = 'auto'): Promise<OnnxLoadResult> {
    const files = unzipSync(zip);
    const model = files['onnx/model.onnx'];
    if (!model || !files['config.json'])
      throw new ModelFormatError('This zip is not an ONNX export: it has no onnx/model.onnx or config.json. Export it again (Export, ONNX).');
    const config = parseModelConfig(JSON.parse(new TextDecoder().decode(files['config.json'])), 'onnx-export/config.json');
    const tokenizer = await loadTokenizer(new ZipSource(files));
    await this.loaded?.session.release();
    this.loaded = null;
    const ort = await import('onnxruntime-web/webgpu');
    // transformers.js (the tokenizer above) points this shared runtime at a CDN when it loads; the wasm file is
    // served with the page (a Vite asset next to this bundle), so let onnxruntime-web find it there.
    ort.env.wasm.wasmPaths = undefined;
    let note: string | null = null;
    let provider: OnnxProvider = 'wasm';
    let session: OrtSession & { release(): Promise<void> };
    // A model over 2 GiB keeps its weights in onnx/model.onnx_data[_N] (paths as model.onnx names them).
    const externalData = Object.keys(files)
      .filter((f) => /^onnx\/model\.onnx_data(_\d+)?$/.test(f))
      .map((f) => ({ path: f.slice('onnx/'.length), data: files[f] }));
    if (want === 'wasm') {
      note = null;
    } else if (typeof navigator !== 'undefined' && navigator.gpu) {
      try {
        session = await ort.InferenceSession.create(model, { executionProviders: ['webgpu'], externalData });
        provider = 'webgpu';
      } catch (err) {
        note = `WebGPU execution provider unavailable (${(err as Error).message}); using wasm.`;
      }
    } else {
      note = 'This browser has no WebGPU; using wasm.';
    }
    session ??= await ort.InferenceSession.create(model, { executionProviders: ['wasm'], externalData });
    this.loaded = { ort: ort as unknown as OrtModule, session, config, tokenizer, provider };
    return { provider, note, modelBytes: model.byteLength };
  }

  async generate(prompt: string, maxNewTokens: number, onToken?: (id: number, text: string) => void): Promise<OnnxGenerateResult> {
    if (!this.loaded) throw new ConfigError('Load an ONNX export first.');
    const { ort, session, config, tokenizer, provider } = this.loaded;
    if (!(maxNewTokens >= 1)) throw new ConfigError(`Max new tokens must be at least 1, got ${maxNewTokens}.`);
    const promptIds = tokenizer.encode(prompt);
    if (promptIds.length === 0) throw new ConfigError('The prompt encodes to no tokens: type some text.');
    // The engine's stop set (./generation.ts): llama2.c-style models end a story with BOS.
    const stopIds = [...new Set([tokenizer.eosTokenId, config.bosTokenId, ...config.eosTokenIds])].filter((x): x is number => typeof x === 'number');
    const text = continuation(tokenizer, promptIds);
    const abort = new AbortController();
    this.running = abort;
    const t0 = performance.now();
    const streamed: number[] = [];
    try {
      const ids = await onnxGreedy(ort, session, config, promptIds, {
        maxNewTokens: Math.floor(maxNewTokens),
        stopIds,
        signal: abort.signal,
        onToken: (id) => {
          streamed.push(id);
          onToken?.(id, text(streamed));
        },
      });
      return { ids, promptIds, text: text(ids), cancelled: abort.signal.aborted, ms: performance.now() - t0, provider };
    } finally {
      this.running = null;
    }
  }

  cancel(): void {
    this.running?.abort();
  }
}
