/**
 * do_predict for a prepared experiment: generate answers for each prediction
 * set (batched greedy decoding, label-word stopping for classification),
 * score them with the dataset's metric family (METRICS.md), and compute PSCP
 * from the measured training peak memory, the analytic FLOPs of the method on
 * the 1×512 probe, and the trainable parameter count.
 *
 * Files (PEFT-Factory / LLaMA-Factory names): generated_predictions.jsonl
 * ({prompt, predict, label} per line) and predict_results.json (metrics with
 * the HF `predict_` prefix, plus PSCP, its inputs, latency and throughput).
 * With several eval datasets each gets its own predict_<key>/ folder and the
 * top-level predict_results.json holds every set's results under its key.
 *
 * `pscp` is PSCP with the TOTAL forward FLOPs (what PEFT-Factory's framework
 * computes); `pscp_extra_flops` uses the FLOPs the method adds over the base
 * model (the PEFT-Bench paper's reading). Both are written.
 */
import type { ExperimentConfig } from '../config/schema';
import type { PredictionSet } from '../data/node';
import { entryLabelWords } from '../data/entry';
import { methodNameFor } from '../methods/registry';
import type { LlamaModel } from '../model/llama';
import type { Tokenizer } from '../model/tokenizer';
import { forwardFlops, PSCP_PROBE } from './flops';
import { headlineMetric, metricsFor } from './metrics';
import { computePscp, pscpConstantsFrom } from './pscp';
import { predict, predictionsJsonl } from './predict';

export interface TrainingCosts {
  trainableParams: number;
  /** Peak GPU bytes measured during training (the pool's peak); the prediction peak when there was no training. */
  peakBytes: number;
  trainTokensPerSecond: number | null;
}

export interface PredictionOutput {
  /** Relative path → file content. */
  files: Record<string, string>;
  /** predict_results.json of the run (one set: flat; several: by key). */
  results: Record<string, unknown>;
}

export async function runPredictions(
  model: LlamaModel,
  tokenizer: Tokenizer,
  config: ExperimentConfig,
  sets: readonly Pick<PredictionSet, 'entry' | 'examples'>[],
  costs: TrainingCosts,
  opts: { log?: (s: string) => void; signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<PredictionOutput> {
  const files: Record<string, string> = {};
  const byKey: Record<string, Record<string, unknown>> = {};
  const flops = forwardFlops(model.config, { ...PSCP_PROBE, method: methodNameFor(config), methodConfig: config });
  const constants = pscpConstantsFrom(config);
  const cap = config.max_predict_samples ? Number(config.max_predict_samples) : Infinity;
  for (const full of sets) {
    const set = { ...full, examples: full.examples.slice(0, cap) };
    const entry = set.entry;
    const labelWords = entryLabelWords(entry) ?? [];
    const sampling = config.do_sample ? { temperature: Number(config.temperature ?? 1), topK: Number(config.top_k ?? 0), topP: Number(config.top_p ?? 1), seed: Number(config.seed) } : {};
    const r = await predict(model, tokenizer, set.examples.map((x) => ({
      prompt: tokenizer.decode(x.inputIds, { skipSpecialTokens: false }),
      promptIds: x.inputIds,
      label: x.rendered.label ?? x.rendered.response,
      taskId: x.taskId,
    })), {
      batchSize: Number(config.per_device_eval_batch_size ?? 8),
      maxNewTokens: Number(config.max_new_tokens),
      labelWords: entry.task === 'classification' ? labelWords : undefined,
      signal: opts.signal,
      onProgress: opts.onProgress,
      ...sampling,
    });
    const labels = set.examples.map((x) => (entry.metric === 'exact_match' && x.rendered.answers?.length ? x.rendered.answers : (x.rendered.label ?? x.rendered.response)));
    const metrics = metricsFor(entry.metric, r.rows.map((x) => x.predict), labels, labelWords);
    const head = headlineMetric(entry.metric, metrics);
    const pscp = computePscp({
      performance: head.value, performanceMetric: head.key, trainableParams: costs.trainableParams,
      flopsTotal: flops.total, flopsExtra: flops.extra, peakMemoryBytes: costs.peakBytes,
      latencyMsPerToken: r.msPerToken, trainTokensPerSecond: costs.trainTokensPerSecond,
    }, constants);
    const results: Record<string, unknown> = {
      ...Object.fromEntries(Object.entries(metrics).map(([k, v]) => [`predict_${k}`, v])),
      headline_metric: head.key,
      performance: head.value,
      pscp: pscp.pscp_total_flops,
      pscp_extra_flops: pscp.pscp_extra_flops,
      trainable_params: costs.trainableParams,
      tflops_total: pscp.tflops_total,
      tflops_extra: pscp.tflops_extra,
      peak_memory_gb: pscp.peak_memory_gb,
      latency_ms_per_token: r.msPerToken,
      train_tokens_per_s: costs.trainTokensPerSecond,
      predict_runtime: r.seconds,
      predict_samples: r.rows.length,
      predict_samples_per_second: r.seconds > 0 ? r.rows.length / r.seconds : 0,
      pscp_constants: pscp.constants,
      dataset: entry.key,
    };
    opts.log?.(`predict ${entry.key}: ${head.key} ${head.value.toFixed(4)}, PSCP ${pscp.pscp_total_flops.toFixed(4)} (${r.rows.length} examples, ${r.msPerToken.toFixed(2)} ms/token)`);
    byKey[entry.key] = results;
    const prefix = sets.length > 1 ? `predict_${entry.key}/` : '';
    files[`${prefix}generated_predictions.jsonl`] = predictionsJsonl(r.rows);
    if (sets.length > 1) files[`${prefix}predict_results.json`] = JSON.stringify(results, null, 2) + '\n';
  }
  const results = sets.length === 1 ? byKey[sets[0].entry.key] : byKey;
  files['predict_results.json'] = JSON.stringify(results, null, 2) + '\n';
  return { files, results };
}
