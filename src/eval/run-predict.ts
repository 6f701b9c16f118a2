/**
 * do_predict for a prepared experiment: generate answers for each prediction
 * set (batched greedy decoding, label-word stopping for classification),
 * score them with the dataset's metric family (METRICS.md), and compute PSCP
 * from the training peak memory, the analytic FLOPs of the method on the
 * 1×512 probe, and the trainable parameter count.
 *
 * Files (PEFT-Factory / LLaMA-Factory names): generated_predictions.jsonl
 * ({prompt, predict, label} per line, `label` the reference response as
 * PEFT-Factory writes it) and predict_results.json (metrics with the HF
 * `predict_` prefix, plus PSCP, its inputs, latency and throughput). With
 * several eval datasets each gets its own predict_<key>/ folder and the
 * top-level predict_results.json holds every set's results under its key.
 *
 * Each set's files go to `opts.write` as soon as they exist: the predictions
 * right after generation, the set's results right after scoring. A set whose
 * metric fails (a malformed gold answer, say) keeps its predictions and does
 * not stop the other sets; after the last set the failures are raised
 * together (PredictionError), and the top-level predict_results.json, which
 * marks a finished run for grids, is written only when every set scored.
 *
 * Generation sets (metric `generation`) also get `predict_token_accuracy`:
 * LLaMA-Factory's compute_accuracy (teacher-forced argmax against the
 * reference, src/eval/teacher-forced.ts), which it reports for its
 * evaluation pass without generation.
 *
 * `pscp` is PSCP with the TOTAL forward FLOPs (what PEFT-Factory's framework
 * computes); `pscp_extra_flops` uses the FLOPs the method adds over the base
 * model (the PEFT-Bench paper's reading). Both are written. The memory term
 * is the training peak; `peak_memory_source` says where it came from.
 */
import type { ExperimentConfig } from '../config/schema';
import type { PredictionSet } from '../data/node';
import { encodeRendered } from '../data/encode';
import { entryLabelWords } from '../data/entry';
import { PeftStudioError } from '../errors';
import { resolveMethod } from '../methods/registry';
import type { LlamaModel } from '../model/llama';
import type { Tokenizer } from '../model/tokenizer';
import { forwardFlops, PSCP_PROBE } from './flops';
import { headlineMetric, metricsFor } from './metrics';
import { computePscp, pscpConstantsFrom } from './pscp';
import { predict, predictionsJsonl } from './predict';
import { teacherForcedTokenAccuracy } from './teacher-forced';

export interface TrainingCosts {
  trainableParams: number;
  /** Peak GPU bytes measured during training (the pool's peak); the prediction peak when there was no training. */
  peakBytes: number;
  trainTokensPerSecond: number | null;
  /** Where peakBytes comes from, written as peak_memory_source (e.g. "training (this run)"). */
  peakSource?: string;
}

export interface PredictionOutput {
  /** Relative path → file content. */
  files: Record<string, string>;
  /** predict_results.json of the run (one set: flat; several: by key). */
  results: Record<string, unknown>;
}

/** One or more prediction sets could not be scored; their predictions (and the other sets' files) were written. */
export class PredictionError extends PeftStudioError {
  override name = 'PredictionError';
  constructor(
    message: string,
    readonly output: PredictionOutput,
  ) {
    super(message);
  }
}

/** The folder (relative to output_dir) of a set's files: '' for a single set, predict_<key>/ for several. */
export function predictionFolder(key: string, setCount: number): string {
  return setCount > 1 ? `predict_${key}/` : '';
}

export interface RunPredictionsOptions {
  log?: (s: string) => void;
  signal?: AbortSignal;
  /** Examples done / total over every set, 0 first; awaited (a host may run other GPU work between batches). */
  onProgress?: (done: number, total: number) => void | Promise<void>;
  /** Persists one file as soon as it is ready (relative path, content). */
  write?: (name: string, data: string) => Promise<void>;
  /** Where output_dir is, for the log lines that name written files. */
  outputDir?: string;
}

export async function runPredictions(
  model: LlamaModel,
  tokenizer: Tokenizer,
  config: ExperimentConfig,
  sets: readonly Pick<PredictionSet, 'entry' | 'examples'>[],
  costs: TrainingCosts,
  opts: RunPredictionsOptions = {},
): Promise<PredictionOutput> {
  const files: Record<string, string> = {};
  const byKey: Record<string, Record<string, unknown>> = {};
  const failed: string[] = [];
  const put = async (name: string, data: string) => {
    files[name] = data;
    await opts.write?.(name, data);
  };
  const where = (name: string) => (opts.outputDir ? `${opts.outputDir.replace(/\/+$/, '')}/${name}` : name);
  const flops = forwardFlops(model.config, { ...PSCP_PROBE, method: resolveMethod(config), methodConfig: config });
  const constants = pscpConstantsFrom(config);
  const cap = config.max_predict_samples ? Number(config.max_predict_samples) : Infinity;
  const batchSize = Number(config.per_device_eval_batch_size ?? 8);
  const total = sets.reduce((a, s) => a + Math.min(cap, s.examples.length), 0);
  let before = 0;
  for (const full of sets) {
    const set = { ...full, examples: full.examples.slice(0, cap) };
    const entry = set.entry;
    const folder = predictionFolder(entry.key, sets.length);
    const labelWords = entryLabelWords(entry) ?? [];
    const sampling = config.do_sample
      ? { temperature: Number(config.temperature ?? 1), topK: Number(config.top_k ?? 0), topP: Number(config.top_p ?? 1), seed: Number(config.seed) }
      : {};
    const r = await predict(
      model,
      tokenizer,
      set.examples.map((x) => ({
        prompt: tokenizer.decode(x.inputIds, { skipSpecialTokens: false }),
        promptIds: x.inputIds,
        // PEFT-Factory's label: the reference response, whatever the metric reads from it.
        label: x.rendered.response,
        ...(x.rendered.answers && x.rendered.answers.length > 1 ? { answers: x.rendered.answers } : {}),
        taskId: x.taskId,
      })),
      {
        batchSize,
        maxNewTokens: Number(config.max_new_tokens),
        labelWords: entry.task === 'classification' ? labelWords : undefined,
        signal: opts.signal,
        onProgress: opts.onProgress && ((done) => opts.onProgress!(before + done, total)),
        ...sampling,
      },
    );
    before += set.examples.length;
    // The predictions are kept whatever happens to the scoring below.
    await put(`${folder}generated_predictions.jsonl`, predictionsJsonl(r.rows));
    let results: Record<string, unknown>;
    try {
      const labels = set.examples.map((x) => (entry.metric === 'exact_match' && x.rendered.answers?.length ? x.rendered.answers : x.rendered.response));
      const metrics = metricsFor(
        entry.metric,
        r.rows.map((x) => x.predict),
        labels,
        labelWords,
      );
      if (entry.metric === 'generation') {
        const encoded = set.examples.flatMap((x) => {
          const { example } = encodeRendered(tokenizer, entry, x.rendered, {
            cutoffLen: Number(config.cutoff_len),
            template: config.template,
            addBos: config.template_bos !== false,
          });
          return example ? [{ ...example, taskId: x.taskId }] : [];
        });
        const acc = await teacherForcedTokenAccuracy(model, encoded, {
          batchSize,
          padId: tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0,
          signal: opts.signal,
        });
        metrics.token_accuracy = acc.token_accuracy;
      }
      const head = headlineMetric(entry.metric, metrics);
      const pscp = computePscp(
        {
          performance: head.value,
          performanceMetric: head.key,
          trainableParams: costs.trainableParams,
          flopsTotal: flops.total,
          flopsExtra: flops.extra,
          peakMemoryBytes: costs.peakBytes,
          latencyMsPerToken: r.msPerToken,
          trainTokensPerSecond: costs.trainTokensPerSecond,
        },
        constants,
      );
      results = {
        ...Object.fromEntries(Object.entries(metrics).map(([k, v]) => [`predict_${k}`, v])),
        headline_metric: head.key,
        performance: head.value,
        pscp: pscp.pscp_total_flops,
        pscp_extra_flops: pscp.pscp_extra_flops,
        trainable_params: costs.trainableParams,
        tflops_total: pscp.tflops_total,
        tflops_extra: pscp.tflops_extra,
        peak_memory_gb: pscp.peak_memory_gb,
        peak_memory_source: costs.peakSource ?? 'training (this run)',
        latency_ms_per_token: r.msPerToken,
        train_tokens_per_s: costs.trainTokensPerSecond,
        predict_runtime: r.seconds,
        predict_samples: r.rows.length,
        predict_samples_per_second: r.seconds > 0 ? r.rows.length / r.seconds : 0,
        pscp_constants: pscp.constants,
        dataset: entry.key,
      };
      opts.log?.(
        `predict ${entry.key}: ${head.key} ${head.value.toFixed(4)}, PSCP ${pscp.pscp_total_flops.toFixed(4)} (${r.rows.length} examples, ${r.msPerToken.toFixed(2)} ms/token)`,
      );
    } catch (err) {
      if (!(err instanceof PeftStudioError)) throw err;
      failed.push(`${entry.key}: ${err.message}`);
      opts.log?.(`predict ${entry.key}: the predictions are in ${where(`${folder}generated_predictions.jsonl`)}, but scoring failed: ${err.message}`);
      continue;
    }
    byKey[entry.key] = results;
    if (folder) await put(`${folder}predict_results.json`, JSON.stringify(results, null, 2) + '\n');
    opts.log?.(
      `predict ${entry.key}: written to ${where(folder || 'generated_predictions.jsonl')}${folder ? ' (generated_predictions.jsonl, predict_results.json)' : ''}`,
    );
  }
  const results = sets.length === 1 ? (byKey[sets[0].entry.key] ?? {}) : byKey;
  if (failed.length) {
    const kept = Object.keys(byKey);
    throw new PredictionError(
      `Prediction finished, but ${failed.length === 1 ? 'one set' : `${failed.length} sets`} could not be scored:\n${failed.map((f) => `  - ${f}`).join('\n')}\n` +
        `Every set's generated_predictions.jsonl was written${kept.length ? `, and the results of ${kept.join(', ')} are in their predict_<key>/ folders` : ''}. predict_results.json was not written (the run is not finished).`,
      { files, results },
    );
  }
  await put('predict_results.json', JSON.stringify(results, null, 2) + '\n');
  return { files, results };
}
