/**
 * A lock whose mtime is in the future (attack review F6): written by another
 * host with a fast clock on shared storage. Judged by its mtime it would
 * never reach its lease age (every run exits 75 forever) and `check` said its
 * age was 0. Now: a mtime beyond the tolerance is not trusted; the lease runs
 * on this host's own observation (the lock file unchanged: inode, mtime,
 * owner), a refresh by a live holder starts it again, and `check` warns.
 */
import { mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const LEASE_MS = 3000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a lock with an mtime in the future (another host\'s fast clock)', () => {
  it('is respected while it changes, taken over after a lease of this host\'s observation, and check warns about it', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    writeSnapshot(env.source, { seed: 'one', mtime: new Date(Date.now() - 60_000) });
    const first = await runCli(['once', '-c', env.config]);
    expect(first.code, first.stderr).toBe(0);

    // The lock of a run on another host whose clock is an hour ahead; that host then dies.
    const stateDir = join(env.archive, '.rdb-archiver');
    mkdirSync(stateDir, { recursive: true });
    const lock = join(stateDir, 'lock');
    const ahead = new Date(Date.now() + 3_600_000);
    writeFileSync(lock, JSON.stringify({ pid: 4242, startedAt: ahead.toISOString(), command: 'once', host: 'fast-clock-host', bootId: 'b', pidNs: 'pid:[1]', procStart: '1' }) + '\n');
    utimesSync(lock, ahead, ahead);
    writeSnapshot(env.source, { seed: 'two', mtime: new Date(Date.now() - 30_000) });
    const runEnv = { RDB_ARCHIVER_TEST_LOCK_STALE_MS: String(LEASE_MS) };

    // check: the lock's time is in the future; reported, not hidden as "age 0".
    let check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/the lock .*lock by pid 4242 \(once\) has a time in the future .*not observed by a run yet/);

    // The first run sees it and starts this host's observation: still held.
    expect((await runCli(['once', '-c', env.config], { env: runEnv })).code).toBe(75);
    const observation = () => {
      const name = readdirSync(stateDir).find((n) => n.startsWith('lock.seen-'));
      return JSON.parse(readFileSync(join(stateDir, name!), 'utf8')) as { mtimeNs: string; firstSeenAt: string };
    };
    const firstSeen = observation();
    // A live holder refreshes it (a new mtime, still in the future): the observation starts again.
    await sleep(50);
    const refreshed = new Date(ahead.getTime() + 1000);
    utimesSync(lock, refreshed, refreshed);
    expect((await runCli(['once', '-c', env.config], { env: runEnv })).code).toBe(75);
    const again = observation();
    expect(again.mtimeNs).not.toBe(firstSeen.mtimeNs);
    expect(Date.parse(again.firstSeenAt)).toBeGreaterThan(Date.parse(firstSeen.firstSeenAt));
    check = await runCli(['check', '-c', env.config]);
    expect(check.stdout).toMatch(/has a time in the future .* \(since \d{4}-/);

    // Unchanged for longer than the lease, as this host sees it: stale, taken over, the snapshot archived.
    await sleep(LEASE_MS + 300);
    const taken = await runCli(['once', '--json', '-c', env.config], { env: runEnv });
    expect(taken.code, taken.stdout + taken.stderr).toBe(0);
    expect(JSON.parse(taken.stdout)).toMatchObject({ status: 'archived' });
    check = await runCli(['check', '-c', env.config]);
    expect(check.stdout).not.toContain('in the future');
  });
});
