/**
 * LZF, the compression Redis and Valkey use for strings in an RDB file
 * (rdbcompression yes). Two forms of the same decoder:
 *
 *  - lzfDecompress: a whole compressed payload in memory, for values whose
 *    content must be checked further (a listpack or ziplist stored
 *    compressed);
 *  - LzfChecker: a resumable check of a payload fed in pieces, for strings
 *    of any size: it never holds the output, only counts it, unless asked to
 *    keep the last 8 KiB (the longest LZF back reference) and the first
 *    bytes, so that a compressed container too large to buffer can still
 *    have its header and terminator checked.
 *
 * The stream: a control byte c < 32 starts a literal run of c + 1 bytes; any
 * other c is a back reference of length (c >> 5) + 2 (c >> 5 == 7: plus the
 * next byte) at distance ((c & 31) << 8) + next byte + 1. Redis's
 * lzf_decompress fails when a run or reference reads past the input, writes
 * past the stated length or reaches before the start of the output, and the
 * loader fails when the output is not exactly the stated length. Both forms
 * below fail in exactly those cases.
 */

/** Decompresses src[start, end) to exactly outLen bytes; null on any inconsistency. */
export function lzfDecompress(src: Uint8Array, start: number, end: number, outLen: number, into?: Uint8Array): Uint8Array | null {
  const out = into && into.length >= outLen ? into : new Uint8Array(outLen);
  let ip = start;
  let op = 0;
  while (ip < end) {
    const ctrl = src[ip++]!;
    if (ctrl < 32) {
      const len = ctrl + 1;
      if (ip + len > end || op + len > outLen) return null;
      out.set(src.subarray(ip, ip + len), op);
      ip += len;
      op += len;
    } else {
      let len = ctrl >> 5;
      if (len === 7) {
        if (ip >= end) return null;
        len += src[ip++]!;
      }
      if (ip >= end) return null;
      let ref = op - ((ctrl & 0x1f) << 8) - src[ip++]! - 1;
      len += 2;
      if (ref < 0 || op + len > outLen) return null;
      if (op - ref >= len) {
        out.copyWithin(op, ref, ref + len);
        op += len;
      } else {
        for (let i = 0; i < len; i++) out[op++] = out[ref++]!;
      }
    }
  }
  return op === outLen ? (out.length === outLen ? out : out.subarray(0, outLen)) : null;
}

/**
 * True when src[start, end) is a consistent LZF payload of exactly outLen
 * bytes, by the rules above, without producing the output: only its length
 * is counted (a back reference needs no bytes, only a distance within what
 * was produced). For the walker's fast path over a string wholly in memory;
 * any false sends the string to LzfChecker, which says what is wrong.
 */
export function lzfConsistent(src: Uint8Array, start: number, end: number, outLen: number): boolean {
  let ip = start;
  let op = 0;
  while (ip < end) {
    const ctrl = src[ip++]!;
    if (ctrl < 32) {
      ip += ctrl + 1;
      op += ctrl + 1;
      if (ip > end || op > outLen) return false;
    } else {
      let len = (ctrl >> 5) + 2;
      if (len === 9) {
        if (ip >= end) return false;
        len += src[ip++]!;
      }
      if (ip >= end) return false;
      if (((ctrl & 0x1f) << 8) + src[ip++]! + 1 > op) return false;
      op += len;
      if (op > outLen) return false;
    }
  }
  return op === outLen;
}

/** The longest back-reference distance, and so the output an LZF decoder must remember. */
const WINDOW = 8192;
const MASK = WINDOW - 1;
/** How many leading output bytes LzfChecker keeps when it keeps output at all. */
export const LZF_HEAD_BYTES = 16;

/**
 * A resumable LZF check. `feed` consumes compressed bytes (never more than
 * the payload has left) and returns how many it took; `error` is set on the
 * first inconsistency; `finished` once the whole payload was consumed and
 * found consistent.
 */
export class LzfChecker {
  /** Compressed bytes still to come. */
  private inLeft = 0;
  /** Output bytes produced so far, and the stated total. */
  private out = 0;
  private outLen = 0;
  /** Literal bytes of the current run still to come, and where they go in the output. */
  private lit = 0;
  private litPos = 0;
  /** A back reference's control byte whose extra bytes are still to come (-1: none), and its length byte (-1: not read). */
  private ctrl = -1;
  private ext = -1;
  /** With keepOutput: the last WINDOW output bytes (ring) and the first LZF_HEAD_BYTES. */
  private ring: Uint8Array | null = null;
  readonly head = new Uint8Array(LZF_HEAD_BYTES);
  error: string | null = null;

  start(compressedLen: number, outLen: number, keepOutput: boolean): void {
    this.inLeft = compressedLen;
    this.out = 0;
    this.outLen = outLen;
    this.lit = 0;
    this.litPos = 0;
    this.ctrl = -1;
    this.ext = -1;
    this.error = null;
    this.ring = keepOutput ? (this.ring ?? new Uint8Array(WINDOW)) : null;
    if (compressedLen === 0) this.conclude();
  }

  get finished(): boolean {
    return this.inLeft === 0 && this.error === null;
  }

  /** The last output byte (only with keepOutput, once finished and outLen > 0). */
  get lastByte(): number {
    return this.ring ? this.ring[(this.outLen - 1) & MASK]! : -1;
  }

  /** Consumes up to the payload's remaining bytes of buf[p, end); returns the new position. */
  feed(buf: Uint8Array, p: number, end: number): number {
    if (this.error !== null) return p;
    const start = p;
    const lim = Math.min(end, p + this.inLeft);
    const ring = this.ring;
    while (p < lim) {
      if (this.lit > 0) {
        const k = Math.min(this.lit, lim - p);
        if (ring) this.keep(buf, p, k);
        p += k;
        this.lit -= k;
        continue;
      }
      if (this.ctrl < 0) {
        const c = buf[p++]!;
        if (c < 32) {
          const len = c + 1;
          if (this.out + len > this.outLen) return this.fail(p, start, `a literal run writes past the stated ${this.outLen} bytes`);
          this.litPos = this.out;
          this.out += len;
          this.lit = len;
        } else {
          this.ctrl = c;
          this.ext = -1;
        }
        continue;
      }
      if (this.ctrl >> 5 === 7 && this.ext < 0) {
        this.ext = buf[p++]!;
        continue;
      }
      const dist = ((this.ctrl & 0x1f) << 8) + buf[p++]! + 1;
      const len = (this.ctrl >> 5) + (this.ext < 0 ? 0 : this.ext) + 2;
      this.ctrl = -1;
      if (dist > this.out) return this.fail(p, start, `a back reference reaches ${dist - this.out} bytes before the start of the output`);
      if (this.out + len > this.outLen) return this.fail(p, start, `a back reference writes past the stated ${this.outLen} bytes`);
      if (ring) this.copyBack(dist, len);
      this.out += len;
    }
    this.inLeft -= p - start;
    if (this.inLeft === 0) this.conclude();
    return p;
  }

  private fail(p: number, start: number, msg: string): number {
    this.inLeft -= p - start;
    this.error = msg;
    return p;
  }

  private conclude(): void {
    if (this.lit > 0) this.error = `the payload ends inside a literal run (${this.lit} bytes missing)`;
    else if (this.ctrl >= 0) this.error = 'the payload ends inside a back reference';
    else if (this.out !== this.outLen) this.error = `decompresses to ${this.out} bytes, not the stated ${this.outLen}`;
  }

  private keep(buf: Uint8Array, p: number, k: number): void {
    const ring = this.ring!;
    let o = this.litPos;
    for (let i = 0; i < k; i++, o++) {
      const b = buf[p + i]!;
      ring[o & MASK] = b;
      if (o < LZF_HEAD_BYTES) this.head[o] = b;
    }
    this.litPos = o;
  }

  private copyBack(dist: number, len: number): void {
    const ring = this.ring!;
    let o = this.out;
    for (let i = 0; i < len; i++, o++) {
      const b = ring[(o - dist) & MASK]!;
      ring[o & MASK] = b;
      if (o < LZF_HEAD_BYTES) this.head[o] = b;
    }
  }
}
