/**
 * The kernel copy paths under attack (issue 15's reflink and copy_file_range):
 * a source rewritten in place or truncated while the kernel copies it, a
 * sparse source, a source on another filesystem than the archive, and
 * archive.max_rate on a filesystem that clones. Whatever happens, the sha256
 * recorded for an event must describe the bytes under its final name (checked
 * with sha256sum), and a copy that cannot be proven so is not archived.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli, runCliPausedAt, type CliResult } from '../helpers/cli.js';
import { buildRdb, concat, encodeString } from '../helpers/rdb-builder.js';
import { crc64 } from '../../src/rdb/crc64.js';
import { archiveEnvIn, setupArchive, snapshotBytes, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';
import { mountXfs, type XfsMount } from '../helpers/xfs.js';

interface OnceJson { status: string; snapshot: { ts: string; sha256: string; bytes: number; copy?: string } | null; error?: { kind: string; message: string } }

const sha256sum = (path: string) => execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0]!;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const SIZE = 24 * 1024 * 1024 + 5;

/** Final .rdb files and temps in every rule folder. */
function archived(env: ArchiveEnv): { rdbs: string[]; temps: string[] } {
  const rdbs: string[] = [];
  const temps: string[] = [];
  for (const rule of readdirSync(env.archive)) {
    if (rule.startsWith('.')) continue;
    for (const name of readdirSync(join(env.archive, rule))) {
      if (name.startsWith('.tmp')) temps.push(join(env.archive, rule, name));
      else if (name.endsWith('.rdb')) rdbs.push(join(env.archive, rule, name));
    }
  }
  return { rdbs, temps };
}

/**
 * The invariant of every attack below: a run either archived (and then every
 * final .rdb is byte for byte one of the source's whole versions, with the
 * sha256 the run recorded), or it archived nothing and left no temp.
 */
function expectExactOrNothing(env: ArchiveEnv, r: CliResult, versions: string[]): 'archived' | 'refused' {
  const { rdbs, temps } = archived(env);
  expect(temps, 'temps left').toEqual([]);
  if (r.code === 0) {
    const out = jsonOf<OnceJson>(r);
    expect(versions).toContain(out.snapshot!.sha256);
    expect(rdbs.length).toBeGreaterThan(0);
    for (const rdb of rdbs) expect(sha256sum(rdb), rdb).toBe(out.snapshot!.sha256);
    return 'archived';
  }
  expect(r.code, r.stdout + r.stderr).toBe(75); // the source changed: try again
  expect(jsonOf<OnceJson>(r).error!.kind).toBe('source-changed');
  expect(rdbs).toEqual([]);
  return 'refused';
}

/** Rewrites the file in place (same inode, same size, other bytes) and puts its mtime back, as `cp -p` over it would. */
function rewriteInPlace(path: string, seed: string): string {
  const size = statSync(path).size;
  const { mtime } = statSync(path);
  const next = snapshotBytes(seed, size);
  const fd = execFileSync('sh', ['-c', `cat > "$1" && echo ok`, 'sh', path], { input: next.subarray(0, size) }).toString();
  expect(fd.trim()).toBe('ok');
  utimesSync(path, mtime, mtime);
  return sha256(readFileSync(path));
}

describe('the source changes while it is copied', { timeout: 120_000 }, () => {
  for (const method of ['copy_file_range', 'direct', 'reflink']) {
    it(`${method === 'reflink' ? 'the default method' : method}: rewritten in place (mtime put back) mid-copy: never archived as a mix; the next run archives the new content exactly`, async () => {
      const env = setupArchive({ rules: [{ name: 'all', count: 5 }, { name: 'hourly', every: 'hour', count: 5 }] });
      const old = writeSnapshot(env.source, { seed: 'before', mtime: new Date('2025-06-01T10:00:00Z'), size: SIZE });
      let fresh = '';
      const r = await runCliPausedAt(['once', '--json', '-c', env.config], { op: 'read', path: env.source, nth: 2 }, () => {
        fresh = rewriteInPlace(env.source, 'after');
      }, { env: { RDB_ARCHIVER_COPY_METHOD: method === 'reflink' ? undefined : method } });
      expect(r.paused, r.stderr).toBe(true);
      const outcome = expectExactOrNothing(env, r, [old.sha256, fresh]);
      // The rewrite came after the source was opened and read: the proof (ctime) must catch it.
      expect(outcome).toBe('refused');
      const again = await runCli(['once', '--json', '-c', env.config], { env: { RDB_ARCHIVER_COPY_METHOD: method === 'reflink' ? undefined : method } });
      expect(again.code, again.stdout + again.stderr).toBe(0);
      expect(jsonOf<OnceJson>(again).snapshot!.sha256).toBe(fresh);
      expectExactOrNothing(env, again, [fresh]);
    });
  }

  it('truncated to half mid-copy: not archived (75), no temp; then archived once it is whole again', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    const snap = writeSnapshot(env.source, { seed: 'trunc', mtime: new Date('2025-06-01T11:00:00Z'), size: SIZE });
    const r = await runCliPausedAt(['once', '--json', '-c', env.config], { op: 'read', path: env.source, nth: 2 }, () => {
      truncateSync(env.source, Math.floor(SIZE / 2));
    }, { env: { RDB_ARCHIVER_COPY_METHOD: 'copy_file_range' } });
    expect(r.paused, r.stderr).toBe(true);
    expect(expectExactOrNothing(env, r, [snap.sha256])).toBe('refused');
    writeSnapshot(env.source, { seed: 'trunc', mtime: new Date('2025-06-01T11:00:00Z'), size: SIZE });
    const again = await runCli(['once', '--json', '-c', env.config]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expectExactOrNothing(env, again, [snap.sha256]);
  });
});

describe('sources the kernel copies differently', { timeout: 120_000 }, () => {
  it('a sparse source (holes in the middle of a string value): every method archives exactly its bytes, and the RDB check passes', async () => {
    // An RDB with one 16 MiB string of zeros: the file's holes read as those zeros.
    const body = concat([Uint8Array.of(0xfe, 0x00), Uint8Array.of(0x00), encodeString('hole'), encodeString(new Uint8Array(16 * 1024 * 1024))]);
    const file = Buffer.from(buildRdb({ body, checksum: 'zero' }));
    file.writeBigUInt64LE(crc64(file.subarray(0, file.length - 8)), file.length - 8);
    for (const method of ['reflink', 'direct', 'copy_file_range', 'read-write']) {
      const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
      writeFileSync(env.source, file);
      const dig = spawnSync('fallocate', ['--dig-holes', env.source]);
      utimesSync(env.source, new Date('2025-06-02T10:00:00Z'), new Date('2025-06-02T10:00:00Z'));
      if (dig.status === 0) expect(statSync(env.source).blocks * 512).toBeLessThan(file.length / 2); // really sparse
      const r = await runCli(['once', '--json', '-c', env.config], { env: { RDB_ARCHIVER_COPY_METHOD: method === 'reflink' ? undefined : method } });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(jsonOf<OnceJson>(r).snapshot!.sha256).toBe(sha256(file));
      expectExactOrNothing(env, r, [sha256(file)]);
    }
  });

  it('a source on another filesystem than the archive (/dev/shm): the kernel copy crosses it or falls back, exact either way', async (ctx) => {
    if (!existsSync('/dev/shm') || statSync('/dev/shm').dev === statSync(setupArchive().archive).dev) return ctx.skip('no /dev/shm on another filesystem here');
    const shm = mkdtempSync('/dev/shm/rdb-archiver-src-');
    try {
      for (const method of ['reflink', 'copy_file_range']) {
        const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
        const source = join(shm, `${method}.rdb`);
        const snap = writeSnapshot(source, { seed: `shm-${method}`, mtime: new Date('2025-06-03T10:00:00Z'), size: SIZE });
        writeFileSync(env.config, readFileSync(env.config, 'utf8').replace(`rdb: ${env.source}`, `rdb: ${source}`));
        const r = await runCli(['once', '--json', '-c', env.config], { env: { RDB_ARCHIVER_COPY_METHOD: method === 'reflink' ? undefined : method } });
        expect(r.code, r.stdout + r.stderr).toBe(0);
        expect(method === 'reflink' ? ['direct', 'copy_file_range', 'read-write'] : ['copy_file_range', 'read-write']).toContain(jsonOf<OnceJson>(r).snapshot!.copy);
        expectExactOrNothing(env, r, [snap.sha256]);
      }
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  });
});

describe('XFS (reflink) under attack', { timeout: 120_000 }, () => {
  let xfs: XfsMount | undefined;
  let skip = '';
  beforeAll(() => {
    const m = mountXfs(512);
    if ('skip' in m) skip = m.skip;
    else xfs = m;
  });
  afterAll(() => xfs?.cleanup());

  function xfsEnv(name: string, extra = ''): ArchiveEnv {
    return archiveEnvIn(join(xfs!.dir, name), [extra, 'rules:', '  - name: all', '    count: 5']);
  }

  it('a reflinked source rewritten in place right after the clone: refused (the clone holds the old bytes, the hash would read the new)', async (ctx) => {
    if (!xfs) return ctx.skip(skip);
    const env = xfsEnv('rewrite');
    const old = writeSnapshot(env.source, { seed: 'xfs-before', mtime: new Date('2025-06-04T10:00:00Z'), size: SIZE });
    let fresh = '';
    const r = await runCliPausedAt(['once', '--json', '-c', env.config], { op: 'read', path: env.source, nth: 1 }, () => {
      fresh = rewriteInPlace(env.source, 'xfs-after');
    });
    expect(r.paused, r.stderr).toBe(true);
    expectExactOrNothing(env, r, [old.sha256, fresh]);
    const again = await runCli(['once', '--json', '-c', env.config]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(jsonOf<OnceJson>(again).snapshot).toMatchObject({ sha256: fresh, copy: 'reflink' });
    expectExactOrNothing(env, again, [fresh]);
  });

  it('archive.max_rate keeps the reflink (it writes nothing) and is exact', async (ctx) => {
    if (!xfs) return ctx.skip(skip);
    const env = xfsEnv('paced', '  max_rate: 1MiB');
    const snap = writeSnapshot(env.source, { seed: 'xfs-paced', mtime: new Date('2025-06-04T11:00:00Z'), size: SIZE });
    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r).snapshot!.copy).toBe('reflink');
    expectExactOrNothing(env, r, [snap.sha256]);
  });
});
