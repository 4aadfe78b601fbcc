/**
 * The pure and near-pure parts of list/verify/restore: sidecar parsing, event
 * lookup, header-only reads, the per-inode cache, and the restore steps.
 */
import { mkdtempSync, rmSync, writeFileSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileChecker, HEADER_READ_BYTES, ctimeOf, findEvent, parseSidecar, parseTsArgument, readRdbHeaderFile, versionOf, type RuleEvents } from '../../src/commands/catalog.js';
import { ConfigError, InvalidSnapshotError } from '../../src/core/errors.js';
import { OSFS, type FileSystem, type Handle, type OpenMode } from '../../src/core/fs.js';
import { RdbValidator } from '../../src/rdb/validate.js';
import { followUpSteps, shellQuote } from '../../src/commands/restore.js';
import type { Timestamp } from '../../src/core/timestamp.js';
import { ascii, buildRdb, concat, encodeString } from '../helpers/rdb-builder.js';

const tmp = mkdtempSync(join(tmpdir(), 'catalog-unit-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** OSFS that counts the bytes read through handles. */
class CountingFS extends OSFS {
  bytesRead = 0;
  opens = 0;
  override async open(path: string, mode: OpenMode, perm?: number): Promise<Handle> {
    const inner = await super.open(path, mode, perm);
    this.opens += 1;
    const read = inner.read.bind(inner);
    inner.read = async (buffer, offset, length, position) => {
      const n = await read(buffer, offset, length, position);
      this.bytesRead += n;
      return n;
    };
    return inner;
  }
}

const ts = (t: string) => t as Timestamp;

describe('parseSidecar', () => {
  it('reads sha256sum text and binary lines, lowercases the digest, skips blank lines', () => {
    const a = 'A'.repeat(64);
    const b = 'b'.repeat(64);
    expect(parseSidecar(`${a}  dump-2025-01-01T00-00-00.rdb\n\n${b} *nodes-2025-01-01T00-00-00.config\n`)).toEqual({
      entries: [
        { sha256: 'a'.repeat(64), name: 'dump-2025-01-01T00-00-00.rdb' },
        { sha256: b, name: 'nodes-2025-01-01T00-00-00.config' },
      ],
      errors: [],
    });
  });

  it('reports malformed lines by number', () => {
    const r = parseSidecar(`${'a'.repeat(63)}  short.rdb\n${'a'.repeat(64)}\nnot a line\n`);
    expect(r.entries).toEqual([]);
    expect(r.errors).toEqual(['line 1 is not "<sha256>  <file>"', 'line 2 is not "<sha256>  <file>"', 'line 3 is not "<sha256>  <file>"']);
  });
});

describe('findEvent', () => {
  const scanned: RuleEvents[] = [
    { rule: 'hourly', dir: '/a/hourly', events: [{ ts: ts('2025-01-03T00-00-00'), kinds: ['sha256'] }, { ts: ts('2025-01-02T00-00-00'), kinds: ['sha256', 'rdb'] }] },
    { rule: 'daily', dir: '/a/daily', events: [{ ts: ts('2025-01-02T00-00-00'), kinds: ['rdb', 'nodes', 'sha256'] }, { ts: ts('2025-01-01T00-00-00'), kinds: ['rdb'] }] },
  ];

  it('latest is the newest complete event across rules, in every folder that has it', () => {
    expect(findEvent(scanned, 'latest')).toEqual([
      { rule: 'hourly', dir: '/a/hourly', ts: '2025-01-02T00-00-00', kinds: ['sha256', 'rdb'] },
      { rule: 'daily', dir: '/a/daily', ts: '2025-01-02T00-00-00', kinds: ['rdb', 'nodes', 'sha256'] },
    ]);
  });

  it('a timestamp finds only complete events; none gives []', () => {
    expect(findEvent(scanned, ts('2025-01-01T00-00-00')).map((l) => l.rule)).toEqual(['daily']);
    expect(findEvent(scanned, ts('2025-01-03T00-00-00'))).toEqual([]); // sidecar only: incomplete
    expect(findEvent([], 'latest')).toEqual([]);
  });
});

describe('parseTsArgument', () => {
  it('accepts our form and ISO 8601, rejects anything else with a ConfigError', () => {
    expect(parseTsArgument('2025-02-24T23-59-00')).toBe('2025-02-24T23-59-00');
    expect(parseTsArgument('2025-02-25T00:59:00+01:00')).toBe('2025-02-24T23-59-00');
    expect(() => parseTsArgument('2025-02-30T00-00-00')).toThrow(ConfigError);
    expect(() => parseTsArgument('latest-ish')).toThrow(/is not a timestamp/);
  });
});

describe('versionOf / ctimeOf', () => {
  it('prefer valkey-ver, render ctime as ISO 8601, and give null when absent or nonsense', () => {
    expect(versionOf({ aux: { redisVer: '7.2.4', valkeyVer: '8.0.1' } })).toBe('8.0.1');
    expect(versionOf({ aux: { redisVer: '7.0.15' } })).toBe('7.0.15');
    expect(versionOf({ aux: {} })).toBeNull();
    expect(versionOf(null)).toBeNull();
    expect(ctimeOf({ aux: { ctime: 1735689600 } })).toBe('2025-01-01T00:00:00Z');
    expect(ctimeOf({ aux: { ctime: -5 } })).toBeNull();
    expect(ctimeOf({ aux: { ctime: 1e20 } })).toBeNull();
    expect(ctimeOf({ aux: {} })).toBeNull();
  });
});

describe('RdbValidator.peekHeader', () => {
  const file = buildRdb();

  it('is null until the magic is complete, partial while AUX fields are missing, complete after them', () => {
    const v = new RdbValidator('/x');
    v.update(file.subarray(0, 5));
    expect(v.peekHeader()).toBeNull();
    v.update(file.subarray(5, 25)); // into the AUX fields
    const partial = v.peekHeader()!;
    expect(partial).toMatchObject({ format: 'redis', version: 11, versionKnown: true, complete: false });
    const rest = new RdbValidator('/x');
    rest.update(file.subarray(0, file.length - 20));
    expect(rest.peekHeader()).toEqual({
      format: 'redis', version: 11, versionKnown: true, complete: true,
      aux: { redisVer: '7.2.4', redisBits: 64, ctime: 1735689600, usedMem: 1_234_567, aofBase: 0 },
    });
  });

  it('throws for a bad magic; reports VALKEY and unknown versions', () => {
    const bad = new RdbValidator('/x');
    bad.update(ascii('RUBBISH!!'));
    expect(() => bad.peekHeader()).toThrow(InvalidSnapshotError);
    const valkey = new RdbValidator('/x');
    valkey.update(buildRdb({ magic: 'VALKEY', version: 81, aux: [['valkey-ver', '9.1.0']] }));
    expect(valkey.peekHeader()).toMatchObject({ format: 'valkey', version: 81, versionKnown: false, aux: { valkeyVer: '9.1.0' }, complete: true });
  });
});

describe('readRdbHeaderFile', () => {
  it('reads one chunk of a large file, not the whole file', async () => {
    const path = join(tmp, 'large.rdb');
    const body = concat([Uint8Array.of(0xfe, 0x00, 0xfb, 0x01, 0x00, 0x00), encodeString('k'), encodeString(new Uint8Array(4 * 1024 * 1024).fill(7))]);
    writeFileSync(path, buildRdb({ body, checksum: 'zero' }));
    const fs = new CountingFS();
    const r = await readRdbHeaderFile(fs, path);
    expect(r.header).toMatchObject({ complete: true, aux: { redisVer: '7.2.4', ctime: 1735689600 } });
    expect(r.bytes).toBeGreaterThan(4 * 1024 * 1024);
    expect(fs.bytesRead).toBe(HEADER_READ_BYTES);
    expect(r.bytesRead).toBe(HEADER_READ_BYTES);
  });

  it('reads on while the AUX fields continue past the first chunk', async () => {
    const path = join(tmp, 'long-aux.rdb');
    const aux: Array<[string, string | number]> = [['junk', 'j'.repeat(150_000)], ['redis-ver', '7.4.0'], ['ctime', 1735689600]];
    writeFileSync(path, buildRdb({ aux, body: concat([Uint8Array.of(0xfe, 0x00), new Uint8Array(1024 * 1024)]) }));
    const fs = new CountingFS();
    const r = await readRdbHeaderFile(fs, path);
    expect(versionOf(r.header)).toBe('7.4.0');
    expect(fs.bytesRead).toBe(3 * HEADER_READ_BYTES);
  });

  it('names the problem of an unreadable header instead of throwing', async () => {
    const path = join(tmp, 'junk.rdb');
    writeFileSync(path, 'hello world, not a dump');
    const r = await readRdbHeaderFile(new OSFS(), path);
    expect(r.header).toBeNull();
    expect(r.problem).toMatch(/bad magic "hello wor"/);
    const tiny = join(tmp, 'tiny.rdb');
    writeFileSync(tiny, 'REDIS');
    expect((await readRdbHeaderFile(new OSFS(), tiny)).problem).toBe('truncated: 5 bytes');
  });
});

describe('FileChecker', () => {
  it('reads each inode once, and a different inode again', async () => {
    const a = join(tmp, 'a.rdb');
    const b = join(tmp, 'b.rdb');
    const c = join(tmp, 'c.rdb');
    const data = buildRdb();
    writeFileSync(a, data);
    linkSync(a, b);
    writeFileSync(c, data);
    const fs: FileSystem & { bytesRead: number } = new CountingFS();
    const checker = new FileChecker(fs);
    const [ra, rb, rc] = [await checker.check(a, 'rdb'), await checker.check(b, 'rdb'), await checker.check(c, 'rdb')];
    expect(ra).toBe(rb);
    expect(rc).not.toBe(ra);
    // The same result for the same content; only the inode (key) differs.
    expect({ ...rc, key: undefined }).toEqual({ ...ra, key: undefined });
    expect(rc!.key).not.toBe(ra!.key);
    expect(ra!.rdb!.checksum).toBe('verified');
    expect(checker.filesRead).toBe(2);
    expect(fs.bytesRead).toBe(2 * data.length);
    expect(await checker.check(join(tmp, 'nope.rdb'), 'rdb')).toBeUndefined();
  });

  it('reports an invalid RDB as `invalid` with the validator reason', async () => {
    const path = join(tmp, 'bad.rdb');
    const data = buildRdb();
    data[20]! ^= 1;
    writeFileSync(path, data);
    const r = await new FileChecker(new OSFS()).check(path, 'rdb');
    expect(r!.invalid).toMatch(/^CRC mismatch: stored [0-9a-f]{16}, computed [0-9a-f]{16}$/);
    expect(r!.sha256).toBeUndefined();
  });
});

describe('shellQuote', () => {
  it('leaves plain paths alone and single-quotes the rest safely', () => {
    expect(shellQuote('/var/tmp/restore/dump.rdb')).toBe('/var/tmp/restore/dump.rdb');
    expect(shellQuote('/tmp/my dump.rdb')).toBe("'/tmp/my dump.rdb'");
    expect(shellQuote("/tmp/it's")).toBe("'/tmp/it'\\''s'");
    expect(shellQuote('/tmp/$(rm -rf x)')).toBe("'/tmp/$(rm -rf x)'");
  });
});

describe('followUpSteps', () => {
  it('standalone: dir/dbfilename/appendonly, stop, place and chown, start, AOF back on; no cluster lines', () => {
    const text = followUpSteps({ rdbPath: '/restore/dump.rdb' }).join('\n');
    const order = ['CONFIG GET dir', 'CONFIG GET dbfilename', 'CONFIG GET appendonly', 'systemctl stop redis-server',
      'mv /restore/dump.rdb "$DIR/$DBFILENAME"', 'chown redis:redis "$DIR/$DBFILENAME"', 'systemctl start redis-server', 'CONFIG SET appendonly yes'];
    let at = -1;
    for (const needle of order) {
      const i = text.indexOf(needle);
      expect(i, needle).toBeGreaterThan(at);
      at = i;
    }
    expect(text).toMatch(/Redis loads the AOF at startup, NOT the RDB/);
    expect(text).not.toContain('cluster-config-file');
  });

  it('cluster: places the restored nodes.conf, or says how to copy the one that was not restored', () => {
    const restored = followUpSteps({ rdbPath: '/r/dump.rdb', nodesPath: '/r/nodes.conf' }).join('\n');
    expect(restored).toContain('NODESFILE=$(redis-cli CONFIG GET cluster-config-file | tail -n 1)');
    expect(restored).toContain('mv /r/nodes.conf "$DIR/$NODESFILE"');
    expect(restored).toContain('CLUSTER INFO');
    const missing = followUpSteps({ rdbPath: '/r/dump.rdb', nodesNotRestored: '/archive/last/nodes-2025-01-01T00-00-00.config' }).join('\n');
    expect(missing).toContain('was NOT restored');
    expect(missing).toContain('cp /archive/last/nodes-2025-01-01T00-00-00.config "$DIR/$NODESFILE"');
  });
});
