/**
 * The core pipeline through the real CLI, as a child process, on real temp folders.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, logLines, runCli, tempDir } from '../helpers/cli.js';
import { listTree, setupArchive, writeSnapshot } from '../helpers/snapshots.js';

interface OnceJson {
  status: string;
  snapshot: { ts: string; bytes: number; sha256: string; rules: string[]; nodes: boolean } | null;
  retention: Record<string, { keep: Array<{ ts: string; reason: string }>; delete: Array<{ ts: string; reason: string }> }>;
  exitCode: number;
  error?: { kind: string; message: string };
}

describe('rdb-archiver once', () => {
  it('archives a new snapshot as one event in every rule folder, one physical copy, verifiable with sha256sum -c', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 48 }, { name: 'daily', every: 'day', count: 7 }, { name: 'last', count: 3 }] });
    const snap = writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-02-24T23:59:00.400Z') });

    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    const out = jsonOf<OnceJson>(r);
    expect(out.status).toBe('archived');
    expect(out.snapshot).toMatchObject({ ts: '2025-02-24T23-59-00', bytes: snap.length, rules: ['hourly', 'daily', 'last'] });
    expect(out.snapshot!.sha256).toBe(snap.sha256);

    const inodes = new Set<number>();
    for (const rule of ['hourly', 'daily', 'last']) {
      const dir = join(env.archive, rule);
      expect(readdirSync(dir).sort()).toEqual(['dump-2025-02-24T23-59-00.rdb', 'dump-2025-02-24T23-59-00.seq1.json', 'dump-2025-02-24T23-59-00.sha256']);
      const rdb = statSync(join(dir, 'dump-2025-02-24T23-59-00.rdb'));
      inodes.add(rdb.ino);
      expect(rdb.mode & 0o777).toBe(0o600);
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(readFileSync(join(dir, 'dump-2025-02-24T23-59-00.rdb')).equals(snap.bytes)).toBe(true);
      const check = execFileSync('sha256sum', ['-c', 'dump-2025-02-24T23-59-00.sha256'], { cwd: dir }).toString();
      expect(check).toContain('dump-2025-02-24T23-59-00.rdb: OK');
    }
    expect(inodes.size).toBe(1);
    expect(existsSync(env.state)).toBe(true);
  });

  it('writes nothing when the source is unchanged, and says so', async () => {
    const env = setupArchive();
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-03-01T10:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const before = listTree(env.archive);

    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code).toBe(0);
    expect(jsonOf<OnceJson>(r)).toMatchObject({ status: 'unchanged', snapshot: null });
    const after = listTree(env.archive);
    expect(after.filter((f) => !f.startsWith('.rdb-archiver/'))).toEqual(before.filter((f) => !f.startsWith('.rdb-archiver/')));
  });

  it('archives again when the mtime moves backwards (changed, not newer)', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 10 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-03-02T10:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    writeSnapshot(env.source, { seed: 'b', mtime: new Date('2025-03-01T10:00:00Z') });
    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r).snapshot?.ts).toBe('2025-03-01T10-00-00');
    expect(readdirSync(join(env.archive, 'all')).filter((f) => f.endsWith('.rdb')).sort()).toEqual([
      'dump-2025-03-01T10-00-00.rdb',
      'dump-2025-03-02T10-00-00.rdb',
    ]);
  });

  it('respects counts, keeps stray files, and pairs nodes.conf with the RDB', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 2 }, { name: 'daily', every: 'day', count: 2 }], nodes: true });
    mkdirSync(join(env.archive, 'last'), { recursive: true, mode: 0o700 });
    const strays = ['notes.txt', 'dump-2025-01-01T00-00-00.rdb.bak', 'dump-latest.rdb', 'nodes-2025-01-01.config'];
    for (const name of strays) writeFileSync(join(env.archive, 'last', name), 'keep me');

    const days = ['2025-04-01T08:00:00Z', '2025-04-02T08:00:00Z', '2025-04-02T09:00:00Z', '2025-04-03T08:00:00Z'];
    for (const [i, day] of days.entries()) {
      writeSnapshot(env.source, { seed: `s${i}`, mtime: new Date(day) });
      writeFileSync(env.nodes!, `abc 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\nvars currentEpoch ${i} lastVoteEpoch 0\n`);
      const r = await runCli(['once', '-c', env.config]);
      expect(r.code, r.stderr).toBe(0);
    }
    const last = readdirSync(join(env.archive, 'last')).sort();
    expect(last).toEqual([
      ...strays.filter((s) => s.startsWith('dump-2')),
      'dump-2025-04-02T09-00-00.rdb',
      'dump-2025-04-02T09-00-00.seq3.json',
      'dump-2025-04-02T09-00-00.sha256',
      'dump-2025-04-03T08-00-00.rdb',
      'dump-2025-04-03T08-00-00.seq4.json',
      'dump-2025-04-03T08-00-00.sha256',
      'dump-latest.rdb',
      'nodes-2025-01-01.config',
      'nodes-2025-04-02T09-00-00.config',
      'nodes-2025-04-03T08-00-00.config',
      'notes.txt',
    ].sort());
    for (const name of strays) expect(readFileSync(join(env.archive, 'last', name), 'utf8')).toBe('keep me');
    // daily: newest per day, 2 days
    expect(readdirSync(join(env.archive, 'daily')).filter((f) => f.endsWith('.rdb')).sort()).toEqual([
      'dump-2025-04-02T09-00-00.rdb',
      'dump-2025-04-03T08-00-00.rdb',
    ]);
    const nodes = readFileSync(join(env.archive, 'daily', 'nodes-2025-04-03T08-00-00.config'), 'utf8');
    expect(nodes).toContain('vars currentEpoch 3');
    const check = execFileSync('sha256sum', ['-c', 'dump-2025-04-03T08-00-00.sha256'], { cwd: join(env.archive, 'daily') }).toString();
    expect(check).toContain('nodes-2025-04-03T08-00-00.config: OK');
  });

  it('treats a missing nodes.conf as a warning, not an error', async () => {
    const env = setupArchive({ nodes: true });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-05-01T00:00:00Z') });
    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r).snapshot?.nodes).toBe(false);
    expect(logLines(r).some((l) => l.level === 40 && String(l.msg).includes('nodes.conf'))).toBe(true);
  });

  it('does not archive a duplicate when the state file is lost, and rebuilds a corrupt one', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 10 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-05-01T00:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const tree = listTree(join(env.archive, 'all'));

    unlinkSync(env.state);
    const lost = await runCli(['once', '--json', '-c', env.config]);
    expect(lost.code, lost.stderr).toBe(0);
    expect(jsonOf<{ snapshot: { outcome: string } }>(lost).snapshot.outcome).toBe('already-archived');
    expect(listTree(join(env.archive, 'all'))).toEqual(tree);

    writeFileSync(env.state, '{"version": 1, "archived": {tru');
    const corrupt = await runCli(['once', '--json', '-c', env.config]);
    expect(corrupt.code, corrupt.stderr).toBe(0);
    expect(logLines(corrupt).some((l) => String(l.msg).includes('corrupt'))).toBe(true);
    expect(listTree(join(env.archive, 'all'))).toEqual(tree);
    expect(JSON.parse(readFileSync(env.state, 'utf8')).archived.ts).toBe('2025-05-01T00-00-00');
  });

  it('keeps an existing event with the same timestamp but other content, and archives the new one under the next same-second name', async () => {
    // (Issue 10, item 15: this exited 73 on every run until the source changed again; the newest data was never archived.)
    const env = setupArchive({ rules: [{ name: 'all', count: 10 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-05-01T00:00:00.100Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const first = readFileSync(join(env.archive, 'all', 'dump-2025-05-01T00-00-00.rdb'));
    const second = writeSnapshot(env.source, { seed: 'b', mtime: new Date('2025-05-01T00:00:00.900Z') });
    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stdout).toBe(0);
    expect(jsonOf<OnceJson>(r).snapshot?.ts).toBe('2025-05-01T00-00-00_1');
    expect(readFileSync(join(env.archive, 'all', 'dump-2025-05-01T00-00-00.rdb')).equals(first)).toBe(true);
    expect(readFileSync(join(env.archive, 'all', 'dump-2025-05-01T00-00-00_1.rdb')).equals(second.bytes)).toBe(true);
    expect(readdirSync(join(env.archive, 'all')).filter((f) => f.startsWith('.tmp'))).toEqual([]);
  });

  it('fails clearly when the source is missing, a directory or a symlink, and prunes nothing', async () => {
    const env = setupArchive();
    const missing = await runCli(['once', '-c', env.config]);
    expect(missing.code).toBe(66);
    expect(missing.stdout).toMatch(/does not exist/);

    mkdirSync(env.source);
    const dir = await runCli(['once', '-c', env.config]);
    expect(dir.code).toBe(66);
    expect(dir.stdout).toMatch(/is a directory/);

    const real = join(env.root, 'real.rdb');
    writeSnapshot(real, { seed: 'x', mtime: new Date() });
    const link = join(env.root, 'link.rdb');
    symlinkSync(real, link);
    const viaLink = await runCli(['once', '--source', link, '--archive', env.archive]);
    expect(viaLink.code).toBe(66);
    expect(viaLink.stdout).toMatch(/symlink/);
  });

  it('works from flags alone, with no config file', async () => {
    const root = tempDir();
    const source = join(root, 'dump.rdb');
    writeSnapshot(source, { seed: 'a', mtime: new Date('2025-06-01T12:00:00Z') });
    mkdirSync(join(root, 'arch'), { mode: 0o700 }); // the archive root must exist
    const r = await runCli(['once', '--source', source, '--archive', join(root, 'arch'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r).snapshot?.rules).toEqual(['hourly', 'daily']);
    expect(existsSync(join(root, 'arch', 'hourly', 'dump-2025-06-01T12-00-00.rdb'))).toBe(true);
    expect(existsSync(join(root, 'arch', '.rdb-archiver', 'state.json'))).toBe(true);
  });

  it('dry run writes nothing and shows the plan, including the pending snapshot', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 1 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-06-01T12:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    writeSnapshot(env.source, { seed: 'b', mtime: new Date('2025-06-01T13:00:00Z') });
    const before = listTree(env.root);
    const r = await runCli(['once', '--dry-run', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    const out = jsonOf<OnceJson>(r);
    expect(out.status).toBe('would-archive');
    expect(out.retention.last!.keep.map((d) => d.ts)).toEqual(['2025-06-01T13-00-00']);
    expect(out.retention.last!.delete.map((d) => d.ts)).toEqual(['2025-06-01T12-00-00']);
    expect(listTree(env.root)).toEqual(before);
  });

  it('removes temp files left by a killed run', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 3 }] });
    mkdirSync(join(env.archive, 'all'), { recursive: true });
    const deadPid = 999_999;
    const leftover = join(env.archive, 'all', `.tmp-rdb-archiver-${deadPid}-1-dump-2025-01-01T00-00-00.rdb`);
    writeFileSync(leftover, 'half a file');
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-06-01T12:00:00Z') });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(leftover)).toBe(false);
  });

  it('16 concurrent runs produce exactly one event and only exit codes 0 or 75', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 5 }, { name: 'b', count: 5 }] });
    writeSnapshot(env.source, { seed: 'c', mtime: new Date('2025-07-01T00:00:00Z'), size: 4 * 1024 * 1024 });
    const runs = await Promise.all(Array.from({ length: 16 }, () => runCli(['once', '--json', '-c', env.config])));
    for (const r of runs) {
      expect([0, 75], r.stderr).toContain(r.code);
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/); // no stack traces
      if (r.code === 75) expect(jsonOf<OnceJson>(r).error?.message).toMatch(/holds the lock/);
    }
    expect(runs.some((r) => r.code === 0)).toBe(true);
    for (const rule of ['a', 'b']) {
      expect(readdirSync(join(env.archive, rule)).sort()).toEqual(['dump-2025-07-01T00-00-00.rdb', 'dump-2025-07-01T00-00-00.seq1.json', 'dump-2025-07-01T00-00-00.sha256']);
    }
  });
});

describe('rdb-archiver prune', () => {
  it('--dry-run changes nothing and gives a reason for every keep and delete', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 10 }] });
    for (const [i, t] of ['2025-01-01T00:00:00Z', '2025-01-02T00:00:00Z', '2025-01-03T00:00:00Z'].entries()) {
      writeSnapshot(env.source, { seed: `p${i}`, mtime: new Date(t) });
      expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    }
    // Tighten the policy, as an operator would.
    env.writeConfig({ rules: [{ name: 'all', count: 1 }] });
    const before = listTree(env.root);
    const dry = await runCli(['prune', '--dry-run', '--json', '-c', env.config]);
    expect(dry.code, dry.stderr).toBe(0);
    const plan = jsonOf<{ dryRun: boolean; retention: OnceJson['retention'] }>(dry);
    expect(plan.dryRun).toBe(true);
    expect(plan.retention.all!.keep.map((d) => d.ts)).toEqual(['2025-01-03T00-00-00']);
    expect(plan.retention.all!.delete.map((d) => d.ts)).toEqual(['2025-01-02T00-00-00', '2025-01-01T00-00-00']);
    for (const d of [...plan.retention.all!.keep, ...plan.retention.all!.delete]) expect(d.reason.length).toBeGreaterThan(5);
    expect(listTree(env.root)).toEqual(before);

    const human = await runCli(['prune', '--dry-run', '-c', env.config]);
    expect(human.stdout).toMatch(/would delete 2/);
    expect(human.stdout).toMatch(/2025-01-01T00-00-00/);

    const real = await runCli(['prune', '-c', env.config]);
    expect(real.code, real.stderr).toBe(0);
    expect(readdirSync(join(env.archive, 'all')).sort()).toEqual(['dump-2025-01-03T00-00-00.rdb', 'dump-2025-01-03T00-00-00.seq3.json', 'dump-2025-01-03T00-00-00.sha256']);
  });
});

describe('configuration errors', () => {
  it('exit 2 and name the file and the key', async () => {
    const env = setupArchive();
    writeFileSync(env.config, `source:\n  rdb: ${env.source}\narchive:\n  dir: ${env.archive}\nrules:\n  - name: a\n    count: 1\n  - name: b\n    count: 0\n`);
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(env.config);
    expect(r.stderr).toContain('rules[1].count: must be an integer >= 1');
    expect(readdirSync(env.archive)).toEqual([]); // nothing written, not even the state folder
  });

  it('exit 2 on an unknown command or option', async () => {
    expect((await runCli(['nonsense'])).code).toBe(2);
    expect((await runCli(['once', '--bogus'])).code).toBe(2);
  });

  it('--version and --help exit 0', async () => {
    const v = await runCli(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const h = await runCli(['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('once');
    expect(h.stdout).toContain('prune');
  });
});
