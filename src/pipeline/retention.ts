/**
 * Retention, per rule folder.
 *
 *   scanFolder    one readdir -> events grouped by timestamp (stray names ignored),
 *                 most recently archived first (event-order.ts)
 *   planRetention pure: (events, rule, timezone, now) -> keep/delete, a reason for each
 *   applyPlan     deletes companions first and the .rdb last, never the newest event
 *
 * A rule keeps the most recently archived event of each period, for its
 * `count` most recent periods that have events (restic/borg semantics;
 * "snapshot" = each event is its own period, i.e. keep the last N archived).
 *
 * The source's clock is not trusted:
 *  - an event named in the future (beyond FUTURE_TOLERANCE_MS) is placed in
 *    the period of the next event archived after it (or now, when it is the
 *    newest): it rotates out like any other, never stays "the newest" forever;
 *  - the RECENT_PROTECTED most recently archived events are never deleted
 *    because their names rank below older content (a clock stepped back);
 *  - the most recently archived event is always kept.
 * The plan needs only file names: no file is read per event.
 */
import { join } from 'node:path';
import type { Every, Rule } from '../core/config.js';
import { describeEvery } from '../core/config.js';
import { FsError } from '../core/errors.js';
import { TEMP_PREFIX, errorCode, tempOwnerPid, type FileSystem } from '../core/fs.js';
import { isProcessAlive } from './lock.js';
import { userName } from '../core/trust.js';
import { FUTURE_TOLERANCE_MS, RECENT_PROTECTED, sortNewestArchivedFirst } from './event-order.js';
import { type EventFileKind, type Timestamp, eventFileName, isUtc, parseEventFileName, timestampFromMs, timestampToMs, zonedParts } from '../core/timestamp.js';

export interface FolderEvent {
  ts: Timestamp;
  /** The kinds present in the folder; an event without 'rdb' is incomplete. */
  kinds: EventFileKind[];
  /** The archive sequence number (the highest, if several records exist); undefined without a record. */
  seq?: number;
  /** Every archive record's sequence number in this folder (normally one). */
  seqs?: number[];
}

/** The names of an event's files in a folder, in deletion order: companions first, the .rdb last. */
export function eventFileNames(event: FolderEvent): string[] {
  const names: string[] = [];
  for (const kind of DELETE_ORDER) {
    if (!event.kinds.includes(kind)) continue;
    if (kind === 'meta') for (const seq of event.seqs ?? []) names.push(eventFileName('meta', event.ts, seq));
    else names.push(eventFileName(kind, event.ts));
  }
  return names;
}

export interface FolderScan {
  dir: string;
  /** Most recently archived first (event-order.ts). */
  events: FolderEvent[];
  /** Our temp files from an interrupted run. */
  temps: string[];
  /**
   * Files named like events but owned by another user than the folder's
   * owner (the archive's user): planted, or left by a run as another user.
   * Not events: never counted, listed, verified, restored or deleted.
   */
  foreign?: string[];
  /** The folder's owner, whose files are events. */
  ownerUid?: number;
  /** The folder's mode when its group or others may write it (they could plant files): a warning. */
  openMode?: number;
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
  if (every.kind === 'snapshot') return ts;
  if (every.kind === 'duration') {
    const ms = timestampToMs(ts);
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
  const p = zonedParts(timestampToMs(ts), timeZone);
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

export interface PlanOptions {
  /** Events kept whatever their timestamps, with the reason shown in the plan (the source's current content...). */
  protect?: ReadonlyMap<Timestamp, string>;
  /** Our clock, to tell an event named in the future; default Date.now(). */
  nowMs?: number;
}

/**
 * The time retention files an event under: its name, unless the name lies in
 * the future; then the time of the next event archived after it (or now, for
 * the newest). `events` are most recently archived first.
 */
export function effectiveTimes(events: ReadonlyArray<{ ts: Timestamp }>, nowMs: number): Array<{ ms: number; moved: boolean }> {
  const times: Array<{ ms: number; moved: boolean }> = [];
  for (let i = 0; i < events.length; i++) {
    const named = timestampToMs(events[i]!.ts);
    times.push({ ms: effectiveTime(named, i === 0 ? undefined : times[i - 1]!.ms, nowMs), moved: isFuture(named, nowMs) });
  }
  return times;
}

const isFuture = (namedMs: number, nowMs: number): boolean => namedMs > nowMs + FUTURE_TOLERANCE_MS;

/** One event's time for effectiveTimes: `afterMs` is that of the event archived just after it (none for the newest). */
function effectiveTime(namedMs: number, afterMs: number | undefined, nowMs: number): number {
  return isFuture(namedMs, nowMs) ? Math.min(afterMs ?? nowMs, nowMs) : namedMs;
}

/**
 * The pure retention planner: a decision with a reason for every event.
 * Linear in the number of events when the names agree with the archive order
 * (a sane clock): one pass to find each period's event, a check that the
 * periods came in time order (a sort only when they did not), one pass to
 * decide. Per event it keeps numbers in typed arrays, not objects: at 100k
 * events the allocations, not the arithmetic, were the cost.
 */
export function planRetention(
  events: ReadonlyArray<FolderEvent>,
  rule: Pick<Rule, 'every' | 'count'>,
  timeZone: string,
  options: PlanOptions = {},
): RetentionPlan {
  const plan: RetentionPlan = { keep: [], delete: [] };
  const nowMs = options.nowMs ?? Date.now();
  const complete = sortNewestArchivedFirst(events.filter((e) => e.kinds.includes('rdb')));
  const n = complete.length;
  const unit = describeEvery(rule.every);
  const snapshot = rule.every.kind === 'snapshot';

  // Each period's event is the one archived last in it (the first met in archive order).
  // firstOf[i]: the index of the event kept for event i's period; periods: those indexes, in order met.
  const firstOf = new Int32Array(n);
  const periodOf: string[] = new Array<string>(n);
  const periods: number[] = [];
  const times = new Float64Array(n);
  const byPeriod = new Map<string, number>();
  for (let index = 0; index < n; index++) {
    const ts = complete[index]!.ts;
    // The time retention files the event under (effectiveTimes): its name, unless that lies in the future.
    const named = timestampToMs(ts);
    const moved = isFuture(named, nowMs);
    const ms = effectiveTime(named, index === 0 ? undefined : times[index - 1], nowMs);
    times[index] = ms;
    // A snapshot rule's period is the event itself, wherever its name lies.
    const period = periodKey(moved && !snapshot ? timestampFromMs(ms) : ts, rule.every, timeZone);
    periodOf[index] = period;
    const first = byPeriod.get(period);
    if (first === undefined) {
      byPeriod.set(period, index);
      periods.push(index);
      firstOf[index] = index;
    } else {
      firstOf[index] = first;
    }
  }
  // The `count` most recent periods: by time for calendar rules, by archive order for "snapshot".
  const byTime = (a: number, b: number) => times[b]! - times[a]! || a - b;
  // Met in archive order, the periods are usually in time order already (a sane clock): check before sorting 100k.
  if (!snapshot) {
    for (let i = 1; i < periods.length; i++) {
      if (byTime(periods[i - 1]!, periods[i]!) > 0) {
        periods.sort(byTime);
        break;
      }
    }
  }
  // rankOf[i]: the rank of the period whose event is i (only set where firstOf[i] === i).
  const rankOf = new Int32Array(n);
  for (let rank = 0; rank < periods.length; rank++) rankOf[periods[rank]!] = rank;

  // The oldest-archived event kept for its period: a recent event deleted while it stays is lost to its timestamp.
  let oldestKeptIndex = -1;
  for (let rank = 0; rank < Math.min(rule.count, periods.length); rank++) oldestKeptIndex = Math.max(oldestKeptIndex, periods[rank]!);

  for (let index = 0; index < n; index++) {
    const ts = complete[index]!.ts;
    const period = periodOf[index]!;
    const keptIndex = firstOf[index]!;
    const rank = rankOf[keptIndex]!;
    if (index === 0) {
      plan.keep.push({ ts, reason: `most recently archived event in the folder (${shownPeriod(snapshot, unit, period, rank, rule.count)})` });
    } else if (keptIndex === index && rank < rule.count) {
      plan.keep.push({ ts, reason: snapshot ? shownPeriod(snapshot, unit, period, rank, rule.count) : `newest in ${shownPeriod(snapshot, unit, period, rank, rule.count)}` });
    } else if (options.protect?.has(ts)) {
      plan.keep.push({ ts, reason: options.protect.get(ts)! });
    } else if (keptIndex !== index) {
      plan.delete.push({ ts, reason: `${unit} ${period} already kept ${complete[keptIndex]!.ts}, archived after it` });
    } else if (index < RECENT_PROTECTED && index < oldestKeptIndex) {
      plan.keep.push({
        ts,
        reason: `one of the ${RECENT_PROTECTED} most recently archived events, kept whatever its timestamp (its name ranks below events archived before it: the source clock stepped back?)`,
      });
    } else {
      plan.delete.push({
        ts,
        reason: snapshot
          ? `older than the ${rule.count} most recently archived snapshots`
          : `older than the ${rule.count} most recent ${unit} periods that have events`,
      });
    }
  }
  const incomplete = events.filter((e) => !e.kinds.includes('rdb')).sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0));
  for (const event of incomplete) {
    plan.delete.push({ ts: event.ts, reason: `incomplete event (${event.kinds.join(', ')} without its .rdb): left by an interrupted run` });
  }
  return plan;
}

/** How a decision names an event's period and its rank. */
function shownPeriod(snapshot: boolean, unit: string, period: string, rank: number, count: number): string {
  return snapshot ? `snapshot ${rank + 1} of ${count}` : `${unit} ${period}, ${rank + 1} of ${count}`;
}

/** One readdir (with file types); regular files with our names become events, everything else is ignored. */
export async function scanFolder(fs: FileSystem, dir: string): Promise<FolderScan> {
  const scan: FolderScan = { dir, events: [], temps: [] };
  let names: string[];
  try {
    const info = await fs.lstat(dir);
    scan.ownerUid = info.uid;
    if ((info.mode & 0o022) !== 0) scan.openMode = info.mode & 0o7777;
    if (info.kind !== 'dir') {
      throw new FsError('scan', dir, 'ENOTDIR', info.kind === 'symlink'
        ? 'rule folder is a symlink: refusing to follow it out of the archive'
        : 'rule folder is not a directory');
    }
    // Regular files only: symlinks, folders, sockets are never ours.
    names = fs.fileNames ? await fs.fileNames(dir) : (await fs.readdir(dir)).filter((e) => e.kind === 'file').map((e) => e.name);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return scan; // a rule that has never archived anything
    throw err;
  }
  const byTs = new Map<Timestamp, FolderEvent>();
  for (const name of names) {
    if (name.startsWith(TEMP_PREFIX)) {
      // Left by a killed run; a live process's temp (a concurrent lock attempt) is not ours.
      const pid = tempOwnerPid(name);
      // A name with our prefix but not our pattern (no pid) was not made by us: a stray, left alone.
      if (pid !== undefined && (pid === process.pid || !isProcessAlive(pid))) scan.temps.push(name);
      continue;
    }
    const parsed = parseEventFileName(name);
    if (!parsed) continue;
    let event = byTs.get(parsed.ts);
    if (!event) {
      event = { ts: parsed.ts, kinds: [] };
      byTs.set(parsed.ts, event);
    }
    if (!event.kinds.includes(parsed.kind)) event.kinds.push(parsed.kind);
    if (parsed.seq !== undefined) {
      (event.seqs ??= []).push(parsed.seq);
      if (event.seq === undefined || parsed.seq > event.seq) event.seq = parsed.seq;
    }
  }
  await dropForeignEvents(fs, scan, byTs);
  // Names newest first (the default sort compares strings natively), then archive order.
  scan.events = sortNewestArchivedFirst([...byTs.keys()].sort().reverse().map((ts) => byTs.get(ts)!));
  return scan;
}

/**
 * Ownership, in this one place for retention and the catalog: an event is
 * ours when its .rdb is owned by the folder's owner. One lstat per .rdb (the
 * file that makes an event); companions are checked only where no .rdb of
 * ours vouches for them (rare). Through the bulk ownersOf() on OSFS: a thread
 * hand-off per file would cost seconds at 100k events.
 */
async function dropForeignEvents(fs: FileSystem, scan: FolderScan, byTs: Map<Timestamp, FolderEvent>): Promise<void> {
  const owner = scan.ownerUid;
  if (owner === undefined || byTs.size === 0) return;
  const fileOf = (kind: EventFileKind, ts: Timestamp): string[] => {
    const event = byTs.get(ts)!;
    return kind === 'meta' ? (event.seqs ?? []).map((seq) => eventFileName('meta', ts, seq)) : [eventFileName(kind, ts)];
  };
  // One pass: the .rdb paths to lstat, and the events without one (suspects whatever the owners).
  // The paths as join(dir, name) would make them, without normalizing 100k paths one by one.
  const prefix = join(scan.dir, '/');
  const withRdb: FolderEvent[] = [];
  const rdbPaths: string[] = [];
  const suspects: FolderEvent[] = [];
  for (const event of byTs.values()) {
    if (event.kinds.includes('rdb')) {
      withRdb.push(event);
      rdbPaths.push(prefix + eventFileName('rdb', event.ts));
    } else {
      suspects.push(event);
    }
  }
  const owners = await ownersOf(fs, rdbPaths);
  for (let i = 0; i < owners.length; i++) {
    if (owners[i] !== undefined && owners[i] !== owner) suspects.push(withRdb[i]!);
  }
  if (suspects.length === 0) return;
  const foreign: string[] = [];
  for (const event of suspects) {
    const names = event.kinds.flatMap((kind) => fileOf(kind, event.ts).map((name) => ({ kind, name })));
    const uids = await ownersOf(fs, names.map((n) => join(scan.dir, n.name)));
    const kept = new Set<EventFileKind>();
    names.forEach((n, i) => {
      if (uids[i] === undefined) return;
      if (uids[i] === owner) kept.add(n.kind);
      else foreign.push(n.name);
    });
    if (kept.size === 0) byTs.delete(event.ts);
    else event.kinds = event.kinds.filter((k) => kept.has(k));
  }
  scan.foreign = foreign.sort();
}

/**
 * What a scan found that someone must look at, one line each: files of
 * another user (not events), and a folder others may write (they could plant
 * files). The same words in once, prune, list, verify and status.
 */
export function scanWarnings(scan: FolderScan): string[] {
  const out: string[] = [];
  const foreign = scan.foreign ?? [];
  if (foreign.length > 0) {
    const shown = foreign.slice(0, 3).join(', ') + (foreign.length > 3 ? `, … (${foreign.length - 3} more)` : '');
    out.push(`rule folder ${scan.dir} holds ${foreign.length} foreign file${foreign.length === 1 ? '' : 's'} (named like events, not owned by ${userName(scan.ownerUid!)}, the folder's owner): ` +
      `not events, so never counted, listed, verified, restored or deleted; inspect and remove them: ${shown}`);
  }
  if (scan.openMode !== undefined) {
    out.push(`rule folder ${scan.dir} is writable by its group or by others (mode 0${scan.openMode.toString(8)}): another user can plant files in it; run chmod go-w ${scan.dir} (archive.dir_mode)`);
  }
  return out;
}

/** The owner uid of each path (undefined: gone since the readdir). */
async function ownersOf(fs: FileSystem, paths: readonly string[]): Promise<Array<number | undefined>> {
  if (fs.ownersOf) return fs.ownersOf(paths);
  const out: Array<number | undefined> = [];
  for (const path of paths) {
    try {
      out.push((await fs.lstat(path)).uid);
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
      out.push(undefined);
    }
  }
  return out;
}

/** Deletion order inside an event: companions first, the .rdb last, so a crash leaves an event that still counts. */
const DELETE_ORDER: EventFileKind[] = ['nodes', 'sha256', 'meta', 'rdb'];

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
  const eventsByTs = new Map<Timestamp, FolderEvent>();
  for (const e of scan.events) if (deleting.has(e.ts)) eventsByTs.set(e.ts, e);
  const namesOf = (ts: Timestamp) => {
    const event = eventsByTs.get(ts);
    return event ? eventFileNames(event) : [];
  };
  if (fs.unlinkOwnedFiles) {
    // Bulk path (OSFS): the same per-file check, without a thread hand-off per call.
    // The paths as join(dir, name) would make them, without normalizing each (200k at a bulk prune of 100k events).
    const prefix = join(scan.dir, '/');
    const paths: string[] = [];
    for (const decision of plan.delete) for (const name of namesOf(decision.ts)) paths.push(prefix + name);
    for (const path of await fs.unlinkOwnedFiles(paths, uid)) result.skipped.push(path);
    for (const decision of plan.delete) result.deleted.push(decision.ts);
  } else {
    await runPool(plan.delete, 16, async (decision) => {
      for (const name of namesOf(decision.ts)) await deleteOwnedFile(fs, join(scan.dir, name), uid, result.skipped);
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
