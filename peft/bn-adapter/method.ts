/**
 * bn-adapter: the Houlsby bottleneck adapter (Adapters DoubleSeqBnConfig,
 * METHODS.md §17): one adapter after the attention block and one after the
 * MLP, each on the sub-layer output before the residual add:
 *   y = x + h + A(h),   A(h) = (act(h Wdᵀ + bd) Wuᵀ + bu) · scaling
 * Defaults: reduction_factor 16, non_linearity swish (PEFT-Factory's peftbench
 * sets tanh), init bert, scaling 1.0. Shared code: ./bottleneck.ts.
 */
import { bottleneckMethod } from './bottleneck';

export default bottleneckMethod('bn-adapter');
