/**
 * Evaluate screen in the worker: validation loss and do_predict (greedy
 * predictions, the dataset family's metrics, PSCP) for a run's adapter, with
 * the same files as `peft-studio train` with do_predict.
 */
import { validateConfig } from '../config/schema';
import { entryLabelWords } from '../data/entry';
import { normalizeAnswer } from '../eval/predict';
import { runPredictions } from '../eval/run-predict';
import { createTrainer } from '../run/experiment';
import { predictionCosts, writePredictionFiles } from '../run/finish';
import type { RunIndex } from '../run/idb-store';
import type { EvalOptions, EvalResult, LogPoint, PredictionInfo } from './api';
import { loadPredictionData, type PredictionSet } from './data';
import type { DeviceSlot } from './device';
import type { Sessions } from './session';
import type { UserData } from './user-data';

export class Evaluation {
  constructor(
    private readonly device: DeviceSlot,
    private readonly sessions: Sessions,
    private readonly data: UserData,
    private readonly runs: RunIndex,
  ) {}

  evaluate(id: string, opts: EvalOptions, onProgress?: (done: number, total: number) => void): Promise<EvalResult> {
    return this.device.exclusive(async () => {
      const s = await this.sessions.open(id);
      const { model, tokenizer } = s.prepared;
      const record = await this.runs.get(id);
      // Greedy predictions (METRICS.md); the form's evaluation settings over the run's config.
      const config = validateConfig({ ...s.config, ...(opts.overrides ?? {}), do_sample: false }, `run ${record?.name ?? id}`);
      const metrics: Record<string, number | string | null> = {};
      if (s.data.val.length) {
        const trainer = s.trainer ?? createTrainer(model.e, s.prepared, s.data, config, s.store);
        try {
          metrics.eval_loss = round(await trainer.evaluate());
        } finally {
          if (trainer !== s.trainer) trainer.dispose();
        }
        metrics.perplexity = round(Math.exp(metrics.eval_loss));
      }
      const { sets } = await loadPredictionData(tokenizer, config, this.data.host());
      const log = (await s.store.readLog()).map((l) => JSON.parse(l) as LogPoint);
      const costs = predictionCosts(s.prepared.method, record?.summary, Math.max(0, ...log.map((l) => l.peak_gpu_bytes ?? 0)));
      // A paused run has no all_results.json yet: the mean of its logged speeds.
      const speeds = log.map((l) => l.tokens_per_s).filter((v): v is number => typeof v === 'number');
      costs.trainTokensPerSecond ??= speeds.length ? speeds.reduce((a, b) => a + b, 0) / speeds.length : null;
      const r = await runPredictions(model, tokenizer, config, sets, costs, { onProgress });
      await writePredictionFiles(s.store, r.files);
      const flat = (obj: Record<string, unknown>, prefix = '') => {
        for (const [k, v] of Object.entries(obj)) {
          if (typeof v === 'number' || typeof v === 'string' || v === null) metrics[prefix + k] = typeof v === 'number' ? round(v) : v;
          else if (v && typeof v === 'object' && sets.length > 1 && !prefix) flat(v as Record<string, unknown>, `${k}.`);
        }
      };
      flat(r.results);
      await this.runs.update(id, { metrics });
      return { runId: id, metrics, predictions: predictionInfos(sets, r.files) };
    });
  }
}

/** Each generated prediction with its verdict: correct, wrong, or invalid (not a label word). */
function predictionInfos(sets: readonly PredictionSet[], files: Record<string, string>): PredictionInfo[] {
  const predictions: PredictionInfo[] = [];
  for (const set of sets) {
    const file = files[sets.length > 1 ? `predict_${set.entry.key}/generated_predictions.jsonl` : 'generated_predictions.jsonl'] ?? '';
    const words = (entryLabelWords(set.entry) ?? []).map((w) => normalizeAnswer(w));
    for (const line of file.split('\n').filter(Boolean)) {
      const row = JSON.parse(line) as { prompt: string; predict: string; label: string };
      const p = normalizeAnswer(row.predict);
      const verdict = words.length && !words.includes(p) ? 'invalid' : p === normalizeAnswer(row.label) ? 'correct' : 'wrong';
      predictions.push({ ...row, verdict });
    }
  }
  return predictions;
}

function round(x: number, digits = 6): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
