/**
 * Greedy decoding of an exported graph (./llama.ts's interface) with
 * onnxruntime-web: the prompt in one call with an empty cache, then one
 * token per call feeding the present key/values back as the past. The same
 * loop transformers.js runs, written out so the studio can show what the
 * exported file itself produces.
 *
 * The runtime is passed in (the page loads onnxruntime-web lazily), so this
 * file imports nothing from it.
 */

/** The slice of onnxruntime-web used here. */
export interface OrtTensor {
  readonly data: unknown;
  readonly dims: readonly number[];
}
export interface OrtModule {
  Tensor: new (type: 'int64' | 'float32', data: BigInt64Array | Float32Array, dims: number[]) => OrtTensor;
}
export interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
}

export interface CacheShape {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
}

export interface GreedyOptions {
  maxNewTokens: number;
  stopIds: readonly number[];
  onToken?: (id: number) => void;
  signal?: AbortSignal;
}

export async function onnxGreedy(ort: OrtModule, session: OrtSession, shape: CacheShape, promptIds: readonly number[], opts: GreedyOptions): Promise<number[]> {
  const i64 = (v: readonly number[]) =>
    new ort.Tensor(
      'int64',
      BigInt64Array.from(v, (x) => BigInt(x)),
      [1, v.length],
    );
  let past: Record<string, OrtTensor> = {};
  for (let l = 0; l < shape.numLayers; l++) {
    for (const kv of ['key', 'value']) {
      past[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, shape.numKvHeads, 0, shape.headDim]);
    }
  }
  const out: number[] = [];
  let input = [...promptIds];
  let pastLen = 0;
  while (out.length < opts.maxNewTokens && !opts.signal?.aborted) {
    const total = pastLen + input.length;
    const r = await session.run({
      input_ids: i64(input),
      attention_mask: i64(new Array(total).fill(1)),
      position_ids: i64(input.map((_, i) => pastLen + i)),
      ...past,
    });
    const logits = r.logits.data as Float32Array;
    const V = shape.vocabSize,
      row = logits.length - V;
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[row + v] > logits[row + best]) best = v;
    out.push(best);
    opts.onToken?.(best);
    if (opts.stopIds.includes(best)) break;
    past = {};
    for (const name of Object.keys(r)) if (name.startsWith('present.')) past[name.replace('present.', 'past_key_values.')] = r[name];
    pastLen = total;
    input = [best];
  }
  return out;
}
