/**
 * Streaming validation of a Redis/Valkey RDB file, designed to run in the
 * same read pass as the copy: feed every chunk to `update`, then call
 * `finish`.
 *
 * What is checked:
 *  - the magic: `REDIS` + 4 digits or `VALKEY` + 3 digits;
 *  - the leading AUX fields (0xFA), which are decoded for redis-ver,
 *    ctime, used-mem and friends, and must be well formed;
 *  - the trailer: for RDB >= 5 (and every VALKEY version) the last 8 bytes
 *    are the CRC-64 of everything before them, stored little-endian, and the
 *    byte before them is the EOF opcode 0xFF. For RDB < 5 the last byte is
 *    0xFF and there is no checksum;
 *  - with validation 'full' (the default), the structure: every opcode and
 *    value walked by RdbWalker (walker.ts), which must end with the EOF
 *    opcode exactly where the trailer begins. This is what catches damage
 *    that a CRC cannot: a file written with a valid CRC around bad data, or
 *    one with the checksum disabled (rdbchecksum no). 'crc' skips it.
 *
 * Memory: the validator keeps the 8 bytes that might be the trailer, the
 * byte before them, and a copy of the header (at most AUX_LIMIT bytes, only
 * while the AUX fields are being parsed). It never keeps a reference to a
 * chunk it was given.
 */

import { open, type FileHandle } from 'node:fs/promises';
import { borrowPassBuffers, Crc64, type PassBuffers } from './crc64.js';
import { InvalidSnapshotError, fsError } from '../core/errors.js';
import { RdbWalker, type WalkSummary } from './walker.js';
import { lzfDecompress } from './lzf.js';
export { lzfDecompress };

/** validation: 'full' walks the structure as well as the header and CRC; 'crc' checks only those (the cheaper, older check). */
export type ValidationMode = 'full' | 'crc';
export const VALIDATION_MODES: readonly ValidationMode[] = ['full', 'crc'];

export interface RdbValidatorOptions {
  /** Default 'full'. */
  validation?: ValidationMode;
}

export interface RdbAux {
  redisVer?: string;
  valkeyVer?: string;
  redisBits?: number;
  ctime?: number;
  usedMem?: number;
  aofBase?: number;
  replStreamDb?: number;
  replId?: string;
  replOffset?: number;
  [k: string]: unknown;
}

export interface RdbInfo {
  /** REDIS + 4 digits, or VALKEY + 3 digits. */
  format: 'redis' | 'valkey';
  /** e.g. 11 for REDIS0011, 80 for VALKEY080. */
  version: number;
  /** false: an unrecognised version, accepted with a warning. */
  versionKnown: boolean;
  aux: RdbAux;
  /** disabled: the stored checksum is 0 (rdbchecksum no); absent: RDB < 5 has no trailer. */
  checksum: 'verified' | 'disabled' | 'absent';
  /** The stored checksum as 16 hex digits (read little-endian), or null if absent. */
  storedCrc: string | null;
  /** Total bytes seen. */
  bytes: number;
  /** The validation that ran. */
  validation: ValidationMode;
  /** With validation 'full': what the structural walk found. */
  structure?: WalkSummary;
  warnings: string[];
}

/**
 * The header as far as it has been parsed (see RdbValidator.peekHeader): for
 * callers that read only the start of a file, such as `list`.
 */
export interface RdbHeader {
  format: 'redis' | 'valkey';
  version: number;
  versionKnown: boolean;
  aux: RdbAux;
  /** true once the leading AUX fields were read to their end (or to AUX_LIMIT); false while more bytes are needed. */
  complete: boolean;
}

/** Stop parsing AUX fields past this many bytes from the start of the file. */
export const AUX_LIMIT = 1 << 20;
/** Chunk size used by validateRdbFile. */
export const READ_CHUNK = 8 << 20;

const MAGIC_LEN = 9;
const TRAILER_LEN = 8;
const OP_AUX = 0xfa;
const OP_EOF = 0xff;
const REDIS_KNOWN_MAX = 12;
/** AUX fields first appeared in RDB version 7 (Redis 3.2). */
const REDIS_FIRST_AUX_VERSION = 7;
const VALKEY_KNOWN = 80;
/** AUX values longer than this are skipped, not decoded. */
const MAX_DECODED_VALUE = 4096;
const HEADER_STEP = 4096;

const MAGIC_TEMPLATES = ['REDIS####', 'VALKEY###'];

type Parse<T> = { kind: 'ok'; value: T; end: number } | { kind: 'need'; upTo: number } | { kind: 'bad'; msg: string };

/** A string as stored in an RDB: plain bytes, an integer, or an LZF-compressed blob. */
type RdbString = number | Uint8Array | undefined;

export class RdbValidator {
  private readonly crc = new Crc64();
  private total = 0;
  /** The last up-to-8 bytes seen; not yet fed to the CRC. */
  private readonly hold = new Uint8Array(TRAILER_LEN);
  private held = 0;
  /** The last byte fed to the CRC (the byte before `hold`), or -1. */
  private lastFed = -1;

  /** Copy of the file's first bytes, while the header is being parsed. */
  private head = new Uint8Array(256);
  private headLen = 0;
  private state: 'magic' | 'aux' | 'done' | 'limit' | 'bad' = 'magic';
  /** Absolute offset the parser needs buffered before it can continue. */
  private need = MAGIC_LEN;
  /** Offset of the next AUX field (state aux), or of the first non-AUX opcode (state done). */
  private pos = MAGIC_LEN;
  /** Whether an AUX opcode was seen at all. */
  private sawAux = false;
  /** Offset of the AUX field parsed last (or being parsed). */
  private fieldAt = MAGIC_LEN;
  /** Where the field the parser stopped in would end (state limit). */
  private pendingEnd = 0;
  private badReason = '';
  private magicBad = false;
  private versionBad = false;

  private format: 'redis' | 'valkey' = 'redis';
  private version = 0;
  private magicText = '';
  private readonly aux: RdbAux = {};

  private outcome: { info: RdbInfo } | { error: InvalidSnapshotError } | null = null;
  private readonly walker: RdbWalker | null;
  readonly validation: ValidationMode;

  constructor(
    readonly path: string,
    options: RdbValidatorOptions = {},
  ) {
    this.validation = options.validation ?? 'full';
    this.walker = this.validation === 'full' ? new RdbWalker() : null;
  }

  /**
   * A failure already certain before the end of the file (bad magic or
   * version), so a caller may stop copying early; finish() throws it too
   * (with up to 9 bytes of the magic in the message). Null otherwise.
   */
  get earlyError(): InvalidSnapshotError | null {
    if (this.magicBad) return new InvalidSnapshotError(this.path, this.badMagicReason());
    if (this.versionBad) return new InvalidSnapshotError(this.path, this.badReason);
    return null;
  }

  /**
   * The header parsed from the bytes fed so far, without concluding (no CRC
   * or EOF check): lets a caller feed only the first chunk of a file. Null
   * while the 9-byte magic is incomplete; throws InvalidSnapshotError when
   * the header is already known to be bad. Additive helper for `list`.
   */
  peekHeader(): RdbHeader | null {
    const early = this.earlyError;
    if (early) throw early;
    if (this.state === 'bad') throw new InvalidSnapshotError(this.path, this.badReason);
    if (this.state === 'magic') return null;
    const versionKnown =
      this.format === 'valkey' ? this.version === VALKEY_KNOWN : this.version >= 1 && this.version <= REDIS_KNOWN_MAX;
    return {
      format: this.format,
      version: this.version,
      versionKnown,
      aux: { ...this.aux },
      complete: this.state === 'done' || this.state === 'limit',
    };
  }

  private badMagicReason(): string {
    if (this.state === 'bad') return this.badReason; // the header copy is gone by then
    return `not an RDB file: bad magic "${printable(this.head, Math.min(this.headLen, MAGIC_LEN))}"`;
  }

  /**
   * The header parser alone (no CRC, no walk), for RdbMagicCheck: the bytes
   * given must be the file's next bytes, as with update().
   */
  updateHeaderOnly(chunk: Uint8Array): void {
    if (this.outcome) throw new Error('RdbValidator.updateHeaderOnly() called after finish()');
    if (chunk.length > 0 && (this.state === 'magic' || this.state === 'aux')) this.feedHeader(chunk);
  }

  update(chunk: Uint8Array): void {
    if (this.outcome) throw new Error('RdbValidator.update() called after finish()');
    const n = chunk.length;
    if (n === 0) return;
    if (this.state === 'magic' || this.state === 'aux') this.feedHeader(chunk);
    this.walker?.update(chunk);
    this.feedCrc(chunk);
    this.total += n;
  }

  finish(): RdbInfo {
    if (!this.outcome) {
      try {
        this.outcome = { info: this.conclude() };
      } catch (err) {
        if (!(err instanceof InvalidSnapshotError)) throw err;
        this.outcome = { error: err };
      }
    }
    if ('error' in this.outcome) throw this.outcome.error;
    return { ...this.outcome.info, aux: { ...this.outcome.info.aux }, warnings: [...this.outcome.info.warnings] };
  }

  // -------------------------------------------------------------------------
  // CRC with an 8-byte hold-back

  private feedCrc(chunk: Uint8Array): void {
    const n = chunk.length;
    const hold = this.hold;
    const combined = this.held + n;
    if (combined <= TRAILER_LEN) {
      for (let i = 0; i < n; i++) hold[this.held + i] = chunk[i]!;
      this.held = combined;
      return;
    }
    // Everything but the last 8 bytes of (hold + chunk) is certainly not trailer.
    const feed = combined - TRAILER_LEN;
    const fromHold = Math.min(this.held, feed);
    const fromChunk = feed - fromHold;
    if (fromHold > 0) {
      this.crc.update(hold, 0, fromHold);
      this.lastFed = hold[fromHold - 1]!;
      hold.copyWithin(0, fromHold, this.held);
    }
    if (fromChunk > 0) {
      this.crc.update(chunk, 0, fromChunk);
      this.lastFed = chunk[fromChunk - 1]!;
    }
    let k = this.held - fromHold;
    for (let i = fromChunk; i < n; i++) hold[k++] = chunk[i]!;
    this.held = TRAILER_LEN;
  }

  // -------------------------------------------------------------------------
  // Header: magic and leading AUX fields

  private feedHeader(chunk: Uint8Array): void {
    // While the header is parsed, headLen === total at the start of update().
    let off = 0;
    while ((this.state === 'magic' || this.state === 'aux') && off < chunk.length) {
      const target = Math.min(AUX_LIMIT, Math.max(this.need, this.headLen + HEADER_STEP));
      const take = Math.min(chunk.length - off, target - this.headLen);
      if (take <= 0) break; // cannot happen: parse() moves to 'limit' first
      this.reserve(this.headLen + take);
      this.head.set(take === chunk.length ? chunk : chunk.subarray(off, off + take), this.headLen);
      this.headLen += take;
      off += take;
      this.parse();
    }
    if (this.state !== 'magic' && this.state !== 'aux') {
      this.head = new Uint8Array(0);
      this.headLen = 0;
    }
  }

  private reserve(size: number): void {
    if (size <= this.head.length) return;
    let cap = this.head.length * 2;
    while (cap < size) cap *= 2;
    const next = new Uint8Array(Math.min(cap, AUX_LIMIT));
    next.set(this.head.subarray(0, this.headLen));
    this.head = next;
  }

  private parse(): void {
    if (this.state === 'magic') {
      if (!magicPrefixOk(this.head, Math.min(this.headLen, MAGIC_LEN))) {
        // Certain now; keep collecting up to 9 bytes so the message shows them all.
        this.magicBad = true;
        if (this.headLen >= MAGIC_LEN) {
          this.badReason = this.badMagicReason();
          this.state = 'bad';
        }
        this.need = MAGIC_LEN;
        return;
      }
      if (this.headLen < MAGIC_LEN) {
        this.need = MAGIC_LEN;
        return;
      }
      this.magicText = String.fromCharCode(...this.head.subarray(0, MAGIC_LEN));
      this.format = this.magicText.startsWith('VALKEY') ? 'valkey' : 'redis';
      this.version = Number(this.magicText.slice(this.format === 'valkey' ? 6 : 5));
      if (this.format === 'redis' && this.version === 0) {
        this.versionBad = true;
        this.state = 'bad';
        this.badReason = `unsupported RDB version 0 (${this.magicText})`;
        return;
      }
      this.state = 'aux';
      this.pos = MAGIC_LEN;
    }
    while (this.state === 'aux') {
      const at = this.pos;
      if (at >= this.headLen) return this.needMore(at + 1, at);
      if (this.head[at] !== OP_AUX) {
        this.state = 'done';
        return;
      }
      this.sawAux = true;
      this.fieldAt = at;
      const key = this.readString(at + 1, MAX_DECODED_VALUE);
      if (key.kind === 'need') return this.needMore(key.upTo, at);
      if (key.kind === 'bad') return this.malformed(at, key.msg);
      const value = this.readString(key.end, MAX_DECODED_VALUE);
      if (value.kind === 'need') return this.needMore(value.upTo, at);
      if (value.kind === 'bad') return this.malformed(at, value.msg);
      this.record(key.value, value.value);
      this.pos = value.end;
    }
  }

  private needMore(upTo: number, fieldAt: number): void {
    this.need = upTo;
    if (upTo > AUX_LIMIT) {
      this.state = 'limit';
      this.pos = fieldAt;
      this.pendingEnd = upTo;
    }
  }

  private malformed(fieldAt: number, msg: string): void {
    this.state = 'bad';
    this.pos = fieldAt;
    this.badReason = `malformed AUX field at offset ${fieldAt}: ${msg}`;
  }

  /** A length as used before a string: returns the length and where the data starts. */
  private readLength(p: number): Parse<number> {
    const h = this.head;
    if (p >= this.headLen) return { kind: 'need', upTo: p + 1 };
    const b = h[p]!;
    switch (b >> 6) {
      case 0:
        return { kind: 'ok', value: b & 0x3f, end: p + 1 };
      case 1:
        if (p + 2 > this.headLen) return { kind: 'need', upTo: p + 2 };
        return { kind: 'ok', value: ((b & 0x3f) << 8) | h[p + 1]!, end: p + 2 };
      case 2:
        if (b === 0x80) {
          if (p + 5 > this.headLen) return { kind: 'need', upTo: p + 5 };
          return { kind: 'ok', value: readU32BE(h, p + 1), end: p + 5 };
        }
        if (b === 0x81) {
          if (p + 9 > this.headLen) return { kind: 'need', upTo: p + 9 };
          return { kind: 'ok', value: readU32BE(h, p + 1) * 2 ** 32 + readU32BE(h, p + 5), end: p + 9 };
        }
        return { kind: 'bad', msg: `unknown length encoding 0x${hex2(b)}` };
      default:
        return { kind: 'bad', msg: `string encoding 0x${hex2(b)} where a length was expected` };
    }
  }

  /**
   * A string at p. Plain and LZF strings up to maxValue bytes are returned
   * as bytes, integer encodings as numbers, longer strings as undefined.
   */
  private readString(p: number, maxValue: number): Parse<RdbString> {
    const h = this.head;
    if (p >= this.headLen) return { kind: 'need', upTo: p + 1 };
    const b = h[p]!;
    if (b >> 6 !== 3) {
      const len = this.readLength(p);
      if (len.kind !== 'ok') return len;
      const end = len.end + len.value;
      if (end > this.headLen) return { kind: 'need', upTo: end };
      return { kind: 'ok', value: len.value <= maxValue ? h.slice(len.end, end) : undefined, end };
    }
    switch (b & 0x3f) {
      case 0:
        if (p + 2 > this.headLen) return { kind: 'need', upTo: p + 2 };
        return { kind: 'ok', value: (h[p + 1]! << 24) >> 24, end: p + 2 };
      case 1:
        if (p + 3 > this.headLen) return { kind: 'need', upTo: p + 3 };
        return { kind: 'ok', value: ((h[p + 1]! | (h[p + 2]! << 8)) << 16) >> 16, end: p + 3 };
      case 2:
        if (p + 5 > this.headLen) return { kind: 'need', upTo: p + 5 };
        return { kind: 'ok', value: h[p + 1]! | (h[p + 2]! << 8) | (h[p + 3]! << 16) | (h[p + 4]! << 24), end: p + 5 };
      case 3: {
        const clen = this.readLength(p + 1);
        if (clen.kind !== 'ok') return clen;
        const olen = this.readLength(clen.end);
        if (olen.kind !== 'ok') return olen;
        const end = olen.end + clen.value;
        if (end > this.headLen) return { kind: 'need', upTo: end };
        if (olen.value > maxValue) return { kind: 'ok', value: undefined, end };
        const out = lzfDecompress(h, olen.end, end, olen.value);
        if (!out) return { kind: 'bad', msg: 'corrupt LZF-compressed string' };
        return { kind: 'ok', value: out, end };
      }
      default:
        return { kind: 'bad', msg: `unknown string encoding 0x${hex2(b)}` };
    }
  }

  private record(rawKey: RdbString, rawValue: RdbString): void {
    if (rawKey === undefined) return;
    const key = typeof rawKey === 'number' ? String(rawKey) : latin1(rawKey);
    const field = AUX_KEYS.get(key);
    if (!field || rawValue === undefined) return;
    if (field.kind === 'string') {
      this.aux[field.name] = typeof rawValue === 'number' ? String(rawValue) : utf8(rawValue);
    } else {
      const n = typeof rawValue === 'number' ? rawValue : decimal(latin1(rawValue));
      if (n !== undefined) this.aux[field.name] = n;
    }
  }

  // -------------------------------------------------------------------------

  private conclude(): RdbInfo {
    const n = this.total;
    if (n === 0) this.reject('truncated: 0 bytes (empty file)');
    if (this.magicBad) this.reject(this.badMagicReason());
    if (this.versionBad) this.reject(this.badReason);
    if (this.state === 'magic') this.reject(`truncated: ${n} bytes`);

    const trailered = this.format === 'valkey' || this.version >= 5;
    if (n < MAGIC_LEN + 1 + (trailered ? TRAILER_LEN : 0)) this.reject(`truncated: ${n} bytes, no EOF marker`);
    const eofPos = n - (trailered ? TRAILER_LEN + 1 : 1);
    const eofByte = trailered ? this.lastFed : this.hold[this.held - 1];
    if (eofByte !== OP_EOF) {
      this.reject(
        // Almost always a file cut short (or overwritten at the end): say so, with its size.
        trailered
          ? `truncated: ${n} bytes, no EOF marker (0xFF) before the checksum trailer`
          : `truncated: ${n} bytes, no EOF marker (0xFF) at the end of the file`,
      );
    }

    const warnings: string[] = [];
    const versionKnown =
      this.format === 'valkey' ? this.version === VALKEY_KNOWN : this.version >= 1 && this.version <= REDIS_KNOWN_MAX;

    let checksum: RdbInfo['checksum'] = 'absent';
    let storedCrc: string | null = null;
    if (trailered) {
      const h = this.hold;
      storedCrc = hex8(readU32LE(h, 4)) + hex8(readU32LE(h, 0));
      if (storedCrc === '0000000000000000') {
        checksum = 'disabled';
      } else {
        const computed = this.crc.hex();
        if (computed !== storedCrc) this.reject(`CRC mismatch: stored ${storedCrc}, computed ${computed}`);
        checksum = 'verified';
      }
    }

    // The AUX fields must lie entirely before the EOF byte. If the field the
    // parser stopped in starts before it, every earlier field ended before it.
    const aux = this.state;
    const crossed =
      aux === 'aux' || (aux === 'done' && this.pos > eofPos) || (aux === 'limit' && this.pendingEnd > eofPos);
    if (aux === 'bad' || crossed) {
      if (this.fieldAt >= eofPos) this.reject(`truncated: ${n} bytes, the AUX fields run past the end of the data`);
      if (aux === 'bad') this.reject(this.badReason);
      this.reject(`truncated: ${n} bytes, AUX field at offset ${this.fieldAt} runs past the end of the data`);
    }

    // Catches, e.g., a modern file whose version digits were damaged into 1..6
    // (no trailer expected) and whose last CRC byte happens to be 0xFF.
    if (this.format === 'redis' && this.version < REDIS_FIRST_AUX_VERSION && this.sawAux) {
      this.reject(`AUX field at offset ${MAGIC_LEN} in an RDB version ${this.version} file (AUX fields start at version 7)`);
    }

    let structure: WalkSummary | undefined;
    if (this.walker) {
      const walked = this.walker.conclude(trailered ? n - TRAILER_LEN : n);
      if (typeof walked === 'string') this.reject(`structure: ${walked}`);
      structure = walked;
      if (walked.shallowContainers > 0) {
        warnings.push(`${walked.shallowContainers} encoded value(s) larger than the walker buffers were checked by their header and terminator only`);
      }
    }

    if (!versionKnown) {
      warnings.push(
        checksum === 'verified'
          ? `unrecognised RDB version ${this.version} (${this.magicText}): accepted because the CRC-64 matches`
          : `unrecognised RDB version ${this.version} (${this.magicText}): accepted without verification`,
      );
    }
    if (checksum === 'disabled') {
      warnings.push(structure
        ? 'checksum disabled (rdbchecksum no): the structure was walked and is sound, but damage inside values cannot be detected'
        : 'checksum disabled (rdbchecksum no): the file could not be verified');
    }
    if (checksum === 'absent') {
      warnings.push(structure
        ? `RDB version ${this.version} has no checksum: the structure was walked and is sound, but damage inside values cannot be detected`
        : `RDB version ${this.version} has no checksum: only the header and the EOF marker were checked`);
    }
    if (this.state === 'limit') {
      warnings.push(`AUX fields extend past the first ${AUX_LIMIT} bytes: stopped reading them at offset ${this.pos}`);
    }

    return {
      format: this.format,
      version: this.version,
      versionKnown,
      aux: this.aux,
      checksum,
      storedCrc,
      bytes: n,
      validation: this.validation,
      ...(structure ? { structure } : {}),
      warnings,
    };
  }

  private reject(reason: string): never {
    throw new InvalidSnapshotError(this.path, reason);
  }
}

/** AUX keys that are decoded; every other key is skipped. */
const AUX_KEYS = new Map<string, { name: keyof RdbAux & string; kind: 'string' | 'int' }>([
  ['redis-ver', { name: 'redisVer', kind: 'string' }],
  ['valkey-ver', { name: 'valkeyVer', kind: 'string' }],
  ['redis-bits', { name: 'redisBits', kind: 'int' }],
  ['ctime', { name: 'ctime', kind: 'int' }],
  ['used-mem', { name: 'usedMem', kind: 'int' }],
  ['aof-base', { name: 'aofBase', kind: 'int' }],
  ['repl-stream-db', { name: 'replStreamDb', kind: 'int' }],
  ['repl-id', { name: 'replId', kind: 'string' }],
  ['repl-offset', { name: 'replOffset', kind: 'int' }],
]);

function magicPrefixOk(b: Uint8Array, len: number): boolean {
  return MAGIC_TEMPLATES.some((t) => {
    for (let i = 0; i < len; i++) {
      const c = b[i]!;
      if (t[i] === '#' ? c < 0x30 || c > 0x39 : c !== t.charCodeAt(i)) return false;
    }
    return true;
  });
}

/** Bytes as a safe, quotable string: printable ASCII as is, the rest as \xNN. */
function printable(b: Uint8Array, len: number): string {
  let s = '';
  for (let i = 0; i < len; i++) {
    const c = b[i]!;
    s += c >= 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c ? String.fromCharCode(c) : `\\x${hex2(c)}`;
  }
  return s;
}

function readU32BE(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}

function readU32LE(b: Uint8Array, p: number): number {
  return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function latin1(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}

function utf8(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('utf8');
}

function decimal(s: string): number | undefined {
  return /^-?[0-9]{1,20}$/.test(s) ? Number(s) : undefined;
}

/**
 * RdbValidator.earlyError (bad magic or version) from a file's first bytes
 * alone, with the same messages: a pass whose validator runs on another
 * thread (src/rdb/validate-thread.ts) checks this on its own thread, so that
 * a file that is not an RDB still stops the pass at its first chunk. Costs
 * nothing after the 9 bytes of the magic.
 */
export class RdbMagicCheck {
  private readonly header: RdbValidator;
  private seen = 0;

  constructor(path: string) {
    this.header = new RdbValidator(path, { validation: 'crc' });
  }

  /** Feeds the file's next bytes; returns the early error once it is certain, null otherwise. */
  update(chunk: Uint8Array): InvalidSnapshotError | null {
    if (this.seen < MAGIC_LEN) {
      const part = chunk.subarray(0, MAGIC_LEN - this.seen);
      this.seen += part.length;
      this.header.updateHeaderOnly(part);
    }
    return this.header.earlyError;
  }
}

/** Validates a whole RDB given as one buffer. */
export function validateRdb(path: string, data: Uint8Array, options: RdbValidatorOptions = {}): RdbInfo {
  const v = new RdbValidator(path, options);
  v.update(data);
  return v.finish();
}

/**
 * Reads and validates an RDB file in READ_CHUNK pieces through two reused
 * buffers: the next read is in flight while the current piece is checked, so
 * the copy out of the page cache (about as slow as the CRC on a small VM)
 * overlaps the CRC.
 */
export async function validateRdbFile(path: string, options: RdbValidatorOptions = {}): Promise<RdbInfo> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw fsError('open', path, err);
  }
  let reading: Promise<number> | undefined;
  let lent: PassBuffers | undefined;
  try {
    let size = READ_CHUNK;
    try {
      size = (await fh.stat()).size;
    } catch (err) {
      throw fsError('fstat', path, err);
    }
    const length = Math.max(1, Math.min(READ_CHUNK, size + 1));
    lent = borrowPassBuffers(2, length);
    const buffers = lent.buffers;
    const v = new RdbValidator(path, options);
    let position = 0;
    let which = 0;
    const read = (): Promise<number> => {
      const p = fh.read(buffers[which]!, 0, length, position).then(
        (r) => r.bytesRead,
        (err: unknown) => {
          throw fsError('read', path, err);
        },
      );
      p.catch(() => undefined); // awaited below; never an unhandled rejection
      return p;
    };
    reading = read();
    for (;;) {
      const bytesRead = await reading;
      reading = undefined;
      if (bytesRead === 0) break;
      const buf = buffers[which]!;
      position += bytesRead;
      which ^= 1;
      reading = read();
      v.update(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
      if (v.earlyError) break;
    }
    return v.finish();
  } finally {
    if (reading) await reading.catch(() => undefined); // no read racing the close or the release
    lent?.release();
    await fh.close().catch(() => undefined);
  }
}
