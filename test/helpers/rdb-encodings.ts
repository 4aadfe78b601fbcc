/**
 * Builders for the compact encodings inside RDB values (listpack, ziplist,
 * intset, zipmap, stream node listpacks) and for whole key/value records of
 * every RDB type, written from the format descriptions (Redis's listpack.c,
 * ziplist.c, intset.c, zipmap.c, t_stream.c, rdb.c), independently of
 * src/rdb, so that the walker's tests do not share its code.
 */
import { ascii, concat, encodeLength, encodeString, type StringForm } from './rdb-builder.js';

export type Element = string | number;

const u16 = (n: number) => Uint8Array.of(n & 0xff, (n >> 8) & 0xff);
const u32 = (n: number) => Uint8Array.of(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
const u64 = (n: bigint) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigInt64(0, n, true);
  return out;
};

// --- listpack ----------------------------------------------------------------

function lpBacklen(l: number): Uint8Array {
  if (l <= 127) return Uint8Array.of(l);
  if (l < 16383) return Uint8Array.of(l >> 7, (l & 127) | 128);
  if (l < 2097151) return Uint8Array.of(l >> 14, ((l >> 7) & 127) | 128, (l & 127) | 128);
  return Uint8Array.of(l >> 21, ((l >> 14) & 127) | 128, ((l >> 7) & 127) | 128, (l & 127) | 128);
}

export function lpEntry(e: Element): Uint8Array {
  let enc: Uint8Array;
  if (typeof e === 'number') {
    if (e >= 0 && e <= 127) enc = Uint8Array.of(e);
    else if (e >= -4096 && e <= 4095) enc = Uint8Array.of(0xc0 | ((e >> 8) & 0x1f), e & 0xff);
    else if (e >= -32768 && e <= 32767) enc = concat([Uint8Array.of(0xf1), u16(e)]);
    else if (e >= -(2 ** 23) && e < 2 ** 23) enc = Uint8Array.of(0xf2, e & 0xff, (e >> 8) & 0xff, (e >> 16) & 0xff);
    else if (e >= -(2 ** 31) && e < 2 ** 31) enc = concat([Uint8Array.of(0xf3), u32(e)]);
    else enc = concat([Uint8Array.of(0xf4), u64(BigInt(e))]);
  } else {
    const b = ascii(e);
    if (b.length < 64) enc = concat([Uint8Array.of(0x80 | b.length), b]);
    else if (b.length < 4096) enc = concat([Uint8Array.of(0xe0 | (b.length >> 8), b.length & 0xff), b]);
    else enc = concat([Uint8Array.of(0xf0), u32(b.length), b]);
  }
  return concat([enc, lpBacklen(enc.length)]);
}

export function listpack(elements: readonly Element[], opts: { count?: number } = {}): Uint8Array {
  const body = concat(elements.map(lpEntry));
  const total = 6 + body.length + 1;
  return concat([u32(total), u16(opts.count ?? Math.min(elements.length, 65535)), body, Uint8Array.of(0xff)]);
}

/** A stream node listpack: master entry with `fields`, then entries (same fields unless given their own). */
export function streamListpack(fields: string[], entries: Array<{ ms: number; seq: number; values: Element[]; fields?: string[]; deleted?: boolean }>): Uint8Array {
  const els: Element[] = [entries.filter((e) => !e.deleted).length, entries.filter((e) => e.deleted).length, fields.length, ...fields, 0];
  for (const e of entries) {
    const same = !e.fields;
    const flags = (e.deleted ? 1 : 0) | (same ? 2 : 0);
    els.push(flags, e.ms, e.seq);
    if (!same) els.push(e.fields!.length, ...e.fields!);
    els.push(...e.values);
    const n = e.values.length;
    els.push(same ? n + 3 : n + 3 + n + 1);
  }
  return listpack(els);
}

// --- ziplist -----------------------------------------------------------------

function zlEncoding(e: Element): Uint8Array {
  if (typeof e === 'number') {
    if (e >= 0 && e <= 12) return Uint8Array.of(0xf1 + e);
    if (e >= -128 && e <= 127) return Uint8Array.of(0xfe, e & 0xff);
    if (e >= -32768 && e <= 32767) return concat([Uint8Array.of(0xc0), u16(e)]);
    if (e >= -(2 ** 23) && e < 2 ** 23) return Uint8Array.of(0xf0, e & 0xff, (e >> 8) & 0xff, (e >> 16) & 0xff);
    if (e >= -(2 ** 31) && e < 2 ** 31) return concat([Uint8Array.of(0xd0), u32(e)]);
    return concat([Uint8Array.of(0xe0), u64(BigInt(e))]);
  }
  const b = ascii(e);
  if (b.length < 64) return concat([Uint8Array.of(b.length), b]);
  if (b.length < 16384) return concat([Uint8Array.of(0x40 | (b.length >> 8), b.length & 0xff), b]);
  return concat([Uint8Array.of(0x80, (b.length >>> 24) & 0xff, (b.length >>> 16) & 0xff, (b.length >>> 8) & 0xff, b.length & 0xff), b]);
}

export function ziplist(elements: readonly Element[], opts: { count?: number; tail?: number } = {}): Uint8Array {
  const entries: Uint8Array[] = [];
  let prev = 0;
  let offset = 10;
  let lastAt = 10;
  for (const e of elements) {
    const prevlen = prev < 254 ? Uint8Array.of(prev) : concat([Uint8Array.of(0xfe), u32(prev)]);
    const entry = concat([prevlen, zlEncoding(e)]);
    lastAt = offset;
    entries.push(entry);
    offset += entry.length;
    prev = entry.length;
  }
  const body = concat(entries);
  const total = 10 + body.length + 1;
  return concat([u32(total), u32(opts.tail ?? lastAt), u16(opts.count ?? Math.min(elements.length, 65535)), body, Uint8Array.of(0xff)]);
}

// --- intset, zipmap ------------------------------------------------------------

export function intset(values: readonly number[], enc: 2 | 4 | 8 = 2): Uint8Array {
  const parts = [u32(enc), u32(values.length)];
  for (const v of values) parts.push(enc === 2 ? u16(v) : enc === 4 ? u32(v) : u64(BigInt(v)));
  return concat(parts);
}

export function zipmap(pairs: ReadonlyArray<[string, string]>): Uint8Array {
  const parts: Uint8Array[] = [Uint8Array.of(Math.min(pairs.length, 254))];
  const len = (n: number) => (n < 254 ? Uint8Array.of(n) : concat([Uint8Array.of(254), u32(n)]));
  for (const [k, v] of pairs) parts.push(len(k.length), ascii(k), len(v.length), Uint8Array.of(0), ascii(v));
  parts.push(Uint8Array.of(0xff));
  return concat(parts);
}

// --- records -------------------------------------------------------------------

/** A key/value record: type byte, key, value bytes. */
export function record(type: number, key: string, value: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(type), encodeString(key), value]);
}

export const str = (v: string | number | Uint8Array, form: StringForm = 'auto') => encodeString(v, form);
export const len = (n: number) => encodeLength(n);
export const binDouble = (d: number) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setFloat64(0, d, true);
  return out;
};
export const ms64 = (n: number) => u64(BigInt(n));

/** One record of every value type the walker knows, in the forms Redis writes (and a few it reads only). */
export function everyTypeRecords(): Array<[string, Uint8Array]> {
  const streamNodeKey = new Uint8Array(16);
  streamNodeKey[7] = 1;
  const node = streamListpack(['f1', 'f2'], [
    { ms: 0, seq: 0, values: ['a', 1] },
    { ms: 1, seq: 0, values: ['b', 2], deleted: true },
    { ms: 2, seq: 5, values: ['x', 'y', 'z'], fields: ['g1', 'g2', 'g3'] },
  ]);
  const streamHead = concat([len(1), str(streamNodeKey, '6bit'), str(node), len(2), len(1), len(2)]);
  const pelId = new Uint8Array(16);
  pelId[7] = 1;
  const cgroup = (v: 1 | 2 | 3) =>
    concat([
      str('group'), len(1), len(0), ...(v >= 2 ? [len(2)] : []),
      len(1), pelId, ms64(1700000000000), len(3), // global PEL: id, delivery time, delivery count
      len(1), str('alice'), ms64(1700000000000), ...(v === 3 ? [ms64(1700000000001)] : []), len(1), pelId, // consumer and its PEL
    ]);
  const v2meta = concat([len(1), len(0), len(0), len(0), len(3)]);
  return [
    ['string', record(0, 'k-str', str('value'))],
    ['string int', record(0, 'k-int', str(-5, 'int8'))],
    ['string lzf', record(0, 'k-lzf', str('abc'.repeat(100), 'lzf'))],
    ['list (linked)', record(1, 'k-list', concat([len(3), str('a'), str(2), str('c'.repeat(70))]))],
    ['set', record(2, 'k-set', concat([len(2), str('a'), str('b')]))],
    ['zset v1', record(3, 'k-zset1', concat([len(3), str('a'), Uint8Array.of(3, 0x31, 0x2e, 0x35), str('b'), Uint8Array.of(254), str('c'), Uint8Array.of(253)]))],
    ['hash', record(4, 'k-hash', concat([len(2), str('f'), str('v'), str('g'), str('w', 'lzf')]))],
    ['zset v2', record(5, 'k-zset2', concat([len(2), str('a'), binDouble(1.5), str('b'), binDouble(-Infinity)]))],
    ['module', record(7, 'k-module', concat([len(0x1234567890), len(2), len(7), len(1), len(3), len(3), Uint8Array.of(0, 0, 0x80, 0x3f), len(4), binDouble(2.5), len(5), str('module string'), len(0)]))],
    ['hash zipmap', record(9, 'k-zipmap', str(zipmap([['f', 'v'], ['field2', 'x'.repeat(300)]])))],
    ['list ziplist', record(10, 'k-zl', str(ziplist(['a', 1, 300, -70000, 2 ** 40, 'b'.repeat(300)])))],
    ['set intset', record(11, 'k-intset', str(intset([-3, 1, 2, 400])))],
    ['set intset 64', record(11, 'k-intset64', str(intset([-(2 ** 40), 5, 2 ** 40], 8)))],
    ['zset ziplist', record(12, 'k-zzl', str(ziplist(['a', 1, 'b', 2])))],
    ['hash ziplist', record(13, 'k-hzl', str(ziplist(['f', 'v', 'g', 7])))],
    ['list quicklist', record(14, 'k-ql', concat([len(2), str(ziplist(['a', 'b'])), str(ziplist(['c'.repeat(100)]), 'lzf')]))],
    ['stream v1', record(15, 'k-stream1', concat([streamHead, len(1), cgroup(1)]))],
    ['hash listpack', record(16, 'k-hlp', str(listpack(['f', 'v', 'n', 12345678])))],
    ['zset listpack', record(17, 'k-zlp', str(listpack(['a', '1.5', 'b', 2]), 'lzf'))],
    ['list quicklist 2', record(18, 'k-ql2', concat([len(2), len(2), str(listpack(['a', 1, 'b'])), len(1), str('a plain node')]))],
    ['stream v2', record(19, 'k-stream2', concat([streamHead, v2meta, len(1), cgroup(2)]))],
    ['set listpack', record(20, 'k-slp', str(listpack(['x', 'y', -1])))],
    ['stream v3', record(21, 'k-stream3', concat([streamHead, v2meta, len(2), cgroup(3), cgroup(3)]))],
    ['hash ttl pre-GA', record(22, 'k-httl0', concat([len(1), len(0), str('f'), str('v')]))],
    ['hash lp ttl pre-GA', record(23, 'k-hlpttl0', str(listpack(['f', 'v', 0])))],
    ['hash ttl', record(24, 'k-httl', concat([ms64(1700000000000), len(2), len(0), str('f'), str('v'), len(5), str('g'), str('w')]))],
    ['hash lp ttl', record(25, 'k-hlpttl', concat([ms64(1700000000000), str(listpack(['f', 'v', 0, 'g', 'w', 1700000000000]))]))],
  ];
}

/** Opcodes around the records: SELECTDB, RESIZEDB, expiry, FREQ, IDLE, MODULE_AUX, FUNCTION2, SLOT_INFO, AUX. */
export function everyOpcodeBody(): Uint8Array {
  const parts: Uint8Array[] = [
    Uint8Array.of(0xf7), len(0x2233445566), len(2), len(1), len(2), len(99), len(5), str('aux data'), len(0), // MODULE_AUX
    Uint8Array.of(0xf5), str("#!lua name=lib\nredis.register_function('f', function() return 1 end)"), // FUNCTION2
    Uint8Array.of(0xfe), len(0), Uint8Array.of(0xfb), len(30), len(2), // SELECTDB 0, RESIZEDB
    Uint8Array.of(0xf4), len(1234), len(30), len(2), // SLOT_INFO
  ];
  for (const [i, [, rec]] of everyTypeRecords().entries()) {
    if (i % 5 === 1) parts.push(Uint8Array.of(0xfc), ms64(1800000000000));
    if (i % 5 === 2) parts.push(Uint8Array.of(0xfd), u32(1800000000));
    if (i % 5 === 3) parts.push(Uint8Array.of(0xf9, 7));
    if (i % 5 === 4) parts.push(Uint8Array.of(0xf8), len(1000));
    parts.push(rec);
  }
  parts.push(Uint8Array.of(0xfe), len(5), Uint8Array.of(0xfa), str('lua'), str('x'), record(0, 'in-db-5', str('v')));
  return concat(parts);
}
