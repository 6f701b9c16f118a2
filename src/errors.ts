/**
 * Named error classes. Each one names the input, the problem and, where there
 * is one, the fix, so the UI and the CLI can show it to a person unchanged.
 */
export class PeftStudioError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** No WebGPU in this host (no navigator.gpu, no adapter). */
export class WebGPUNotAvailableError extends PeftStudioError {}

/** The adapter lacks a limit or feature the model needs. */
export class AdapterLimitError extends PeftStudioError {}

/** The GPU device was lost (driver reset, tab backgrounded, OOM...). */
export class DeviceLostError extends PeftStudioError {
  constructor(message: string, readonly reason: string) {
    super(message);
  }
}

/** A GPU validation or out-of-memory error caught by an error scope. */
export class GpuError extends PeftStudioError {}

/** A WGSL shader failed to compile; the message carries the compiler's line. */
export class ShaderCompileError extends PeftStudioError {}

/** A model file (safetensors, config.json) is malformed or unsupported. */
export class ModelFormatError extends PeftStudioError {}

/** A Hub request failed (404, network, bad endpoint). */
export class HubError extends PeftStudioError {
  constructor(message: string, readonly url: string, readonly status?: number) {
    super(message);
  }
}

/** Bad user input: a CLI flag, a config key, an option value. */
export class ConfigError extends PeftStudioError {}
