/**
 * P-tuning (HF PEFT P_TUNING, METHODS.md §15). The prompt P [n_v, d] comes
 * from a prompt encoder (./encoder.ts: an MLP or a bidirectional LSTM over a
 * trainable table), recomputed once per forward and prepended to every
 * sequence's input embeddings exactly as in prompt tuning (§12).
 *
 * What trains is the encoder (table and MLP/LSTM weights): those are the
 * trainable tensors, so the trainer's checkpoints (trainable.safetensors)
 * are the native checkpoint from which encoder training resumes. The adapter
 * export is the encoder's output only, `prompt_embeddings` [n_v, d], as
 * PEFT saves it; importing an adapter (ours or PEFT's) loads it into a plain
 * table and drops the encoder from the forward, as PEFT does in inference
 * mode. Training after such an import trains that table (the encoder is
 * gone). Not mergeable.
 */
import type { Tensor } from '../../src/engine/tensor';
import { ConfigError } from '../../src/errors';
import type { AdapterFiles, AttachedMethod, MethodContext, PeftMethod, TrainableParam } from '../../src/methods/types';
import {
  adapterTensor, adapterVirtualTokens, broadcastBatch, positiveInt, prependPrompt, promptAdapterConfig, requireVirtualTokens,
} from '../prompt-tuning/prompt';
import { encodePrompt, encoderParams, initEncoderWeights, type EncoderKind, type EncoderSpec } from './encoder';

const PREFIX = 'prompt_encoder.default.';

export interface AttachedPTuning extends AttachedMethod {
  readonly spec: EncoderSpec;
  /** 'encoder' while the encoder computes P; 'table' after importAdapter loaded an exported prompt. */
  readonly mode: 'encoder' | 'table';
}

export function pTuningSpec(config: Record<string, unknown>, d: number): EncoderSpec {
  const nV = requireVirtualTokens(config, 'p-tuning');
  const kindRaw = String(config.encoder_reparameterization_type ?? 'MLP');
  const kind = kindRaw.toUpperCase();
  if (kind !== 'MLP' && kind !== 'LSTM') {
    throw new ConfigError(`encoder_reparameterization_type ${JSON.stringify(kindRaw)} is not a prompt encoder; use MLP or LSTM.`);
  }
  const p = Number(config.encoder_dropout ?? 0);
  if (!(p >= 0 && p < 1)) throw new ConfigError(`encoder_dropout ${JSON.stringify(config.encoder_dropout)} must be in [0, 1); 0 disables it.`);
  return {
    kind: kind as EncoderKind,
    nV,
    d,
    H: positiveInt(config, 'encoder_hidden_size', d, 'p-tuning'),
    layers: positiveInt(config, 'encoder_num_layers', 2, 'p-tuning'),
    dropout: p,
  };
}

/** Trainable parameters of the encoder. */
export function pTuningCount(s: EncoderSpec): number {
  return encoderParams(s).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
}

export const pTuning: PeftMethod = {
  name: 'p-tuning',
  peftType: 'P_TUNING',
  configFromAdapter(c) {
    const n = adapterVirtualTokens(c);
    if (n === null) return null;
    return {
      finetuning_type: 'p-tuning',
      num_virtual_tokens: n,
      encoder_reparameterization_type: c.encoder_reparameterization_type ?? 'MLP',
      encoder_hidden_size: c.encoder_hidden_size ?? null,
      encoder_num_layers: c.encoder_num_layers ?? 2,
      encoder_dropout: c.encoder_dropout ?? 0,
    };
  },
  attach(ctx: MethodContext): AttachedPTuning {
    const { e, model, config } = ctx;
    const d = model.config.hiddenSize;
    const spec = pTuningSpec(config, d);
    const { nV } = spec;
    const weights = new Map<string, Tensor>();
    for (const [name, data] of initEncoderWeights(spec, ctx.random)) {
      const t = e.persist(e.upload(data, encoderParams(spec).find((p) => p.name === name)!.shape, PREFIX + name));
      t.requiresGrad = true;
      weights.set(name, t);
    }
    const w = (name: string) => weights.get(name)!;
    let table: Tensor | null = null;
    // Inter-layer dropout masks differ per training forward, and repeat for the same seed.
    let dropoutCall = 0;
    const seedBase = Number(config.seed ?? 42) * 7919 + 104729;

    const prompt = (): Tensor => table ?? encodePrompt(e, spec, w, e.tape && spec.dropout > 0 ? seedBase + 64 * dropoutCall++ : undefined);

    const detachHooks = model.attach({
      virtualTokens: () => nV,
      inputEmbeds: (embeds, h) => prependPrompt(e, broadcastBatch(e, prompt(), h.B), embeds),
    });

    const self: AttachedPTuning = {
      spec,
      get mode() {
        return table ? 'table' : 'encoder';
      },
      trainable(): TrainableParam[] {
        if (table) return [{ name: 'prompt_embeddings', tensor: table }];
        return [...weights].map(([name, tensor]) => ({ name: PREFIX + name, tensor }));
      },
      async exportAdapter(): Promise<AdapterFiles> {
        // The encoder output in eval mode (no dropout), as PEFT's save.
        const tape = e.tape;
        e.tape = null;
        e.beginScope();
        const P = await e.read(prompt());
        e.endScope();
        e.tape = tape;
        const extra = {
          encoder_dropout: spec.dropout,
          encoder_hidden_size: spec.H,
          encoder_num_layers: spec.layers,
          encoder_reparameterization_type: spec.kind,
        };
        return { config: promptAdapterConfig(model, config, 'P_TUNING', nV, extra), tensors: new Map([['prompt_embeddings', { shape: [nV, d], data: P }]]) };
      },
      importAdapter(files: AdapterFiles): void {
        const data = adapterTensor(files, 'prompt_embeddings', [nV, d], 'p-tuning', 'set num_virtual_tokens as in its adapter_config.json, on the same base model.');
        table ??= e.persist(e.empty([nV, d], 'prompt_embeddings'));
        e.write(table, data);
        table.requiresGrad = true;
      },
      detach(): void {
        detachHooks();
        for (const t of weights.values()) t.dispose();
        weights.clear();
        table?.dispose();
      },
    };
    return self;
  },
};

export default pTuning;
