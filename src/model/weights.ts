/**
 * The weights a LLaMA-family config.json asks for, and the check that a
 * checkpoint's tensors agree with it: every expected tensor present with its
 * exact shape, the layer count matching, declared biases present. Run on
 * headers (names and shapes) before any tensor data is converted or uploaded,
 * so a config that disagrees with its weights fails in milliseconds with the
 * names of the tensors, never as a shape error deep inside a kernel.
 *
 * Tensors the config does not ask for are not uploaded; they are named in a
 * warning (transformers ignores them too, as "unexpected keys"). Biases of the
 * model's linears are the exception: they are used when present (a BitFit merge
 * of a model whose config cannot declare them), with a note.
 */
import { ModelFormatError } from '../errors';
import type { ModelConfig } from './config';

const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
const MLP = ['gate_proj', 'up_proj', 'down_proj'] as const;

/** Every tensor the config asks for, with its shape (HF layout: linear weights [out, in]). */
export function expectedWeights(c: ModelConfig): Map<string, number[]> {
  const { hiddenSize: C, intermediateSize: F, numHeads: Hq, numKvHeads: Hkv, headDim: D, vocabSize: V } = c;
  const out: Record<string, number> = { q_proj: Hq * D, k_proj: Hkv * D, v_proj: Hkv * D, o_proj: C, gate_proj: F, up_proj: F, down_proj: C };
  const inp: Record<string, number> = { q_proj: C, k_proj: C, v_proj: C, o_proj: Hq * D, gate_proj: C, up_proj: C, down_proj: F };
  const w = new Map<string, number[]>([
    ['model.embed_tokens.weight', [V, C]],
    ['model.norm.weight', [C]],
  ]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    for (const n of ATTN) w.set(`${p}.self_attn.${n}.weight`, [out[n], inp[n]]);
    for (const n of MLP) w.set(`${p}.mlp.${n}.weight`, [out[n], inp[n]]);
    w.set(`${p}.input_layernorm.weight`, [C]);
    w.set(`${p}.post_attention_layernorm.weight`, [C]);
    if (c.attentionBias.qkv) for (const n of ['q_proj', 'k_proj', 'v_proj']) w.set(`${p}.self_attn.${n}.bias`, [out[n]]);
    if (c.attentionBias.o) w.set(`${p}.self_attn.o_proj.bias`, [C]);
    if (c.mlpBias) for (const n of MLP) w.set(`${p}.mlp.${n}.bias`, [out[n]]);
  }
  if (!c.tieWordEmbeddings) w.set('lm_head.weight', [V, C]);
  return w;
}

/** The shape of a bias of one of the model's linears (used when present even if config.json does not declare it), or null. */
function linearBiasShape(c: ModelConfig, name: string): number[] | null {
  const m = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.bias$/.exec(name);
  if (!m || Number(m[1]) >= c.numLayers) return null;
  const weight = expectedWeights({ ...c, numLayers: 1 }).get(`model.layers.0.${m[2]}.${m[3]}.weight`);
  return weight ? [weight[0]] : null;
}

const list = (xs: string[], n = 5) => xs.slice(0, n).join(', ') + (xs.length > n ? ` and ${xs.length - n} more` : '');
const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export interface WeightsCheck {
  /** Names to upload: what the config asks for, plus linear biases it does not declare. */
  use: Set<string>;
  /** Tensors not uploaded (not part of this architecture), for a warning. */
  ignored: string[];
  /** Linear biases present but not declared in config.json (used). */
  undeclaredBiases: string[];
}

/**
 * Checks a checkpoint's tensor names and shapes against its config. Throws
 * one ModelFormatError naming every kind of disagreement (layer count,
 * missing tensors, wrong shapes, declared biases missing).
 */
export function checkWeights(c: ModelConfig, shapes: ReadonlyMap<string, readonly number[]>, source: string): WeightsCheck {
  const expected = expectedWeights(c);
  const problems: string[] = [];
  const layers = new Set<number>();
  for (const name of shapes.keys()) {
    const m = /^model\.layers\.(\d+)\./.exec(name);
    if (m) layers.add(Number(m[1]));
  }
  const found = layers.size ? Math.max(...layers) + 1 : 0;
  if (found !== c.numLayers) {
    problems.push(
      `config.json says num_hidden_layers ${c.numLayers} but the weights hold ${found} layer(s) (model.layers.0 … model.layers.${Math.max(found - 1, 0)})`,
    );
  }
  const missing = [...expected.keys()].filter((n) => !shapes.has(n));
  const biasesMissing = missing.filter((n) => n.endsWith('.bias'));
  const weightsMissing = missing.filter((n) => !n.endsWith('.bias'));
  if (weightsMissing.length) {
    problems.push(
      `${weightsMissing.length} tensor(s) the config needs are missing: ${list(weightsMissing)}` +
        (weightsMissing.includes('lm_head.weight') ? ' (set "tie_word_embeddings": true in config.json if the head is tied to embed_tokens)' : ''),
    );
  }
  if (biasesMissing.length) {
    const flag =
      c.modelType === 'llama' ? (biasesMissing.some((n) => n.includes('.mlp.')) ? 'attention_bias / mlp_bias' : 'attention_bias') : `model_type ${c.modelType}`;
    problems.push(
      `config.json declares biases (${flag}) but ${biasesMissing.length} are missing from the weights: ${list(biasesMissing)}; set the flag to false or use the weights the config belongs to`,
    );
  }
  const wrong: string[] = [];
  for (const [name, want] of expected) {
    const got = shapes.get(name);
    if (got && !same(got, want)) wrong.push(`${name} is [${got.join(', ')}], config.json implies [${want.join(', ')}]`);
  }
  const use = new Set<string>([...expected.keys()].filter((n) => shapes.has(n)));
  const ignored: string[] = [];
  const undeclaredBiases: string[] = [];
  for (const [name, got] of shapes) {
    if (expected.has(name)) continue;
    const bias = linearBiasShape(c, name);
    if (bias) {
      if (!same(got, bias)) wrong.push(`${name} is [${got.join(', ')}], config.json implies [${bias.join(', ')}]`);
      use.add(name);
      undeclaredBiases.push(name);
      continue;
    }
    // A tied head may still be stored; rotary caches are buffers, not weights.
    if (name === 'lm_head.weight' && c.tieWordEmbeddings) continue;
    if (name.endsWith('rotary_emb.inv_freq')) continue;
    ignored.push(name);
  }
  if (wrong.length) problems.push(`${wrong.length} tensor(s) disagree with config.json: ${list(wrong, 4)}`);
  if (problems.length) {
    throw new ModelFormatError(
      `${source}: the weights do not match config.json:\n${problems.map((p) => `  - ${p}`).join('\n')}\n` +
        'Use the config.json that came with these weights (hidden_size, intermediate_size, num_attention_heads, num_key_value_heads, head_dim, vocab_size, num_hidden_layers).',
    );
  }
  return { use, ignored, undeclaredBiases };
}

/** The warning for tensors that were not uploaded, or null. */
export function ignoredWarning(check: WeightsCheck, source: string): string | null {
  if (!check.ignored.length) return null;
  return `${source}: ${check.ignored.length} tensor(s) are not part of this architecture and were not loaded: ${list(check.ignored)}.`;
}

/** The file dtypes a weight may have: floats, converted exactly (F64 rounds to f32). */
const WEIGHT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/**
 * Throws ModelFormatError when a tensor the model uses is stored as an
 * integer, boolean or 8-bit float: such weights belong to quantized
 * checkpoints (bitsandbytes int8, GPTQ / AWQ, FP8 with block scales) whose
 * values mean nothing without their scales, so converting them to float32
 * would load a model that runs and is wrong.
 */
export function checkWeightDtypes(dtypes: Iterable<readonly [string, string]>, use: ReadonlySet<string>, source: string): void {
  const bad = [...dtypes].filter(([name, dtype]) => use.has(name) && !WEIGHT_DTYPES.has(dtype)).map(([n, d]) => `${n} (${d})`);
  if (!bad.length) return;
  throw new ModelFormatError(
    `${source}: ${bad.length} weight(s) are not stored as floats: ${list(bad)}. Integer, boolean and 8-bit float weights come from quantized checkpoints ` +
      '(bitsandbytes, GPTQ, AWQ, FP8), which PEFT Studio does not load; use the unquantized F32 / F16 / BF16 checkpoint (QLoRA quantizes it itself: finetuning_type qlora).',
  );
}
