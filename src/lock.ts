/**
 * An exclusive run lock in the state folder, so overlapping cron runs, a
 * daemon tick and a manual `once` never interleave.
 *
 * The lock file appears atomically with its content (written to a temp file,
 * then link()ed into place, which fails with EEXIST when held). It is stale
 * when the pid it names is dead. Taking over a stale lock is itself guarded
 * by a short-lived "takeover" lock, so two runs that both see the same stale
 * lock cannot both remove it and then both win.
 */
import { dirname, join } from 'node:path';
import { TryAgainError } from './errors.js';
import type { FileSystem } from './fs.js';
import { closeAfter, ensureDir, errorCode, tempOwnerPid, tempPathFor, unlinkIfExists } from './fs.js';

export interface LockOwner {
  pid: number;
  startedAt: string;
  command: string;
}

export interface HeldLock {
  path: string;
  release(): Promise<void>;
}

/** A takeover lock older than this belongs to a run killed mid-takeover. */
const TAKEOVER_STALE_MS = 10_000;

export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errorCode(err) === 'EPERM'; // alive, owned by another user
  }
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
    return typeof parsed?.pid === 'number' && typeof parsed.startedAt === 'string' ? parsed : undefined;
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
      if (errorCode(err) !== 'EEXIST') throw err;
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

function isOwnerAlive(path: string, owner: LockOwner): boolean {
  if (owner.pid === process.pid) return heldHere.has(heldKey(path, owner));
  return isProcessAlive(owner.pid);
}

function lockedError(path: string, owner: LockOwner | undefined): TryAgainError {
  const who = owner ? `pid ${owner.pid}, ${owner.command}, since ${owner.startedAt}` : 'another run';
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
  const me: LockOwner = { pid: process.pid, startedAt: new Date().toISOString(), command };
  const content = JSON.stringify(me) + '\n';
  const key = heldKey(path, me);
  const held: HeldLock = {
    path,
    release: async () => {
      try {
        const owner = await readOwner(fs, path);
        if (owner !== 'missing' && owner?.pid === me.pid && owner.startedAt === me.startedAt) await unlinkIfExists(fs, path);
      } finally {
        heldHere.delete(key);
      }
    },
  };
  /** We made the lock file: clean up after dead runs, then hand it over. */
  const won = async (): Promise<HeldLock> => {
    heldHere.add(key);
    try {
      await removeDeadTemps(fs, dirname(path));
      // A run killed during its takeover, after it removed the stale lock, leaves its takeover lock behind.
      await removeStaleTakeover(fs, `${path}.takeover`);
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
  if (owner && isOwnerAlive(path, owner)) throw lockedError(path, owner);

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
