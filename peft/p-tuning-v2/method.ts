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
 * Options: num_virtual_tokens (required; registered in peft/prompt-tuning/config.ts).
 * No configFromAdapter: prefix-tuning loads every PREFIX_TUNING adapter.
 */
import type { PeftMethod } from '../../src/methods/types';
import { attachPrefix } from '../prefix-tuning/method';

const pTuningV2: PeftMethod = {
  name: 'p-tuning-v2',
  peftType: 'PREFIX_TUNING',
  attach: (ctx) => attachPrefix(ctx, 'p-tuning-v2'),
};

export default pTuningV2;
