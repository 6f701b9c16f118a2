/**
 * Export screen in the worker: a run's files (adapter in HF PEFT layout,
 * config.yaml that `peft-studio train` runs, logs, results, predictions), the
 * same as one zip, and the base model with the adapter merged in.
 */
import { zipSync } from 'fflate';
import { toYaml } from '../config/yaml';
import { ConfigError } from '../errors';
import { methodNameFor } from '../methods/registry';
import { mergedModelFiles } from '../run/finish';
import type { RunIndex } from '../run/idb-store';
import type { ExportFile } from './api';
import type { DeviceSlot } from './device';
import type { BaseModel } from './model';
import type { Sessions } from './session';

export class Export {
  constructor(
    private readonly device: DeviceSlot,
    private readonly base: BaseModel,
    private readonly sessions: Sessions,
    private readonly runs: RunIndex,
  ) {}

  async files(id: string): Promise<ExportFile[]> {
    const record = await this.runs.get(id);
    if (!record) throw new ConfigError(`Run ${id} does not exist.`);
    const store = this.runs.store(id);
    const out: ExportFile[] = [];
    const names = await store.listFiles();
    if (!names.includes('adapter_model.safetensors') && !names.includes('model.safetensors')) {
      // Paused or interrupted: the newest checkpoint's adapter.
      const latest = await store.latestCheckpoint();
      const ckpt = latest ? await store.readCheckpoint(latest) : null;
      for (const f of ['adapter_config.json', 'adapter_model.safetensors']) if (ckpt?.[f]) out.push({ name: f, data: ckpt[f] });
    }
    for (const name of names.sort()) {
      const v = await store.readFile(name);
      if (v === null) continue;
      // The user's data file sits beside config.yaml, where `dataset:` finds it.
      out.push({ name: name.startsWith('data/') ? name.slice(5) : name, data: v });
    }
    const yaml = `# PEFT Studio run ${record.name} (${record.id}).\n# Run it headless: peft-studio train config.yaml\n${toYaml(record.config)}`;
    out.push({ name: 'config.yaml', data: yaml });
    const log = await store.readLog();
    if (log.length) out.push({ name: 'trainer_log.jsonl', data: log.join('\n') + '\n' });
    return out;
  }

  async zip(id: string): Promise<Uint8Array> {
    const files = await this.files(id);
    const enc = new TextEncoder();
    return zipSync(Object.fromEntries(files.map((f) => [f.name, typeof f.data === 'string' ? enc.encode(f.data) : f.data])), { level: 6 });
  }

  merged(id: string): Promise<Uint8Array> {
    return this.device.exclusive(async () => {
      // Merging changes the weights an evaluation may be using.
      this.sessions.assertFree('export the merged model');
      const s = await this.sessions.open(id);
      const { model, method } = s.prepared;
      if (!method.merge) throw new ConfigError(`${methodNameFor(s.config)} cannot be merged into the base weights; download the adapter instead.`);
      try {
        return zipSync(await mergedModelFiles(model, method, this.base.sourcesFor(s.config).model), { level: 6 });
      } finally {
        // The merged weights replaced the base in this session: reload it next time.
        this.sessions.drop();
      }
    });
  }
}
