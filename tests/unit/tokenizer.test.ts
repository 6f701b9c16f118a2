import { beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { HubError, ModelFormatError } from '../../src/errors';
import { HubSource, MemoryCache, type FileSource } from '../../src/hub/index';
import { LocalFolderSource } from '../../src/hub/node';
import { loadTokenizer, type Tokenizer } from '../../src/model/tokenizer';
import { testHubRoot, useHubServer } from '../helpers/hub-server';

const modelDir = path.join(testHubRoot(), 'models', 'stories260K');
const reference = JSON.parse(readFileSync(path.join(modelDir, 'reference.json'), 'utf8'));
const hub = useHubServer();

/** A FileSource over an in-memory file map. */
function memorySource(files: Record<string, string>): FileSource {
  return {
    id: 'memory',
    async get(p) {
      if (!(p in files)) throw new HubError(`${p} missing`, p, 404);
      return new TextEncoder().encode(files[p]);
    },
    async has(p) {
      return p in files;
    },
  };
}

describe('stories260K tokenizer', () => {
  let tok: Tokenizer;
  beforeAll(async () => {
    tok = await loadTokenizer(new LocalFolderSource(modelDir));
  });

  it('encodes the reference prompts exactly (BOS added)', () => {
    for (const p of reference.prompts) expect(tok.encode(p.prompt)).toEqual(p.input_ids);
  });

  it('encodes the tokenizer test sentences exactly and decodes them back', () => {
    expect(reference.tokenizer.length).toBeGreaterThan(5);
    for (const t of reference.tokenizer) {
      const ids = tok.encode(t.text);
      expect(ids).toEqual(t.ids_with_bos);
      expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(t.text);
    }
  });

  it('decodes the 256-token greedy story to the text in reference.json', () => {
    const g = reference.verification.greedy_from_bos;
    expect(tok.decode(g.ids, { skipSpecialTokens: true })).toBe(g.text);
  });

  it('special tokens, vocab size, options', () => {
    expect(tok.bosTokenId).toBe(1);
    expect(tok.eosTokenId).toBe(2);
    expect(tok.padTokenId).toBe(2); // no pad_token: transformers.js falls back to eos
    expect(tok.vocabSize).toBe(512);
    expect(tok.chatTemplate).toBeNull();
    expect(tok.encode('Once upon a time', { addSpecialTokens: false })).toEqual([403, 407, 261, 378]);
    expect(tok.encode('')).toEqual([1]);
    expect(tok.decode([1, 403, 407, 2])).toBe('<s> Once upon</s>');
    expect(tok.decode(Int32Array.from([403, 407]), { skipSpecialTokens: true })).toBe('Once upon');
    expect(tok.decode([])).toBe('');
    expect(tok.tokenToId('<0x0A>')).toBe(13);
    expect(tok.tokenToId('definitely-not-a-token')).toBeNull();
    expect(() => tok.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow(ModelFormatError);
  });

  it('loads through HubSource (our fetching, our cache)', async () => {
    hub.reset();
    const cache = new MemoryCache();
    const s = new HubSource({ endpoint: hub.url, repo: 'stories260K', kind: 'model', cache });
    const t = await loadTokenizer(s);
    expect(t.encode(reference.prompts[1].prompt)).toEqual(reference.prompts[1].input_ids);
    const paths = hub.requests.map((r) => r.path).sort();
    expect(paths).toEqual([
      '/stories260K/resolve/main/chat_template.jinja',
      '/stories260K/resolve/main/tokenizer.json',
      '/stories260K/resolve/main/tokenizer_config.json',
    ]);
    expect(hub.count('.safetensors')).toBe(0);
  });
});

describe('loadTokenizer with other files', () => {
  const tokenizerJson = readFileSync(path.join(modelDir, 'tokenizer.json'), 'utf8');
  const config = JSON.parse(readFileSync(path.join(modelDir, 'tokenizer_config.json'), 'utf8'));
  const template =
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

  it('applies a chat template from tokenizer_config.json', async () => {
    const t = await loadTokenizer(
      memorySource({ 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': JSON.stringify({ ...config, chat_template: template }) }),
    );
    expect(t.chatTemplate).toBe(template);
    const msgs = [{ role: 'user', content: 'Hi there' }];
    expect(t.applyChatTemplate(msgs, { tokenize: false })).toBe('<|user|>Hi there\n');
    expect(t.applyChatTemplate(msgs, { tokenize: false, addGenerationPrompt: true })).toBe('<|user|>Hi there\n<|assistant|>');
    const ids = t.applyChatTemplate(msgs);
    expect(ids).toEqual(t.encode('<|user|>Hi there\n', { addSpecialTokens: false }));
  });

  it('reads chat_template.jinja and named templates', async () => {
    const jinja = await loadTokenizer(
      memorySource({ 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': JSON.stringify(config), 'chat_template.jinja': template }),
    );
    expect(jinja.chatTemplate).toBe(template);
    const named = await loadTokenizer(
      memorySource({
        'tokenizer.json': tokenizerJson,
        'tokenizer_config.json': JSON.stringify({
          ...config,
          chat_template: [
            { name: 'default', template },
            { name: 'tool_use', template: 'x' },
          ],
        }),
      }),
    );
    expect(named.chatTemplate).toBe(template);
  });

  it('works without tokenizer_config.json; errors name the missing or broken file', async () => {
    const bare = await loadTokenizer(memorySource({ 'tokenizer.json': tokenizerJson }));
    expect(bare.encode('Once upon a time')).toEqual([1, 403, 407, 261, 378]);
    expect(bare.bosTokenId).toBeNull(); // no config: special tokens unknown
    await expect(loadTokenizer(memorySource({ 'tokenizer_config.json': '{}' }))).rejects.toThrow(/memory has no tokenizer\.json/);
    await expect(loadTokenizer(memorySource({ 'tokenizer.json': '{"model": ' }))).rejects.toThrow(ModelFormatError);
    await expect(loadTokenizer(memorySource({ 'tokenizer.json': '{"model": {"type": "Nonsense"}}' }))).rejects.toThrow(ModelFormatError);
  });
});
