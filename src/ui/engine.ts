/**
 * The page's handle on the engine worker. Calls go through comlink; `call`
 * also rejects when the worker itself dies (a script that fails to load
 * would otherwise leave every call pending forever).
 */
import * as Comlink from 'comlink';
import type { StudioApi } from '../worker/api';

export interface EngineClient {
  api: Comlink.Remote<StudioApi>;
  call<T>(pending: Promise<T>): Promise<T>;
  terminate(): void;
}

export function startEngine(): EngineClient {
  const worker = new Worker(new URL('../worker/engine.worker.ts', import.meta.url), { type: 'module', name: 'peft-studio-engine' });
  const crashed = new Promise<never>((_, reject) => {
    worker.addEventListener('error', (ev) => {
      ev.preventDefault();
      reject(new Error(`The engine worker stopped: ${ev.message || 'its script failed to load (see the browser console)'}.`));
    });
  });
  crashed.catch(() => undefined);
  const api = Comlink.wrap<StudioApi>(worker);
  return {
    api,
    call: (pending) => Promise.race([pending, crashed]),
    terminate: () => {
      api[Comlink.releaseProxy]();
      worker.terminate();
    },
  };
}

export const proxy = Comlink.proxy;
