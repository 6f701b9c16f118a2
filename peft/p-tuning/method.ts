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
import { dropoutSeed } from 'peft-studio/engine/ops/dropout';
import type { Tensor } from 'peft-studio/engine/tensor';
import { encoderHiddenSize, numVirtualTokens, readOptions } from 'peft-studio/methods/options';
import type { AdapterFiles, AttachedMethod, MethodContext, PeftMethod, TrainableParam } from 'peft-studio/methods/types';
import {
  adapterTensor,
  adapterVirtualTokens,
  broadcastBatch,
  prependPrompt,
  promptActivations,
  PROMPT_FAMILY,
  promptAdapterConfig,
  requireVirtualTokens,
} from '../prompt-tuning/prompt';
import { pTuningOptions } from './config';

/** Everything p-tuning reads, in form order. */
const options = [numVirtualTokens, encoderHiddenSize, ...pTuningOptions] as const;
import { encodePrompt, encoderActivations, encoderParams, initEncoderWeights, type EncoderKind, type EncoderSpec } from './encoder';

const PREFIX = 'prompt_encoder.default.';

export interface AttachedPTuning extends AttachedMethod {
  readonly spec: EncoderSpec;
  /** 'encoder' while the encoder computes P; 'table' after importAdapter loaded an exported prompt. */
  readonly mode: 'encoder' | 'table';
}

export function pTuningSpec(config: Record<string, unknown>, d: number): EncoderSpec {
  const nV = requireVirtualTokens(config, 'p-tuning');
  const o = readOptions(options, config, 'p-tuning');
  return {
    kind: o.encoder_reparameterization_type as EncoderKind,
    nV,
    d,
    H: o.encoder_hidden_size ?? d,
    layers: o.encoder_num_layers,
    dropout: o.encoder_dropout,
  };
}

/** Trainable parameters of the encoder. */
export function pTuningCount(s: EncoderSpec): number {
  return encoderParams(s).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
}

export const pTuning: PeftMethod = {
  name: 'p-tuning',
  label: 'P-tuning',
  family: PROMPT_FAMILY,
  description: 'Soft-prompt embeddings produced by a trained encoder (MLP or LSTM) over a virtual-token table, prepended to the input.',
  order: 15,
  options,
  required: ['num_virtual_tokens'],
  /**
   * The sequence grows by n_v, plus the encoder once: MLP
   * 2·n_v·(d·H + H·H + H·d); LSTM Σ_layers 2 dirs · n_v · 8·H·(in_l + H)
   * (four gates, each an input and a recurrent matmul) then
   * 2·n_v·(2H·2H + 2H·d).
   */
  flops(ctx) {
    const d = ctx.model.hiddenSize;
    const { kind, nV, H, layers } = pTuningSpec(ctx.config, d);
    let f = 0;
    if (kind === 'MLP') {
      f = 2 * nV * (d * H + H * H + H * d);
    } else {
      for (let i = 0; i < layers; i++) f += 2 * nV * 8 * H * ((i === 0 ? d : 2 * H) + H);
      f += 2 * nV * (2 * H * 2 * H + 2 * H * d);
    }
    return { flops: f, virtualTokens: nV };
  },
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
    // Inter-layer dropout masks are a function of (seed, micro-batch): they differ per training forward and survive a resume.
    const prompt = (): Tensor => table ?? encodePrompt(e, spec, w, e.tape && spec.dropout > 0 ? dropoutSeed(e.tape, `${PREFIX}dropout`) : undefined);

    const detachHooks = model.attach({
      virtualTokens: () => nV,
      inputEmbeds: (embeds, h) => prependPrompt(e, broadcastBatch(e, prompt(), h.B), embeds),
    });

    const self: AttachedPTuning = {
      spec,
      get mode() {
        return table ? 'table' : 'encoder';
      },
      // The encoder runs once per forward (not after an import: the table is the prompt).
      memory: () => ({ activations: [...(table ? [] : encoderActivations(spec)), ...promptActivations(nV, d)] }),
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
        const data = adapterTensor(
          files,
          'prompt_embeddings',
          [nV, d],
          'p-tuning',
          'set num_virtual_tokens as in its adapter_config.json, on the same base model.',
        );
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
