/**
 * The watcher: an mtime poll of the source against the state file.
 *
 * It only stats and enqueues. It never copies and never makes a timestamp:
 * the worker does both from the descriptor it opens.
 */
import { SourceUnavailableError } from '../core/errors.js';
import type { FileInfo, FileSystem } from '../core/fs.js';
import { errorCode } from '../core/fs.js';
import type { StreamedSnapshot } from '../sources/source.js';
import type { SourceIdentity } from './state.js';
import { identityOf, sameIdentity } from './state.js';

export type ChangeReason = 'first-snapshot' | 'changed' | 'forced' | 'event-missing' | 'min-interval';

export type Detection =
  | { changed: false; identity: SourceIdentity }
  | { changed: true; identity: SourceIdentity; reason: ChangeReason };

/**
 * "Changed" means dev, inode, size, mtime or ctime differs, not "is newer": a clock
 * stepped back, or a restored older file, must still be archived.
 */
export function detectChange(current: SourceIdentity, lastArchived: SourceIdentity | undefined, force = false): Detection {
  if (force) return { changed: true, identity: current, reason: 'forced' };
  if (!lastArchived) return { changed: true, identity: current, reason: 'first-snapshot' };
  if (sameIdentity(current, lastArchived)) return { changed: false, identity: current };
  return { changed: true, identity: current, reason: 'changed' };
}

const KIND_WORDS: Record<string, string> = {
  dir: 'is a directory, not a file',
  symlink: 'is a symlink: point source.rdb at the real file',
  other: 'is not a regular file (FIFO, socket or device)',
};

/** Stats the source without following a symlink; anything but a regular file is an error. */
export async function statSource(fs: FileSystem, path: string): Promise<FileInfo> {
  let info: FileInfo;
  try {
    info = await fs.lstat(path);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') throw new SourceUnavailableError(path, 'does not exist (has Redis saved a snapshot yet?)');
    throw err;
  }
  if (info.kind !== 'file') throw new SourceUnavailableError(path, KIND_WORDS[info.kind]!);
  return info;
}

export function describeSourceKind(info: FileInfo): string | undefined {
  return info.kind === 'file' ? undefined : KIND_WORDS[info.kind];
}

export interface SnapshotJob {
  sourceRdb: string;
  sourceNodes?: string;
  identity: SourceIdentity;
  reason: ChangeReason;
  /**
   * A network source (src/sources/): opens the snapshot as a stream, read
   * once; `sourceRdb` is then the server's URL, not a file.
   */
  stream?: { open: () => Promise<StreamedSnapshot>; estimateBytes?: number };
}

export function jobKey(job: SnapshotJob): string {
  const { dev, ino, size, mtimeNs } = job.identity;
  return `${job.sourceRdb}|${dev}|${ino}|${size}|${mtimeNs}`;
}

/** Polls the source once; a change becomes a job pushed to `enqueue`. */
export async function pollOnce(
  fs: FileSystem,
  source: { rdb: string; nodes?: string },
  lastArchived: SourceIdentity | undefined,
  force: boolean,
): Promise<{ detection: Detection; job?: SnapshotJob }> {
  const info = await statSource(fs, source.rdb);
  const detection = detectChange(identityOf(info), lastArchived, force);
  if (!detection.changed) return { detection };
  return {
    detection,
    job: { sourceRdb: source.rdb, sourceNodes: source.nodes, identity: detection.identity, reason: detection.reason },
  };
}
