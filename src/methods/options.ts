/**
 * Options for method folders: the specs several methods share (declared once
 * here; a method lists the ones it reads in its `options`), and the one place
 * a method turns the experiment config into its typed settings.
 *
 * A shared key means the same thing for every method that reads it; what
 * "unset" means may differ per method, so each of them says so in its own
 * description and code (target_modules unset: the method's own default
 * targets). Methods import these through `peft-studio/methods/options`, the
 * same path a plug-in uses.
 */
import { checkValue, type ConfigOf, type OptionSpec } from '../config/schema';
import { ConfigError } from '../errors';

/** The group of the shared options (forms show them with the method that lists them). */
export const SHARED_GROUP = 'peft';

/** Modules a method adapts, HF PEFT's `target_modules` (svft, ia3, bitfit, lntuning ...). */
export const targetModules = {
  key: 'target_modules',
  type: 'string-list',
  default: null,
  nullable: true,
  group: SHARED_GROUP,
  help: "Modules the method adapts (suffix match: q_proj matches every layer's q_proj; 'all' for every linear projection). Unset: the method's own default targets (see its description).",
} as const satisfies OptionSpec;

/** Virtual tokens of the soft-prompt methods (prompt, prefix, p-tuning, mtp): they require it. */
export const numVirtualTokens = {
  key: 'num_virtual_tokens',
  type: 'int',
  default: null,
  nullable: true,
  min: 1,
  max: 65536,
  group: SHARED_GROUP,
  help: 'Virtual tokens n_v of the soft prompt or of the per-layer prefix. Required by the soft-prompt methods (peftbench: 100 for prompt tuning and p-tuning, 32 for prefix tuning).',
} as const satisfies OptionSpec;

/** Hidden size of a prompt encoder (p-tuning MLP/LSTM, prefix-tuning projection). */
export const encoderHiddenSize = {
  key: 'encoder_hidden_size',
  type: 'int',
  default: null,
  nullable: true,
  min: 1,
  max: 65536,
  group: SHARED_GROUP,
  help: 'Hidden size H of the prompt encoder (p-tuning MLP/LSTM, prefix projection). Unset: the token dimension (hidden_size for p-tuning; n_kv·head_dim for prefix tuning).',
} as const satisfies OptionSpec;

/** Dropout on a method's added output while training (the Adapters library's BnConfig.dropout). */
export const dropoutOption = {
  key: 'dropout',
  type: 'float',
  default: 0,
  min: 0,
  max: 1,
  exclusiveMax: true,
  group: SHARED_GROUP,
  help: "Dropout on the method's added output during training (0: none).",
} as const satisfies OptionSpec;

export const sharedOptions = [targetModules, numVirtualTokens, encoderHiddenSize, dropoutOption] as const satisfies readonly OptionSpec[];

/**
 * A method's settings from a config: every key of `specs`, the config's
 * value or the spec's default (the only place a default lives), each checked
 * against its spec (type, range, choices), so an attach() called with a raw
 * config (tests, bench) gets the same values and errors as a validated one.
 * Typed by the specs: ConfigOf<typeof loraOptions> has lora_rank: number ...
 */
export function readOptions<L extends readonly OptionSpec[]>(specs: L, config: Record<string, unknown>, method: string): ConfigOf<L> {
  const out: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const spec of specs) {
    const given = config[spec.key];
    if (given === undefined && spec.default === undefined) {
      problems.push(`${spec.key}: ${method} needs it (${spec.help})`);
      continue;
    }
    const { value, problem } = checkValue(spec, given === undefined ? spec.default : given);
    if (problem) problems.push(problem);
    else out[spec.key] = value;
  }
  if (problems.length) throw new ConfigError(problems.length === 1 ? problems[0] : `${method}: ${problems.join(' ')}`);
  return out as ConfigOf<L>;
}

/** The value of a required-by-this-method option that the schema allows to be null (num_virtual_tokens). */
export function requireOption<T>(value: T | null, spec: OptionSpec, method: string): T {
  if (value === null) throw new ConfigError(`${spec.key}: ${method} needs it and it is unset. ${spec.help}`);
  return value;
}
