/**
 * Playground generation in the worker: one prompt, streamed token by token,
 * cancellable, with the CLI's stop set.
 */
import { encodeTurn } from '../data/template';
import { ConfigError } from '../errors';
import { generate } from '../model/generate';
import type { LlamaModel } from '../model/llama';
import type { Tokenizer } from '../model/tokenizer';
import type { GenerateOptions, GenerateResult } from './api';

export class Generation {
  private running: AbortController | null = null;

  async run(model: LlamaModel, tokenizer: Tokenizer, opts: GenerateOptions, onToken?: (id: number, text: string) => void): Promise<GenerateResult> {
    if (model.e.ctx.lost) throw model.e.ctx.lost;
    const maxNewTokens = Math.floor(opts.maxNewTokens);
    if (!(maxNewTokens >= 1)) throw new ConfigError(`Max new tokens must be at least 1, got ${opts.maxNewTokens}.`);
    if (!(opts.temperature >= 0)) throw new ConfigError(`Temperature must be 0 (greedy) or more, got ${opts.temperature}.`);
    // A template renders the prompt as a user turn, as the run's training examples were (the source side only).
    const promptIds =
      opts.template === undefined ? tokenizer.encode(opts.prompt) : encodeTurn(tokenizer, { prompt: opts.prompt, response: '' }, opts.template).source;
    if (promptIds.length === 0) throw new ConfigError('The prompt encodes to no tokens: type some text.');
    const context = model.config.maxPositionEmbeddings;
    if (promptIds.length + maxNewTokens > context) {
      throw new ConfigError(
        `The prompt (${promptIds.length} tokens) plus ${maxNewTokens} new tokens exceeds the model's context of ${context}: shorten one of them.`,
      );
    }
    // Same stop set as the CLI: llama2.c-style models end a story with BOS.
    const stopIds = [...new Set([tokenizer.eosTokenId, model.config.bosTokenId, ...model.config.eosTokenIds])].filter(
      (x): x is number => typeof x === 'number',
    );
    const text = continuation(tokenizer, promptIds);
    const ids: number[] = [];
    const abort = new AbortController();
    this.running = abort;
    const t0 = performance.now();
    let out: number[] = ids;
    try {
      out = await generate(model, promptIds, {
        maxNewTokens,
        temperature: opts.temperature,
        topK: opts.topK,
        topP: opts.topP,
        seed: opts.seed,
        stopIds,
        signal: abort.signal,
        onToken: (id) => {
          ids.push(id);
          onToken?.(id, text(ids));
        },
      });
    } catch (err) {
      if (!abort.signal.aborted) throw err;
    } finally {
      this.running = null;
    }
    return { ids: out, promptIds, text: text(out), cancelled: abort.signal.aborted, ms: performance.now() - t0 };
  }

  cancel(): void {
    this.running?.abort();
  }
}

/**
 * Text of the continuation: decode prompt + new ids and drop the prompt's
 * text, so a leading space of the first new token survives (SentencePiece
 * decoders strip it at the start of a sequence).
 */
export function continuation(tok: Tokenizer, promptIds: number[]): (ids: number[]) => string {
  const opts = { skipSpecialTokens: true };
  const prefix = tok.decode(promptIds, opts);
  return (ids) => {
    const full = tok.decode([...promptIds, ...ids], opts);
    return full.startsWith(prefix) ? full.slice(prefix.length) : tok.decode(ids, opts);
  };
}
