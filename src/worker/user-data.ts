/**
 * Data the user picked in this page: files by name, the column mappings that
 * make them registry entries, and their way into a run (kept in the run's
 * storage, restored after a reload). Registry datasets are not held here;
 * ./data.ts reads them from the Hub.
 */
import { validateConfig, type ExperimentConfig } from '../config/schema';
import type { DatasetEntry } from '../data/entry';
import { hasDataset, parseDatasetInfo, registerDatasets } from '../data/registry';
import { encodeTurn } from '../data/template';
import { ConfigError } from '../errors';
import type { FileCache } from '../hub/index';
import type { Tokenizer } from '../model/tokenizer';
import type { IdbRunStore } from '../run/idb-store';
import { padIdOf } from '../run/experiment';
import type { ColumnMapping, DataFile, DataFileInfo, DataPreview } from './api';
import {
  isUserFile,
  loadExperimentData,
  previewExamples,
  readUserTable,
  userEntry,
  userExamples,
  USER_DATASET_INFO,
  type DataFiles,
  type DataHost,
} from './data';

export class UserData {
  readonly files: DataFiles = new Map();
  /** Entries made from picked files with a column mapping: key → entry. */
  private readonly entries = new Map<string, DatasetEntry>();

  constructor(private readonly makeCache: () => FileCache | undefined) {}

  async put(file: DataFile): Promise<{ name: string; bytes: number }> {
    const name = file.name.split(/[\\/]/).pop() ?? '';
    if (!name) throw new ConfigError('The data file has no name.');
    this.files.set(name, file.bytes);
    return { name, bytes: file.bytes.byteLength };
  }

  async inspect(name: string): Promise<DataFileInfo> {
    const rows = await readUserTable(name, this.files);
    const columns = [...new Set(rows.slice(0, 50).flatMap((r) => Object.keys(r)))];
    const text = (v: unknown) => (typeof v === 'string' ? v : (JSON.stringify(v) ?? '')).slice(0, 200);
    const sample = rows.slice(0, 3).map((r) => Object.fromEntries(columns.map((c) => [c, text(r[c])])));
    return { name, rows: rows.length, columns, sample, alpaca: /\.jsonl$/i.test(name) && columns.includes('instruction') && columns.includes('output') };
  }

  async map(name: string, mapping: ColumnMapping): Promise<string> {
    if (!this.files.has(name)) throw new ConfigError(`The file ${name} is not loaded here: pick it in Data.`);
    const entry = userEntry(name, mapping);
    const rows = await readUserTable(name, this.files, 50);
    for (const c of [mapping.prompt, mapping.response, mapping.query].filter((x): x is string => !!x)) {
      if (rows.length && !Object.hasOwn(rows[0], c)) throw new ConfigError(`${name} has no column "${c}" (its columns: ${Object.keys(rows[0]).join(', ')}).`);
    }
    this.register([entry]);
    return entry.key;
  }

  private register(entries: DatasetEntry[]): void {
    for (const e of entries) this.entries.set(e.key, e);
    registerDatasets(entries);
  }

  /** The picked files and entries the config's datasets use (kept with a run). */
  of(config: ExperimentConfig): { files: string[]; entries: DatasetEntry[] } {
    const keys = String(config.dataset ?? '')
      .split(',')
      .map((k) => k.trim().replace(/\[.*\]$/, ''));
    const entries = keys.map((k) => this.entries.get(k)).filter((e): e is DatasetEntry => !!e);
    const files = new Set(entries.flatMap((e) => e.sources.flatMap((s) => Object.values(s.splits).flat())));
    if (isUserFile(config, this.files)) files.add(String(config.dataset));
    return { files: [...files].filter((f) => this.files.has(f)), entries };
  }

  /** A run's picked files and column mappings, back from its storage. */
  async restore(store: IdbRunStore, name: string): Promise<void> {
    for (const f of await store.listFiles()) {
      if (!f.startsWith('data/')) continue;
      const file = f.slice(5);
      if (this.files.has(file)) continue;
      const v = await store.readFile(f);
      if (v !== null) this.files.set(file, typeof v === 'string' ? new TextEncoder().encode(v) : v);
    }
    if (!this.files.has(name)) throw new ConfigError(`The run's data file ${name} is missing from browser storage; pick it again in Data.`);
    const info = await store.readFile(USER_DATASET_INFO);
    if (info !== null) this.register(parseDatasetInfo(typeof info === 'string' ? info : new TextDecoder().decode(info), USER_DATASET_INFO));
  }

  /** A picked file the config names must be here (a registry key is fetched later). */
  check(config: ExperimentConfig): void {
    const spec = String(config.dataset ?? '').trim();
    if (!spec) throw new ConfigError('dataset is not set: pick a built-in dataset or a .jsonl file in Data.');
    if (!hasDataset(spec.split(',')[0].trim())) userExamples(spec, this.files);
  }

  host(): DataHost {
    return { files: this.files, cache: this.makeCache(), userKeys: new Set(this.entries.keys()) };
  }

  /** How the config's dataset renders and tokenizes with `tok`. */
  async preview(raw: Record<string, unknown>, count: number, tokenizerFor: (c: ExperimentConfig) => Promise<Tokenizer>): Promise<DataPreview> {
    const config = validateConfig(raw, 'studio');
    const tok = await tokenizerFor(config);
    const examples = await previewExamples(config, this.host());
    const lengths: number[] = [];
    const shown: DataPreview['examples'] = [];
    for (const ex of examples) {
      const { source, target } = encodeTurn(tok, ex, config.template);
      lengths.push(source.length + target.length);
      if (shown.length < count) {
        shown.push({
          prompt: tok.decode(source, { skipSpecialTokens: false }),
          response: tok.decode(target, { skipSpecialTokens: false }),
          promptTokens: source.length,
          responseTokens: target.length,
        });
      }
    }
    const data = await loadExperimentData(tok, config, padIdOf(tok), this.host());
    return {
      rows: examples.length,
      train: data.train.length,
      val: data.val.length,
      truncated: data.truncated,
      cutoffLen: config.cutoff_len,
      lengths,
      examples: shown,
    };
  }
}
