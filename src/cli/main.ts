/**
 * peft-studio: the headless CLI (Node + Dawn).
 *
 *   peft-studio logits   --model <dir|repo> --text "<text>" [--out file.json]
 *   peft-studio generate --model <dir|repo> --prompt "<text>" --max-new-tokens N [--temperature T]
 *   peft-studio bench    [--out file.json]
 *
 * Every command takes --endpoint URL (a Hub mirror) and --revision.
 */
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ensureWritableDir, fsErrorMessage } from './paths';

/** --out files: the folder is created when missing (bench-results/ on a fresh clone). */
async function writeOut(file: string, data: string): Promise<void> {
  await ensureWritableDir(path.dirname(path.resolve(file)), '--out');
  writeFileSync(file, data);
}
import { acquireDevice } from '../gpu/device';
import { MatmulTuner, autotuneEnabled } from '../engine/matmul-tune';
import { nodeGpu, nodeTuneStore } from '../gpu/node';
import { Engine } from '../engine/engine';
import { loadModel } from '../model/load';
import { generate } from '../model/generate';
import { lastPositionLogits } from '../model/logits';
import { sourceFor, trustEndpoint } from '../hub/node';
import { ConfigError, NonFiniteOutputError, PeftStudioError } from '../errors';
import { runBench } from './bench';
import { attachAdapterFolder, exportCommand, trainCommand } from './train';
import { gridCommand } from './grid';
import { checkPluginKernels, loadPlugins, type PluginScan } from '../methods/plugins';
import { methodsCommand } from './methods';

const USAGE = `peft-studio <command> [options]

Commands:
  train     <config.yaml> [key=value ...]
            Fine-tune with a LLaMA-Factory / PEFT-Factory style YAML; keys can be overridden.
  grid      <grid.yaml> [key=value ...]
            Methods × datasets × seeds from one base config, in sequence; finished cells are skipped.
            Writes results.csv and results.md (mean ± std over seeds, PSCP, trainable parameters).
  export    <config.yaml> [key=value ...]
            Merge the adapter in output_dir (or adapter_name_or_path) into the base model;
            export_format=onnx writes the folder transformers.js loads (onnx/model.onnx, opset 17).
  logits    --model <dir|repo> --text "<text>" [--adapter <dir>] [--out file.json]
            Next-token logits at the last position (BOS added as the tokenizer does).
  generate  --model <dir|repo> --prompt "<text>" [--adapter <dir>] [--max-new-tokens 64] [--temperature 0]
            [--top-k K] [--top-p P] [--seed S] [--ids]
            Greedy when the temperature is 0. --ids prints the generated token ids as JSON too.
  bench     [--out bench.json] [--steps N] [--only stories260K,smollm2-135m,qwen2.5-0.5b,llama3.2-1b] [--memory-only-step N] [--step N]
            Forward, forward+backward and LoRA training-step throughput, peak GPU memory.
  methods   Installed methods: built-in and plug-ins (from PEFT_DIR / --peft-dir), with their source folders.
  methods --counts [config.yaml] [key=value ...] [--model <dir|repo>] [--json]
            Trainable parameters of every method for that config and model (as the studio counts them).

Common options:
  --peft-dir DIRS  Folders of method plug-ins, ':'-separated (overrides PEFT_DIR). Plug-ins are code:
                   only the folders named here or in PEFT_DIR load; the CLI prints which it loaded.
  --endpoint URL   Hub endpoint or mirror (default https://huggingface.co)
  --revision REV   Hub revision (default main)

Environment:
  PEFT_DIR         Folders of method plug-ins, ':'-separated (default: none), scanned at start.
  PEFT_STUDIO_MAX_BINDING_BYTES
                   Treat tensors above this many bytes as beyond one GPU binding (default: the device's
                   limit), so a small model runs the row-block paths that large vocabularies need.
  HF_TOKEN         Hub token: sent only to https://huggingface.co or to an endpoint given by --endpoint,
                   or HF_ENDPOINT (not to one a config file names); never over plain http except to loopback.
`;

function progressBar(): (p: { file: string; loaded: number; total: number }) => void {
  let lastFile = '';
  return (p) => {
    if (!process.stderr.isTTY) {
      if (p.file !== lastFile) process.stderr.write(`loading ${p.file}\n`);
      lastFile = p.file;
      return;
    }
    const pct = p.total ? Math.floor((100 * p.loaded) / p.total) : 0;
    const bar = '#'.repeat(Math.floor(pct / 5)).padEnd(20, '.');
    process.stderr.write(`\r${p.file} [${bar}] ${pct}% ${(p.loaded / 1e6).toFixed(1)} MB`);
    if (p.loaded === p.total) process.stderr.write('\n');
  };
}

async function engineForCli(): Promise<Engine> {
  const ctx = await acquireDevice(nodeGpu(), {
    onLost: (err) => {
      process.stderr.write(`${err.message}\n`);
      process.exit(3);
    },
  });
  const e = new Engine(ctx);
  // A lower binding limit than the device's runs the row-block split paths (embedding, head, logits chunks) on a small model.
  const limit = process.env.PEFT_STUDIO_MAX_BINDING_BYTES;
  if (limit !== undefined && limit !== '') {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1024 || n % 4 !== 0) {
      throw new ConfigError(
        `PEFT_STUDIO_MAX_BINDING_BYTES is '${limit}'; use a whole number of bytes, a multiple of 4, at least 1024 (e.g. 24576), or unset it.`,
      );
    }
    e.maxBindingBytes = Math.min(e.maxBindingBytes, n);
  }
  // Matmul kernels per shape class, timed once per adapter (src/engine/matmul-tune.ts): on for GPUs, off on SwiftShader unless asked.
  const tune = process.env.PEFT_STUDIO_AUTOTUNE ?? 'auto';
  if (tune !== 'auto' && tune !== 'on' && tune !== 'off') throw new ConfigError(`PEFT_STUDIO_AUTOTUNE is '${tune}'; use auto (GPUs only), on or off.`);
  if (autotuneEnabled(ctx.adapterInfo, tune)) e.matmulTuner = await MatmulTuner.open(e, nodeTuneStore());
  // Plug-in kernels compile on this device before any command uses them.
  await checkPluginKernels(e);
  return e;
}

/** `--peft-dir DIRS` / `--peft-dir=DIRS` anywhere in argv (every command takes it): the value and argv without it. */
export function takePeftDir(argv: string[]): { peftDir?: string; argv: string[] } {
  const out: string[] = [];
  let peftDir: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--peft-dir') {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('--')) throw new ConfigError('--peft-dir needs a value: --peft-dir /path/to/plugins');
      peftDir = argv[++i];
    } else if (a.startsWith('--peft-dir=')) peftDir = a.slice('--peft-dir='.length);
    else out.push(a);
  }
  return { peftDir, argv: out };
}

export async function main(argvIn: string[]): Promise<number> {
  const { peftDir, argv } = takePeftDir(argvIn);
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 1;
  }
  // Method plug-ins install before any config is validated; only the folders named by --peft-dir or PEFT_DIR.
  const plugins: PluginScan = await loadPlugins(peftDir !== undefined ? { peftDir } : {});
  if (plugins.dirs.length) {
    const names = plugins.installed.map((m) => m.name);
    process.stderr.write(
      `peft-studio: plug-in folders loaded: ${plugins.dirs.join(path.delimiter)} (${names.length ? `methods: ${names.join(', ')}` : 'no plug-ins in them'})\n`,
    );
  }
  if (cmd === 'train' || cmd === 'export' || cmd === 'grid') {
    const [file, ...overrides] = rest;
    if (!file)
      throw new ConfigError(
        `${cmd}: give a ${cmd === 'grid' ? 'grid' : 'config'} file: peft-studio ${cmd} <${cmd === 'grid' ? 'grid' : 'config'}.yaml> [key=value ...]`,
      );
    const e = await engineForCli();
    if (cmd === 'train') process.stdout.write(JSON.stringify(await trainCommand(e, file, overrides), null, 2) + '\n');
    else if (cmd === 'grid') process.stdout.write(JSON.stringify(await gridCommand(e, file, overrides), null, 2) + '\n');
    else await exportCommand(e, file, overrides);
    e.ctx.destroy();
    return 0;
  }
  if (cmd === 'methods') {
    process.stdout.write(await methodsCommand(rest, plugins, engineForCli));
    return 0;
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      model: { type: 'string' },
      text: { type: 'string' },
      prompt: { type: 'string' },
      out: { type: 'string' },
      endpoint: { type: 'string' },
      revision: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      steps: { type: 'string' },
      ids: { type: 'boolean' },
      only: { type: 'string' },
      'memory-only-step': { type: 'string' },
      step: { type: 'string' },
      adapter: { type: 'string' },
    },
    strict: true,
  });
  const num = (key: keyof typeof values, def: number, min = -Infinity, max = Infinity): number => {
    const raw = values[key];
    if (raw === undefined) return def;
    const v = Number(raw);
    if (!Number.isFinite(v) || v < min || v > max) throw new ConfigError(`--${key} must be a number in [${min}, ${max}], got '${raw}'`);
    return v;
  };
  // An endpoint the user typed is trusted with HF_TOKEN (if https, or http to loopback); one from a config is not.
  if (values.endpoint) trustEndpoint(values.endpoint);
  const needModel = () => {
    if (!values.model) throw new ConfigError(`${cmd}: --model <dir|repo> is required`);
    return sourceFor(values.model, { endpoint: values.endpoint, revision: values.revision });
  };

  switch (cmd) {
    case 'logits': {
      if (values.text === undefined) throw new ConfigError('logits: --text "<text>" is required');
      const source = needModel();
      const e = await engineForCli();
      const { model, tokenizer } = await loadModel(e, source, { onProgress: progressBar() });
      if (values.adapter) await attachAdapterFolder(e, model, values.adapter, values.endpoint);
      const ids = tokenizer!.encode(values.text);
      const last = await lastPositionLogits(model, Int32Array.from(ids), 1);
      const bad = last.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) {
        const nan = last.filter((x) => Number.isNaN(x)).length;
        throw new NonFiniteOutputError(
          `logits: the model computed ${nan} NaN and ${last.filter((x) => !Number.isFinite(x)).length - nan} infinite logit(s) at the last position (first at token id ${bad}) for ${values.model}` +
            `${values.adapter ? ` with the adapter ${values.adapter}` : ''}. The weights (or the adapter) hold NaN/Inf or overflow float32: check them, e.g. with safetensors in Python (torch.isfinite(t).all()).`,
        );
      }
      const json = JSON.stringify({ input_ids: ids, logits_last: Array.from(last) });
      if (values.out) await writeOut(values.out, json + '\n');
      else process.stdout.write(json + '\n');
      e.ctx.destroy();
      return 0;
    }
    case 'generate': {
      if (values.prompt === undefined) throw new ConfigError('generate: --prompt "<text>" is required');
      const source = needModel();
      const e = await engineForCli();
      const { model, tokenizer } = await loadModel(e, source, { onProgress: progressBar() });
      if (values.adapter) await attachAdapterFolder(e, model, values.adapter, values.endpoint);
      const tok = tokenizer!;
      const promptIds = tok.encode(values.prompt);
      const stopIds = [...new Set([tok.eosTokenId, model.config.bosTokenId, ...model.config.eosTokenIds].filter((x): x is number => typeof x === 'number'))];
      const ids = await generate(model, promptIds, {
        maxNewTokens: num('max-new-tokens', 64, 1, 1 << 20),
        temperature: num('temperature', 0, 0, 100),
        topK: values['top-k'] ? num('top-k', 0, 0) : undefined,
        topP: values['top-p'] ? num('top-p', 1, 0, 1) : undefined,
        seed: num('seed', 0),
        stopIds,
      });
      const text = tok.decode([...promptIds, ...ids], { skipSpecialTokens: true });
      process.stdout.write(text + '\n');
      if (values.ids) process.stdout.write(JSON.stringify({ prompt_ids: promptIds, ids }) + '\n');
      e.ctx.destroy();
      return 0;
    }
    case 'bench': {
      const e = await engineForCli();
      // The file is rewritten after every model and every step of the large shapes, so a run stopped by a time limit keeps what it measured.
      const partial = values.out ? (r: unknown) => writeOut(values.out!, JSON.stringify(r, null, 2) + '\n') : undefined;
      const memoryOnlyStep = values['memory-only-step'] === undefined ? undefined : num('memory-only-step', 0, 0, 100);
      const result = await runBench(e, {
        steps: num('steps', 5, 1, 1000),
        only: values.only?.split(','),
        onPartial: partial,
        memoryOnlyStep,
        onlyStep: values.step === undefined ? undefined : num('step', 0, 0, 100),
      });
      if (memoryOnlyStep !== undefined) {
        // The encoded step is still queued on the GPU: report and leave without waiting for it.
        const json = JSON.stringify(result, null, 2);
        if (values.out) await writeOut(values.out, json + '\n');
        process.stdout.write(json + '\n');
        process.exit(0);
      }
      const json = JSON.stringify(result, null, 2);
      if (values.out) await writeOut(values.out, json + '\n');
      process.stdout.write(json + '\n');
      e.ctx.destroy();
      return 0;
    }
    default:
      throw new ConfigError(`Unknown command '${cmd}'. Commands: train, grid, export, logits, generate, bench, methods (peft-studio --help).`);
  }
}

export async function run(argv: string[]): Promise<void> {
  try {
    process.exitCode = await main(argv);
  } catch (err) {
    if (err instanceof PeftStudioError || ((err as Error)?.name === 'TypeError' && String((err as Error).message).includes('parseArgs'))) {
      process.stderr.write(`peft-studio: ${(err as Error).message}\n`);
    } else if ((err as { code?: string })?.code?.startsWith?.('ERR_PARSE_ARGS')) {
      process.stderr.write(`peft-studio: ${(err as Error).message}\n${USAGE}`);
    } else if (typeof (err as NodeJS.ErrnoException)?.code === 'string' && typeof (err as NodeJS.ErrnoException).syscall === 'string') {
      // A file-system error no check caught (a disk that fills mid-run, a path that changed): a sentence, not a trace.
      process.stderr.write(`peft-studio: ${fsErrorMessage(err as NodeJS.ErrnoException)}\n`);
    } else {
      process.stderr.write(`peft-studio: ${(err as Error)?.stack ?? err}\n`);
    }
    process.exitCode = 2;
  }
  // Dawn keeps the event loop alive; exit once output is flushed.
  process.stdout.write('', () => process.exit(process.exitCode ?? 0));
}
