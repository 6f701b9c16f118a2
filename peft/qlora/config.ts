/**
 * QLoRA options: LoRA's (peft/lora/config.ts) plus LLaMA-Factory's
 * quantization keys, reused from the built-in schema (quantization_bit 4,
 * quantization_type nf4, double_quantization true).
 */
import { quantizationOptions } from '../../src/config/schema';
import { loraOptions } from '../lora/config';

export const qloraOptions = [...loraOptions, ...quantizationOptions] as const;
