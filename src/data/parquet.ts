/**
 * Parquet dataset files (the Hub's `*.parquet`), read with hyparquet plus
 * hyparquet-compressors (snappy, gzip, zstd, brotli, lz4), in the browser and
 * in Node alike.
 *
 * Values come back as plain JSON-like values: int64 (a BigInt in hyparquet)
 * becomes a number when it is a safe integer, else its decimal string; lists
 * stay arrays; structs stay objects (a `Sequence` of a dict is a struct of
 * lists, as `datasets` writes it).
 *
 * The `datasets` library stores its Features as JSON under the schema metadata
 * key `huggingface` (`{"info": {"features": {...}}}`). ClassLabel columns hold
 * int ids; `decodeClassLabels` turns them into their names (id -1, "no label"
 * in test splits, becomes null).
 */
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { ConfigError } from '../errors';
import type { TableRow } from './tabular';

/** A `datasets` feature description (the subset we use). */
export type Feature =
  | { _type: 'ClassLabel'; names: string[] }
  | { _type: 'Value'; dtype: string }
  | { _type: 'Sequence' | 'List' | 'LargeList'; feature: Feature }
  | Feature[]
  | { [field: string]: Feature };

export interface ParquetTable {
  rows: TableRow[];
  /** Column features from the `huggingface` metadata; null when the file has none. */
  features: Record<string, Feature> | null;
  /** Rows in the whole file (rows.length is smaller when maxRows cut the read). */
  numRows: number;
}

function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return Array.from(v as ArrayLike<unknown>, plain);
  if (v !== null && typeof v === 'object' && !(v instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = plain(x);
    return out;
  }
  return v;
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? bytes.buffer
    : (bytes.slice().buffer as ArrayBuffer);
}

/** Reads all rows (or the first maxRows) of a parquet file. */
export async function readParquet(bytes: Uint8Array, source: string, opts: { maxRows?: number } = {}): Promise<ParquetTable> {
  const file = toArrayBuffer(bytes);
  let metadata;
  try {
    metadata = parquetMetadata(file);
  } catch (e) {
    throw new ConfigError(`${source}: not a readable parquet file (${(e as Error).message}). Check that the download is complete and the file is parquet.`);
  }
  const numRows = Number(metadata.num_rows);
  let features: Record<string, Feature> | null = null;
  const hf = metadata.key_value_metadata?.find((kv) => kv.key === 'huggingface');
  if (hf?.value) {
    try {
      const info = JSON.parse(hf.value) as { info?: { features?: Record<string, Feature> } };
      features = info.info?.features ?? null;
    } catch {
      features = null; // damaged metadata: read the rows without label names
    }
  }
  const rowEnd = opts.maxRows === undefined ? numRows : Math.min(numRows, opts.maxRows);
  let rows: Record<string, unknown>[];
  try {
    rows = await parquetReadObjects({ file, metadata, compressors, rowStart: 0, rowEnd });
  } catch (e) {
    throw new ConfigError(`${source}: could not decode the parquet data (${(e as Error).message}).`);
  }
  return { rows: rows.map((r) => plain(r) as TableRow), features, numRows };
}

function isClassLabel(f: Feature | undefined): f is { _type: 'ClassLabel'; names: string[] } {
  return !!f && !Array.isArray(f) && (f as { _type?: string })._type === 'ClassLabel' && Array.isArray((f as { names?: unknown }).names);
}

/** ClassLabel names of a column, or undefined. */
export function classLabelNames(features: Record<string, Feature> | null, column: string): string[] | undefined {
  const f = features?.[column];
  return isClassLabel(f) ? f.names : undefined;
}

function decodeValue(f: Feature | undefined, v: unknown, where: string): unknown {
  if (!f || v === null || v === undefined) return v;
  if (isClassLabel(f)) {
    if (typeof v !== 'number') return v;
    if (v === -1) return null;
    const name = f.names[v];
    if (name === undefined) throw new ConfigError(`${where}: label id ${v} is outside the ${f.names.length} ClassLabel names (${f.names.join(', ')}).`);
    return name;
  }
  if (Array.isArray(f)) return Array.isArray(v) ? v.map((x) => decodeValue(f[0], x, where)) : v;
  const t = (f as { _type?: string })._type;
  if (t === 'Sequence' || t === 'List' || t === 'LargeList') {
    const inner = (f as { feature: Feature }).feature;
    if (Array.isArray(v)) return v.map((x) => decodeValue(inner, x, where));
    // Sequence of a dict: a struct of lists.
    if (typeof v === 'object' && inner && !Array.isArray(inner) && !('_type' in inner)) return decodeValue(inner, v, where);
    return v;
  }
  if (t === undefined && typeof v === 'object' && !Array.isArray(v)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      const sub = (f as Record<string, Feature>)[k];
      // A struct of lists (Sequence of a dict) holds arrays of the sub-feature's values.
      out[k] =
        Array.isArray(x) && sub && !Array.isArray(sub) && (sub as { _type?: string })._type !== 'Sequence'
          ? x.map((y) => decodeValue(sub, y, where))
          : decodeValue(sub, x, where);
    }
    return out;
  }
  return v;
}

/** Rows with every ClassLabel id replaced by its name (null for -1). */
export function decodeClassLabels(rows: readonly TableRow[], features: Record<string, Feature> | null, source: string): TableRow[] {
  if (!features) return rows.slice();
  const cols = Object.keys(features);
  return rows.map((r, i) => {
    const out: TableRow = { ...r };
    for (const c of cols) if (c in out) out[c] = decodeValue(features[c], out[c], `${source}, row ${i}, column ${c}`);
    return out;
  });
}
