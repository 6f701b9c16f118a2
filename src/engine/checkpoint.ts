/**
 * Activation recomputation (gradient checkpointing): a region of the forward
 * whose intermediate activations are dropped as soon as the region's output
 * exists, and recomputed when the backward reaches the region.
 *
 *   forward   y = f(x)            on a throwaway tape; every tensor f created
 *                                 except y is released at once
 *   backward  y' = f(x)           again, on a tape of its own
 *             dy' := dy           (the gradient y collected from later ops)
 *             replay that tape    → dx and the gradients of f's trainable
 *                                 tensors accumulate as without the region
 *
 * Memory held between forward and backward: the region's input and output
 * only. During the backward of one region: that region's activations and
 * their gradients, once. A model built as a chain of regions (one per decoder
 * layer) therefore needs activation memory for one layer, not all of them,
 * at the cost of a second forward of every layer.
 *
 * What f must obey: it is a function of x and of tensors that outlive the
 * step (parameters, or tensors created before the region), and it draws
 * random numbers only from streams keyed by call site, not by call count,
 * so that the second run computes the same values (dropout masks included).
 * The forward runs with a tape set (a throwaway one), so "training mode"
 * checks (`e.tape ? dropout : identity`) behave the same in both runs.
 */
import type { Engine } from './engine';
import type { Tensor } from './tensor';

export function checkpoint(e: Engine, x: Tensor, f: (x: Tensor) => Tensor, name = 'checkpoint'): Tensor {
  const outer = e.tape;
  // Inference (no tape): nothing will be recomputed, nothing to save.
  if (!outer) return f(x);
  // Two forks of the same state: one for the first run, one kept for the
  // recomputation, so both draw the same random numbers.
  const first = outer.fork();
  const again = outer.fork();
  e.tape = first;
  e.beginScope();
  let y: Tensor;
  try {
    y = f(x);
  } finally {
    e.tape = outer;
  }
  // The first run's backward closures are dropped with `first`; its random
  // draws count as the outer forward's.
  outer.join(first);
  // y may be a reshaped alias: its buffer belongs to its base.
  e.endScope(y.base ?? y);
  // Released buffers return to the pool at the next submit: submit now, so the
  // next region reuses them instead of growing the pool.
  e.flush();
  if (!y.requiresGrad) return y;
  outer.record(name, () => {
    const dy = y.grad;
    if (!dy) return;
    const saved = e.tape;
    const tape = again;
    e.tape = tape;
    e.beginScope();
    let y2: Tensor;
    try {
      y2 = f(x);
    } finally {
      e.tape = saved;
    }
    if (y2.size !== y.size) throw new Error(`${name}: the recomputed output has ${y2.size} values, the first run ${y.size}`);
    // Hand the collected gradient to the recomputed output (no copy), run the
    // region's backward, then take it back so that disposing y2 leaves it alone.
    y2.grad = dy;
    tape.replay();
    y2.grad = null;
    e.endScope();
    // dy has no later reader: the ops that consumed y ran their backward before this one.
    y.grad = null;
    dy.dispose();
    e.flush();
  });
  return y;
}
