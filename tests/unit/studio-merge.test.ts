/** The Export screen's merged / ONNX buttons follow the run's recorded mergeability (src/ui/merge.ts). */
import { describe, expect, test } from 'vitest';
import { notMergeableNote } from '../../src/ui/merge';

describe('merged exports of a run', () => {
  test('a run whose method has no merge gets a note naming its method and the way out; others get none', () => {
    const note = notMergeableNote({ method: 'some-method', mergeable: false });
    expect(note).toMatch(/^some-method cannot be merged into the base weights, so this run has no merged model or ONNX export\./);
    expect(note).toMatch(/Export the adapter instead/);
    expect(notMergeableNote({ method: 'some-method', mergeable: true })).toBeNull();
    // Not yet attached, or stored before mergeability was recorded: offered (the worker refuses with NotMergeableError).
    expect(notMergeableNote({ method: 'some-method' })).toBeNull();
    expect(notMergeableNote(null)).toBeNull();
  });
});
