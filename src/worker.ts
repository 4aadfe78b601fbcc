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
import { join } from 'node:path';
import type { InstanceConfig } from './config.js';
import { ruleDir } from './config.js';
import { ConflictError, FsError, InsufficientSpaceError, InvalidSnapshotError, SourceUnavailableError, TryAgainError } from './errors.js';
import type { FileInfo, FileSystem, Handle } from './fs.js';
import { closeAfter, ensureDir, errorCode, lstatIfExists, publishNew, readFromStart, tempPathFor, unlinkIfExists, writeNewFile } from './fs.js';
import type { Log } from './log.js';
import { borrowPassBuffers } from './crc64.js';
import { RdbValidator, type RdbInfo } from './rdb.js';
import { createSha256, sha256Hex } from './sha256.js';
import type { SourceIdentity } from './state.js';
import { identityOf, sameIdentity } from './state.js';
import { type EventFileKind, type Timestamp, eventFileName, parseTimestamp, timestampFromMs } from './timestamp.js';
import type { SnapshotJob } from './watcher.js';
import { describeSourceKind } from './watcher.js';

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
  ts: Timestamp;
  bytes: number;
  sha256: string;
  rdb: RdbInfo;
  /** The nodes.conf archived with the RDB; `changed` when it differed before and after the copy. */
  nodes?: { bytes: number; sha256: string; mtimeMs: number; changed?: NodesChange };
  /** Final file paths per rule. */
  files: Record<string, string[]>;
  /** 'already-archived' when every file of the event existed, identical. */
  outcome: 'archived' | 'already-archived';
  identity: SourceIdentity;
  durationMs: number;
  warnings: string[];
}

export interface WorkerContext {
  fs: FileSystem;
  log: Log;
  instance: InstanceConfig;
  signal?: AbortSignal;
}

interface PassResult {
  bytes: number;
  sha256: string;
  rdb: RdbInfo;
}

/**
 * One read pass over an open descriptor: every chunk goes to the output (if
 * any), the sha256 and the RDB validator. The next read is issued before the
 * current chunk is hashed and written, so I/O and CPU overlap.
 */
export async function copyPass(
  source: Handle,
  sourcePath: string,
  out: Handle | undefined,
  signal?: AbortSignal,
): Promise<PassResult> {
  // Page-aligned buffers the CRC runs over in place (see borrowPassBuffers);
  // given back only when no read or write into them is left in flight.
  const lent = borrowPassBuffers(2, COPY_CHUNK_BYTES);
  try {
    return await passThrough(source, sourcePath, out, lent.buffers, signal);
  } finally {
    lent.release();
  }
}

async function passThrough(
  source: Handle,
  sourcePath: string,
  out: Handle | undefined,
  buffers: Buffer[],
  signal?: AbortSignal,
): Promise<PassResult> {
  const hash = createSha256();
  const validator = new RdbValidator(sourcePath);
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
  // Background write-back (see WRITEBACK_START_BYTES); it never rejects: its
  // error is kept and fails the pass.
  let flushing: Promise<void> | undefined;
  let flushError: { err: unknown } | undefined;
  let flushedUpTo = 0;
  const startFlush = (upTo: number): void => {
    flushing = out!.sync().then(
      () => {
        flushedUpTo = upTo;
        flushing = undefined;
      },
      (err: unknown) => {
        flushError ??= { err };
        flushing = undefined;
      },
    );
  };
  let writing: Promise<void> | undefined;
  try {
    for (;;) {
      const n = await reading;
      if (n === 0) break;
      if (signal?.aborted) await flushing;
      signal?.throwIfAborted();
      const chunk = buffers[which]!.subarray(0, n);
      position += n;
      which ^= 1;
      reading = issueRead();
      writing = out ? writeAll(out, chunk) : undefined;
      writing?.catch(() => undefined); // awaited below; same reason as the reads
      hash.update(chunk);
      validator.update(chunk);
      if (validator.earlyError) throw validator.earlyError; // not an RDB at all: don't copy the rest of it
      await writing;
      if (flushError) throw flushError.err;
      if (out && !flushing && position >= WRITEBACK_START_BYTES && position - flushedUpTo >= WRITEBACK_STEP_BYTES) startFlush(position);
    }
    await flushing;
    if (flushError) throw flushError.err;
  } catch (err) {
    // Leave no read, write or fsync racing the cleanup, nor the next user of the buffers.
    await Promise.allSettled([reading, writing, flushing]);
    throw err;
  }
  return { bytes: position, sha256: hash.digest('hex'), rdb: validator.finish() };
}

async function writeAll(out: Handle, chunk: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) offset += await out.write(chunk, offset, chunk.length - offset);
}

async function hashFile(fs: FileSystem, path: string): Promise<string> {
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

/** Makes sure a rule folder exists as a real directory (never a symlink out of the archive). */
async function prepareRuleDir(fs: FileSystem, dir: string, dirMode: number): Promise<void> {
  await ensureDir(fs, dir, dirMode);
  const info = await fs.lstat(dir);
  if (info.kind !== 'dir') {
    throw new FsError('prepare', dir, 'ENOTDIR', 'rule folder is a symlink or not a directory: refusing to write through it');
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

/**
 * Archives the job's source as one event in every rule folder. Idempotent: an
 * identical existing event is completed (missing files added), never rewritten;
 * a different one under the same timestamp is a ConflictError and is kept.
 */
export async function archiveSnapshot(ctx: WorkerContext, job: SnapshotJob): Promise<SnapshotResult> {
  const { fs, log, instance } = ctx;
  const started = Date.now();
  const warnings: string[] = [];
  const dirs = instance.rules.map((rule) => ({ rule: rule.name, dir: ruleDir(instance, rule) }));
  const primary = dirs[0]!.dir;

  await ensureDir(fs, instance.archiveDir, instance.dirMode);
  for (const { dir } of dirs) await prepareRuleDir(fs, dir, instance.dirMode);

  const { handle: source, info: before } = await openSource(fs, job.sourceRdb);
  const temps: string[] = [];
  try {
    // nodes.conf is read before and after the copy (see pairNodes): both reads follow the RDB's save.
    const nodesBefore = instance.sourceNodes ? await readNodesFile(fs, instance.sourceNodes) : undefined;
    // The worker names the event, from the descriptor it actually copies.
    const ts = timestampFromMs(before.mtimeMs);
    if (parseTimestamp(ts) === undefined) {
      throw new SourceUnavailableError(job.sourceRdb, `has the mtime ${new Date(before.mtimeMs).toISOString()}, outside the years 0000-9999 an archive name can hold; fix the clock, then touch the file`);
    }
    const finalOf = (dir: string, kind: EventFileKind) => join(dir, eventFileName(kind, ts));

    // An event with this timestamp may exist already (lost state, a crash after
    // the rename, a same-second save): then hash instead of copying.
    let existingRdb: string | undefined;
    for (const { dir } of dirs) {
      const info = await lstatIfExists(fs, finalOf(dir, 'rdb'));
      if (info) {
        if (info.kind !== 'file') throw new ConflictError(finalOf(dir, 'rdb'), 'exists and is not a regular file; refusing to touch it');
        existingRdb ??= finalOf(dir, 'rdb');
      }
    }

    // A file rewritten in place mid-copy can look corrupt: that is "try again", not "invalid".
    const changedError = async (bytesRead?: number): Promise<TryAgainError | undefined> => {
      const after = await source.stat();
      // A write puts the ctime forward even when the mtime is put back (cp -p over the file). A
      // file that was unlinked (nlink 0: Redis renamed a new dump over it) can no longer change.
      const rewritten = after.ctimeNs !== before.ctimeNs && after.nlink > 0;
      if (sameIdentity(identityOf(after), identityOf(before)) && !rewritten && (bytesRead === undefined || bytesRead === before.size)) return undefined;
      return new TryAgainError('source-changed', job.sourceRdb,
        `${job.sourceRdb} was modified in place during the copy (size ${before.size} -> ${after.size}${bytesRead === undefined ? '' : `, ${bytesRead} bytes read`}); nothing archived, the next run retries`);
    };
    const pass1 = async (out: Handle | undefined): Promise<PassResult> => {
      try {
        return await copyPass(source, job.sourceRdb, out, ctx.signal);
      } catch (err) {
        if (err instanceof InvalidSnapshotError) throw (await changedError()) ?? err;
        throw err;
      }
    };

    let pass: PassResult;
    let rdbTemp: string | undefined;
    if (existingRdb) {
      pass = await pass1(undefined);
    } else {
      const { available, total } = await fs.space(primary);
      const needed = before.size + reserveBytes(instance, total);
      if (available < needed) throw new InsufficientSpaceError(primary, needed, available);
      rdbTemp = tempPathFor(finalOf(primary, 'rdb'));
      temps.push(rdbTemp);
      pass = await closeAfter(await fs.open(rdbTemp, 'create-exclusive', instance.fileMode), async (out) => {
        await out.chmod(instance.fileMode);
        const result = await pass1(out);
        await out.sync();
        return result;
      });
    }

    const changed = await changedError(pass.bytes);
    if (changed) throw changed;
    for (const w of pass.rdb.warnings) {
      warnings.push(w);
      log.warn({ path: job.sourceRdb }, w);
    }

    let nodes: NodesRead | undefined;
    let nodesChange: NodesChange | undefined;
    if (instance.sourceNodes) {
      const paired = pairNodes(instance.sourceNodes, nodesBefore, await readNodesFile(fs, instance.sourceNodes));
      nodes = paired.kept;
      nodesChange = paired.change;
      for (const w of paired.warnings) {
        warnings.push(w);
        log.warn({ path: instance.sourceNodes, ...(nodesChange ? { nodesChange } : {}) }, w);
      }
    }
    const nodesSha = nodes?.sha256;
    const companions: Companion[] = [];
    if (nodes) companions.push({ kind: 'nodes', data: nodes.data });
    companions.push({ kind: 'sha256', data: Buffer.from(sidecarText(ts, pass.sha256, nodesSha)) });

    // Check every folder before writing anything: a conflict must leave the archive as it was.
    const existingRdbSha = existingRdb ? await hashFile(fs, existingRdb) : undefined;
    if (existingRdb && existingRdbSha !== pass.sha256) {
      throw new ConflictError(existingRdb, `an event with timestamp ${ts} exists with different content (sha256 ${existingRdbSha}, source ${pass.sha256}); kept the existing event, nothing archived`);
    }
    // Files of this event that exist already are reused (a re-run completes an
    // interrupted event); only the .rdb decides whether it is the same event.
    const firstCopy = new Map<EventFileKind, string>();
    const missing = new Set<string>();
    for (const { dir } of dirs) {
      for (const kind of ['nodes', 'sha256', 'rdb'] as const) {
        const path = finalOf(dir, kind);
        const info = await lstatIfExists(fs, path);
        if (!info) {
          missing.add(path);
          continue;
        }
        if (info.kind !== 'file') throw new ConflictError(path, 'exists and is not a regular file; refusing to touch it');
        if (kind === 'rdb' && path !== existingRdb && (await hashFile(fs, path)) !== pass.sha256) {
          throw new ConflictError(path, `exists with different content for event ${ts}; kept the existing event, nothing archived`);
        }
        if (!firstCopy.has(kind)) firstCopy.set(kind, path);
      }
    }

    // Publish: in every folder companions first, the .rdb last, then fsync the folder.
    let created = 0;
    for (const { dir } of dirs) {
      for (const kind of ['nodes', 'sha256', 'rdb'] as const) {
        const finalPath = finalOf(dir, kind);
        if (!missing.has(finalPath)) continue;
        const from = firstCopy.get(kind);
        const companion = companions.find((c) => c.kind === kind);
        if (from) {
          await linkOrCopy(fs, log, from, finalPath, instance.fileMode, warnings);
        } else if (kind === 'rdb') {
          await publishNew(fs, rdbTemp!, finalPath);
          temps.splice(temps.indexOf(rdbTemp!), 1); // published: nothing left to clean up
        } else if (companion) {
          const tmp = tempPathFor(finalPath);
          temps.push(tmp);
          await writeNewFile(fs, tmp, companion.data, instance.fileMode);
          await publishNew(fs, tmp, finalPath);
          temps.splice(temps.indexOf(tmp), 1);
        } else {
          continue; // no nodes.conf for this event
        }
        firstCopy.set(kind, finalPath);
        created += 1;
      }
      await fs.syncDir(dir);
    }

    const files: Record<string, string[]> = {};
    for (const { rule, dir } of dirs) {
      files[rule] = (['nodes', 'sha256', 'rdb'] as const).filter((kind) => firstCopy.has(kind)).map((kind) => finalOf(dir, kind));
    }
    return {
      ts,
      bytes: pass.bytes,
      sha256: pass.sha256,
      rdb: pass.rdb,
      nodes: nodes ? { bytes: nodes.data.length, sha256: nodes.sha256, mtimeMs: nodes.mtimeMs, ...(nodesChange ? { changed: nodesChange } : {}) } : undefined,
      files,
      outcome: created === 0 ? 'already-archived' : 'archived',
      identity: identityOf(before),
      durationMs: Date.now() - started,
      warnings,
    };
  } finally {
    await source.close().catch(() => undefined);
    for (const tmp of temps) await unlinkIfExists(fs, tmp).catch(() => undefined);
  }
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
