/**
 * Checks of the compact encodings Redis stores as one RDB string: listpack,
 * ziplist, intset and zipmap, and a stream node's listpack. Each takes the
 * encoded bytes b[s, e) and returns null when they are consistent, or a
 * message saying what is wrong and where (offsets relative to s).
 *
 * What is checked is what Redis's own integrity checks (lpValidateIntegrity,
 * ziplistValidateIntegrity, intsetValidateIntegrity, zipmapValidateIntegrity,
 * streamValidateListpackIntegrity, in their deep form) check: the header's
 * total size against the string's length, the terminator, every entry's
 * encoding and length staying inside the container, a listpack entry's
 * back-length, a ziplist entry's previous-length and the tail offset, the
 * element count in the header, an intset's order, and the element count
 * being a multiple of the tuple size (field/value pairs). Duplicate fields
 * are not looked for: that needs the data itself and a set of it.
 *
 * headerCheck covers a container too large to hold in memory: only its
 * header (the first bytes) and its last byte are looked at.
 */

export type ContainerKind = 'listpack' | 'ziplist' | 'intset' | 'zipmap' | 'stream-listpack';

export interface ContainerRule {
  kind: ContainerKind;
  /** Elements form tuples of this size (2: field/value or member/score; 3: field/value/ttl). */
  tuple: 1 | 2 | 3;
  /** A container that Redis refuses when it is empty. */
  nonEmpty: boolean;
}

export function checkContainer(rule: ContainerRule, b: Uint8Array, s: number, e: number): string | null {
  switch (rule.kind) {
    case 'listpack': {
      const n = checkListpack(b, s, e);
      if (typeof n === 'string') return n;
      if (n % rule.tuple !== 0) return `listpack of ${n} elements: not a whole number of ${rule.tuple}-element tuples`;
      if (rule.nonEmpty && n === 0) return 'empty listpack';
      return null;
    }
    case 'stream-listpack':
      return checkStreamListpack(b, s, e);
    case 'ziplist': {
      const n = checkZiplist(b, s, e);
      if (typeof n === 'string') return n;
      if (n % rule.tuple !== 0) return `ziplist of ${n} elements: not a whole number of ${rule.tuple}-element tuples`;
      return null;
    }
    case 'intset':
      return checkIntset(b, s, e);
    case 'zipmap':
      return checkZipmap(b, s, e);
  }
}

/** Bytes at the start of a container that headerCheck needs. */
export function headerBytes(kind: ContainerKind): number {
  return kind === 'ziplist' ? 10 : kind === 'intset' ? 8 : kind === 'zipmap' ? 1 : 6;
}

/**
 * The header (first headerBytes(kind) bytes, in h) and the last byte of a
 * container of `size` bytes too large to check entry by entry.
 */
export function headerCheck(kind: ContainerKind, h: Uint8Array, size: number, last: number): string | null {
  switch (kind) {
    case 'listpack':
    case 'stream-listpack': {
      const total = u32le(h, 0);
      if (total !== size) return `listpack header says ${total} bytes, the string holds ${size}`;
      return last === 0xff ? null : `listpack does not end with its terminator 0xFF (ends with 0x${hex2(last)})`;
    }
    case 'ziplist': {
      const total = u32le(h, 0);
      if (total !== size) return `ziplist header says ${total} bytes, the string holds ${size}`;
      if (u32le(h, 4) > size - 1) return `ziplist tail offset ${u32le(h, 4)} is outside its ${size} bytes`;
      return last === 0xff ? null : `ziplist does not end with its terminator 0xFF (ends with 0x${hex2(last)})`;
    }
    case 'intset': {
      const enc = u32le(h, 0);
      if (enc !== 2 && enc !== 4 && enc !== 8) return `intset encoding ${enc} (must be 2, 4 or 8)`;
      const count = u32le(h, 4);
      return 8 + enc * count === size ? null : `intset of ${count} ${enc}-byte integers must be ${8 + enc * count} bytes, the string holds ${size}`;
    }
    case 'zipmap':
      return last === 0xff ? null : `zipmap does not end with its terminator 0xFF (ends with 0x${hex2(last)})`;
  }
}

// ---------------------------------------------------------------------------
// listpack: <total-bytes u32><num-elements u16> <entry>* 0xFF
// entry: <encoding+data> <backlen: the size of encoding+data, 1-5 bytes>

const LP_HDR = 6;
const LP_NUMELE_UNKNOWN = 0xffff;

/**
 * The size of the listpack entry's encoding and data starting at p (not its
 * back-length), or -1 for an invalid encoding byte. Needs up to 5 bytes at p;
 * the caller checks they are inside the listpack.
 */
function lpEntryLen(b: Uint8Array, p: number): number {
  const c = b[p]!;
  if (c < 0x80) return 1; // 7-bit unsigned int
  if (c < 0xc0) return 1 + (c & 0x3f); // 6-bit string length
  if (c < 0xe0) return 2; // 13-bit int
  if (c < 0xf0) return 2 + (((c & 0x0f) << 8) | b[p + 1]!); // 12-bit string length
  switch (c) {
    case 0xf0:
      return 5 + u32le(b, p + 1); // 32-bit string length
    case 0xf1:
      return 3;
    case 0xf2:
      return 4;
    case 0xf3:
      return 5;
    case 0xf4:
      return 9;
    default:
      return -1;
  }
}

/** Bytes of the length prefix of the entry at p (what must be readable before lpEntryLen). */
function lpLenBytes(c: number): number {
  if (c < 0xe0) return 1;
  if (c < 0xf0) return 2;
  return c === 0xf0 ? 5 : 1;
}

/** How many bytes Redis's lpEncodeBacklen uses for an entry of l bytes. */
function backlenSize(l: number): number {
  return l <= 127 ? 1 : l < 16383 ? 2 : l < 2097151 ? 3 : l < 268435455 ? 4 : 5;
}

/** Decodes a back-length whose last byte is at q (read right to left). */
function decodeBacklen(b: Uint8Array, q: number, lo: number): number {
  let v = 0;
  let shift = 0;
  for (let i = 0; i < 5 && q >= lo; i++, q--) {
    const x = b[q]!;
    v += (x & 127) * 2 ** shift;
    if (!(x & 128)) return v;
    shift += 7;
  }
  return -1;
}

/** The element count of a listpack at b[s, e), or a message. */
export function checkListpack(b: Uint8Array, s: number, e: number): number | string {
  const size = e - s;
  if (size < LP_HDR + 1) return `listpack of ${size} bytes is shorter than its header and terminator (7 bytes)`;
  const total = u32le(b, s);
  if (total !== size) return `listpack header says ${total} bytes, the string holds ${size}`;
  if (b[e - 1] !== 0xff) return `listpack does not end with its terminator 0xFF (ends with 0x${hex2(b[e - 1]!)})`;
  const numele = b[s + 4]! | (b[s + 5]! << 8);
  const last = e - 1;
  let p = s + LP_HDR;
  let count = 0;
  while (b[p] !== 0xff) {
    const c = b[p]!;
    const lb = lpLenBytes(c);
    if (p + lb > last) return `listpack entry ${count} at +${p - s}: its length runs past the end`;
    const len = lpEntryLen(b, p);
    if (len < 0) return `listpack entry ${count} at +${p - s}: invalid encoding byte 0x${hex2(c)}`;
    const bl = backlenSize(len);
    if (p + len + bl > last) return `listpack entry ${count} at +${p - s}: ${len + bl} bytes run past the end`;
    p += len + bl;
    if (decodeBacklen(b, p - 1, p - bl) !== len) return `listpack entry ${count} at +${p - len - bl - s}: back-length does not match the entry's ${len} bytes`;
    count++;
  }
  if (p !== last) return `listpack terminator at +${p - s}, before the end of its ${size} bytes`;
  if (numele !== LP_NUMELE_UNKNOWN && numele !== count) return `listpack header says ${numele} elements, it holds ${count}`;
  return count;
}

/** The entry at p as an integer (integer encodings, or a string that is a canonical int64), or NaN. Entry already validated. */
function lpInteger(b: Uint8Array, p: number): number {
  const c = b[p]!;
  if (c < 0x80) return c;
  if (c < 0xc0) return parseIntString(b, p + 1, c & 0x3f);
  if (c < 0xe0) return ((((c & 0x1f) << 8) | b[p + 1]!) << 19) >> 19;
  if (c < 0xf0) return parseIntString(b, p + 2, ((c & 0x0f) << 8) | b[p + 1]!);
  switch (c) {
    case 0xf0:
      return parseIntString(b, p + 5, u32le(b, p + 1));
    case 0xf1:
      return ((b[p + 1]! | (b[p + 2]! << 8)) << 16) >> 16;
    case 0xf2:
      return ((b[p + 1]! | (b[p + 2]! << 8) | (b[p + 3]! << 16)) << 8) >> 8;
    case 0xf3:
      return b[p + 1]! | (b[p + 2]! << 8) | (b[p + 3]! << 16) | (b[p + 4]! << 24);
    default: {
      const lo = u32le(b, p + 1);
      const hi = b[p + 5]! | (b[p + 6]! << 8) | (b[p + 7]! << 16) | (b[p + 8]! << 24);
      return hi * 2 ** 32 + lo;
    }
  }
}

/** Redis's string2ll: optional '-', digits without a leading zero, at most 20 characters. */
function parseIntString(b: Uint8Array, p: number, len: number): number {
  if (len === 0 || len > 20) return NaN;
  let i = 0;
  let neg = false;
  if (b[p] === 0x2d) {
    neg = true;
    i = 1;
    if (len === 1) return NaN;
  }
  if (b[p + i] === 0x30 && len > i + 1) return NaN;
  let v = 0;
  for (; i < len; i++) {
    const d = b[p + i]! - 0x30;
    if (d < 0 || d > 9) return NaN;
    v = v * 10 + d;
  }
  return neg ? -v : v;
}

/** Size of the (validated) listpack entry at p, back-length included. */
function lpEntrySize(b: Uint8Array, p: number): number {
  const len = lpEntryLen(b, p);
  return len + backlenSize(len);
}

const STREAM_ITEM_FLAG_SAMEFIELDS = 2;

/**
 * A stream node's listpack: the master entry (count, deleted, number of
 * master fields, the fields, 0), then count + deleted entries, each: flags,
 * ms and seq deltas, [number of fields, the fields, unless SAMEFIELDS], the
 * values, and the entry's element count; nothing after the last entry.
 */
export function checkStreamListpack(b: Uint8Array, s: number, e: number): string | null {
  const n = checkListpack(b, s, e);
  if (typeof n === 'string') return n;
  if (n === 0) return 'empty listpack in a stream node';
  let p = s + LP_HDR;
  let left = n;
  const take = (): number => {
    // One element as an integer; NaN when it is not one. Callers check `left` first.
    const v = lpInteger(b, p);
    p += lpEntrySize(b, p);
    left--;
    return v;
  };
  const skip = (k: number): boolean => {
    if (k > left) return false;
    for (let i = 0; i < k; i++) p += lpEntrySize(b, p);
    left -= k;
    return true;
  };
  if (left < 3) return 'stream node: the master entry is cut short';
  const count = take();
  const deleted = take();
  const masterFields = take();
  if (!(count >= 0 && deleted >= 0 && masterFields >= 0)) return 'stream node: the master entry\'s counts are not integers';
  if (!skip(masterFields) || left < 1) return 'stream node: the master entry\'s fields are cut short';
  if (take() !== 0) return 'stream node: the master entry does not end with 0';
  for (let entry = 0; entry < count + deleted; entry++) {
    if (left < 3) return `stream node: entry ${entry} is cut short`;
    const flags = take();
    const ms = take();
    const seq = take();
    if (Number.isNaN(flags) || Number.isNaN(ms) || Number.isNaN(seq)) return `stream node: entry ${entry}'s flags or ID are not integers`;
    let fields = masterFields;
    let extra = 3;
    if (!(flags & STREAM_ITEM_FLAG_SAMEFIELDS)) {
      if (left < 1) return `stream node: entry ${entry} is cut short`;
      fields = take();
      if (!(fields >= 0)) return `stream node: entry ${entry}'s field count is not an integer`;
      if (!skip(fields)) return `stream node: entry ${entry}'s fields are cut short`;
      extra += fields + 1;
    }
    if (!skip(fields) || left < 1) return `stream node: entry ${entry}'s values are cut short`;
    const lpCount = take();
    if (lpCount !== fields + extra) return `stream node: entry ${entry}'s element count ${lpCount} should be ${fields + extra}`;
  }
  if (left !== 0) return `stream node: ${left} elements after the last of its ${count + deleted} entries`;
  return null;
}

// ---------------------------------------------------------------------------
// ziplist: <zlbytes u32><zltail u32><zllen u16> <entry>* 0xFF
// entry: <prevlen: 1 byte < 254, or 0xFE + u32> <encoding> <data>

const ZL_HDR = 10;

/** The element count of a ziplist at b[s, e), or a message. */
export function checkZiplist(b: Uint8Array, s: number, e: number): number | string {
  const size = e - s;
  if (size < ZL_HDR + 1) return `ziplist of ${size} bytes is shorter than its header and terminator (11 bytes)`;
  const total = u32le(b, s);
  if (total !== size) return `ziplist header says ${total} bytes, the string holds ${size}`;
  if (b[e - 1] !== 0xff) return `ziplist does not end with its terminator 0xFF (ends with 0x${hex2(b[e - 1]!)})`;
  const tail = u32le(b, s + 4);
  if (tail > size - 1) return `ziplist tail offset ${tail} is outside its ${size} bytes`;
  const headerCount = b[s + 8]! | (b[s + 9]! << 8);
  const last = e - 1;
  let p = s + ZL_HDR;
  let prevSize = 0;
  let prevAt = -1;
  let count = 0;
  while (b[p] !== 0xff) {
    const at = p;
    let prevlen: number;
    if (b[p]! < 0xfe) {
      prevlen = b[p]!;
      p += 1;
    } else {
      if (p + 5 > last) return `ziplist entry ${count} at +${at - s}: its previous-length runs past the end`;
      prevlen = u32le(b, p + 1);
      p += 5;
    }
    if (p >= last) return `ziplist entry ${count} at +${at - s}: its encoding runs past the end`;
    const c = b[p]!;
    let header: number;
    let len: number;
    if (c < 0x40) {
      header = 1;
      len = c & 0x3f;
    } else if (c < 0x80) {
      header = 2;
      if (p + 2 > last) return `ziplist entry ${count} at +${at - s}: its length runs past the end`;
      len = ((c & 0x3f) << 8) | b[p + 1]!;
    } else if (c < 0xc0) {
      header = 5;
      if (p + 5 > last) return `ziplist entry ${count} at +${at - s}: its length runs past the end`;
      len = ((b[p + 1]! << 24) | (b[p + 2]! << 16) | (b[p + 3]! << 8) | b[p + 4]!) >>> 0;
    } else {
      header = 1;
      len = zipIntSize(c);
      if (len < 0) return `ziplist entry ${count} at +${at - s}: invalid encoding byte 0x${hex2(c)}`;
    }
    p += header + len;
    if (p > last) return `ziplist entry ${count} at +${at - s}: runs past the end`;
    if (prevlen !== prevSize) return `ziplist entry ${count} at +${at - s}: previous-length ${prevlen}, the previous entry has ${prevSize} bytes`;
    prevSize = p - at;
    prevAt = at;
    count++;
  }
  if (p !== last) return `ziplist terminator at +${p - s}, before the end of its ${size} bytes`;
  if (prevAt >= 0 && prevAt - s !== tail) return `ziplist tail offset ${tail}, its last entry is at +${prevAt - s}`;
  if (headerCount !== 0xffff && headerCount !== count) return `ziplist header says ${headerCount} elements, it holds ${count}`;
  return count;
}

function zipIntSize(c: number): number {
  switch (c) {
    case 0xc0:
      return 2;
    case 0xd0:
      return 4;
    case 0xe0:
      return 8;
    case 0xf0:
      return 3;
    case 0xfe:
      return 1;
    default:
      return c >= 0xf1 && c <= 0xfd ? 0 : -1;
  }
}

// ---------------------------------------------------------------------------
// intset: <encoding u32: 2, 4 or 8><length u32> <integers, ascending>

export function checkIntset(b: Uint8Array, s: number, e: number): string | null {
  const size = e - s;
  if (size < 8) return `intset of ${size} bytes is shorter than its 8-byte header`;
  const h = headerCheck('intset', b.subarray(s, s + 8), size, b[e - 1]!);
  if (h) return h;
  const enc = u32le(b, s);
  const count = u32le(b, s + 4);
  if (count === 0) return 'empty intset';
  let prev = -Infinity;
  for (let i = 0; i < count; i++) {
    const q = s + 8 + i * enc;
    let v: number;
    if (enc === 2) v = ((b[q]! | (b[q + 1]! << 8)) << 16) >> 16;
    else if (enc === 4) v = b[q]! | (b[q + 1]! << 8) | (b[q + 2]! << 16) | (b[q + 3]! << 24);
    else v = (b[q + 4]! | (b[q + 5]! << 8) | (b[q + 6]! << 16) | (b[q + 7]! << 24)) * 2 ** 32 + u32le(b, q);
    // int64 values beyond 2^53 lose precision in a double: compare the exact halves then.
    if (v < prev || (v === prev && (enc !== 8 || !int64Greater(b, q, q - 8)))) return `intset element ${i} is not greater than the one before it`;
    prev = v;
  }
  return null;
}

/** Exact signed comparison of two little-endian int64s: b[q] > b[r]. */
function int64Greater(b: Uint8Array, q: number, r: number): boolean {
  const hq = b[q + 4]! | (b[q + 5]! << 8) | (b[q + 6]! << 16) | (b[q + 7]! << 24);
  const hr = b[r + 4]! | (b[r + 5]! << 8) | (b[r + 6]! << 16) | (b[r + 7]! << 24);
  if (hq !== hr) return hq > hr;
  return u32le(b, q) > u32le(b, r);
}

// ---------------------------------------------------------------------------
// zipmap (Redis < 2.6 hashes): <count byte> (<len><key><len><free><value><free bytes>)* 0xFF
// len: one byte < 254, or 254 + u32

export function checkZipmap(b: Uint8Array, s: number, e: number): string | null {
  const size = e - s;
  if (size < 2) return `zipmap of ${size} bytes is shorter than its header and terminator`;
  if (b[e - 1] !== 0xff) return `zipmap does not end with its terminator 0xFF (ends with 0x${hex2(b[e - 1]!)})`;
  const last = e - 1;
  let p = s + 1;
  let count = 0;
  const readLen = (): number => {
    if (b[p]! < 254) return b[p++]!;
    if (p + 5 > last) return -1;
    const v = u32le(b, p + 1);
    p += 5;
    return v;
  };
  while (b[p] !== 0xff) {
    const at = p;
    const klen = readLen();
    if (klen < 0 || p + klen > last) return `zipmap entry ${count} at +${at - s}: its key runs past the end`;
    p += klen;
    const vlen = readLen();
    if (vlen < 0 || p >= last) return `zipmap entry ${count} at +${at - s}: its value length runs past the end`;
    const free = b[p++]!;
    if (p + vlen + free > last) return `zipmap entry ${count} at +${at - s}: its value runs past the end`;
    p += vlen + free;
    count++;
  }
  if (p !== last) return `zipmap terminator at +${p - s}, before the end of its ${size} bytes`;
  if (count === 0) return 'empty zipmap';
  if (b[s] !== 254 && b[s] !== count) return `zipmap header says ${b[s]} entries, it holds ${count}`;
  return null;
}

// ---------------------------------------------------------------------------

export function u32le(b: Uint8Array, p: number): number {
  return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
}

export function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}
