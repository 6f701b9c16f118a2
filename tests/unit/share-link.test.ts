/** Share links: round trip through the schema, compact, and clear errors for damaged, newer or unsafe links. */
import { deflateSync, strToU8 } from 'fflate';
import { describe, expect, test } from 'vitest';
import { validateConfig } from '../../src/config/schema';
import '../../src/methods/registry';
import { compactConfig, decodeShareData, encodeShareData, shareDataFromHash, shareUrl, ShareLinkError, SHARE_VERSION } from '../../src/run/share-link';

const config = validateConfig({
  model_name_or_path: 'stories260K',
  endpoint: 'http://127.0.0.1:5555',
  output_dir: 'saves/x',
  dataset: 'tiny.jsonl',
  finetuning_type: 'lora',
  lora_rank: 4,
  lora_target: 'q_proj,v_proj',
  learning_rate: 5e-3,
  max_steps: 5,
  seed: 7,
});

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

function errorOf(data: string): ShareLinkError {
  try {
    decodeShareData(data);
  } catch (e) {
    return e as ShareLinkError;
  }
  throw new Error('no error');
}

describe('share link', () => {
  test('round trip restores every key of the validated config', () => {
    const url = shareUrl('http://localhost:4173/?endpoint=a#old', config);
    expect(url.startsWith(`http://localhost:4173/?endpoint=a#x=${SHARE_VERSION}.`)).toBe(true);
    const data = shareDataFromHash(new URL(url).hash)!;
    const opened = decodeShareData(data);
    expect(opened.config).toEqual(config);
    expect(opened.localFiles).toEqual([{ key: 'dataset', value: 'tiny.jsonl' }]);
  });

  test('only required and non-default keys travel', () => {
    const c = compactConfig(config);
    expect(Object.keys(c).sort()).toEqual(
      ['dataset', 'endpoint', 'learning_rate', 'lora_rank', 'lora_target', 'max_steps', 'model_name_or_path', 'output_dir', 'seed'].sort(),
    );
    expect(encodeShareData(config).length).toBeLessThan(300);
  });

  test('a cut or edited link is reported as damaged', () => {
    const data = encodeShareData(config);
    for (const bad of [data.slice(0, data.length - 10), data.slice(0, 2) + '!!' + data.slice(4), 'abc', '1.', '']) {
      const err = errorOf(bad);
      expect(err).toBeInstanceOf(ShareLinkError);
      expect(err.kind).toBe('corrupt');
      expect(err.message).toMatch(/This link is damaged/);
    }
  });

  test('a newer format names both versions', () => {
    const err = errorOf(`${SHARE_VERSION + 1}.${encodeShareData(config).split('.')[1]}`);
    expect(err.kind).toBe('newer');
    expect(err.message).toMatch(new RegExp(`newer PEFT Studio \\(link format ${SHARE_VERSION + 1}; this studio reads format ${SHARE_VERSION}`));
  });

  test('every single-character change of a link is refused as damaged, never opened as another experiment', () => {
    const data = encodeShareData(config);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    let refused = 0;
    for (let i = 2; i < data.length; i++) {
      for (const c of [alphabet[(alphabet.indexOf(data[i]) + 1) % 64], alphabet[(alphabet.indexOf(data[i]) + 37) % 64]]) {
        const bad = data.slice(0, i) + c + data.slice(i + 1);
        let opened: unknown = null;
        try {
          opened = decodeShareData(bad).config;
        } catch (e) {
          expect(e).toBeInstanceOf(ShareLinkError);
          refused++;
          continue;
        }
        // The last base64 character can carry unused bits: then the bytes, and the experiment, are the same.
        expect(opened).toEqual(config);
      }
    }
    expect(refused).toBeGreaterThan(2 * (data.length - 2) - 4);
  });

  test('format 1 links (no checksum) still open', () => {
    const v1 = `1.${b64url(deflateSync(strToU8(JSON.stringify(compactConfig(config)))))}`;
    expect(decodeShareData(v1).config).toEqual(config);
  });

  test("invalid values get the schema's messages", () => {
    const raw = { model_name_or_path: 'stories260K', output_dir: 'x', dataset: 'a.jsonl', lora_rank: 0, learnin_rate: 1 };
    const err = errorOf(`1.${b64url(deflateSync(strToU8(JSON.stringify(raw))))}`);
    expect(err.kind).toBe('invalid');
    expect(err.message).toMatch(/lora_rank: 0 is out of range/);
    expect(err.message).toMatch(/did you mean 'learning_rate'/);
  });

  test('a link cannot point at local folders or non-http endpoints', () => {
    const enc = (raw: Record<string, unknown>) => `1.${b64url(deflateSync(strToU8(JSON.stringify({ output_dir: 'x', dataset: 'sst2', ...raw }))))}`;
    expect(errorOf(enc({ model_name_or_path: '/home/me/model' })).message).toMatch(/not a Hub repo id/);
    expect(errorOf(enc({ model_name_or_path: 'a/b', adapter_name_or_path: '../x' })).message).toMatch(/adapter_name_or_path/);
    expect(errorOf(enc({ model_name_or_path: 'a/b', endpoint: 'file:///etc' })).message).toMatch(/not an http/);
  });

  test('a link cannot carry endpoint credentials, folders outside the working folder or numbers beyond the schema', () => {
    const enc = (raw: Record<string, unknown>) => encodeShareData({ model_name_or_path: 'a/b', output_dir: 'x', dataset: 'sst2', ...raw });
    expect(errorOf(enc({ endpoint: 'https://user:pass@mirror.example' })).message).toMatch(
      /endpoint in this link is refused: .*must not carry a query, fragment or credentials/,
    );
    for (const key of ['output_dir', 'dataset_dir', 'export_dir']) {
      for (const v of ['/home/me/.ssh', '~/x', 'C:\\Windows', '\\\\server\\share', 'runs/../../etc', '..']) {
        const err = errorOf(enc({ [key]: v }));
        expect(err.kind, `${key}=${v}`).toBe('invalid');
        expect(err.message).toContain(`${key} in this link is '${v}': a link may name only a folder inside the working folder`);
      }
    }
    expect(decodeShareData(enc({ output_dir: 'saves/run-1', export_dir: 'merged' })).config.output_dir).toBe('saves/run-1');
    for (const [key, v] of [
      ['cutoff_len', 1e9],
      ['per_device_train_batch_size', 1e6],
      ['max_steps', 1e12],
      ['galore_rank', 1e7],
    ] as const) {
      const err = errorOf(enc({ [key]: v }));
      expect(err.kind).toBe('invalid');
      expect(err.message).toMatch(new RegExp(`${key}: ${v} is out of range`));
    }
  });
});
