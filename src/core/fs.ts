/**
 * The one filesystem interface every module does its I/O through.
 *
 * Keeping it small and explicit lets tests wrap it (fault injection: fail the
 * Nth call with ENOSPC/EIO/...) and makes every error carry the operation and
 * path. OSFS is the real implementation on node:fs.
 */
import * as fsp from 'node:fs/promises';
import { constants as C, lstatSync, readSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { fsError, isErrno } from './errors.js';

export type FileKind = 'file' | 'dir' | 'symlink' | 'other';

export interface FileInfo {
  kind: FileKind;
  dev: string;
  ino: string;
  size: number;
  /** Nanoseconds since the epoch, as a decimal string (exact; survives JSON). */
  mtimeNs: string;
  mtimeMs: number;
  /** Inode change time in nanoseconds: moves on any write, even when the mtime is put back. */
  ctimeNs?: string;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
}

export interface DirEntry {
  name: string;
  kind: FileKind;
}

export interface Handle {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  write(buffer: Uint8Array, offset: number, length: number): Promise<number>;
  sync(): Promise<void>;
  stat(): Promise<FileInfo>;
  chmod(mode: number): Promise<void>;
  close(): Promise<void>;
  /**
   * Optional: copies this open file's bytes into a new file `to` (created
   * exclusively, with this file's mode until the caller changes it) inside the
   * kernel. 'clone' shares the data extents (FICLONE, a reflink) and fails with
   * ENOTSUP, EXDEV, EINVAL... where the filesystem cannot; 'kernel' copies with
   * copy_file_range, or sendfile where that is refused (which a filesystem may
   * itself turn into a reflink). It copies the open file, not whatever its path
   * names now: a dump renamed over the source mid-copy does not change it.
   * Errors are FsErrors of the operation 'copy' on `to`. Without it, callers
   * copy through read() and write().
   */
  copyTo?(to: string, how: 'clone' | 'kernel'): Promise<void>;
  /**
   * True when writes bypass the page cache ('create-exclusive-direct'): they
   * are on the device when they return, so there is no write-back to start
   * early; sync() still makes the file (its tail, size and the device cache)
   * durable. Such a handle also takes each write's file offset when the call
   * is made, so the next write may start before the last one returned.
   */
  readonly writesThrough?: boolean;
}

/**
 * 'create-exclusive-direct' creates like 'create-exclusive', with O_DIRECT:
 * writes go from the caller's buffer to the device, not through the page
 * cache. Fails with EINVAL where the filesystem refuses O_DIRECT (the file
 * may then exist: the caller removes it).
 */
export type OpenMode = 'read' | 'read-nofollow' | 'create-exclusive' | 'create-exclusive-direct';

export interface FileSystem {
  open(path: string, mode: OpenMode, perm?: number): Promise<Handle>;
  stat(path: string): Promise<FileInfo>;
  lstat(path: string): Promise<FileInfo>;
  readdir(path: string): Promise<DirEntry[]>;
  /**
   * Optional: the names of the regular files in a folder, as readdir() tells
   * them (kind 'file'), without an entry object per name (a rule folder of
   * 100k events holds 200k names). Without it, callers filter readdir().
   */
  fileNames?(path: string): Promise<string[]>;
  readFile(path: string): Promise<Buffer>;
  mkdir(path: string, perm: number): Promise<void>;
  chmod(path: string, perm: number): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  /** Atomic and never overwrites: fails with EEXIST when `to` exists. */
  link(existing: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** fsync a directory, making renames and links in it durable. */
  syncDir(path: string): Promise<void>;
  /** Space on the filesystem holding path: bytes available to an unprivileged user, and its total size. */
  space(path: string): Promise<{ available: number; total: number }>;
  /** access(W_OK): throws EROFS on a read-only filesystem (for any user), EACCES when this user may not write. */
  accessWrite(path: string): Promise<void>;
  /**
   * Optional bulk form of what retention does per file: in order, lstat each
   * path and unlink it only if it is a regular file owned by `uid` (any owner
   * when uid is undefined). A missing file is not an error. Returns the paths
   * left alone. Errors are those lstat and unlink would throw; the paths
   * before the failing one have been handled. Without it, callers fall back
   * to lstat + unlink per file.
   */
  unlinkOwnedFiles?(paths: readonly string[], uid: number | undefined): Promise<string[]>;
  /**
   * Optional bulk lstat for ownership: the owner uid of each path, undefined
   * for a path that no longer exists. Without it, callers lstat one by one.
   */
  ownersOf?(paths: readonly string[]): Promise<Array<number | undefined>>;
  /** Sets a file's mtime (and atime) to now: how a lock holder refreshes its lease (lock.ts). */
  touch?(path: string): Promise<void>;
}

function kindOf(s: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean }): FileKind {
  if (s.isFile()) return 'file';
  if (s.isDirectory()) return 'dir';
  if (s.isSymbolicLink()) return 'symlink';
  return 'other';
}

function toInfo(s: import('node:fs').BigIntStats): FileInfo {
  return {
    kind: kindOf(s),
    dev: s.dev.toString(),
    ino: s.ino.toString(),
    size: Number(s.size),
    mtimeNs: s.mtimeNs.toString(),
    mtimeMs: Number(s.mtimeMs),
    ctimeNs: s.ctimeNs.toString(),
    mode: Number(s.mode) & 0o7777,
    uid: Number(s.uid),
    gid: Number(s.gid),
    nlink: Number(s.nlink),
  };
}

const OPEN_FLAGS: Record<OpenMode, number> = {
  read: C.O_RDONLY,
  'read-nofollow': C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK,
  'create-exclusive': C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW,
  'create-exclusive-direct': C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW | (C.O_DIRECT ?? 0),
};

/**
 * O_DIRECT needs the file offset, the length and the buffer's address aligned
 * to the device's logical block (512 or 4096 bytes). 4096 covers both; the
 * pass buffers are page-aligned (src/rdb/crc64.ts borrowPassBuffers).
 */
const DIRECT_ALIGN = 4096;

class OSHandle implements Handle {
  constructor(
    protected readonly fh: fsp.FileHandle,
    protected readonly path: string,
  ) {}
  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    try {
      return (await this.fh.read(buffer, offset, length, position)).bytesRead;
    } catch (err) {
      throw fsError('read', this.path, err);
    }
  }
  async write(buffer: Uint8Array, offset: number, length: number): Promise<number> {
    try {
      return (await this.fh.write(buffer, offset, length)).bytesWritten;
    } catch (err) {
      throw fsError('write', this.path, err);
    }
  }
  async sync(): Promise<void> {
    try {
      await this.fh.sync();
    } catch (err) {
      throw fsError('fsync', this.path, err);
    }
  }
  async stat(): Promise<FileInfo> {
    try {
      return toInfo(await this.fh.stat({ bigint: true }));
    } catch (err) {
      throw fsError('fstat', this.path, err);
    }
  }
  async chmod(mode: number): Promise<void> {
    try {
      await this.fh.chmod(mode);
    } catch (err) {
      throw fsError('fchmod', this.path, err);
    }
  }
  async close(): Promise<void> {
    try {
      await this.fh.close();
    } catch (err) {
      throw fsError('close', this.path, err);
    }
  }
  async copyTo(to: string, how: 'clone' | 'kernel'): Promise<void> {
    // /proc/self/fd/N reopens this very file (the inode, whatever its name says
    // now); libuv's copyfile then runs FICLONE (FORCE: no silent fallback, so we
    // know whether a reflink happened) or copy_file_range/sendfile in one
    // thread-pool call, and removes `to` itself when the copy fails.
    const flags = C.COPYFILE_EXCL | (how === 'clone' ? C.COPYFILE_FICLONE_FORCE : 0);
    try {
      await fsp.copyFile(`/proc/self/fd/${this.fh.fd}`, to, flags);
    } catch (err) {
      throw fsError('copy', to, err);
    }
  }
}

/**
 * A file written sequentially with O_DIRECT: each write goes at the current
 * end of the file, its block-aligned part through the O_DIRECT descriptor
 * (from the caller's buffer to the device, no page cache: no copy into it,
 * no write-back later, and Redis's own pages are not pushed out of the
 * cache by a 1 GiB archive copy), the rest (the file's last partial block,
 * or a write that is not aligned) through a second, ordinary descriptor on
 * the same inode. A buffer the device cannot take directly (EINVAL: not
 * aligned in memory) turns the direct path off for the rest of the file.
 */
class DirectHandle extends OSHandle {
  readonly writesThrough = true;
  private position = 0;
  private direct = true;

  constructor(
    fh: fsp.FileHandle,
    private readonly buffered: fsp.FileHandle,
    path: string,
  ) {
    super(fh, path);
  }

  static async create(path: string, perm: number): Promise<DirectHandle> {
    const fh = await fsp.open(path, OPEN_FLAGS['create-exclusive-direct'], perm);
    try {
      // The same inode, whatever its name says by now: /proc/self/fd reopens the descriptor's file.
      const buffered = await fsp.open(`/proc/self/fd/${fh.fd}`, C.O_WRONLY);
      const [a, b] = await Promise.all([fh.stat({ bigint: true }), buffered.stat({ bigint: true })]);
      if (a.dev !== b.dev || a.ino !== b.ino) {
        await buffered.close();
        throw Object.assign(new Error(`reopened ${path} is another file`), { code: 'EXDEV' });
      }
      return new DirectHandle(fh, buffered, path);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** Positional: the file offset is taken when the call is made, so writes may be in flight together. */
  override async write(buffer: Uint8Array, offset: number, length: number): Promise<number> {
    const at = this.position;
    this.position = at + length;
    let aligned = 0;
    if (this.direct && at % DIRECT_ALIGN === 0 && (buffer.byteOffset + offset) % DIRECT_ALIGN === 0) aligned = length - (length % DIRECT_ALIGN);
    let done = 0;
    try {
      while (done < aligned) {
        const n = (await this.fh.write(buffer, offset + done, aligned - done, at + done)).bytesWritten;
        if (n === 0 || n % DIRECT_ALIGN !== 0) {
          done += n;
          break; // a short direct write: the rest goes through the page cache
        }
        done += n;
      }
    } catch (err) {
      if (!isErrno(err, 'EINVAL')) throw fsError('write', this.path, err);
      this.direct = false; // nothing was written by the refused call
    }
    try {
      while (done < length) done += (await this.buffered.write(buffer, offset + done, length - done, at + done)).bytesWritten;
    } catch (err) {
      throw fsError('write', this.path, err);
    }
    return length;
  }

  override async close(): Promise<void> {
    try {
      await this.buffered.close();
    } catch (err) {
      await super.close().catch(() => undefined);
      throw fsError('close', this.path, err);
    }
    await super.close();
  }
}

export class OSFS implements FileSystem {
  async open(path: string, mode: OpenMode, perm = 0o600): Promise<Handle> {
    try {
      if (mode === 'create-exclusive-direct') return await DirectHandle.create(path, perm);
      return new OSHandle(await fsp.open(path, OPEN_FLAGS[mode], perm), path);
    } catch (err) {
      throw fsError(mode.startsWith('create') ? 'create' : 'open', path, err);
    }
  }
  async stat(path: string): Promise<FileInfo> {
    try {
      return toInfo(await fsp.stat(path, { bigint: true }));
    } catch (err) {
      throw fsError('stat', path, err);
    }
  }
  async lstat(path: string): Promise<FileInfo> {
    try {
      return toInfo(await fsp.lstat(path, { bigint: true }));
    } catch (err) {
      throw fsError('lstat', path, err);
    }
  }
  async readdir(path: string): Promise<DirEntry[]> {
    try {
      const entries = await fsp.readdir(path, { withFileTypes: true });
      return entries.map((e) => ({ name: e.name, kind: kindOf(e) }));
    } catch (err) {
      throw fsError('readdir', path, err);
    }
  }
  async fileNames(path: string): Promise<string[]> {
    // A subclass that wraps readdir sees the call.
    if (this.readdir !== OSFS.prototype.readdir) return (await this.readdir(path)).filter((e) => e.kind === 'file').map((e) => e.name);
    let entries;
    try {
      entries = await fsp.readdir(path, { withFileTypes: true });
    } catch (err) {
      throw fsError('readdir', path, err);
    }
    const names: string[] = [];
    for (const entry of entries) if (entry.isFile()) names.push(entry.name);
    return names;
  }
  async readFile(path: string): Promise<Buffer> {
    try {
      return await fsp.readFile(path);
    } catch (err) {
      throw fsError('read', path, err);
    }
  }
  async mkdir(path: string, perm: number): Promise<void> {
    try {
      await fsp.mkdir(path, { mode: perm });
    } catch (err) {
      throw fsError('mkdir', path, err);
    }
  }
  async chmod(path: string, perm: number): Promise<void> {
    try {
      await fsp.chmod(path, perm);
    } catch (err) {
      throw fsError('chmod', path, err);
    }
  }
  async rename(from: string, to: string): Promise<void> {
    try {
      await fsp.rename(from, to);
    } catch (err) {
      throw fsError('rename', `${from} -> ${to}`, err);
    }
  }
  async link(existing: string, to: string): Promise<void> {
    try {
      await fsp.link(existing, to);
    } catch (err) {
      throw fsError('link', `${existing} -> ${to}`, err);
    }
  }
  async unlink(path: string): Promise<void> {
    try {
      await fsp.unlink(path);
    } catch (err) {
      throw fsError('unlink', path, err);
    }
  }
  /** Synchronous lstat in slices of at most UNLINK_SLICE_MS (see unlinkOwnedFiles: the thread pool costs more than the call). */
  async ownersOf(paths: readonly string[]): Promise<Array<number | undefined>> {
    if (this.lstat !== OSFS.prototype.lstat) {
      const out: Array<number | undefined> = [];
      for (const path of paths) out.push((await lstatIfExists(this, path))?.uid);
      return out;
    }
    const out: Array<number | undefined> = [];
    let sliceStart = monotonicMs();
    for (let i = 0; i < paths.length; i++) {
      try {
        out.push(lstatSync(paths[i]!, NO_THROW_IF_MISSING)?.uid);
      } catch (err) {
        throw fsError('lstat', paths[i]!, err);
      }
      if ((i & 63) === 63 && monotonicMs() - sliceStart > UNLINK_SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = monotonicMs();
      }
    }
    return out;
  }
  async touch(path: string): Promise<void> {
    try {
      const now = new Date();
      await fsp.utimes(path, now, now);
    } catch (err) {
      throw fsError('utimes', path, err);
    }
  }
  async syncDir(path: string): Promise<void> {
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(path, C.O_RDONLY | C.O_DIRECTORY);
      await fh.sync();
    } catch (err) {
      throw fsError('fsync-dir', path, err);
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }
  async accessWrite(path: string): Promise<void> {
    try {
      await fsp.access(path, fsp.constants.W_OK);
    } catch (err) {
      throw fsError('access', path, err);
    }
  }
  async space(path: string): Promise<{ available: number; total: number }> {
    try {
      const s = await fsp.statfs(path);
      return { available: Number(s.bavail) * Number(s.bsize), total: Number(s.blocks) * Number(s.bsize) };
    } catch (err) {
      throw fsError('statfs', path, err);
    }
  }
  /**
   * Synchronous lstat + unlink, in slices of at most UNLINK_SLICE_MS that
   * yield to the event loop in between. Through the libuv thread pool every
   * file costs two thread hand-offs per call, which dominated a bulk prune
   * (100k events: 15 s vs 4 s). The check still runs on each path right
   * before its unlink.
   */
  async unlinkOwnedFiles(paths: readonly string[], uid: number | undefined): Promise<string[]> {
    const skipped: string[] = [];
    if (this.lstat !== OSFS.prototype.lstat || this.unlink !== OSFS.prototype.unlink) {
      // A subclass that wraps lstat or unlink sees every call, one by one.
      for (const path of paths) {
        let info: FileInfo;
        try {
          info = await this.lstat(path);
        } catch (err) {
          if (errorCode(err) === 'ENOENT') continue;
          throw err;
        }
        if (info.kind !== 'file' || (uid !== undefined && info.uid !== uid)) {
          skipped.push(path);
          continue;
        }
        await unlinkIfExists(this, path);
      }
      return skipped;
    }
    // Not performance.now(): the first use of `performance` loads perf_hooks,
    // a cost every run would pay; and not Date.now(), which can jump back.
    let sliceStart = monotonicMs();
    for (let i = 0; i < paths.length; i++) {
      const path = paths[i]!;
      let info: import('node:fs').Stats | undefined;
      try {
        info = lstatSync(path, NO_THROW_IF_MISSING);
      } catch (err) {
        throw fsError('lstat', path, err);
      }
      if (info === undefined) continue;
      if (!info.isFile() || (uid !== undefined && info.uid !== uid)) {
        skipped.push(path);
        continue;
      }
      try {
        unlinkSync(path);
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw fsError('unlink', path, err);
      }
      if ((i & 63) === 63 && monotonicMs() - sliceStart > UNLINK_SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = monotonicMs();
      }
    }
    return skipped;
  }
}

/** lstatSync's options in the bulk loops (one object, not one per file). */
const NO_THROW_IF_MISSING = { throwIfNoEntry: false } as const;

/** Longest stretch OSFS.unlinkOwnedFiles blocks the event loop. */
const UNLINK_SLICE_MS = 20;
const monotonicMs = (): number => Number(process.hrtime.bigint() / 1_000_000n);

// ---------------------------------------------------------------------------
// Small helpers built only on the interface, shared by every writer.

/** The error code an FsError (or raw Node error) carries, if any. */
export function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown };
  return typeof e?.code === 'string' ? e.code : undefined;
}

/** lstat, or undefined when the path does not exist. */
export async function lstatIfExists(fs: FileSystem, path: string): Promise<FileInfo | undefined> {
  try {
    return await fs.lstat(path);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** readFromStart for a descriptor, synchronously (small files read while a config is loaded). */
export function readFromStartSync(fd: number, size: number): Buffer {
  const data = Buffer.alloc(size);
  let offset = 0;
  while (offset < data.length) {
    const n = readSync(fd, data, offset, data.length - offset, offset);
    if (n === 0) break;
    offset += n;
  }
  return data.subarray(0, offset);
}

/** Reads up to `size` bytes from the start of an open file; the result is shorter if the file is. */
export async function readFromStart(handle: Handle, size: number): Promise<Buffer> {
  const data = Buffer.alloc(size);
  let offset = 0;
  while (offset < data.length) {
    const n = await handle.read(data, offset, data.length - offset, offset);
    if (n === 0) break;
    offset += n;
  }
  return data.subarray(0, offset);
}

export async function exists(fs: FileSystem, path: string): Promise<boolean> {
  try {
    await fs.lstat(path);
    return true;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Creates a directory (and missing parents) with `perm`, and fixes its mode against the umask. */
export async function ensureDir(fs: FileSystem, path: string, perm: number): Promise<void> {
  try {
    const info = await fs.stat(path);
    if (info.kind !== 'dir') throw fsError('mkdir', path, Object.assign(new Error('exists and is not a directory'), { code: 'ENOTDIR' }));
    return;
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
  }
  const parent = dirname(path);
  if (parent !== path) await ensureDir(fs, parent, perm);
  try {
    await fs.mkdir(path, perm);
  } catch (err) {
    if (errorCode(err) === 'EEXIST') return; // a concurrent run made it
    throw err;
  }
  await fs.chmod(path, perm);
}

export async function unlinkIfExists(fs: FileSystem, path: string): Promise<void> {
  try {
    await fs.unlink(path);
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
  }
}

/**
 * Starts at a random value: runs in separate PID namespaces (containers, CronJob
 * pods sharing one volume) are all pid 1, and a counter starting at 0 made their
 * temp names collide (EEXIST on the lock's temp file, exit 74 instead of 75).
 */
let tmpCounter = Math.floor(Math.random() * 2 ** 40);
/** A temp name in the same folder as `finalPath`, recognisable by retention as ours. */
export function tempPathFor(finalPath: string): string {
  const dir = dirname(finalPath);
  const base = finalPath.slice(dir.length + 1);
  tmpCounter += 1;
  return `${dir}/${TEMP_PREFIX}${process.pid}-${tmpCounter}-${base}`;
}
export const TEMP_PREFIX = '.tmp-rdb-archiver-';

/** The pid that made a temp file, read back from its name. */
export function tempOwnerPid(name: string): number | undefined {
  if (!name.startsWith(TEMP_PREFIX)) return undefined;
  // Exactly what tempPathFor makes: <prefix><pid>-<counter>-<final name>.
  const m = /^(\d+)-\d+-./.exec(name.slice(TEMP_PREFIX.length));
  const pid = m ? Number(m[1]) : Number.NaN;
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Runs `body` with an open handle, then closes it. When `body` fails, that
 * error is the one reported: a close() failing too (a full or broken disk
 * fails both) must not hide the first cause.
 */
export async function closeAfter<T>(handle: Handle, body: (handle: Handle) => Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await body(handle);
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
  await handle.close();
  return result;
}

export interface WriteOptions {
  /** fsync the file (and, for replaceFileAtomic, its folder). Default true. */
  durable?: boolean;
}

/** Writes `data` to a new file at `tmpPath` with `perm`, fsyncs (unless told not to) and closes it. */
export async function writeNewFile(fs: FileSystem, tmpPath: string, data: Uint8Array, perm: number, options: WriteOptions = {}): Promise<void> {
  await closeAfter(await fs.open(tmpPath, 'create-exclusive', perm), async (handle) => {
    await handle.chmod(perm); // the umask must not loosen or tighten the configured mode
    let offset = 0;
    while (offset < data.length) offset += await handle.write(data, offset, data.length - offset);
    if (options.durable !== false) await handle.sync();
  });
}

/**
 * Replaces `finalPath` atomically: tmp -> fsync -> rename -> fsync(dir).
 * Used for files we own and rewrite (state, metrics); archive files use
 * publishNew() instead, which never overwrites. With durable: false the
 * replacement is still atomic for readers and for a killed process, only not
 * forced to disk (a power cut may keep the previous version).
 */
export async function replaceFileAtomic(
  fs: FileSystem,
  finalPath: string,
  data: Uint8Array,
  perm: number,
  options: WriteOptions & {
    /** A temp name in the same folder; the default ends with the final name (see tempPathFor). */
    tmp?: string;
  } = {},
): Promise<void> {
  const tmp = options.tmp ?? tempPathFor(finalPath);
  try {
    await writeNewFile(fs, tmp, data, perm, options);
    await fs.rename(tmp, finalPath);
  } catch (err) {
    await unlinkIfExists(fs, tmp).catch(() => undefined);
    throw err;
  }
  if (options.durable !== false) await fs.syncDir(dirname(finalPath));
}

/** Gives a complete temp file its final name without ever replacing an existing file. */
export async function publishNew(fs: FileSystem, tmpPath: string, finalPath: string): Promise<void> {
  await fs.link(tmpPath, finalPath);
  await fs.unlink(tmpPath);
}

export { isErrno };
