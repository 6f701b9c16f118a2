/**
 * seq-bn-adapter: the Pfeiffer sequential bottleneck adapter (Adapters
 * SeqBnConfig, METHODS.md §17): one adapter after the MLP, whose input is the
 * post-residual sum and whose own residual is the MLP output:
 *   y = x + h + A(x + h)
 * Defaults: reduction_factor 16, non_linearity relu, init bert, scaling 1.0.
 * Options and code are shared with bn-adapter (../bn-adapter/config.ts, bottleneck.ts).
 */
import { bottleneckMethod } from '../bn-adapter/bottleneck';

export default bottleneckMethod('seq-bn-adapter');
