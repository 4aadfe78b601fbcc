/**
 * `daemon` with `watch: true` (issue 16), through the real CLI with a real
 * redis-server: a save is archived by the watch (the schedule is hourly, at a
 * minute the test never reaches), bursts collapse without overlap or
 * duplicates, a removed and re-created folder is re-armed, a watch that
 * cannot be had falls back to the schedule (visible in status, check and the
 * metrics), and SIGTERM during a watch-triggered cycle keeps the graceful
 * shutdown. Waits are generous bounds, never timing assertions.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { msg, startCli, tempFiles, type LogLine, type RunningCli } from '../helpers/daemon.js';
import { parseExposition, promtoolCheck } from '../helpers/prom.js';
import { bgsaveAndWait, describeWithRedis, registerRedisCleanup, sleep, startRedis, type RedisServer } from '../helpers/redis.js';
import { setupArchive, type ArchiveEnv } from '../helpers/snapshots.js';

registerRedisCleanup();

/** Hourly, at the minute half an hour from now: it cannot fire while a test runs. */
const farHourly = () => `${(new Date().getUTCMinutes() + 30) % 60} * * * *`;

interface Record_ { seq: number; ts: string; sha256: string; source: { ino: string; mtimeNs: string } }
const records = (dir: string): Record_[] =>
  (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')) : [])
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as Record_)
    .sort((a, b) => a.seq - b.seq);
const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const archivedWith = (hash: string, trigger?: string) => (l: LogLine) =>
  l.msg === 'snapshot archived' && l.sha256 === hash && (trigger === undefined || l.trigger === trigger);

/** An archive whose config ends with extra(root), and a redis-server saving into <root>/data. */
async function setup(extra: (root: string) => string[]): Promise<{ env: ArchiveEnv; redis: RedisServer; data: string }> {
  const env = setupArchive({ rules: [{ name: 'last', count: 100 }] });
  env.writeConfig({ extra: extra(env.root).join('\n') });
  const data = join(env.root, 'data');
  // (CONFIG SET dir is a protected config since Redis 7: allowed from loopback for the folder test)
  const redis = await startRedis(env.root, { args: ['--dir', data, '--enable-protected-configs', 'local'] });
  return { env, redis, data };
}

async function stop(d: RunningCli): Promise<void> {
  d.kill('SIGTERM');
  const exit = await d.exited;
  expect(exit.code, JSON.stringify(d.logs().slice(-8))).toBe(0);
}

describeWithRedis('daemon --watch with a real redis-server', () => {
  it('archives a SAVE and a BGSAVE by the watch, not the hourly schedule; status, check and the metrics show the watch and the lag', async () => {
    const { env, redis } = await setup((root) => [
      `schedule: "${farHourly()}"`, 'watch: true', 'watch_debounce: 300ms', 'monitor:', '  max_lag: 1h', 'metrics:', `  textfile: ${join(root, 'metrics.prom')}`,
    ]);
    const metrics = join(env.root, 'metrics.prom');
    const d = startCli(['daemon', '-c', env.config]);
    await d.waitForLog(msg('daemon started'), 15_000, 'daemon started');
    expect(d.logs().some(msg('watching the source folder'))).toBe(true);

    await redis.call('SET', 'k', 'one');
    await redis.call('SAVE');
    const savedAt = Date.now();
    const first = await d.waitForLog(archivedWith(sha(env.source), 'watch'), 20_000, 'the SAVE archived by the watch');
    console.log(`watch: SAVE archived ${Date.parse(String(first.time)) - savedAt} ms after SAVE returned (lag ${first.lagSeconds} s)`);

    await redis.call('SET', 'k', 'two');
    await bgsaveAndWait(redis);
    const bgsavedAt = Date.now();
    const second = await d.waitForLog(archivedWith(sha(env.source), 'watch'), 20_000, 'the BGSAVE archived by the watch');
    console.log(`watch: BGSAVE archived ${Date.parse(String(second.time)) - bgsavedAt} ms after the test saw it finish (lag ${second.lagSeconds} s)`);
    expect(d.logs().filter(msg('watch triggered a cycle')).length).toBeGreaterThanOrEqual(2);
    expect(d.logs().some((l) => l.msg === 'snapshot archived' && l.trigger !== 'watch')).toBe(false);

    const report = jsonOf<{ watch: { mode: string; daemonRunning: boolean }; lag: { lastSeconds: number; trigger: string } }>(await runCli(['status', '--json', '-c', env.config]));
    expect(report.watch).toMatchObject({ mode: 'watching', daemonRunning: true, dir: join(env.root, 'data') });
    expect(report.lag.trigger).toBe('watch');
    expect(report.lag.lastSeconds).toBeGreaterThanOrEqual(0);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.stdout).toMatch(/ lag=[\d.]+s;3600;;0/);

    // The metrics textfile the daemon rewrote after the cycle: the lag histogram and the watch gauge.
    const text = readFileSync(metrics, 'utf8');
    const families = parseExposition(text);
    expect(families.get('rdb_archiver_watch_active')?.samples[0]?.value).toBe(1);
    const hist = families.get('rdb_archiver_recovery_point_lag_seconds');
    expect(hist?.type).toBe('histogram');
    expect(hist?.samples.find((s) => s.name.endsWith('_count'))?.value).toBe(2);
    const prom = promtoolCheck(text);
    if (prom) expect(prom.code, prom.output).toBe(0);

    await stop(d);
    // Only watch cycles ran; the watch record is gone with the daemon.
    expect(d.logs().find(msg('daemon stopped'))).toMatchObject({ ticks: 0, watchCycles: expect.any(Number) });
    expect(existsSync(join(env.archive, '.rdb-archiver', 'watch.json'))).toBe(false);
  });

  it('a burst of 20 BGSAVEs in 10 s: no overlapping cycles, no duplicate events, the last save archived', async () => {
    const { env, redis } = await setup(() => [`schedule: "${farHourly()}"`, 'watch: true', 'watch_debounce: 200ms']);
    const d = startCli(['daemon', '-c', env.config]);
    await d.waitForLog(msg('daemon started'), 15_000, 'daemon started');
    const burstStart = Date.now();
    for (let i = 0; i < 20; i++) {
      await redis.call('SET', 'k', `v${i}`);
      await bgsaveAndWait(redis);
      const due = burstStart + (i + 1) * 500;
      if (Date.now() < due) await sleep(due - Date.now());
    }
    const last = sha(env.source);
    await d.waitForLog(archivedWith(last, 'watch'), 20_000, 'the last save archived');
    await stop(d);

    const events = records(join(env.archive, 'last'));
    // No duplicates: every event holds another save (content and source file), seqs strictly increasing.
    expect(new Set(events.map((e) => e.sha256)).size).toBe(events.length);
    expect(new Set(events.map((e) => `${e.source.ino}:${e.source.mtimeNs}`)).size).toBe(events.length);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events.at(-1)!.sha256).toBe(last);
    // No overlap: a second cycle would have found the lock held; cycles ran one at a time and collapsed bursts.
    expect(d.logs().some(msg('tick skipped for this instance: another run holds the lock'))).toBe(false);
    expect(d.logs().some((l) => l.msg === 'run failed')).toBe(false);
    const cycles = d.logs().filter((l) => l.msg === 'watch triggered a cycle').length + d.logs().filter((l) => String(l.msg).startsWith('watch: a cycle is running')).length;
    expect(cycles).toBeLessThanOrEqual(21);
    console.log(`watch burst: 20 BGSAVEs, ${events.length} events, ${d.logs().filter(msg('watch triggered a cycle')).length} cycles started directly`);
  });

  it('re-arms the watch when the folder is removed and re-created, and archives the next save by the watch', async () => {
    const { env, redis, data } = await setup(() => [`schedule: "${farHourly()}"`, 'watch: true', 'watch_debounce: 200ms']);
    const d = startCli(['daemon', '-c', env.config]);
    await d.waitForLog(msg('daemon started'), 15_000, 'daemon started');
    await redis.call('SET', 'k', 'before');
    await redis.call('SAVE');
    await d.waitForLog(archivedWith(sha(env.source), 'watch'), 20_000, 'the first save');

    // Redis's dir removed and re-created (a volume remounted); Redis is pointed at the new one.
    rmSync(data, { recursive: true });
    mkdirSync(data);
    await d.waitForLog((l) => l.msg === 'watch unavailable: falling back to the schedule' && l.kind === 'folder-gone', 15_000, 'the fallback');
    await redis.call('CONFIG', 'SET', 'dir', data);
    await redis.call('SET', 'k', 'after');
    await bgsaveAndWait(redis);
    const archived = await d.waitForLog(archivedWith(sha(env.source)), 20_000, 'the save after the folder came back');
    // The log says which path archived it: here the re-armed watch (the schedule is hourly).
    expect(archived.trigger).toBe('watch');
    expect(d.logs().some(msg('watch re-armed', { after: 'folder-gone' }))).toBe(true);
    // The deletion of dump.rdb with its folder archived nothing and failed nothing.
    expect(d.logs().some((l) => l.msg === 'run failed')).toBe(false);
    await stop(d);
  });

  it('falls back to the schedule when the watch cannot be had (the inotify watch limit); status, check and metrics show it', async () => {
    const { env, redis } = await setup((root) => ['schedule: "* * * * * *"', 'watch: true', 'metrics:', `  textfile: ${join(root, 'metrics.prom')}`]);
    const metrics = join(env.root, 'metrics.prom');
    // A real ENOSPC where user namespaces allow it (max_user_watches 0 inside one); else the tests-only switch.
    const userns = spawnSync('unshare', ['-Ur', 'sh', '-c', 'echo 0 > /proc/sys/user/max_inotify_watches'], { encoding: 'utf8' }).status === 0;
    const d = userns
      ? startCli(['daemon', '-c', env.config], {}, { prefix: ['unshare', '-Ur', 'sh', '-c', 'echo 0 > /proc/sys/user/max_inotify_watches && exec "$0" "$@"'] })
      : startCli(['daemon', '-c', env.config], { RDB_ARCHIVER_TEST_WATCH_FAIL: 'ENOSPC' });
    console.log(`watch fallback: forced by ${userns ? 'a user namespace with max_inotify_watches=0 (real ENOSPC)' : 'RDB_ARCHIVER_TEST_WATCH_FAIL=ENOSPC'}`);
    const fallback = await d.waitForLog(msg('watch unavailable: falling back to the schedule'), 15_000, 'the fallback');
    expect(fallback).toMatchObject({ kind: 'limit' });
    expect(String(fallback.reason)).toContain('max_user_watches');

    await redis.call('SET', 'k', 'v');
    await redis.call('SAVE');
    await d.waitForLog(archivedWith(sha(env.source), 'schedule'), 20_000, 'the save archived by the schedule');
    // Logged once, however many ticks and retries.
    expect(d.logs().filter(msg('watch unavailable: falling back to the schedule'))).toHaveLength(1);

    const status = jsonOf<{ watch: { mode: string; kind: string; reason: string } }>(await runCli(['status', '--json', '-c', env.config]));
    expect(status.watch).toMatchObject({ mode: 'fallback', kind: 'limit' });
    const text = await runCli(['status', '-c', env.config]);
    expect(text.stdout).toMatch(/watch: +FALLBACK to the schedule since .*inotify limit/);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toContain('fell back to its schedule');
    await until(() => existsSync(metrics) && /rdb_archiver_watch_active\{redis_instance="default"\} 0/.test(readFileSync(metrics, 'utf8')), 'the metrics to show the fallback');
    await stop(d);
  });

  it('SIGTERM during a watch-triggered cycle: the cycle and its hook finish, no follow-up starts, exit 0', async () => {
    const { env, redis } = await setup((root) => [
      `schedule: "${farHourly()}"`, 'watch: true', 'watch_debounce: 100ms',
      'hooks:', `  after_archive: ["sh", "-c", "sleep 2; echo done > ${join(root, 'hook-done')}"]`,
    ]);
    const done = join(env.root, 'hook-done');
    const d = startCli(['daemon', '-c', env.config]);
    await d.waitForLog(msg('daemon started'), 15_000, 'daemon started');
    await redis.call('SET', 'k', 'one');
    await redis.call('SAVE');
    const firstSha = sha(env.source);
    await d.waitForLog(msg('running hook'), 20_000, 'the hook of the watch-triggered cycle');
    // A second save while the cycle runs: one follow-up is queued, which the shutdown drops.
    await redis.call('SET', 'k', 'two');
    await redis.call('SAVE');
    await d.waitForLog((l) => String(l.msg).startsWith('watch: a cycle is running'), 10_000, 'the follow-up to be queued');
    d.kill('SIGTERM');
    await d.waitForLog(msg('stopping: letting the current job finish (a second signal aborts it)'), 5_000, 'graceful stop');
    const exit = await d.exited;
    expect(exit.code, JSON.stringify(d.logs().slice(-6))).toBe(0);
    expect(readFileSync(done, 'utf8')).toBe('done\n');
    expect(d.logs().filter(msg('running hook'))).toHaveLength(1);
    expect(d.logs().filter(msg('snapshot archived')).map((l) => l.sha256)).toEqual([firstSha]);
    expect(tempFiles(env.archive)).toEqual([]);
    expect(existsSync(join(env.archive, '.rdb-archiver', 'watch.json'))).toBe(false);
  });
});

async function until(fn: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
