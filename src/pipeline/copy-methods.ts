/**
 * How a snapshot's bytes get into its temp file, and how the checks come to
 * describe exactly those bytes.
 *
 *  - reflink: FICLONE. The temp shares the source's data extents: nothing is
 *    written, the copy takes milliseconds, and the archive costs no space
 *    while the source still exists (see README "Copy methods").
 *  - direct: one read pass through our page-aligned buffers, each chunk
 *    hashed, validated and written with O_DIRECT from the same buffer. The
 *    pass has to bring every byte into user space for the sha256 and the RDB
 *    check anyway; writing that buffer straight to the device then costs no
 *    second copy (copy_file_range copies page cache to page cache), no
 *    write-back later, and leaves Redis's pages in the cache. Measured on the
 *    development machine (ext4, 1 GiB): system time 0.5 s against 1.2-3.7 s
 *    for copy_file_range alongside the same read pass (BENCHMARKS.md).
 *  - copy_file_range: the kernel copies page cache to page cache (libuv falls
 *    back to sendfile, and a filesystem may itself turn it into a reflink),
 *    where O_DIRECT is refused (tmpfs before Linux 6.6, some FUSE filesystems).
 *  - read-write: one pass through our buffers and the page cache, each chunk
 *    written and hashed (where the others are refused).
 *
 * direct and read-write hash and validate the very buffer they write. For the
 * kernel methods the sha256 and the RDB check run over the source's bytes,
 * read through the same open descriptor while the kernel copies (two cores:
 * the copy in a thread-pool thread, the hashing on the main thread). That
 * describes the temp because both read the same inode and that inode did not
 * change: its identity, size, mtime and ctime are the same after the copy and
 * the hashing ended as when it was opened (the caller's `unchanged`), and the
 * temp has as many bytes as were hashed. Reading the temp back instead would
 * read the disk after a reflink (a clone has no page cache of its own), and
 * would serialise the copy and the hashing.
 */
import type { FileSystem, Handle } from '../core/fs.js';
import { closeAfter, errorCode, unlinkIfExists } from '../core/fs.js';
import { FsError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { RdbInfo } from '../rdb/validate.js';

export const COPY_METHODS = ['reflink', 'direct', 'copy_file_range', 'read-write'] as const;
export type CopyMethod = (typeof COPY_METHODS)[number];

/** What one read pass over the source found: what the temp (and so the event) holds. */
export interface PassResult {
  bytes: number;
  sha256: string;
  rdb: RdbInfo;
}

export interface TempCopy {
  result: PassResult;
  method: CopyMethod;
}

/**
 * Test-only switch, RDB_ARCHIVER_COPY_METHOD: 'read-write' forces the
 * fallback, 'direct' or 'copy_file_range' starts with that method (then
 * read-write), 'reflink' (or unset) tries everything in order. The
 * reliability suite runs its trials on each.
 */
export const COPY_METHOD_ENV = 'RDB_ARCHIVER_COPY_METHOD';

/** The methods to try, in order, for this run (see COPY_METHOD_ENV and archive.max_rate). */
export function copyMethodsFor(maxRate: number | undefined, env: NodeJS.ProcessEnv = process.env): CopyMethod[] {
  const forced = env[COPY_METHOD_ENV];
  let methods: CopyMethod[] = [...COPY_METHODS];
  if (forced === 'read-write') methods = ['read-write'];
  else if (forced === 'copy_file_range') methods = ['copy_file_range', 'read-write'];
  else if (forced === 'direct') methods = ['direct', 'read-write'];
  // A kernel copy cannot be paced: with a rate limit only a reflink (which writes no data) stays.
  if (maxRate !== undefined) methods = methods.filter((m) => m !== 'copy_file_range');
  return methods;
}

export interface CopyArgs {
  fs: FileSystem;
  log: Log;
  source: Handle;
  sourcePath: string;
  /** The temp file to create (it must not exist); the caller removes it when anything fails. */
  temp: string;
  fileMode: number;
  methods: readonly CopyMethod[];
  /** One read pass over the source: written to `out` when given, hashed and validated either way. */
  pass: (out: Handle | undefined) => Promise<PassResult>;
  /** Throws (TryAgainError) when the source changed since it was opened, or `bytes` is not its size. */
  unchanged: (bytes: number) => Promise<void>;
  /** Told why a kernel copy fell back to read-write (it goes into the run's warnings). */
  warn: (message: string) => void;
}

/**
 * Errors of a kernel copy that belong to the destination for certain (the
 * source is already open for reading, which cannot fail this way): the
 * folder fails with them, as a write would. Anything else (EIO, ENOSYS,
 * EPERM from a seccomp filter, no /proc...) is retried through read-write,
 * which tells the source's errors from the folder's.
 */
const DESTINATION_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EFBIG']);

/** Copies the source into `args.temp` with the first method that works; durable (fsynced) and with fileMode when it returns. */
export async function copyIntoTemp(args: CopyArgs): Promise<TempCopy> {
  const kernel = typeof args.source.copyTo === 'function';
  // The clone first, alone: it takes milliseconds, and where it fails the source has not been read yet.
  if (kernel && args.methods.includes('reflink') && (await tryClone(args))) {
    const copied = await kernelCopy(args, 'reflink');
    if (copied) return copied;
  }
  if (args.methods.includes('direct')) {
    const copied = await passCopy(args, 'direct');
    if (copied) return copied;
  }
  if (kernel && args.methods.includes('copy_file_range')) {
    const copied = await kernelCopy(args, 'copy_file_range');
    if (copied) return copied;
  }
  return (await passCopy(args, 'read-write'))!;
}

/**
 * The pass writes what it reads into the temp: the sha256 and the RDB check
 * are of the buffers written. 'direct' opens the temp with O_DIRECT and gives
 * way (undefined) where the filesystem refuses it.
 */
async function passCopy(args: CopyArgs, method: 'direct' | 'read-write'): Promise<TempCopy | undefined> {
  let out: Handle;
  try {
    out = await args.fs.open(args.temp, method === 'direct' ? 'create-exclusive-direct' : 'create-exclusive', args.fileMode);
  } catch (err) {
    if (method !== 'direct' || errorCode(err) !== 'EINVAL') throw err;
    // The filesystem refuses O_DIRECT (it may have created the file first).
    args.log.debug({ path: args.temp }, 'no O_DIRECT here');
    await unlinkIfExists(args.fs, args.temp);
    return undefined;
  }
  const result = await closeAfter(out, async () => {
    await out.chmod(args.fileMode);
    const r = await args.pass(out);
    await out.sync();
    return r;
  });
  return { result, method };
}

/** The kernel copy and the hashing of the source, side by side; undefined when it has to fall back to a pass. */
async function kernelCopy(args: CopyArgs, method: 'reflink' | 'copy_file_range'): Promise<TempCopy | undefined> {
  const cloned = method === 'reflink';
  const copying: Promise<CopyMethod> = cloned ? Promise.resolve('reflink') : args.source.copyTo!(args.temp, 'kernel').then(() => 'copy_file_range');
  copying.catch(() => undefined); // awaited below, after the hashing settles
  // The kernel copies page cache to page cache in a fraction of the hashing's time: start the
  // write-back as soon as it is done, so that the disk writes while the CPU still hashes.
  const flushing = copying.then(async (method) => {
    if (method !== 'reflink') await closeAfter(await args.fs.open(args.temp, 'read-nofollow'), (temp) => temp.sync());
  });
  flushing.catch(() => undefined);
  const hashing = args.pass(undefined);
  hashing.catch(() => undefined);
  const [copy, hash, flush] = await Promise.allSettled([copying, hashing, flushing]);
  if (hash.status === 'rejected') throw hash.reason; // invalid, or changed: nothing more to learn from the copy
  if (copy.status === 'rejected') {
    const err = copy.reason;
    if (DESTINATION_ERRORS.has(errorCode(err) ?? '')) throw err;
    const message = `kernel copy into ${args.temp} failed (${err instanceof Error ? err.message : String(err)}): copied through read and write instead`;
    args.warn(message);
    args.log.warn({ path: args.temp }, message);
    await unlinkIfExists(args.fs, args.temp);
    return undefined;
  }
  if (flush.status === 'rejected') throw flush.reason; // the folder's filesystem failed the write-back
  const result = hash.value;
  // After both ended: the proof that the hashed bytes are the copied ones.
  await args.unchanged(result.bytes);
  await closeAfter(await args.fs.open(args.temp, 'read-nofollow'), async (temp) => {
    await temp.chmod(args.fileMode); // libuv created it with the source's mode
    const info = await temp.stat();
    if (info.kind !== 'file' || info.size !== result.bytes) {
      throw new FsError('copy', args.temp, 'EIO', `holds ${info.size} bytes after the kernel copy, ${result.bytes} were read from the source: not archived`);
    }
    await temp.sync();
  });
  return { result, method: copy.value };
}

/** FICLONE: true when the temp now shares the source's extents. */
async function tryClone(args: CopyArgs): Promise<boolean> {
  try {
    await args.source.copyTo!(args.temp, 'clone');
    return true;
  } catch (err) {
    // A full, read-only or forbidden folder fails here as it would for any copy.
    if (DESTINATION_ERRORS.has(errorCode(err) ?? '')) throw err;
    // Not a filesystem that clones, or not the source's filesystem: the usual case on ext4.
    args.log.debug({ path: args.temp, code: errorCode(err) }, 'no reflink here');
    await unlinkIfExists(args.fs, args.temp); // libuv removed it already; a leftover would fail the next create
    return false;
  }
}
