import { describe, expect, it } from 'vitest';
import http from 'node:http';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { testHubRoot, useHubServer } from '../helpers/hub-server';

const hub = useHubServer();
const root = testHubRoot();

/** A raw request: fetch() would normalise "..", we want to send it as is. */
function raw(
  method: string,
  urlPath: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: hub.port, method, path: urlPath, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('scripts/hub-server.mjs', () => {
  it('listens on 127.0.0.1 and serves models and datasets in the Hub layout', async () => {
    expect(hub.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const r = await raw('GET', '/stories260K/resolve/main/config.json');
    expect(r.status).toBe(200);
    expect(r.body.equals(readFileSync(path.join(root, 'models/stories260K/config.json')))).toBe(true);
    expect(r.headers['content-length']).toBe(String(r.body.length));
    const d = await raw('GET', '/datasets/gsm8k/resolve/main/raw/test.jsonl');
    expect(d.status).toBe(200);
    expect(d.body.length).toBe(statSync(path.join(root, 'datasets/gsm8k/raw/test.jsonl')).size);
    const any = await raw('HEAD', '/stories260K/resolve/0123abcd/config.json');
    expect(any.status).toBe(200);
  });

  it('HEAD sends the length and no body', async () => {
    const r = await raw('HEAD', '/stories260K/resolve/main/model.safetensors');
    expect(r.status).toBe(200);
    expect(Number(r.headers['content-length'])).toBe(statSync(path.join(root, 'models/stories260K/model.safetensors')).size);
    expect(r.body.length).toBe(0);
  });

  it('honours Range', async () => {
    const file = readFileSync(path.join(root, 'models/stories260K/model.safetensors'));
    const a = await raw('GET', '/stories260K/resolve/main/model.safetensors', { Range: 'bytes=0-7' });
    expect(a.status).toBe(206);
    expect(a.headers['content-range']).toBe(`bytes 0-7/${file.length}`);
    expect(a.body.equals(file.subarray(0, 8))).toBe(true);
    const tail = await raw('GET', '/stories260K/resolve/main/model.safetensors', { Range: 'bytes=-16' });
    expect(tail.body.equals(file.subarray(file.length - 16))).toBe(true);
    const open = await raw('GET', '/stories260K/resolve/main/model.safetensors', { Range: `bytes=${file.length - 3}-` });
    expect(open.body.length).toBe(3);
    const bad = await raw('GET', '/stories260K/resolve/main/model.safetensors', { Range: `bytes=${file.length}-` });
    expect(bad.status).toBe(416);
    expect(bad.headers['content-range']).toBe(`bytes */${file.length}`);
  });

  it('matches first and decodes after: an encoded revision is one segment', async () => {
    expect((await raw('HEAD', '/stories260K/resolve/refs%2Fpr%2F1/config.json')).status).toBe(200);
    expect((await raw('HEAD', '/stories260K/resolve/refs/pr/1/config.json')).status).toBe(404);
    const ok = await raw('HEAD', '/datasets/ybisk/piqa/resolve/refs%2Fconvert%2Fparquet/plain_text/validation/0000.parquet');
    expect(ok.status).toBe(200);
    const split = await raw('HEAD', '/datasets/ybisk/piqa/resolve/refs/convert/parquet/plain_text/validation/0000.parquet');
    expect(split.status).toBe(404);
  });

  it('404s missing files, folders, other URLs and any ".."', async () => {
    for (const p of [
      '/stories260K/resolve/main/missing.json',
      '/stories260K/resolve/main/original',
      '/stories260K/config.json',
      '/',
      '/stories260K/resolve/main/../../../README.md',
      '/stories260K/resolve/main/original/../config.json',
      '/stories260K/resolve/main/%2e%2e/%2e%2e/README.md',
      '/datasets/..%2f..%2fmodels/stories260K/resolve/main/config.json',
      '/stories260K/resolve/main/%E0%A4%A',
    ]) {
      expect((await raw('GET', p)).status, p).toBe(404);
    }
  });

  it('allows cross-origin reads', async () => {
    const r = await raw('GET', '/stories260K/resolve/main/config.json', { Origin: 'http://localhost:5173' });
    expect(r.headers['access-control-allow-origin']).toBe('*');
    expect(r.headers['access-control-expose-headers']).toMatch(/Content-Length/);
    const pre = await raw('OPTIONS', '/stories260K/resolve/main/config.json', {
      Origin: 'http://localhost:5173',
      'Access-Control-Request-Method': 'GET',
      'Access-Control-Request-Headers': 'range, authorization',
    });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-headers']).toBe('range, authorization');
  });

  it('counts requests, in process and over HTTP', async () => {
    hub.reset();
    await raw('GET', '/stories260K/resolve/main/config.json');
    await raw('HEAD', '/stories260K/resolve/main/model.safetensors');
    await raw('GET', '/stories260K/resolve/main/nope');
    expect(hub.count()).toBe(3);
    expect(hub.count('model.safetensors')).toBe(1);
    expect(hub.count((r) => r.method === 'GET' && /\.safetensors$/.test(r.path))).toBe(0);
    expect(hub.requests.map((r) => r.status)).toEqual([200, 200, 404]);
    const log = JSON.parse((await raw('GET', '/__hub/requests')).body.toString());
    expect(log.requests).toHaveLength(3);
    expect((await raw('DELETE', '/__hub/requests')).status).toBe(204);
    expect(hub.count()).toBe(0);
  });
});
