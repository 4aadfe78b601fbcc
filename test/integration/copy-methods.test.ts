/**
 * Issue 15: the kernel copies (reflink, copy_file_range), the O_DIRECT pass
 * and the read/write fallback each archive exactly the bytes their sha256 names: the sha256 in
 * the sidecar, the archive record and `once --json` equals `sha256sum` of
 * every final file, on every copy path. The event's record says how it was
 * copied; `list --json` and `status --json` say whether its data is shared
 * with the source (only a reflink, and only while that source file exists).
 * The XFS cases run on a loop-mounted image (test/helpers/xfs.ts) and skip
 * with the reason where mounting is not allowed.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { archiveEnvIn, setupArchive, snapshotBytes, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';
import { mountXfs, usedBytes, type XfsMount } from '../helpers/xfs.js';

const RULES = [{ name: 'last', count: 5 }, { name: 'hourly', every: 'hour', count: 5 }];
const SIZE = 3 * 1024 * 1024 + 7;

interface OnceJson { exitCode: number; snapshot: { ts: string; sha256: string; bytes: number; copy?: string } | null; error?: { message: string } }
interface Listed { ts: string; copy: string | null; shared: boolean }

const sha256sum = (path: string) => execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0]!;
const fsType = (dir: string) => execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();

/** Every place the event's sha256 is written agrees with sha256sum of every final .rdb; returns the record. */
function expectSameEverywhere(env: ArchiveEnv, snapshot: NonNullable<OnceJson['snapshot']>): Record<string, unknown> {
  let record: Record<string, unknown> | undefined;
  for (const rule of RULES) {
    const dir = join(env.archive, rule.name);
    const names = readdirSync(dir);
    const rdb = names.find((n) => n.endsWith('.rdb'))!;
    expect(sha256sum(join(dir, rdb)), `${rule.name}/${rdb}`).toBe(snapshot.sha256);
    const sidecar = readFileSync(join(dir, names.find((n) => n.endsWith('.sha256'))!), 'utf8');
    expect(sidecar).toContain(`${snapshot.sha256}  ${rdb}`);
    // sha256sum -c of the sidecar, as an operator would run it
    execFileSync('sha256sum', ['-c', names.find((n) => n.endsWith('.sha256'))!], { cwd: dir });
    record = JSON.parse(readFileSync(join(dir, names.find((n) => n.endsWith('.json'))!), 'utf8')) as Record<string, unknown>;
    expect(record.sha256).toBe(snapshot.sha256);
    expect(names.filter((n) => n.startsWith('.tmp-'))).toEqual([]);
    // archive.file_mode (0600), although libuv creates a kernel copy with the source's mode
    expect(statSync(join(dir, rdb)).mode & 0o777).toBe(0o600);
  }
  return record!;
}

async function archive(env: ArchiveEnv, method?: string): Promise<NonNullable<OnceJson['snapshot']>> {
  const r = await runCli(['once', '--json', '-c', env.config], { env: { RDB_ARCHIVER_COPY_METHOD: method } });
  const out = jsonOf<OnceJson>(r);
  expect(r.code, r.stderr).toBe(0);
  expect(out.snapshot).not.toBeNull();
  return out.snapshot!;
}

async function listed(env: ArchiveEnv): Promise<Record<string, Listed[]>> {
  const r = await runCli(['list', '--json', '-c', env.config]);
  expect(r.code, r.stderr).toBe(0);
  return jsonOf<Record<string, Listed[]>>(r);
}

describe('every copy path archives exactly what its sha256 names (the archive on this machine\'s temp filesystem)', () => {
  // What the kernel copy is here: a reflink where the temp filesystem clones (btrfs, XFS), else copy_file_range.
  const tmpType = fsType(setupArchive().root);
  const cases: Array<[string, string | undefined, string[]]> = [
    ['the default (reflink, else O_DIRECT)', undefined, ['reflink', 'direct']],
    ['O_DIRECT (reflink skipped)', 'direct', ['direct']],
    ['copy_file_range (reflink skipped)', 'copy_file_range', ['copy_file_range']],
    ['the forced read/write fallback', 'read-write', ['read-write']],
  ];
  for (const [label, method, expected] of cases) {
    it(`${label}, on ${tmpType}`, async () => {
      const env = setupArchive({ rules: RULES });
      const snap = writeSnapshot(env.source, { seed: `m-${method}`, mtime: new Date('2025-06-01T10:00:00Z'), size: SIZE });
      const s = await archive(env, method);
      expect(s.sha256).toBe(snap.sha256);
      expect(s.bytes).toBe(snap.length);
      expect(expected).toContain(s.copy);
      const record = expectSameEverywhere(env, s);
      expect(record.copy).toBe(s.copy);
      const list = await listed(env);
      for (const rule of RULES) expect(list[rule.name]![0]).toMatchObject({ ts: s.ts, copy: s.copy, shared: s.copy === 'reflink' });
    });
  }

  it('archive.max_rate paces the copy: it goes through read/write (a kernel copy cannot be paced), still exact', async () => {
    const env = setupArchive({ rules: RULES });
    writeFileSync(env.config, readFileSync(env.config, 'utf8').replace('archive:\n', 'archive:\n  max_rate: 2MiB\n'));
    const snap = writeSnapshot(env.source, { seed: 'paced', mtime: new Date('2025-06-01T10:00:00Z'), size: SIZE });
    const s = await archive(env);
    expect(s.sha256).toBe(snap.sha256);
    // A reflink writes nothing and stays allowed; anything else is a paced pass (O_DIRECT or through the page cache).
    expect(['reflink', 'direct', 'read-write']).toContain(s.copy);
    expectSameEverywhere(env, s);
  });
});

describe('XFS with reflink (loop-mounted image)', () => {
  let xfs: XfsMount | undefined;
  let skip = '';
  beforeAll(() => {
    const m = mountXfs(512);
    if ('skip' in m) {
      skip = m.skip;
      console.log(`copy-methods XFS cases skipped: ${skip}`);
    } else {
      xfs = m;
    }
  });
  afterAll(() => xfs?.cleanup());

  /** An archive environment whose source and archive are on the XFS mount. */
  function xfsEnv(name: string): ArchiveEnv {
    const rules = RULES.flatMap((r) => [`  - name: ${r.name}`, `    count: ${r.count}`, ...(r.every ? [`    every: "${r.every}"`] : [])]);
    return archiveEnvIn(join(xfs!.dir, name), ['rules:', ...rules]);
  }

  it('the default copy is a reflink: exact, no data written, shared until the source is replaced', async (ctx) => {
    if (!xfs) return ctx.skip(skip);
    const env = xfsEnv('reflink');
    const size = 48 * 1024 * 1024 + 3;
    const snap = writeSnapshot(env.source, { seed: 'xfs', mtime: new Date('2025-06-01T10:00:00Z'), size });
    const before = usedBytes(xfs.dir);
    const s = await archive(env);
    const grew = usedBytes(xfs.dir) - before;
    expect(s.copy).toBe('reflink');
    expect(s.sha256).toBe(snap.sha256);
    expectSameEverywhere(env, s);
    // The bound: the filesystem grows by less than 5% of the RDB per archived event while the source exists.
    expect(grew, `used space grew by ${grew} bytes`).toBeLessThan(size * 0.05);
    expect((await listed(env)).last![0]).toMatchObject({ copy: 'reflink', shared: true });
    const status = jsonOf<{ lastSnapshot: { copy: string; shared: boolean } }>(await runCli(['status', '--json', '-c', env.config]));
    expect(status.lastSnapshot).toMatchObject({ copy: 'reflink', shared: true });

    // Redis replaces dump.rdb by a rename: the old inode goes, and the archived copy owns its blocks alone.
    writeFileSync(`${env.source}.new`, snapshotBytes('xfs-next', 1024));
    utimesSync(`${env.source}.new`, new Date('2025-06-01T10:05:00Z'), new Date('2025-06-01T10:05:00Z'));
    renameSync(`${env.source}.new`, env.source);
    const old = (await listed(env)).last!.find((e) => e.ts === s.ts)!;
    expect(old).toMatchObject({ copy: 'reflink', shared: false });
  });

  it('O_DIRECT, copy_file_range and the read/write fallback on XFS are exact too', async (ctx) => {
    if (!xfs) return ctx.skip(skip);
    for (const method of ['direct', 'copy_file_range', 'read-write']) {
      const env = xfsEnv(method);
      const snap = writeSnapshot(env.source, { seed: `xfs-${method}`, mtime: new Date('2025-06-01T10:00:00Z'), size: SIZE });
      const s = await archive(env, method);
      expect(s.copy).toBe(method);
      expect(s.sha256).toBe(snap.sha256);
      expectSameEverywhere(env, s);
    }
  });
});
