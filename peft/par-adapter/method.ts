/**
 * par-adapter: the parallel bottleneck adapter of He et al. (Adapters
 * ParBnConfig, METHODS.md §17): beside the MLP, fed the un-normalised residual
 * stream x (before post_attention_layernorm), added to the MLP output:
 *   y = x + h + A(x),   A(x) = (relu(x Wdᵀ + bd) Wuᵀ + bu) · 4.0
 * Defaults: reduction_factor 16 (PEFT-Factory; the library's own is 2),
 * init mam_adapter (Wu = 0: an exact no-op at init), scaling 4.0.
 * Options and code are shared with bn-adapter (../bn-adapter/config.ts, bottleneck.ts).
 */
import { bottleneckMethod } from '../bn-adapter/bottleneck';

export default bottleneckMethod('par-adapter');
