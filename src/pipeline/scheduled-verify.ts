/**
 * Scheduled verification (`verify: { every, sample }`): `once` and each
 * daemon tick re-read archived events when it is due, the same checks as
 * `rdb-archiver verify` (sha256 against the sidecar, then the RDB check of
 * src/rdb/validate.ts: CRC-64 and the structure), and keep the result in the
 * state, where `check`, `status` and the metrics read it.
 *
 *   planVerify     pure: (events, last result, config, clock) -> due? which events?
 *   runScheduledVerify  the executor: scan, plan, read (each inode once), record
 *
 * Bad events are kept once per file (an event hard-linked into every rule
 * folder is one bad file, not one per folder), and stay in the record until
 * a verification re-reads that copy or the event leaves the archive
 * (mergeBad): a `sample: newest` run must not forget a bad older event.
 * A manual `rdb-archiver verify` records into the same fields (trigger
 * 'verify'), without moving the schedule.
 */
import type { InstanceConfig, VerifyConfig } from '../core/config.js';
import type { FileSystem } from '../core/fs.js';
import type { Log } from '../core/log.js';
import type { Timestamp } from '../core/timestamp.js';
import { FileChecker, emptyVerifyReport, scanArchive, verifyTargets, type VerifyTarget } from '../commands/catalog.js';
import { FUTURE_TOLERANCE_MS, sortNewestArchivedFirst } from './event-order.js';
import { errorReport } from './cycle.js';
import type { FolderEvent } from './retention.js';

/**
 * What the state keeps of the last verification: scheduled (`verify:` in the
 * config) or run by hand (`rdb-archiver verify` with a config).
 */
export interface VerifyRecord {
  at: string;
  /** Who ran it: the schedule (once, a daemon tick) or a person (`rdb-archiver verify`). Absent in states of older versions: the schedule. */
  trigger?: VerifyTrigger;
  /**
   * When the schedule last verified: what makes the next scheduled run due.
   * A manual verify keeps the schedule's time (it may have checked one event only).
   */
  scheduledAt?: string;
  /** A manual verify limited to one event or rule folder: which (e.g. "rule a", "event 2025-…"). */
  scope?: string;
  durationMs: number;
  sample: VerifyConfig['sample'];
  /** Distinct events (timestamps) checked. */
  eventsChecked: number;
  filesRead: number;
  bytesRead: number;
  /** The most recently archived event when it ran. */
  newest: Timestamp | null;
  /**
   * Each bad file: its event, the rule folders that hold it, what is wrong,
   * and when it was found (`at`: this run, or an earlier one whose finding
   * still stands because no verification has re-read that copy since).
   */
  bad: BadRecord[];
  /** The run could not verify (a folder could not be read): nothing is known about the events it missed. */
  error?: string;
}

export type VerifyTrigger = 'schedule' | 'verify';

export interface BadRecord {
  ts: Timestamp;
  rules: string[];
  problems: string[];
  /** When it was found bad (absent in states of older versions: the record's `at`). */
  foundAt?: string;
}

export interface VerifyPlan {
  due: boolean;
  /** Why (not) now, for the log. */
  reason: string;
  /** The event copies to read (FileChecker reads each inode once). */
  targets: VerifyTarget[];
  newest: Timestamp | null;
  /** Distinct events selected. */
  events: Timestamp[];
}

/** When the schedule last verified; a record of an older version (no trigger) was the schedule's. */
export function lastScheduledAt(last: VerifyRecord | undefined): string | undefined {
  if (!last) return undefined;
  return last.trigger === 'verify' ? last.scheduledAt : (last.scheduledAt ?? last.at);
}

/** When the schedule last ran, as ms; NaN when unknown. */
function lastRunMs(last: VerifyRecord | undefined): number {
  const at = lastScheduledAt(last);
  return at ? Date.parse(at) : NaN;
}

/**
 * The bad files after a verification (pure): what this one found, plus the
 * earlier findings it did not re-read, so that a bad older event is not
 * forgotten because the sample is `newest`, or a manual verify looked at one
 * event. An earlier finding is dropped for each rule folder whose copy was
 * read again now (it is in `fresh` if still bad), and for each folder that
 * was scanned and no longer holds the event (pruned or removed).
 */
export function mergeBad(
  previous: readonly BadRecord[],
  fresh: readonly BadRecord[],
  checked: ReadonlySet<string>,
  scannedRules: ReadonlySet<string>,
  present: ReadonlySet<string>,
  previousAt: string | undefined,
): BadRecord[] {
  const kept: BadRecord[] = [];
  for (const b of previous) {
    const rules = b.rules.filter((r) => !checked.has(pairKey(r, b.ts)) && (!scannedRules.has(r) || present.has(pairKey(r, b.ts))));
    const foundAt = b.foundAt ?? previousAt;
    if (rules.length > 0) kept.push({ ...b, rules, ...(foundAt !== undefined ? { foundAt } : {}) });
  }
  return [...fresh, ...kept];
}

/** The key of an event in a rule folder, for mergeBad's sets. */
export function pairKey(rule: string, ts: string): string {
  return `${rule}\u0000${ts}`;
}

/**
 * Whether a verification is due, and of which events: the newest, all, or
 * the N most recently archived (archive order, event-order.ts). A last run
 * "in the future" (our clock stepped back) makes it due: a wrong clock must
 * not stop verification for as long as it is wrong.
 */
export function planVerify(
  folders: ReadonlyArray<{ rule: string; dir: string; events: readonly FolderEvent[] }>,
  last: VerifyRecord | undefined,
  config: VerifyConfig,
  nowMs: number,
): VerifyPlan {
  const lastMs = lastRunMs(last);
  let due = true;
  let reason = 'never verified';
  if (Number.isFinite(lastMs)) {
    const at = lastScheduledAt(last)!;
    if (lastMs > nowMs + FUTURE_TOLERANCE_MS) reason = `the last verification (${at}) lies in the future: the clock moved back`;
    else if (nowMs - lastMs >= config.everyMs) reason = `the last verification was at ${at}`;
    else {
      due = false;
      reason = `next verification after ${new Date(lastMs + config.everyMs).toISOString()}`;
    }
  }
  const complete = folders.flatMap((f) => f.events.filter((e) => e.kinds.includes('rdb')).map((event) => ({ ...event, rule: f.rule, dir: f.dir, event })));
  const order = [...new Set(sortNewestArchivedFirst(complete).map((e) => e.ts))];
  const count = config.sample === 'all' ? order.length : config.sample === 'newest' ? 1 : config.sample;
  const events = order.slice(0, count);
  const chosen = new Set(events);
  const targets = due ? complete.filter((e) => chosen.has(e.ts)).map(({ rule, dir, event }) => ({ rule, dir, event })) : [];
  return { due, reason, targets, newest: order[0] ?? null, events };
}

export interface ScheduledVerifyDeps {
  fs: FileSystem;
  log: Log;
}

/**
 * Runs the scheduled verification when due. Never throws: a failure is the
 * record's `error`. Returns undefined when it was not due.
 */
export async function runScheduledVerify(deps: ScheduledVerifyDeps, instance: InstanceConfig, last: VerifyRecord | undefined, nowMs = Date.now()): Promise<VerifyRecord | undefined> {
  const config = instance.verify;
  if (!config) return undefined;
  const started = Date.now();
  const at = new Date(nowMs).toISOString();
  try {
    const { scanned } = await scanArchive(deps.fs, instance, undefined);
    const plan = planVerify(scanned, last, config, nowMs);
    if (!plan.due) {
      deps.log.debug({ reason: plan.reason }, 'scheduled verification not due');
      return undefined;
    }
    deps.log.info({ reason: plan.reason, sample: config.sample, events: plan.events.length }, 'scheduled verification');
    const report = emptyVerifyReport(instance.name);
    const checker = new FileChecker(deps.fs, instance.validation);
    await verifyTargets(deps.fs, deps.log, checker, plan.targets, report);
    const present = new Set(scanned.flatMap((f) => f.events.map((e) => pairKey(f.rule, e.ts))));
    return {
      at,
      trigger: 'schedule',
      scheduledAt: at,
      durationMs: Date.now() - started,
      sample: config.sample,
      eventsChecked: plan.events.length,
      filesRead: checker.filesRead,
      bytesRead: checker.bytesRead,
      newest: plan.newest,
      bad: mergeBad(last?.bad ?? [], report.badCopies.map((b) => ({ ts: b.ts, rules: b.rules, problems: b.problems, foundAt: at })),
        new Set(plan.targets.map((t) => pairKey(t.rule, t.event.ts))), new Set(scanned.map((f) => f.rule)), present, last?.at),
    };
  } catch (err) {
    const message = errorReport(err).message;
    deps.log.error({ err: message }, 'scheduled verification failed');
    return { at, trigger: 'schedule', scheduledAt: at, durationMs: Date.now() - started, sample: config.sample, eventsChecked: 0, filesRead: 0, bytesRead: 0, newest: last?.newest ?? null, bad: last?.bad ?? [], error: message };
  }
}

/**
 * The record of a manual `rdb-archiver verify` (pure): its findings merged
 * with the last record's (mergeBad), the schedule's time kept.
 */
export function manualVerifyRecord(
  last: VerifyRecord | undefined,
  run: {
    at: string; durationMs: number; scope?: string; events: number; filesRead: number; bytesRead: number; newest: Timestamp | null;
    fresh: ReadonlyArray<{ ts: Timestamp; rules: string[]; problems: string[] }>;
    checked: ReadonlySet<string>; scannedRules: ReadonlySet<string>; present: ReadonlySet<string>;
  },
): VerifyRecord {
  const scheduledAt = lastScheduledAt(last);
  return {
    at: run.at,
    trigger: 'verify',
    ...(scheduledAt ? { scheduledAt } : {}),
    ...(run.scope ? { scope: run.scope } : {}),
    durationMs: run.durationMs,
    sample: run.scope && run.events >= 1 ? run.events : 'all',
    eventsChecked: run.events,
    filesRead: run.filesRead,
    bytesRead: run.bytesRead,
    newest: run.newest,
    bad: mergeBad(last?.bad ?? [], run.fresh.map((b) => ({ ts: b.ts, rules: [...b.rules], problems: [...b.problems], foundAt: run.at })), run.checked, run.scannedRules, run.present, last?.at),
  };
}

/** Parses the state's record defensively (the state file is not trusted). */
export function parseVerifyRecord(v: unknown): VerifyRecord | undefined {
  const o = v as VerifyRecord | null;
  if (!o || typeof o !== 'object' || typeof o.at !== 'string' || !Array.isArray(o.bad)) return undefined;
  const num = (n: unknown) => (typeof n === 'number' && Number.isFinite(n) ? n : 0);
  return {
    at: o.at,
    ...(o.trigger === 'schedule' || o.trigger === 'verify' ? { trigger: o.trigger } : {}),
    ...(typeof o.scheduledAt === 'string' ? { scheduledAt: o.scheduledAt } : {}),
    ...(typeof o.scope === 'string' ? { scope: o.scope } : {}),
    durationMs: num(o.durationMs),
    sample: o.sample === 'all' || o.sample === 'newest' || (typeof o.sample === 'number' && o.sample >= 1) ? o.sample : 'newest',
    eventsChecked: num(o.eventsChecked),
    filesRead: num(o.filesRead),
    bytesRead: num(o.bytesRead),
    newest: typeof o.newest === 'string' ? o.newest as Timestamp : null,
    bad: o.bad.filter((b) => !!b && typeof b.ts === 'string' && Array.isArray(b.rules) && Array.isArray(b.problems))
      .map((b) => ({
        ts: b.ts, rules: b.rules.filter((r) => typeof r === 'string'), problems: b.problems.filter((p) => typeof p === 'string'),
        ...(typeof b.foundAt === 'string' ? { foundAt: b.foundAt } : {}),
      })),
    ...(typeof o.error === 'string' ? { error: o.error } : {}),
  };
}

/** One line per bad file, for once's warnings, status and check. */
export function badEventText(b: VerifyRecord['bad'][number]): string {
  return `event ${b.ts} (${b.rules.join(', ')}) failed verification: ${b.problems.join('; ')}`;
}
