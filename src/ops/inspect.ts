/**
 * Read-only facts about one instance, as `status`, `check` and the metrics
 * textfile report them: the state file, the source, what each rule folder
 * holds, and the free space in the archive filesystem.
 *
 * It never writes, never takes the lock and never throws: every problem is a
 * field of the result, so one unreadable instance cannot hide the others.
 */
import { dirname, join } from 'node:path';
import type { InstanceConfig } from '../core/config.js';
import { ruleDir } from '../core/config.js';
import { errorReport, lockPathFor, type ErrorReport } from '../pipeline/cycle.js';
import { readFailureRecord, type FoundRecord } from '../pipeline/failure-record.js';
import { effectiveUid, userName } from '../core/trust.js';
import type { FileSystem } from '../core/fs.js';
import { errorCode, exists } from '../core/fs.js';
import { FUTURE_TOLERANCE_MS, latestContradiction, newestArchivedFirst, type ScannedFolder } from '../pipeline/event-order.js';
import { eventFileNames, scanFolder, scanWarnings } from '../pipeline/retention.js';
import { loadState, sameIdentity, identityOf, type State } from '../pipeline/state.js';
import { type Timestamp, eventFileName, timestampFromMs, timestampToMs, withOrdinal } from '../core/timestamp.js';
import { statSource } from '../pipeline/watcher.js';
import { parseArchiveRecord, type ArchiveRecord } from '../pipeline/worker.js';
import { inspectRemotes, type RemoteFacts } from '../offsite/facts.js';
import { readWatchRecord, type WatchRecord } from '../pipeline/watch-record.js';
import { LOCK_FUTURE_TOLERANCE_MS, readObservation } from '../pipeline/lock.js';
import type { CopyMethod } from '../pipeline/copy-methods.js';
import { sharingOf } from '../pipeline/extents.js';

export interface RuleUsage {
  rule: string;
  dir: string;
  /** Complete events (those with their .rdb). */
  events: number;
  /**
   * Bytes of the event files (.rdb, nodes .config, .sha256) in this folder,
   * each inode counted once within the folder. The same snapshot hard-linked
   * into two rule folders counts in both folders' bytes (it is part of both),
   * but only once in InstanceFacts.archiveBytes.
   */
  bytes: number;
  newest?: Timestamp;
  oldest?: Timestamp;
  /** Events without their .rdb, left by an interrupted run (retention finishes them). */
  incomplete: number;
  /** Files named like events but owned by another user: not events (retention.ts, scanWarnings). */
  foreign?: string[];
  /** What someone must look at in this folder: foreign files, a folder others can write. */
  warnings?: string[];
  error?: ErrorReport;
}

export interface SourceFacts {
  path: string;
  exists: boolean;
  mtimeMs?: number;
  /** The timestamp an archive of the current file would get. */
  ts?: Timestamp;
  size?: number;
  /** The current file is not yet in the archive (undefined when the source is missing). */
  unarchived?: boolean;
  /** The current file failed validation in the last run (state.rejected names it). */
  rejected?: { reason: string; at: string };
  error?: ErrorReport;
  /** A server (source.redis mode replicate), not a file: no mtime, size or unarchived check. */
  network?: boolean;
}

/**
 * A folder in the archive root that holds event files but is no configured
 * rule: a renamed or removed rule's folder. Nothing prunes it any more, and
 * it is never deleted automatically; status and check report it.
 */
export interface OrphanFolder {
  folder: string;
  dir: string;
  /** Complete events (with their .rdb). */
  events: number;
  /** Bytes of its event files, each inode once. */
  bytes: number;
  newest?: Timestamp;
  oldest?: Timestamp;
}

export interface InstanceFacts {
  instance: string;
  /** A cluster shard (source.redis cluster: true): its slots, and whether a resharding retired it. */
  shard?: { cluster: string; name: string; slots: string; retired: boolean; master: string | null };
  archiveDir: string;
  statePath: string;
  /** Undefined when the state file is missing (never ran) or unusable (see stateError). */
  state?: State;
  /** The state file exists but is corrupt or unreadable. */
  stateError?: string;
  source: SourceFacts;
  rules: RuleUsage[];
  /**
   * The complete event archived most recently in any rule folder (event-order.ts),
   * whatever its name says; archivedAt from the state or its archive record.
   */
  newest?: {
    ts: Timestamp; bytes: number; path: string; sha256?: string; archivedAt?: string;
    /** How its .rdb was copied, and whether its data is still shared with the source (extents.ts). */
    copy: CopyMethod | null; shared: boolean;
  };
  /**
   * The event the state says was archived last is no longer the archive's
   * latest (its .rdb or archive record is gone): why. `restore latest` refuses.
   */
  lostLatest?: string;
  /** Complete events whose name lies in the future (a wrong source clock), newest name first. */
  futureEvents: Timestamp[];
  /**
   * The newest archived event is stamped before an event archived earlier:
   * the source clock stepped back (retention keeps extra events meanwhile).
   */
  steppedBack?: { latest: Timestamp; newerNamed: Timestamp };
  /** Distinct snapshot timestamps across all rule folders. */
  snapshots: number;
  /** Bytes on disk under the rule folders, every inode counted once (hard links shared between rules once). */
  archiveBytes: number;
  space?: { available: number; total: number };
  spaceError?: string;
  /** Orphan rule folders in the archive root, by name. */
  orphans: OrphanFolder[];
  /** The archive root could not be listed to look for orphans. */
  orphansError?: string;
  /**
   * The newest failure record (failure-record.ts): a failed run whose failure
   * the state may not hold. It matters only when newer than state.lastRun.
   */
  failure?: FoundRecord;
  /** The run lock, when some run holds it: since when (its recorded start, else its file's mtime). */
  lock?: {
    path: string; sinceMs: number; pid?: number; command?: string;
    /**
     * Its mtime (or recorded start) lies in the future of this host's clock:
     * written by a host with a fast clock. sinceMs is then when this host
     * first saw it unchanged (lock.ts leaseAge), or now when it never did.
     */
    future?: { mtimeMs: number; observedSinceMs?: number };
  };
  /** Folders a run must write that cannot be written: not writable by their owner, or on a read-only filesystem. */
  unwritable: Array<{ path: string; reason: string }>;
  /** Who ran this inspection ("nagios (uid 1001)"); set when a permission error needs to say so. */
  user?: string;
  /** The archive root: missing (an unmounted disk?) and whether it shares the source's filesystem (st_dev). */
  archiveRoot: { exists: boolean; sameFilesystemAsSource?: boolean };
  /** Off-site remotes (empty or absent without remotes). */
  remotes?: RemoteFacts[];
  /** A watching daemon's record (watch-record.ts), with whether that daemon still runs (undefined: cannot tell). */
  watch?: { record: WatchRecord; alive?: boolean };
  /**
   * What the last scheduled verification found bad, among the events still
   * archived; `newest` marks the most recently archived event.
   */
  verifyBad?: Array<{ ts: Timestamp; rules: string[]; problems: string[]; foundAt?: string; newest: boolean }>;
  /** `verify.every` of the config (ms), when scheduled verification is on. */
  verifyEveryMs?: number;
  /** `drill.every` of the config (ms), when scheduled drills are on. */
  drillEveryMs?: number;
}

async function statSize(fs: FileSystem, path: string): Promise<{ key: string; size: number } | undefined> {
  try {
    const info = await fs.lstat(path);
    return info.kind === 'file' ? { key: `${info.dev}:${info.ino}`, size: info.size } : undefined;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined; // pruned between readdir and stat
    throw err;
  }
}

/** statfs of the archive folder, or of its nearest existing parent before the first run. */
export async function archiveSpace(fs: FileSystem, dir: string): Promise<{ available: number; total: number }> {
  for (let at = dir; ; at = dirname(at)) {
    try {
      return await fs.space(at);
    } catch (err) {
      if (errorCode(err) !== 'ENOENT' || dirname(at) === at) throw err;
    }
  }
}

export async function inspectInstance(fs: FileSystem, instance: InstanceConfig): Promise<InstanceFacts> {
  const facts: InstanceFacts = {
    instance: instance.name,
    ...(instance.shard?.name ? { shard: {
      cluster: instance.shard.cluster, name: instance.shard.name, slots: instance.shard.slots, retired: instance.shard.retired,
      master: instance.shard.master ? instance.sourceRdb : null,
    } } : {}),
    archiveDir: instance.archiveDir,
    statePath: instance.statePath,
    source: { path: instance.sourceRdb, exists: false },
    rules: [],
    snapshots: 0,
    archiveBytes: 0,
    orphans: [],
    unwritable: [],
    futureEvents: [],
    archiveRoot: { exists: false },
    remotes: [],
  };
  const asUser = () => (facts.user ??= userName(effectiveUid()));
  const nowMs = Date.now();
  const root = await fs.stat(instance.archiveDir).catch(() => undefined);
  // An instance folder inside a shared archive.dir is made by its first run: then the shared folder is what must exist.
  const mount = root ?? (instance.archiveParent !== undefined ? await fs.stat(instance.archiveParent).catch(() => undefined) : undefined);
  facts.archiveRoot.exists = mount?.kind === 'dir';

  try {
    const loaded = await loadState(fs, instance.statePath);
    if (loaded.problem) facts.stateError = loaded.problem;
    else if (await exists(fs, instance.statePath)) facts.state = loaded.state;
  } catch (err) {
    const report = errorReport(err);
    facts.stateError = `state file ${instance.statePath} is unreadable${report.kind === 'permission' ? ` as user ${asUser()}` : ''}: ${report.message}`;
  }

  // Rule folders: events, bytes (inode-deduplicated per folder and across the archive), newest.
  const allInodes = new Map<string, number>();
  const allTs = new Set<Timestamp>();
  let newest: { ts: Timestamp; seq?: number; path: string; dir: string; seqs?: number[] } | undefined;
  let newestNamed: Timestamp | undefined;
  const scanned: ScannedFolder[] = [];
  for (const rule of instance.rules) {
    const dir = ruleDir(instance, rule);
    const usage: RuleUsage = { rule: rule.name, dir, events: 0, bytes: 0, incomplete: 0 };
    try {
      const scan = await scanFolder(fs, dir);
      scanned.push({ rule: rule.name, events: scan.events });
      if (scan.foreign?.length) usage.foreign = scan.foreign;
      const warnings = scanWarnings(scan);
      if (warnings.length > 0) usage.warnings = warnings;
      const inodes = new Map<string, number>();
      for (const event of scan.events) {
        if (!event.kinds.includes('rdb')) {
          usage.incomplete += 1;
        } else {
          usage.events += 1;
          allTs.add(event.ts);
          usage.newest ??= event.ts; // scan.events is most recently archived first
          usage.oldest = event.ts;
          if (!newest || newestArchivedFirst(event, newest) < 0) newest = { ts: event.ts, seq: event.seq, seqs: event.seqs, dir, path: join(dir, eventFileName('rdb', event.ts)) };
          if (newestNamed === undefined || event.ts > newestNamed) newestNamed = event.ts;
          if (timestampToMs(event.ts) > nowMs + FUTURE_TOLERANCE_MS && !facts.futureEvents.includes(event.ts)) facts.futureEvents.push(event.ts);
        }
        for (const name of eventFileNames(event)) {
          const file = await statSize(fs, join(dir, name));
          if (!file) continue;
          inodes.set(file.key, file.size);
          allInodes.set(file.key, file.size);
        }
      }
      for (const size of inodes.values()) usage.bytes += size;
    } catch (err) {
      usage.error = errorReport(err);
    }
    facts.rules.push(usage);
  }
  for (const size of allInodes.values()) facts.archiveBytes += size;
  facts.snapshots = allTs.size;
  if (instance.verify) facts.verifyEveryMs = instance.verify.everyMs;
  if (instance.drill?.everyMs !== undefined) facts.drillEveryMs = instance.drill.everyMs;
  const verified = facts.state?.verify;
  // A bad event pruned since is no longer a problem of the archive.
  if (verified) facts.verifyBad = verified.bad.filter((b) => allTs.has(b.ts)).map((b) => ({ ...b, newest: b.ts === newest?.ts }));
  const lost = latestContradiction(facts.state?.archived, scanned);
  if (lost) facts.lostLatest = lost;
  facts.futureEvents.sort().reverse();
  if (newest) {
    const file = await statSize(fs, newest.path).catch(() => undefined);
    const fromState = facts.state?.archived?.ts === newest.ts ? facts.state.archived : undefined;
    // One small read: the record of the newest event (how it was copied; its sha256 when the state does not know it).
    const record = newest.seq === undefined ? undefined : await readArchiveRecord(fs, join(newest.dir, eventFileName('meta', newest.ts, newest.seq)));
    const sha256 = fromState?.sha256 ?? record?.sha256;
    const archivedAt = fromState?.at ?? record?.archivedAt;
    const sourceNow = await statSource(fs, instance.sourceRdb).catch(() => undefined);
    facts.newest = {
      ts: newest.ts, path: newest.path, bytes: file?.size ?? 0, ...(sha256 ? { sha256 } : {}), ...(archivedAt ? { archivedAt } : {}), ...sharingOf(record, sourceNow),
    };
    if (newestNamed !== undefined && withOrdinal(newestNamed, 0) > withOrdinal(newest.ts, 0) && !facts.futureEvents.includes(newestNamed)) {
      facts.steppedBack = { latest: newest.ts, newerNamed: newestNamed };
    }
  }

  // The source as it is now. A server (source.redis mode replicate) is not asked here: status and
  // check stay local and quick; the newest event's age (monitor.warn_age/crit_age) measures its RPO,
  // and a failing pull is the last run's error.
  if (instance.redis?.mode === 'replicate') {
    facts.source = { path: instance.sourceRdb, exists: true, network: true };
  } else try {
    const info = await statSource(fs, instance.sourceRdb);
    const identity = identityOf(info);
    const ts = timestampFromMs(info.mtimeMs);
    const archived = facts.state?.archived;
    facts.source = {
      path: instance.sourceRdb,
      exists: true,
      mtimeMs: info.mtimeMs,
      ts,
      size: info.size,
      // With a state file, identity decides (as the watcher does); without one, an event with the same timestamp.
      unarchived: archived ? !sameIdentity(identity, archived.identity) : !allTs.has(ts),
    };
    if (root) facts.archiveRoot.sameFilesystemAsSource = root.dev === info.dev;
    const rejected = facts.state?.rejected;
    if (rejected && sameIdentity(rejected.identity, identity)) facts.source.rejected = { reason: rejected.reason, at: rejected.at };
  } catch (err) {
    facts.source = { path: instance.sourceRdb, exists: false, error: errorReport(err) };
  }

  if (facts.source.error?.kind === 'permission' || facts.rules.some((r) => r.error?.kind === 'permission')) asUser();

  const owners = await probeWritable(fs, instance, facts);
  // root's records too: a run as root that was refused (owner mismatch) records itself in root's folder.
  facts.failure = await readFailureRecord(fs, instance, [effectiveUid(), 0, ...owners]).catch(() => undefined);
  facts.lock = await readLock(fs, lockPathFor(instance));

  try {
    facts.orphans = await findOrphans(fs, instance);
  } catch (err) {
    facts.orphansError = `cannot list ${instance.archiveDir} to look for orphan rule folders: ${errorReport(err).message}`;
  }

  try {
    facts.space = await archiveSpace(fs, instance.archiveDir);
  } catch (err) {
    facts.spaceError = errorReport(err).message;
  }
  facts.remotes = await inspectRemotes(fs, instance, facts.state, Date.now());
  facts.watch = await readWatchRecord(fs, instance.statePath).catch(() => undefined);
  return facts;
}

/**
 * Can a run write where it must? For the state folder and each rule folder
 * (or the archive root, when one of them is still to be made): a folder whose
 * owner lacks the write bit cannot be written by that owner, the user every
 * run must be; access(W_OK) says EROFS on a read-only mount whoever asks.
 * (Root-owned folders are written by root whatever their mode.) Returns the
 * owners' uids, whose fallback failure records are worth reading.
 */
async function probeWritable(fs: FileSystem, instance: InstanceConfig, facts: InstanceFacts): Promise<number[]> {
  const owners: number[] = [];
  const dirs = [dirname(instance.statePath), ...instance.rules.map((r) => ruleDir(instance, r))];
  const probe = async (dir: string): Promise<boolean> => {
    let info;
    try {
      info = await fs.lstat(dir);
    } catch {
      return false; // missing or unreachable: not this probe's to report
    }
    if (info.kind !== 'dir') return true; // the scan reports a rule folder that is not a folder
    owners.push(info.uid);
    const mode = info.mode & 0o7777;
    if (info.uid !== 0 && (mode & 0o200) === 0) {
      facts.unwritable.push({ path: dir, reason: `is not writable by its owner, ${userName(info.uid)}: mode 0${mode.toString(8).padStart(3, '0')}` });
      return true;
    }
    try {
      await fs.accessWrite(dir);
    } catch (err) {
      if (errorCode(err) === 'EROFS') facts.unwritable.push({ path: dir, reason: 'is on a read-only filesystem' });
    }
    return true;
  };
  let missing = false;
  for (const dir of new Set(dirs)) if (!(await probe(dir))) missing = true;
  if (missing) await probe(instance.archiveDir);
  return owners;
}

/** The run lock's holder and age, when the lock file exists and can be read. */
async function readLock(fs: FileSystem, path: string): Promise<InstanceFacts['lock']> {
  try {
    const info = await fs.lstat(path);
    const lock: NonNullable<InstanceFacts['lock']> = { path, sinceMs: info.mtimeMs };
    try {
      const owner = JSON.parse((await fs.readFile(path)).toString('utf8')) as { pid?: unknown; startedAt?: unknown; command?: unknown };
      const started = typeof owner.startedAt === 'string' ? Date.parse(owner.startedAt) : NaN;
      // The recorded start, not the mtime: a lease refreshed by a stuck run keeps the file young.
      if (Number.isFinite(started)) lock.sinceMs = started;
      if (typeof owner.pid === 'number') lock.pid = owner.pid;
      if (typeof owner.command === 'string') lock.command = owner.command;
    } catch {
      // unparsable: its mtime is all we know
    }
    const nowMs = Date.now();
    if (info.mtimeMs > nowMs + LOCK_FUTURE_TOLERANCE_MS || lock.sinceMs > nowMs + LOCK_FUTURE_TOLERANCE_MS) {
      // Another host's clock: neither time says how long it has been held. This host's observation does, if any.
      const seen = await readObservation(fs, path);
      const observed = seen && seen.dev === info.dev && seen.ino === info.ino && seen.mtimeNs === info.mtimeNs ? Date.parse(seen.firstSeenAt) : undefined;
      lock.future = { mtimeMs: Math.max(info.mtimeMs, lock.sinceMs), ...(observed !== undefined && observed <= nowMs ? { observedSinceMs: observed } : {}) };
      lock.sinceMs = lock.future.observedSinceMs ?? nowMs;
    }
    return lock;
  } catch {
    return undefined; // no lock (or not readable by this user)
  }
}

/**
 * Folders of the archive root that hold event files but are not a configured
 * rule. Hidden folders (the state folder .rdb-archiver, anything dotted) are
 * never rule folders: a rule name cannot start with a dot. Symlinks are not
 * followed; a folder that cannot be read is skipped (it may not be ours).
 */
async function findOrphans(fs: FileSystem, instance: InstanceConfig): Promise<OrphanFolder[]> {
  let entries;
  try {
    entries = await fs.readdir(instance.archiveDir);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return []; // nothing archived yet
    throw err;
  }
  const rules = new Set(instance.rules.map((r) => r.name));
  const orphans: OrphanFolder[] = [];
  for (const entry of entries) {
    if (entry.kind !== 'dir' || entry.name.startsWith('.') || rules.has(entry.name)) continue;
    const dir = join(instance.archiveDir, entry.name);
    const scan = await scanFolder(fs, dir).catch(() => undefined);
    if (!scan || scan.events.length === 0) continue;
    const orphan: OrphanFolder = { folder: entry.name, dir, events: 0, bytes: 0 };
    const inodes = new Map<string, number>();
    for (const event of scan.events) {
      if (event.kinds.includes('rdb')) {
        orphan.events += 1;
        orphan.newest ??= event.ts; // most recently archived first
        orphan.oldest = event.ts;
      }
      for (const name of eventFileNames(event)) {
        const file = await statSize(fs, join(dir, name)).catch(() => undefined);
        if (file) inodes.set(file.key, file.size);
      }
    }
    for (const size of inodes.values()) orphan.bytes += size;
    orphans.push(orphan);
  }
  return orphans.sort((a, b) => (a.folder < b.folder ? -1 : a.folder > b.folder ? 1 : 0));
}

/**
 * Seconds since a snapshot was taken: since its source mtime, or since it was
 * archived when that is earlier (a source mtime in the future says nothing
 * about its age). Never negative.
 */
export function ageSeconds(ts: Timestamp, nowMs: number, archivedAt?: string): number {
  const archivedMs = archivedAt === undefined ? NaN : Date.parse(archivedAt);
  const takenMs = Number.isFinite(archivedMs) ? Math.min(timestampToMs(ts), archivedMs) : timestampToMs(ts);
  return Math.max(0, Math.floor((nowMs - takenMs) / 1000));
}

async function readArchiveRecord(fs: FileSystem, path: string): Promise<ArchiveRecord | undefined> {
  try {
    return parseArchiveRecord((await fs.readFile(path)).toString('utf8'));
  } catch {
    return undefined; // pruned meanwhile, or unreadable: the age falls back to the name
  }
}

/** "45s", "12m", "7h", "3d": coarse, for one-line summaries. */
export function formatAge(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 120 * 60) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 48 * 3600) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

/** A duration in ms as the config writes it: "2h", "90m", "45s". */
export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s % 86400 === 0) return `${s / 86400}d`;
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}
