/**
 * The worker: turns one job into one complete snapshot event in every rule folder.
 *
 *   open the source once -> one read pass feeds the temp copy, sha256 and the
 *   RDB check -> fstat again (changed in place? retry later) -> fsync ->
 *   companions (nodes, .sha256) then the .rdb get their final names with
 *   no-overwrite links -> fsync each folder -> hard links into the other folders.
 *
 * A final name therefore only ever names a complete, verified file, and the
 * .rdb (which makes an event count) appears after its companions.
 */
import { basename, dirname, join } from 'node:path';
import type { InstanceConfig } from '../core/config.js';
import { ruleDir } from '../core/config.js';
import { ConflictError, FoldersFailedError, FsError, InsufficientSpaceError, InvalidSnapshotError, SourceUnavailableError, TryAgainError } from '../core/errors.js';
import type { FileInfo, FileSystem, Handle } from '../core/fs.js';
import { missingRootError } from './archive-root.js';
import { effectiveUid } from '../core/trust.js';
import { closeAfter, ensureDir, errorCode, lstatIfExists, publishNew, readFromStart, tempPathFor, unlinkIfExists, writeNewFile } from '../core/fs.js';
import type { Log } from '../core/log.js';
import { borrowPassBuffers } from '../rdb/crc64.js';
import { RdbMagicCheck, RdbValidator, type RdbInfo, type ValidationMode } from '../rdb/validate.js';
import { lendValidationThread, threadWanted, type ThreadedValidation } from '../rdb/validate-thread.js';
import { createSha256, sha256Hex } from '../core/sha256.js';
import { copyIntoTemp, copyMethodsFor, type CopyMethod, type PassResult } from './copy-methods.js';
import type { SourceIdentity } from './state.js';
import { identityOf, sameIdentity } from './state.js';
import type { FolderEvent, FolderScan } from './retention.js';
import { type EventFileKind, type Timestamp, MAX_ORDINAL, eventFileName, ordinalOf, parseTimestamp, timestampFromMs, withOrdinal } from '../core/timestamp.js';
import type { SnapshotJob } from './watcher.js';
import type { ServerFacts, StreamedSnapshot } from '../sources/source.js';
import { describeSourceKind } from './watcher.js';
import { latestArchived, newestArchivedFirst } from './event-order.js';

export const COPY_CHUNK_BYTES = 8 * 1024 * 1024;
/**
 * A copy longer than this has its write-back started during the pass: an
 * fsync of what is written so far runs in the background (one at a time,
 * every WRITEBACK_STEP_BYTES), so the disk writes while the CPU hashes.
 * Without it a 1 GiB copy sat in the page cache until the final fsync, which
 * then took as long as the disk needed for the whole file, after the hashing
 * (measured: pass 3.6 s + fsync 1.6 s, against 3.8 s + 0.02 s with it). A
 * shorter copy only has the final fsync, which is cheap for it.
 */
export const WRITEBACK_START_BYTES = 128 * 1024 * 1024;
const WRITEBACK_STEP_BYTES = 32 * 1024 * 1024;
const DEFAULT_RESERVE_CAP = 1024 ** 3;

export interface SnapshotResult {
  /** The event's timestamp, with a same-second ordinal when another snapshot had the plain one. */
  ts: Timestamp;
  /** The event's archive sequence number (an existing event keeps its own). */
  seq: number;
  bytes: number;
  sha256: string;
  rdb: RdbInfo;
  /** The nodes.conf archived with the RDB; `changed` when it differed before and after the copy. */
  nodes?: { bytes: number; sha256: string; mtimeMs: number; changed?: NodesChange };
  /** Final file paths per rule, for the rules that hold the event. */
  files: Record<string, string[]>;
  /** The rule folders that could not take the event (each with its own error); the others did. */
  failed: FolderFailure[];
  /** Folders that hold the event but kept a temp file this run could not remove. */
  leftovers: FolderFailure[];
  /** 'already-archived' when every file of the event existed, identical. */
  outcome: 'archived' | 'already-archived';
  /** How this run copied the .rdb into the archive (copy-methods.ts); absent when it copied nothing. */
  copy?: CopyMethod;
  identity: SourceIdentity;
  /**
   * The source went back to content an older event holds (this event's):
   * that event was not reused, because events were archived after it; this
   * one is the latest (see chooseEvent).
   */
  revertedTo?: Timestamp;
  /** A network source: the server's facts about the snapshot. */
  server?: ServerFacts;
  /** Rule folders whose corrupt .rdb of this event was quarantined and replaced from the source (once --force). */
  replaced?: string[];
  durationMs: number;
  warnings: string[];
}

export interface FolderFailure {
  rule: string;
  dir: string;
  error: unknown;
}

export interface WorkerContext {
  fs: FileSystem;
  log: Log;
  instance: InstanceConfig;
  signal?: AbortSignal;
  /** Told of each folder that fails (or keeps a temp it could not remove), as it happens: also when the run is stopped later by another error. */
  onFolderFailure?: (failure: FolderFailure) => void;
}

export type { PassResult };

/**
 * One read pass over an open descriptor: every chunk goes to the output (if
 * any), the sha256 and the RDB validator. The next read is issued before the
 * current chunk is hashed and written, so I/O and CPU overlap. A pass over
 * THREAD_MIN_BYTES or more (`expectedBytes`, when the caller knows the size)
 * validates in the validation thread while this thread hashes
 * (src/rdb/validate-thread.ts); a smaller one, or one that finds the thread
 * taken or unable to run, does both here.
 */
export async function copyPass(
  source: Pick<Handle, 'read'>,
  sourcePath: string,
  out: Handle | undefined,
  signal?: AbortSignal,
  validation: ValidationMode = 'full',
  /** archive.max_rate: bytes per second this pass reads (and writes) at most; unlimited when absent. */
  maxRate?: number,
  /** The size the source should have: decides whether the validation thread is worth starting. */
  expectedBytes?: number,
): Promise<PassResult> {
  const pace = maxRate === undefined ? undefined : pacer(maxRate);
  if (threadWanted(expectedBytes)) {
    const thread = await lendValidationThread(sourcePath, validation, COPY_CHUNK_BYTES);
    if (thread) {
      try {
        return await passWithThread(source, sourcePath, out, thread, signal, pace);
      } finally {
        thread.release();
      }
    }
  }
  // Page-aligned buffers the CRC runs over in place (see borrowPassBuffers);
  // given back only when no read or write into them is left in flight.
  const lent = borrowPassBuffers(2, COPY_CHUNK_BYTES);
  try {
    return await passThrough(source, sourcePath, out, lent.buffers, signal, validation, pace);
  } finally {
    lent.release();
  }
}

/**
 * Background write-back of a long copy (see WRITEBACK_START_BYTES): one fsync
 * at a time. It never rejects: its error is kept and fails the pass.
 */
class WriteBack {
  private flushing: Promise<void> | undefined;
  private error: { err: unknown } | undefined;
  private flushedUpTo = 0;

  private readonly out: Handle | undefined;

  /** An output whose writes bypass the page cache (O_DIRECT) has nothing to write back. */
  constructor(out: Handle | undefined) {
    this.out = out?.writesThrough ? undefined : out;
  }

  /** After a chunk was written up to `position`: throws a failed fsync's error, starts the next when due. */
  step(position: number): void {
    if (this.error) throw this.error.err;
    if (this.out && !this.flushing && position >= WRITEBACK_START_BYTES && position - this.flushedUpTo >= WRITEBACK_STEP_BYTES) this.start(position);
  }

  /** The fsync in flight, settled; throws its error. */
  async end(): Promise<void> {
    await this.flushing;
    if (this.error) throw this.error.err;
  }

  /** The fsync in flight, settled, never throwing (before cleanup). */
  settled(): Promise<void> {
    return this.flushing ?? Promise.resolve();
  }

  private start(upTo: number): void {
    this.flushing = this.out!.sync().then(
      () => {
        this.flushedUpTo = upTo;
        this.flushing = undefined;
      },
      (err: unknown) => {
        this.error ??= { err };
        this.flushing = undefined;
      },
    );
  }
}

type Pace = (done: number) => Promise<void>;

/** The pass on one thread: read chunk i+1 while chunk i is written, hashed and validated, through two buffers. */
async function passThrough(
  source: Pick<Handle, 'read'>,
  sourcePath: string,
  out: Handle | undefined,
  buffers: Buffer[],
  signal: AbortSignal | undefined,
  validation: ValidationMode,
  pace: Pace | undefined,
): Promise<PassResult> {
  const hash = createSha256();
  const validator = new RdbValidator(sourcePath, { validation });
  let position = 0;
  let which = 0;
  // The read in flight is awaited later: mark its rejection handled now, or a read
  // failing while a write is awaited is an unhandled rejection that kills the process.
  const issueRead = (): Promise<number> => {
    const p = source.read(buffers[which]!, 0, COPY_CHUNK_BYTES, position);
    p.catch(() => undefined);
    return p;
  };
  let reading = issueRead();
  const writeBack = new WriteBack(out);
  let writing: Promise<void> | undefined;
  try {
    for (;;) {
      const n = await reading;
      if (n === 0) break;
      if (signal?.aborted) await writeBack.settled();
      signal?.throwIfAborted();
      const chunk = buffers[which]!.subarray(0, n);
      position += n;
      which ^= 1;
      if (pace) await pace(position);
      reading = issueRead();
      writing = out ? writeAll(out, chunk) : undefined;
      writing?.catch(() => undefined); // awaited below; same reason as the reads
      hash.update(chunk);
      validator.update(chunk);
      if (validator.earlyError) throw validator.earlyError; // not an RDB at all: don't copy the rest of it
      await writing;
      writeBack.step(position);
    }
    await writeBack.end();
  } catch (err) {
    // Leave no read, write or fsync racing the cleanup, nor the next user of the buffers.
    await Promise.allSettled([reading, writing, writeBack.settled()]);
    throw err;
  }
  return { bytes: position, sha256: hash.digest('hex'), rdb: validator.finish() };
}

/**
 * The pass on two threads: this one reads and hashes (and writes), the
 * validation thread validates the same chunks in the shared buffers. Chunk i
 * is handed to the thread as soon as it was read; then the read of chunk i+1
 * goes into a buffer that nobody uses, and chunk i is hashed meanwhile. The
 * thread may lag behind by a few chunks (THREAD_BUFFERS); past that the reads
 * wait for it.
 */
async function passWithThread(
  source: Pick<Handle, 'read'>,
  sourcePath: string,
  out: Handle | undefined,
  thread: ThreadedValidation,
  signal: AbortSignal | undefined,
  pace: Pace | undefined,
): Promise<PassResult> {
  const buffers = thread.buffers;
  const hash = createSha256();
  const magic = new RdbMagicCheck(sourcePath);
  let position = 0;
  let current = 0;
  const issueRead = (index: number): Promise<number> => {
    const p = source.read(buffers[index]!, 0, COPY_CHUNK_BYTES, position);
    p.catch(() => undefined); // awaited later (see passThrough)
    return p;
  };
  let reading = issueRead(current);
  const writeBack = new WriteBack(out);
  // A write straight to the device (O_DIRECT) takes as long as the disk needs: it may stay in
  // flight while the next chunk is read and hashed, so the disk always has one queued. Writes
  // through the page cache return at memory speed and use the file offset: one at a time.
  const overlapWrites = out?.writesThrough === true;
  const writes: Array<Promise<void> | undefined> = buffers.map(() => undefined);
  const writeDone = async (index: number): Promise<void> => {
    const w = writes[index];
    writes[index] = undefined;
    await w;
  };
  try {
    for (;;) {
      const n = await reading;
      if (n === 0) break;
      if (signal?.aborted) await writeBack.settled();
      signal?.throwIfAborted();
      const chunk = buffers[current]!.subarray(0, n);
      position += n;
      const early = magic.update(chunk);
      if (early) throw early; // not an RDB at all: don't copy the rest of it
      thread.validate(current, n);
      if (pace) await pace(position);
      if (out) {
        writes[current] = writeAll(out, chunk);
        writes[current]!.catch(() => undefined); // awaited below; same reason as the reads
      }
      const next = await thread.freeBuffer(current, signal);
      await writeDone(next); // its bytes must be on their way before it is read into again
      reading = issueRead(next);
      hash.update(chunk);
      thread.check();
      if (!overlapWrites) await writeDone(current);
      writeBack.step(position);
      current = next;
    }
    for (let i = 0; i < writes.length; i++) await writeDone(i);
    await writeBack.end();
    return { bytes: position, sha256: hash.digest('hex'), rdb: await thread.finish(signal) };
  } catch (err) {
    // Leave no read, write or fsync racing the cleanup, nor the next pass in these buffers.
    await Promise.allSettled([reading, ...writes, writeBack.settled()]);
    throw err;
  }
}

/**
 * archive.max_rate: before the read that would go past `rate` bytes per
 * second since the pass began, wait until it would not. The next chunk is
 * read (and the current one written) only then, so reads and writes both
 * keep to the rate, give or take one chunk.
 */
function pacer(rate: number): Pace {
  const start = process.hrtime.bigint(); // monotonic: a clock step must not stall or rush the pass
  return async (done) => {
    const elapsedMs = Number(process.hrtime.bigint() - start) / 1e6;
    const wait = (done / rate) * 1000 - elapsedMs;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  };
}

async function writeAll(out: Handle, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) offset += await out.write(chunk, offset, chunk.length - offset);
}

export async function hashFile(fs: FileSystem, path: string): Promise<string> {
  return closeAfter(await fs.open(path, 'read-nofollow'), async (handle) => {
    const hash = createSha256();
    const buffer = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
    for (let position = 0; ; ) {
      const n = await handle.read(buffer, 0, buffer.length, position);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
      position += n;
    }
    return hash.digest('hex');
  });
}

/** The bytes to keep free beyond the snapshot: archive.min_free, default 5% of the filesystem or 1 GiB, whichever is smaller. */
export function reserveBytes(instance: InstanceConfig, totalBytes: number): number {
  const m = instance.minFree;
  if (m.kind === 'bytes') return m.bytes;
  if (m.kind === 'percent') return Math.ceil((totalBytes * m.percent) / 100);
  return Math.min(Math.ceil(totalBytes * 0.05), DEFAULT_RESERVE_CAP);
}

export function sidecarText(ts: Timestamp, rdbSha: string, nodesSha?: string): string {
  let text = `${rdbSha}  ${eventFileName('rdb', ts)}\n`;
  if (nodesSha) text += `${nodesSha}  ${eventFileName('nodes', ts)}\n`;
  return text;
}


/**
 * A stream in the shape of an open source file: read in order (the pass
 * reads sequentially; positions are ignored), "mtime" = the server's clock
 * when the snapshot was requested, size = the announced length (or the
 * estimate, for the free-space check). Nothing else of it is used.
 */
function streamAsSource(stream: StreamedSnapshot, estimate: number, guard: StreamGuard): { handle: Handle; info: FileInfo } {
  const unsupported = () => Promise.reject(new Error('a network stream is read only'));
  const handle: Handle = {
    read: async (buffer, offset, length) => {
      const n = await stream.read(buffer, offset, length);
      guard.received += n;
      guard.check?.(guard.received);
      return n;
    },
    write: unsupported,
    sync: unsupported,
    stat: unsupported,
    chmod: unsupported,
    close: async () => stream.close(),
  };
  const ns = BigInt(stream.takenAtMs) * 1_000_000n;
  const info: FileInfo = {
    kind: 'file', size: stream.expectedBytes ?? estimate, mtimeMs: stream.takenAtMs, mtimeNs: String(ns), ctimeNs: String(ns),
    dev: stream.identity.dev, ino: stream.identity.ino, nlink: 1, uid: effectiveUid(), gid: 0, mode: 0o600,
  };
  return { handle, info };
}

/**
 * A diskless transfer ($EOF:<mark>) announces no length: the space check
 * before the copy can only use an estimate. The guard stops the copy once it
 * would eat into archive.min_free of the folder it goes to, so a server that
 * sends more than it should (broken, hostile, or a dataset that grew) fails
 * the run with "no space" instead of filling the filesystem.
 */
interface StreamGuard {
  received: number;
  check?: (received: number) => void;
}

async function streamSpaceCheck(fs: FileSystem, instance: InstanceConfig, dir: string): Promise<(received: number) => void> {
  const space = await fs.space(dir);
  const reserve = reserveBytes(instance, space.total);
  return (received) => {
    if (received + reserve > space.available) throw new InsufficientSpaceError(dir, received + reserve, space.available);
  };
}

async function openSource(fs: FileSystem, path: string): Promise<{ handle: Handle; info: FileInfo }> {
  let handle: Handle;
  try {
    handle = await fs.open(path, 'read-nofollow');
  } catch (err) {
    const code = errorCode(err);
    if (code === 'ENOENT') throw new SourceUnavailableError(path, 'does not exist (has Redis saved a snapshot yet?)');
    if (code === 'ELOOP') throw new SourceUnavailableError(path, 'is a symlink: point source.rdb at the real file');
    throw err;
  }
  let info: FileInfo;
  try {
    info = await handle.stat();
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
  const wrongKind = describeSourceKind(info);
  if (wrongKind) {
    await handle.close();
    throw new SourceUnavailableError(path, wrongKind);
  }
  return { handle, info };
}

/** Makes sure a rule folder exists as a real directory (never a symlink out of the archive); returns its device. */
async function prepareRuleDir(fs: FileSystem, dir: string, dirMode: number): Promise<string> {
  await ensureDir(fs, dir, dirMode);
  const info = await fs.lstat(dir);
  if (info.kind !== 'dir') {
    throw new FsError('prepare', dir, 'ENOTDIR', 'rule folder is a symlink or not a directory: refusing to write through it');
  }
  return info.dev;
}

/** A rule folder taking part in this event: where it is, its filesystem, and its scan from before this run wrote. */
interface Slot {
  rule: string;
  dir: string;
  dev: string;
  scan: FolderScan;
}

/**
 * The space check, per filesystem: a filesystem needs the snapshot's bytes
 * once (the folders on it share one copy through hard links), unless one of
 * its folders holds the .rdb already. Returns the folders that cannot take
 * the copy, each with the error that says so; touches nothing.
 */
async function foldersShortOfSpace(
  fs: FileSystem,
  instance: InstanceConfig,
  slots: ReadonlyArray<Slot & { hasRdb: boolean }>,
  bytes: number,
): Promise<Array<{ slot: Slot; error: unknown }>> {
  const byDev = new Map<string, Array<Slot & { hasRdb: boolean }>>();
  for (const slot of slots) byDev.set(slot.dev, [...(byDev.get(slot.dev) ?? []), slot]);
  const short: Array<{ slot: Slot; error: unknown }> = [];
  for (const group of byDev.values()) {
    if (group.some((slot) => slot.hasRdb)) continue; // a hard link needs no space
    let space: { available: number; total: number };
    try {
      space = await fs.space(group[0]!.dir);
    } catch (err) {
      for (const slot of group) short.push({ slot, error: err }); // statfs failing: that filesystem is in trouble
      continue;
    }
    const needed = bytes + reserveBytes(instance, space.total);
    if (space.available < needed) for (const slot of group) short.push({ slot, error: new InsufficientSpaceError(slot.dir, needed, space.available) });
  }
  return short;
}

/** Whether an error of the copy into `dir` belongs to that folder (its filesystem is full, read-only, failing) rather than to the source. */
function isFolderError(err: unknown, dir: string): boolean {
  return err instanceof FsError && err.path.startsWith(`${dir}/`);
}

/** Removes what this run created in a folder that then failed, newest first: no partial event is left. */
async function removeCreated(fs: FileSystem, log: Log, created: readonly string[]): Promise<void> {
  for (const path of [...created].reverse()) {
    await unlinkIfExists(fs, path).catch((err: unknown) => {
      // Retention removes it later: an event without its .rdb is incomplete.
      log.warn({ path, err: err instanceof Error ? err.message : String(err) }, 'could not remove a partial file');
    });
  }
}

interface Companion {
  kind: EventFileKind;
  data: Uint8Array;
}

/** One read of nodes.conf: its bytes, when it was written, and whether it looks whole. */
export interface NodesRead {
  data: Buffer;
  sha256: string;
  mtimeMs: number;
  /** A "vars" line and as many bytes as fstat said: not torn by an in-place rewrite (Redis < 7.2). */
  complete: boolean;
}

/** What was seen when nodes.conf differed between the reads before and after the RDB copy. */
export interface NodesChange {
  kept: 'before' | 'after';
  before: { sha256: string; mtime: string; bytes: number } | null;
  after: { sha256: string; mtime: string; bytes: number } | null;
}

async function readNodesFile(fs: FileSystem, path: string): Promise<NodesRead | undefined> {
  let handle: Handle;
  try {
    handle = await fs.open(path, 'read-nofollow');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  return closeAfter(handle, async () => {
    const info = await handle.stat();
    if (info.kind !== 'file') throw new SourceUnavailableError(path, describeSourceKind(info)!);
    const data = await readFromStart(handle, info.size);
    const complete = data.length === info.size && /\nvars |^vars /.test(data.toString('utf8'));
    return { data, sha256: sha256Hex(data), mtimeMs: info.mtimeMs, complete };
  });
}

const describeRead = (r: NodesRead | undefined) => (r ? { sha256: r.sha256, mtime: new Date(r.mtimeMs).toISOString(), bytes: r.data.length } : null);

/**
 * Which nodes.conf goes with the RDB, from the reads made right before and
 * right after the copy (both after the RDB was saved: its descriptor was
 * already open). The one read before is nearest to the RDB's save: it was in
 * effect when the copy began, and the one read after was written later still.
 * So it is kept, unless it is missing or torn and the later one is whole.
 */
export function pairNodes(path: string, before: NodesRead | undefined, after: NodesRead | undefined): { kept?: NodesRead; change?: NodesChange; warnings: string[] } {
  const warnings: string[] = [];
  if (!before && !after) return { warnings: [`nodes.conf ${path} is configured but missing: archiving the RDB alone`] };
  let kept = before;
  let change: NodesChange | undefined;
  if (!before || !after || before.sha256 !== after.sha256) {
    const useAfter = !before || (!before.complete && !!after?.complete);
    kept = useAfter ? after : before;
    change = { kept: useAfter ? 'after' : 'before', before: describeRead(before), after: describeRead(after) };
    if (!before) {
      warnings.push(`nodes.conf ${path} appeared during the copy of the RDB: archived it, although it was written after the RDB's save`);
    } else if (!after) {
      warnings.push(`nodes.conf ${path} disappeared during the copy of the RDB: archived the version read before the copy`);
    } else {
      warnings.push(`nodes.conf ${path} changed during the copy of the RDB: archived the version read ${useAfter ? 'after the copy (the one before was torn)' : 'before the copy (nearest to the RDB\'s save)'}; before: mtime ${change.before!.mtime}, sha256 ${before.sha256.slice(0, 16)}…; after: mtime ${change.after!.mtime}, sha256 ${after.sha256.slice(0, 16)}…`);
    }
  }
  if (kept && !kept.complete) warnings.push(`nodes.conf ${path} looks incomplete (no "vars" line or short read); archived as found`);
  return { kept, change, warnings };
}

/** Where the event goes, decided before anything is written (see chooseEvent). */
export interface ArchiveTarget {
  /** The archive sequence number a new archive record gets. */
  seq: number;
  /** A scan of each rule folder, in instance.rules order, taken under the lock before this run wrote anything. */
  scans: ReadonlyArray<FolderScan>;
  /** Why a folder could not be scanned (same order; that folder fails alone, with this error). */
  scanErrors?: ReadonlyArray<unknown>;
}

/** The chosen event: its timestamp (with a same-second ordinal when needed) and what to do with the files there. */
export interface EventChoice {
  ts: Timestamp;
  /** The files of this event that already exist, per folder (index = rule order). */
  existing: Array<FolderEvent | undefined>;
  /** .rdb files of this event whose content is not the listed sha256 (corrupt): moved to the quarantine. */
  corrupt: string[];
  /** An intact .rdb of this event exists somewhere: no copy of the source is needed. */
  intactRdb?: string;
  /** An older event with the same content, not reused because events were archived after it. */
  revertedTo?: Timestamp;
}

/**
 * Plans where the snapshot with this sha256 goes, among the events of its
 * second (plain name, then `_1`..`_9`):
 *  - an event with the same content (a lost state, --force, a re-run after a
 *    crash) is completed in the folders that miss files, never rewritten;
 *  - an event whose sidecar lists this sha256 but whose .rdb has another
 *    content is corrupt: its .rdb goes to the quarantine and is replaced;
 *  - anything else under that name (another snapshot of the same second, a
 *    leftover) is left alone and the snapshot takes the next ordinal;
 *  - but an event with the same content that is not the most recently
 *    archived one is never reused: the source went back to older content
 *    (`cp -p` of an old dump, whose mtime names that old event). Reusing it
 *    would leave "latest" on content the server no longer has, so the
 *    snapshot becomes a new event (next ordinal, next seq: the latest).
 * Exit 73 only when all ordinals of the second are taken.
 */
export async function chooseEvent(
  fs: FileSystem,
  dirs: ReadonlyArray<{ dir: string }>,
  scans: ReadonlyArray<FolderScan>,
  second: Timestamp,
  sha256: string,
): Promise<EventChoice> {
  const keys = new Set<Timestamp>();
  for (const scan of scans) for (const e of scan.events) if (withOrdinal(e.ts, 0) === second) keys.add(e.ts);
  const latest = latestArchived(scans.flatMap((scan) => scan.events.filter((e) => e.kinds.includes('rdb'))));
  let highest = -1;
  let revertedTo: Timestamp | undefined;
  for (const ts of [...keys].sort()) {
    highest = Math.max(highest, ordinalOf(ts));
    const existing = dirs.map((_, i) => scans[i]?.events.find((e) => e.ts === ts));
    const listed = await listedSha(fs, dirs, existing, ts);
    if (listed !== undefined && listed !== sha256) continue; // another snapshot of this second
    // (ranked by its highest seq in any folder; an interrupted run's incomplete event ranks by its record)
    const seq = existing.reduce<number | undefined>((max, e) => (e?.seq !== undefined && (max === undefined || e.seq > max) ? e.seq : max), undefined);
    // Only an event that was archived (an .rdb in some folder) can be older content; companions
    // without an .rdb are our own interrupted run's (a SIGKILL after nodes or record): completed.
    const archived = existing.some((e) => e?.kinds.includes('rdb'));
    if (archived && latest && latest.ts !== ts && newestArchivedFirst({ ts, seq }, latest) > 0) {
      revertedTo ??= ts;
      continue;
    }
    const corrupt: string[] = [];
    let intactRdb: string | undefined;
    const hashes = new Map<string, string>();
    for (const [i, { dir }] of dirs.entries()) {
      if (!existing[i]?.kinds.includes('rdb')) continue;
      const path = join(dir, eventFileName('rdb', ts));
      const info = await lstatIfExists(fs, path);
      if (!info) continue;
      if (info.kind !== 'file') throw new ConflictError(path, 'exists and is not a regular file; refusing to touch it');
      const inode = `${info.dev}:${info.ino}`;
      let hash = hashes.get(inode);
      if (hash === undefined) {
        hash = await hashFile(fs, path);
        hashes.set(inode, hash);
      }
      if (hash === sha256) intactRdb ??= path;
      else corrupt.push(path);
    }
    // Without a sidecar or record saying what the event should hold, a different .rdb is another snapshot, not damage.
    if (listed === undefined && intactRdb === undefined && corrupt.length > 0) continue;
    if (listed === undefined && corrupt.length > 0) {
      throw new ConflictError(corrupt[0]!, `event ${ts} has copies with different contents and no sidecar to tell the good one; kept as found, nothing archived`);
    }
    // (an incomplete event that says nothing else is our own interrupted run: completed under its name)
    return { ts, existing, corrupt, ...(intactRdb ? { intactRdb } : {}) };
  }
  const reverted = revertedTo ? { revertedTo } : {};
  // A new name after every one of this second (so that names sort in archive order), free in every folder:
  // something that is not a regular file under a name (which no scan lists) is skipped, never touched.
  for (let n = highest + 1; n <= MAX_ORDINAL; n++) {
    const ts = withOrdinal(second, n);
    let taken = false;
    for (const { dir } of dirs) if (await lstatIfExists(fs, join(dir, eventFileName('rdb', ts)))) taken = true;
    if (!taken) return { ts, existing: dirs.map(() => undefined), corrupt: [], ...reverted };
  }
  throw new ConflictError(join(dirs[0]!.dir, eventFileName('rdb', second)),
    `${MAX_ORDINAL + 1} names exist for snapshots of the second ${second} (plain and _1 to _${MAX_ORDINAL}): no name left for another different snapshot in this second; nothing archived`);
}

/** The sha256 an event's sidecar lists for its .rdb (the first readable sidecar; else its archive record), or undefined. */
export async function listedSha(fs: FileSystem, dirs: ReadonlyArray<{ dir: string }>, existing: Array<FolderEvent | undefined>, ts: Timestamp): Promise<string | undefined> {
  const rdbName = eventFileName('rdb', ts);
  for (const [i, { dir }] of dirs.entries()) {
    if (!existing[i]?.kinds.includes('sha256')) continue;
    let text: string;
    try {
      text = (await fs.readFile(join(dir, eventFileName('sha256', ts)))).toString('utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT') continue;
      throw err;
    }
    for (const line of text.split('\n')) {
      const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
      if (m && m[2] === rdbName) return m[1]!.toLowerCase();
    }
  }
  // No sidecar: the archive record, if any, says it too.
  for (const [i, { dir }] of dirs.entries()) {
    for (const seq of existing[i]?.seqs ?? []) {
      let text: string;
      try {
        text = (await fs.readFile(join(dir, eventFileName('meta', ts, seq)))).toString('utf8');
      } catch (err) {
        if (errorCode(err) === 'ENOENT') continue;
        throw err;
      }
      const record = parseArchiveRecord(text);
      if (record) return record.sha256;
    }
  }
  return undefined;
}

/** The archive record of an event, dump-<ts>.seq<N>.json: what `list`, `status` and `check` read about it. */
export interface ArchiveRecord {
  format: 1;
  seq: number;
  ts: string;
  /** Our clock when the event was archived. */
  archivedAt: string;
  sha256: string;
  bytes: number;
  rdbVersion: number | null;
  source: { path: string; mtime: string; mtimeNs: string; size: number; dev: string; ino: string };
  nodes: { sha256: string; bytes: number } | null;
  /** A network source: the server's facts (version, run_id, replication offset, server time). */
  server?: ServerFacts;
  /**
   * How this run copied the .rdb (copy-methods.ts); absent when it linked an
   * existing copy, and in records of older versions. 'reflink': the file
   * shares its data extents with the source it was cloned from.
   */
  copy?: CopyMethod;
}

export function archiveRecordText(record: ArchiveRecord): string {
  return JSON.stringify(record, null, 2) + '\n';
}

/** Parses an archive record defensively; undefined when it is not one. */
export function parseArchiveRecord(text: string): ArchiveRecord | undefined {
  try {
    const o = JSON.parse(text) as Partial<ArchiveRecord> | null;
    if (!o || o.format !== 1 || typeof o.seq !== 'number' || typeof o.archivedAt !== 'string' || typeof o.sha256 !== 'string') return undefined;
    return o as ArchiveRecord;
  } catch {
    return undefined;
  }
}

/**
 * Moves files out of the rule folders into <archive>/.quarantine/<now>/<rule>/
 * (mode 0700): kept for inspection, never deleted by us, never an event.
 */
export async function quarantineFiles(fs: FileSystem, log: Log, instance: InstanceConfig, paths: readonly string[], warnings: string[]): Promise<string[]> {
  const moved: string[] = [];
  if (paths.length === 0) return moved;
  const batch = join(await ownQuarantineDir(fs, instance), timestampFromMs(Date.now()));
  for (const path of paths) {
    const target = join(batch, basename(dirname(path)), basename(path));
    await ensureDir(fs, dirname(target), QUARANTINE_DIR_MODE);
    if (await lstatIfExists(fs, target)) throw new ConflictError(target, 'exists already in the quarantine; nothing moved');
    await fs.rename(path, target);
    await fs.syncDir(dirname(path));
    await fs.syncDir(dirname(target));
    const w = `${path} did not match its sha256 sidecar: moved to ${target} (quarantine, never deleted) and replaced from the source`;
    warnings.push(w);
    log.warn({ path, quarantine: target }, w);
    moved.push(target);
  }
  return moved;
}

export const QUARANTINE_DIR_MODE = 0o700;

/**
 * The quarantine folder, made if missing, and only ever a real folder of this
 * user: a planted symlink (to /etc, say) must not receive archived files or
 * have its mode changed by a run as root.
 */
async function ownQuarantineDir(fs: FileSystem, instance: InstanceConfig): Promise<string> {
  const dir = quarantineDir(instance);
  let info = await lstatIfExists(fs, dir);
  if (!info) {
    await fs.mkdir(dir, QUARANTINE_DIR_MODE).catch((err) => {
      if (errorCode(err) !== 'EEXIST') throw err;
    });
    info = await fs.lstat(dir);
  }
  if (info.kind !== 'dir' || info.uid !== effectiveUid()) {
    const what = info.kind === 'symlink' ? 'a symlink' : info.kind !== 'dir' ? 'not a folder' : `a folder of uid ${info.uid}, not of this user`;
    throw new FsError('quarantine', dir, 'ELOOP', `is ${what}: nothing is moved there; remove it, and the next run makes its own`);
  }
  if ((info.mode & 0o777) !== QUARANTINE_DIR_MODE) await fs.chmod(dir, QUARANTINE_DIR_MODE);
  return dir;
}

/** The quarantine folder: inside the archive, not a rule folder (rule names cannot start with "."). */
export function quarantineDir(instance: InstanceConfig): string {
  return join(instance.archiveDir, '.quarantine');
}

/**
 * Archives the job's source as one event in every rule folder. Idempotent: an
 * identical existing event is completed (missing files added), never rewritten;
 * a different one under the same timestamp is kept, and this snapshot takes the
 * next same-second ordinal (see chooseEvent).
 */
export async function archiveSnapshot(ctx: WorkerContext, job: SnapshotJob, target: ArchiveTarget): Promise<SnapshotResult> {
  const { fs, log, instance } = ctx;
  const started = Date.now();
  const warnings: string[] = [];
  const failed: FolderFailure[] = [];
  const dead = new Set<string>();
  const fail = (folder: { rule: string; dir: string }, error: unknown) => {
    dead.add(folder.dir);
    failed.push({ rule: folder.rule, dir: folder.dir, error });
    ctx.onFolderFailure?.({ rule: folder.rule, dir: folder.dir, error });
    log.error({ rule: folder.rule, dir: folder.dir, err: error instanceof Error ? error.message : String(error) }, 'this rule folder did not get the snapshot');
  };
  const failedAll = () => new FoldersFailedError(failed.map((f) => ({ rule: f.rule, error: f.error })));
  const alive = (slots: readonly Slot[]) => slots.filter((slot) => !dead.has(slot.dir));

  // Folders whose scan failed fail first, in order: they are the first cause if the run then stops.
  instance.rules.forEach((rule, i) => {
    if (target.scanErrors?.[i] !== undefined) fail({ rule: rule.name, dir: ruleDir(instance, rule) }, target.scanErrors[i]);
  });
  // The run checked the root before its lock (archive-root.ts); a disk unmounted since must not become a new folder.
  if (!(await lstatIfExists(fs, instance.archiveDir))) throw missingRootError(instance.archiveDir);
  let slots: Slot[] = [];
  for (const [i, rule] of instance.rules.entries()) {
    const dir = ruleDir(instance, rule);
    if (target.scanErrors?.[i] !== undefined) continue;
    try {
      slots.push({ rule: rule.name, dir, dev: await prepareRuleDir(fs, dir, instance.dirMode), scan: target.scans[i] ?? { dir, events: [], temps: [] } });
    } catch (err) {
      fail({ rule: rule.name, dir }, err);
    }
  }
  if (slots.length === 0) throw failedAll();

  // A network source (job.stream) is read once, in order: it is always copied first (never hashed
  // first, never re-read), has no in-place changes to check, and brings its own nodes file.
  const stream = job.stream ? await job.stream.open() : undefined;
  const guard: StreamGuard = { received: 0 };
  const { handle: source, info: before } = stream ? streamAsSource(stream, job.stream?.estimateBytes ?? 0, guard) : await openSource(fs, job.sourceRdb);
  const temps: string[] = [];
  try {
    // nodes.conf is read before and after the copy (see pairNodes): both reads follow the RDB's save.
    const nodesBefore = instance.sourceNodes && !stream ? await readNodesFile(fs, instance.sourceNodes) : undefined;
    // The worker names the event, from the descriptor it actually copies (a stream: the server's clock when it was requested).
    const second = timestampFromMs(before.mtimeMs);
    if (parseTimestamp(second) === undefined) {
      throw new SourceUnavailableError(job.sourceRdb, `has the ${stream ? 'server time' : 'mtime'} ${new Date(before.mtimeMs).toISOString()}, outside the years 0000-9999 an archive name can hold; fix the clock${stream ? '' : ', then touch the file'}`);
    }

    // A file rewritten in place mid-copy can look corrupt: that is "try again", not "invalid".
    const changedError = async (bytesRead?: number): Promise<TryAgainError | undefined> => {
      if (stream) return undefined;
      const after = await source.stat();
      // A write puts the ctime forward even when the mtime is put back (cp -p over the file). A
      // file that was unlinked (nlink 0: Redis renamed a new dump over it) can no longer change.
      const rewritten = after.ctimeNs !== before.ctimeNs && after.nlink > 0;
      if (sameIdentity(identityOf(after), identityOf(before), { ctime: false }) && !rewritten && (bytesRead === undefined || bytesRead === before.size)) return undefined;
      return new TryAgainError('source-changed', job.sourceRdb,
        `${job.sourceRdb} was modified in place during the copy (size ${before.size} -> ${after.size}${bytesRead === undefined ? '' : `, ${bytesRead} bytes read`}); nothing archived, the next run retries`);
    };
    const pass = async (out: Handle | undefined): Promise<PassResult> => {
      let result: PassResult;
      try {
        result = await copyPass(source, job.sourceRdb, out, ctx.signal, instance.validation, instance.maxRate, before.size);
      } catch (err) {
        if (err instanceof InvalidSnapshotError) throw (await changedError()) ?? err;
        throw err;
      }
      const changed = await changedError(result.bytes);
      if (changed) throw changed;
      return result;
    };
    // Copies the source into a temp file next to its final name, in the first folder that
    // takes it: every filesystem of the folders is checked for space first (each needs a
    // copy), and a filesystem that fails the write drops out with its folders.
    const copyMethods = copyMethodsFor(instance.maxRate);
    const copyToTemp = async (ts: Timestamp): Promise<{ result: PassResult; temp: string; method: CopyMethod }> => {
      for (const { slot, error } of await foldersShortOfSpace(fs, instance, alive(slots).map((slot) => ({ ...slot, hasRdb: false })), before.size)) fail(slot, error);
      for (;;) {
        const primary = alive(slots)[0];
        if (!primary) throw failedAll();
        const temp = tempPathFor(join(primary.dir, eventFileName('rdb', ts)));
        temps.push(temp);
        if (stream && stream.expectedBytes === undefined) guard.check = await streamSpaceCheck(fs, instance, primary.dir);
        try {
          const { result, method } = await copyIntoTemp({
            fs, log, source, sourcePath: job.sourceRdb, temp, fileMode: instance.fileMode, methods: copyMethods, pass,
            unchanged: async (bytes) => {
              const changed = await changedError(bytes);
              if (changed) throw changed;
            },
            warn: (w) => warnings.push(w),
          });
          return { result, temp, method };
        } catch (err) {
          // A stream consumed by a failed folder cannot be replayed into the next one: the run fails with that folder's error.
          if (!isFolderError(err, primary.dir) || stream) throw err;
          await unlinkIfExists(fs, temp).catch(() => undefined);
          for (const slot of alive(slots).filter((s) => s.dev === primary.dev)) fail(slot, err);
        }
      }
    };

    // Events of this second exist (a lost state, --force, a same-second save): hash first, copy only if needed.
    const secondTaken = slots.some((slot) => slot.scan.events.some((e) => withOrdinal(e.ts, 0) === second));
    let copied = secondTaken && !stream ? undefined : await copyToTemp(second);
    let result = copied?.result ?? (await pass(undefined));
    for (const w of result.rdb.warnings) {
      warnings.push(w);
      log.warn({ path: job.sourceRdb }, w);
    }
    // Check every folder before writing anything: a conflict must leave the archive as it was.
    // From here on `slots` keeps its order (choice.existing is indexed by it); failures only mark folders dead.
    slots = alive(slots);
    const choice = await chooseEvent(fs, slots, slots.map((slot) => slot.scan), second, result.sha256);
    if (!choice.intactRdb && !copied) {
      copied = await copyToTemp(choice.ts);
      if (copied.result.sha256 !== result.sha256) {
        throw new TryAgainError('source-changed', job.sourceRdb, `${job.sourceRdb} changed between two reads; nothing archived, the next run retries`);
      }
      result = copied.result;
    } else if (choice.intactRdb) {
      // Linked where a folder on the same filesystem holds the .rdb; copied (and so checked for space) elsewhere.
      const holdsRdb = (i: number) => !!choice.existing[i]?.kinds.includes('rdb') && !choice.corrupt.includes(join(slots[i]!.dir, eventFileName('rdb', choice.ts)));
      const candidates = slots.map((slot, i) => ({ ...slot, hasRdb: holdsRdb(i) })).filter((slot) => !dead.has(slot.dir));
      for (const { slot, error } of await foldersShortOfSpace(fs, instance, candidates, before.size)) fail(slot, error);
      if (alive(slots).length === 0) throw failedAll();
    }

    let nodes: NodesRead | undefined;
    let nodesChange: NodesChange | undefined;
    if (stream?.nodes) {
      nodes = { data: stream.nodes, sha256: sha256Hex(stream.nodes), mtimeMs: before.mtimeMs, complete: true };
    } else if (instance.sourceNodes) {
      const paired = pairNodes(instance.sourceNodes, nodesBefore, await readNodesFile(fs, instance.sourceNodes));
      nodes = paired.kept;
      nodesChange = paired.change;
      for (const w of paired.warnings) {
        warnings.push(w);
        log.warn({ path: instance.sourceNodes, ...(nodesChange ? { nodesChange } : {}) }, w);
      }
    }
    const nodesSha = nodes?.sha256;
    const ts = choice.ts;
    const seq = eventSeq(choice, target, warnings, log);
    const record: ArchiveRecord = {
      format: 1,
      seq,
      ts,
      archivedAt: new Date().toISOString(),
      sha256: result.sha256,
      bytes: result.bytes,
      rdbVersion: result.rdb.version ?? null,
      source: {
        path: job.sourceRdb, mtime: new Date(before.mtimeMs).toISOString(), mtimeNs: before.mtimeNs, size: stream ? result.bytes : before.size, dev: before.dev, ino: before.ino,
      },
      nodes: nodes ? { sha256: nodes.sha256, bytes: nodes.data.length } : null,
      ...(stream ? { server: stream.facts } : {}),
      ...(copied ? { copy: copied.method } : {}),
    };
    const companions: Companion[] = [];
    if (nodes) companions.push({ kind: 'nodes', data: nodes.data });
    companions.push({ kind: 'sha256', data: Buffer.from(sidecarText(ts, result.sha256, nodesSha)) });
    companions.push({ kind: 'meta', data: Buffer.from(archiveRecordText(record)) });

    await quarantineFiles(fs, log, instance, choice.corrupt, warnings);
    const published = await publishEvent(ctx, slots, dead, fail, ts, seq, seq === target.seq, companions, copied?.temp, choice, temps, warnings);
    if (published.holding.length === 0) throw failedAll();

    const files: Record<string, string[]> = {};
    for (const { rule, dir } of published.holding) files[rule] = published.kinds.map((kind) => join(dir, eventFileName(kind, ts, seq)));
    const corrupt = new Set(choice.corrupt);
    const replaced = published.holding.filter(({ dir }) => corrupt.has(join(dir, eventFileName('rdb', ts)))).map(({ rule }) => rule);
    return {
      ts,
      seq,
      bytes: result.bytes,
      sha256: result.sha256,
      rdb: result.rdb,
      nodes: nodes ? { bytes: nodes.data.length, sha256: nodes.sha256, mtimeMs: nodes.mtimeMs, ...(nodesChange ? { changed: nodesChange } : {}) } : undefined,
      files,
      failed,
      leftovers: published.leftovers,
      outcome: published.count === 0 ? 'already-archived' : 'archived',
      identity: stream ? stream.identity : identityOf(before),
      ...(stream ? { server: stream.facts } : {}),
      ...(choice.revertedTo ? { revertedTo: choice.revertedTo } : {}),
      ...(replaced.length > 0 ? { replaced } : {}),
      ...(copied && published.count > 0 ? { copy: copied.method } : {}),
      durationMs: Date.now() - started,
      warnings,
    };
  } finally {
    await source.close().catch(() => undefined);
    stream?.close();
    for (const tmp of temps) await unlinkIfExists(fs, tmp).catch(() => undefined);
  }
}

/**
 * The event's archive sequence number. An existing event keeps the number of
 * its record only when that is the archive's newest (a re-run after a crash,
 * --force on an unchanged source): a record below it was not written for this
 * snapshot (planted, or copied by hand), and adopting it would rank what is
 * being archived now below older events, so `restore latest` would give older
 * data. Such an event gets the next number, with a warning.
 */
function eventSeq(choice: EventChoice, target: ArchiveTarget, warnings: string[], log: Log): number {
  const existing = choice.existing.reduce<number | undefined>((max, e) => (e?.seq !== undefined && (max === undefined || e.seq > max) ? e.seq : max), undefined);
  if (existing === undefined) return target.seq;
  if (existing >= target.seq - 1) return existing;
  const w = `event ${choice.ts} already had an archive record with seq ${existing}, below the archive's newest (${target.seq - 1}): ` +
    `not written for this snapshot by rdb-archiver (planted, or copied by hand), so not trusted; the event gets seq ${target.seq}`;
  warnings.push(w);
  log.warn({ ts: choice.ts, seq: existing }, w);
  return target.seq;
}

const PUBLISH_ORDER = ['nodes', 'sha256', 'meta', 'rdb'] as const;

/**
 * Gives the event its final names, folder by folder: companions first, the
 * .rdb last, each with a no-overwrite link; files that exist are reused (a
 * re-run completes an interrupted event); each folder is fsynced. A folder
 * that fails loses what this run created in it and is reported through
 * `fail`; the others go on. A temp is removed as soon as it is not needed;
 * one that cannot be removed is an error of its folder (reported in
 * `leftovers`: the event there is complete, the next run's retention removes
 * the temp).
 */
async function publishEvent(
  ctx: WorkerContext,
  slots: readonly Slot[],
  dead: ReadonlySet<string>,
  fail: (folder: Slot, error: unknown) => void,
  ts: Timestamp,
  seq: number,
  /** A number no record of this event has yet: every folder gets the record, whatever other records it holds. */
  freshSeq: boolean,
  companions: Companion[],
  rdbTemp: string | undefined,
  choice: EventChoice,
  temps: string[],
  warnings: string[],
): Promise<{ count: number; kinds: EventFileKind[]; holding: Slot[]; leftovers: FolderFailure[] }> {
  const { fs, log, instance } = ctx;
  const finalOf = (dir: string, kind: EventFileKind) => join(dir, eventFileName(kind, ts, seq));
  const quarantined = new Set(choice.corrupt);
  const leftovers: FolderFailure[] = [];
  const removeTemp = async (path: string, slot: Slot): Promise<void> => {
    try {
      await unlinkIfExists(fs, path);
      temps.splice(temps.indexOf(path), 1);
    } catch (err) {
      leftovers.push({ rule: slot.rule, dir: slot.dir, error: err });
      ctx.onFolderFailure?.({ rule: slot.rule, dir: slot.dir, error: err }); // now: it may be the first cause
      log.error({ path, err: err instanceof Error ? err.message : String(err) }, 'could not remove a temp file');
    }
  };

  // What each folder holds already; a folder that cannot even be looked at fails alone.
  const present = new Map<Slot, Set<EventFileKind>>();
  const firstCopy = new Map<EventFileKind, string>();
  for (const [i, slot] of slots.entries()) {
    if (dead.has(slot.dir)) continue;
    const seqs = freshSeq ? [] : (choice.existing[i]?.seqs ?? []);
    const have = new Set<EventFileKind>();
    try {
      for (const kind of PUBLISH_ORDER) {
        const path = finalOf(slot.dir, kind);
        // a record of its own (a hand copy) is left alone: it counts as present
        if (kind === 'meta' && seqs.length > 0 && !seqs.includes(seq)) {
          have.add(kind);
          continue;
        }
        const info = quarantined.has(path) ? undefined : await lstatIfExists(fs, path);
        if (!info) continue;
        if (info.kind !== 'file') throw new ConflictError(path, 'exists and is not a regular file; refusing to touch it');
        // (an .rdb still here is intact: chooseEvent hashed every copy and listed the corrupt ones)
        have.add(kind);
      }
    } catch (err) {
      if (err instanceof ConflictError) throw err;
      fail(slot, err);
      continue;
    }
    present.set(slot, have);
    for (const kind of have) if (!firstCopy.has(kind) && !(kind === 'meta' && seqs.length > 0 && !seqs.includes(seq))) firstCopy.set(kind, finalOf(slot.dir, kind));
  }

  let count = 0;
  const holding: Slot[] = [];
  for (const slot of slots) {
    const have = present.get(slot);
    if (!have || dead.has(slot.dir)) continue;
    const mine: Array<[EventFileKind, string]> = [];
    try {
      for (const kind of PUBLISH_ORDER) {
        if (have.has(kind)) continue;
        const finalPath = finalOf(slot.dir, kind);
        const from = kind === 'rdb' ? (firstCopy.get('rdb') ?? rdbTemp) : firstCopy.get(kind);
        const companion = companions.find((c) => c.kind === kind);
        if (from) {
          await linkOrCopy(fs, log, from, finalPath, instance.fileMode, warnings);
        } else if (companion) {
          // Written once, linked, and its temp removed at once; later folders link from the final name.
          const tmp = tempPathFor(finalPath);
          temps.push(tmp);
          await writeNewFile(fs, tmp, companion.data, instance.fileMode);
          await fs.link(tmp, finalPath);
          await removeTemp(tmp, slot);
        } else {
          continue; // no nodes.conf for this event
        }
        mine.push([kind, finalPath]);
      }
      await fs.syncDir(slot.dir);
    } catch (err) {
      await removeCreated(fs, log, mine.map(([, path]) => path));
      fail(slot, err);
      continue;
    }
    for (const [kind, path] of mine) if (!firstCopy.has(kind)) firstCopy.set(kind, path);
    count += mine.length;
    holding.push(slot);
    // Once a folder holds the .rdb, later folders link from there: the temp copy can go.
    if (rdbTemp && firstCopy.has('rdb')) {
      await removeTemp(rdbTemp, slots.find((s) => rdbTemp!.startsWith(`${s.dir}/`)) ?? slot);
      rdbTemp = undefined;
    }
  }
  return { count, kinds: PUBLISH_ORDER.filter((kind) => firstCopy.has(kind)), holding, leftovers };
}

/** Hard-links an archived file into another folder; across filesystems (EXDEV) it copies instead. */
async function linkOrCopy(fs: FileSystem, log: Log, from: string, to: string, fileMode: number, warnings: string[]): Promise<void> {
  try {
    await fs.link(from, to);
    return;
  } catch (err) {
    if (errorCode(err) !== 'EXDEV') throw err;
  }
  const w = `${to}: rule folders are on different filesystems; copied instead of hard-linking`;
  warnings.push(w);
  log.warn({ from, to }, w);
  const tmp = tempPathFor(to);
  try {
    await closeAfter(await fs.open(from, 'read-nofollow'), async (input) => {
      await closeAfter(await fs.open(tmp, 'create-exclusive', fileMode), async (out) => {
        await out.chmod(fileMode);
        const buffer = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
        for (let position = 0; ; ) {
          const n = await input.read(buffer, 0, buffer.length, position);
          if (n === 0) break;
          await writeAll(out, buffer.subarray(0, n));
          position += n;
        }
        await out.sync();
      });
    });
    await publishNew(fs, tmp, to);
  } finally {
    await unlinkIfExists(fs, tmp).catch(() => undefined);
  }
}
