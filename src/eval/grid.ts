/**
 * Benchmark grids (the PEFT-Bench use case): methods × datasets × seeds from
 * one base config. A grid file is YAML:
 *
 *   base: { model_name_or_path: ..., max_steps: 40, ... }   # or a path to a config YAML
 *   output_dir: runs/table2
 *   seeds: [1, 2, 3]
 *   datasets: [sst2, cola, wsc, svamp]
 *   methods:
 *     lora: { finetuning_type: lora, lora_rank: 8, lora_target: [q_proj, v_proj] }
 *     ia3:  { finetuning_type: ia3, learning_rate: 0.01 }
 *   dataset_overrides:            # optional, per dataset
 *     svamp: { max_new_tokens: 24 }
 *
 * Each cell is base ⊕ method ⊕ dataset override ⊕ {dataset, eval_dataset,
 * seed, output_dir: <output_dir>/<method>/<dataset>/seed-<seed>, do_train,
 * do_predict}. Every cell is validated before anything runs. A cell is done
 * when its predict_results.json exists (it is written last), so a rerun skips
 * finished cells. results.csv has one row per cell; results.md the mean ± std
 * over seeds of each dataset's headline metric, one row per method, with
 * PSCP and trainable parameters.
 */
import { ConfigError } from '../errors';
import { validateConfig, type ExperimentConfig } from '../config/schema';

export interface GridSpec {
  base: Record<string, unknown>;
  outputDir: string;
  seeds: number[];
  datasets: string[];
  methods: Map<string, Record<string, unknown>>;
  datasetOverrides: Map<string, Record<string, unknown>>;
}

export interface GridCell {
  method: string;
  dataset: string;
  seed: number;
  dir: string;
  config: ExperimentConfig;
}

export interface CellResult {
  method: string;
  dataset: string;
  seed: number;
  /** predict_results.json of the cell. */
  results: Record<string, unknown>;
}

const GRID_KEYS = ['base', 'output_dir', 'seeds', 'datasets', 'methods', 'dataset_overrides'];

function mapping(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${what} must be a mapping of key: value.`);
  return v as Record<string, unknown>;
}

/** Checks a parsed grid file; `loadBase` reads `base` when it is a path. */
export function parseGrid(raw: Record<string, unknown>, source: string, loadBase: (path: string) => Record<string, unknown>): GridSpec {
  for (const k of Object.keys(raw)) {
    if (!GRID_KEYS.includes(k)) throw new ConfigError(`${source}: unknown grid key '${k}'. A grid has ${GRID_KEYS.join(', ')}.`);
  }
  const base = typeof raw.base === 'string' ? loadBase(raw.base) : mapping(raw.base ?? {}, `${source}: base`);
  const list = (k: string) => {
    const v = raw[k];
    if (!Array.isArray(v) || v.length === 0) throw new ConfigError(`${source}: '${k}' must be a non-empty list.`);
    return v;
  };
  const seeds = list('seeds').map((s) => {
    if (!Number.isInteger(s)) throw new ConfigError(`${source}: seed ${JSON.stringify(s)} is not an integer.`);
    return Number(s);
  });
  if (new Set(seeds).size !== seeds.length) throw new ConfigError(`${source}: seeds repeat (${seeds.join(', ')}).`);
  const datasets = list('datasets').map(String);
  const methodsRaw = mapping(raw.methods, `${source}: methods`);
  if (Object.keys(methodsRaw).length === 0) throw new ConfigError(`${source}: 'methods' names no method.`);
  const methods = new Map<string, Record<string, unknown>>();
  for (const [name, v] of Object.entries(methodsRaw)) {
    if (!/^[A-Za-z0-9_.-]+$/.test(name))
      throw new ConfigError(`${source}: method label '${name}' must be letters, digits, '_', '-' or '.' (it names a folder).`);
    methods.set(name, { finetuning_type: name, ...mapping(v ?? {}, `${source}: methods.${name}`) });
  }
  const overrides = new Map(
    Object.entries(mapping(raw.dataset_overrides ?? {}, `${source}: dataset_overrides`)).map(([k, v]) => [k, mapping(v, `${source}: dataset_overrides.${k}`)]),
  );
  for (const k of overrides.keys()) if (!datasets.includes(k)) throw new ConfigError(`${source}: dataset_overrides names '${k}', which is not in datasets.`);
  const outputDir = String(raw.output_dir ?? base.output_dir ?? '');
  if (!outputDir) throw new ConfigError(`${source}: set output_dir (where the cells and results go).`);
  return { base, outputDir, seeds, datasets, methods, datasetOverrides: overrides };
}

/** Every cell's validated config, in run order (method, dataset, seed). */
export function gridCells(spec: GridSpec, join: (...p: string[]) => string, evalKey: (dataset: string) => string | null = (d) => `${d}_eval`): GridCell[] {
  const cells: GridCell[] = [];
  for (const [method, m] of spec.methods) {
    for (const dataset of spec.datasets) {
      for (const seed of spec.seeds) {
        const dir = join(spec.outputDir, method, dataset, `seed-${seed}`);
        const ev = evalKey(dataset);
        // A dataset override may name other keys for the data (e.g. a row slice of one split).
        const raw = {
          ...spec.base,
          ...m,
          dataset,
          ...(ev ? { eval_dataset: ev } : {}),
          ...(spec.datasetOverrides.get(dataset) ?? {}),
          seed,
          output_dir: dir,
          do_train: true,
          do_predict: true,
          overwrite_output_dir: true,
        };
        cells.push({ method, dataset, seed, dir, config: validateConfig(raw, `grid cell ${method} / ${dataset} / seed ${seed}`) });
      }
    }
  }
  return cells;
}

/** The metric a dataset is ranked by, in [0, 1]: macro-F1 for classification, else the task's headline. */
export function headline(results: Record<string, unknown>): { name: string; value: number } | null {
  const named = typeof results.headline_metric === 'string' ? results.headline_metric : null;
  const order = [named, 'macro_f1', 'numeric_accuracy', 'pearson', 'rouge-l', 'accuracy'].filter(Boolean) as string[];
  for (const k of order) {
    const v = results[k] ?? results[`predict_${k}`];
    if (typeof v === 'number' && Number.isFinite(v)) return { name: k, value: k.startsWith('rouge') || k.startsWith('bleu') ? v / 100 : v };
  }
  return null;
}

function meanStd(xs: number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  // Sample standard deviation (n - 1), 0 for one seed.
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, std };
}

function csvField(v: unknown): string {
  const s = v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** results.csv: one row per finished cell, every scalar of its predict_results.json as a column. */
export function resultsCsv(cells: CellResult[]): string {
  const keys = [...new Set(cells.flatMap((c) => Object.keys(c.results).filter((k) => typeof c.results[k] !== 'object' || c.results[k] === null)))].sort();
  const head = ['method', 'dataset', 'seed', 'headline_name', 'headline', ...keys.filter((k) => k !== 'headline_metric')];
  const rows = cells.map((c) => {
    const h = headline(c.results);
    return [c.method, c.dataset, c.seed, h?.name ?? '', h?.value ?? '', ...keys.filter((k) => k !== 'headline_metric').map((k) => c.results[k])]
      .map(csvField)
      .join(',');
  });
  return [head.join(','), ...rows].join('\n') + '\n';
}

const pct = (x: number) => (100 * x).toFixed(1);

/** results.md: mean ± std over seeds (×100) per method × dataset, then mean PSCP and trainable parameters. */
export function resultsMarkdown(cells: CellResult[], spec: Pick<GridSpec, 'datasets' | 'methods' | 'seeds'>): string {
  const lines = [
    `| method | trainable params | ${spec.datasets.join(' | ')} | mean | PSCP |`,
    `|---|---:|${spec.datasets.map(() => '---:').join('|')}|---:|---:|`,
  ];
  for (const method of spec.methods.keys()) {
    const mine = cells.filter((c) => c.method === method);
    const params = mine.map((c) => c.results.trainable_params).find((v) => typeof v === 'number') as number | undefined;
    const perDataset = spec.datasets.map((d) => {
      const xs = mine
        .filter((c) => c.dataset === d)
        .map((c) => headline(c.results)?.value)
        .filter((v): v is number => v !== undefined);
      if (!xs.length) return { text: '–', mean: NaN };
      const { mean, std } = meanStd(xs);
      return { text: `${pct(mean)} ± ${pct(std)}${xs.length < spec.seeds.length ? ` (${xs.length}/${spec.seeds.length})` : ''}`, mean };
    });
    const done = perDataset.filter((x) => Number.isFinite(x.mean));
    const avg = done.length ? pct(done.reduce((a, x) => a + x.mean, 0) / done.length) : '–';
    const pscps = mine.map((c) => c.results.pscp).filter((v): v is number => typeof v === 'number');
    const pscp = pscps.length ? (pscps.reduce((a, b) => a + b, 0) / pscps.length).toFixed(4) : '–';
    lines.push(`| ${method} | ${params?.toLocaleString('en-US') ?? '–'} | ${perDataset.map((x) => x.text).join(' | ')} | ${avg} | ${pscp} |`);
  }
  return lines.join('\n') + '\n';
}
