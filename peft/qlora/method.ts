/**
 * QLoRA (METHODS.md §5): LoRA (§4) over a base whose decoder linears are NF4.
 *
 * Every linear of the decoder, targeted or not (q, k, v, o, gate, up,
 * down_proj: what bitsandbytes quantizes; embed_tokens, the norms and lm_head
 * stay as loaded: f32, or packed f16 / bf16 with base_dtype), is quantized on the CPU from its f32 weight (quantizeNf4Cpu, the
 * §5 arithmetic): blockwise absmax (64) and 4-bit NF4 codes, with double
 * quantization (default) of the absmax vector to 8 bits (blocks of 256, mean
 * offset). The state goes to the GPU and the f32 buffer is released; the
 * `linear` hook computes the base path from the NF4 state without calling
 * `inner`, dequantizing inside the matmul kernels (peft/qlora/ops.ts):
 *
 *   y = x Ŵᵀ + s · (dropout(x) Aᵀ) Bᵀ,   ∂L/∂x = G Ŵ + (LoRA terms),   Ŵ frozen
 *
 * Reading the weights back is asynchronous: await `ready` before running the
 * model (a forward before then throws; the trainer and the CLI await it).
 *
 * The adapter itself is peft/lora's, attached on top (its hook wraps ours),
 * so A/B init, scaling, dropout, LoRA+ groups, export names and
 * adapter_config.json are LoRA's: a QLoRA adapter is a LoRA adapter.
 *
 * No merge: merging into NF4 is lossy (dequantize, add s·BA, re-quantize) and
 * LLaMA-Factory refuses it; merge the exported adapter into the original f32
 * model with the lora method instead. Detaching frees the NF4 states; the f32
 * base weights are not restored (reload the model).
 */
import { nf4Bytes, nf4Layout, nf4Linear, nf4Upload, quantizeNf4Cpu, type Nf4Weight } from './ops';
import { ConfigError } from 'peft-studio/errors';
import { readOptions } from 'peft-studio/methods/options';
import type { AttachedMethod, MethodContext, PeftMethod } from 'peft-studio/methods/types';
import { loraOptions } from '../lora/config';
import { LORA_FAMILY, lora, loraFlops } from '../lora/method';
import { quantizationOptions } from './config';

export interface QloraAttached extends AttachedMethod {
  /** Resolves when every decoder linear is held as NF4 and its f32 buffer is released. */
  readonly ready: Promise<void>;
  /** The NF4 base weights, by module name (complete once ready). */
  readonly quantized: ReadonlyMap<string, Nf4Weight>;
  /** GPU bytes of the NF4 states and of the f32 buffers they replaced (so far). */
  readonly baseBytes: { nf4: number; f32: number };
}

/** QLoRA's quantization settings (the LoRA ones are LoRA's own). */
export function quantizationSettings(config: Record<string, unknown>): { double: boolean } {
  const o = readOptions(quantizationOptions, config, 'qlora');
  return { double: o.double_quantization };
}

export function attachQlora(ctx: MethodContext): QloraAttached {
  const { e, model, config } = ctx;
  const { double } = quantizationSettings(config);
  const names = model.linearNames();
  const baseNames = new Set(names);
  const quantized = new Map<string, Nf4Weight>();
  let f32Bytes = 0;
  let initError: Error | null = null;
  let cancelled = false;

  const detachBase = model.attach({
    linear: (name, x, inner) => {
      if (!baseNames.has(name)) return inner(x);
      const q = quantized.get(name);
      if (!q) {
        throw initError ?? new ConfigError("QLoRA is still quantizing the base weights: await the attached method's `ready` before running the model.");
      }
      return nf4Linear(e, x, q, { bias: model.params.get(`${name}.bias`) ?? null, name });
    },
  });
  // LoRA reads the weight shapes while attaching: attach it before any release.
  let adapter: AttachedMethod;
  try {
    adapter = lora.attach(ctx);
  } catch (err) {
    detachBase();
    throw err;
  }

  const init = async () => {
    for (const name of names) {
      const W = model.stored(`${name}.weight`);
      const [outF, inF] = W.shape;
      const data = await e.read(W);
      if (cancelled) return;
      quantized.set(name, nf4Upload(e, quantizeNf4Cpu(data, double), outF, inF, double, `${name}.nf4`));
      f32Bytes += W.buffer.size;
      model.releaseWeight(`${name}.weight`);
    }
    // Hand the freed f32 buffers back to the driver (the pool would keep them cached).
    e.flush();
    e.pool.trim();
  };
  // Counting trainable parameters needs LoRA's tensors only: keep the base in f32 for whoever attaches next.
  const ready = (ctx.countOnly ? Promise.resolve() : init()).catch((err: Error) => {
    initError = err;
    throw err;
  });
  // Nobody may be awaiting yet: keep an unobserved failure from crashing the host; it resurfaces in ready and the hook.
  ready.catch(() => {});

  return {
    ready,
    quantized,
    get baseBytes() {
      let nf4 = 0;
      for (const q of quantized.values()) nf4 += nf4Bytes(q);
      return { nf4, f32: f32Bytes };
    },
    trainable: () => adapter.trainable(),
    // LoRA's intermediates; the NF4 base matmuls dequantize inside the kernel.
    memory() {
      const m = adapter.memory?.() ?? {};
      if (!ctx.countOnly) return m;
      // Counting skipped the quantization: every base linear will be NF4 words instead of its stored bytes.
      let change = 0;
      for (const name of names) {
        const W = model.stored(`${name}.weight`);
        change += e.pool.bytesFor(4 * nf4Layout(W.size, double).words) - W.buffer.size;
      }
      return { ...m, residentChange: change };
    },
    exportAdapter: () => adapter.exportAdapter(),
    importAdapter: (files) => adapter.importAdapter(files),
    detach(): void {
      cancelled = true;
      adapter.detach();
      detachBase();
      for (const q of quantized.values()) q.state.dispose();
      quantized.clear();
    },
  };
}

export const qlora: PeftMethod = {
  name: 'qlora',
  label: 'QLoRA',
  family: LORA_FAMILY,
  description: 'LoRA over a base whose decoder linears are held in 4-bit NF4 (dequantized inside the matmuls).',
  order: 5,
  options: [...loraOptions, ...quantizationOptions],
  select: { finetuning_type: 'lora', key: 'quantization_bit', value: 4 },
  configProblems(c) {
    const bits = c.quantization_bit;
    if (bits === null || bits === undefined || c.finetuning_type === 'lora') return [];
    return [
      `quantization_bit: a quantized base model trains only with QLoRA (finetuning_type lora), not '${String(c.finetuning_type)}'; unset quantization_bit.`,
    ];
  },
  // NF4 dequantization happens inside the base matmuls and is not counted.
  flops: (ctx) => ({ flops: loraFlops(ctx, 'qlora') }),
  peftType: 'LORA',
  attach: attachQlora,
};

export default qlora;
