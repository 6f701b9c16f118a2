/**
 * QLoRA's options (METHODS.md §5): LLaMA-Factory's quantization keys
 * (quantization_bit 4, quantization_type nf4, double_quantization true).
 * QLoRA reads these plus every LoRA option (peft/lora/config.ts);
 * quantization_bit on finetuning_type lora selects it.
 */
import type { OptionSpec } from 'peft-studio/config/schema';

export const quantizationBit = {
  key: 'quantization_bit',
  type: 'int',
  default: null,
  nullable: true,
  min: 4,
  max: 4,
  group: 'qlora',
  help: 'Quantize the frozen base linears to this many bits (only 4: NF4, QLoRA). Unset: no quantization. With finetuning_type lora, selects QLoRA.',
} as const satisfies OptionSpec;

export const quantizationOptions = [
  quantizationBit,
  { key: 'quantization_type', type: 'enum', default: 'nf4', choices: ['nf4'], group: 'qlora', help: '4-bit data type (bitsandbytes NF4).' },
  { key: 'double_quantization', type: 'bool', default: true, group: 'qlora', help: 'Quantize the per-block absmax statistics to 8 bits as well.' },
] as const satisfies readonly OptionSpec[];
