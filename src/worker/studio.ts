/**
 * The engine side of StudioApi. Host-agnostic: the GPU object, the Hub file
 * cache and the run store are injected (`navigator.gpu` and IndexedDB in the
 * worker), so nothing here touches the DOM or Node.
 *
 * One device per worker, acquired on first use (./device.ts). Two models may
 * be resident: the base model of the Model screen (./model.ts: previews,
 * parameter counts, base generation) and the current run's model with its
 * method attached (./session.ts: training, evaluation, adapter generation).
 * Calls that use the GPU run one after another; pause, stop and cancel act
 * at once. Each screen's work lives in its own file: ./user-data.ts (Data),
 * ./runs.ts (Train, Runs), ./evaluation.ts (Evaluate), ./generation.ts
 * (Playground), ./export.ts (Export), ./storage.ts (Storage).
 */
import { allOptions } from '../config/schema';
import type { FileCache, KeyValueStore } from '../hub/index';
import { IdbCache } from '../hub/index';
import { methodInfos } from '../methods/registry';
import { RunIndex } from '../run/idb-store';
import type {
  Catalogue,
  ColumnMapping,
  DataFile,
  DataFileInfo,
  DataPreview,
  EvalOptions,
  EvalProgress,
  EvalResult,
  ExportFile,
  GenerateOptions,
  GenerateResult,
  GpuInfo,
  LoadModelOptions,
  LoadProgress,
  LogPoint,
  ModelSummary,
  RunInfo,
  StorageInfo,
  StudioApi,
  TrainCallbacks,
  TrainableCount,
} from './api';
import { datasetCatalogue } from './data';
import { DeviceSlot } from './device';
import { Evaluation } from './evaluation';
import { Export } from './export';
import { Generation } from './generation';
import { onnxExportZip } from './onnx-export';
import { BaseModel } from './model';
import { Runs } from './runs';
import { Sessions } from './session';
import { clearStorage, storageInfo } from './storage';
import { UserData } from './user-data';

export class Studio implements StudioApi {
  private readonly device: DeviceSlot;
  private readonly base: BaseModel;
  private readonly data: UserData;
  private readonly sessions: Sessions;
  private readonly runs: Runs;
  private readonly evaluation: Evaluation;
  private readonly exporter: Export;
  private readonly generation = new Generation();

  constructor(
    gpu: GPU | undefined,
    /** Browser file cache for Hub downloads; injected so another host can pass its own. */
    private readonly makeCache: () => FileCache | undefined = () => new IdbCache(),
    runStore?: KeyValueStore,
  ) {
    const index = new RunIndex(runStore);
    this.device = new DeviceSlot(gpu);
    this.base = new BaseModel(this.device, makeCache);
    this.data = new UserData(makeCache);
    this.sessions = new Sessions(this.device, this.base, this.data, index);
    this.runs = new Runs(this.device, this.base, this.data, this.sessions, index);
    this.evaluation = new Evaluation(this.device, this.sessions, this.data, index);
    this.exporter = new Export(this.device, this.base, this.sessions, index);
  }

  gpuInfo(): Promise<GpuInfo> {
    return this.device.info();
  }

  // Model and Playground

  loadModel(opts: LoadModelOptions, onProgress?: (p: LoadProgress) => void): Promise<ModelSummary> {
    return this.base.load(opts, onProgress);
  }

  loadModelFolder(
    folder: FileSystemDirectoryHandle,
    onProgress?: (p: LoadProgress) => void,
    opts?: Pick<LoadModelOptions, 'baseDtype' | 'torchDtype'>,
  ): Promise<ModelSummary> {
    return this.base.loadFolder(folder, onProgress, opts);
  }

  cacheStatus(endpoint: string, repo: string, revision: string): Promise<{ files: number; bytes: number }> {
    return this.base.cacheStatus(endpoint, repo, revision);
  }

  generate(opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult> {
    return this.generateWith(null, opts, onToken);
  }

  generateWith(runId: string | null, opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult> {
    return this.device.exclusive(async () => {
      const { model, tokenizer } = runId === null ? this.base.require('generating') : (await this.sessions.open(runId)).prepared;
      return this.generation.run(model, tokenizer, opts, onToken);
    });
  }

  cancel(): void {
    this.generation.cancel();
  }

  // Forms

  async catalogue(): Promise<Catalogue> {
    return { methods: methodInfos(), options: allOptions().map((o) => ({ ...o })), datasets: datasetCatalogue() };
  }

  countTrainable(raw: Record<string, unknown>): Promise<TrainableCount> {
    return this.base.countTrainable(raw);
  }

  // Data

  putDataFile(file: DataFile): Promise<{ name: string; bytes: number }> {
    return this.data.put(file);
  }

  inspectDataFile(name: string): Promise<DataFileInfo> {
    return this.data.inspect(name);
  }

  mapDataFile(name: string, mapping: ColumnMapping): Promise<string> {
    return this.data.map(name, mapping);
  }

  previewData(raw: Record<string, unknown>, count: number): Promise<DataPreview> {
    return this.data.preview(raw, count, (c) => this.base.tokenizerFor(c));
  }

  // Runs

  startRun(raw: Record<string, unknown>, cb: TrainCallbacks): Promise<RunInfo> {
    return this.runs.start(raw, cb);
  }

  resumeRun(id: string, cb: TrainCallbacks): Promise<RunInfo> {
    return this.runs.resume(id, cb);
  }

  pauseRun(): void {
    this.runs.pause();
  }

  simulateDeviceLoss(): Promise<void> {
    return this.device.simulateLoss();
  }

  stopRun(): void {
    this.runs.stop();
  }

  listRuns(): Promise<RunInfo[]> {
    return this.runs.list();
  }

  runLog(id: string): Promise<LogPoint[]> {
    return this.runs.log(id);
  }

  deleteRun(id: string): Promise<void> {
    return this.runs.delete(id);
  }

  // Evaluate

  evaluateRun(id: string, opts: EvalOptions, onProgress?: (p: EvalProgress) => void): Promise<EvalResult> {
    return this.evaluation.evaluate(id, opts, onProgress);
  }

  cancelEvaluation(): void {
    this.evaluation.cancel();
  }

  // Export

  exportFiles(id: string): Promise<ExportFile[]> {
    return this.exporter.files(id);
  }

  exportZip(id: string): Promise<Uint8Array> {
    return this.exporter.zip(id);
  }

  exportMerged(id: string): Promise<Uint8Array> {
    return this.exporter.merged(id);
  }

  exportOnnx(id: string): Promise<Uint8Array> {
    return onnxExportZip(this.device, this.base, this.sessions, id);
  }

  // Storage

  storageInfo(): Promise<StorageInfo> {
    return storageInfo(this.makeCache(), this.runs.index);
  }

  clearStorage(what: 'cache' | 'runs'): Promise<void> {
    return clearStorage(what, this.makeCache(), this.device, this.sessions, this.runs.index);
  }
}
