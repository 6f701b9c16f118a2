#!/usr/bin/env node
/**
 * A local stand-in for the Hugging Face Hub: serves a folder laid out as
 * ../shared/hub (models/<repo>/..., datasets/<repo>/...) at the Hub's URLs
 *
 *   GET|HEAD /{repo}/resolve/{revision}/{path}            -> models/{repo}/{path}
 *   GET|HEAD /datasets/{repo}/resolve/{revision}/{path}   -> datasets/{repo}/{path}
 *
 * Any revision is accepted. The URL is matched first and its parts decoded
 * after, so a percent-encoded revision (refs%2Fconvert%2Fparquet) stays one
 * segment. HEAD, Content-Length, single Range requests, 404 for anything
 * missing, no "..", 127.0.0.1 only, CORS for browser tests.
 *
 * Every request is logged (method, path, status, Range header, body bytes
 * sent); tests read the log through the returned object or over HTTP:
 * GET /__hub/requests (JSON), DELETE /__hub/requests (reset).
 *
 * Fault injection, for the download tests: `fault({ match, kind, ... })` on
 * the returned object, or POST /__hub/faults with the same JSON (DELETE
 * clears them). Each fault hits the next `times` (default 1) GET requests
 * whose path contains `match` (with `whole: true`, only those without a
 * Range header: a download, not a ranged read):
 *   status    answer `status` (e.g. 503) with a short text body
 *   html      answer 200 text/html with a login page instead of the file
 *   stall     send the headers and `afterBytes` bytes, then nothing (the connection stays open)
 *   truncate  send the headers (full Content-Length) and `afterBytes` bytes, then drop the connection
 *   norange   ignore the Range header (answer 200 with the whole file)
 *
 * CLI: node scripts/hub-server.mjs [root]   (or HUB_DIR=..., PORT=...)
 *   prints "hub-server listening on http://127.0.0.1:PORT"
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROUTE = /^\/(datasets\/)?(.+?)\/resolve\/([^/]+)\/(.+)$/;
const EXPOSED = 'Content-Length, Content-Range, Accept-Ranges, Content-Type, ETag, X-Repo-Commit';

/** ../shared/hub next to this checkout if present, else .cache/hub (see fetch-test-assets.mjs). */
export function defaultHubRoot() {
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const shared = path.resolve(repoRoot, '..', 'shared', 'hub');
  if (fs.existsSync(path.join(shared, 'models'))) return shared;
  return path.join(repoRoot, '.cache', 'hub');
}

/**
 * Maps a request path to a file under root, or null (-> 404).
 * @param {string} root
 * @param {string} pathname the raw (still percent-encoded) URL path
 */
export function resolveHubPath(root, pathname) {
  const m = pathname.match(ROUTE);
  if (!m) return null;
  let repo, rel;
  try {
    repo = decodeURIComponent(m[2]);
    decodeURIComponent(m[3]); // the revision must decode too
    rel = decodeURIComponent(m[4]);
  } catch {
    return null;
  }
  const parts = (repo + '/' + rel).split('/');
  if (parts.some((p) => p === '..' || p === '.' || p === '' || p.includes('\\') || p.includes('\0'))) return null;
  const base = path.resolve(root, m[1] ? 'datasets' : 'models');
  const file = path.resolve(base, ...parts);
  if (!file.startsWith(base + path.sep)) return null;
  return file;
}

/**
 * Parses a single "bytes=a-b" / "bytes=a-" / "bytes=-n" range.
 * @returns {{start: number, end: number} | 'unsatisfiable' | null} null: serve the whole file
 */
function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null; // multiple or malformed ranges: ignore (allowed by RFC 9110)
  let start, end;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (start >= size || start > end) return 'unsatisfiable';
  }
  return { start, end };
}

/**
 * @param {{root?: string, port?: number, host?: string, quiet?: boolean}} [opts]
 * @returns {Promise<{url: string, port: number, root: string, requests: {method: string, path: string, status: number, range?: string, bytes: number}[], count: (match?: string | RegExp | ((r: {method: string, path: string}) => boolean)) => number, reset: () => void, close: () => Promise<void>}>}
 */
export function startHubServer(opts = {}) {
  const root = path.resolve(opts.root ?? process.env.HUB_DIR ?? defaultHubRoot());
  const host = opts.host ?? '127.0.0.1';
  /** @type {{method: string, path: string, status: number, range?: string, bytes: number}[]} */
  const requests = [];
  /** @type {{match: string, kind: string, status?: number, afterBytes?: number, times?: number, whole?: boolean}[]} */
  const faults = [];
  /** The first pending fault for a GET of this path (consumed). */
  const takeFault = (pathname, ranged) => {
    const f = faults.find((x) => pathname.includes(x.match) && (x.times ?? 1) > 0 && !(x.whole && ranged));
    if (!f) return null;
    f.times = (f.times ?? 1) - 1;
    return f;
  };

  const server = http.createServer((req, res) => {
    // The raw path: URL parsing would resolve "..", which must be refused, not followed.
    const pathname = (req.url ?? '/').split(/[?#]/)[0];
    const cors = {
      'Access-Control-Allow-Origin': '*',
      'Access-Control-Expose-Headers': EXPOSED,
    };
    const finish = (status, headers = {}, body) => {
      res.writeHead(status, { ...cors, 'Cache-Control': 'no-store', ...headers });
      res.end(body);
    };

    if (pathname === '/__hub/faults') {
      if (req.method === 'DELETE') {
        faults.length = 0;
        return finish(204);
      }
      if (req.method === 'POST') {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          try {
            const list = JSON.parse(body);
            faults.push(...(Array.isArray(list) ? list : [list]));
            finish(204);
          } catch {
            finish(400, { 'Content-Type': 'text/plain' }, 'faults: send JSON');
          }
        });
        return;
      }
      return finish(200, { 'Content-Type': 'application/json' }, JSON.stringify({ faults }));
    }
    if (pathname === '/__hub/requests') {
      if (req.method === 'DELETE') {
        requests.length = 0;
        return finish(204);
      }
      return finish(200, { 'Content-Type': 'application/json' }, JSON.stringify({ requests }));
    }
    if (req.method === 'OPTIONS') {
      return finish(204, {
        'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS, POST, DELETE',
        'Access-Control-Allow-Headers': req.headers['access-control-request-headers'] ?? '*',
        'Access-Control-Max-Age': '600',
      });
    }

    const entry = { method: req.method ?? 'GET', path: pathname, status: 0, bytes: 0 };
    if (req.headers.range) entry.range = req.headers.range;
    requests.push(entry);
    const send = (status, headers, body) => {
      entry.status = status;
      if (body && req.method !== 'HEAD') entry.bytes += Buffer.byteLength(body);
      finish(status, headers, body);
    };
    /** File bytes piped into the response, counted as they are read. */
    const count = (stream) => stream.on('data', (d) => (entry.bytes += d.length));

    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { Allow: 'GET, HEAD, OPTIONS' });
    const file = resolveHubPath(root, pathname);
    if (!file) return send(404, { 'Content-Type': 'text/plain', 'X-Error-Code': 'EntryNotFound' }, 'Entry not found');
    const fault = req.method === 'GET' ? takeFault(pathname, !!req.headers.range) : null;
    if (fault) entry.fault = fault.kind;
    if (fault?.kind === 'status') return send(fault.status ?? 503, { 'Content-Type': 'text/plain' }, 'Service temporarily unavailable');
    if (fault?.kind === 'html') {
      return send(
        200,
        { 'Content-Type': 'text/html; charset=utf-8' },
        '<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in to continue.</body></html>',
      );
    }

    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) return send(404, { 'Content-Type': 'text/plain', 'X-Error-Code': 'EntryNotFound' }, 'Entry not found');
      const common = {
        'Content-Type': 'application/octet-stream',
        'Accept-Ranges': 'bytes',
        ETag: `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`,
      };
      let status = 200;
      let start = 0;
      let end = st.size - 1;
      const headers = { ...common };
      const ifRange = req.headers['if-range'];
      if (req.headers.range && fault?.kind !== 'norange' && (!ifRange || ifRange === common.ETag)) {
        const r = parseRange(req.headers.range, st.size);
        if (r === 'unsatisfiable') return send(416, { ...common, 'Content-Range': `bytes */${st.size}` });
        if (r) {
          status = 206;
          ({ start, end } = r);
          headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
        }
      }
      headers['Content-Length'] = String(Math.max(0, end - start + 1));
      entry.status = status;
      res.writeHead(status, { ...cors, 'Cache-Control': 'no-store', ...headers });
      if (req.method === 'HEAD' || end < start) return res.end();
      if (fault?.kind === 'stall' || fault?.kind === 'truncate') {
        // Part of the body, then silence (stall) or a dropped connection (truncate).
        const n = Math.min(fault.afterBytes ?? 0, end - start + 1);
        const part = n > 0 ? count(fs.createReadStream(file, { start, end: start + n - 1 })) : null;
        const after = () => (fault.kind === 'truncate' ? res.destroy() : undefined);
        if (!part) return after();
        part.on('error', () => res.destroy());
        part.on('end', after);
        part.pipe(res, { end: false });
        return;
      }
      const stream = count(fs.createReadStream(file, { start, end }));
      stream.on('error', () => res.destroy());
      stream.pipe(res);
    });
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? Number(process.env.PORT ?? 0), host, () => {
      const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
      const url = `http://${host}:${addr.port}`;
      resolve({
        url,
        port: addr.port,
        root,
        requests,
        count(match) {
          return requests.filter((r) =>
            match === undefined ? true : typeof match === 'function' ? match(r) : typeof match === 'string' ? r.path.includes(match) : match.test(r.path),
          ).length;
        },
        reset() {
          requests.length = 0;
          faults.length = 0;
        },
        fault(f) {
          faults.push(...(Array.isArray(f) ? f : [f]));
        },
        close() {
          return new Promise((done) => {
            server.close(() => done());
            server.closeAllConnections?.();
          });
        },
      });
    });
  });
}

const isMain = process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (isMain) {
  const root = process.argv[2] ?? process.env.HUB_DIR ?? defaultHubRoot();
  if (!fs.existsSync(root)) {
    console.error(`hub-server: ${root} does not exist. Pass the hub folder, or run node scripts/fetch-test-assets.mjs first.`);
    process.exit(1);
  }
  const s = await startHubServer({ root });
  console.log(`hub-server listening on ${s.url}`);
  const stop = () => s.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
