/**
 * Validation before archiving, through the real CLI: a snapshot that is not a
 * valid RDB never enters the archive, and the archive stays exactly as it was.
 */
import { copyFileSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, logLines, runCli } from '../helpers/cli.js';
import { buildRdb } from '../helpers/rdb-builder.js';
import { listTree, readJson, setupArchive, snapshotBytes, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

interface OnceJson {
  status: string;
  snapshot: { ts: string; bytes: number; sha256: string; rules: string[] } | null;
  warnings: string[];
  error?: { kind: string; message: string; exitCode: number };
  exitCode: number;
}

interface StateJson {
  archived?: { ts: string; identity: { dev: string; ino: string; size: number; mtimeNs: string } };
  rejected?: { identity: { dev: string; ino: string; size: number; mtimeNs: string; ctimeNs?: string }; reason: string; at: string };
  lastRun?: { exitCode: number; result: string };
}

const FIXTURES = resolve(import.meta.dirname, '../fixtures');

/** The archive without the state folder (whose state.json and lock legitimately change). */
const archiveTree = (env: ArchiveEnv) => listTree(env.archive).filter((line) => !line.startsWith('.rdb-archiver'));

function writeBytes(path: string, bytes: Uint8Array, mtime: Date): void {
  writeFileSync(path, bytes);
  utimesSync(path, mtime, mtime);
}

function identityOf(path: string) {
  const s = statSync(path, { bigint: true });
  return { dev: s.dev.toString(), ino: s.ino.toString(), size: Number(s.size), mtimeNs: s.mtimeNs.toString(), ctimeNs: s.ctimeNs.toString() };
}

/** An archive with two good events in `last` (count 2) and `daily`. */
async function archiveWithTwoEvents(): Promise<ArchiveEnv> {
  const env = setupArchive({ rules: [{ name: 'last', count: 2 }, { name: 'daily', every: 'day', count: 7 }] });
  for (const [i, t] of ['2025-05-01T10:00:00Z', '2025-05-02T10:00:00Z'].entries()) {
    writeSnapshot(env.source, { seed: `good${i}`, mtime: new Date(t) });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
  }
  return env;
}

describe('validation before archiving', () => {
  it('an invalid source exits 65, is not archived, leaves the archive exactly as it was, removes its temp file, records the rejection', async () => {
    const env = await archiveWithTwoEvents();
    const before = archiveTree(env);
    const stateBefore = readJson<StateJson>(env.state);

    const bad = snapshotBytes('bad', 64 * 1024);
    bad[bad.length >> 1]! ^= 0x01; // one bit in the body: only the CRC can tell
    writeBytes(env.source, bad, new Date('2025-05-03T10:00:00Z'));

    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code).toBe(65);
    const out = jsonOf<OnceJson>(r);
    expect(out.status).toBe('failed');
    expect(out.error).toMatchObject({ kind: 'invalid-source', exitCode: 65 });
    expect(out.error!.message).toContain(env.source);
    expect(out.error!.message).toMatch(/CRC mismatch: stored [0-9a-f]{16}, computed [0-9a-f]{16}/);
    // Same files, sizes, inodes and mtimes: no new event, no pruning (count 2 would have dropped one), no temp file.
    expect(archiveTree(env)).toEqual(before);

    const state = readJson<StateJson>(env.state);
    expect(state.rejected?.identity).toEqual(identityOf(env.source));
    expect(state.rejected?.reason).toMatch(/^CRC mismatch/);
    expect(state.archived).toEqual(stateBefore.archived);
    expect(state.lastRun).toMatchObject({ exitCode: 65, result: 'failed' });
  });

  it('the next run checks the same bad file again, fails the same way without spinning, and a fixed source is archived', async () => {
    const env = await archiveWithTwoEvents();
    const before = archiveTree(env);
    const bad = snapshotBytes('bad');
    bad[bad.length - 3]! ^= 0x80; // in the stored CRC itself
    writeBytes(env.source, bad, new Date('2025-05-03T10:00:00Z'));

    const first = await runCli(['once', '--json', '-c', env.config]);
    const firstRejection = readJson<StateJson>(env.state).rejected!;
    const started = Date.now();
    const second = await runCli(['once', '--json', '-c', env.config], { timeoutMs: 20_000 });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(first.code).toBe(65);
    expect(second.code).toBe(65);
    expect(jsonOf<OnceJson>(second).error!.message).toBe(jsonOf<OnceJson>(first).error!.message);
    expect(logLines(second).some((l) => l.level === 50 && String(l.err).includes('CRC mismatch'))).toBe(true);
    const again = readJson<StateJson>(env.state).rejected!;
    expect(again.identity).toEqual(firstRejection.identity);
    expect(again.at >= firstRejection.at).toBe(true);
    expect(archiveTree(env)).toEqual(before);

    writeSnapshot(env.source, { seed: 'fixed', mtime: new Date('2025-05-03T11:00:00Z') });
    const fixed = await runCli(['once', '--json', '-c', env.config]);
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(jsonOf<OnceJson>(fixed).snapshot!.ts).toBe('2025-05-03T11-00-00');
    expect(readJson<StateJson>(env.state).rejected).toBeUndefined();
  });

  it('rejects every kind of invalid file with exit 65 and a message that says what is wrong', async () => {
    const env = await archiveWithTwoEvents();
    const before = archiveTree(env);
    const good = snapshotBytes('kinds', 4096);
    const noEof = Buffer.from(good);
    noEof[noEof.length - 9] = 0x00; // the byte before the trailer
    const badMagic = Buffer.from(good);
    badMagic[2]! ^= 0x04; // 'D' -> '@'
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['not an RDB at all', Buffer.from('# a config file, not a dump\nsave 900 1\n'), /not an RDB file: bad magic "# a confi"/],
      ['empty file', new Uint8Array(0), /truncated: 0 bytes/],
      ['only the magic', Buffer.from('REDIS0011'), /truncated: 9 bytes, no EOF marker/],
      ['truncated in the middle', good.subarray(0, 2000), /^.*truncated: 2000 bytes, no EOF marker/m],
      ['one bit flipped in the magic', badMagic, /bad magic/],
      ['no 0xFF before the trailer', noEof, /truncated: \d+ bytes, no EOF marker \(0xFF\) before the checksum trailer/],
      ['a newer version whose CRC does not match', buildRdb({ version: 13, checksum: 0x1234n }), /CRC mismatch: stored 0000000000001234, computed [0-9a-f]{16}/],
    ];
    for (const [i, [what, bytes, reason]] of cases.entries()) {
      writeBytes(env.source, bytes, new Date(Date.UTC(2025, 5, 1, i)));
      const r = await runCli(['once', '--json', '-c', env.config]);
      expect(r.code, what).toBe(65);
      expect(jsonOf<OnceJson>(r).error!.message, what).toMatch(reason);
      expect(archiveTree(env), what).toEqual(before);
    }
  });

  it('accepts a checksum-0 file (rdbchecksum no) whose structure is sound, with a warning that damage inside values cannot be detected', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    writeBytes(env.source, buildRdb({ checksum: 'zero' }), new Date('2025-06-01T00:00:00Z'));
    const synthetic = await runCli(['once', '--json', '-c', env.config]);
    expect(synthetic.code, synthetic.stderr).toBe(0);
    expect(jsonOf<OnceJson>(synthetic).warnings).toContain('checksum disabled (rdbchecksum no): the structure was walked and is sound, but damage inside values cannot be detected');
    expect(logLines(synthetic).some((l) => l.level === 40 && String(l.msg).includes('checksum disabled'))).toBe(true);

    // A dump written by redis-server 7.0 with rdbchecksum no.
    copyFileSync(join(FIXTURES, 'redis-7.0-checksum-disabled.rdb'), env.source);
    utimesSync(env.source, new Date('2025-06-02T00:00:00Z'), new Date('2025-06-02T00:00:00Z'));
    const real = await runCli(['once', '--json', '-c', env.config]);
    expect(real.code, real.stderr).toBe(0);
    const out = jsonOf<OnceJson>(real);
    expect(out.status).toBe('archived');
    expect(out.warnings.some((w) => w.includes('damage inside values cannot be detected'))).toBe(true);
    expect(readFileSync(join(env.archive, 'all', 'dump-2025-06-02T00-00-00.rdb')).equals(readFileSync(join(FIXTURES, 'redis-7.0-checksum-disabled.rdb')))).toBe(true);
  });

  it('accepts a newer RDB version with a warning when the CRC matches; VALKEY magic too', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    const cases: Array<[Uint8Array, RegExp | null]> = [
      [buildRdb({ version: 13 }), /unrecognised RDB version 13 \(REDIS0013\): accepted because the CRC-64 matches/],
      [buildRdb({ magic: 'VALKEY', version: 81, aux: [['valkey-ver', '9.1.0'], ['ctime', 1735689600]] }), /unrecognised RDB version 81 \(VALKEY081\)/],
      [buildRdb({ magic: 'VALKEY', version: 80, aux: [['valkey-ver', '9.0.0'], ['ctime', 1735689600]] }), null],
    ];
    for (const [i, [bytes, warning]] of cases.entries()) {
      writeBytes(env.source, bytes, new Date(Date.UTC(2025, 6, 1, i)));
      const r = await runCli(['once', '--json', '-c', env.config]);
      expect(r.code, r.stderr).toBe(0);
      const out = jsonOf<OnceJson>(r);
      expect(out.status).toBe('archived');
      if (warning) expect(out.warnings.some((w) => warning.test(w)), out.warnings.join('\n')).toBe(true);
      else expect(out.warnings).toEqual([]);
    }
    const list = jsonOf<Record<string, Array<{ redisVersion: string | null }>>>(await runCli(['list', '--json', '-c', env.config]));
    expect(list.all!.map((e) => e.redisVersion)).toEqual(['9.0.0', '9.1.0', '7.2.4']);
  });
});
