/**
 * The model's tokenizer: tokenizer.json + tokenizer_config.json read through
 * our FileSource (so the Hub cache, local folders and directory handles all
 * work, and transformers.js never fetches anything itself), then handed to
 * transformers.js's tokenizer classes, which implement the HF `tokenizers`
 * pipeline (normalizer, pre-tokenizer, BPE/Unigram/WordPiece, post-processor,
 * decoder) and Jinja chat templates.
 */
import { ModelFormatError } from '../errors';
import { getCapped, isNotFound, jsonLimit, type FileSource } from '../hub/source';

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** Append the assistant turn's opening (default false). */
  addGenerationPrompt?: boolean;
  /** Return token ids (default) or the rendered text. */
  tokenize?: boolean;
}

export interface Tokenizer {
  /** Token ids; with addSpecialTokens (default true) as the tokenizer's post-processor adds them (e.g. BOS). */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: ArrayLike<number>, opts?: { skipSpecialTokens?: boolean }): string;
  /** The id of one token string, or null when it is not in the vocabulary. */
  tokenToId(token: string): number | null;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  /** pad_token, falling back to eos_token as transformers.js does; null when neither exists. */
  readonly padTokenId: number | null;
  /** Number of token ids (largest id + 1), added tokens included. */
  readonly vocabSize: number;
  /** The chat template (the "default" one when the repo names several), or null. */
  readonly chatTemplate: string | null;
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions & { tokenize: false }): string;
  applyChatTemplate(messages: ChatMessage[], opts?: ChatTemplateOptions & { tokenize?: true }): number[];
  applyChatTemplate(messages: ChatMessage[], opts?: ChatTemplateOptions): string | number[];
}

/** The slice of transformers.js's PreTrainedTokenizer used here. */
interface TransformersTokenizer {
  encode(text: string, opts: { add_special_tokens: boolean }): number[];
  decode(ids: number[], opts: { skip_special_tokens: boolean }): string;
  convert_tokens_to_ids(token: string): number | undefined | null;
  get_vocab(): Map<string, number> | Record<string, number>;
  apply_chat_template(messages: ChatMessage[], opts: Record<string, unknown>): unknown;
  bos_token_id?: number | null;
  eos_token_id?: number | null;
  pad_token_id?: number | null;
}

type TokenizerClass = new (tokenizerJSON: object, tokenizerConfig: object) => TransformersTokenizer;

async function readJson(source: FileSource, file: string, optional: boolean): Promise<Record<string, unknown> | null> {
  let bytes: Uint8Array;
  try {
    bytes = await getCapped(source, file, jsonLimit(file));
  } catch (e) {
    if (isNotFound(e)) {
      if (optional) return null;
      throw new ModelFormatError(
        `${source.id} has no ${file}. Only "fast" tokenizers are supported: save one with transformers' ` +
          'AutoTokenizer.from_pretrained(...).save_pretrained(dir), which writes tokenizer.json.',
      );
    }
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new ModelFormatError(`${source.id}/${file} is not valid JSON (${(e as Error).message}). Download it again.`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new ModelFormatError(`${source.id}/${file} is not a JSON object. Download it again.`);
  }
  return json as Record<string, unknown>;
}

function defaultTemplate(t: unknown): string | null {
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find((x) => x && typeof x === 'object' && (x as { name?: unknown }).name === 'default') as { template?: unknown } | undefined;
    return typeof named?.template === 'string' ? named.template : null;
  }
  return null;
}

const id = (x: number | null | undefined): number | null => (typeof x === 'number' && Number.isInteger(x) ? x : null);

export async function loadTokenizer(source: FileSource): Promise<Tokenizer> {
  const [tokenizerJson, tokenizerConfig] = await Promise.all([readJson(source, 'tokenizer.json', false), readJson(source, 'tokenizer_config.json', true)]);
  const config: Record<string, unknown> = { ...(tokenizerConfig ?? {}) };

  // Newer repos keep the template in its own file.
  if (config.chat_template === undefined) {
    try {
      const bytes = await getCapped(source, 'chat_template.jinja', jsonLimit('chat_template.jinja'));
      config.chat_template = new TextDecoder().decode(bytes);
    } catch (e) {
      // Optional: absent (404) is normal; an unreachable server should not fail
      // a tokenizer whose required files came from the cache.
      if ((e as Error).name === 'FileTooLargeError') throw e;
      if (!isNotFound(e)) console.warn(`peft-studio: chat_template.jinja of ${source.id} not read: ${(e as Error).message}`);
    }
  }

  // Kept out of the main bundle until a tokenizer is needed.
  const transformers = (await import('@huggingface/transformers')) as unknown as Record<string, unknown>;
  const base = transformers.PreTrainedTokenizer as TokenizerClass;
  const className = typeof config.tokenizer_class === 'string' ? config.tokenizer_class.replace(/Fast$/, '') : '';
  const candidate = transformers[className] as TokenizerClass | undefined;
  const cls = typeof candidate === 'function' && candidate.prototype instanceof base ? candidate : base;

  let tok: TransformersTokenizer;
  try {
    tok = new cls(tokenizerJson!, config);
  } catch (e) {
    throw new ModelFormatError(`${source.id}/tokenizer.json could not be loaded (${(e as Error).message}). Check that it is a Hugging Face tokenizers file.`);
  }

  const vocab = tok.get_vocab();
  const ids = vocab instanceof Map ? [...vocab.values()] : Object.values(vocab);
  const vocabSize = ids.reduce((m, v) => Math.max(m, v + 1), 0);
  const chatTemplate = defaultTemplate(config.chat_template);

  function applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions & { tokenize: false }): string;
  function applyChatTemplate(messages: ChatMessage[], opts?: ChatTemplateOptions & { tokenize?: true }): number[];
  function applyChatTemplate(messages: ChatMessage[], opts?: ChatTemplateOptions): string | number[];
  function applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string | number[] {
    if (config.chat_template === undefined || config.chat_template === null) {
      throw new ModelFormatError(
        `${source.id} has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja). ` +
          'Use a prompt template instead, or a chat/instruct model.',
      );
    }
    const tokenize = opts.tokenize ?? true;
    const out = tok.apply_chat_template(messages, {
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      tokenize,
      return_tensor: false,
      return_dict: false,
    });
    return tokenize ? (out as number[]) : (out as string);
  }

  return {
    encode: (text, opts = {}) => tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }),
    decode: (list, opts = {}) => (list.length === 0 ? '' : tok.decode(Array.from(list), { skip_special_tokens: opts.skipSpecialTokens ?? false })),
    tokenToId: (token) => id(tok.convert_tokens_to_ids(token)),
    bosTokenId: id(tok.bos_token_id),
    eosTokenId: id(tok.eos_token_id),
    padTokenId: id(tok.pad_token_id),
    vocabSize,
    chatTemplate,
    applyChatTemplate,
  };
}
