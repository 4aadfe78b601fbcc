/**
 * A small XFS filesystem with reflink, in a loop-mounted image file: where the
 * kernel copy makes a reflink (FICLONE). Needs mkfs.xfs (Debian xfsprogs,
 * installed by .ci/run) and the right to mount (root, outside a container
 * that forbids it). Where mounting is not allowed the caller skips with the
 * reason this returns; under CI=true a missing mkfs.xfs fails instead.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface XfsMount {
  /** The mounted filesystem's root (a fresh XFS with reflink=1). */
  dir: string;
  /** Unmounts it and removes the image. */
  cleanup(): void;
}

const MKFS = ['/usr/sbin/mkfs.xfs', '/sbin/mkfs.xfs'].find((p) => spawnSync(p, ['-V']).status === 0);

/** Mounts a new XFS image of `sizeMiB` (at least 300: mkfs.xfs's minimum), or says why it cannot. */
export function mountXfs(sizeMiB = 512): XfsMount | { skip: string } {
  if (!MKFS) {
    if (process.env.CI === 'true') throw new Error('CI: mkfs.xfs (Debian xfsprogs) must be installed: .ci/run installs it');
    return { skip: 'mkfs.xfs is not installed (apt-get install xfsprogs)' };
  }
  if (process.getuid?.() !== 0) return { skip: 'mounting a loop image needs root' };
  // Not tempDir(): its afterEach cleanup would empty the mounted filesystem under the next test.
  const root = mkdtempSync(join(tmpdir(), 'rdb-archiver-xfs-'));
  const image = join(root, 'xfs.img');
  const dir = join(root, 'mnt');
  mkdirSync(dir);
  execFileSync('truncate', ['-s', `${sizeMiB}M`, image]);
  execFileSync(MKFS, ['-q', '-m', 'reflink=1', image]);
  const mounted = spawnSync('mount', ['-o', 'loop', image, dir], { encoding: 'utf8' });
  if (mounted.status !== 0) {
    rmSync(root, { recursive: true, force: true });
    return { skip: `mount -o loop is not allowed here: ${(mounted.stderr || mounted.error?.message || '').trim()}` };
  }
  return {
    dir,
    cleanup() {
      spawnSync('umount', [dir]);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Bytes in use on the filesystem holding `dir` (after a sync of it), from df. */
export function usedBytes(dir: string): number {
  spawnSync('sync', ['-f', dir]);
  const out = execFileSync('df', ['-B1', '--output=used', dir], { encoding: 'utf8' });
  return Number(out.trim().split('\n').pop());
}
