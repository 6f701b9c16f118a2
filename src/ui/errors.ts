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
};

export function describeError(err: unknown): Problem {
  const e = err instanceof Error ? err : new Error(String(err));
  const name = e.name || 'Error';
  return { name, title: TITLES[name] ?? 'Something went wrong', message: e.message || String(err) };
}
