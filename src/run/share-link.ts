/**
 * The shareable link of an experiment: the config (only the keys that differ
 * from their defaults, plus the required ones) as JSON, raw-deflated
 * (fflate), base64url, behind a format version: `#x=2.<data>`. Format 2's
 * data starts with the CRC-32 of the JSON (4 bytes, big-endian), so a link
 * damaged in copying is refused instead of decoding into another experiment;
 * format 1 links (no checksum) still open.
 *
 * Decoding validates with the same schema as a YAML file (validateConfig), so
 * a link can hold nothing a config file could not. A link is data only: it
 * never names code to run, and every name in it that could point at this
 * computer (a local model folder, a dataset file) is reported as something
 * the user must pick again rather than read. Nothing is downloaded because a
 * link was opened; the user still presses Load / Train.
 */
import { deflateSync, inflateSync, strFromU8, strToU8 } from 'fflate';
import { allOptions, validateConfig, ConfigValidationError, type ExperimentConfig, type OptionSpec } from '../config/schema';
import { PeftStudioError } from '../errors';
import { normalizeEndpoint } from '../hub/hub-source';
import { validateRepoId } from '../hub/source';

export const SHARE_VERSION = 2;
/** The fragment key: `#x=<version>.<data>`. The fragment never reaches a server. */
export const SHARE_PARAM = 'x';
/** Longest link data accepted (browsers and chat apps cut URLs much longer than this). */
const MAX_ENCODED = 16_000;
/** Longest JSON accepted after inflating (a deflate bomb stops here). */
const MAX_JSON = 256 * 1024;

/** A link that cannot be opened: damaged, from a newer studio, or not a valid config. */
export class ShareLinkError extends PeftStudioError {
  override name = 'ShareLinkError';
  constructor(
    message: string,
    readonly kind: 'corrupt' | 'newer' | 'invalid',
  ) {
    super(message);
  }
}

function normalisedDefault(spec: OptionSpec): unknown {
  if (spec.type === 'string-list' && typeof spec.default === 'string') return spec.default.split(',').map((s) => s.trim());
  return spec.default;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The keys of a config worth sending: required ones and those not at their default. */
export function compactConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const spec of allOptions()) {
    if (!(spec.key in config) || config[spec.key] === undefined) continue;
    if (spec.default === undefined || !same(config[spec.key], normalisedDefault(spec))) out[spec.key] = config[spec.key];
  }
  return out;
}

function toBase64Url(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64Url(text: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error('characters outside base64url');
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, as zip and PNG): every 1-, 2- and 3-byte change and every burst up to 32 bits is caught. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** `<version>.<data>` for a validated config: data = base64url(CRC-32 of the JSON ‖ deflate(JSON)). */
export function encodeShareData(config: Record<string, unknown>): string {
  const json = strToU8(JSON.stringify(compactConfig(config)));
  const body = deflateSync(json, { level: 9 });
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, crc32(json));
  out.set(body, 4);
  return `${SHARE_VERSION}.${toBase64Url(out)}`;
}

/** Folder options a link may set only as relative paths inside the working folder. */
const RELATIVE_DIRS = ['output_dir', 'dataset_dir', 'export_dir'] as const;

/** Absolute (POSIX, Windows, UNC, home) or climbing out with '..'. */
function escapesWorkingFolder(p: string): boolean {
  return /^([/\\~]|[A-Za-z]:)/.test(p) || p.split(/[/\\]/).includes('..');
}

/** The full link: `base` (the studio's address without a fragment) + `#x=...`. */
export function shareUrl(base: string, config: Record<string, unknown>): string {
  return `${base.replace(/#.*$/, '')}#${SHARE_PARAM}=${encodeShareData(config)}`;
}

/** The link data in a location hash, or null when the hash carries none. */
export function shareDataFromHash(hash: string): string | null {
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  return params.get(SHARE_PARAM);
}

export interface OpenedLink {
  config: ExperimentConfig;
  /** Names in the link that refer to files on the sender's computer: the user must pick them here. */
  localFiles: { key: string; value: string }[];
}

const CORRUPT =
  'This link is damaged (it was probably cut off or edited when it was copied). Ask for the link again, or copy the whole address including everything after #.';

/** Decode and validate link data; every failure is a ShareLinkError with a sentence for the user. */
export function decodeShareData(data: string): OpenedLink {
  const dot = data.indexOf('.');
  const version = dot > 0 ? data.slice(0, dot) : '';
  if (!/^\d+$/.test(version)) throw new ShareLinkError(`${CORRUPT} (no format version)`, 'corrupt');
  if (Number(version) > SHARE_VERSION) {
    throw new ShareLinkError(
      `This link was made by a newer PEFT Studio (link format ${version}; this studio reads format ${SHARE_VERSION} and older). Open it in the newer studio, or ask for the experiment's YAML config instead.`,
      'newer',
    );
  }
  if (Number(version) < 1) throw new ShareLinkError(`${CORRUPT} (format ${version} does not exist)`, 'corrupt');
  const payload = data.slice(dot + 1);
  if (payload.length > MAX_ENCODED)
    throw new ShareLinkError(
      `This link is ${payload.length} characters long, more than the ${MAX_ENCODED} a share link may have. Share the YAML config instead.`,
      'corrupt',
    );
  let raw: unknown;
  try {
    let packed = fromBase64Url(payload);
    let expected: number | null = null;
    if (Number(version) >= 2) {
      if (packed.length < 5) throw new Error('too short');
      expected = new DataView(packed.buffer, packed.byteOffset).getUint32(0);
      packed = packed.subarray(4);
    }
    const bytes = inflateSync(packed);
    if (bytes.byteLength > MAX_JSON) throw new Error('too large');
    if (expected !== null && crc32(bytes) !== expected) throw new Error('checksum mismatch');
    raw = JSON.parse(strFromU8(bytes));
  } catch (err) {
    throw new ShareLinkError(`${CORRUPT} (${(err as Error).message})`, 'corrupt');
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ShareLinkError(`${CORRUPT} (not a config mapping)`, 'corrupt');
  let config: ExperimentConfig;
  try {
    config = validateConfig(raw as Record<string, unknown>, 'share link');
  } catch (err) {
    const problems = err instanceof ConfigValidationError ? err.problems : [(err as Error).message];
    throw new ShareLinkError(`This link's experiment is not a valid config for this studio:\n${problems.map((p) => `  - ${p}`).join('\n')}`, 'invalid');
  }
  for (const key of ['model_name_or_path', 'adapter_name_or_path'] as const) {
    const v = config[key];
    if (typeof v !== 'string') continue;
    try {
      validateRepoId(v);
    } catch {
      throw new ShareLinkError(
        `${key} in this link is '${v}', which is not a Hub repo id. A link can only name models on the Hub; a local folder must be picked on this computer.`,
        'invalid',
      );
    }
  }
  if (!/^https?:\/\/[^\s]+$/.test(String(config.endpoint))) {
    throw new ShareLinkError(`endpoint in this link is '${config.endpoint}', not an http(s) address.`, 'invalid');
  }
  try {
    normalizeEndpoint(String(config.endpoint));
  } catch (err) {
    throw new ShareLinkError(`endpoint in this link is refused: ${(err as Error).message}`, 'invalid');
  }
  for (const key of RELATIVE_DIRS) {
    const v = config[key];
    if (typeof v === 'string' && escapesWorkingFolder(v)) {
      throw new ShareLinkError(
        `${key} in this link is '${v}': a link may name only a folder inside the working folder (a relative path without '..'), never a place elsewhere on this computer.`,
        'invalid',
      );
    }
  }
  const localFiles: OpenedLink['localFiles'] = [];
  for (const key of ['dataset', 'eval_dataset', 'dataset_info'] as const) {
    const v = config[key];
    if (typeof v === 'string' && isLocalDataFile(v)) localFiles.push({ key, value: v });
  }
  return { config, localFiles };
}

/** A dataset value that names a file (by extension or path) rather than a registry entry or Hub repo. */
export function isLocalDataFile(value: string): boolean {
  return /\.(jsonl|json|csv|tsv|parquet)$/i.test(value) || value.includes('\\') || value.startsWith('.') || value.startsWith('/');
}
