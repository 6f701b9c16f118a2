/**
 * The examples of a config's dataset, in the worker: a user file the page
 * handed over (kept by name), or, where the dataset registry provides it, a
 * built-in entry. Returns examples in the one SFT form the trainer encodes.
 */
import type { ExperimentConfig } from '../config/schema';
import type { SftExample } from '../data/sft';
import { ConfigError } from '../errors';
import { examplesFromJsonl } from '../run/experiment';
import { isLocalDataFile } from '../run/share-link';

/** User data files by name (what `dataset:` in the config names). */
export type DataFiles = Map<string, Uint8Array>;

export function readExamples(config: ExperimentConfig, files: DataFiles, key: 'dataset' | 'eval_dataset' = 'dataset'): SftExample[] {
  const name = config[key];
  if (typeof name !== 'string' || !name) throw new ConfigError(`${key} is not set: pick a data file (or a built-in dataset) in Data.`);
  const bytes = files.get(name);
  if (bytes) {
    if (/\.jsonl$/i.test(name)) return examplesFromJsonl(new TextDecoder().decode(bytes), name);
    throw new ConfigError(`${name}: only Alpaca .jsonl files ({"instruction", "input", "output"} per line) can be trained on in this version.`);
  }
  if (isLocalDataFile(name)) {
    throw new ConfigError(`${key} '${name}' is a file on the computer where this experiment was set up; a link cannot carry it. Pick the file in Data.`);
  }
  throw new ConfigError(`${key} '${name}' is not a data file picked in Data, and the built-in dataset registry is not part of this build yet.`);
}
