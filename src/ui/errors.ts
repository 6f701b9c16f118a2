/**
 * Turn an error from the worker into a heading and a sentence. Comlink keeps
 * an error's `name` and `message`; the names are the classes of src/errors.ts,
 * whose messages already say what went wrong and what to do.
 */
export interface Problem {
  name: string;
  title: string;
  message: string;
}

const TITLES: Record<string, string> = {
  WebGPUNotAvailableError: 'WebGPU is not available',
  AdapterLimitError: 'This GPU cannot hold the model',
  DeviceLostError: 'The GPU device was lost',
  GpuError: 'The GPU reported an error',
  ShaderCompileError: 'A GPU kernel did not compile',
  ModelFormatError: 'The model files cannot be read',
  HubError: 'The download failed',
  ConfigError: 'Check the settings',
  EngineBusyError: 'The engine is busy',
  PluginError: 'A method plug-in cannot be used',
  NotMergeableError: 'This method cannot be merged',
  NonFiniteOutputError: 'The model produced NaN or infinity',
  ConfigValidationError: 'Check the settings',
  PredictionError: 'Prediction failed',
  FileTooLargeError: 'The file is too large',
  StorageQuotaError: 'The browser storage is full',
  OutputDirError: 'The output folder cannot be used',
  NonFiniteLossError: 'Training diverged',
  CheckpointError: 'The checkpoint cannot be used',
  ShareLinkError: 'This link cannot be opened',
};

/** Error names that have their own heading (every named error class in src/; tests/unit/ui-errors.test.ts checks). */
export const TITLED_ERRORS: readonly string[] = Object.keys(TITLES);

export function describeError(err: unknown): Problem {
  const e = err instanceof Error ? err : new Error(String(err));
  const name = e.name || 'Error';
  return { name, title: TITLES[name] ?? 'Something went wrong', message: e.message || String(err) };
}
