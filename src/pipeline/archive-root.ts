/**
 * The archive root before a run writes: it must exist (an unmounted backup
 * disk must not turn into a folder on the root filesystem), and it must
 * belong to the user running (a run as root into redis's archive would leave
 * files redis can never prune or replace). Also: is it on the same
 * filesystem as the source, which is no backup of that disk.
 */
import { ArchiveUnavailableError, OwnerMismatchError } from '../core/errors.js';
import type { InstanceConfig } from '../core/config.js';
import type { FileInfo, FileSystem } from '../core/fs.js';
import { ensureDir, errorCode } from '../core/fs.js';
import { effectiveUid, userName } from '../core/trust.js';

/** stat (following a symlink: a root that links to a mount point is fine), or undefined when missing. */
async function statIfExists(fs: FileSystem, path: string): Promise<FileInfo | undefined> {
  try {
    return await fs.stat(path);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

const shortName = (uid: number) => userName(uid).replace(/ \(uid \d+\)$/, '');

export function missingRootError(dir: string): ArchiveUnavailableError {
  return new ArchiveUnavailableError(dir,
    'does not exist: is the backup disk mounted? Nothing was written. Create it for the user that runs rdb-archiver ' +
    `(install -d -o ${shortName(effectiveUid())} -m 0700 ${dir}), or set archive.create: true to have it created`);
}

/** Pure: the refusal when a writing run's user is not the owner of the archive root. */
export function ownerMismatchError(dir: string, ownerUid: number, runUid: number): OwnerMismatchError {
  const owner = userName(ownerUid);
  const runner = userName(runUid);
  return new OwnerMismatchError(dir,
    `${dir}: the archive belongs to ${owner}, but this run is ${runner}: files it wrote would belong to ${runner}, ` +
    `and later runs as ${owner} could neither prune nor replace them. Nothing was written into the archive ` +
    `(the refusal is recorded for check, readable by ${runner} only). ` +
    `Run it as the archive's owner (sudo -u ${shortName(ownerUid)} rdb-archiver …), or pass --allow-owner-mismatch if you mean it`);
}

/**
 * Pure: the warning when the archive and the source share one filesystem. With remotes
 * configured it names them instead of telling the operator to add one.
 */
export function sameFilesystemWarning(archiveDir: string, source: string, remotes: readonly string[] = []): string {
  const head = `the archive ${archiveDir} is on the same filesystem as the source ${source}: it protects against mistakes, not against losing that disk`;
  if (remotes.length === 0) return `${head}; copy it off the host too (remotes:, README "Off-site copies")`;
  return `${head}; after such a loss only the off-site copies remain (remote${remotes.length === 1 ? '' : 's'} ${remotes.join(', ')})`;
}

/**
 * Checks (and with archive.create, makes) the archive root before a run.
 * `writes` is false for a dry run, which creates nothing and writes nothing,
 * so the owner does not matter to it. Returns notes for the run's report
 * (RunReport.notes) and the root's device, which the run compares with the
 * source's once the watcher has stat()ed it (no second stat of the source).
 */
export async function prepareArchiveRoot(fs: FileSystem, instance: InstanceConfig, options: { writes: boolean }): Promise<{ notes: string[]; dev?: string }> {
  const dir = instance.archiveDir;
  let info = await statIfExists(fs, dir);
  const notes: string[] = [];
  if (!info) {
    // An instance's own folder inside a shared archive.dir is ours to make; the shared folder is not.
    const parent = instance.archiveParent;
    const parentInfo = parent !== undefined && !instance.createArchive ? await statIfExists(fs, parent) : undefined;
    if (!instance.createArchive && parentInfo?.kind !== 'dir') throw missingRootError(parent ?? dir);
    if (!options.writes) {
      notes.push(`the archive folder ${dir} does not exist yet; it will be created`);
      return { notes };
    }
    await ensureDir(fs, dir, instance.dirMode);
    info = await fs.stat(dir);
  }
  if (info.kind !== 'dir') throw new ArchiveUnavailableError(dir, 'is not a directory');
  const uid = effectiveUid();
  if (options.writes && !instance.allowOwnerMismatch && info.uid !== uid) throw ownerMismatchError(dir, info.uid, uid);
  return { notes, dev: info.dev };
}

/**
 * The daemon's start-up check: refuse at once (not on every tick) when an
 * existing archive root belongs to another user. A missing root is left to
 * the ticks, which fail with exit 69 until the disk is mounted.
 */
export async function checkOwnerAtStart(fs: FileSystem, instance: InstanceConfig): Promise<void> {
  const info = await statIfExists(fs, instance.archiveDir);
  const uid = effectiveUid();
  if (info && !instance.allowOwnerMismatch && info.uid !== uid) throw ownerMismatchError(instance.archiveDir, info.uid, uid);
}
