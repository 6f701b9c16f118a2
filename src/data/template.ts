/**
 * Prompt templates: how one (system, user, assistant) exchange becomes the
 * token ids of its source (everything the model is given) and its target
 * (what it learns to produce), as LLaMA-Factory's `Template.encode_oneturn`
 * does. METHODS.md §21.
 *
 * Plain templates are lists of slots, LLaMA-Factory's formatter slots: a text
 * with a `{{content}}` placeholder, or a special token. Each text slot is
 * tokenized on its own, without special tokens, and the ids concatenated
 * (LLaMA-Factory's `_convert_elements_to_ids`); empty texts are skipped.
 *
 * Built-in plain templates, copied slot for slot from LLaMA-Factory's
 * `data/template.py`:
 *
 *   default  system    "System: {{content}}" EOS "\n"
 *            user      "Human: {{content}}" EOS "\nAssistant:"
 *            assistant "{{content}}" EOS "\n"
 *   alpaca   system    "{{content}}"   (default system: "Below is an instruction that describes a task. ...\n\n")
 *            user      "### Instruction:\n{{content}}\n\n### Response:\n"
 *            assistant "{{content}}" EOS "\n\n"
 *   empty    system/user/assistant "{{content}}"   (no EOS: the model never learns to stop)
 *
 * One difference, by default: LLaMA-Factory's plain templates have an empty
 * prefix, so it feeds no BOS; here the source starts with the tokenizer's own
 * special-token prefix (what `encode(text)` puts in front: BOS for LLaMA
 * tokenizers), as the model saw in pre-training and as prompts get at
 * generation time. The config key `template_bos` (default true) chooses:
 * `template_bos: false` passes `addBos: false`, token-exact parity with
 * LLaMA-Factory's default / alpaca / empty templates.
 *
 * 'chat' renders with the tokenizer's chat template (Jinja, via
 * transformers.js): source = the conversation up to the generation prompt,
 * target = the rest of the full rendering. The template writes its own BOS if
 * it has one. An EOS is appended to the target when the rendered assistant
 * turn contains none (most templates end the turn with EOS or an
 * end-of-turn token that is the EOS of instruct tokenizers).
 */
import { ConfigError } from '../errors';
import type { Tokenizer } from '../model/tokenizer';
import { registerTemplateName } from '../config/schema';

export type Slot = string | { token: 'bos' | 'eos' };

export interface PromptTemplate {
  name: string;
  system: readonly Slot[];
  user: readonly Slot[];
  assistant: readonly Slot[];
  /** Used when an example has no system text ('' for none). */
  defaultSystem: string;
}

const EOS = { token: 'eos' } as const;

const templates = new Map<string, PromptTemplate>();

export function registerTemplate(t: PromptTemplate): void {
  templates.set(t.name, t);
  registerTemplateName(t.name);
}

registerTemplate({
  name: 'default',
  system: ['System: {{content}}', EOS, '\n'],
  user: ['Human: {{content}}', EOS, '\nAssistant:'],
  assistant: ['{{content}}', EOS, '\n'],
  defaultSystem: '',
});
registerTemplate({
  name: 'alpaca',
  system: ['{{content}}'],
  user: ['### Instruction:\n{{content}}\n\n### Response:\n'],
  assistant: ['{{content}}', EOS, '\n\n'],
  defaultSystem: 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n',
});
registerTemplate({
  name: 'empty',
  system: ['{{content}}'],
  user: ['{{content}}'],
  assistant: ['{{content}}'],
  defaultSystem: '',
});

/** Names accepted by encodeTurn: the plain templates and 'chat'. */
export function templateNames(): string[] {
  return [...templates.keys(), 'chat'];
}

export interface Turn {
  prompt: string;
  response: string;
  system?: string;
}

export interface TurnIds {
  source: number[];
  target: number[];
}

/** 'chat' when the tokenizer has a chat template, else 'default' (LLaMA-Factory would use 'empty'). */
export function resolveTemplateName(tok: Tokenizer, template: string | null | undefined): string {
  return template ?? (tok.chatTemplate ? 'chat' : 'default');
}

const prefixCache = new WeakMap<Tokenizer, number[]>();

/** The ids the tokenizer's post-processor puts before a text (BOS for LLaMA; often none). */
export function specialPrefix(tok: Tokenizer): number[] {
  let p = prefixCache.get(tok);
  if (!p) {
    const plain = tok.encode('a', { addSpecialTokens: false });
    const full = tok.encode('a', { addSpecialTokens: true });
    p = [];
    for (let i = 0; i + plain.length <= full.length; i++) {
      if (plain.every((id, j) => full[i + j] === id)) {
        p = full.slice(0, i);
        break;
      }
    }
    prefixCache.set(tok, p);
  }
  return p;
}

function requireEos(tok: Tokenizer, template: string): number {
  if (tok.eosTokenId === null) {
    throw new ConfigError(
      `Template '${template}' needs an EOS token, but the tokenizer has none (no eos_token in tokenizer_config.json). Use a tokenizer with an eos_token.`,
    );
  }
  return tok.eosTokenId;
}

function slotsToIds(tok: Tokenizer, slots: readonly Slot[], content: string, template: string): number[] {
  const ids: number[] = [];
  for (const s of slots) {
    if (typeof s === 'string') {
      const text = s.split('{{content}}').join(content);
      if (text.length) ids.push(...tok.encode(text, { addSpecialTokens: false }));
    } else if (s.token === 'eos') {
      ids.push(requireEos(tok, template));
    } else if (tok.bosTokenId !== null) {
      ids.push(tok.bosTokenId);
    }
  }
  return ids;
}

/**
 * The source and target ids of one exchange (untruncated). `addBos` (default
 * true) prepends the tokenizer's special prefix to plain templates; it has no
 * effect on 'chat'.
 */
export function encodeTurn(tok: Tokenizer, turn: Turn, template: string | null | undefined, addBos = true): TurnIds {
  const name = resolveTemplateName(tok, template);
  if (name === 'chat') return encodeChatTurn(tok, turn);
  const t = templates.get(name);
  if (!t) throw new ConfigError(`Unknown template '${name}'. Use one of: ${templateNames().join(', ')}.`);
  const system = turn.system || t.defaultSystem;
  const source = [
    ...(addBos ? specialPrefix(tok) : []),
    ...(system ? slotsToIds(tok, t.system, system, name) : []),
    ...slotsToIds(tok, t.user, turn.prompt, name),
  ];
  return { source, target: slotsToIds(tok, t.assistant, turn.response, name) };
}

function encodeChatTurn(tok: Tokenizer, turn: Turn): TurnIds {
  if (!tok.chatTemplate) {
    throw new ConfigError(
      "template: 'chat' needs a tokenizer with a chat template, and this model has none. Use template: default (or alpaca) for a base model.",
    );
  }
  const messages = [...(turn.system ? [{ role: 'system', content: turn.system }] : []), { role: 'user', content: turn.prompt }];
  let promptText: string;
  let fullText: string;
  try {
    promptText = tok.applyChatTemplate(messages, { addGenerationPrompt: true, tokenize: false });
    fullText = tok.applyChatTemplate([...messages, { role: 'assistant', content: turn.response }], { tokenize: false });
  } catch (e) {
    throw new ConfigError(
      `The model's chat template failed to render an example (${(e as Error).message}).${turn.system ? ' It may not accept a system message: remove the system field.' : ''}`,
    );
  }
  if (!fullText.startsWith(promptText)) {
    throw new ConfigError(
      "The model's chat template renders the prompt differently with and without the answer, so prompt and answer cannot be told apart. Use template: default instead.",
    );
  }
  const source = tok.encode(promptText, { addSpecialTokens: false });
  const target = tok.encode(fullText.slice(promptText.length), { addSpecialTokens: false });
  if (tok.eosTokenId !== null && !target.includes(tok.eosTokenId)) target.push(tok.eosTokenId);
  return { source, target };
}
