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
import { dirname } from 'node:path';
import { TryAgainError } from './errors.js';
import type { FileSystem } from './fs.js';
import { ensureDir, errorCode, tempPathFor, unlinkIfExists } from './fs.js';

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
  try {
    const parsed = JSON.parse((await fs.readFile(path)).toString('utf8')) as LockOwner;
    return typeof parsed?.pid === 'number' ? parsed : undefined;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return 'missing';
    return undefined; // unreadable content: only possible from outside tampering
  }
}

/** Creates `path` holding `content`, atomically; false when it already exists. */
async function createWithContent(fs: FileSystem, path: string, content: string): Promise<boolean> {
  const tmp = tempPathFor(path);
  const handle = await fs.open(tmp, 'create-exclusive', 0o600);
  try {
    const data = Buffer.from(content);
    await handle.write(data, 0, data.length);
  } finally {
    await handle.close();
  }
  try {
    await fs.link(tmp, path);
    return true;
  } catch (err) {
    if (errorCode(err) === 'EEXIST') return false;
    throw err;
  } finally {
    await unlinkIfExists(fs, tmp);
  }
}

function lockedError(path: string, owner: LockOwner | undefined): TryAgainError {
  const who = owner ? `pid ${owner.pid}, ${owner.command}, since ${owner.startedAt}` : 'another run';
  return new TryAgainError('locked', path, `another rdb-archiver run holds the lock ${path} (${who}); try again later`);
}

export async function acquireLock(fs: FileSystem, path: string, command: string, dirMode: number): Promise<HeldLock> {
  await ensureDir(fs, dirname(path), dirMode);
  const me: LockOwner = { pid: process.pid, startedAt: new Date().toISOString(), command };
  const content = JSON.stringify(me) + '\n';
  const held: HeldLock = {
    path,
    release: async () => {
      const owner = await readOwner(fs, path);
      if (owner !== 'missing' && owner?.pid === me.pid && owner.startedAt === me.startedAt) await unlinkIfExists(fs, path);
    },
  };

  if (await createWithContent(fs, path, content)) return held;

  const owner = await readOwner(fs, path);
  if (owner === 'missing') {
    // Released between our attempt and the read: one more try, no loop.
    if (await createWithContent(fs, path, content)) return held;
    throw lockedError(path, undefined);
  }
  if (owner && isProcessAlive(owner.pid)) throw lockedError(path, owner);

  // Stale: take it over under the takeover lock.
  const takeoverPath = `${path}.takeover`;
  if (!(await createWithContent(fs, takeoverPath, content))) {
    try {
      const info = await fs.stat(takeoverPath);
      if (Date.now() - info.mtimeMs > TAKEOVER_STALE_MS) await unlinkIfExists(fs, takeoverPath);
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
    }
    throw lockedError(path, owner);
  }
  try {
    const again = await readOwner(fs, path);
    const stillStale = again === 'missing' || again === undefined || (again.pid === owner?.pid && again.startedAt === owner.startedAt);
    if (!stillStale) throw lockedError(path, again);
    if (again !== 'missing') await unlinkIfExists(fs, path);
    if (await createWithContent(fs, path, content)) return held;
    throw lockedError(path, undefined);
  } finally {
    await unlinkIfExists(fs, takeoverPath);
  }
}
