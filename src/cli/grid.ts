/**
 * `peft-studio grid <grid.yaml>`: run a benchmark grid (src/eval/grid.ts) in
 * sequence in this process. Finished cells (predict_results.json present) are
 * skipped, so an interrupted grid resumes where it stopped. results.csv and
 * results.md are rewritten after every cell, so a partial grid already has
 * its table.
 */
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import type { Engine } from '../engine/engine';
import { ConfigError } from '../errors';
import { parseConfigText } from '../config/yaml';
import { gridCells, parseGrid, resultsCsv, resultsMarkdown, type CellResult } from '../eval/grid';
import { checkDataKeys } from '../data/node';
import { runConfig } from './train';
import { ensureWritableDir } from './paths';
import { readTextFile, TEXT_FILE_LIMITS } from '../hub/node';

export async function gridCommand(e: Engine, file: string, overrides: string[]): Promise<Record<string, unknown>> {
  if (!existsSync(file)) throw new ConfigError(`Grid file ${file} does not exist.`);
  const raw = parseConfigText(readTextFile(file, TEXT_FILE_LIMITS.config, 'grid'), [], file);
  const spec = parseGrid(raw, file, (p) => {
    const full = path.resolve(path.dirname(file), p);
    if (!existsSync(full)) throw new ConfigError(`${file}: base config ${p} does not exist (paths are relative to the grid file).`);
    return parseConfigText(readTextFile(full, TEXT_FILE_LIMITS.config, 'base config'), [], full);
  });
  // key=value overrides change the base config of every cell (methods and dataset overrides still win).
  Object.assign(spec.base, parseConfigText('', overrides, 'the command line'));
  const cells = gridCells(spec, path.join);
  // Every cell's dataset and eval_dataset keys (registry keys, Alpaca .jsonl files) resolve before the first cell runs.
  for (const cell of cells) checkDataKeys(cell.config);
  const log = (s: string) => process.stderr.write(s + '\n');
  const done: CellResult[] = [];
  const t0 = performance.now();
  let ran = 0;
  const writeTables = async () => {
    await ensureWritableDir(spec.outputDir, 'output_dir');
    await fs.writeFile(path.join(spec.outputDir, 'results.csv'), resultsCsv(done));
    await fs.writeFile(path.join(spec.outputDir, 'results.md'), resultsMarkdown(done, spec));
  };
  for (const [i, cell] of cells.entries()) {
    const tag = `[${i + 1}/${cells.length}] ${cell.method} / ${cell.dataset} / seed ${cell.seed}`;
    const resultsFile = path.join(cell.dir, 'predict_results.json');
    if (!existsSync(resultsFile)) {
      log(`${tag}: running`);
      const c0 = performance.now();
      await runConfig(e, cell.config, (s) => log(`  ${s}`));
      ran++;
      log(`${tag}: done in ${((performance.now() - c0) / 1000).toFixed(1)} s`);
    } else {
      log(`${tag}: finished earlier, skipped`);
    }
    const results = JSON.parse(await fs.readFile(resultsFile, 'utf8')) as Record<string, unknown>;
    const train = existsSync(path.join(cell.dir, 'all_results.json')) ? JSON.parse(await fs.readFile(path.join(cell.dir, 'all_results.json'), 'utf8')) : {};
    done.push({
      method: cell.method,
      dataset: cell.dataset,
      seed: cell.seed,
      results: { ...results, train_runtime: train.train_runtime, train_loss: train.train_loss },
    });
    await writeTables();
  }
  const wall = (performance.now() - t0) / 1000;
  log(`grid: ${cells.length} cells (${ran} run now) in ${wall.toFixed(1)} s; tables in ${spec.outputDir}/results.md and results.csv`);
  return { cells: cells.length, ran, wall_seconds: wall, output_dir: spec.outputDir };
}
