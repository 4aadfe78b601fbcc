import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FsError, InvalidSnapshotError } from '../../src/core/errors.js';
import { AUX_LIMIT, RdbValidator, lzfDecompress, validateRdb, validateRdbFile, type RdbInfo, type RdbValidatorOptions } from '../../src/rdb/validate.js';
import {
  ascii,
  auxField,
  buildRdb,
  chunksOf,
  concat,
  defaultAux,
  encodeLength,
  encodeString,
  lzfCompress,
  prng,
  referenceCrc64,
  type AuxPart,
  type StringForm,
} from '../helpers/rdb-builder.js';

const FIXTURES = resolve(import.meta.dirname, '../fixtures');
const SMALL = join(FIXTURES, 'redis-7.0-small.rdb');
const NO_CHECKSUM = join(FIXTURES, 'redis-7.0-checksum-disabled.rdb');
const REDIS_CHECK_RDB = '/usr/bin/redis-check-rdb';
const hasRedisCheckRdb = existsSync(REDIS_CHECK_RDB);
const REDIS_SERVER = '/usr/bin/redis-server';
const REDIS_CLI = '/usr/bin/redis-cli';
const hasRedisServer = hasRedisCheckRdb && existsSync(REDIS_SERVER) && existsSync(REDIS_CLI);
// In CI the Redis binaries are installed by .ci/run: their absence there is a failure, not a skip.
if (process.env.CI === 'true' && !hasRedisServer) throw new Error('CI: redis-server, redis-cli and redis-check-rdb must be installed in /usr/bin');
if (!hasRedisServer) console.warn('\n*** redis-server/redis-check-rdb not found: skipping the tests that need them ***\n');

const tmp = mkdtempSync(join(tmpdir(), 'rdb-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const hex16 = (n: bigint): string => n.toString(16).padStart(16, '0');

/** The rejection reason, or a failed expectation if data is accepted. */
function reasonOf(data: Uint8Array, feed: (v: RdbValidator) => void = (v) => v.update(data)): string {
  const v = new RdbValidator('/x/dump.rdb');
  feed(v);
  try {
    const info = v.finish();
    throw new Error(`accepted: ${JSON.stringify(info)}`);
  } catch (err) {
    if (!(err instanceof InvalidSnapshotError)) throw err;
    expect(err.path).toBe('/x/dump.rdb');
    expect(err.message).toBe(`/x/dump.rdb: not a valid RDB snapshot: ${err.reason}`);
    return err.reason;
  }
}

/** Outcome of feeding data in the given chunk sizes: the info, or the error message. */
function outcome(data: Uint8Array, sizes: readonly number[] | null, options: RdbValidatorOptions = {}): RdbInfo | string {
  const v = new RdbValidator('f.rdb', options);
  for (const c of sizes ? chunksOf(data, sizes) : [data.slice()]) {
    v.update(c);
    c.fill(0xa5); // the validator must not look at a chunk after update() returns
  }
  try {
    return v.finish();
  } catch (err) {
    if (err instanceof InvalidSnapshotError) return err.reason;
    throw err;
  }
}

/** A file whose byte before the trailer is not 0xFF, but whose CRC is right. */
function withoutEof(version = 11): Uint8Array {
  const good = buildRdb({ version, checksum: 'none' });
  const content = good.slice();
  content[content.length - 1] = 0xfe;
  const trailer = new Uint8Array(8);
  new DataView(trailer.buffer).setBigUint64(0, referenceCrc64(content), true);
  return concat([content, trailer]);
}

describe('RdbValidator: valid files', () => {
  it('accepts a synthetic Redis 7.2 dump and reads its AUX fields', () => {
    const file = buildRdb();
    const info = validateRdb('dump.rdb', file);
    expect(info).toEqual({
      format: 'redis',
      version: 11,
      versionKnown: true,
      aux: { redisVer: '7.2.4', redisBits: 64, ctime: 1735689600, usedMem: 1234567, aofBase: 0 },
      checksum: 'verified',
      storedCrc: hex16(referenceCrc64(file.subarray(0, file.length - 8))),
      bytes: file.length,
      validation: 'full',
      structure: { keys: 2, expires: 1, eofOffset: file.length - 9, shallowContainers: 0, types: { string: 2 } },
      warnings: [],
    } satisfies RdbInfo);
  });

  it('accepts the empty Redis 7.2 dump with trailer CRC a25affc0fe3b6ef0', () => {
    const file = buildRdb({
      aux: [['redis-ver', '7.2.0'], ['redis-bits', 64], ['ctime', 1706821741], ['used-mem', 1098928], ['aof-base', 0]],
      body: new Uint8Array(0),
    });
    const info = validateRdb('empty.rdb', file);
    expect(info.storedCrc).toBe('a25affc0fe3b6ef0');
    expect(info.checksum).toBe('verified');
    expect(info.bytes).toBe(88);
    expect(info.aux).toEqual({ redisVer: '7.2.0', redisBits: 64, ctime: 1706821741, usedMem: 1098928, aofBase: 0 });
  });

  it('accepts a dump written by redis-server 7.0.15 and reads redis-ver', async () => {
    const info = await validateRdbFile(SMALL);
    expect(info).toMatchObject({ format: 'redis', version: 10, versionKnown: true, checksum: 'verified', warnings: [] });
    expect(info.aux).toMatchObject({ redisVer: '7.0.15', redisBits: 64, aofBase: 0 });
    expect(info.aux.ctime).toBeGreaterThan(1_600_000_000);
    expect(info.aux.usedMem).toBeGreaterThan(0);
    const bytes = readFileSync(SMALL);
    expect(info.bytes).toBe(bytes.length);
    expect(info.storedCrc).toBe(hex16(bytes.readBigUInt64LE(bytes.length - 8)));
    // The real dump has 0xFF bytes inside values, before the EOF marker.
    expect(bytes.subarray(0, bytes.length - 9).includes(0xff)).toBe(true);
  });

  it.skipIf(!hasRedisCheckRdb)('redis-check-rdb agrees: accepts the fixture, rejects it with one flipped body byte', () => {
    const out = execFileSync(REDIS_CHECK_RDB, [SMALL], { encoding: 'utf8' });
    expect(out).toContain("AUX FIELD redis-ver = '7.0.15'");
    expect(out).toContain('RDB looks OK');

    const damaged = readFileSync(SMALL);
    damaged[200] = damaged[200]! ^ 0x10;
    const path = join(tmp, 'damaged.rdb');
    writeFileSync(path, damaged);
    const r = spawnSync(REDIS_CHECK_RDB, [path], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(reasonOf(damaged)).toMatch(/^CRC mismatch: stored [0-9a-f]{16}, computed [0-9a-f]{16}$/);
  });

  it('accepts a redis-server dump saved with rdbchecksum no, with a warning', async () => {
    const info = await validateRdbFile(NO_CHECKSUM);
    expect(info.checksum).toBe('disabled');
    expect(info.storedCrc).toBe('0000000000000000');
    expect(info.aux.redisVer).toBe('7.0.15');
    expect(info.warnings).toEqual(['checksum disabled (rdbchecksum no): the structure was walked and is sound, but damage inside values cannot be detected']);
    // validation: crc has nothing to check such a file with.
    const crcOnly = await validateRdbFile(NO_CHECKSUM, { validation: 'crc' });
    expect(crcOnly.warnings).toEqual(['checksum disabled (rdbchecksum no): the file could not be verified']);
  });

  it('accepts VALKEY080 and reads valkey-ver', () => {
    const file = buildRdb({ magic: 'VALKEY', aux: [['valkey-ver', '9.0.0'], ['redis-bits', 64], ['ctime', 1750000000]] });
    const info = validateRdb('v.rdb', file);
    expect(info).toMatchObject({ format: 'valkey', version: 80, versionKnown: true, checksum: 'verified', warnings: [] });
    expect(info.aux).toEqual({ valkeyVer: '9.0.0', redisBits: 64, ctime: 1750000000 });
  });

  it('accepts every known Redis version with a trailer (5..12) without warnings', () => {
    for (let version = 7; version <= 12; version++) {
      expect(validateRdb('f', buildRdb({ version })).warnings, `version ${version}`).toEqual([]);
    }
    for (const version of [5, 6]) {
      const info = validateRdb('f', buildRdb({ version, aux: [] }));
      expect(info).toMatchObject({ version, versionKnown: true, checksum: 'verified', warnings: [] });
    }
  });

  it('accepts an unrecognised version with a warning when the CRC matches', () => {
    const info = validateRdb('f', buildRdb({ version: 13 }));
    expect(info).toMatchObject({ format: 'redis', version: 13, versionKnown: false, checksum: 'verified' });
    expect(info.warnings).toEqual(['unrecognised RDB version 13 (REDIS0013): accepted because the CRC-64 matches']);

    const valkey = validateRdb('f', buildRdb({ magic: 'VALKEY', version: 81 }));
    expect(valkey).toMatchObject({ format: 'valkey', version: 81, versionKnown: false, checksum: 'verified' });
    expect(valkey.warnings).toEqual(['unrecognised RDB version 81 (VALKEY081): accepted because the CRC-64 matches']);

    // Valkey's reserved "foreign" range under the REDIS magic is unrecognised, not corrupt.
    expect(validateRdb('f', buildRdb({ version: 79 })).versionKnown).toBe(false);
    expect(validateRdb('f', buildRdb({ version: 9999 })).versionKnown).toBe(false);
  });

  it('rejects an unrecognised version whose CRC does not match', () => {
    expect(reasonOf(buildRdb({ version: 13, checksum: 0x1234n }))).toMatch(/^CRC mismatch: stored 0000000000001234, /);
  });

  it('accepts a checksum of 0 (rdbchecksum no) with a warning, and says so for an unknown version too', () => {
    const info = validateRdb('f', buildRdb({ checksum: 'zero' }));
    expect(info).toMatchObject({ checksum: 'disabled', storedCrc: '0000000000000000', versionKnown: true });
    expect(info.warnings).toEqual(['checksum disabled (rdbchecksum no): the structure was walked and is sound, but damage inside values cannot be detected']);

    const unknown = validateRdb('f', buildRdb({ version: 14, checksum: 'zero' }), { validation: 'crc' });
    expect(unknown.warnings).toEqual([
      'unrecognised RDB version 14 (REDIS0014): accepted without verification',
      'checksum disabled (rdbchecksum no): the file could not be verified',
    ]);
  });

  it('accepts RDB < 5 (no trailer) when the last byte is 0xFF, and says the checksum is absent', () => {
    const file = buildRdb({ version: 4, aux: [] });
    expect(file[file.length - 1]).toBe(0xff);
    const info = validateRdb('old.rdb', file);
    expect(info).toMatchObject({ version: 4, versionKnown: true, checksum: 'absent', storedCrc: null, bytes: file.length });
    expect(info.warnings).toEqual(['RDB version 4 has no checksum: the structure was walked and is sound, but damage inside values cannot be detected']);
    expect(validateRdb('old.rdb', file, { validation: 'crc' }).warnings).toEqual(['RDB version 4 has no checksum: only the header and the EOF marker were checked']);
    expect(validateRdb('f', buildRdb({ version: 1, aux: [], body: new Uint8Array(0) })).bytes).toBe(10);
  });
});

describe('RdbValidator: AUX string and length encodings', () => {
  const versionIn = (form: StringForm, value = '7.2.4'): RdbInfo =>
    validateRdb('f', buildRdb({ aux: [['redis-ver', { form, value }], ['redis-bits', 64]] }));

  it.each(['6bit', '14bit', '32bit', '64bit', 'lzf'] as const)('reads a %s-encoded value and the field after it', (form) => {
    const info = versionIn(form);
    expect(info.aux).toEqual({ redisVer: '7.2.4', redisBits: 64 });
  });

  it.each(['6bit', '14bit', '32bit', '64bit'] as const)('reads a %s-encoded key', (form) => {
    const info = validateRdb('f', buildRdb({ aux: [[{ form, value: 'ctime' }, 1700000000], ['aof-base', 1]] }));
    expect(info.aux).toEqual({ ctime: 1700000000, aofBase: 1 });
  });

  it('reads a value at the 6-bit/14-bit boundary and a long 14-bit value', () => {
    for (const len of [63, 64, 4096]) {
      const value = 'v'.repeat(len);
      const info = validateRdb('f', buildRdb({ aux: [['redis-ver', value], ['redis-bits', 32]] }));
      expect(info.aux.redisVer).toBe(value);
      expect(info.aux.redisBits).toBe(32);
    }
    // Longer values are skipped, not decoded; the field after is still read.
    const long = validateRdb('f', buildRdb({ aux: [['redis-ver', 'v'.repeat(16383)], ['redis-bits', 32]] }));
    expect(long.aux).toEqual({ redisBits: 32 });
    expect(Array.from(encodeLength(64))).toEqual([0x40, 0x40]);
    expect(Array.from(encodeLength(16384))).toEqual([0x80, 0, 0, 0x40, 0]);
  });

  it('decodes int8, int16 and int32 values, signed, and decimal strings', () => {
    const info = validateRdb(
      'f',
      buildRdb({
        aux: [
          ['redis-bits', { form: 'int8', value: 64 }],
          ['aof-base', { form: 'int8', value: -1 }],
          ['repl-stream-db', { form: 'int16', value: -300 }],
          ['used-mem', { form: 'int16', value: 30000 }],
          ['ctime', { form: 'int32', value: -5 }],
          ['repl-offset', { form: '6bit', value: '9007199254740991' }],
        ],
      }),
    );
    expect(info.aux).toEqual({ redisBits: 64, aofBase: -1, replStreamDb: -300, usedMem: 30000, ctime: -5, replOffset: 9007199254740991 });
    expect(validateRdb('f', buildRdb({ aux: [['ctime', { form: 'int32', value: 2147483647 }]] })).aux.ctime).toBe(2147483647);
    expect(validateRdb('f', buildRdb({ aux: [['used-mem', '3000000000']] })).aux.usedMem).toBe(3_000_000_000);
  });

  it('renders an integer-encoded string field as text', () => {
    expect(validateRdb('f', buildRdb({ aux: [['redis-ver', { form: 'int16', value: 700 }]] })).aux.redisVer).toBe('700');
  });

  it('decompresses LZF values with back references, and skips LZF values of unknown keys', () => {
    const replId = '8371b4fb1155b71f4a04d3e1bc3e18c4a990aeeb';
    const long = 'x'.repeat(5000) + 'tail';
    const compressedLong = lzfCompress(ascii(long));
    expect(compressedLong.length).toBeLessThan(100); // back references really used
    expect(Buffer.from(lzfDecompress(compressedLong, 0, compressedLong.length, long.length)!).toString()).toBe(long);
    const info = validateRdb(
      'f',
      buildRdb({
        aux: [
          ['redis-ver', { form: 'lzf', value: '7.2.4-7.2.4-7.2.4' }],
          ['repl-id', { form: 'lzf', value: replId }],
          ['some-module-thing', { form: 'lzf', value: long }],
          ['used-mem', { form: 'lzf', value: '123456789012' }],
          ['aof-base', 1],
        ],
      }),
    );
    expect(info.aux).toEqual({ redisVer: '7.2.4-7.2.4-7.2.4', replId, usedMem: 123456789012, aofBase: 1 });
  });

  it('skips unknown keys and stops at the first non-AUX opcode', () => {
    const afterBody = auxField('redis-ver', 'should-not-be-read');
    // SELECTDB 0; FUNCTION2 ""; MODULE_AUX (id 5, when-opcode 2, when 1, module EOF); RESIZEDB 0 0; SLOT_INFO 0 0 0.
    for (const op of [[0xfe, 0x00], [0xf5, 0x00], [0xf7, 0x05, 0x02, 0x01, 0x00], [0xfb, 0x00, 0x00], [0xf4, 0x00, 0x00, 0x00]]) {
      const body = concat([Uint8Array.from(op), afterBody]);
      const info = validateRdb('f', buildRdb({ aux: [['lua', 'x'.repeat(100)], ['redis-bits', 64]], body }));
      expect(info.aux).toEqual({ redisBits: 64 });
    }
  });

  it('does not let an AUX key named __proto__ or constructor do anything', () => {
    const info = validateRdb('f', buildRdb({ aux: [['__proto__', 'x'], ['constructor', 1], ['redis-bits', 64]] }));
    expect(info.aux).toEqual({ redisBits: 64 });
    expect(Object.getPrototypeOf(info.aux)).toBe(Object.prototype);
  });

  it('stops reading AUX fields after AUX_LIMIT bytes, with a warning, without buffering the rest', () => {
    const big = new Uint8Array(AUX_LIMIT + 1000).fill(0x61);
    const file = buildRdb({ aux: [['redis-bits', 64], ['module-blob', { form: '32bit', value: big }], ['redis-ver', '7.2.4']] });
    for (const sizes of [null, [65_536], [1_000_003]]) {
      const info = outcome(file, sizes);
      if (typeof info === 'string') throw new Error(info);
      expect(info.aux).toEqual({ redisBits: 64 });
      expect(info.checksum).toBe('verified');
      expect(info.warnings).toEqual([
        `AUX fields extend past the first ${AUX_LIMIT} bytes: stopped reading them at offset 23`,
      ]);
    }
  });
});

describe('RdbValidator: rejections', () => {
  it('rejects a bad magic, showing the bytes safely', () => {
    expect(reasonOf(ascii('RDB0011xxxxxxxxxxxxxxxxxxxxxxx'))).toBe('not an RDB file: bad magic "RDB0011xx"');
    expect(reasonOf(Uint8Array.of(0x00, 0x01, 0x22, 0x5c, 0x7f, 0x41, 0xff, 0x0a, 0x20, 0x42))).toBe(
      'not an RDB file: bad magic "\\x00\\x01\\x22\\x5c\\x7fA\\xff\\x0a "',
    );
    expect(reasonOf(buildRdb().map((b, i) => (i === 8 ? 0x61 : b)))).toBe('not an RDB file: bad magic "REDIS001a"');
    expect(reasonOf(ascii('VALKEY08x0'))).toBe('not an RDB file: bad magic "VALKEY08x"');

    expect(reasonOf(ascii('redis0011'))).toBe('not an RDB file: bad magic "redis0011"');
    // A short file that is already not a magic prefix says "bad magic", not "truncated".
    expect(reasonOf(ascii('{"a'))).toBe('not an RDB file: bad magic "{\\x22a"');
  });

  it('reports a bad magic early, so a copy can stop', () => {
    const v = new RdbValidator('f');
    v.update(ascii('GIF8'));
    expect(v.earlyError).toBeInstanceOf(InvalidSnapshotError);
    expect(v.earlyError?.reason).toBe('not an RDB file: bad magic "GIF8"');
    const ok = new RdbValidator('f');
    ok.update(ascii('REDIS001'));
    expect(ok.earlyError).toBeNull();
  });

  it('rejects REDIS0000', () => {
    expect(reasonOf(buildRdb({ version: 0, aux: [], checksum: 'none' }))).toBe('unsupported RDB version 0 (REDIS0000)');
  });

  it('rejects short files with clear wording', () => {
    expect(reasonOf(new Uint8Array(0))).toBe('truncated: 0 bytes (empty file)');
    expect(reasonOf(ascii('REDI'))).toBe('truncated: 4 bytes');
    expect(reasonOf(ascii('VALKEY08'))).toBe('truncated: 8 bytes');
    expect(reasonOf(ascii('REDIS0011'))).toBe('truncated: 9 bytes, no EOF marker');
    expect(reasonOf(concat([ascii('REDIS0011'), new Uint8Array(8).fill(0xff)]))).toBe('truncated: 17 bytes, no EOF marker');
    expect(reasonOf(ascii('REDIS0004'))).toBe('truncated: 9 bytes, no EOF marker');
  });

  it('rejects a file without 0xFF before the trailer (or at the end for RDB < 5)', () => {
    expect(reasonOf(withoutEof())).toMatch(/^truncated: \d+ bytes, no EOF marker \(0xFF\) before the checksum trailer$/);
    const old = buildRdb({ version: 4, aux: [] });
    old[old.length - 1] = 0x00;
    expect(reasonOf(old)).toMatch(/^truncated: \d+ bytes, no EOF marker \(0xFF\) at the end of the file$/);
  });

  it('rejects a CRC mismatch with both values', () => {
    const file = buildRdb({ checksum: 0x0123456789abcdefn });
    const computed = hex16(referenceCrc64(file.subarray(0, file.length - 8)));
    expect(reasonOf(file)).toBe(`CRC mismatch: stored 0123456789abcdef, computed ${computed}`);
  });

  it('rejects an AUX value whose length runs past the end of the file as truncated', () => {
    // Declares 1000 bytes; the file has far fewer.
    const file = buildRdb({ aux: [['redis-bits', 64], ['redis-ver', { raw: concat([encodeLength(1000), ascii('7.2')]) }]], body: new Uint8Array(0) });
    expect(reasonOf(file)).toBe(`truncated: ${file.length} bytes, AUX field at offset 23 runs past the end of the data`);
    // A 64-bit length far beyond anything.
    const huge = buildRdb({ aux: [['redis-ver', { raw: Uint8Array.of(0x81, 0, 0, 1, 0, 0, 0, 0, 0) }]] });
    expect(reasonOf(huge)).toBe(`truncated: ${huge.length} bytes, AUX field at offset 9 runs past the end of the data`);
  });

  it('rejects an AUX value that ends inside the checksum trailer as truncated', () => {
    // value length chosen so that the field ends 3 bytes into the trailer
    const base = buildRdb({ aux: [['redis-ver', 'x']], body: new Uint8Array(0) });
    // base = magic(9) + FA 09 redis-ver 01 x (13) + FF + 8; make the value swallow FF and 3 trailer bytes
    const file = buildRdb({ aux: [['redis-ver', { raw: concat([encodeLength(5), ascii('x')]) }]], body: new Uint8Array(0) });
    expect(file.length).toBe(base.length);
    expect(reasonOf(file)).toBe(`truncated: ${file.length} bytes, AUX field at offset 9 runs past the end of the data`);
  });

  it('rejects malformed AUX encodings (with a valid CRC)', () => {
    expect(reasonOf(buildRdb({ aux: [['redis-bits', 64], ['redis-ver', { raw: Uint8Array.of(0x82, 0, 0, 0, 1) }]] }))).toBe(
      'malformed AUX field at offset 23: unknown length encoding 0x82',
    );
    expect(reasonOf(buildRdb({ aux: [['redis-ver', { raw: Uint8Array.of(0xc4, 0) }]] }))).toBe(
      'malformed AUX field at offset 9: unknown string encoding 0xc4',
    );
    expect(reasonOf(buildRdb({ aux: [['redis-ver', { raw: Uint8Array.of(0xc3, 0xc0, 1, 0) }]] }))).toBe(
      'malformed AUX field at offset 9: string encoding 0xc0 where a length was expected',
    );
    // LZF data that decompresses to fewer bytes than announced.
    const lzf = concat([Uint8Array.of(0xc3), encodeLength(3), encodeLength(10), Uint8Array.of(0x01, 0x61, 0x62)]);
    expect(reasonOf(buildRdb({ aux: [['redis-ver', { raw: lzf }]] }))).toBe(
      'malformed AUX field at offset 9: corrupt LZF-compressed string',
    );
  });

  it('rejects AUX fields in a file that claims RDB < 7', () => {
    expect(reasonOf(buildRdb({ version: 6 }))).toBe('AUX field at offset 9 in an RDB version 6 file (AUX fields start at version 7)');
  });

  it('rejects every truncation of a synthetic file and of the real dump', () => {
    const real = new Uint8Array(readFileSync(SMALL));
    for (const file of [buildRdb(), buildRdb({ magic: 'VALKEY' }), real, buildRdb({ checksum: 'zero' })]) {
      for (let len = 0; len < file.length; len++) {
        const reason = reasonOf(file.subarray(0, len));
        expect(reason, `length ${len}`).toMatch(/^(truncated|no EOF marker|CRC mismatch|AUX field|malformed AUX|not an RDB file)/);
      }
    }
  });

  it('RDB < 5 has no checksum: validation crc misses a truncation that happens to end in 0xFF; the structural walk catches every one', () => {
    const file = buildRdb({ version: 4, aux: [] });
    let accepted = 0;
    for (let len = 0; len < file.length; len++) {
      const cut = file.subarray(0, len);
      if (len >= 10 && cut[len - 1] === 0xff) {
        expect(validateRdb('f', cut, { validation: 'crc' }).checksum).toBe('absent');
        accepted++;
        expect(reasonOf(cut), `length ${len}`).toMatch(/^structure: (the data ends inside a string \(in the string value of the key at offset \d+\)|no EOF opcode: the data ends at offset \d+)/);
      } else {
        expect(reasonOf(cut), `length ${len}`).toMatch(/^(truncated|no EOF marker)/);
      }
    }
    expect(accepted).toBe(3); // the 0xFF bytes inside the default body's value
  });

  it('rejects every single-bit flip, with the CRC catching everything after the magic', () => {
    for (const file of [buildRdb(), buildRdb({ magic: 'VALKEY' }), new Uint8Array(readFileSync(SMALL))]) {
      const n = file.length;
      for (let pos = 0; pos < n; pos++) {
        for (let bit = 0; bit < 8; bit++) {
          const damaged = file.slice();
          damaged[pos] = damaged[pos]! ^ (1 << bit);
          const reason = reasonOf(damaged);
          const where = `byte ${pos} bit ${bit}`;
          if (pos < 9) {
            expect(reason, where).toMatch(/^(not an RDB file: bad magic|CRC mismatch|unsupported RDB version 0|truncated: \d+ bytes, no EOF marker \(0xFF\) at the end of the file|AUX field at offset 9 in an RDB version)/);
          } else if (pos === n - 9) {
            expect(reason, where).toMatch(/^truncated: \d+ bytes, no EOF marker \(0xFF\) before the checksum trailer$/);
          } else {
            expect(reason, where).toMatch(/^CRC mismatch: stored [0-9a-f]{16}, computed [0-9a-f]{16}$/);
          }
        }
      }
    }
  });

  it('flips in the magic digits that give another version are still caught by the CRC', () => {
    const file = buildRdb({ version: 11 });
    const damaged = file.slice();
    damaged[8] = 0x30; // REDIS0011 -> REDIS0010, a valid, known version
    expect(reasonOf(damaged)).toMatch(/^CRC mismatch/);
    damaged[8] = 0x33; // -> REDIS0013, unrecognised
    expect(reasonOf(damaged)).toMatch(/^CRC mismatch/);
  });
});

describe('RdbValidator: streaming', () => {
  const r = prng(42);
  const randomSizes = Array.from({ length: 64 }, () => 1 + Math.floor(r() * 40));
  const files: Array<[string, Uint8Array]> = [
    ['synthetic', buildRdb()],
    ['valkey', buildRdb({ magic: 'VALKEY', aux: [['valkey-ver', '9.0.0'], ...defaultAux().slice(1)] })],
    ['real dump', new Uint8Array(readFileSync(SMALL))],
    ['checksum 0', buildRdb({ checksum: 'zero' })],
    ['RDB 4', buildRdb({ version: 4, aux: [] })],
    ['unknown version', buildRdb({ version: 13 })],
    ['CRC mismatch', buildRdb({ checksum: 1n })],
    ['no EOF', withoutEof()],
    ['truncated AUX', buildRdb({ aux: [['redis-ver', { raw: concat([encodeLength(200), ascii('x')]) }]], body: new Uint8Array(0) })],
    ['bad magic', ascii('hello world, this is not a dump')],
    ['short', concat([ascii('REDIS0011'), Uint8Array.of(0xff)])],
  ];

  it.each(files)('%s: 1-byte, 7-byte, 8/9/10-byte and random chunks give the same outcome as one chunk', (_name, file) => {
    const whole = outcome(file.slice(), null);
    for (const sizes of [[1], [7], [8], [9], [10], [2, 1, 16, 3], randomSizes]) {
      expect(outcome(file, sizes), `chunks ${sizes.slice(0, 4).join(',')}`).toEqual(whole);
    }
  });

  it('handles a large body in big and odd-sized chunks', () => {
    const r2 = prng(7);
    const body = new Uint8Array(3_000_001);
    for (let i = 0; i < body.length; i++) body[i] = (r2() * 256) | 0;
    body[0] = 0xfe;
    body[1] = 0x00;
    const file = buildRdb({ body });
    // Random bytes are no RDB structure: the CRC layer alone here (validation crc).
    const whole = outcome(file.slice(), null, { validation: 'crc' });
    if (typeof whole === 'string') throw new Error(whole);
    expect(whole.checksum).toBe('verified');
    for (const sizes of [[1 << 20], [65_537], [16 << 20], [5, 1_500_000, 3]]) {
      expect(outcome(file, sizes, { validation: 'crc' })).toEqual(whole);
    }
    expect(outcome(file, null)).toMatch(/^structure: /);
  });

  it('throws on update() after finish(), and finish() repeats its outcome', () => {
    const v = new RdbValidator('f');
    v.update(buildRdb());
    const first = v.finish();
    expect(v.finish()).toEqual(first);
    expect(() => v.update(Uint8Array.of(1))).toThrow(/after finish/);

    const bad = new RdbValidator('f');
    bad.update(ascii('nope'));
    expect(() => bad.finish()).toThrow(InvalidSnapshotError);
    expect(() => bad.finish()).toThrow(InvalidSnapshotError);
  });
});

describe.skipIf(!hasRedisServer)('against a live redis-server', () => {
  it('validates fresh dumps (compressed or not) like redis-check-rdb does', async () => {
    const dir = mkdtempSync(join(tmp, 'redis-'));
    const sock = join(dir, 'redis.sock');
    const server = spawn(
      REDIS_SERVER,
      ['--port', '0', '--unixsocket', sock, '--dir', dir, '--save', '', '--appendonly', 'no', '--enable-debug-command', 'local'],
      { stdio: 'ignore' },
    );
    const cli = (...args: string[]): string => execFileSync(REDIS_CLI, ['-s', sock, ...args], { encoding: 'utf8' }).trim();
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      expect(cli('PING')).toBe('PONG');
      expect(cli('DEBUG', 'POPULATE', '20000', 'key', '64')).toBe('OK');
      cli('RPUSH', 'list', 'a', 'b', '\xff');
      cli('HSET', 'hash', 'f', 'v'.repeat(500));
      const version = cli('INFO', 'server').match(/redis_version:(\S+)/)![1]!;
      // (rdbchecksum cannot be changed at run time; the checksum-disabled fixture covers it.)
      for (const compression of ['yes', 'no']) {
        expect(cli('CONFIG', 'SET', 'rdbcompression', compression)).toBe('OK');
        expect(cli('SAVE')).toBe('OK');
        const path = join(dir, 'dump.rdb');
        const info = await validateRdbFile(path);
        expect(info.aux.redisVer).toBe(version);
        expect(info.checksum).toBe('verified');
        expect(info.bytes).toBeGreaterThan(20000 * 10); // several 64 KiB CRC blocks
        expect(spawnSync(REDIS_CHECK_RDB, [path]).status).toBe(0);
        // One flipped byte in the middle: both tools reject.
        const damaged = new Uint8Array(readFileSync(path));
        damaged[damaged.length >> 1] = damaged[damaged.length >> 1]! ^ 0x01;
        const bad = join(dir, 'bad.rdb');
        writeFileSync(bad, damaged);
        expect(spawnSync(REDIS_CHECK_RDB, [bad]).status).not.toBe(0);
        await expect(validateRdbFile(bad)).rejects.toThrow(/CRC mismatch/);
      }
    } finally {
      server.kill('SIGKILL');
    }
  }, 60_000);
});

describe('validateRdbFile', () => {
  it('reads a file larger than its 8 MiB chunk', async () => {
    const value = new Uint8Array(20 << 20);
    for (let i = 0; i < value.length; i += 4096) value[i] = 0xff;
    const body = concat([Uint8Array.of(0xfe, 0x00, 0x00), encodeString('big'), encodeString(value)]);
    const file = buildRdb({ body });
    const path = join(tmp, 'big.rdb');
    writeFileSync(path, file);
    const info = await validateRdbFile(path);
    expect(info).toMatchObject({ checksum: 'verified', bytes: file.length });
    expect(info.storedCrc).toBe(hex16(Buffer.from(file).readBigUInt64LE(file.length - 8)));
  });

  it('rejects a damaged file on disk with InvalidSnapshotError naming the path', async () => {
    const damaged = buildRdb({ checksum: 5n });
    const path = join(tmp, 'bad.rdb');
    writeFileSync(path, damaged);
    await expect(validateRdbFile(path)).rejects.toThrow(InvalidSnapshotError);
    await expect(validateRdbFile(path)).rejects.toThrow(`${path}: not a valid RDB snapshot: CRC mismatch: stored 0000000000000005`);
  });

  it('turns a missing file into an FsError', async () => {
    const missing = join(tmp, 'missing.rdb');
    await expect(validateRdbFile(missing)).rejects.toBeInstanceOf(FsError);
    await expect(validateRdbFile(missing)).rejects.toMatchObject({ code: 'ENOENT', path: missing });
  });
});

describe('rdb-builder sanity', () => {
  it('writes strings the way Redis does', () => {
    expect(Array.from(encodeString(64))).toEqual([0xc0, 0x40]);
    expect(Array.from(encodeString(1706821741))).toEqual([0xc2, 0x6d, 0x08, 0xbc, 0x65]);
    expect(Array.from(encodeString('7.2.0'))).toEqual([0x05, 0x37, 0x2e, 0x32, 0x2e, 0x30]);
    expect(Array.from(encodeString('012'))).toEqual([0x03, 0x30, 0x31, 0x32]); // not canonical: stays a string
  });

  it('auxField parts can be raw bytes', () => {
    const part: AuxPart = { raw: Uint8Array.of(0xc0, 0x01) };
    expect(Array.from(auxField('aof-base', part))).toEqual([0xfa, 0x08, ...ascii('aof-base'), 0xc0, 0x01]);
  });
});
