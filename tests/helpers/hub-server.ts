/**
 * Test assets and the local Hub server for tests.
 *
 * testHubRoot(): $HUB_DIR if set, else ../shared/hub when this checkout has
 * it, else .cache/hub (filled by `node scripts/fetch-test-assets.mjs`). The
 * dataset tests need its datasets/ folder: they fail, never skip, without it.
 *
 * useHubServer(): starts scripts/hub-server.mjs for one test file
 * (beforeAll/afterAll) and returns a handle whose fields are valid once
 * beforeAll has run.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';
// @ts-ignore -- a plain ESM script without type declarations; typed by HubServer below.
import { startHubServer as startUntyped } from '../../scripts/hub-server.mjs';

export interface HubRequest {
  method: string;
  /** Raw URL path, e.g. /stories260K/resolve/main/model.safetensors */
  path: string;
  status: number;
  range?: string;
  /** Body bytes the server read into the response (for a body cut off by the client: what it had sent by then). */
  bytes: number;
  /** The fault injected into this request, if any. */
  fault?: HubFault['kind'];
}

/** A fault the server injects into the next `times` (default 1) GET requests whose path contains `match`. */
export interface HubFault {
  match: string;
  /** status: answer `status`; html: a login page; stall: `afterBytes` then silence; truncate: `afterBytes` then a dropped connection; norange: ignore Range. */
  kind: 'status' | 'html' | 'stall' | 'truncate' | 'norange';
  status?: number;
  afterBytes?: number;
  times?: number;
  /** Only requests without a Range header (downloads, not ranged reads). */
  whole?: boolean;
}

export interface HubServer {
  /** http://127.0.0.1:PORT, the endpoint to give HubSource. */
  url: string;
  port: number;
  root: string;
  /** Every request so far (not OPTIONS, not /__hub). */
  requests: HubRequest[];
  /** Requests whose path contains `match` (string), matches it (RegExp) or passes it (function); all without one. */
  count(match?: string | RegExp | ((r: HubRequest) => boolean)): number;
  /** Clears the request log and the pending faults. */
  reset(): void;
  fault(f: HubFault | HubFault[]): void;
  close(): Promise<void>;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function testHubRoot(): string {
  if (process.env.HUB_DIR) return path.resolve(process.env.HUB_DIR);
  const shared = path.resolve(repoRoot, '..', 'shared', 'hub');
  if (existsSync(path.join(shared, 'models'))) return shared;
  const fetched = path.join(repoRoot, '.cache', 'hub');
  if (existsSync(path.join(fetched, 'models'))) return fetched;
  throw new Error(`No test assets: neither ${shared} nor ${fetched} exists. Run: node scripts/fetch-test-assets.mjs`);
}

/** Whether the test hub has the dataset files (../shared/hub does; a fetched .cache/hub does not). */

export function startHubServer(opts: { root?: string; port?: number } = {}): Promise<HubServer> {
  return (startUntyped as (o: { root: string; port?: number }) => Promise<HubServer>)({ root: opts.root ?? testHubRoot(), port: opts.port });
}

/** Starts the server before this file's tests and stops it after. */
export function useHubServer(opts: { root?: string } = {}): HubServer {
  let server: HubServer | null = null;
  const need = (): HubServer => {
    if (!server) throw new Error('useHubServer(): the server starts in beforeAll; use it inside tests or hooks.');
    return server;
  };
  beforeAll(async () => {
    server = await startHubServer(opts);
  });
  afterAll(async () => {
    await server?.close();
    server = null;
  });
  return {
    get url() {
      return need().url;
    },
    get port() {
      return need().port;
    },
    get root() {
      return need().root;
    },
    get requests() {
      return need().requests;
    },
    count: (m) => need().count(m),
    reset: () => need().reset(),
    fault: (f) => need().fault(f),
    close: () => need().close(),
  };
}
