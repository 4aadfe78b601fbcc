/**
 * Whether an archived .rdb shares its data with another file (`shared` in
 * `list --json` and `status`). Node cannot ask FIEMAP which extents are
 * shared, so this is decided from what is known for certain: the event's
 * archive record says how it was copied (copy-methods.ts), and a reflink
 * shares the data with the source inode it was cloned from for as long as
 * that inode exists, unchanged. Redis replaces dump.rdb by a rename, which frees
 * the old inode: from then on the archived copy owns its blocks alone. (`filefrag -v
 * FILE` shows the "shared" flag per extent, to check by hand.)
 */
import type { FileInfo } from '../core/fs.js';
import type { CopyMethod } from './copy-methods.js';

export interface Sharing {
  /** How the .rdb was copied; null when its record does not say (linked from an earlier copy, or an older version). */
  copy: CopyMethod | null;
  /** True while the data extents are shared with the source file it was cloned from. */
  shared: boolean;
}

/** From the event's record (copy method, source inode) and the source as it is now (undefined when missing). */
export function sharingOf(
  record: { copy?: CopyMethod; source?: { dev: string; ino: string; mtimeNs?: string; size?: number } } | undefined,
  sourceNow: Pick<FileInfo, 'dev' | 'ino' | 'mtimeNs' | 'size'> | undefined,
): Sharing {
  const copy = record?.copy ?? null;
  const was = record?.source;
  // The same inode, not rewritten since (a rewrite in place gives the source new blocks: same mtime and size, or it did not happen).
  const shared = copy === 'reflink' && sourceNow !== undefined && was !== undefined
    && sourceNow.dev === was.dev && sourceNow.ino === was.ino && (was.mtimeNs === undefined || sourceNow.mtimeNs === was.mtimeNs) && (was.size === undefined || sourceNow.size === was.size);
  return { copy, shared };
}
