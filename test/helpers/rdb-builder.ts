/**
 * Builds synthetic RDB files for tests, byte by byte, with every string and
 * length encoding the validator has to read. The CRC here is an independent,
 * bit-at-a-time BigInt implementation, so a bug in src/rdb/crc64.ts cannot hide
 * behind a builder that shares it.
 */

const POLY_REFLECTED = 0x95ac9329ac4bc9b5n;
const MASK64 = 0xffffffffffffffffn;

/** Redis CRC-64 (Jones, reflected, init 0, xorout 0), one bit at a time. Slow: for test data only. */
export function referenceCrc64(data: Uint8Array, crc = 0n): bigint {
  for (const byte of data) {
    crc ^= BigInt(byte);
    for (let i = 0; i < 8; i++) crc = crc & 1n ? (crc >> 1n) ^ POLY_REFLECTED : crc >> 1n;
  }
  return crc & MASK64;
}

/** T[b] = CRC of the single byte b, derived from the bit-at-a-time definition, as two 32-bit halves. */
const TABLE_LO = new Uint32Array(256);
const TABLE_HI = new Uint32Array(256);
for (let b = 0; b < 256; b++) {
  const c = referenceCrc64(Uint8Array.of(b));
  TABLE_LO[b] = Number(c & 0xffffffffn);
  TABLE_HI[b] = Number(c >> 32n);
}

/** The same CRC, byte at a time with a table (fast enough for multi-MiB test files; typed tables, no allocation per byte). */
export function tableCrc64(data: Uint8Array): bigint {
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < data.length; i++) {
    const t = (lo ^ data[i]!) & 0xff;
    lo = (((lo >>> 8) | (hi << 24)) ^ TABLE_LO[t]!) >>> 0;
    hi = ((hi >>> 8) ^ TABLE_HI[t]!) >>> 0;
  }
  return (BigInt(hi) << 32n) | BigInt(lo);
}

export const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export type LengthForm = '6bit' | '14bit' | '32bit' | '64bit';

/** An RDB length in the given form (default: the smallest that fits, as Redis writes it). */
export function encodeLength(n: number, form?: LengthForm): Uint8Array {
  const f = form ?? (n < 64 ? '6bit' : n < 16384 ? '14bit' : n <= 0xffffffff ? '32bit' : '64bit');
  switch (f) {
    case '6bit':
      if (n >= 64) throw new RangeError(`${n} does not fit 6 bits`);
      return Uint8Array.of(n);
    case '14bit':
      if (n >= 16384) throw new RangeError(`${n} does not fit 14 bits`);
      return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
    case '32bit':
      return Uint8Array.of(0x80, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
    case '64bit': {
      const hi = Math.floor(n / 2 ** 32);
      const out = new Uint8Array(9);
      out[0] = 0x81;
      new DataView(out.buffer).setUint32(1, hi);
      new DataView(out.buffer).setUint32(5, n >>> 0);
      return out;
    }
  }
}

/**
 * How a string is written:
 *  - 'auto': like Redis: an integer encoding if the text is a canonical int32, else a plain string;
 *  - a LengthForm: plain string with that length form;
 *  - 'int8' | 'int16' | 'int32': integer encodings (the text must be an integer that fits);
 *  - 'lzf': LZF-compressed (always, even if it does not get smaller).
 */
export type StringForm = 'auto' | LengthForm | 'int8' | 'int16' | 'int32' | 'lzf';

export function encodeString(value: string | number | Uint8Array, form: StringForm = 'auto'): Uint8Array {
  const bytes = typeof value === 'string' ? ascii(value) : typeof value === 'number' ? ascii(String(value)) : value;
  if (form === 'auto') {
    const text = new TextDecoder().decode(bytes);
    if (/^-?(0|[1-9][0-9]{0,9})$/.test(text)) {
      const n = Number(text);
      if (n >= -128 && n <= 127) return encodeString(text, 'int8');
      if (n >= -32768 && n <= 32767) return encodeString(text, 'int16');
      if (n >= -(2 ** 31) && n < 2 ** 31) return encodeString(text, 'int32');
    }
    return concat([encodeLength(bytes.length), bytes]);
  }
  if (form === 'int8' || form === 'int16' || form === 'int32') {
    const n = Number(new TextDecoder().decode(bytes));
    if (!Number.isInteger(n)) throw new RangeError(`not an integer: ${String(value)}`);
    if (form === 'int8') return Uint8Array.of(0xc0, n & 0xff);
    if (form === 'int16') return Uint8Array.of(0xc1, n & 0xff, (n >> 8) & 0xff);
    return Uint8Array.of(0xc2, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff);
  }
  if (form === 'lzf') {
    const compressed = lzfCompress(bytes);
    return concat([Uint8Array.of(0xc3), encodeLength(compressed.length), encodeLength(bytes.length), compressed]);
  }
  return concat([encodeLength(bytes.length, form), bytes]);
}

/**
 * A valid LZF stream for data: greedy, naive search for back references
 * (length 3..264, distance 1..8192), literal runs of up to 32 bytes.
 */
export function lzfCompress(data: Uint8Array): Uint8Array {
  const out: number[] = [];
  let literals: number[] = [];
  const flush = (): void => {
    for (let i = 0; i < literals.length; i += 32) {
      const run = literals.slice(i, i + 32);
      out.push(run.length - 1, ...run);
    }
    literals = [];
  };
  let i = 0;
  while (i < data.length) {
    let bestLen = 0;
    let bestDist = 0;
    for (let d = 1; d <= Math.min(8192, i); d++) {
      let l = 0;
      while (l < 264 && i + l < data.length && data[i + l] === data[i - d + l]) l++;
      if (l > bestLen) {
        bestLen = l;
        bestDist = d;
      }
    }
    if (bestLen >= 3) {
      flush();
      const len = bestLen - 2;
      const off = bestDist - 1;
      if (len < 7) out.push((len << 5) | (off >> 8), off & 0xff);
      else out.push((7 << 5) | (off >> 8), len - 7, off & 0xff);
      i += bestLen;
    } else {
      literals.push(data[i]!);
      i++;
    }
  }
  flush();
  return Uint8Array.from(out);
}

/** An AUX key or value: text/number (written with form 'auto') or exact pre-encoded bytes. */
export type AuxPart = string | number | { form: StringForm; value: string | number | Uint8Array } | { raw: Uint8Array };

function encodeAuxPart(p: AuxPart): Uint8Array {
  if (typeof p === 'string' || typeof p === 'number') return encodeString(p);
  if ('raw' in p) return p.raw;
  return encodeString(p.value, p.form);
}

export function auxField(key: AuxPart, value: AuxPart): Uint8Array {
  return concat([Uint8Array.of(0xfa), encodeAuxPart(key), encodeAuxPart(value)]);
}

/** The AUX fields Redis 7.x writes at the start of every dump. */
export function defaultAux(redisVer = '7.2.4'): Array<[AuxPart, AuxPart]> {
  return [
    ['redis-ver', redisVer],
    ['redis-bits', 64],
    ['ctime', 1735689600],
    ['used-mem', 1_234_567],
    ['aof-base', 0],
  ];
}

/**
 * A small database section: SELECTDB 0, RESIZEDB, one string key whose value
 * contains 0xFF bytes (so nothing can find EOF by scanning), one with an
 * expiry.
 */
export function defaultBody(): Uint8Array {
  return concat([
    Uint8Array.of(0xfe, 0x00, 0xfb, 0x02, 0x01),
    Uint8Array.of(0x00), encodeString('greeting'), encodeString(Uint8Array.of(0x68, 0xff, 0xff, 0x69, 0xff)),
    Uint8Array.of(0xfc), Uint8Array.of(0x00, 0x7c, 0xd8, 0xb7, 0x94, 0x01, 0x00, 0x00), // expiretime ms, LE
    Uint8Array.of(0x00), encodeString('counter'), encodeString('12345'),
  ]);
}

export interface BuildRdbOptions {
  magic?: 'REDIS' | 'VALKEY';
  /** Default 11 for REDIS, 80 for VALKEY. */
  version?: number;
  /** Default: defaultAux(). Pass [] for none. */
  aux?: Array<[AuxPart, AuxPart]>;
  /** Bytes after the AUX fields, before EOF. Default: defaultBody(). */
  body?: Uint8Array;
  /** 'valid' (default for versions with a trailer), 'zero' (rdbchecksum no), 'none' (no trailer, as RDB < 5), or an explicit value. */
  checksum?: 'valid' | 'zero' | 'none' | bigint;
}

/** A complete RDB file: magic, AUX fields, body, 0xFF, and the trailer. */
export function buildRdb(options: BuildRdbOptions = {}): Uint8Array {
  const magic = options.magic ?? 'REDIS';
  const version = options.version ?? (magic === 'VALKEY' ? 80 : 11);
  const digits = magic === 'VALKEY' ? 3 : 4;
  const header = ascii(magic + String(version).padStart(digits, '0'));
  if (header.length !== 9) throw new RangeError(`version ${version} does not fit ${digits} digits`);
  const aux = (options.aux ?? defaultAux()).map(([k, v]) => auxField(k, v));
  const content = concat([header, ...aux, options.body ?? defaultBody(), Uint8Array.of(0xff)]);
  const checksum = options.checksum ?? (magic === 'REDIS' && version < 5 ? 'none' : 'valid');
  if (checksum === 'none') return content;
  const value = checksum === 'valid' ? (content.length < 4096 ? referenceCrc64(content) : tableCrc64(content)) : checksum === 'zero' ? 0n : checksum;
  const trailer = new Uint8Array(8);
  new DataView(trailer.buffer).setBigUint64(0, value, true);
  return concat([content, trailer]);
}

/** The CRC stored in a built file's trailer. */
export function storedCrcOf(file: Uint8Array): bigint {
  return new DataView(file.buffer, file.byteOffset + file.length - 8, 8).getBigUint64(0, true);
}

/** Splits data into chunks of the given sizes (cycled), as copies, so tests can also check no chunk is retained. */
export function chunksOf(data: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  let k = 0;
  while (i < data.length) {
    const n = Math.max(1, sizes[k++ % sizes.length]!);
    out.push(data.slice(i, i + n));
    i += n;
  }
  return out;
}

/** A small deterministic PRNG (mulberry32) for reproducible random tests. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
