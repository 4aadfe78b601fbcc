/**
 * How a snapshot's bytes get into its temp file, and how the checks come to
 * describe exactly those bytes.
 *
 *  - reflink: FICLONE. The temp shares the source's data extents: nothing is
 *    written, the copy takes milliseconds, and the archive costs no space
 *    while the source still exists (see README "Copy methods").
 *  - copy_file_range: the kernel copies page cache to page cache (libuv falls
 *    back to sendfile, and a filesystem may itself turn it into a reflink).
 *  - read-write: one pass through our buffers, each chunk written and hashed
 *    (today's pass; where the others are refused, or with archive.max_rate).
 *
 * For the kernel methods the sha256 and the RDB check run over the source's
 * bytes, read through the same open descriptor while the kernel copies (two
 * cores: the copy in a thread-pool thread, the hashing on the main thread).
 * That describes the temp because both read the same inode and that inode did
 * not change: its identity, size, mtime and ctime are the same after the copy
 * and the hashing ended as when it was opened (the caller's `unchanged`), and
 * the temp has as many bytes as were hashed. Reading the temp back instead
 * would read the disk after a reflink (a clone has no page cache of its own),
 * and would serialise the copy and the hashing.
 */
import type { FileSystem, Handle } from '../core/fs.js';
import { closeAfter, errorCode, unlinkIfExists } from '../core/fs.js';
import { FsError } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { RdbInfo } from '../rdb/validate.js';

export const COPY_METHODS = ['reflink', 'copy_file_range', 'read-write'] as const;
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
 * fallback, 'copy_file_range' skips the reflink attempt, 'reflink' (or unset)
 * tries everything in order. The reliability suite runs its trials on each.
 */
export const COPY_METHOD_ENV = 'RDB_ARCHIVER_COPY_METHOD';

/** The methods to try, in order, for this run (see COPY_METHOD_ENV and archive.max_rate). */
export function copyMethodsFor(maxRate: number | undefined, env: NodeJS.ProcessEnv = process.env): CopyMethod[] {
  const forced = env[COPY_METHOD_ENV];
  let methods: CopyMethod[] = [...COPY_METHODS];
  if (forced === 'read-write') methods = ['read-write'];
  else if (forced === 'copy_file_range') methods = ['copy_file_range', 'read-write'];
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
  if (args.methods.some((m) => m !== 'read-write') && typeof args.source.copyTo === 'function') {
    const copied = await kernelCopy(args);
    if (copied) return copied;
  }
  return readWriteCopy(args);
}

async function readWriteCopy(args: CopyArgs): Promise<TempCopy> {
  const result = await closeAfter(await args.fs.open(args.temp, 'create-exclusive', args.fileMode), async (out) => {
    await out.chmod(args.fileMode);
    const r = await args.pass(out);
    await out.sync();
    return r;
  });
  return { result, method: 'read-write' };
}

/** The kernel copy and the hashing of the source, side by side; undefined when it has to fall back to read-write. */
async function kernelCopy(args: CopyArgs): Promise<TempCopy | undefined> {
  // The clone first, alone: it takes milliseconds, and where it fails and no other kernel copy is
  // allowed (archive.max_rate) the source is not hashed twice.
  const cloned = args.methods.includes('reflink') && (await tryClone(args));
  if (!cloned && !args.methods.includes('copy_file_range')) return undefined;
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
