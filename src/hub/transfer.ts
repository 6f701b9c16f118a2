/**
 * One file's bytes over HTTP, chunk by chunk and in order, from a first byte
 * to a last, surviving a flaky connection. HubSource builds its whole-file
 * downloads, its ranged reads and its streamed, cached weight reads on it.
 *
 * - A request asks for `Range: bytes=pos-` (or `pos-(to-1)`) whenever the
 *   bytes wanted do not start at 0 or stop before the end. A server that
 *   answers 200 (it ignores Range) still works in bounded memory: the body is
 *   skipped up to the first byte wanted and cancelled after the last.
 * - Network errors, HTTP 5xx / 429, stalls (no byte for `stallTimeoutMs`
 *   while a read waits; the caller taking its time between reads is not a
 *   stall) and bodies cut off before the announced size are retried with
 *   exponential backoff, resuming at the next byte wanted (If-Range with the
 *   ETag, so a file that changed meanwhile is not spliced). The retry count
 *   starts again once a connection has delivered RETRY_RESET_BYTES: a
 *   multi-gigabyte download may meet more cuts than `retries`, each after
 *   real progress, while a connection that keeps failing still gives up.
 * - A body is never passed on when it is an HTML page standing in for the file
 *   (a proxy's login or error page) or longer than the size the server announced.
 * - The body is read ahead of the caller (READ_AHEAD_BYTES at most, never past
 *   the last byte wanted), one read always pending: a fetch body stream that
 *   errors (a dropped connection) discards the bytes it had received but not
 *   yet handed to a read, in Chromium and in Node's undici alike, so bytes left
 *   in the stream while the caller was busy (a cache write, a GPU upload) were
 *   lost to the resume. Bytes read ahead are passed on before the error.
 */
import { HubError } from '../errors';
import { fileTooLarge } from './source';

/** What HttpBody needs from its HubSource: the request (with the token), its error wording and its retry settings. */
export interface TransferHost {
  readonly repo: string;
  readonly stallTimeoutMs: number;
  readonly retries: number;
  readonly retryDelayMs: number;
  /** The source's id, for FileTooLargeError. */
  readonly id: string;
  request(url: string, path: string, method: 'GET' | 'HEAD', headers: Record<string, string>, signal?: AbortSignal): Promise<Response>;
  httpError(res: Response, url: string, path: string): HubError;
  htmlError(url: string, path: string): HubError;
}

export interface BodyOptions {
  /** The first byte wanted (default 0). */
  from?: number;
  /** One past the last byte wanted (default: the end of the file). */
  to?: number;
  /**
   * The validator (ETag) of bytes before `from` that the caller already holds
   * (an interrupted download): sent as If-Range, so that a file that changed
   * since is answered whole. HttpBody then starts at 0 and says so (`restarted`).
   */
  ifRange?: string | null;
  /** Refuse a file larger than this (FileTooLargeError), from the announced size or as the bytes pass it. */
  maxBytes?: number;
  /**
   * Called when a reconnect finds the file changed on the server (another
   * ETag or size) after bytes were passed on; the body then starts again at 0.
   * Without it that is a HubError: bytes of two versions must not be mixed.
   */
  onRestart?: () => void | Promise<void>;
}

/** HTTP statuses worth another try: the server or a proxy is overloaded or restarting. */
const TRANSIENT = new Set([408, 429, 500, 502, 503, 504]);

/** One failed attempt that may be retried; `final` is the error to throw when no retry is left. */
class Attempt extends Error {
  constructor(
    readonly final: Error,
    readonly retryAfterMs = 0,
  ) {
    super(final.message);
  }
}

/** The most bytes read from a response ahead of the caller (see the file's comment). */
export const READ_AHEAD_BYTES = 4 << 20;

/** One response body read ahead: the chunks read and not yet taken, and how its reading ended. */
interface ReadAhead {
  reader: ReadableStreamDefaultReader<Uint8Array>;
  chunks: Uint8Array[];
  bytes: number;
  /** The file offset one past the last byte read (bodyPos + bytes). */
  end: number;
  reading: boolean;
  done: boolean;
  error: unknown;
  /** Wakes a next() that waits for a chunk, the end or the error. */
  wake: (() => void) | null;
}

/** Bytes one connection must deliver after a failure before the retry count starts again. */
export const RETRY_RESET_BYTES = 16 << 20;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether bytes of a file that is not a web page are an HTML document (a login or error page served in its place). */
export function looksLikeHtml(path: string, head: Uint8Array, contentType: string | null): boolean {
  if (/\.html?$/i.test(path)) return false;
  if (contentType && /^\s*text\/html\b/i.test(contentType)) return true;
  const text = new TextDecoder().decode(head.subarray(0, 256)).trimStart().toLowerCase();
  return text.startsWith('<!doctype html') || text.startsWith('<html');
}

const safeSize = (v: string | null): number | null => {
  const n = Number(v ?? NaN);
  return v !== null && v !== '' && Number.isSafeInteger(n) && n >= 0 ? n : null;
};

export class HttpBody {
  /** The file's whole size once the server announced it (0: not known). */
  size = 0;
  /** The file's ETag from the first answer, the validator of every resumed request. */
  etag: string | null = null;
  /** The file offset of the next byte next() returns. */
  pos: number;
  /** True when the first answer said the caller's held bytes are stale (If-Range failed): the bytes start at 0, not at `from`. */
  restarted = false;

  private readonly to: number;
  private readonly maxBytes: number;
  private attempt = 0;
  /** Bytes received since the last failure. */
  private sinceFailure = 0;
  private first = true;
  private ended = false;
  /** Whether a reconnect may ask for a range: false once the server showed it cannot serve ours. */
  private ranges = true;
  private res: Response | null = null;
  private reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  /** The current response's body, read ahead of the caller. */
  private ahead: ReadAhead | null = null;
  /** A body that came without a stream (res.body null), read whole. */
  private whole: Uint8Array | null = null;
  /** The file offset of the next byte the current response delivers. */
  private bodyPos = 0;
  private contentType: string | null = null;
  private ctrl: AbortController | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stalled = false;

  constructor(
    private readonly host: TransferHost,
    readonly url: string,
    readonly path: string,
    private readonly opts: BodyOptions = {},
  ) {
    this.pos = opts.from ?? 0;
    this.to = opts.to ?? Infinity;
    this.maxBytes = opts.maxBytes ?? Infinity;
  }

  /** Makes the first request (with retries), so `size`, `etag`, `pos` and `restarted` are known before the first byte is read. */
  async open(): Promise<void> {
    await this.retrying(async () => {
      if (!this.res && !this.ended) await this.connect();
    });
  }

  /** The next bytes at `pos` (never empty), or null after the last byte wanted. */
  async next(): Promise<Uint8Array | null> {
    let out: Uint8Array | null = null;
    await this.retrying(async () => {
      out = null;
      for (;;) {
        if (this.ended || this.pos >= this.to) {
          this.close();
          return;
        }
        if (!this.res) await this.connect();
        if (this.ended) continue;
        const chunk = await this.read();
        if (chunk) {
          out = chunk;
          return;
        }
        this.finishBody();
      }
    });
    return out;
  }

  /** Drops the connection (the rest of the body is not downloaded). */
  close(): void {
    this.disarm();
    this.reader?.cancel().catch(() => {});
    if (!this.reader) this.res?.body?.cancel().catch(() => {});
    this.reader = null;
    this.ahead = null;
    this.res = null;
    this.whole = null;
  }

  private async retrying(step: () => Promise<void>): Promise<void> {
    for (;;) {
      try {
        return await step();
      } catch (e) {
        this.close();
        if (!(e instanceof Attempt)) throw e;
        if (this.sinceFailure >= RETRY_RESET_BYTES) this.attempt = 0;
        this.sinceFailure = 0;
        if (this.attempt >= this.host.retries) throw e.final;
        await sleep(Math.max(e.retryAfterMs, this.host.retryDelayMs * 2 ** this.attempt));
        this.attempt++;
      }
    }
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.stalled = true;
      this.ctrl?.abort();
    }, this.host.stallTimeoutMs);
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private stallError(): HubError {
    return new HubError(
      `Download of ${this.path} from ${this.host.repo} stalled: no data for ${this.host.stallTimeoutMs / 1000} s (${this.pos} bytes received) at ${this.url}. ` +
        'Check the connection and try again (the stall timeout is HF_HUB_DOWNLOAD_TIMEOUT, in seconds, in the CLI).',
      this.url,
    );
  }

  private async connect(): Promise<void> {
    const first = this.first;
    const want = this.pos;
    const bounded = Number.isFinite(this.to);
    const headers: Record<string, string> = {};
    if ((want > 0 || bounded) && this.ranges) {
      headers.Range = `bytes=${want}-${bounded ? this.to - 1 : ''}`;
      const validator = first ? this.opts.ifRange : this.etag;
      if (validator) headers['If-Range'] = validator;
    }
    this.ctrl = new AbortController();
    this.stalled = false;
    this.arm();
    let res: Response;
    try {
      res = await this.host.request(this.url, this.path, 'GET', headers, this.ctrl.signal);
    } catch (e) {
      throw new Attempt(this.stalled ? this.stallError() : (e as Error));
    } finally {
      this.disarm();
    }
    const drop = () => res.body?.cancel().catch(() => {});
    if (res.status === 416) {
      // Asked from past the end (a ranged read beyond the file): no bytes, and the size.
      const m = /^bytes \*\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
      if (m && Number(m[1]) <= want) {
        drop();
        this.size = Number(m[1]);
        this.first = false;
        this.ended = true;
        return;
      }
    }
    if (!res.ok) {
      drop();
      const err = this.host.httpError(res, this.url, this.path);
      if (!TRANSIENT.has(res.status)) throw err;
      const after = Number(res.headers.get('retry-after'));
      throw new Attempt(err, Number.isFinite(after) && after > 0 ? Math.min(after, 60) * 1000 : 0);
    }
    const encoding = res.headers.get('content-encoding');
    const identity = !encoding || encoding === 'identity';
    const etag = res.headers.get('etag');
    if (res.status === 206) {
      // Content-Range: bytes a-b/total. Anything but the byte wanted: ask again without a range.
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== want) {
        drop();
        this.ranges = false;
        throw new Attempt(
          new HubError(`The Hub answered a ranged read of ${this.path} with the wrong range (${res.headers.get('content-range')}) at ${this.url}.`, this.url),
        );
      }
      if (m[3] !== '*') this.size = Number(m[3]);
      this.bodyPos = want;
      if (first) this.etag = etag;
    } else {
      // The whole file: the server ignored Range, or the file changed (If-Range).
      const whole = identity ? safeSize(res.headers.get('content-length')) : null;
      const size = whole ?? safeSize(res.headers.get('x-linked-size')) ?? 0;
      if (want > 0) {
        const held = first ? (this.opts.ifRange ?? null) : this.etag;
        const changed = (!!held && etag !== held) || (!first && this.size > 0 && size > 0 && size !== this.size);
        if (changed && first) {
          this.restarted = true;
          this.pos = 0;
        } else if (changed) {
          if (!this.opts.onRestart) {
            drop();
            throw new HubError(
              `${this.path} in ${this.host.repo} changed on the server while it was being read (${this.url}); the bytes read so far were not kept. Load it again.`,
              this.url,
            );
          }
          await this.opts.onRestart();
          this.pos = 0;
        }
      }
      this.bodyPos = 0;
      this.size = size;
      this.etag = etag;
      this.ranges = (res.headers.get('accept-ranges') ?? '').toLowerCase() === 'bytes' && identity;
    }
    this.first = false;
    // Refused before a byte of the body is read; a compressed body is cut off as it decodes past the cap.
    if (this.size > this.maxBytes) {
      drop();
      throw fileTooLarge(this.host.id, this.path, this.size, this.maxBytes);
    }
    this.contentType = res.headers.get('content-type');
    if (this.contentType && /^\s*text\/html\b/i.test(this.contentType) && !/\.html?$/i.test(this.path)) {
      drop();
      throw this.host.htmlError(this.url, this.path);
    }
    this.res = res;
    this.reader = res.body ? res.body.getReader() : null;
    if (!res.body) this.whole = new Uint8Array(await res.arrayBuffer());
    if (this.reader) {
      this.ahead = { reader: this.reader, chunks: [], bytes: 0, end: this.bodyPos, reading: false, done: false, error: null, wake: null };
      this.pump(this.ahead);
    }
  }

  /** Keeps one read pending on the body while fewer than READ_AHEAD_BYTES wait and the bytes wanted (or allowed) go on. */
  private pump(a: ReadAhead): void {
    if (a.reading || a.done || a.error !== null || a.bytes >= READ_AHEAD_BYTES || a.end >= Math.min(this.to, this.maxBytes + 1)) return;
    if (this.ahead !== a) return; // closed, or another connection since
    a.reading = true;
    a.reader.read().then(
      (r) => {
        a.reading = false;
        if (r.done) a.done = true;
        else if (r.value.byteLength > 0) {
          a.chunks.push(r.value);
          a.bytes += r.value.byteLength;
          a.end += r.value.byteLength;
        }
        a.wake?.();
        this.pump(a);
      },
      (e: unknown) => {
        a.reading = false;
        a.error = e ?? new Error('the body stream failed');
        a.wake?.();
      },
    );
  }

  /** The next chunk read ahead on the current body: waits for one (the stall timer armed meanwhile); null at the body's end. */
  private async take(a: ReadAhead): Promise<Uint8Array | null> {
    for (;;) {
      const c = a.chunks.shift();
      if (c) {
        a.bytes -= c.byteLength;
        this.pump(a);
        return c;
      }
      // What was read is passed on first; then the error, or the end.
      if (a.error !== null) throw a.error;
      if (a.done) return null;
      this.pump(a);
      if (!a.reading) return null; // every byte wanted was read: the rest of the body is not
      this.arm();
      try {
        await new Promise<void>((r) => (a.wake = r));
      } finally {
        a.wake = null;
        this.disarm();
      }
    }
  }

  /** The next bytes of the current response at `pos` (skipping what comes before it, cut at `to`), or null at its end. */
  private async read(): Promise<Uint8Array | null> {
    for (;;) {
      let value: Uint8Array;
      if (this.ahead) {
        let r: Uint8Array | null;
        try {
          r = await this.take(this.ahead);
        } catch (e) {
          throw new Attempt(
            this.stalled
              ? this.stallError()
              : new HubError(
                  `Download of ${this.path} from ${this.host.repo} was interrupted (${(e as Error).message}) at ${this.url} after ${this.pos} bytes. Check the connection and try again.`,
                  this.url,
                ),
          );
        }
        if (!r) return null;
        value = r;
      } else if (this.whole) {
        value = this.whole;
        this.whole = null;
      } else {
        return null;
      }
      if (value.byteLength === 0) continue;
      const at = this.bodyPos;
      this.bodyPos += value.byteLength;
      this.sinceFailure += value.byteLength;
      if (at === 0 && looksLikeHtml(this.path, value, this.contentType)) throw this.host.htmlError(this.url, this.path);
      if (this.bodyPos > this.maxBytes) throw fileTooLarge(this.host.id, this.path, this.bodyPos, this.maxBytes, true);
      if (this.bodyPos <= this.pos) continue;
      let chunk = this.pos > at ? value.subarray(this.pos - at) : value;
      if (chunk.byteLength > this.to - this.pos) chunk = chunk.subarray(0, this.to - this.pos);
      this.pos += chunk.byteLength;
      return chunk;
    }
  }

  /** The response ended: whole, cut off (retried), or longer than announced (refused). */
  private finishBody(): void {
    this.close();
    if (this.size > 0 && this.bodyPos < this.size) {
      throw new Attempt(
        new HubError(
          `Download of ${this.path} from ${this.host.repo} is truncated: ${this.bodyPos} of ${this.size} bytes (the size the server announced) from ${this.url}. Try again.`,
          this.url,
        ),
      );
    }
    if (this.size > 0 && this.bodyPos > this.size) {
      throw new HubError(
        `Download of ${this.path} from ${this.host.repo} has ${this.bodyPos} bytes where the server announced ${this.size} (Content-Length / X-Linked-Size) at ${this.url}; it was not kept. Try again.`,
        this.url,
      );
    }
    if (this.size === 0) this.size = this.bodyPos;
    this.ended = true;
  }
}
