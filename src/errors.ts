/**
 * Named error classes. Each one names the input, the problem and, where there
 * is one, the fix, so the UI and the CLI can show it to a person unchanged.
 */
export class PeftStudioError extends Error {
  override name = 'PeftStudioError';
}

/** No WebGPU in this host (no navigator.gpu, no adapter). */
export class WebGPUNotAvailableError extends PeftStudioError {
  override name = 'WebGPUNotAvailableError';
}

/** The adapter lacks a limit or feature the model needs. */
export class AdapterLimitError extends PeftStudioError {
  override name = 'AdapterLimitError';
}

/** The GPU device was lost (driver reset, tab backgrounded, OOM...). */
export class DeviceLostError extends PeftStudioError {
  override name = 'DeviceLostError';
  constructor(
    message: string,
    readonly reason: string,
  ) {
    super(message);
  }
}

/** A GPU validation or out-of-memory error caught by an error scope. */
export class GpuError extends PeftStudioError {
  override name = 'GpuError';
}

/** A WGSL shader failed to compile; the message carries the compiler's line. */
export class ShaderCompileError extends PeftStudioError {
  override name = 'ShaderCompileError';
}

/** A model file (safetensors, config.json) is malformed or unsupported. */
export class ModelFormatError extends PeftStudioError {
  override name = 'ModelFormatError';
}

/** A Hub request failed (404, network, bad endpoint). */
export class HubError extends PeftStudioError {
  override name = 'HubError';
  constructor(
    message: string,
    readonly url: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** Bad user input: a CLI flag, a config key, an option value. */
export class ConfigError extends PeftStudioError {
  override name = 'ConfigError';
}

/** The engine is doing something that this request would disturb (an evaluation holds a run's model). */
export class EngineBusyError extends PeftStudioError {
  override name = 'EngineBusyError';
}

/** A method plug-in folder (peft/ or PEFT_DIR) is missing a file, exports the wrong thing, collides or does not compile. */
export class PluginError extends ConfigError {
  override name = 'PluginError';
}

/**
 * A merged export (safetensors or ONNX) was asked of a method whose adapter
 * cannot be folded into the base weights: it adds tokens, key/value rows or
 * modules the base graph does not have (prompt / prefix tuning, bottleneck
 * adapters, ...), so only the adapter folder carries it.
 */
export class NotMergeableError extends ConfigError {
  override name = 'NotMergeableError';
  constructor(
    readonly finetuningType: string,
    readonly format: 'safetensors' | 'onnx',
  ) {
    super(
      `finetuning_type ${finetuningType} cannot be merged into the base weights (it adds computation the base model does not have), ` +
        (format === 'onnx'
          ? 'so there is no plain LLaMA graph to export as ONNX for transformers.js. Use a method that merges (see the README method table), or share the adapter folder.'
          : 'so there is no merged model to write; use the adapter folder.'),
    );
  }
}

/** The model computed NaN or Infinity where a number was expected (logits of `peft-studio logits`, ...). */
export class NonFiniteOutputError extends PeftStudioError {
  override name = 'NonFiniteOutputError';
}
