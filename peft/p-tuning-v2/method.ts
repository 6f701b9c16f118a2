/**
 * P-Tuning v2 (METHODS.md §14): deep prompts, i.e. trained key/value prefixes
 * on every layer. It is prefix tuning (§13, peft/prefix-tuning) without
 * reparameterisation — the trained table E [n_v, N·2·n_kv·h_d] is the prefix
 * matrix Z itself, layer ℓ's keys its block 2ℓ and values block 2ℓ+1 — with
 * its own finetuning_type so that users find it. PEFT and PEFT-Factory have no
 * separate implementation (PEFT's prefix encoder derives from the P-tuning-v2
 * repo's; its optional reparameterisation is prefix_projection = true there),
 * so this folder reuses prefix-tuning's code, rejects prefix_projection: true,
 * and exports a PREFIX_TUNING adapter (prompt_embeddings = Z, prefix_projection
 * false) that Python PEFT and prefix-tuning here load unchanged. The original
 * P-tuning-v2 code also applies dropout to the prefix; PEFT does not, nor do we.
 *
 * Options: num_virtual_tokens (required; the shared spec of peft-studio/methods/options).
 * No configFromAdapter: prefix-tuning loads every PREFIX_TUNING adapter.
 */
import { numVirtualTokens } from 'peft-studio/methods/options';
import type { PeftMethod } from 'peft-studio/methods/types';
import { PROMPT_FAMILY } from '../prompt-tuning/prompt';
import { attachPrefix, prefixFlops } from '../prefix-tuning/method';

const pTuningV2: PeftMethod = {
  name: 'p-tuning-v2',
  label: 'P-tuning v2',
  family: PROMPT_FAMILY,
  description: 'Prefix tuning without reparameterisation: a trained key/value table of n_v virtual tokens per layer.',
  order: 14,
  options: [numVirtualTokens],
  required: ['num_virtual_tokens'],
  flops: (ctx) => prefixFlops(ctx, 'p-tuning-v2'),
  peftType: 'PREFIX_TUNING',
  attach: (ctx) => attachPrefix(ctx, 'p-tuning-v2'),
};

export default pTuningV2;
