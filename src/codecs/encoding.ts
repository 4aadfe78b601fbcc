/**
 * What a remote applies to an event's files before they leave the host, as
 * configuration and as the manifest records it. Pure: no I/O, no library.
 *
 * The chain is applied in order when writing (compress, then encrypt: data
 * compresses only before encryption) and undone in reverse when reading. The
 * object name carries one suffix per step, so that a person with only the
 * bucket knows what to run: dump-<ts>.rdb.zst.age is `age -d | zstd -d`.
 *
 * Checked here, at config load, without loading the age library: a cron run
 * that has nothing to upload must not pay for it (src/codecs/age.ts loads it).
 */

export type Compression = { algorithm: 'none' } | { algorithm: 'gzip' | 'zstd'; level: number };

export interface Encryption {
  type: 'age';
  /** age X25519 recipients (public keys, `age1…`), as given; at least one. */
  recipients: string[];
  /** Where they came from, for messages: the config key or the recipients file. */
  source: string;
}

/** One step of the chain, as the manifest names it. */
export type EncodingStep = 'gzip' | 'zstd' | 'age';

/** Every step this version reads; a manifest naming another is not restored (src/targets/manifest.ts). */
export const KNOWN_ENCODINGS: readonly EncodingStep[] = ['gzip', 'zstd', 'age'];

/** The object name suffix of each step (what `zstd`, `gzip` and `age` themselves use). */
export const ENCODING_SUFFIX: Record<EncodingStep, string> = { gzip: '.gz', zstd: '.zst', age: '.age' };

/** Levels: gzip 1-9 (zlib); zstd 1-19 (20-22 are "ultra" levels that need far more memory to decompress). */
export const LEVELS = { gzip: { min: 1, max: 9, default: 6 }, zstd: { min: 1, max: 19, default: 3 } } as const;

export const COMPRESSION_ERROR = 'must be none, gzip or zstd, with an optional level such as "zstd:3" (gzip 1-9, zstd 1-19)';

/** "none", "gzip", "zstd", "zstd:3", "gzip:9" -> Compression; an error message naming what is wrong otherwise. */
export function parseCompression(text: string): Compression | { error: string } {
  const m = /^(none|gzip|zstd)(?::(-?\d+))?$/.exec(text.trim());
  if (!m) return { error: `"${text}" ${COMPRESSION_ERROR}` };
  const algorithm = m[1] as 'none' | 'gzip' | 'zstd';
  if (algorithm === 'none') return m[2] === undefined ? { algorithm } : { error: `"${text}": none takes no level` };
  const range = LEVELS[algorithm];
  if (m[2] === undefined) return { algorithm, level: range.default };
  const level = Number(m[2]);
  if (level < range.min || level > range.max) return { error: `"${text}": ${level} is not a ${algorithm} level (use ${range.min}-${range.max})` };
  return { algorithm, level };
}

export function describeCompression(c: Compression): string {
  return c.algorithm === 'none' ? 'none' : `${c.algorithm}:${c.level}`;
}

/** The chain a remote applies, in order. */
export function encodingChain(compression: Compression, encryption: Encryption | undefined): EncodingStep[] {
  const chain: EncodingStep[] = [];
  if (compression.algorithm !== 'none') chain.push(compression.algorithm);
  if (encryption) chain.push('age');
  return chain;
}

/** The stored object's name: the event file's name plus one suffix per step. */
export function encodedName(name: string, chain: readonly string[]): string {
  return name + chain.map((step) => ENCODING_SUFFIX[step as EncodingStep] ?? `.${step}`).join('');
}

/** The chain a name's suffixes say (".zst.age" -> ["zstd", "age"]); unknown suffixes are kept as they are. */
export function encodingOfName(suffixes: string): string[] {
  const bySuffix = new Map(Object.entries(ENCODING_SUFFIX).map(([step, suffix]) => [suffix.slice(1), step]));
  return suffixes.split('.').filter((s) => s !== '').map((s) => bySuffix.get(s) ?? s);
}

export function isEncrypted(chain: readonly string[]): boolean {
  return chain.includes('age');
}

// --- age recipients -----------------------------------------------------------
// An age X25519 recipient is Bech32 (BIP 173) with the human-readable part
// "age" and a 32-byte public key. Checking the checksum here catches a
// truncated or mistyped key at config load, where the error can name the key.

const BECH32_CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GENERATORS = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values: number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GENERATORS[i]!;
  }
  return chk >>> 0;
}

/** The payload bytes of a Bech32 string with this human-readable part, or undefined when it is not one. */
export function bech32Payload(text: string, hrp: string): Uint8Array | undefined {
  if (text !== text.toLowerCase() || !text.startsWith(`${hrp}1`)) return undefined;
  const data: number[] = [];
  for (const ch of text.slice(hrp.length + 1)) {
    const v = BECH32_CHARSET.indexOf(ch);
    if (v < 0) return undefined;
    data.push(v);
  }
  if (data.length < 6) return undefined;
  const expanded = [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31)];
  if (polymod([...expanded, ...data]) !== 1) return undefined;
  // 5-bit groups -> bytes; the padding must be zero bits, fewer than 5.
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const v of data.slice(0, -6)) {
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >>> bits) & 0xff);
    }
  }
  if (bits >= 5 || (acc & ((1 << bits) - 1)) !== 0) return undefined;
  return Uint8Array.from(out);
}

/** Why `text` is not an age X25519 recipient, or undefined when it is one. Never echoes more than a short prefix. */
export function recipientProblem(text: string): string | undefined {
  const shown = text.length > 12 ? `${text.slice(0, 12)}…` : text;
  if (text.startsWith('AGE-SECRET-KEY-')) return 'is an age identity (a secret key), not a recipient: put only public keys ("age1…") on this host';
  if (text.startsWith('ssh-')) return `"${shown}" is an SSH key: use an age X25519 recipient ("age1…", from age-keygen -y)`;
  if (!text.startsWith('age1')) return `"${shown}" is not an age recipient: expected "age1…" (age-keygen prints it as "Public key")`;
  const payload = bech32Payload(text, 'age');
  if (!payload) return `"${shown}" is not a valid age recipient (bad characters or checksum: mistyped or truncated?)`;
  if (payload.length !== 32) return `"${shown}" is not an age X25519 recipient (${payload.length}-byte key; plugin and post-quantum recipients are not supported)`;
  return undefined;
}

/** The recipients in a recipients file: one per line; "#" comments and blank lines ignored (age -R's format). */
export function parseRecipientsFile(text: string): Array<{ line: number; recipient: string }> {
  const out: Array<{ line: number; recipient: string }> = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line !== '' && !line.startsWith('#')) out.push({ line: i + 1, recipient: line });
  });
  return out;
}
