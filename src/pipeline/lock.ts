/**
 * An exclusive run lock in the state folder, so overlapping cron runs, a
 * daemon tick, a manual `once` and containers (Kubernetes CronJob pods) on
 * one volume never interleave.
 *
 * The lock file appears atomically with its content (written to a temp file,
 * then link()ed into place, which fails with EEXIST when held). It names its
 * owner by host, boot id, PID namespace, pid and the process's start time
 * (field 22 of /proc/<pid>/stat): a pid alone means nothing across PID
 * namespaces (every container's first process is pid 1) and pids are reused.
 *
 * A lock is taken over only when its owner is provably dead (same host, boot
 * and PID namespace as us, and that pid is gone or is another process with
 * another start time), or when its lease expired: the holder refreshes the
 * lock file's mtime every LOCK_REFRESH_MS, and a lock not refreshed for
 * LOCK_STALE_MS is stale whoever wrote it (restic's model). Taking over a
 * stale lock is itself guarded by a short-lived "takeover" lock, so two runs
 * that both see the same stale lock cannot both remove it and then both win.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { TryAgainError } from '../core/errors.js';
import type { FileInfo, FileSystem } from '../core/fs.js';
import { closeAfter, ensureDir, errorCode, replaceFileAtomic, tempOwnerPid, tempPathFor, unlinkIfExists } from '../core/fs.js';
import { FUTURE_TOLERANCE_MS } from './event-order.js';

export interface LockOwner {
  pid: number;
  startedAt: string;
  command: string;
  /** Who holds it, beyond the pid (absent in locks written by versions before these fields). */
  host?: string;
  /** /proc/sys/kernel/random/boot_id: a pid of another boot is never this boot's process. */
  bootId?: string;
  /** readlink /proc/self/ns/pid, e.g. "pid:[4026531836]": pids compare only inside one namespace. */
  pidNs?: string;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot): tells a reused pid from its first owner. */
  procStart?: string;
}

export interface HeldLock {
  path: string;
  release(): Promise<void>;
}

/** A takeover lock older than this belongs to a run killed mid-takeover. */
const TAKEOVER_STALE_MS = 10_000;

/**
 * A lock whose file was not refreshed (mtime) for this long is stale, whoever
 * holds it: the one way to free a lock held from another host, boot or PID
 * namespace, whose owner we cannot see. restic uses the same 30 minutes.
 */
export const LOCK_STALE_MS = 30 * 60_000;
/** How often a holder refreshes its lock's mtime; well inside LOCK_STALE_MS. restic: 5 minutes. */
export const LOCK_REFRESH_MS = 5 * 60_000;

/**
 * Tests only (documented as such in the README): RDB_ARCHIVER_TEST_LOCK_STALE_MS
 * shortens the lease so that expiry and refresh can be tested in seconds; the
 * refresh interval is then a sixth of it. Never set it in production.
 */
export function leaseDurations(env: NodeJS.ProcessEnv = process.env): { staleMs: number; refreshMs: number } {
  const test = Number(env.RDB_ARCHIVER_TEST_LOCK_STALE_MS);
  if (Number.isFinite(test) && test > 0) return { staleMs: test, refreshMs: Math.max(10, Math.floor(test / 6)) };
  return { staleMs: LOCK_STALE_MS, refreshMs: LOCK_REFRESH_MS };
}

/** Field 22 (starttime) of /proc/<pid>/stat; undefined when the process does not exist (or there is no /proc). */
export function processStartTime(pid: number | 'self'): string | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces and ")": split after the last one.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return fields[19]; // fields from 3 on: field 22 is at index 22 - 3
}

function readTrimmed(read: () => string): string | undefined {
  try {
    return read().trim() || undefined;
  } catch {
    return undefined;
  }
}

export interface ProcessIdentity {
  host: string;
  bootId?: string;
  pidNs?: string;
}

let identity: ProcessIdentity | undefined;
/** This process's host, boot and PID namespace (read once). */
export function thisIdentity(): ProcessIdentity {
  identity ??= {
    host: hostname(),
    bootId: readTrimmed(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8')),
    pidNs: readTrimmed(() => readlinkSync('/proc/self/ns/pid')),
  };
  return identity;
}

export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errorCode(err) === 'EPERM'; // alive, owned by another user
  }
}

/** What a probe of a pid in our own PID namespace finds. */
export type PidProbe = { alive: false } | { alive: true; start?: string };

export function probePid(pid: number): PidProbe {
  if (!isProcessAlive(pid)) return { alive: false };
  return { alive: true, start: processStartTime(pid) };
}

export type LockVerdict = { stale: false; why: string } | { stale: true; why: string };

/**
 * Pure: is the lock `owner` holds stale, seen from `here`? `ageMs` is the time
 * since its last refresh (file mtime). Provably dead = same host, boot and PID
 * namespace, and the pid is gone or belongs to a process with another start
 * time. Anything else is respected until the lease expires.
 */
export function judgeLock(
  owner: LockOwner,
  here: ProcessIdentity,
  probe: (pid: number) => PidProbe,
  ageMs: number,
  staleMs: number,
): LockVerdict {
  if (ageMs > staleMs) return { stale: true, why: `its lease expired: not refreshed for ${Math.round(ageMs / 1000)} s (> ${Math.round(staleMs / 1000)} s)` };
  const legacy = owner.host === undefined && owner.bootId === undefined && owner.pidNs === undefined;
  const local = legacy || (owner.host === here.host && owner.bootId !== undefined && owner.bootId === here.bootId
    && owner.pidNs !== undefined && owner.pidNs === here.pidNs);
  if (!local) return { stale: false, why: `held from ${owner.host ?? 'another host'} (another host, boot or PID namespace): respected until its lease expires` };
  const found = probe(owner.pid);
  if (!found.alive) return { stale: true, why: `its process ${owner.pid} no longer exists` };
  if (owner.procStart !== undefined && found.start !== undefined && found.start !== owner.procStart) {
    return { stale: true, why: `pid ${owner.pid} is now another process (start time ${found.start}, not ${owner.procStart})` };
  }
  return { stale: false, why: `its process ${owner.pid} is alive` };
}

/**
 * What this host saw of a lock whose mtime it cannot trust (in the future:
 * written by a host with a fast clock on shared storage): the lock file as
 * it was (inode, mtime, owner) and when, by this host's clock, it was first
 * seen so. One file per observing host, so hosts never reset each other's.
 */
export interface LockObservation {
  dev: string;
  ino: string;
  mtimeNs: string;
  pid: number;
  startedAt: string;
  /** This host's clock when it first saw the lock exactly so. */
  firstSeenAt: string;
}

/** The observation file of this host for the lock at `path`. */
export function observationPath(path: string, host = thisIdentity().host): string {
  return `${path}.seen-${host.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64)}.json`;
}

export async function readObservation(fs: FileSystem, path: string): Promise<LockObservation | undefined> {
  try {
    const o = JSON.parse((await fs.readFile(observationPath(path))).toString('utf8')) as Partial<LockObservation>;
    const ok = typeof o.dev === 'string' && typeof o.ino === 'string' && typeof o.mtimeNs === 'string' && typeof o.pid === 'number'
      && typeof o.startedAt === 'string' && typeof o.firstSeenAt === 'string' && Number.isFinite(Date.parse(o.firstSeenAt));
    return ok ? (o as LockObservation) : undefined;
  } catch {
    return undefined; // none yet, or unreadable: a new observation starts
  }
}

/** Pure: does the observation describe this very lock file, unchanged? */
export function observationMatches(o: LockObservation | undefined, info: FileInfo, owner: LockOwner): o is LockObservation {
  return !!o && o.dev === info.dev && o.ino === info.ino && o.mtimeNs === info.mtimeNs && o.pid === owner.pid && o.startedAt === owner.startedAt;
}

/** A lock mtime further ahead of this host's clock than this is untrustworthy (the same tolerance as for source mtimes). */
export const LOCK_FUTURE_TOLERANCE_MS = FUTURE_TOLERANCE_MS;

/**
 * How long the lock has gone without a refresh. Normally from its mtime. An
 * mtime in the future (beyond the tolerance) says nothing: a dead holder's
 * lock would never reach its lease age. Then the age is how long this host
 * has seen the lock file unchanged (same inode, mtime and owner), counted by
 * this host's clock from its first observation: a live holder's refresh
 * changes the mtime and starts the count again.
 */
async function leaseAge(fs: FileSystem, path: string, info: FileInfo, owner: LockOwner, nowMs: number): Promise<number> {
  if (info.mtimeMs <= nowMs + LOCK_FUTURE_TOLERANCE_MS) return nowMs - info.mtimeMs;
  const seen = await readObservation(fs, path);
  if (observationMatches(seen, info, owner)) {
    const since = Date.parse(seen.firstSeenAt);
    if (since <= nowMs) return nowMs - since;
  }
  const observation: LockObservation = { dev: info.dev, ino: info.ino, mtimeNs: info.mtimeNs, pid: owner.pid, startedAt: owner.startedAt, firstSeenAt: new Date(nowMs).toISOString() };
  await replaceFileAtomic(fs, observationPath(path), Buffer.from(JSON.stringify(observation) + '\n'), 0o600, { durable: false })
    .catch(() => undefined); // cannot record: the lock stays respected (never stale by mistake)
  return 0;
}

async function readOwner(fs: FileSystem, path: string): Promise<LockOwner | undefined | 'missing'> {
  let text: string;
  try {
    text = (await fs.readFile(path)).toString('utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return 'missing';
    // Not readable (EACCES: another user's lock, EIO): never a reason to think it stale.
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as LockOwner;
    if (typeof parsed?.pid !== 'number' || typeof parsed.startedAt !== 'string') return undefined;
    for (const key of ['host', 'bootId', 'pidNs', 'procStart'] as const) {
      if (parsed[key] !== undefined && typeof parsed[key] !== 'string') return undefined;
    }
    return parsed;
  } catch {
    return undefined; // unparsable content: a write cut short, or outside tampering
  }
}

/** Creates `path` holding `content`, atomically; false when it already exists. */
async function createWithContent(fs: FileSystem, path: string, content: string): Promise<boolean> {
  const tmp = tempPathFor(path);
  let linked = false;
  try {
    await closeAfter(await fs.open(tmp, 'create-exclusive', 0o600), async (handle) => {
      const data = Buffer.from(content);
      await handle.write(data, 0, data.length);
    });
    try {
      await fs.link(tmp, path);
      linked = true;
    } catch (err) {
      // ENOENT: the lock's holder removed our temp, taking its pid for dead (it runs in
      // another PID namespace and cannot see us): the lock is held, as with EEXIST.
      if (errorCode(err) !== 'EEXIST' && errorCode(err) !== 'ENOENT') throw err;
    }
  } catch (err) {
    // Whatever failed, the temp file must not stay behind (the original error is the one to report).
    await unlinkIfExists(fs, tmp).catch(() => undefined);
    throw err;
  }
  try {
    await unlinkIfExists(fs, tmp);
  } catch (err) {
    // We made `path` but cannot finish cleanly: give it back rather than hold a lock the caller never learns about.
    if (linked) await unlinkIfExists(fs, path).catch(() => undefined);
    throw err;
  }
  return linked;
}

/**
 * Removes temp files that runs which no longer exist left in the lock's
 * folder (a lock attempt or a state write killed half-way). Only the lock
 * holder calls this, so no live writer can own them; a live process's temp
 * (another run trying the lock right now) is left alone.
 */
async function removeDeadTemps(fs: FileSystem, dir: string): Promise<void> {
  for (const entry of await fs.readdir(dir)) {
    if (entry.kind !== 'file') continue;
    const pid = tempOwnerPid(entry.name);
    if (pid === undefined || pid === process.pid || isProcessAlive(pid)) continue;
    await unlinkIfExists(fs, join(dir, entry.name));
  }
}

/**
 * Locks this process holds now (path + startedAt). A lock file naming this
 * pid that is not one of them was left by an earlier run in this same
 * process whose release failed (a long-running daemon): it is stale, even
 * though the pid is alive.
 */
const heldHere = new Set<string>();
const heldKey = (path: string, owner: LockOwner) => `${path}\n${owner.pid}\n${owner.startedAt}`;

/** Is the lock at `path`, held by `owner` and last refreshed `ageMs` ago, stale? */
function verdictFor(path: string, owner: LockOwner, ageMs: number, staleMs: number): LockVerdict {
  const here = thisIdentity();
  const mine = owner.pid === process.pid && (owner.pidNs === undefined || owner.pidNs === here.pidNs) && (owner.host === undefined || owner.host === here.host);
  if (mine && ageMs <= staleMs) {
    // Our own pid: held now, or left by an earlier run in this process whose release failed.
    return heldHere.has(heldKey(path, owner)) ? { stale: false, why: 'held by this process' } : { stale: true, why: 'left by an earlier run of this process' };
  }
  return judgeLock(owner, here, probePid, ageMs, staleMs);
}

function isOwnerAlive(path: string, owner: LockOwner): boolean {
  return !verdictFor(path, owner, 0, Number.POSITIVE_INFINITY).stale;
}

function lockedError(path: string, owner: LockOwner | undefined): TryAgainError {
  const host = owner?.host && owner.host !== thisIdentity().host ? ` on ${owner.host}` : '';
  const who = owner ? `pid ${owner.pid}${host}, ${owner.command}, since ${owner.startedAt}` : 'another run';
  const err = new TryAgainError('locked', path, `another rdb-archiver run holds the lock ${path} (${who}); try again later`);
  if (owner) holders.set(err, owner);
  return err;
}
const holders = new WeakMap<Error, LockOwner>();

export interface AcquireOptions {
  /**
   * While a live run of one of these commands holds the lock, wait for it
   * (polling) instead of giving up at once, for at most waitMs. `once` waits
   * for a `prune`: a prune never archives, so giving up would skip a snapshot.
   */
  waitFor?: readonly string[];
  waitMs?: number;
}

export async function acquireLock(fs: FileSystem, path: string, command: string, dirMode: number, options: AcquireOptions = {}): Promise<HeldLock> {
  const deadline = Date.now() + (options.waitMs ?? 0);
  for (;;) {
    try {
      return await attemptLock(fs, path, command, dirMode);
    } catch (err) {
      const holder = err instanceof Error ? holders.get(err) : undefined;
      if (!holder || !options.waitFor?.includes(holder.command) || Date.now() >= deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 40));
    }
  }
}

/**
 * Removes a takeover lock whose run is dead (or that is older than
 * TAKEOVER_STALE_MS); true when it is gone. It is first renamed aside and
 * checked, so a live contender's takeover that replaced it a moment ago is
 * put back instead of being deleted by mistake.
 */
async function removeStaleTakeover(fs: FileSystem, takeoverPath: string): Promise<boolean> {
  let ageMs: number;
  let owner: LockOwner | undefined | 'missing';
  try {
    ageMs = Date.now() - (await fs.stat(takeoverPath)).mtimeMs;
    owner = await readOwner(fs, takeoverPath);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return true;
    throw err;
  }
  if (owner === 'missing') return true;
  // A live owner's, or an unreadable one that is still young (never ours: we write it whole): leave it.
  if (ageMs <= TAKEOVER_STALE_MS && (owner === undefined || isOwnerAlive(takeoverPath, owner))) return false;
  const aside = tempPathFor(takeoverPath);
  try {
    await fs.rename(takeoverPath, aside);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return true;
    throw err;
  }
  const moved = await readOwner(fs, aside).catch(() => undefined);
  const same = owner === undefined
    ? moved === undefined
    : moved !== undefined && moved !== 'missing' && moved.pid === owner.pid && moved.startedAt === owner.startedAt;
  if (!same) await fs.link(aside, takeoverPath).catch(() => undefined);
  await unlinkIfExists(fs, aside);
  return same;
}

async function attemptLock(fs: FileSystem, path: string, command: string, dirMode: number): Promise<HeldLock> {
  await ensureDir(fs, dirname(path), dirMode);
  const here = thisIdentity();
  const me: LockOwner = {
    pid: process.pid, startedAt: new Date().toISOString(), command,
    host: here.host, bootId: here.bootId, pidNs: here.pidNs, procStart: processStartTime('self'),
  };
  const content = JSON.stringify(me) + '\n';
  const key = heldKey(path, me);
  const lease = leaseDurations();
  let refresher: NodeJS.Timeout | undefined;
  let refreshing: Promise<void> = Promise.resolve();
  const held: HeldLock = {
    path,
    release: async () => {
      if (refresher) clearInterval(refresher);
      await refreshing;
      try {
        const owner = await readOwner(fs, path);
        if (owner !== 'missing' && owner?.pid === me.pid && owner.startedAt === me.startedAt) await unlinkIfExists(fs, path);
      } finally {
        heldHere.delete(key);
      }
    },
  };
  /**
   * The lease: a long run (a big copy, a slow hook, a daemon tick) touches the
   * lock file's mtime every refreshMs. Touching is safe even if the lock was
   * taken over meanwhile (it only extends that live run's lease). Unref'd: it
   * never keeps the process alive.
   */
  const startRefreshing = () => {
    if (!fs.touch) return; // a test double without touch(): runs are short there
    const touch = fs.touch.bind(fs);
    refresher = setInterval(() => {
      refreshing = refreshing.then(() => touch(path)).catch(() => undefined);
    }, lease.refreshMs);
    refresher.unref();
  };
  /** We made the lock file: clean up after dead runs, then hand it over. */
  const won = async (): Promise<HeldLock> => {
    heldHere.add(key);
    startRefreshing();
    try {
      await removeDeadTemps(fs, dirname(path));
      // A run killed during its takeover, after it removed the stale lock, leaves its takeover lock behind.
      await removeStaleTakeover(fs, `${path}.takeover`);
      // This host's observation of a lock with a future mtime is done with: that lock is gone.
      await unlinkIfExists(fs, observationPath(path));
    } catch (err) {
      await held.release().catch(() => undefined);
      throw err;
    }
    return held;
  };

  if (await createWithContent(fs, path, content)) return won();

  const owner = await readOwner(fs, path);
  if (owner === 'missing') {
    // Released between our attempt and the read: one more try, no loop.
    if (await createWithContent(fs, path, content)) return won();
    throw lockedError(path, undefined);
  }
  if (owner) {
    let ageMs: number;
    try {
      ageMs = await leaseAge(fs, path, await fs.stat(path), owner, Date.now());
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
      ageMs = 0; // released just now: the takeover below finds it missing and retries
    }
    if (!verdictFor(path, owner, ageMs, lease.staleMs).stale) throw lockedError(path, owner);
  }

  // Stale: take it over under the takeover lock. A takeover lock left by a
  // run killed half-way through its takeover is removed first.
  const takeoverPath = `${path}.takeover`;
  let inTakeover = await createWithContent(fs, takeoverPath, content);
  if (!inTakeover && (await removeStaleTakeover(fs, takeoverPath))) inTakeover = await createWithContent(fs, takeoverPath, content);
  if (!inTakeover) throw lockedError(path, owner);
  const takeoverKey = heldKey(takeoverPath, me);
  heldHere.add(takeoverKey);
  try {
    const again = await readOwner(fs, path);
    const stillStale = again === 'missing' || again === undefined || (again.pid === owner?.pid && again.startedAt === owner.startedAt);
    if (!stillStale) throw lockedError(path, again);
    if (again !== 'missing') await unlinkIfExists(fs, path);
    if (await createWithContent(fs, path, content)) return await won();
    throw lockedError(path, undefined);
  } finally {
    heldHere.delete(takeoverKey);
    await unlinkIfExists(fs, takeoverPath);
  }
}
