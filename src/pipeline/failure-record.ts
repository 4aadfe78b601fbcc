/**
 * The failure record: how a run that failed before it could write its state
 * (a read-only archive, a lock folder it may not write, a full disk) still
 * reaches `check`, `status` and the metrics.
 *
 * A failed `once`, daemon tick or `prune` whose failure is not in the state
 * file writes one small JSON file, the first of these that works:
 *
 *   1. `<state folder>/last-failure.json` (next to state.json and the lock),
 *      when that folder exists and belongs to the running user;
 *   2. the fallback folder, outside the archive: `monitor.failure_dir` when
 *      set, else `/var/tmp/rdb-archiver-<uid>` (made 0755 by this user, and
 *      used only while it is a real folder owned by this user that nobody
 *      else can write), as `<instance>-<FNV-1a 64 of the state path>.json`.
 *
 * The file is 0644 in a 0755 folder so that a monitoring user can read it; it
 * holds what the state's lastRun holds (times, exit code, error message), no
 * secrets. Except a run refused because it ran as another user than the
 * archive's owner (exit 77): it wrote nothing into the archive and keeps its
 * record to itself (0600); a reader that cannot read it still sees that it
 * exists (owner, mtime), so the refusal is not silent. The next run that can write the state takes it in (state
 * lastFailure and the runs_failed counter) and removes it. Readers trust a record only for
 * the state path it names, and (in the shared /var/tmp) only in a folder and
 * file owned by the uid in the folder's name: a planted record could at worst
 * raise a false alarm, never hide a failure, because a record only ever adds
 * a problem that is newer than the state's last run.
 */
import { dirname, join } from 'node:path';
import type { InstanceConfig } from '../core/config.js';
import type { FileInfo, FileSystem } from '../core/fs.js';
import { ensureDir, errorCode, replaceFileAtomic, unlinkIfExists } from '../core/fs.js';
import type { Log } from '../core/log.js';
import { bumpCounter, type State } from './state.js';
import { ExitCode } from '../core/errors.js';
import { userName } from '../core/trust.js';

export const FAILURE_FILE = 'last-failure.json';
const RECORD_MODE = 0o644;
/** The record of a run refused for an owner mismatch: readable by the refused user only. */
const PRIVATE_RECORD_MODE = 0o600;
/** The kind of OwnerMismatchError (core/errors.ts), whose record is private. */
const PRIVATE_KIND = 'owner-mismatch';
const FALLBACK_DIR_MODE = 0o755;
/** Records are a few hundred bytes; anything bigger was not written by us. */
const MAX_RECORD_BYTES = 64 * 1024;

export type FailedCommand = 'once' | 'prune' | 'daemon tick';

export interface FailureRecord {
  version: 1;
  instance: string;
  /** The instance's state file: a record is only ever read for the instance it names. */
  statePath: string;
  command: FailedCommand;
  /** ISO start time of the failed run (comparable with the state's lastRun.at). */
  at: string;
  exitCode: number;
  kind: string;
  error: string;
  /** Who ran it: "redis (uid 107)". */
  user: string;
  pid: number;
  /** Failed runs this record stands for: each one that finds the record in place adds one. */
  count: number;
}

export interface FoundRecord {
  record: FailureRecord;
  /** The file it was read from. */
  path: string;
}

export function defaultFailureDir(uid: number): string {
  return `/var/tmp/rdb-archiver-${uid}`;
}

/** The default fallback folder counts only as a real folder of `uid` that nobody else can write (it lives in world-writable /var/tmp). */
export function isOwnFallbackDir(info: Pick<FileInfo, 'kind' | 'uid' | 'mode'>, uid: number): boolean {
  return info.kind === 'dir' && info.uid === uid && (info.mode & 0o022) === 0;
}

/**
 * FNV-1a, 64 bits, as 16 hex digits: a name, not a checksum. (Not crc64.ts:
 * every run computes this, and the CRC's first use sets up its WebAssembly
 * kernel, a cost a run with nothing to do should not pay.)
 */
export function fnv1a64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(text)) h = ((h ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h.toString(16).padStart(16, '0');
}

/** The record's file name in a fallback folder, unique per state file (instances never share one). */
export function fallbackFileName(instance: Pick<InstanceConfig, 'name' | 'statePath'>): string {
  return `${instance.name}-${fnv1a64(instance.statePath)}.json`;
}

export function primaryRecordPath(instance: Pick<InstanceConfig, 'statePath'>): string {
  return join(dirname(instance.statePath), FAILURE_FILE);
}

/** The fallback record path for a run as `uid`. */
export function fallbackRecordPath(instance: Pick<InstanceConfig, 'name' | 'statePath' | 'monitor'>, uid: number): string {
  return join(instance.monitor.failureDir ?? defaultFailureDir(uid), fallbackFileName(instance));
}

/** Parses a record defensively; undefined for anything malformed or for another state file. */
export function parseFailureRecord(text: string, statePath: string): FailureRecord | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  const r = raw as Partial<FailureRecord> | null;
  if (!r || typeof r !== 'object' || r.version !== 1 || r.statePath !== statePath) return undefined;
  if (typeof r.at !== 'string' || !Number.isFinite(Date.parse(r.at)) || typeof r.exitCode !== 'number') return undefined;
  if (r.command !== 'once' && r.command !== 'prune' && r.command !== 'daemon tick') return undefined;
  return {
    version: 1,
    instance: String(r.instance ?? ''),
    statePath,
    command: r.command,
    at: r.at,
    exitCode: r.exitCode,
    kind: String(r.kind ?? ''),
    error: String(r.error ?? ''),
    user: String(r.user ?? ''),
    pid: typeof r.pid === 'number' ? r.pid : 0,
    count: typeof r.count === 'number' && Number.isInteger(r.count) && r.count > 0 ? r.count : 1,
  };
}

function euid(): number {
  return typeof process.geteuid === 'function' ? process.geteuid() : 0;
}

/**
 * The default fallback folder lives in a world-writable place: use it only if
 * it is a real folder (not a symlink) of this user that nobody else can write;
 * make it when it is missing. A configured failure_dir is the operator's
 * choice and is only created.
 */
async function prepareFallbackDir(fs: FileSystem, instance: InstanceConfig, uid: number): Promise<string> {
  if (instance.monitor.failureDir) {
    await ensureDir(fs, instance.monitor.failureDir, FALLBACK_DIR_MODE);
    return instance.monitor.failureDir;
  }
  const dir = defaultFailureDir(uid);
  try {
    await fs.mkdir(dir, FALLBACK_DIR_MODE);
    await fs.chmod(dir, FALLBACK_DIR_MODE); // the umask (UMask=0077) must not hide it from the monitoring user
  } catch (err) {
    if (errorCode(err) !== 'EEXIST') throw err;
  }
  const info = await fs.lstat(dir);
  if (!isOwnFallbackDir(info, uid)) {
    throw new Error(`${dir} is not a folder of uid ${uid} that only it can write (someone else made it?); not used`);
  }
  return dir;
}

/**
 * Writes the record where it can. Returns the file written, or undefined when
 * no place would take it (logged: there is nothing else left to try).
 */
export async function writeFailureRecord(fs: FileSystem, log: Log, instance: InstanceConfig, record: Omit<FailureRecord, 'count'>): Promise<string | undefined> {
  // Each failed run that finds an earlier record in place counts on from it.
  const dataFor = async (path: string) => {
    const earlier = await readRecordFile(fs, path, instance.statePath, undefined).catch(() => undefined);
    return Buffer.from(JSON.stringify({ ...record, count: (earlier?.count ?? 0) + 1 }) + '\n');
  };
  const problems: string[] = [];
  const mode = record.kind === PRIVATE_KIND ? PRIVATE_RECORD_MODE : RECORD_MODE;
  const primary = primaryRecordPath(instance);
  const uid = euid();
  // Never a file of ours in another user's state folder (a run refused for an owner mismatch
  // wrote nothing there, and must not start now); nor a state folder made just for the record.
  const stateDir = await fs.lstat(dirname(primary)).catch(() => undefined);
  if (stateDir && stateDir.kind === 'dir' && stateDir.uid === uid) {
    try {
      await replaceFileAtomic(fs, primary, await dataFor(primary), mode);
      return primary;
    } catch (err) {
      problems.push(`${primary}: ${err instanceof Error ? err.message : String(err)}`);
    }
  } else {
    problems.push(`${dirname(primary)}: ${stateDir ? `not a folder of uid ${uid}` : 'missing or unreachable'}`);
  }
  try {
    const dir = await prepareFallbackDir(fs, instance, uid);
    const path = join(dir, fallbackFileName(instance));
    await replaceFileAtomic(fs, path, await dataFor(path), mode);
    log.warn({ path, tried: problems }, 'failure recorded outside the state folder, which could not take it');
    return path;
  } catch (err) {
    problems.push(`${fallbackRecordPath(instance, uid)}: ${err instanceof Error ? err.message : String(err)}`);
  }
  log.error({ tried: problems }, 'the failure could not be recorded anywhere: only this log has it');
  return undefined;
}

/**
 * The records this user's runs left for the instance (state folder, own
 * fallback folder): what the next run that can write the state takes in.
 * Best effort: a record that cannot be read stays where it is (check reads
 * it on its own) and must not stop a backup; in particular a folder of that
 * name that another user made in /var/tmp can never make runs fail. In the
 * default folder only a file owned by this user counts. Two lstats when
 * there are none.
 */
export async function readOwnFailureRecords(fs: FileSystem, instance: InstanceConfig): Promise<FoundRecord[]> {
  const uid = euid();
  const found: FoundRecord[] = [];
  const paths: Array<[string, number | undefined]> = [
    [primaryRecordPath(instance), undefined],
    [fallbackRecordPath(instance, uid), instance.monitor.failureDir ? undefined : uid],
  ];
  for (const [path, owner] of paths) {
    const record = await readRecordFile(fs, path, instance.statePath, owner).catch(() => undefined);
    if (record) found.push({ record, path });
  }
  return found;
}

/**
 * Pure: takes records into the state: the newest becomes lastFailure if it is
 * newer than the state's, and each failed run they stand for counts in
 * runs_failed (once: records no newer than the state's lastFailure are not
 * counted again). The caller saves the state, then removes the records.
 */
export function absorbFailureRecords(state: State, found: readonly FoundRecord[]): void {
  // A record not newer than the state's last failure was taken in already (its removal failed): not counted twice.
  const before = state.lastFailure ? Date.parse(state.lastFailure.at) : -Infinity;
  for (const { record } of found) {
    if (!(Date.parse(record.at) > before)) continue;
    bumpCounter(state, 'runs_failed', record.count);
    if (!state.lastFailure || Date.parse(record.at) > Date.parse(state.lastFailure.at)) {
      state.lastFailure = { at: record.at, command: record.command, exitCode: record.exitCode, error: record.error };
    }
  }
}

/** Removes records the state now holds. Best effort: a record left behind is older than the state's last run, and readers ignore it. */
export async function removeFailureRecords(fs: FileSystem, found: readonly FoundRecord[]): Promise<void> {
  for (const { path } of found) await unlinkIfExists(fs, path).catch(() => undefined);
}

async function readRecordFile(fs: FileSystem, path: string, statePath: string, ownerUid: number | undefined): Promise<FailureRecord | undefined> {
  let info;
  try {
    info = await fs.lstat(path);
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
  if (info.kind !== 'file' || info.size > MAX_RECORD_BYTES) return undefined;
  if (ownerUid !== undefined && info.uid !== ownerUid) return undefined;
  return parseFailureRecord((await fs.readFile(path)).toString('utf8'), statePath);
}

/**
 * The newest failure record of an instance, from the state folder and the
 * fallback folders of the users who may have run it (`uids`: the checking
 * user, root, the archive's and the state folder's owners). Unreadable places are
 * skipped: a record is extra evidence, and its absence proves nothing.
 */
export async function readFailureRecord(fs: FileSystem, instance: InstanceConfig, uids: number[]): Promise<FoundRecord | undefined> {
  const candidates: Array<{ path: string; ownerUid?: number; dirUid?: number }> = [{ path: primaryRecordPath(instance) }];
  if (instance.monitor.failureDir) candidates.push({ path: join(instance.monitor.failureDir, fallbackFileName(instance)) });
  else for (const uid of new Set(uids)) candidates.push({ path: fallbackRecordPath(instance, uid), ownerUid: uid, dirUid: uid });
  let newest: FoundRecord | undefined;
  for (const c of candidates) {
    try {
      if (c.dirUid !== undefined) {
        const dir = await fs.lstat(dirname(c.path));
        if (!isOwnFallbackDir(dir, c.dirUid)) continue;
      }
      const record = await readRecordFile(fs, c.path, instance.statePath, c.ownerUid)
        .catch((err) => (errorCode(err) === 'EACCES' && c.ownerUid !== undefined ? unreadableRecord(fs, instance, c.path, c.ownerUid) : Promise.reject(err)));
      if (record && (!newest || record.at > newest.record.at)) newest = { record, path: c.path };
    } catch {
      // ENOENT (no such folder), EACCES: nothing to read there
    }
  }
  return newest;
}

/**
 * A record in `uid`'s own fallback folder that this user may not read: only
 * the private record of an owner-mismatch refusal is (exit 77). What its
 * metadata proves stands in for it: that user's run failed at its mtime.
 */
async function unreadableRecord(fs: FileSystem, instance: InstanceConfig, path: string, uid: number): Promise<FailureRecord | undefined> {
  const info = await fs.lstat(path);
  if (info.kind !== 'file' || info.uid !== uid || info.size > MAX_RECORD_BYTES) return undefined;
  const user = userName(uid);
  return {
    version: 1, instance: instance.name, statePath: instance.statePath, command: 'once', at: new Date(info.mtimeMs).toISOString(),
    exitCode: ExitCode.PERMISSION, kind: PRIVATE_KIND, user, pid: 0, count: 1,
    error: `a run as ${user} was refused (it is not the archive's owner; its record is readable by ${user} only: run check as ${user}, or see its log)`,
  };
}
