/**
 * Evaluate screen in the worker: validation loss and do_predict (greedy
 * predictions, the dataset family's metrics, PSCP) for a run's adapter, with
 * the same files as `peft-studio train` with do_predict. Bounded by default
 * (src/eval/budget.ts), cancellable, with progress from the first batch, and
 * yielding the device between batches so the Playground stays usable.
 */
import { validateConfig } from '../config/schema';
import { entryLabelWords } from '../data/entry';
import { evalBudget } from '../eval/budget';
import { predictionVerdict } from '../eval/metrics';
import { runPredictions } from '../eval/run-predict';
import { createTrainer } from '../run/experiment';
import { predictionCosts, writePredictionFiles } from '../run/finish';
import type { RunIndex } from '../run/idb-store';
import type { EvalOptions, EvalProgress, EvalResult, EvalSettings, LogPoint, PredictionInfo } from './api';
import { loadPredictionData, type PredictionSet } from './data';
import type { DeviceSlot } from './device';
import type { Session, Sessions } from './session';
import type { UserData } from './user-data';

export class Evaluation {
  private running: AbortController | null = null;

  constructor(
    private readonly device: DeviceSlot,
    private readonly sessions: Sessions,
    private readonly data: UserData,
    private readonly runs: RunIndex,
  ) {}

  cancel(): void {
    this.running?.abort();
  }

  evaluate(id: string, opts: EvalOptions, onProgress?: (p: EvalProgress) => void): Promise<EvalResult> {
    return this.device.exclusive(() =>
      this.sessions.pinned(id, 'An evaluation', async (s) => {
        const abort = new AbortController();
        this.running = abort;
        try {
          return await this.run(s, id, opts, abort.signal, onProgress);
        } finally {
          if (this.running === abort) this.running = null;
        }
      }),
    );
  }

  private async run(s: Session, id: string, opts: EvalOptions, signal: AbortSignal, onProgress?: (p: EvalProgress) => void): Promise<EvalResult> {
    const { model, tokenizer } = s.prepared;
    const record = await this.runs.get(id);
    const overrides = { ...(opts.overrides ?? {}) };
    // Greedy predictions (METRICS.md); the form's evaluation settings over the run's config.
    const given = validateConfig({ ...s.config, ...overrides, do_sample: false }, `run ${record?.name ?? id}`);
    let settings: EvalSettings | null = null;
    // Cancelled: nothing is written or stored.
    const cancelled = (): EvalResult => ({ runId: id, metrics: {}, predictions: [], cancelled: true, settings });
    // Between batches, calls queued meanwhile (a Playground generation) get the device.
    const step = (phase: EvalProgress['phase']) => async (done: number, total: number) => {
      onProgress?.({ phase, done, total, ...(phase === 'predict' ? { settings: settings ?? undefined } : {}) });
      await this.device.yieldTurn();
    };
    const metrics: Record<string, number | string | null> = {};
    if (s.data.val.length) {
      const trainer = s.trainer ?? createTrainer(model.e, s.prepared, s.data, given, s.store);
      try {
        metrics.eval_loss = round(await trainer.evaluate(s.data.val, { onProgress: step('loss'), signal }));
      } finally {
        if (trainer !== s.trainer) trainer.dispose();
      }
      if (signal.aborted) return cancelled();
      metrics.perplexity = round(Math.exp(metrics.eval_loss));
    }
    const { sets } = await loadPredictionData(tokenizer, given, this.data.host());
    // Unset bounds take the dataset family's needs (src/eval/budget.ts), not the CLI's 1024 tokens for every example.
    const budget = evalBudget(
      sets.map((x) => x.entry),
      tokenizer,
    );
    const auto = { tokens: overrides.max_new_tokens == null, samples: overrides.max_predict_samples == null };
    const config = validateConfig(
      {
        ...given,
        max_new_tokens: auto.tokens ? budget.maxNewTokens : given.max_new_tokens,
        max_predict_samples: auto.samples ? budget.maxPredictSamples : given.max_predict_samples,
      },
      `run ${record?.name ?? id}`,
    );
    settings = {
      maxNewTokens: Number(config.max_new_tokens),
      maxPredictSamples: config.max_predict_samples == null ? null : Number(config.max_predict_samples),
      reason: auto.tokens || auto.samples ? budget.reason : null,
    };
    const bounded = settings;
    const log = (await s.store.readLog()).map((l) => JSON.parse(l) as LogPoint);
    const costs = predictionCosts(s.prepared.method, record?.summary, Math.max(0, ...log.map((l) => l.peak_gpu_bytes ?? 0)));
    // A paused run has no all_results.json yet: the mean of its logged speeds.
    const speeds = log.map((l) => l.tokens_per_s).filter((v): v is number => typeof v === 'number');
    costs.trainTokensPerSecond ??= speeds.length ? speeds.reduce((a, b) => a + b, 0) / speeds.length : null;
    const r = await runPredictions(model, tokenizer, config, sets, costs, { onProgress: step('predict'), signal });
    if (signal.aborted) return cancelled();
    await writePredictionFiles(s.store, r.files);
    const flat = (obj: Record<string, unknown>, prefix = '') => {
      for (const [k, v] of Object.entries(obj)) {
        if (typeof v === 'number' || typeof v === 'string' || v === null) metrics[prefix + k] = typeof v === 'number' ? round(v) : v;
        else if (v && typeof v === 'object' && sets.length > 1 && !prefix) flat(v as Record<string, unknown>, `${k}.`);
      }
    };
    flat(r.results);
    await this.runs.update(id, { metrics });
    return { runId: id, metrics, predictions: predictionInfos(sets, r.files), cancelled: false, settings: bounded };
  }
}

/** Each generated prediction with its verdict: correct, wrong, or invalid (not a label word). */
function predictionInfos(sets: readonly PredictionSet[], files: Record<string, string>): PredictionInfo[] {
  const predictions: PredictionInfo[] = [];
  for (const set of sets) {
    const file = files[sets.length > 1 ? `predict_${set.entry.key}/generated_predictions.jsonl` : 'generated_predictions.jsonl'] ?? '';
    const words = entryLabelWords(set.entry) ?? [];
    for (const line of file.split('\n').filter(Boolean)) {
      const row = JSON.parse(line) as { prompt: string; predict: string; label: string };
      predictions.push({ ...row, verdict: predictionVerdict(set.entry.metric, words, row.predict, row.label) });
    }
  }
  return predictions;
}

function round(x: number, digits = 6): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
