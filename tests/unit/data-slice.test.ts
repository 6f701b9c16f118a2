/** Row slices of a split (HF syntax): one split divided between training and prediction without overlap. */
import { describe, it, expect } from 'vitest';
import path from 'node:path';
import { datasetEntry, loadDatasetRows, parseDatasetKey } from '../../src/data/registry';
import { nodeResolver } from '../../src/data/node';
import { testHubRoot } from '../helpers/hub-server';

describe('key[split[start:end]]', () => {
  it('parses like HF datasets and rejects empty slices', () => {
    expect(parseDatasetKey('svamp_eval[test[:700]]')).toEqual({ key: 'svamp_eval', split: 'test', rowSlice: { end: 700 } });
    expect(parseDatasetKey('svamp_eval[test[700:]]')).toEqual({ key: 'svamp_eval', split: 'test', rowSlice: { start: 700 } });
    expect(parseDatasetKey('sst2[validation]')).toEqual({ key: 'sst2', split: 'validation' });
    expect(() => parseDatasetKey('sst2[train[5:5]]')).toThrow(/empty/);
    expect(() => parseDatasetKey('sst2[:5]')).toThrow(/not a dataset key/);
  });

  it('loads disjoint row ranges of one split, and max_samples counts from the slice start', async () => {
    const files = nodeResolver({ datasetDir: path.join(testHubRoot(), 'datasets'), cacheDir: null });
    const all = await loadDatasetRows(datasetEntry('svamp_eval'), files, { maxRows: 12 });
    const head = await loadDatasetRows(datasetEntry('svamp_eval[test[:5]]'), files);
    const tail = await loadDatasetRows(datasetEntry('svamp_eval[test[5:]]'), files, { maxRows: 7 });
    expect(head.rows).toEqual(all.rows.slice(0, 5));
    expect(tail.rows).toEqual(all.rows.slice(5, 12));
  });
});
