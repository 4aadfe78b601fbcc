/**
 * The run lock through the real CLI (issue 10 item 6): its owner is known by
 * host, boot id, PID namespace, pid and process start time, so a lock is
 * taken over only when its owner is provably dead, or when its lease (the
 * lock file's mtime, refreshed by the holder) expired.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, runCli } from '../helpers/cli.js';
import { until } from '../helpers/daemon.js';
import { setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

const here = {
  host: hostname(),
  bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
  pidNs: readlinkSync('/proc/self/ns/pid'),
};
const startTime = (pid: number) => {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ')[19]!;
};

const lockPath = (env: ArchiveEnv) => join(env.archive, '.rdb-archiver', 'lock');
function plantLock(env: ArchiveEnv, owner: Record<string, unknown>, ageMs = 0): void {
  mkdirSync(join(env.archive, '.rdb-archiver'), { recursive: true, mode: 0o700 });
  writeFileSync(lockPath(env), JSON.stringify({ startedAt: '2026-01-01T00:00:00.000Z', command: 'once', ...owner }) + '\n');
  const when = new Date(Date.now() - ageMs);
  utimesSync(lockPath(env), when, when);
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});
/** A live process unrelated to rdb-archiver. */
function liveStranger(): number {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.push(child);
  return child.pid!;
}

async function archiveReady(): Promise<ArchiveEnv> {
  const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
  writeSnapshot(env.source, { seed: 'lock', mtime: new Date('2025-06-01T10:00:00Z') });
  return env;
}

describe('lock: the owner is more than a pid', () => {
  it('a lock naming a live unrelated pid with another start time is taken over (pid reuse)', async () => {
    const env = await archiveReady();
    const pid = liveStranger();
    plantLock(env, { pid, ...here, procStart: String(Number(startTime(pid)) - 1) });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(lockPath(env))).toBe(false);
  });

  it('a lock naming a live pid with the same start time is respected (exit 75, naming it)', async () => {
    const env = await archiveReady();
    const pid = liveStranger();
    plantLock(env, { pid, ...here, procStart: startTime(pid) });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(75);
    expect(r.stdout + r.stderr).toContain(`pid ${pid}, once`);
    expect(JSON.parse(readFileSync(lockPath(env), 'utf8')).pid).toBe(pid);
  });

  it('a lock from another host (or boot) with a fresh lease is respected, even when its pid is dead here', async () => {
    const env = await archiveReady();
    const dead = spawnSync('true').pid!;
    for (const owner of [{ host: 'pod-b', bootId: here.bootId, pidNs: here.pidNs }, { host: here.host, bootId: '00000000-0000-0000-0000-000000000000', pidNs: here.pidNs }]) {
      plantLock(env, { pid: dead, ...owner, procStart: '1' }, 60_000);
      const r = await runCli(['once', '-c', env.config]);
      expect(r.code, `${owner.host}: ${r.stderr}`).toBe(75);
    }
  });

  it('a lock from another host with an expired lease (30 min without refresh) is taken over, even when its pid is alive here', async () => {
    const env = await archiveReady();
    plantLock(env, { pid: process.pid, host: 'pod-b', bootId: 'x', pidNs: 'pid:[1]', procStart: '1' }, 31 * 60_000);
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
  });

  it('a long run refreshes its lease: the lock file\'s mtime moves while a slow hook runs', async () => {
    const env = await archiveReady();
    env.writeConfig({ extra: 'hooks:\n  after_archive: ["sleep", "2"]' });
    const run = runCli(['once', '-c', env.config], { env: { RDB_ARCHIVER_TEST_LOCK_STALE_MS: '600' } });
    await until(() => existsSync(lockPath(env)), 10_000, 'the lock', 10);
    const first = statSync(lockPath(env)).mtimeMs;
    await until(() => !existsSync(lockPath(env)) || statSync(lockPath(env)).mtimeMs > first, 10_000, 'a refresh', 10);
    expect(existsSync(lockPath(env)), 'the run ended before refreshing').toBe(true);
    // Refreshed: another run finds it held (its owner is alive, and its lease fresh).
    const second = await runCli(['once', '-c', env.config, '--force'], { env: { RDB_ARCHIVER_TEST_LOCK_STALE_MS: '600' } });
    expect(second.code, second.stderr).toBe(75);
    expect((await run).code).toBe(0);
  });
});

const unshareSkip = (() => {
  const r = spawnSync('unshare', ['-p', '-f', '--mount-proc', 'true'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : `unshare -p -f --mount-proc is not allowed here (${(r.stderr || r.error?.message || `exit ${r.status}`).trim()})`;
})();
if (unshareSkip) console.warn(`lock.test.ts: skipping the PID-namespace test: ${unshareSkip}`);

describe('lock: two runs in two PID namespaces (two containers on one volume)', () => {
  it.skipIf(unshareSkip !== undefined)('both see themselves as pid 1; the second respects the first\'s lock (exit 75), nothing partial is left', async () => {
    const env = await archiveReady();
    const marker = join(env.root, 'hook-started');
    env.writeConfig({ extra: `hooks:\n  after_archive: ["sh", "-c", "touch ${marker}; sleep 3"]` });
    const inNamespace = (args: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn('unshare', ['-p', '-f', '--mount-proc', process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      child.on('close', (code) => resolve({ code, out }));
    });
    const first = inNamespace(['once', '-c', env.config]);
    await until(() => existsSync(marker), 15_000, 'the first run to hold the lock (its hook)', 20);
    const owner = JSON.parse(readFileSync(lockPath(env), 'utf8')) as { pid: number; pidNs: string };
    expect(owner.pid).toBe(1); // pid 1 of its own namespace
    expect(owner.pidNs).not.toBe(here.pidNs);
    writeSnapshot(env.source, { seed: 'second', mtime: new Date('2025-06-01T11:00:00Z') });
    const second = await inNamespace(['once', '-c', env.config]);
    expect(second.code, second.out).toBe(75);
    expect((await first).code).toBe(0);
    // The first run's event is whole; the second archived nothing.
    const files = readdirSyncSorted(join(env.archive, 'last'));
    expect(files.filter((f) => !f.includes('2025-06-01T10-00-00')), files.join(' ')).toEqual([]);
    expect(files).toContain('dump-2025-06-01T10-00-00.rdb');
    expect(files).toContain('dump-2025-06-01T10-00-00.sha256');
  });
});

function readdirSyncSorted(dir: string): string[] {
  return readdirSync(dir).sort();
}
