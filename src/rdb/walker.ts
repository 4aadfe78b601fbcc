/**
 * A streaming structural walk of an RDB file: every opcode and every value
 * after the magic, fed in chunks of any size (chunk boundaries anywhere),
 * in the same read pass as the copy and the CRC.
 *
 * What it checks, opcode by opcode, as Redis's loader (rdb.c rdbLoadRioWithLoadingCtx,
 * rdbLoadObject) reads them:
 *  - AUX, SELECTDB, RESIZEDB, EXPIRETIME, EXPIRETIME_MS, FREQ, IDLE,
 *    MODULE_AUX (module id, the "when" opcode and value, then module
 *    opcodes up to their EOF), FUNCTION2, SLOT_INFO, EOF;
 *  - every value type of RDB versions 1 to 12 (Valkey: the same types up to
 *    21): strings in every length and integer encoding and LZF (the
 *    compressed length must hold a consistent LZF stream that decompresses
 *    to exactly the stated length); lists, sets, sorted sets and hashes in
 *    their plain, ziplist, listpack, intset, zipmap and quicklist (1 and 2)
 *    forms, with the container checks of encodings.ts; streams (all three
 *    type versions: node listpacks, metadata, consumer groups, their PELs
 *    and consumers); hashes with field expiry (Redis 7.4); module values by
 *    their opcode framing;
 *  - the EOF opcode ends the data exactly where the trailer begins.
 * An unknown type or opcode fails the walk, with its offset and byte.
 *
 * How: a stack of small tasks (read an opcode, a length, a string, skip n
 * bytes, loop over a sequence n times, ...) interpreted over the current
 * buffer with indices. A task that needs more bytes than the buffer has
 * left stalls; the few bytes it needs are carried into the next chunk.
 * Long strings are skipped by counting, and LZF strings are checked as a
 * stream, so memory stays small. A container (listpack, ziplist, intset,
 * zipmap) is checked whole, so it is carried until complete, up to
 * MAX_BUFFERED_VALUE bytes; a larger one (Redis never writes one: they are
 * bounded by the *-max-listpack-* settings) is checked by its header and
 * terminator only, which the walk reports as a note.
 */

import { checkContainer, headerBytes, headerCheck, hex2, type ContainerKind, type ContainerRule } from './encodings.js';
import { lzfConsistent, lzfDecompress, LzfChecker, LZF_HEAD_BYTES } from './lzf.js';

/** A container larger than this is not buffered (see the module comment). */
export const MAX_BUFFERED_VALUE = 32 << 20;

export interface WalkSummary {
  /** Keys seen (expired ones included: the file holds them). */
  keys: number;
  /** Keys with an expiry. */
  expires: number;
  /** Offset of the EOF opcode. */
  eofOffset: number;
  /** Containers too large to buffer, checked by header and terminator only. */
  shallowContainers: number;
  /** Keys per value type (e.g. "hash (listpack)": 3). */
  types: Record<string, number>;
}

// Tasks. Each sits on the stack with an argument (a count, a byte count, a
// container rule index) and, for loops, a sequence index.
const T_MAGIC = 0;
const T_OPCODE = 1;
const T_STR = 2;
const T_SKIP = 3;
const T_LEN = 4;
const T_FIXED = 5;
const T_LZF = 6;
const T_LOOP = 7;
const T_COUNT = 8;
const T_BLOB = 9;
const T_DBLSTR = 10;
const T_MODOPS = 11;
const T_WHENOP = 12;
const T_QL2NODE = 13;
const T_NODEKEY = 14;
const T_BIGHEAD = 15;
const T_BIGTAIL = 16;
const T_NONEMPTY_STR = 17;
const T_DONE = 18;
/** A stream group's global PEL entry id (recorded), a consumer's PEL entry id (must be recorded), a group's start. */
const T_PEL_ID = 19;
const T_CPEL_ID = 20;
const T_GROUP_START = 21;

type Step = readonly [task: number, arg: number];

/** Container rules, by index (the T_BLOB argument). */
const RULES: ContainerRule[] = [
  { kind: 'listpack', tuple: 1, nonEmpty: false }, // 0: set listpack, quicklist 2 node
  { kind: 'listpack', tuple: 2, nonEmpty: false }, // 1: hash / zset listpack
  { kind: 'listpack', tuple: 3, nonEmpty: false }, // 2: hash listpack with field TTLs
  { kind: 'ziplist', tuple: 1, nonEmpty: false }, // 3: list ziplist, quicklist node
  { kind: 'ziplist', tuple: 2, nonEmpty: false }, // 4: hash / zset ziplist
  { kind: 'intset', tuple: 1, nonEmpty: true }, // 5
  { kind: 'zipmap', tuple: 1, nonEmpty: true }, // 6
  { kind: 'stream-listpack', tuple: 1, nonEmpty: true }, // 7
];
const R_LP = 0;
const R_LP2 = 1;
const R_LP3 = 2;
const R_ZL = 3;
const R_ZL2 = 4;
const R_INTSET = 5;
const R_ZIPMAP = 6;
const R_STREAM_LP = 7;

/** The most global PEL ids of one consumer group kept for the consumer cross-check (about 100 MB). */
const MAX_TRACKED_PEL = 1_000_000;

/** Sequences that loops repeat, by index (the T_LOOP / T_COUNT sequence). */
const SEQS: Step[][] = [];
function seq(...steps: Step[]): number {
  SEQS.push(steps);
  return SEQS.length - 1;
}
const S_STR = seq([T_STR, 0]);
const S_STR2 = seq([T_STR, 0], [T_STR, 0]);
const S_ZSET1 = seq([T_STR, 0], [T_DBLSTR, 0]);
const S_ZSET2 = seq([T_STR, 0], [T_FIXED, 8]);
const S_HASH_TTL = seq([T_LEN, 0], [T_STR, 0], [T_STR, 0]);
const S_QL1 = seq([T_BLOB, R_ZL]);
const S_QL2 = seq([T_QL2NODE, 0]);
const S_STREAM_NODE = seq([T_NODEKEY, 0], [T_BLOB, R_STREAM_LP]);
const S_PEL = seq([T_PEL_ID, 16], [T_FIXED, 8], [T_LEN, 0]);
const S_CPEL = seq([T_CPEL_ID, 16]);
const S_CONSUMER1 = seq([T_STR, 0], [T_FIXED, 8], [T_COUNT, S_CPEL]);
const S_CONSUMER3 = seq([T_STR, 0], [T_FIXED, 8], [T_FIXED, 8], [T_COUNT, S_CPEL]);
const S_CGROUP1 = seq([T_GROUP_START, 0], [T_STR, 0], [T_LEN, 0], [T_LEN, 0], [T_COUNT, S_PEL], [T_COUNT, S_CONSUMER1]);
const S_CGROUP2 = seq([T_GROUP_START, 0], [T_STR, 0], [T_LEN, 0], [T_LEN, 0], [T_LEN, 0], [T_COUNT, S_PEL], [T_COUNT, S_CONSUMER1]);
const S_CGROUP3 = seq([T_GROUP_START, 0], [T_STR, 0], [T_LEN, 0], [T_LEN, 0], [T_LEN, 0], [T_COUNT, S_PEL], [T_COUNT, S_CONSUMER3]);

const STREAM_V1: Step[] = [[T_COUNT, S_STREAM_NODE], [T_LEN, 0], [T_LEN, 0], [T_LEN, 0], [T_COUNT, S_CGROUP1]];
const STREAM_META_V2: Step[] = [[T_LEN, 0], [T_LEN, 0], [T_LEN, 0], [T_LEN, 0], [T_LEN, 0], [T_LEN, 0], [T_LEN, 0], [T_LEN, 0]];

/** What follows the key, by value type; undefined: not a type the walker knows. */
const VALUE_STEPS: Array<Step[] | undefined> = [];
VALUE_STEPS[0] = [[T_STR, 0]];
VALUE_STEPS[1] = [[T_COUNT, S_STR]];
VALUE_STEPS[2] = [[T_COUNT, S_STR]];
VALUE_STEPS[3] = [[T_COUNT, S_ZSET1]];
VALUE_STEPS[4] = [[T_COUNT, S_STR2]];
VALUE_STEPS[5] = [[T_COUNT, S_ZSET2]];
VALUE_STEPS[7] = [[T_LEN, 0], [T_MODOPS, 0]];
VALUE_STEPS[9] = [[T_BLOB, R_ZIPMAP]];
VALUE_STEPS[10] = [[T_BLOB, R_ZL]];
VALUE_STEPS[11] = [[T_BLOB, R_INTSET]];
VALUE_STEPS[12] = [[T_BLOB, R_ZL2]];
VALUE_STEPS[13] = [[T_BLOB, R_ZL2]];
VALUE_STEPS[14] = [[T_COUNT, S_QL1]];
VALUE_STEPS[15] = STREAM_V1;
VALUE_STEPS[16] = [[T_BLOB, R_LP2]];
VALUE_STEPS[17] = [[T_BLOB, R_LP2]];
VALUE_STEPS[18] = [[T_COUNT, S_QL2]];
VALUE_STEPS[19] = [[T_COUNT, S_STREAM_NODE], ...STREAM_META_V2, [T_COUNT, S_CGROUP2]];
VALUE_STEPS[20] = [[T_BLOB, R_LP]];
VALUE_STEPS[21] = [[T_COUNT, S_STREAM_NODE], ...STREAM_META_V2, [T_COUNT, S_CGROUP3]];
VALUE_STEPS[22] = [[T_COUNT, S_HASH_TTL]];
VALUE_STEPS[23] = [[T_BLOB, R_LP3]];
VALUE_STEPS[24] = [[T_FIXED, 8], [T_COUNT, S_HASH_TTL]];
VALUE_STEPS[25] = [[T_FIXED, 8], [T_BLOB, R_LP3]];
/** Valkey files (VALKEY magic) use the types shared with Redis up to here; later numbers are Valkey's own. */
const VALKEY_MAX_TYPE = 21;

const TYPE_NAMES: Record<number, string> = {
  0: 'string', 1: 'list', 2: 'set', 3: 'zset', 4: 'hash', 5: 'zset (binary scores)', 6: 'module (pre-GA)', 7: 'module',
  9: 'hash (zipmap)', 10: 'list (ziplist)', 11: 'set (intset)', 12: 'zset (ziplist)', 13: 'hash (ziplist)', 14: 'list (quicklist)',
  15: 'stream', 16: 'hash (listpack)', 17: 'zset (listpack)', 18: 'list (quicklist 2)', 19: 'stream (v2)', 20: 'set (listpack)',
  21: 'stream (v3)', 22: 'hash with field TTLs (pre-GA)', 23: 'hash listpack with field TTLs (pre-GA)', 24: 'hash with field TTLs',
  25: 'hash listpack with field TTLs',
};

const TASK_NAMES = ['the magic', 'an opcode', 'a string', 'a string', 'a length', 'a fixed-size field', 'an LZF string', 'a collection',
  'a count', 'an encoded value', 'a score', 'module data', 'module data', 'a quicklist node', 'a stream node ID', 'an encoded value',
  'an encoded value', 'a quicklist node', 'the end'];

export interface WalkerOptions {
  /** Containers up to this many bytes are checked whole (default MAX_BUFFERED_VALUE); tests make it small. */
  maxBuffered?: number;
}

export class RdbWalker {
  private readonly maxBuffered: number;

  constructor(options: WalkerOptions = {}) {
    this.maxBuffered = options.maxBuffered ?? MAX_BUFFERED_VALUE;
  }

  // The task stack, as parallel arrays.
  private readonly task: number[] = [T_OPCODE, T_MAGIC];
  private readonly arg: number[] = [0, 9];
  private readonly seqOf: number[] = [0, 0];

  /** Absolute offset of buf[0] of the buffer being walked. */
  private base = 0;
  /** Bytes needed from the stall position for the stalled task to progress. */
  private need = 0;
  private stalled = false;
  /** Bytes carried from the end of the last chunk (they start at absolute offset carryAt). */
  private carry = new Uint8Array(64);
  private carryLen = 0;
  private carryAt = 0;
  /** Bytes fed in total. */
  private total = 0;

  private valkey = false;
  private failure: string | null = null;
  /**
   * The current consumer group's global PEL ids: every consumer's PEL entry must be one of
   * them (Redis refuses the file otherwise: "Consumer entry not found in group global PEL").
   * Past MAX_TRACKED_PEL ids the check is dropped for that group, to keep memory bounded.
   */
  private readonly groupPel = new Set<string>();
  private groupPelTracked = true;
  private eofAt = -1;
  private keys = 0;
  private expires = 0;
  private shallow = 0;
  /** The last four keys' offsets and types (for a value found to run into the trailer). */
  private readonly recentKeys = new Float64Array(4).fill(-1);
  private readonly recentTypes = new Uint8Array(4);
  /** Keys seen per value type. */
  private readonly types = new Float64Array(256);
  /** The key being read: its offset and type (-1: not inside a key). */
  private keyAt = -1;
  private keyType = -1;

  private readonly lzf = new LzfChecker();
  /** The big container being checked by header and terminator: its rule, size and the header bytes read. */
  private bigRule = 0;
  private bigSize = 0;
  private readonly bigHead = new Uint8Array(LZF_HEAD_BYTES);
  /** The LZF string being checked is such a big container. */
  private lzfBig = false;
  private scratch = new Uint8Array(0);

  // Results of readLen (no allocation per call), and where it began reading.
  private lenValue = 0;
  private lenEnd = 0;
  private lenProbe = 0;

  /** Where the failure was found, the task that found it, and the key it was in. */
  private failAt = -1;
  private failTask = 0;
  private failKey = '';

  /** The first inconsistency found, or null. */
  get error(): string | null {
    return this.failure;
  }

  update(chunk: Uint8Array): void {
    const n = chunk.length;
    if (n === 0) return;
    if (this.failure !== null || this.eofAt >= 0) {
      this.total += n;
      return;
    }
    let p = 0;
    if (this.carryLen > 0) {
      p = this.drainCarry(chunk);
      if (p < 0) {
        this.total += n;
        return;
      }
    }
    this.base = this.total;
    this.total += n;
    if (this.failure !== null || this.eofAt >= 0) return;
    const r = this.run(chunk, p, n);
    if (this.failure !== null || this.eofAt >= 0) return;
    if (r < n) this.keepTail(chunk, r, n);
  }

  /**
   * Completes the stalled task from the carried bytes plus the start of
   * chunk. Returns the position in chunk where the walk continues, or -1
   * when chunk was used up (still stalled, or finished inside the carry).
   */
  private drainCarry(chunk: Uint8Array): number {
    let p = 0;
    const n = chunk.length;
    for (;;) {
      const take = Math.min(this.need - this.carryLen, n - p);
      this.reserveCarry(this.carryLen + take);
      this.carry.set(chunk.subarray(p, p + take), this.carryLen);
      this.carryLen += take;
      p += take;
      if (this.carryLen < this.need) return -1;
      this.base = this.carryAt;
      const r = this.run(this.carry, 0, this.carryLen);
      if (this.failure !== null || this.eofAt >= 0) {
        this.carryLen = 0;
        return -1;
      }
      if (r === this.carryLen) {
        this.carryLen = 0;
        this.shrinkCarry();
        return p;
      }
      // Stalled again inside the carry: keep its tail and go on filling.
      this.carry.copyWithin(0, r, this.carryLen);
      this.carryLen -= r;
      this.carryAt += r;
      if (p === n) return -1;
    }
  }

  private keepTail(chunk: Uint8Array, r: number, n: number): void {
    this.reserveCarry(n - r);
    this.carry.set(chunk.subarray(r, n), 0);
    this.carryLen = n - r;
    this.carryAt = this.base + r;
  }

  private reserveCarry(size: number): void {
    if (size <= this.carry.length) return;
    let cap = this.carry.length * 2;
    while (cap < size) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.carry.subarray(0, this.carryLen));
    this.carry = next;
  }

  private shrinkCarry(): void {
    if (this.carry.length > 1 << 20) this.carry = new Uint8Array(64);
  }

  /**
   * Concludes the walk: `dataEnd` is where the trailer begins (the file's
   * size minus 8, or the size for RDB < 5). Returns the summary, or a
   * message saying what is wrong.
   */
  conclude(dataEnd: number): WalkSummary | string {
    // A value that ran into the trailer was walked on over the trailer's bytes:
    // what is wrong is that the data ended inside it.
    const ranOver = this.failure !== null ? this.failAt >= dataEnd : this.eofAt < 0 || this.eofAt >= dataEnd;
    if (ranOver && (this.failure !== null || this.eofAt >= 0 || this.keyAt >= dataEnd)) {
      return `the data ends inside a value${this.lastKeyBefore(dataEnd)} (no EOF opcode before the trailer at offset ${dataEnd})`;
    }
    if (this.failure !== null) return this.failure;
    if (this.eofAt < 0) {
      const top = this.task[this.task.length - 1]!;
      if (top === T_OPCODE) return `no EOF opcode: the data ends at offset ${Math.min(this.total, dataEnd)}, where the next opcode belongs`;
      return `the data ends inside ${TASK_NAMES[top] ?? 'a value'}${this.inKey()} (no EOF opcode before the trailer at offset ${dataEnd})`;
    }
    if (this.eofAt + 1 !== dataEnd) {
      return this.eofAt + 1 < dataEnd
        ? `EOF opcode at offset ${this.eofAt}, but ${dataEnd - this.eofAt - 1} bytes follow it before the trailer`
        : `EOF opcode at offset ${this.eofAt} lies inside the trailer (the data should end at offset ${dataEnd})`;
    }
    const types: Record<string, number> = {};
    this.types.forEach((n, t) => {
      if (n > 0) types[TYPE_NAMES[t] ?? String(t)] = n;
    });
    return { keys: this.keys, expires: this.expires, eofOffset: this.eofAt, shallowContainers: this.shallow, types };
  }

  /** " (after the key at offset X, type T)" for the last key that starts before end, or "". */
  private lastKeyBefore(end: number): string {
    let best = -1;
    let type = 0;
    for (let i = 0; i < 4; i++) {
      const at = this.recentKeys[i]!;
      if (at >= 0 && at < end && at > best) {
        best = at;
        type = this.recentTypes[i]!;
      }
    }
    return best < 0 ? '' : ` (the last key before it is a ${TYPE_NAMES[type] ?? `type ${type}`} at offset ${best})`;
  }

  private inKey(): string {
    if (this.keyAt < 0) return '';
    return ` (in the ${TYPE_NAMES[this.keyType] ?? `type ${this.keyType}`} value of the key at offset ${this.keyAt})`;
  }

  private fail(p: number, msg: string): number {
    this.failure = `${msg} at offset ${this.base + p}${this.inKey()}`;
    this.failAt = this.base + p;
    this.failTask = this.task[this.task.length - 1]!;
    this.failKey = this.inKey();
    return p;
  }

  private stall(p: number, need: number): number {
    this.need = need;
    this.stalled = true;
    return p;
  }

  private push(task: number, arg: number, sq: number): void {
    this.task.push(task);
    this.arg.push(arg);
    this.seqOf.push(sq);
  }

  private pop(): void {
    this.task.pop();
    this.arg.pop();
    this.seqOf.pop();
  }

  private pushSteps(steps: readonly Step[]): void {
    for (let i = steps.length - 1; i >= 0; i--) {
      const s = steps[i]!;
      if (s[0] === T_COUNT) this.push(T_COUNT, 0, s[1]);
      else this.push(s[0], s[1], 0);
    }
  }

  /**
   * A length at p: sets lenValue and lenEnd and returns true; false when
   * more bytes are needed (stall set) or the byte is not a length (failure set).
   */
  private readLen(b: Uint8Array, p: number, end: number): boolean {
    this.lenProbe = p;
    if (p >= end) {
      this.stall(p, 1);
      return false;
    }
    const c = b[p]!;
    if (c < 0x40) {
      this.lenValue = c;
      this.lenEnd = p + 1;
      return true;
    }
    if (c < 0x80) {
      if (p + 2 > end) {
        this.stall(p, 2);
        return false;
      }
      this.lenValue = ((c & 0x3f) << 8) | b[p + 1]!;
      this.lenEnd = p + 2;
      return true;
    }
    if (c === 0x80) {
      if (p + 5 > end) {
        this.stall(p, 5);
        return false;
      }
      this.lenValue = u32be(b, p + 1);
      this.lenEnd = p + 5;
      return true;
    }
    if (c === 0x81) {
      if (p + 9 > end) {
        this.stall(p, 9);
        return false;
      }
      this.lenValue = u32be(b, p + 1) * 2 ** 32 + u32be(b, p + 5);
      this.lenEnd = p + 9;
      return true;
    }
    this.fail(p, c >= 0xc0 ? `string encoding byte 0x${hex2(c)} where a length belongs` : `unknown length encoding 0x${hex2(c)}`);
    return false;
  }

  /** Runs tasks over b[p, end) until they stall, fail or reach EOF; returns the position reached. */
  private run(b: Uint8Array, p: number, end: number): number {
    const task = this.task;
    const arg = this.arg;
    this.stalled = false;
    for (;;) {
      const top = task.length - 1;
      switch (task[top]) {
        case T_OPCODE: {
          if (p >= end) return this.stall(p, 1);
          const c = b[p]!;
          if (c === 0) {
            // The common case, a string key with a string value, both whole in the buffer and
            // consistent: no task pushed. Anything else (or anything wrong) takes the general
            // path, which words the failure.
            const q = wholeString(b, p + 1, end);
            const r = q < 0 ? -1 : wholeString(b, q, end);
            if (r >= 0) {
              this.keys++;
              this.types[0]!++;
              this.recentKeys[this.keys & 3] = this.base + p;
              this.recentTypes[this.keys & 3] = 0;
              p = r;
              break;
            }
          } else if ((c === 0xfc || c === 0xfd) && p + (c === 0xfc ? 9 : 5) < end && b[p + (c === 0xfc ? 9 : 5)] === 0) {
            // The same after an expiry (EXPIRETIME_MS, or EXPIRETIME in seconds).
            const k = p + (c === 0xfc ? 9 : 5);
            const q = wholeString(b, k + 1, end);
            const r = q < 0 ? -1 : wholeString(b, q, end);
            if (r >= 0) {
              this.expires++;
              this.keys++;
              this.types[0]!++;
              this.recentKeys[this.keys & 3] = this.base + k;
              this.recentTypes[this.keys & 3] = 0;
              p = r;
              break;
            }
          }
          if (c < 0xf4) {
            p = this.startKey(b, p, c);
            if (this.failure !== null) return p;
            break;
          }
          p = this.opcode(b, p, c);
          if (this.failure !== null || this.eofAt >= 0 || this.stalled) return p;
          break;
        }
        case T_STR: {
          if (p >= end) return this.stall(p, 1);
          const c = b[p]!;
          if (c < 0xc0) {
            if (!this.readLen(b, p, end)) return p;
            const len = this.lenValue;
            p = this.lenEnd;
            if (len <= end - p) {
              p += len;
              this.pop();
            } else {
              task[top] = T_SKIP;
              arg[top] = len - (end - p);
              return end;
            }
          } else {
            p = this.encodedString(b, p, end, c);
            if (this.failure !== null || this.stalled) return p;
          }
          break;
        }
        case T_SKIP: {
          const left = arg[top]!;
          if (left <= end - p) {
            p += left;
            this.pop();
            break;
          }
          arg[top] = left - (end - p);
          return end;
        }
        case T_LEN:
          if (!this.readLen(b, p, end)) return p;
          p = this.lenEnd;
          this.pop();
          break;
        case T_FIXED: {
          const k = arg[top]!;
          if (p + k > end) return this.stall(p, k);
          p += k;
          this.pop();
          break;
        }
        case T_LOOP: {
          const left = arg[top]!;
          if (left === 0) {
            this.pop();
            break;
          }
          arg[top] = left - 1;
          const steps = SEQS[this.seqOf[top]!]!;
          if (steps.length === 1 && steps[0]![0] === T_STR && p < end && b[p]! < 0x40 && (b[p]! & 0x3f) < end - p) {
            // The common case (small collection elements) without a push and a pop.
            p += 1 + b[p]!;
            break;
          }
          this.pushSteps(steps);
          break;
        }
        case T_COUNT: {
          if (!this.readLen(b, p, end)) return p;
          p = this.lenEnd;
          const sq = this.seqOf[top]!;
          task[top] = T_LOOP;
          arg[top] = this.lenValue;
          this.seqOf[top] = sq;
          break;
        }
        case T_DONE: // the end of a key's value
          this.pop();
          this.keyAt = -1;
          break;
        default:
          p = this.rareTask(b, p, end, task[top]!);
          if (this.failure !== null || this.stalled || this.eofAt >= 0) return p;
          // A task that consumed the rest of the buffer without finishing.
          if (p === end && this.taskOpenAtEnd()) return p;
      }
    }
  }

  /** True when the top task is one that keeps state across buffers (skip, LZF) and is not finished. */
  private taskOpenAtEnd(): boolean {
    const t = this.task[this.task.length - 1]!;
    return t === T_SKIP || t === T_LZF || t === T_BIGTAIL;
  }

  /** A value type byte c at p: the key string follows, then the value. */
  private startKey(b: Uint8Array, p: number, c: number): number {
    const steps = this.valkey && c > VALKEY_MAX_TYPE ? undefined : VALUE_STEPS[c];
    if (!steps) {
      if (c === 6) return this.fail(p, 'pre-release module value (type 6), which Redis cannot load,');
      return this.fail(p, `unknown value type or opcode 0x${hex2(c)} (${c})`);
    }
    this.keyAt = this.base + p;
    this.keyType = c;
    this.keys++;
    this.types[c]!++;
    this.recentKeys[this.keys & 3] = this.keyAt;
    this.recentTypes[this.keys & 3] = c;
    this.push(T_DONE, 0, 0);
    this.pushSteps(steps);
    this.push(T_STR, 0, 0); // the key
    return p + 1;
  }

  private opcode(b: Uint8Array, p: number, c: number): number {
    switch (c) {
      case 0xff: // EOF: the rest is the trailer, which conclude() measures
        this.eofAt = this.base + p;
        return p + 1;
      case 0xfe: // SELECTDB
        this.push(T_LEN, 0, 0);
        return p + 1;
      case 0xfd: // EXPIRETIME (seconds, 4 bytes)
        this.expires++;
        this.push(T_FIXED, 4, 0);
        return p + 1;
      case 0xfc: // EXPIRETIME_MS
        this.expires++;
        this.push(T_FIXED, 8, 0);
        return p + 1;
      case 0xfb: // RESIZEDB
        this.push(T_LEN, 0, 0);
        this.push(T_LEN, 0, 0);
        return p + 1;
      case 0xfa: // AUX
        this.push(T_STR, 0, 0);
        this.push(T_STR, 0, 0);
        return p + 1;
      case 0xf9: // FREQ
        this.push(T_FIXED, 1, 0);
        return p + 1;
      case 0xf8: // IDLE
        this.push(T_LEN, 0, 0);
        return p + 1;
      case 0xf7: // MODULE_AUX: module id, when-opcode (must be UINT), when, then module data
        this.push(T_MODOPS, 0, 0);
        this.push(T_LEN, 0, 0);
        this.push(T_WHENOP, 0, 0);
        this.push(T_LEN, 0, 0);
        return p + 1;
      case 0xf6:
        return this.fail(p, 'pre-release function opcode 0xf6, which Redis cannot load,');
      case 0xf5: // FUNCTION2: the library's code
        this.push(T_STR, 0, 0);
        return p + 1;
      case 0xf4: // SLOT_INFO: slot, keys, expires
        this.push(T_LEN, 0, 0);
        this.push(T_LEN, 0, 0);
        this.push(T_LEN, 0, 0);
        return p + 1;
      default:
        return this.fail(p, `unknown opcode 0x${hex2(c)}`);
    }
  }

  /** An integer or LZF string (first byte c >= 0xC0) at p; replaces the T_STR task. */
  private encodedString(b: Uint8Array, p: number, end: number, c: number): number {
    switch (c) {
      case 0xc0:
      case 0xc1:
      case 0xc2: {
        const k = c === 0xc0 ? 2 : c === 0xc1 ? 3 : 5;
        if (p + k > end) return this.stall(p, k);
        this.pop();
        return p + k;
      }
      case 0xc3: {
        if (!this.readLen(b, p + 1, end)) return this.stallFrom(p);
        const clen = this.lenValue;
        if (!this.readLen(b, this.lenEnd, end)) return this.stallFrom(p);
        const olen = this.lenValue;
        this.lzf.start(clen, olen, false);
        if (this.lzf.error) return this.fail(p, `LZF string: ${this.lzf.error}`);
        if (this.lzf.finished) this.pop();
        else this.task[this.task.length - 1] = T_LZF;
        return this.lenEnd;
      }
      default:
        return this.fail(p, `unknown string encoding 0x${hex2(c)}`);
    }
  }

  /**
   * After readLen stalled or failed inside a header that began at start:
   * readLen's need counts from where it began, the stall is reported from start.
   */
  private stallFrom(start: number): number {
    if (this.failure === null) this.need += this.lenProbe - start;
    return start;
  }

  private rareTask(b: Uint8Array, p: number, end: number, t: number): number {
    const top = this.task.length - 1;
    switch (t) {
      case T_MAGIC: {
        if (p + 9 > end) return this.stall(p, 9);
        this.valkey = b[p] === 0x56; // 'V'ALKEY
        this.pop();
        return p + 9;
      }
      case T_LZF: {
        const q = this.lzf.feed(b, p, end);
        if (this.lzf.error) return this.fail(q, `LZF string: ${this.lzf.error}`);
        if (!this.lzf.finished) return q;
        this.pop();
        if (!this.lzfBig) return q;
        this.lzfBig = false;
        this.bigHead.set(this.lzf.head);
        return this.bigDone(q, this.lzf.lastByte);
      }
      case T_GROUP_START:
        this.groupPel.clear();
        this.groupPelTracked = true;
        this.pop();
        return p;
      case T_PEL_ID:
      case T_CPEL_ID: {
        if (p + 16 > end) return this.stall(p, 16);
        const id = Buffer.from(b.buffer, b.byteOffset + p, 16).toString('latin1');
        if (t === T_PEL_ID) {
          if (this.groupPel.size >= MAX_TRACKED_PEL) this.groupPelTracked = false;
          else this.groupPel.add(id);
        } else if (this.groupPelTracked && !this.groupPel.has(id)) {
          return this.fail(p, "stream consumer's pending entry is not in its group's PEL");
        }
        this.pop();
        return p + 16;
      }
      case T_NONEMPTY_STR: {
        if (p >= end) return this.stall(p, 1);
        if (b[p] === 0) return this.fail(p, 'empty quicklist node');
        this.task[top] = T_STR;
        return p;
      }
      case T_DBLSTR: {
        if (p >= end) return this.stall(p, 1);
        const c = b[p]!;
        if (c >= 253) {
          this.pop();
          return p + 1;
        }
        if (p + 1 + c > end) return this.stall(p, 1 + c);
        this.pop();
        return p + 1 + c;
      }
      case T_MODOPS: {
        if (!this.readLen(b, p, end)) return p;
        const op = this.lenValue;
        const q = this.lenEnd;
        if (op === 0) {
          this.pop();
          return q;
        }
        if (op === 1 || op === 2) this.push(T_LEN, 0, 0);
        else if (op === 3) this.push(T_FIXED, 4, 0);
        else if (op === 4) this.push(T_FIXED, 8, 0);
        else if (op === 5) this.push(T_STR, 0, 0);
        else return this.fail(p, `unknown module data opcode ${op}`);
        return q;
      }
      case T_WHENOP: {
        if (!this.readLen(b, p, end)) return p;
        if (this.lenValue !== 2) return this.fail(p, `module AUX "when" opcode ${this.lenValue} (must be 2, an unsigned integer)`);
        this.pop();
        return this.lenEnd;
      }
      case T_QL2NODE: {
        if (!this.readLen(b, p, end)) return p;
        const container = this.lenValue;
        if (container === 1) this.task[top] = T_NONEMPTY_STR;
        else if (container === 2) {
          this.task[top] = T_BLOB;
          this.arg[top] = R_LP;
        } else return this.fail(p, `quicklist node container ${container} (must be 1, plain, or 2, packed)`);
        return this.lenEnd;
      }
      case T_NODEKEY: {
        // A stream node's master ID: a 16-byte string.
        if (p >= end) return this.stall(p, 1);
        if (b[p] === 16) {
          if (p + 17 > end) return this.stall(p, 17);
          this.pop();
          return p + 17;
        }
        if (b[p] === 0xc3) {
          this.task[top] = T_STR;
          return p; // an LZF form is valid, if unusual: checked as a string
        }
        return this.fail(p, 'stream node ID that is not 16 bytes');
      }
      case T_BLOB:
        return this.blob(b, p, end, top);
      case T_BIGHEAD: {
        const k = Math.min(headerBytes(RULES[this.bigRule]!.kind), this.bigSize);
        if (p + k > end) return this.stall(p, k);
        this.bigHead.set(b.subarray(p, p + k));
        this.task[top] = T_BIGTAIL;
        this.arg[top] = this.bigSize - k;
        return p + k;
      }
      case T_BIGTAIL: {
        const left = this.arg[top]!;
        if (left > end - p) {
          this.arg[top] = left - (end - p);
          return end;
        }
        const q = p + left;
        const last = left > 0 ? b[q - 1]! : this.bigHead[this.bigSize - 1]!;
        this.pop();
        return this.bigDone(q, last);
      }
      case T_LOOP:
      case T_COUNT:
      default:
        return this.fail(p, `internal: unexpected task ${t}`);
    }
  }

  /**
   * A string holding a container (rule arg[top]). Small ones are checked
   * whole (stalling until all their bytes are in one buffer); larger ones by
   * header and terminator while they stream past.
   */
  private blob(b: Uint8Array, p: number, end: number, top: number): number {
    const rule = RULES[this.arg[top]!]!;
    if (p >= end) return this.stall(p, 1);
    const c = b[p]!;
    if (c === 0xc3) {
      if (!this.readLen(b, p + 1, end)) return this.stallFrom(p);
      const clen = this.lenValue;
      if (!this.readLen(b, this.lenEnd, end)) return this.stallFrom(p);
      const olen = this.lenValue;
      const data = this.lenEnd;
      if (clen <= this.maxBuffered && olen <= this.maxBuffered) {
        if (data + clen > end) return this.stall(p, data - p + clen);
        if (this.scratch.length < olen) this.scratch = new Uint8Array(Math.max(olen, this.scratch.length * 2));
        const out = lzfDecompress(b, data, data + clen, olen, this.scratch);
        if (!out) return this.fail(p, `${rule.kind} stored as an LZF string: invalid LZF data (or not ${olen} bytes once decompressed)`);
        const msg = olen === 0 ? `empty ${rule.kind}` : checkContainer(rule, out, 0, olen);
        if (msg) return this.fail(p, msg);
        if (this.scratch.length > 1 << 20) this.scratch = new Uint8Array(0);
        this.pop();
        return data + clen;
      }
      // Too large to hold: stream the LZF check, keeping the output's head and last byte.
      this.bigRule = this.arg[top]!;
      this.bigSize = olen;
      this.shallow++;
      this.lzf.start(clen, olen, true);
      if (this.lzf.error) return this.fail(p, `${rule.kind} stored as an LZF string: ${this.lzf.error}`);
      this.task[top] = T_LZF;
      this.lzfBig = true;
      return data;
    }
    if (c >= 0xc0) return this.fail(p, `${rule.kind} stored as an integer-encoded string (0x${hex2(c)})`);
    if (!this.readLen(b, p, end)) return p;
    const len = this.lenValue;
    const data = this.lenEnd;
    if (len === 0) return this.fail(p, `empty string where a ${rule.kind} belongs`);
    if (len <= this.maxBuffered) {
      if (data + len > end) return this.stall(p, data - p + len);
      const msg = checkContainer(rule, b, data, data + len);
      if (msg) return this.fail(p, msg);
      this.pop();
      return data + len;
    }
    this.bigRule = this.arg[top]!;
    this.bigSize = len;
    this.shallow++;
    this.task[top] = T_BIGHEAD;
    return data;
  }

  private bigDone(p: number, last: number): number {
    const kind: ContainerKind = RULES[this.bigRule]!.kind;
    const msg = headerCheck(kind, this.bigHead, this.bigSize, last);
    if (msg) return this.fail(p, `${msg} (a ${this.bigSize}-byte ${kind}, checked by header and terminator only)`);
    return p;
  }
}

/**
 * The end of a string at p when it lies whole in b[p, end) and is
 * consistent: plain (up to 16383 bytes), integer-encoded, or LZF (lengths of
 * up to 16383 bytes) whose payload decompresses to exactly the stated
 * length. -1 otherwise: the general path then reads it, or fails on it with
 * its own message and offset.
 */
function wholeString(b: Uint8Array, p: number, end: number): number {
  if (p >= end) return -1;
  const c = b[p]!;
  let q: number;
  if (c < 0x40) q = p + 1 + c;
  else if (c < 0x80) q = p + 1 >= end ? end + 1 : p + 2 + (((c & 0x3f) << 8) | b[p + 1]!);
  else if (c === 0xc0) q = p + 2;
  else if (c === 0xc1) q = p + 3;
  else if (c === 0xc2) q = p + 5;
  else if (c === 0xc3) return wholeLzf(b, p + 1, end);
  else return -1;
  return q <= end ? q : -1;
}

/** The LZF part of wholeString: the compressed and stated lengths at p, then the payload. */
function wholeLzf(b: Uint8Array, p: number, end: number): number {
  if (p >= end) return -1;
  let c = b[p]!;
  let clen: number;
  if (c < 0x40) {
    clen = c;
    p += 1;
  } else if (c < 0x80 && p + 1 < end) {
    clen = ((c & 0x3f) << 8) | b[p + 1]!;
    p += 2;
  } else return -1;
  if (p >= end) return -1;
  c = b[p]!;
  let olen: number;
  if (c < 0x40) {
    olen = c;
    p += 1;
  } else if (c < 0x80 && p + 1 < end) {
    olen = ((c & 0x3f) << 8) | b[p + 1]!;
    p += 2;
  } else return -1;
  const q = p + clen;
  return q <= end && lzfConsistent(b, p, q, olen) ? q : -1;
}

function u32be(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}
