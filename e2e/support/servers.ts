/** The two local servers of the e2e tests: the built studio and the Hub mirror. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { preview } from 'vite';

export { startHubServer, testHubRoot, type HubServer } from '../../tests/helpers/hub-server';

export const ROOT = path.resolve(import.meta.dirname, '../..');

/** Serve dist/ (the output of `vite build`) on 127.0.0.1 with `vite preview`. */
export async function serveStudio(): Promise<{ url: string; close(): Promise<void> }> {
  const dist = path.join(ROOT, 'dist');
  if (!existsSync(path.join(dist, 'index.html'))) {
    throw new Error(`${dist}/index.html is missing: build the studio first with \`npx vite build\` (npm run test:e2e does).`);
  }
  const server = await preview({
    configFile: false,
    root: ROOT,
    logLevel: 'warn',
    build: { outDir: 'dist' },
    preview: { host: '127.0.0.1', port: 0, strictPort: true, open: false },
  });
  const url = server.resolvedUrls?.local[0];
  if (!url) throw new Error('vite preview did not report a URL');
  return { url: url.replace(/\/$/, ''), close: () => server.close() };
}
