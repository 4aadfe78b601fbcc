/**
 * Retention, per rule folder.
 *
 *   scanFolder    one readdir -> events grouped by timestamp (stray names ignored)
 *   planRetention pure: (events, rule, timezone) -> keep/delete, a reason for each
 *   applyPlan     deletes companions first and the .rdb last, never the newest event
 *
 * A rule keeps the newest event of each period, for its `count` most recent
 * periods that have events (restic/borg semantics; "snapshot" = each event is
 * its own period, i.e. keep the last N).
 */
import { join } from 'node:path';
import type { Every, Rule } from './config.js';
import { describeEvery } from './config.js';
import { FsError } from './errors.js';
import { TEMP_PREFIX, errorCode, tempOwnerPid, type FileSystem } from './fs.js';
import { isProcessAlive } from './lock.js';
import { type EventFileKind, type Timestamp, eventFileName, isUtc, parseEventFileName, timestampToMs, zonedParts } from './timestamp.js';

export interface FolderEvent {
  ts: Timestamp;
  /** The kinds present in the folder; an event without 'rdb' is incomplete. */
  kinds: EventFileKind[];
}

export interface FolderScan {
  dir: string;
  /** Newest first. */
  events: FolderEvent[];
  /** Our temp files from an interrupted run. */
  temps: string[];
}

export interface Decision {
  ts: Timestamp;
  reason: string;
}

export interface RetentionPlan {
  keep: Decision[];
  delete: Decision[];
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** Timestamps sort lexically, so this orders events by the time in their names. */
const newestFirst = (a: { ts: Timestamp }, b: { ts: Timestamp }) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0);

function isoWeek(year: number, month: number, day: number): { isoYear: number; week: number } {
  const date = Date.UTC(year, month - 1, day);
  const dayOfWeek = (new Date(date).getUTCDay() + 6) % 7; // Monday = 0
  const thursday = new Date(date + (3 - dayOfWeek) * 86_400_000);
  const isoYear = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(isoYear, 0, 1)) / (7 * 86_400_000));
  return { isoYear, week };
}

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/**
 * The period an event falls in, as a label that is equal for events of the same
 * period. Calendar periods use wall-clock time in `timeZone`; the hour label
 * carries the UTC offset so the repeated hour at a DST fall-back stays two hours.
 */
export function periodKey(ts: Timestamp, every: Every, timeZone: string): string {
  const ms = timestampToMs(ts);
  if (every.kind === 'snapshot') return ts;
  if (every.kind === 'duration') {
    const start = Math.floor(ms / every.ms) * every.ms;
    return `${every.text} from ${new Date(start).toISOString().replace('.000Z', 'Z')}`;
  }
  if (every.unit !== 'week' && ts.charCodeAt(0) !== 48 && isUtc(timeZone)) {
    // In UTC the labels below are parts of the name itself (years >= 1000, which
    // are not zero-padded below): no date arithmetic per event of a big folder.
    switch (every.unit) {
      case 'hour':
        return `${ts.slice(0, 10)} ${ts.slice(11, 13)}:00 +00:00`;
      case 'day':
        return ts.slice(0, 10);
      case 'month':
        return ts.slice(0, 7);
      case 'year':
        return ts.slice(0, 4);
    }
  }
  const p = zonedParts(ms, timeZone);
  switch (every.unit) {
    case 'hour':
      return `${p.year}-${pad(p.month)}-${pad(p.day)} ${pad(p.hour)}:00 ${formatOffset(p.offsetMinutes)}`;
    case 'day':
      return `${p.year}-${pad(p.month)}-${pad(p.day)}`;
    case 'week': {
      const { isoYear, week } = isoWeek(p.year, p.month, p.day);
      return `${isoYear}-W${pad(week)}`;
    }
    case 'month':
      return `${p.year}-${pad(p.month)}`;
    case 'year':
      return String(p.year);
  }
}

/**
 * The pure retention planner. `protect` names an event that must be kept
 * whatever its timestamp (the one this run just archived: a source mtime in
 * the past must not have it pruned at once).
 */
export function planRetention(
  events: ReadonlyArray<FolderEvent>,
  rule: Pick<Rule, 'every' | 'count'>,
  timeZone: string,
  protect?: Timestamp,
): RetentionPlan {
  const plan: RetentionPlan = { keep: [], delete: [] };
  const complete = events.filter((e) => e.kinds.includes('rdb')).sort(newestFirst);
  const unit = describeEvery(rule.every);
  const periodsKept = new Map<string, Timestamp>();

  for (let index = 0; index < complete.length; index++) {
    const event = complete[index]!;
    const period = periodKey(event.ts, rule.every, timeZone);
    const keptForPeriod = periodsKept.get(period);
    if (index === 0) {
      periodsKept.set(period, event.ts);
      plan.keep.push({ ts: event.ts, reason: `newest event in the folder (${unit} ${period}, 1 of ${rule.count})` });
    } else if (keptForPeriod === undefined && periodsKept.size < rule.count) {
      periodsKept.set(period, event.ts);
      const label = rule.every.kind === 'snapshot' ? `snapshot ${periodsKept.size} of ${rule.count}` : `newest in ${unit} ${period} (${periodsKept.size} of ${rule.count})`;
      plan.keep.push({ ts: event.ts, reason: label });
    } else if (event.ts === protect) {
      plan.keep.push({ ts: event.ts, reason: 'archived by this run (kept whatever its timestamp)' });
    } else if (keptForPeriod !== undefined) {
      plan.delete.push({ ts: event.ts, reason: `${unit} ${period} already kept its newest event ${keptForPeriod}` });
    } else {
      plan.delete.push({
        ts: event.ts,
        reason: rule.every.kind === 'snapshot'
          ? `older than the ${rule.count} newest snapshots`
          : `older than the ${rule.count} most recent ${unit} periods that have events`,
      });
    }
  }
  const incomplete = events.filter((e) => !e.kinds.includes('rdb')).sort(newestFirst);
  for (const event of incomplete) {
    {
      plan.delete.push({ ts: event.ts, reason: `incomplete event (${event.kinds.join(', ')} without its .rdb): left by an interrupted run` });
    }
  }
  return plan;
}

/** One readdir; regular files with our names become events, everything else is ignored. */
export async function scanFolder(fs: FileSystem, dir: string): Promise<FolderScan> {
  const scan: FolderScan = { dir, events: [], temps: [] };
  let entries;
  try {
    const info = await fs.lstat(dir);
    if (info.kind !== 'dir') {
      throw new FsError('scan', dir, 'ENOTDIR', info.kind === 'symlink'
        ? 'rule folder is a symlink: refusing to follow it out of the archive'
        : 'rule folder is not a directory');
    }
    entries = await fs.readdir(dir);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return scan; // a rule that has never archived anything
    throw err;
  }
  const byTs = new Map<Timestamp, EventFileKind[]>();
  for (const entry of entries) {
    if (entry.kind !== 'file') continue; // symlinks, folders, sockets: never ours
    if (entry.name.startsWith(TEMP_PREFIX)) {
      // Left by a killed run; a live process's temp (a concurrent lock attempt) is not ours.
      const pid = tempOwnerPid(entry.name);
      // A name with our prefix but not our pattern (no pid) was not made by us: a stray, left alone.
      if (pid !== undefined && (pid === process.pid || !isProcessAlive(pid))) scan.temps.push(entry.name);
      continue;
    }
    const parsed = parseEventFileName(entry.name);
    if (!parsed) continue;
    const kinds = byTs.get(parsed.ts);
    if (kinds) kinds.push(parsed.kind);
    else byTs.set(parsed.ts, [parsed.kind]);
  }
  // Newest first: timestamps sort lexically, and the default sort compares strings natively.
  scan.events = [...byTs.keys()].sort().reverse().map((ts) => ({ ts, kinds: byTs.get(ts)! }));
  return scan;
}

/** Deletion order inside an event: companions first, the .rdb last, so a crash leaves an event that still counts. */
const DELETE_ORDER: EventFileKind[] = ['nodes', 'sha256', 'rdb'];

export interface ApplyResult {
  deleted: Timestamp[];
  /** Files we would have deleted but left alone (not a regular file of ours). */
  skipped: string[];
  tempsRemoved: string[];
}

async function deleteOwnedFile(fs: FileSystem, path: string, uid: number | undefined, skipped: string[]): Promise<void> {
  let info;
  try {
    info = await fs.lstat(path);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return;
    throw err;
  }
  // Only ever unlink a regular file that this user owns: a symlink or someone
  // else's file that happens to carry our name is not ours to remove.
  if (info.kind !== 'file' || (uid !== undefined && info.uid !== uid)) {
    skipped.push(path);
    return;
  }
  try {
    await fs.unlink(path);
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
  }
}

/**
 * Runs `work` over items, at most `width` at a time. After a failure no new
 * item is started, and the first error is thrown only once every started item
 * has settled: the caller releases the lock next, and a delete still running
 * after that would race the next run (seen as ENOENT in a test).
 */
export async function runPool<T>(items: readonly T[], width: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  // The workers never reject, so this waits for all of them.
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  if (failure) throw failure.err;
}

/**
 * Executes a plan on a scanned folder. Also removes temp files of an
 * interrupted run: the caller holds the lock, so no writer can own them.
 */
export async function applyPlan(fs: FileSystem, scan: FolderScan, plan: RetentionPlan): Promise<ApplyResult> {
  const newest = scan.events.find((e) => e.kinds.includes('rdb'));
  if (newest && plan.delete.some((d) => d.ts === newest.ts)) {
    throw new Error(`retention refused: the plan would delete the newest event ${newest.ts} in ${scan.dir}`);
  }
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  const result: ApplyResult = { deleted: [], skipped: [], tempsRemoved: [] };
  const deleting = new Set(plan.delete.map((d) => d.ts));
  const kindsByTs = new Map<Timestamp, EventFileKind[]>();
  for (const e of scan.events) if (deleting.has(e.ts)) kindsByTs.set(e.ts, e.kinds);
  if (fs.unlinkOwnedFiles) {
    // Bulk path (OSFS): the same per-file check, without a thread hand-off per call.
    const paths: string[] = [];
    for (const decision of plan.delete) {
      const kinds = kindsByTs.get(decision.ts) ?? [];
      for (const kind of DELETE_ORDER) if (kinds.includes(kind)) paths.push(join(scan.dir, eventFileName(kind, decision.ts)));
    }
    for (const path of await fs.unlinkOwnedFiles(paths, uid)) result.skipped.push(path);
    for (const decision of plan.delete) result.deleted.push(decision.ts);
  } else {
    await runPool(plan.delete, 16, async (decision) => {
      const kinds = kindsByTs.get(decision.ts) ?? [];
      for (const kind of DELETE_ORDER) {
        if (kinds.includes(kind)) await deleteOwnedFile(fs, join(scan.dir, eventFileName(kind, decision.ts)), uid, result.skipped);
      }
      result.deleted.push(decision.ts);
    });
  }
  await runPool(scan.temps, 16, async (name) => {
    await deleteOwnedFile(fs, join(scan.dir, name), uid, result.skipped);
    result.tempsRemoved.push(name);
  });
  if (result.deleted.length > 0 || result.tempsRemoved.length > 0) await fs.syncDir(scan.dir);
  return result;
}
