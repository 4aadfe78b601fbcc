/**
 * `rdb-archiver daemon` through the real CLI: real croner ticks on a
 * seconds-level schedule, overlap, the shared lock, and shutdown on signals
 * in the middle of a large copy.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../helpers/cli.js';
import { holdLock, msg, startCli, tempFiles, until, writeLargeSnapshot } from '../helpers/daemon.js';
import { readJson, setupArchive, writeSnapshot, type Snapshot } from '../helpers/snapshots.js';

const EVERY_SECOND = '* * * * * *';
const rdbs = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.rdb')).sort() : []);

describe('rdb-archiver daemon', () => {
  it('ticks on a seconds schedule for every instance; a failing instance is logged and counted, the others and the daemon go on', async () => {
    const root = tempDir();
    mkdirSync(join(root, 'a'));
    mkdirSync(join(root, 'b'));
    mkdirSync(join(root, 'archive'), { mode: 0o700 }); // the archive root must exist
    writeFileSync(join(root, 'config.yaml'), [
      `schedule: "${EVERY_SECOND}"`,
      'archive:',
      `  dir: ${join(root, 'archive')}`,
      'rules:',
      '  - name: last',
      '    count: 5',
      'instances:',
      '  - name: a',
      '    source:',
      `      rdb: ${join(root, 'a', 'dump.rdb')}`,
      '  - name: b',
      '    source:',
      `      rdb: ${join(root, 'b', 'dump.rdb')}`,
    ].join('\n') + '\n');
    writeSnapshot(join(root, 'a', 'dump.rdb'), { seed: 'a1', mtime: new Date('2025-06-01T10:00:00Z') });

    const d = startCli(['daemon', '-c', join(root, 'config.yaml')]);
    const started = await d.waitForLog(msg('daemon started'), 10_000, 'daemon started');
    expect(started).toMatchObject({ schedule: EVERY_SECOND, timezone: 'UTC', instances: ['a', 'b'] });

    await d.waitForLog(msg('snapshot archived', { instance: 'a', ts: '2025-06-01T10-00-00' }), 10_000, 'first snapshot of a');
    // b has no source yet: each tick fails for b, is logged, and the daemon keeps ticking.
    await d.waitForLogs(msg('tick failed for this instance; the daemon keeps running', { instance: 'b' }), 2, 10_000, 'two failed ticks of b');
    // Each error once: the cycle's "run failed" carries the message, the tick's line only says the daemon goes on.
    const tickFailed = d.logs().find(msg('tick failed for this instance; the daemon keeps running', { instance: 'b' }))!;
    expect(tickFailed).toMatchObject({ exitCode: 66, kind: 'no-source' });
    expect(tickFailed).not.toHaveProperty('err');
    expect(d.logs().some(msg('run failed', { instance: 'b', kind: 'no-source' }))).toBe(true);

    writeSnapshot(join(root, 'a', 'dump.rdb'), { seed: 'a2', mtime: new Date('2025-06-01T11:00:00Z') });
    writeSnapshot(join(root, 'b', 'dump.rdb'), { seed: 'b1', mtime: new Date('2025-06-01T12:00:00Z') });
    await d.waitForLog(msg('snapshot archived', { instance: 'a', ts: '2025-06-01T11-00-00' }), 10_000, 'second snapshot of a');
    await d.waitForLog(msg('snapshot archived', { instance: 'b', ts: '2025-06-01T12-00-00' }), 10_000, 'snapshot of b');

    d.kill('SIGTERM');
    const exit = await d.exited;
    expect(exit.code, JSON.stringify(d.logs().slice(-5))).toBe(0);
    expect(d.logs().some(msg('daemon stopped'))).toBe(true);
    // A standing note (the archive on the source's filesystem) is a warning once per daemon, not once per tick.
    const sameFs = d.logs().filter((l) => l.level === 40 && l.instance === 'a' && l.msg.includes('is on the same filesystem as the source'));
    expect(sameFs).toHaveLength(1);

    expect(rdbs(join(root, 'archive', 'a', 'last'))).toEqual(['dump-2025-06-01T10-00-00.rdb', 'dump-2025-06-01T11-00-00.rdb']);
    expect(rdbs(join(root, 'archive', 'b', 'last'))).toEqual(['dump-2025-06-01T12-00-00.rdb']);
    const stateB = readJson<{ counters: Record<string, number> }>(join(root, 'archive', 'b', '.rdb-archiver', 'state.json'));
    expect(stateB.counters.runs_failed).toBeGreaterThanOrEqual(2);
    expect(stateB.counters.runs_ok).toBeGreaterThanOrEqual(1);
  });

  it('skips a tick that is due while one runs, shares the lock with `once`, and on SIGTERM lets the running job finish', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    const marker = join(env.root, 'hook-done');
    // The hook makes the tick last ~5 s (hooks run inside the tick, under the lock).
    env.writeConfig({ extra: [
      `schedule: "${EVERY_SECOND}"`,
      'hooks:',
      `  after_archive: ["sh", "-c", "sleep 5; echo done > ${marker}"]`,
    ].join('\n') });
    writeSnapshot(env.source, { seed: 'x', mtime: new Date('2025-06-02T10:00:00Z') });

    const d = startCli(['daemon', '-c', env.config]);
    await d.waitForLog(msg('running hook'), 10_000, 'the hook to start');

    // A stray `once` while the tick holds the lock: told to try again later, nothing collides.
    const stray = await runCli(['once', '-c', env.config]);
    expect(stray.code, stray.stderr).toBe(75);

    await d.waitForLog(msg('tick skipped: the previous tick is still running'), 5_000, 'an overlapping tick to be skipped');
    expect(existsSync(marker)).toBe(false);

    d.kill('SIGTERM');
    await d.waitForLog(msg('stopping: letting the current job finish (a second signal aborts it)'), 5_000, 'graceful stop');
    const exit = await d.exited;
    expect(exit.code).toBe(0);
    // The running job (its hook included) was allowed to finish, and no tick started after the signal.
    expect(readFileSync(marker, 'utf8')).toBe('done\n');
    expect(d.logs().filter(msg('running hook'))).toHaveLength(1);
    expect(rdbs(join(env.archive, 'last'))).toEqual(['dump-2025-06-02T10-00-00.rdb']);
  });

  it('logs a tick that finds the lock held by another run as skipped, not as a failure', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }], extra: `schedule: "${EVERY_SECOND}"` });
    writeSnapshot(env.source, { seed: 'y', mtime: new Date('2025-06-03T10:00:00Z') });
    const lock = holdLock(join(env.archive, '.rdb-archiver'));

    const d = startCli(['daemon', '-c', env.config]);
    await d.waitForLogs(msg('tick skipped for this instance: another run holds the lock'), 2, 10_000, 'two locked ticks');
    unlinkSync(lock);
    await d.waitForLog(msg('snapshot archived'), 10_000, 'the snapshot once the lock is free');
    d.kill('SIGINT');
    expect((await d.exited).code).toBe(0);

    expect(d.logs().some(msg('tick failed for this instance; the daemon keeps running'))).toBe(false);
    const state = readJson<{ counters: Record<string, number> }>(env.state);
    expect(state.counters.runs_failed ?? 0).toBe(0);
  });

  it('exits 2 on an invalid schedule', async () => {
    const env = setupArchive();
    const r = await runCli(['daemon', '-c', env.config, '--schedule', '61 * * * *']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--schedule');
  });

  describe('shutdown in the middle of a large copy', () => {
    let big: { path: string; snap: Snapshot };
    beforeAll(() => {
      // Not tempDir(): that one is removed after each test, and this source serves two.
      const dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-big-'));
      const path = join(dir, 'dump.rdb');
      big = { path, snap: writeLargeSnapshot(path, { seed: 'big', mtime: new Date('2025-06-04T10:00:00Z'), size: 320 * 1024 * 1024 }) };
      return () => rmSync(dir, { recursive: true, force: true });
    });

    const startCopy = async () => {
      const root = tempDir();
      const archive = join(root, 'archive');
      mkdirSync(archive, { mode: 0o700 }); // the archive root must exist
      const config = join(root, 'config.yaml');
      writeFileSync(config, [
        'source:',
        `  rdb: ${big.path}`,
        'archive:',
        `  dir: ${archive}`,
        `schedule: "${EVERY_SECOND}"`,
        'shutdown_timeout: 60s',
        'rules:',
        '  - name: hourly',
        '    every: hour',
        '    count: 2',
        '  - name: daily',
        '    every: day',
        '    count: 2',
      ].join('\n') + '\n');
      const d = startCli(['daemon', '-c', config]);
      // The copy is under way once its temp file exists in the first rule folder.
      await until(() => tempFiles(archive).length > 0, 15_000, 'the copy to start', 5);
      return { d, archive };
    };

    it('SIGTERM lets the copy finish: one complete event, no temp file, exit 0', async () => {
      const { d, archive } = await startCopy();
      d.kill('SIGTERM');
      const exit = await d.exited;
      expect(exit.code, JSON.stringify(d.logs().slice(-6))).toBe(0);
      expect(d.logs().some(msg('stopping: letting the current job finish (a second signal aborts it)'))).toBe(true);
      expect(tempFiles(archive)).toEqual([]);
      for (const rule of ['hourly', 'daily']) {
        const file = join(archive, rule, 'dump-2025-06-04T10-00-00.rdb');
        expect(statSync(file).size).toBe(big.snap.length);
        expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(big.snap.sha256);
      }
    });

    it('a second signal aborts at once: no partial or final file, no temp file, exit 0', async () => {
      const { d, archive } = await startCopy();
      d.kill('SIGTERM');
      await d.waitForLog(msg('stopping: letting the current job finish (a second signal aborts it)'), 5_000, 'graceful stop');
      const signalledAt = Date.now();
      d.kill('SIGTERM');
      const exit = await d.exited;
      expect(exit.code, JSON.stringify(d.logs().slice(-6))).toBe(0);
      expect(exit.atMs - signalledAt).toBeLessThan(5_000);
      expect(d.logs().some(msg('aborting the current job: its temp files are removed and no partial file is published'))).toBe(true);
      expect(tempFiles(archive)).toEqual([]);
      expect(rdbs(join(archive, 'hourly'))).toEqual([]);
      expect(rdbs(join(archive, 'daily'))).toEqual([]);
      // The aborted run is recorded as "try again later", and the next run archives the snapshot.
      const state = readJson<{ lastRun: { exitCode: number; error: string } }>(join(archive, '.rdb-archiver', 'state.json'));
      expect(state.lastRun.exitCode, JSON.stringify(d.logs().slice(-8))).toBe(75);
      expect(state.lastRun.error).toContain('aborted by shutdown');
    });
  });

  it('aborts a job that outlives shutdown_timeout (here a hung hook), then exits 0', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    env.writeConfig({ extra: [
      `schedule: "${EVERY_SECOND}"`,
      'shutdown_timeout: 1s',
      'hooks:',
      '  after_archive: ["sleep", "60"]',
    ].join('\n') });
    writeSnapshot(env.source, { seed: 'z', mtime: new Date('2025-06-05T10:00:00Z') });
    const d = startCli(['daemon', '-c', env.config]);
    await d.waitForLog(msg('running hook'), 10_000, 'the hook to start');
    const signalledAt = Date.now();
    d.kill('SIGTERM');
    const exit = await d.exited;
    expect(exit.code, JSON.stringify(d.logs().slice(-6))).toBe(0);
    expect(exit.atMs - signalledAt).toBeGreaterThanOrEqual(900);
    expect(exit.atMs - signalledAt).toBeLessThan(6_000);
    expect(d.logs().some((l) => l.msg === 'aborting the current job: its temp files are removed and no partial file is published' && String(l.why).includes('shutdown_timeout'))).toBe(true);
    // The snapshot itself was complete before the hook started, so it stays.
    expect(rdbs(join(env.archive, 'last'))).toEqual(['dump-2025-06-05T10-00-00.rdb']);
  });
});
