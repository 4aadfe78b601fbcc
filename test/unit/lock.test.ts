import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TryAgainError } from '../../src/core/errors.js';
import { OSFS } from '../../src/core/fs.js';
import { acquireLock, isProcessAlive, judgeLock, leaseDurations, processStartTime, type HeldLock } from '../../src/pipeline/lock.js';

const fs = new OSFS();
let dir: string;
let lockPath: string;
let deadPid: number;

beforeAll(() => {
  const child = spawnSync(process.execPath, ['-e', '0']);
  expect(child.status).toBe(0);
  deadPid = child.pid!;
});

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-lock-'));
  lockPath = join(dir, 'state', 'lock');
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const readLock = () => JSON.parse(readFileSync(lockPath, 'utf8')) as { pid: number; startedAt: string; command: string };
const stateEntries = () => readdirSync(join(dir, 'state')).sort();

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
}

/** Puts a lock file written by some other run into the state folder. */
function writeForeignLock(pid: number, extra: Record<string, unknown> = {}): void {
  mkdirSync(join(dir, 'state'), { recursive: true });
  writeFileSync(lockPath, JSON.stringify({ pid, startedAt: '2025-01-01T00:00:00.000Z', command: 'once', ...extra }) + '\n');
}

describe('isProcessAlive', () => {
  it('knows this process is alive and an exited one is not', () => {
    expect(isProcessAlive(process.pid)).toBe(true);
    expect(isProcessAlive(process.ppid)).toBe(true);
    expect(isProcessAlive(deadPid)).toBe(false);
  });

  it.each([0, -1, 1.5, Number.NaN])('treats %s as not a live pid', (pid) => {
    expect(isProcessAlive(pid)).toBe(false);
  });
});

describe('acquireLock', () => {
  it('creates the lock file (and its folder, with dirMode) holding pid, time and command', async () => {
    const before = Date.now();
    const lock = await acquireLock(fs, lockPath, 'once', 0o700);
    expect(lock.path).toBe(lockPath);
    const owner = readLock();
    expect(owner.pid).toBe(process.pid);
    expect(owner.command).toBe('once');
    expect(Date.parse(owner.startedAt)).toBeGreaterThanOrEqual(before - 1000);
    expect(statSync(join(dir, 'state')).mode & 0o777).toBe(0o700);
    // nothing but the lock is left in the folder (no temp files)
    expect(stateEntries()).toEqual(['lock']);
    await lock.release();
  });

  it('a second acquire while held throws TryAgainError (exit code 75) naming the holder', async () => {
    const lock = await acquireLock(fs, lockPath, 'once', 0o700);
    const err = await rejection(acquireLock(fs, lockPath, 'prune', 0o700));
    expect(err).toBeInstanceOf(TryAgainError);
    const e = err as TryAgainError;
    expect(e.exitCode).toBe(75);
    expect(e.kind).toBe('locked');
    expect(e.path).toBe(lockPath);
    expect(e.message).toContain(lockPath);
    expect(e.message).toContain(`pid ${process.pid}`);
    expect(e.message).toContain('once');
    // the failed attempt neither changed the lock nor left temp files
    expect(readLock().command).toBe('once');
    expect(stateEntries()).toEqual(['lock']);
    await lock.release();
  });

  it('release removes the lock, and then acquire works again', async () => {
    const first = await acquireLock(fs, lockPath, 'once', 0o700);
    await first.release();
    expect(existsSync(lockPath)).toBe(false);
    const second = await acquireLock(fs, lockPath, 'prune', 0o700);
    expect(readLock().command).toBe('prune');
    await second.release();
    expect(existsSync(lockPath)).toBe(false);
  });

  it('release is idempotent', async () => {
    const lock = await acquireLock(fs, lockPath, 'once', 0o700);
    await lock.release();
    await lock.release();
    expect(existsSync(lockPath)).toBe(false);
  });

  it("a released handle does not remove a later holder's lock", async () => {
    const old = await acquireLock(fs, lockPath, 'once', 0o700);
    await old.release();
    await new Promise((r) => setTimeout(r, 5)); // a different startedAt
    const current = await acquireLock(fs, lockPath, 'prune', 0o700);
    await old.release();
    expect(existsSync(lockPath)).toBe(true);
    expect(readLock().command).toBe('prune');
    await current.release();
  });

  it('release never removes a lock that belongs to another process', async () => {
    const lock = await acquireLock(fs, lockPath, 'once', 0o700);
    writeFileSync(lockPath, JSON.stringify({ pid: process.ppid, startedAt: 'x', command: 'daemon' }));
    await lock.release();
    expect(readLock().pid).toBe(process.ppid);
  });

  it('takes over a stale lock whose pid is dead', async () => {
    writeForeignLock(deadPid);
    const lock = await acquireLock(fs, lockPath, 'once', 0o700);
    const owner = readLock();
    expect(owner.pid).toBe(process.pid);
    expect(owner.command).toBe('once');
    // the takeover guard is gone again
    expect(stateEntries()).toEqual(['lock']);
    await lock.release();
    expect(existsSync(lockPath)).toBe(false);
  });

  it('does not take over a lock held by a live foreign pid', async () => {
    writeForeignLock(process.ppid, { command: 'daemon' });
    const before = readFileSync(lockPath, 'utf8');
    const err = await rejection(acquireLock(fs, lockPath, 'once', 0o700));
    expect(err).toBeInstanceOf(TryAgainError);
    expect((err as TryAgainError).exitCode).toBe(75);
    expect((err as TryAgainError).message).toContain(`pid ${process.ppid}`);
    expect(readFileSync(lockPath, 'utf8')).toBe(before);
    expect(stateEntries()).toEqual(['lock']);
  });

  it('takes over a lock with unreadable content', async () => {
    writeForeignLock(deadPid);
    writeFileSync(lockPath, 'not json at all');
    const lock = await acquireLock(fs, lockPath, 'once', 0o700);
    expect(readLock().pid).toBe(process.pid);
    await lock.release();
  });

  it('a takeover guard left by a killed run (dead pid) is removed at once and the stale lock taken over', async () => {
    writeForeignLock(deadPid);
    const guard = `${lockPath}.takeover`;
    writeFileSync(guard, JSON.stringify({ pid: deadPid, startedAt: 'x', command: 'once' }));
    const lock = await acquireLock(fs, lockPath, 'once', 0o700);
    expect(readLock().pid).toBe(process.pid);
    expect(stateEntries()).toEqual(['lock']);
    await lock.release();
  });

  it('an unreadable takeover guard is cleared once it is old, then the stale lock is taken over', async () => {
    writeForeignLock(deadPid);
    const guard = `${lockPath}.takeover`;
    writeFileSync(guard, 'garbage');
    const old = (Date.now() - 60_000) / 1000;
    utimesSync(guard, old, old);
    const lock = await acquireLock(fs, lockPath, 'once', 0o700);
    expect(existsSync(guard)).toBe(false);
    expect(readLock().pid).toBe(process.pid);
    await lock.release();
  });

  it('a takeover guard of a live foreign run is left alone', async () => {
    writeForeignLock(deadPid);
    const guard = `${lockPath}.takeover`;
    writeFileSync(guard, JSON.stringify({ pid: process.ppid, startedAt: 'x', command: 'once' }));
    const err = await rejection(acquireLock(fs, lockPath, 'once', 0o700));
    expect(err).toBeInstanceOf(TryAgainError);
    expect(existsSync(guard)).toBe(true);
    expect(readLock().pid).toBe(deadPid);
  });

  it('a fresh takeover guard (another run taking over right now) is left alone', async () => {
    writeForeignLock(deadPid);
    const guard = `${lockPath}.takeover`;
    writeFileSync(guard, '{}');
    const err = await rejection(acquireLock(fs, lockPath, 'once', 0o700));
    expect(err).toBeInstanceOf(TryAgainError);
    expect(existsSync(guard)).toBe(true);
    expect(readLock().pid).toBe(deadPid);
  });

  it('of 20 concurrent acquires exactly one wins, the others get TryAgainError', async () => {
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => acquireLock(fs, lockPath, `run-${i}`, 0o700)));
      const won = results.filter((r): r is PromiseFulfilledResult<HeldLock> => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(19);
      for (const r of lost) expect(r.reason).toBeInstanceOf(TryAgainError);
      expect(stateEntries()).toEqual(['lock']);
      await won[0]!.value.release();
      expect(existsSync(lockPath)).toBe(false);
    }
  });

  it('of 20 concurrent acquires racing for a stale lock exactly one wins', async () => {
    for (let round = 0; round < 5; round++) {
      writeForeignLock(deadPid);
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => acquireLock(fs, lockPath, `run-${i}`, 0o700)));
      const won = results.filter((r): r is PromiseFulfilledResult<HeldLock> => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      for (const r of lost) expect(r.reason).toBeInstanceOf(TryAgainError);
      expect(readLock().pid).toBe(process.pid);
      expect(stateEntries()).toEqual(['lock']);
      await won[0]!.value.release();
    }
  });
});

describe('judgeLock (pure): provably dead, or lease expired', () => {
  const here = { host: 'h', bootId: 'b', pidNs: 'pid:[1]' };
  const owner = { pid: 42, startedAt: 'x', command: 'once', host: 'h', bootId: 'b', pidNs: 'pid:[1]', procStart: '100' };
  const gone = () => ({ alive: false as const });
  const alive = (start?: string) => () => ({ alive: true as const, start });
  const STALE = 30 * 60_000;

  it('same host, boot and namespace: stale when the pid is gone or has another start time, held otherwise', () => {
    expect(judgeLock(owner, here, gone, 0, STALE).stale).toBe(true);
    expect(judgeLock(owner, here, alive('101'), 0, STALE).stale).toBe(true);
    expect(judgeLock(owner, here, alive('100'), 0, STALE).stale).toBe(false);
    expect(judgeLock(owner, here, alive(undefined), 0, STALE).stale).toBe(false); // cannot tell: respected
  });

  it('another host, boot or PID namespace: respected whatever the pid looks like here, until the lease expires', () => {
    for (const other of [{ host: 'x' }, { bootId: 'x' }, { pidNs: 'pid:[2]' }, { bootId: undefined }]) {
      const o = { ...owner, ...other };
      expect(judgeLock(o, here, gone, STALE - 1, STALE).stale, JSON.stringify(other)).toBe(false);
      expect(judgeLock(o, here, gone, STALE + 1, STALE).stale, JSON.stringify(other)).toBe(true);
    }
  });

  it('a live owner whose lease expired is stale too (a hung run cannot hold the archive forever)', () => {
    expect(judgeLock(owner, here, alive('100'), STALE + 1, STALE)).toMatchObject({ stale: true, why: expect.stringContaining('lease expired') });
  });

  it('a lock of an older version (pid only) keeps the old rule: stale when the pid is dead', () => {
    const legacy = { pid: 42, startedAt: 'x', command: 'once' };
    expect(judgeLock(legacy, here, gone, 0, STALE).stale).toBe(true);
    expect(judgeLock(legacy, here, alive('5'), 0, STALE).stale).toBe(false);
  });

  it('lease durations: 30 min stale, refresh every 5 min; the test-only variable shortens both', () => {
    expect(leaseDurations({})).toEqual({ staleMs: 30 * 60_000, refreshMs: 5 * 60_000 });
    expect(leaseDurations({ RDB_ARCHIVER_TEST_LOCK_STALE_MS: '600' })).toEqual({ staleMs: 600, refreshMs: 100 });
  });

  it('processStartTime reads field 22 of /proc/<pid>/stat: stable for a process, undefined for a dead pid', () => {
    const start = processStartTime(process.pid);
    expect(start).toMatch(/^\d+$/);
    expect(processStartTime('self')).toBe(start);
    expect(processStartTime(deadPid)).toBeUndefined();
  });
});
