/**
 * The engine worker: WebGPU, the model and generation live here, off the UI
 * thread. The page talks to it through comlink (see ./api.ts, ../ui/engine.ts).
 */
import * as Comlink from 'comlink';
import { Studio } from './studio';

Comlink.expose(new Studio(navigator.gpu));
