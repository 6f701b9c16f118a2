/**
 * Whether the Export screen offers a run's merged model (safetensors or
 * ONNX): the run records whether its method has a merge (RunInfo.mergeable,
 * the check behind the CLI's NotMergeableError). Unknown (a run stored before
 * it was recorded) leaves the buttons on; the worker still refuses with the
 * error.
 */
import type { RunInfo } from '../worker/api';

/** Why the merged exports are off for this run, with what to do instead; null when they are offered. */
export function notMergeableNote(run: Pick<RunInfo, 'method' | 'mergeable'> | null): string | null {
  if (!run || run.mergeable !== false) return null;
  return (
    `${run.method} cannot be merged into the base weights, so this run has no merged model or ONNX export. ` +
    'Export the adapter instead (its files above, or Download all) and load it on the base model.'
  );
}
