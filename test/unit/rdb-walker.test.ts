/**
 * The structural walk (src/rdb/walker.ts) on crafted files: every value type
 * and opcode it knows passes, in chunks of any size; a table of crafted
 * corruptions, each with a correct CRC-64 (so that only the walk can catch
 * it), fails with a message naming the offset; seeded fuzzing of truncations
 * and byte flips never crashes, hangs, or depends on where the chunks end.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidSnapshotError } from '../../src/core/errors.js';
import { RdbValidator, validateRdb, type RdbInfo, type RdbValidatorOptions } from '../../src/rdb/validate.js';
import { lzfConsistent, lzfDecompress, LzfChecker } from '../../src/rdb/lzf.js';
import { RdbWalker } from '../../src/rdb/walker.js';
import { buildRdb, chunksOf, concat, encodeLength, encodeString, prng } from '../helpers/rdb-builder.js';
import { fuzzOne, mutate } from '../helpers/rdb-fuzz.js';
import { everyOpcodeBody, everyTypeRecords, intset, len, listpack, ms64, record, str, streamListpack, ziplist, zipmap } from '../helpers/rdb-encodings.js';

const FIXTURES = resolve(import.meta.dirname, '../fixtures');

function outcome(data: Uint8Array, sizes: readonly number[] | null, options: RdbValidatorOptions = {}): RdbInfo | string {
  const v = new RdbValidator('f.rdb', options);
  for (const c of sizes ? chunksOf(data, sizes) : [data.slice()]) {
    v.update(c);
    c.fill(0xa5); // nothing may look at a chunk after update() returns
  }
  try {
    return v.finish();
  } catch (err) {
    if (err instanceof InvalidSnapshotError) return err.reason;
    throw err;
  }
}

const reason = (data: Uint8Array): string => {
  const r = outcome(data, null);
  if (typeof r !== 'string') throw new Error(`accepted: ${JSON.stringify(r.structure)}`);
  return r;
};

const fileWith = (...records: Uint8Array[]) => buildRdb({ body: concat([Uint8Array.of(0xfe, 0x00), ...records]) });

describe('RdbWalker: every type and opcode', () => {
  const body = everyOpcodeBody();
  const file = buildRdb({ body });

  it('walks one record of every value type, with every opcode around them', () => {
    const info = validateRdb('f', file);
    const records = everyTypeRecords();
    expect(info.structure!.keys).toBe(records.length + 1);
    expect(info.structure!.expires).toBe(records.filter((_, i) => i % 5 === 1 || i % 5 === 2).length);
    expect(info.structure!.eofOffset).toBe(file.length - 9);
    expect(Object.keys(info.structure!.types).sort()).toEqual(
      ['string', 'list', 'set', 'zset', 'hash', 'zset (binary scores)', 'module', 'hash (zipmap)', 'list (ziplist)', 'set (intset)',
        'zset (ziplist)', 'hash (ziplist)', 'list (quicklist)', 'stream', 'hash (listpack)', 'zset (listpack)', 'list (quicklist 2)',
        'stream (v2)', 'set (listpack)', 'stream (v3)', 'hash with field TTLs (pre-GA)', 'hash listpack with field TTLs (pre-GA)',
        'hash with field TTLs', 'hash listpack with field TTLs'].sort(),
    );
  });

  it.each(everyTypeRecords())('%s: the same outcome in 1-byte, 2-byte, 7-byte and random chunks', (_name, rec) => {
    const one = fileWith(rec);
    const whole = outcome(one, null);
    expect(typeof whole, String(whole)).toBe('object');
    const r = prng(rec.length);
    for (const sizes of [[1], [2], [7], Array.from({ length: 16 }, () => 1 + Math.floor(r() * 30))]) {
      expect(outcome(one, sizes)).toEqual(whole);
    }
  });

  it('walks the whole crafted file in chunks of every size from 1 to 64 bytes', () => {
    const whole = outcome(file, null);
    for (let size = 1; size <= 64; size++) expect(outcome(file, [size]), `chunks of ${size}`).toEqual(whole);
  });

  it('a Valkey file (VALKEY magic) knows the types it shares with Redis; a type beyond them is unknown there', () => {
    expect(validateRdb('f', buildRdb({ magic: 'VALKEY', body: concat([Uint8Array.of(0xfe, 0), ...everyTypeRecords().slice(0, 22).map(([, r]) => r)]) })).structure!.keys).toBe(22);
    const r = outcome(buildRdb({ magic: 'VALKEY', body: record(24, 'k', concat([ms64(1), len(0)])) }), null);
    expect(r).toMatch(/^structure: unknown value type or opcode 0x18 \(24\) at offset \d+$/);
  });

  it('validation crc does not walk', () => {
    const bad = fileWith(Uint8Array.of(0x22, 0x01, 0x02));
    expect(outcome(bad, null, { validation: 'crc' })).toMatchObject({ validation: 'crc', checksum: 'verified' });
    expect((outcome(bad, null, { validation: 'crc' }) as RdbInfo).structure).toBeUndefined();
  });
});

describe('RdbWalker: containers too large to buffer are checked by header and terminator', () => {
  const walk = (data: Uint8Array, maxBuffered: number, sizes: number[]) => {
    const w = new RdbWalker({ maxBuffered });
    for (const c of chunksOf(data, sizes)) w.update(c);
    return w.conclude(data.length - 8);
  };
  const big = listpack(Array.from({ length: 40 }, (_, i) => `element-${i}`));

  it('accepts a sound one and counts it, plain or LZF', () => {
    for (const form of ['auto', 'lzf'] as const) {
      const file = fileWith(record(20, 's', str(big, form)));
      for (const sizes of [[1], [5], [1000]]) {
        const r = walk(file, 64, sizes);
        expect(typeof r === 'object' && r.shallowContainers, `${form} ${sizes[0]}`).toBe(1);
      }
    }
    const info = validateRdb('f', fileWith(record(20, 's', str(big))));
    expect(info.structure!.shallowContainers).toBe(0); // the real limit is 32 MiB
  });

  it('rejects a wrong total size or a missing terminator, plain or LZF', () => {
    const noEnd = big.slice();
    noEnd[noEnd.length - 1] = 0x00;
    const wrongTotal = big.slice();
    wrongTotal[0]! ^= 1;
    for (const bad of [noEnd, wrongTotal]) {
      for (const form of ['auto', 'lzf'] as const) {
        const r = walk(fileWith(record(20, 's', str(bad, form))), 64, [3]);
        expect(r).toMatch(/checked by header and terminator only\) at offset \d+/);
      }
    }
  });
});

/** A listpack with one byte changed. */
function patched(b: Uint8Array, at: number, value: number): Uint8Array {
  const out = b.slice();
  out[at < 0 ? out.length + at : at] = value;
  return out;
}

const goodLp = listpack(['field', 'value', 'n', 300]);
const goodZl = ziplist(['a', 'bb', 5]);
const streamNode = streamListpack(['f'], [{ ms: 0, seq: 0, values: ['v'] }]);
const nodeKey = str(new Uint8Array(16), '6bit');

/** [name, body records, expected message]. Every file is built with a correct CRC-64. */
const CORRUPTIONS: Array<[string, Uint8Array, RegExp]> = [
  ['unknown value type 0x22 (the attack of issue 13)', Uint8Array.of(0x22, 0x01, 0x41), /^structure: unknown value type or opcode 0x22 \(34\) at offset \d+$/],
  ['unknown opcode 0xf3', Uint8Array.of(0xf3), /^structure: unknown value type or opcode 0xf3 \(243\) at offset \d+$/],
  ['pre-GA module value (type 6)', record(6, 'k', len(1)), /pre-release module value \(type 6\)/],
  ['pre-GA function opcode 0xf6', Uint8Array.of(0xf6, 0x00), /pre-release function opcode 0xf6/],
  ['invalid length encoding 0x82', concat([Uint8Array.of(0x00), Uint8Array.of(0x82)]), /unknown length encoding 0x82 at offset \d+/],
  ['unknown string encoding 0xc4', concat([Uint8Array.of(0x00, 0x01, 0x41, 0xc4)]), /unknown string encoding 0xc4 at offset \d+/],
  ['string encoding where a count belongs', record(2, 's', Uint8Array.of(0xc0, 0x01)), /string encoding byte 0xc0 where a length belongs/],
  ['LZF: output shorter than stated', record(0, 'k', concat([Uint8Array.of(0xc3), len(3), len(5), Uint8Array.of(1, 0x61, 0x62)])), /LZF string: decompresses to 2 bytes, not the stated 5/],
  ['LZF: literal run past the stated length', record(0, 'k', concat([Uint8Array.of(0xc3), len(4), len(2), Uint8Array.of(2, 0x61, 0x62, 0x63)])), /LZF string: a literal run writes past the stated 2 bytes/],
  ['LZF: back reference before the start', record(0, 'k', concat([Uint8Array.of(0xc3), len(4), len(10), Uint8Array.of(0, 0x61, 0x20, 0x05)])), /LZF string: a back reference reaches \d+ bytes before the start/],
  ['LZF: payload ends inside a literal run', record(0, 'k', concat([Uint8Array.of(0xc3), len(2), len(3), Uint8Array.of(2, 0x61)])), /LZF string: the payload ends inside a literal run/],
  ['LZF: payload ends inside a back reference', record(0, 'k', concat([Uint8Array.of(0xc3), len(3), len(5), Uint8Array.of(0, 0x61, 0x40)])), /LZF string: the payload ends inside a back reference/],
  ['listpack: total bytes wrong', record(16, 'h', str(patched(goodLp, 0, goodLp.length + 1))), /listpack header says \d+ bytes, the string holds \d+/],
  ['listpack: no terminator', record(16, 'h', str(patched(goodLp, -1, 0x00))), /listpack does not end with its terminator 0xFF/],
  ['listpack: element count wrong', record(16, 'h', str(patched(goodLp, 4, 3))), /listpack header says 3 elements, it holds 4/],
  ['listpack: invalid entry encoding', record(16, 'h', str(patched(goodLp, 6, 0xf5))), /listpack entry 0 at \+6: invalid encoding byte 0xf5/],
  ['listpack: wrong back-length', record(16, 'h', str(patched(goodLp, 12, 9))), /back-length does not match/],
  ['listpack: entry runs past the end', record(16, 'h', str(patched(goodLp, 6, 0xbf))), /listpack entry 0 at \+6: \d+ bytes run past the end/],
  ['hash listpack with an odd element count', record(16, 'h', str(listpack(['f', 'v', 'g']))), /listpack of 3 elements: not a whole number of 2-element tuples/],
  ['ziplist: total bytes wrong', record(10, 'l', str(patched(goodZl, 0, 99))), /ziplist header says 99 bytes/],
  ['ziplist: wrong previous-length', record(10, 'l', str(patched(goodZl, 13, 7))), /previous-length 7, the previous entry has 3 bytes/],
  ['ziplist: tail offset wrong', record(10, 'l', str(ziplist(['a', 'bb', 5], { tail: 10 }))), /ziplist tail offset 10, its last entry is at \+\d+/],
  ['ziplist: invalid encoding', record(10, 'l', str(patched(goodZl, 11, 0xc5))), /ziplist entry 0 at \+10: invalid encoding byte 0xc5/],
  ['intset: unsorted', record(11, 's', str(intset([3, 1]))), /intset element 1 is not greater than the one before it/],
  ['intset: size does not match the count', record(11, 's', str(concat([intset([1, 2]), Uint8Array.of(0)]))), /intset of 2 2-byte integers must be 12 bytes, the string holds 13/],
  ['intset: bad encoding', record(11, 's', str(patched(intset([1]), 0, 3))), /intset encoding 3 \(must be 2, 4 or 8\)/],
  ['zipmap: no terminator', record(9, 'z', str(patched(zipmap([['f', 'v']]), -1, 0x41))), /zipmap does not end with its terminator/],
  ['quicklist 2: unknown container 3', record(18, 'q', concat([len(1), len(3), str(goodLp)])), /quicklist node container 3 \(must be 1, plain, or 2, packed\)/],
  ['quicklist 2: empty plain node', record(18, 'q', concat([len(1), len(1), str('')])), /empty quicklist node/],
  ['quicklist: empty ziplist node', record(14, 'q', concat([len(1), str('')])), /empty string where a ziplist belongs/],
  ['stream: node ID not 16 bytes', record(15, 's', concat([len(1), str('short'), str(streamNode)])), /stream node ID that is not 16 bytes/],
  ['stream: node listpack with a wrong entry count', record(15, 's', concat([len(1), nodeKey, str(patched(streamNode, 6, 5))])), /stream node: /],
  ['stream: empty node listpack', record(19, 's', concat([len(1), nodeKey, str(listpack([]))])), /empty listpack/],
  ['module: unknown module opcode 9', record(7, 'm', concat([len(1234), len(9)])), /unknown module data opcode 9/],
  ['MODULE_AUX: when-opcode is not 2', concat([Uint8Array.of(0xf7), len(1), len(1), len(1), len(0)]), /module AUX "when" opcode 1 \(must be 2/],
  ['an integer-encoded string where a listpack belongs', record(17, 'z', Uint8Array.of(0xc0, 0x05)), /listpack stored as an integer-encoded string \(0xc0\)/],
  ['a compressed listpack that does not decompress', record(17, 'z', concat([Uint8Array.of(0xc3), len(3), len(20), Uint8Array.of(0, 1, 0x40)])), /listpack stored as an LZF string: invalid LZF data/],
  ['EOF opcode in the middle, then more data', concat([record(0, 'k', str('v')), Uint8Array.of(0xff), record(0, 'k2', str('v'))]), /EOF opcode at offset \d+, but \d+ bytes follow it before the trailer/],
  ['a value that runs over the EOF byte', concat([Uint8Array.of(0x00, 0x01, 0x6b, 0x05, 0x61)]), /the data ends inside a value \(the last key before it is a string at offset \d+\) \(no EOF opcode before the trailer at offset \d+\)/],
];

describe('RdbWalker: crafted corruptions (each with a correct CRC-64)', () => {
  it('has at least 30 cases', () => expect(CORRUPTIONS.length).toBeGreaterThanOrEqual(30));

  it.each(CORRUPTIONS)('%s', (_name, body, expected) => {
    const file = fileWith(body);
    expect(outcome(file, null, { validation: 'crc' })).toMatchObject({ checksum: 'verified' }); // the CRC cannot see it
    const r = reason(file);
    expect(r).toMatch(/^structure: /);
    expect(r).toMatch(/ at offset \d+/);
    expect(r).toMatch(expected);
    for (const sizes of [[1], [3], [64]]) expect(outcome(file, sizes), `chunks of ${sizes[0]}`).toBe(r);
  });
});

describe('RdbWalker: seeded fuzzing', () => {
  const corpus: Array<[string, Uint8Array]> = [
    ['crafted, every type', buildRdb({ body: everyOpcodeBody() })],
    ['crafted, every type, checksum 0', buildRdb({ body: everyOpcodeBody(), checksum: 'zero' })],
    ['redis 7.0 dump', new Uint8Array(readFileSync(join(FIXTURES, 'redis-7.0-small.rdb')))],
  ];

  it.each(corpus)('%s: 400 mutations never crash, hang or depend on chunking; zeroed trailers are caught by the walk', (_name, file) => {
    const r = prng(20261202);
    let rejected = 0;
    for (let i = 0; i < 400; i++) {
      const { outcome: res, violations } = fuzzOne(mutate(file, r), r);
      expect(violations, `mutation ${i}`).toEqual([]);
      if (typeof res === 'string') rejected++;
    }
    expect(rejected).toBeGreaterThan(200);
  });
});

describe('the attacks of issue 13', () => {
  it('a valid header, random bytes, an EOF byte and a correct CRC-64 is refused', () => {
    const r = prng(34);
    const junk = Uint8Array.from({ length: 4000 }, () => Math.floor(r() * 256));
    const file = buildRdb({ body: junk });
    expect(outcome(file, null, { validation: 'crc' })).toMatchObject({ checksum: 'verified' });
    expect(reason(file)).toMatch(/^structure: .* at offset \d+/);
  });

  it('a real dump with 100 bytes zeroed and a zeroed trailer is refused', () => {
    const file = new Uint8Array(readFileSync(join(FIXTURES, 'redis-7.0-small.rdb')));
    const bad = file.slice();
    bad.fill(0, 200, 300);
    bad.fill(0, bad.length - 8);
    expect(outcome(bad, null, { validation: 'crc' })).toMatchObject({ checksum: 'disabled' });
    expect(reason(bad)).toMatch(/^structure: /);
  });

  it('an LZF string whose lengths were damaged is refused', () => {
    const body = concat([Uint8Array.of(0xfe, 0), record(0, 'k', encodeString('z'.repeat(500), 'lzf'))]);
    const file = buildRdb({ body, checksum: 'zero' });
    const at = file.indexOf(0xc3, 11);
    const bad = file.slice();
    bad[at + 1] = encodeLength(3)[0]!; // the compressed length
    expect(reason(bad)).toMatch(/LZF string/);
  });
});

describe('RdbWalker: the inline path for string keys (plain, integer or LZF values wholly in one buffer)', () => {
  const lzfValue = (text: string) => str(text, 'lzf');
  /** A string key with an LZF value, raw: type 0, key, 0xC3, clen, olen, payload. */
  const rawLzf = (key: string, clen: number, olen: number, payload: number[]) =>
    record(0, key, concat([Uint8Array.of(0xc3), len(clen), len(olen), Uint8Array.from(payload)]));
  const expiryMs = (rec: Uint8Array) => concat([Uint8Array.of(0xfc), ms64(1_900_000_000_000), rec]);
  const expirySec = (rec: Uint8Array) => concat([Uint8Array.of(0xfd, 0x00, 0x00, 0x00, 0x70), rec]);

  /** Whole (the inline path), then two chunks split at every offset, then 1-byte chunks (always the task path). */
  const sameEverySplit = (file: Uint8Array) => {
    const whole = outcome(file, null);
    expect(outcome(file, [1]), '1-byte chunks').toEqual(whole);
    for (let at = 1; at < file.length; at++) expect(outcome(file, [at, file.length]), `split at ${at}`).toEqual(whole);
    return whole;
  };

  const VALID: Array<[string, Uint8Array[], number]> = [
    ['LZF value with back references (short and long)', [record(0, 'k', lzfValue('abc'.repeat(120)))], 0],
    ['LZF value that is one literal run', [record(0, 'k', concat([Uint8Array.of(0xc3), len(4), len(3), Uint8Array.of(2, 0x61, 0x62, 0x63)]))], 0],
    ['LZF value, empty payload and empty output', [rawLzf('k', 0, 0, [])], 0],
    ['LZF value whose back reference overlaps its output', [rawLzf('k', 5, 13, [0, 0x61, 0xe0, 0x03, 0x00])], 0],
    ['LZF key and LZF value', [concat([Uint8Array.of(0x00), str('key:'.repeat(20), 'lzf'), lzfValue('v'.repeat(300))])], 0],
    ['integer-encoded key and values (int8, int16, int32)', [record(0, '7', str(-5, 'int8')), record(0, '300', str(30000, 'int16')), record(0, '-70000', str(2_000_000_000, 'int32'))], 0],
    ['an expiry in milliseconds before an LZF value', [expiryMs(record(0, 'k', lzfValue('xyz'.repeat(50)))), record(0, 'k2', str('plain'))], 1],
    ['an expiry in seconds before an integer value', [expirySec(record(0, 'k', str(42, 'int8')))], 1],
    ['an expiry before a key that is not a string (the task path)', [expiryMs(record(2, 's', concat([len(1), str('m')])))], 1],
  ];

  it.each(VALID)('%s: accepted, counted, the same split at every offset', (_name, records, expires) => {
    const file = fileWith(...records);
    const whole = sameEverySplit(file);
    expect(typeof whole, String(whole)).toBe('object');
    const s = (whole as RdbInfo).structure!;
    expect(s.keys).toBe(records.length);
    expect(s.expires).toBe(expires);
  });

  const INVALID: Array<[string, Uint8Array, RegExp]> = [
    ['truncated payload (ends inside a literal run)', rawLzf('k', 2, 3, [2, 0x61]), /LZF string: the payload ends inside a literal run \(2 bytes missing\)/],
    ['truncated payload (ends inside a back reference)', rawLzf('k', 3, 5, [0, 0x61, 0x40]), /LZF string: the payload ends inside a back reference/],
    ['truncated payload (ends after a long reference\'s length byte)', rawLzf('k', 4, 40, [0, 0x61, 0xe0, 0x05]), /LZF string: the payload ends inside a back reference/],
    ['back reference before the start', rawLzf('k', 4, 10, [0, 0x61, 0x20, 0x05]), /LZF string: a back reference reaches 5 bytes before the start of the output/],
    ['back reference as the first control byte', rawLzf('k', 2, 3, [0x20, 0x00]), /LZF string: a back reference reaches 1 bytes before the start/],
    ['stated length too long', rawLzf('k', 4, 4, [2, 0x61, 0x62, 0x63]), /LZF string: decompresses to 3 bytes, not the stated 4/],
    ['stated length too short (literal run)', rawLzf('k', 4, 2, [2, 0x61, 0x62, 0x63]), /LZF string: a literal run writes past the stated 2 bytes/],
    ['stated length too short (back reference)', rawLzf('k', 4, 3, [0, 0x61, 0x20, 0x00]), /LZF string: a back reference writes past the stated 3 bytes/],
    ['the same after an expiry', expiryMs(rawLzf('k', 4, 10, [0, 0x61, 0x20, 0x05])), /LZF string: a back reference reaches 5 bytes before the start/],
    ['an LZF key that is invalid', concat([Uint8Array.of(0x00, 0xc3), len(2), len(3), Uint8Array.of(2, 0x61), str('v')]), /LZF string: /],
  ];

  it.each(INVALID)('%s: refused with the task path\'s message and offset, at every split', (_name, rec, expected) => {
    // A valid key first, so the bad one is not at the start of the data.
    const file = fileWith(record(0, 'ok', lzfValue('ok'.repeat(40))), rec);
    const whole = sameEverySplit(file);
    expect(typeof whole).toBe('string');
    expect(whole).toMatch(/^structure: /);
    expect(whole).toMatch(expected);
    expect(whole).toMatch(/ at offset \d+ \(in the string value of the key at offset \d+\)$/);
  });

  it('lzfConsistent agrees with lzfDecompress and LzfChecker on random and mutated payloads', () => {
    const r = prng(4242);
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const text = Array.from({ length: 1 + Math.floor(r() * 80) }, () => 'abcab'[Math.floor(r() * 5)]).join('');
      const good = encodeString(text, 'lzf');
      const head = good[1]! < 0x40 ? 1 : 2; // clen's bytes
      const olenAt = 1 + head;
      const payload = good.slice(olenAt + (good[olenAt]! < 0x40 ? 1 : 2));
      let olen = text.length;
      if (i % 3 === 1) payload[Math.floor(r() * payload.length)] = Math.floor(r() * 256);
      if (i % 3 === 2) olen += Math.floor(r() * 5) - 2;
      const cut = i % 7 === 6 ? Math.floor(r() * payload.length) : payload.length;
      const fast = lzfConsistent(payload, 0, cut, Math.max(0, olen));
      expect(fast, `case ${i}`).toBe(lzfDecompress(payload, 0, cut, Math.max(0, olen)) !== null);
      const checker = new LzfChecker();
      checker.start(cut, Math.max(0, olen), false);
      if (!checker.error) checker.feed(payload, 0, cut);
      expect(fast, `case ${i} (checker)`).toBe(checker.finished);
      if (fast) accepted++;
    }
    expect(accepted).toBeGreaterThan(1000);
  });
});
