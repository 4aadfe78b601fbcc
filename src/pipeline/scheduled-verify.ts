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
 * folder is one bad file, not one per folder).
 */
import type { InstanceConfig, VerifyConfig } from '../core/config.js';
import type { FileSystem } from '../core/fs.js';
import type { Log } from '../core/log.js';
import type { Timestamp } from '../core/timestamp.js';
import { FileChecker, emptyVerifyReport, scanArchive, verifyTargets, type VerifyTarget } from '../commands/catalog.js';
import { FUTURE_TOLERANCE_MS, sortNewestArchivedFirst } from './event-order.js';
import { errorReport } from './cycle.js';
import type { FolderEvent } from './retention.js';

/** What the state keeps of the last scheduled verification. */
export interface VerifyRecord {
  at: string;
  durationMs: number;
  sample: VerifyConfig['sample'];
  /** Distinct events (timestamps) checked. */
  eventsChecked: number;
  filesRead: number;
  bytesRead: number;
  /** The most recently archived event when it ran. */
  newest: Timestamp | null;
  /** Each bad file: its event, the rule folders that hold it, what is wrong. */
  bad: Array<{ ts: Timestamp; rules: string[]; problems: string[] }>;
  /** The run could not verify (a folder could not be read): nothing is known about the events it missed. */
  error?: string;
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

/** When the last run was, as ms; NaN when unknown. */
function lastRunMs(last: VerifyRecord | undefined): number {
  return last ? Date.parse(last.at) : NaN;
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
    if (lastMs > nowMs + FUTURE_TOLERANCE_MS) reason = `the last verification (${last!.at}) lies in the future: the clock moved back`;
    else if (nowMs - lastMs >= config.everyMs) reason = `the last verification was at ${last!.at}`;
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
    const checker = new FileChecker(deps.fs);
    await verifyTargets(deps.fs, deps.log, checker, plan.targets, report);
    return {
      at,
      durationMs: Date.now() - started,
      sample: config.sample,
      eventsChecked: plan.events.length,
      filesRead: checker.filesRead,
      bytesRead: checker.bytesRead,
      newest: plan.newest,
      bad: report.badCopies.map((b) => ({ ts: b.ts, rules: b.rules, problems: b.problems })),
    };
  } catch (err) {
    const message = errorReport(err).message;
    deps.log.error({ err: message }, 'scheduled verification failed');
    return { at, durationMs: Date.now() - started, sample: config.sample, eventsChecked: 0, filesRead: 0, bytesRead: 0, newest: last?.newest ?? null, bad: last?.bad ?? [], error: message };
  }
}

/** Parses the state's record defensively (the state file is not trusted). */
export function parseVerifyRecord(v: unknown): VerifyRecord | undefined {
  const o = v as VerifyRecord | null;
  if (!o || typeof o !== 'object' || typeof o.at !== 'string' || !Array.isArray(o.bad)) return undefined;
  const num = (n: unknown) => (typeof n === 'number' && Number.isFinite(n) ? n : 0);
  return {
    at: o.at,
    durationMs: num(o.durationMs),
    sample: o.sample === 'all' || o.sample === 'newest' || (typeof o.sample === 'number' && o.sample >= 1) ? o.sample : 'newest',
    eventsChecked: num(o.eventsChecked),
    filesRead: num(o.filesRead),
    bytesRead: num(o.bytesRead),
    newest: typeof o.newest === 'string' ? o.newest as Timestamp : null,
    bad: o.bad.filter((b) => !!b && typeof b.ts === 'string' && Array.isArray(b.rules) && Array.isArray(b.problems))
      .map((b) => ({ ts: b.ts, rules: b.rules.filter((r) => typeof r === 'string'), problems: b.problems.filter((p) => typeof p === 'string') })),
    ...(typeof o.error === 'string' ? { error: o.error } : {}),
  };
}

/** One line per bad file, for once's warnings, status and check. */
export function badEventText(b: VerifyRecord['bad'][number]): string {
  return `event ${b.ts} (${b.rules.join(', ')}) failed verification: ${b.problems.join('; ')}`;
}
