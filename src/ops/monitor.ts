/**
 * Monitoring commands: `status` (what each instance looks like now) and
 * `check` (a Nagios/Icinga/Sensu plugin: one line, perf data, exit 0-3).
 *
 * Both only read (inspect.ts): no lock, no writes, so they can run as
 * another user with read access, at any time, next to a running archiver.
 */
import type { CopyMethod } from '../pipeline/copy-methods.js';
import type { Command } from 'commander';
import { parseDuration, type InstanceConfig, type MonitorConfig } from '../core/config.js';
import { contextFor, formatBytes, print, printResults } from '../core/context.js';
import { ArchiverError, ExitCode } from '../core/errors.js';
import { clockJumpText } from '../pipeline/cycle.js';
import { FUTURE_TOLERANCE_MS, RECENT_PROTECTED } from '../pipeline/event-order.js';
import { ageSeconds, formatAge, formatDuration, inspectInstance, type InstanceFacts } from './inspect.js';
import { ruleErrorsOf, type ClockJump, type RuleErrorRecord } from '../pipeline/state.js';
import { timestampToIso } from '../core/timestamp.js';
import type { FoundRecord } from '../pipeline/failure-record.js';
import { hookFailing } from '../pipeline/state.js';
import { sameFilesystemWarning } from '../pipeline/archive-root.js';
import { remoteProblems, remoteStatus, remoteStatusLines, type RemoteStatus } from '../offsite/facts.js';
import { lastScheduledAt } from '../pipeline/scheduled-verify.js';
import { drillText, type DrillRecord } from './drill.js';

// ---------------------------------------------------------------------------
// check

/** Nagios plugin exit codes. */
export const Nagios = { OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3 } as const;
export type NagiosState = (typeof Nagios)[keyof typeof Nagios];
const STATE_NAMES: Record<NagiosState, string> = { 0: 'OK', 1: 'WARNING', 2: 'CRITICAL', 3: 'UNKNOWN' };

/**
 * Which state wins when several apply (problems of one instance, or several
 * instances): CRITICAL, then UNKNOWN, then WARNING, then OK. A known-bad
 * finding is never hidden behind "could not tell".
 */
const RANK: Record<NagiosState, number> = { 0: 0, 1: 1, 3: 2, 2: 3 };
export function worstState(states: NagiosState[]): NagiosState {
  return states.reduce<NagiosState>((worst, s) => (RANK[s] > RANK[worst] ? s : worst), Nagios.OK);
}

export interface Problem {
  state: NagiosState;
  text: string;
}

export interface InstanceCheck {
  instance: string;
  state: NagiosState;
  status: string;
  problems: Problem[];
  /** What an OK line says about this instance. */
  summary: string;
  ageSeconds: number | null;
  warnAgeSeconds: number;
  critAgeSeconds: number;
  events: number;
  archiveBytes: number;
  freeBytes: number | null;
  /** Orphan rule folders (see inspect.ts findOrphans) and their bytes. */
  orphans: number;
  orphanBytes: number;
  /** Seconds the run lock has been held (0 when free). */
  lockAgeSeconds: number;
  /** The recovery point lag now: the pending source's wait, else the last new event's lag; null when unknown. */
  lagSeconds: number | null;
  /** monitor.max_lag in seconds; null when not set. */
  maxLagSeconds: number | null;
}

/** The check's verdict for one instance: a pure function of what inspect found, the thresholds and the clock. */
export function evaluateInstance(facts: InstanceFacts, thresholds: MonitorConfig, nowMs: number): InstanceCheck {
  const problems: Problem[] = [];
  const add = (state: NagiosState, text: string) => problems.push({ state, text });

  if (facts.stateError) add(Nagios.UNKNOWN, facts.stateError);
  // Lacking permission to look is "could not tell" (UNKNOWN), not a verdict on the archive; it names the user.
  const as = facts.user ? ` as user ${facts.user}` : '';
  for (const rule of facts.rules) {
    for (const warning of rule.warnings ?? []) add(Nagios.WARNING, warning);
    if (rule.error) add(Nagios.UNKNOWN, `rule folder ${rule.dir} is unreadable${rule.error.kind === 'permission' ? as : ''}: ${rule.error.message}`);
  }

  if (!facts.archiveRoot.exists) add(Nagios.CRITICAL, `archive root ${facts.archiveDir} is missing (is the backup disk mounted?)`);
  const src = facts.source;
  if (!src.exists && src.error?.kind === 'permission') add(Nagios.UNKNOWN, `cannot read the source ${src.path}${as}: permission denied (${src.error.message})`);
  else if (!src.exists) add(Nagios.CRITICAL, `source unavailable: ${src.error?.message ?? `${src.path} is missing`}`);
  else if (src.rejected) add(Nagios.CRITICAL, `source ${src.path} failed validation: ${src.rejected.reason}`);

  const lastRun = facts.state?.lastRun;
  const unrecorded = unrecordedFailure(facts);
  if (unrecorded) {
    // A failed run newer than the state's last run: the state could not record it (or it was a prune).
    const r = unrecorded.record;
    const why = r.command === 'prune' ? `recorded in ${unrecorded.path}` : `the state file could not record it (recorded in ${unrecorded.path})`;
    add(r.exitCode === ExitCode.TEMPFAIL ? Nagios.WARNING : Nagios.CRITICAL, `last ${r.command} at ${r.at} failed (exit ${r.exitCode}: ${r.error}); ${why}`);
  } else if (lastRun && lastRun.exitCode === ExitCode.TEMPFAIL) {
    add(Nagios.WARNING, `last run at ${lastRun.at} must be retried (exit 75${lastRun.error ? `: ${lastRun.error}` : ''})`);
  } else if (lastRun && lastRun.exitCode !== ExitCode.OK && lastRun.exitCode !== ExitCode.ARCHIVE_BAD
    && !(src.rejected && lastRun.exitCode === ExitCode.INVALID_SOURCE)) {
    // (a run that failed because the current source is invalid is already reported above;
    // a run that exited 81 worked: its known-bad events are reported below, each at its own level)
    add(Nagios.CRITICAL, `last run at ${lastRun.at} failed (exit ${lastRun.exitCode}${lastRun.error ? `: ${lastRun.error}` : ''})`);
  }
  // Each rule folder that failed in the last run, by name: the others may be fine.
  for (const e of ruleErrorsOf(lastRun)) {
    add(e.exitCode === ExitCode.TEMPFAIL ? Nagios.WARNING : Nagios.CRITICAL, `rule ${e.rule}: ${e.stage} failed in the last run (exit ${e.exitCode}): ${e.message}`);
  }

  // Checked here, not only by the next run: a run that cannot write fails before it can say so.
  if (facts.unwritable.length > 0) {
    add(Nagios.CRITICAL, `the archive cannot be written: ${facts.unwritable.map((u) => `${u.path} ${u.reason}`).join('; ')}`);
  }

  // A lock held longer than the snapshot-age thresholds blocks every run for that long:
  // a stuck run, or a pid reused by another process (the lock never goes stale).
  const lockAge = facts.lock ? Math.max(0, Math.floor((nowMs - facts.lock.sinceMs) / 1000)) : 0;
  if (facts.lock) {
    const lock = facts.lock;
    const holder = lock.pid !== undefined ? ` by pid ${lock.pid}${lock.command ? ` (${lock.command})` : ''}` : '';
    const over = lockAge * 1000 > thresholds.critAgeMs ? { state: Nagios.CRITICAL, limit: thresholds.critAgeMs }
      : lockAge * 1000 > thresholds.warnAgeMs ? { state: Nagios.WARNING, limit: thresholds.warnAgeMs } : undefined;
    if (lock.future) {
      // A dead holder's lock with a future mtime never reaches its lease age by its mtime: say so, and how it is judged.
      const ahead = formatAge(Math.max(0, Math.floor((lock.future.mtimeMs - nowMs) / 1000)));
      add(Nagios.WARNING, `the lock ${lock.path}${holder} has a time in the future (${new Date(lock.future.mtimeMs).toISOString()}, ${ahead} ahead of this host's clock): `
        + 'written by a host with a fast clock? Its lease is judged by how long this host sees it unchanged'
        + (lock.future.observedSinceMs !== undefined ? ` (since ${new Date(lock.future.observedSinceMs).toISOString()})` : ' (not observed by a run yet)'));
    }
    if (over) {
      add(over.state, `the lock ${lock.path} has been held for ${formatAge(lockAge)} (> ${formatDuration(over.limit)})${holder}: no run can archive while it is held; if that process is stuck or is not rdb-archiver, stop it or remove the lock`);
    }
  }

  // A failing hook (shipping off-host, say) leaves the local archive fine but the job undone.
  for (const [hook, rec] of Object.entries(facts.state?.hooks ?? {})) {
    if (hookFailing(rec)) add(Nagios.WARNING, `hook ${hook} failed at ${rec.lastFailureAt} (${rec.lastError ?? 'failed'}); WARNING until it next succeeds`);
  }

  for (const text of clockProblems(facts, nowMs)) add(Nagios.WARNING, text);
  const watch = watchProblem(facts);
  if (watch) add(Nagios.WARNING, watch);
  const lag = lagNow(facts, nowMs);
  const maxLagS = thresholds.maxLagMs !== undefined ? thresholds.maxLagMs / 1000 : null;
  if (lag && maxLagS !== null && lag.seconds > maxLagS) {
    add(Nagios.WARNING, lag.pending
      ? `the source saved at ${new Date(src.mtimeMs!).toISOString()} is not archived yet after ${formatAge(Math.floor(lag.seconds))} (> max_lag ${formatDuration(thresholds.maxLagMs!)}): a host loss now loses it`
      : `recovery point lag of the newest event ${facts.state?.lag?.ts}: ${lag.seconds.toFixed(1)}s from save to durable (> max_lag ${formatDuration(thresholds.maxLagMs!)})`);
  }
  // The newest backup is unreachable as "latest": restore latest refuses, and older data is all the archive offers.
  if (facts.lostLatest) add(Nagios.CRITICAL, `${facts.lostLatest}; the next run archives the source again`);

  const age = facts.newest ? ageSeconds(facts.newest.ts, nowMs, facts.newest.archivedAt) : null;
  const warnS = Math.round(thresholds.warnAgeMs / 1000);
  const critS = Math.round(thresholds.critAgeMs / 1000);
  // A retired shard (its slots moved in a resharding) is never pulled again: its events only get
  // older, so their age is no verdict (its summary says it is retired).
  const judgedByAge = !facts.shard?.retired;
  if (judgedByAge && age === null) {
    if (!facts.rules.some((r) => r.error)) add(Nagios.CRITICAL, 'no snapshot archived yet');
  } else if (judgedByAge && age !== null && age > critS) {
    add(Nagios.CRITICAL, `newest snapshot ${formatAge(age)} ago (> ${formatDuration(thresholds.critAgeMs)})`);
  } else if (judgedByAge && age !== null && age > warnS) {
    add(Nagios.WARNING, `newest snapshot ${formatAge(age)} ago (> ${formatDuration(thresholds.warnAgeMs)})`);
  }

  // A renamed or removed rule's folder: nothing prunes it, nothing counts it in a rule. Never
  // deleted automatically (it may be the only copy of old data), so a person must decide.
  if (facts.orphans.length > 0) {
    const list = facts.orphans.map((o) => `${o.folder} (${o.events} event${o.events === 1 ? '' : 's'}, ${formatBytes(o.bytes)})`).join(', ');
    add(Nagios.WARNING, facts.orphans.length === 1
      ? `orphan rule folder ${list} is in no rule: never pruned; delete it or add the rule back`
      : `orphan rule folders ${list} are in no rule: never pruned; delete them or add the rules back`);
  }
  if (facts.orphansError && !facts.rules.some((r) => r.error)) add(Nagios.UNKNOWN, facts.orphansError);
  for (const p of remoteProblems(facts.remotes ?? [], thresholds)) add(p.state, p.text);
  for (const p of verifyProblems(facts, nowMs)) add(p.state, p.text);
  for (const p of drillProblems(facts, nowMs)) add(p.state, p.text);

  const state = worstState(problems.map((p) => p.state));
  const parts = [age === null ? 'no snapshot' : `newest snapshot ${formatAge(age)} ago`];
  if (facts.shard) {
    parts.unshift(facts.shard.retired
      ? `retired shard (slots ${facts.shard.slots || '?'} are not one master's any more: kept, not pulled; delete ${facts.archiveDir} when no longer needed)`
      : `shard slots ${facts.shard.slots}${facts.shard.master ? ` from ${facts.shard.master}` : ''}`);
  }
  if (src.exists && src.unarchived) parts.push('source changed since, not archived yet');
  // A note, not a WARNING: a one-disk setup (a demo, or a local archive shipped off by a hook) is a choice.
  if (facts.archiveRoot.sameFilesystemAsSource) parts.push('note: archive on the same filesystem as the source');
  const w = liveWatch(facts);
  if (w?.mode === 'fallback' && w.kind === 'unsupported') parts.push(`note: the daemon polls on its schedule (${w.reason})`);
  if (lastRun) parts.push(`last run ${formatAge(Math.max(0, Math.floor((nowMs - Date.parse(lastRun.at)) / 1000)))} ago: ${lastRun.result}`);
  return {
    instance: facts.instance,
    state,
    status: STATE_NAMES[state],
    problems,
    summary: parts.join(', '),
    ageSeconds: age,
    warnAgeSeconds: warnS,
    critAgeSeconds: critS,
    events: facts.snapshots,
    archiveBytes: facts.archiveBytes,
    freeBytes: facts.space?.available ?? null,
    orphans: facts.orphans.length,
    orphanBytes: facts.orphans.reduce((sum, o) => sum + o.bytes, 0),
    lockAgeSeconds: lockAge,
    lagSeconds: lag ? Math.round(lag.seconds * 1000) / 1000 : null,
    maxLagSeconds: maxLagS,
  };
}

/** The watch record of a daemon that still runs (or that we cannot see from here); undefined otherwise. */
export function liveWatch(facts: InstanceFacts) {
  return facts.watch && facts.watch.alive !== false ? facts.watch.record : undefined;
}

/**
 * A watching daemon that fell back to its schedule for a fault (the watch
 * limit, its folder gone, an error) is a WARNING: saves now wait for the
 * schedule. A filesystem inotify cannot watch is a note (a fact of the setup).
 */
export function watchProblem(facts: InstanceFacts): string | undefined {
  const w = liveWatch(facts);
  if (!w || w.mode !== 'fallback' || w.kind === 'unsupported') return undefined;
  return `the daemon (pid ${w.pid}) watches no more: it fell back to its schedule at ${w.since} (${w.reason ?? w.kind})`;
}

/**
 * The recovery point lag as it stands: while the current source is not
 * archived (and is valid), the time since it was saved; else the last new
 * event's lag. Undefined when neither is known.
 */
export function lagNow(facts: InstanceFacts, nowMs: number): { seconds: number; pending: boolean } | undefined {
  const src = facts.source;
  if (src.exists && src.unarchived && !src.rejected && src.mtimeMs !== undefined && src.mtimeMs <= nowMs) {
    return { seconds: (nowMs - src.mtimeMs) / 1000, pending: true };
  }
  const last = facts.state?.lag;
  return last ? { seconds: last.seconds, pending: false } : undefined;
}

/**
 * When a scheduled verification or drill counts as overdue: twice its
 * period, and at least an hour more than it (a run takes time, and runs come
 * on the schedule of once or the daemon, not exactly every period).
 */
export function overdueAfterMs(everyMs: number): number {
  return Math.max(2 * everyMs, everyMs + 3_600_000);
}

/**
 * What scheduled verification says (scheduled-verify.ts): the newest event
 * bad is CRITICAL (restore latest would refuse it), an older one WARNING; a
 * verification that failed, or has not run for twice its period, WARNING.
 */
export function verifyProblems(facts: InstanceFacts, nowMs: number): Problem[] {
  const out: Problem[] = [];
  const v = facts.state?.verify;
  for (const b of facts.verifyBad ?? []) {
    out.push({
      state: b.newest ? Nagios.CRITICAL : Nagios.WARNING,
      text: `${b.newest ? 'the newest event' : 'an older event'} ${b.ts} failed verification at ${b.foundAt ?? v?.at ?? '?'} (${b.rules.join(', ')}): ${b.problems.join('; ')}`,
    });
  }
  if (v?.error) out.push({ state: Nagios.WARNING, text: `scheduled verification at ${v.at} could not finish: ${v.error}` });
  const every = facts.verifyEveryMs;
  if (every !== undefined && facts.state?.lastRun) {
    // The schedule's own last run: a manual verify of one event does not stand in for it.
    const scheduledAt = lastScheduledAt(v);
    const lastMs = scheduledAt ? Date.parse(scheduledAt) : NaN;
    if (!Number.isFinite(lastMs)) out.push({ state: Nagios.WARNING, text: `scheduled verification (every ${formatDuration(every)}) has not run yet` });
    else if (nowMs - lastMs > overdueAfterMs(every)) out.push({ state: Nagios.WARNING, text: `scheduled verification last ran ${formatAge(Math.floor((nowMs - lastMs) / 1000))} ago (every ${formatDuration(every)})` });
  }
  return out;
}

/**
 * The last restore drill (src/ops/drill.ts): an event that did not load is
 * CRITICAL; an RDB version the local server cannot read, a drill that could
 * not run, or a scheduled drill overdue (twice drill.every) is a WARNING.
 */
export function drillProblems(facts: InstanceFacts, nowMs: number): Problem[] {
  const out: Problem[] = [];
  const d = facts.state?.drill;
  if (d && d.status === 'load-failed') out.push({ state: Nagios.CRITICAL, text: `the restore drill at ${d.at} could not load event ${d.ts ?? '?'}: ${d.error ?? 'failed'}` });
  else if (d && d.status !== 'loaded') out.push({ state: Nagios.WARNING, text: `the restore drill at ${d.at} (event ${d.ts ?? '?'}) did not run to the end: ${d.error ?? d.status}` });
  const every = facts.drillEveryMs;
  if (every !== undefined && facts.state?.lastRun) {
    const lastMs = d ? Date.parse(d.at) : NaN;
    if (!Number.isFinite(lastMs)) out.push({ state: Nagios.WARNING, text: `scheduled restore drill (every ${formatDuration(every)}) has not run yet` });
    else if (nowMs - lastMs > overdueAfterMs(every)) out.push({ state: Nagios.WARNING, text: `the last restore drill ran ${formatAge(Math.floor((nowMs - lastMs) / 1000))} ago (every ${formatDuration(every)})` });
  }
  return out;
}

/** The failure record, when it is newer than the state's last run (else the state already tells). */
export function unrecordedFailure(facts: InstanceFacts): FoundRecord | undefined {
  const f = facts.failure;
  if (!f) return undefined;
  const lastRunAt = facts.state?.lastRun?.at;
  return !lastRunAt || Date.parse(f.record.at) > Date.parse(lastRunAt) ? f : undefined;
}

/**
 * What the archive and the source say about the source's clock (issue 10,
 * items 1 and 2): each is a WARNING in `check` and a line in `status`.
 */
export function clockProblems(facts: InstanceFacts, nowMs: number): string[] {
  const out: string[] = [];
  const src = facts.source;
  if (src.exists && src.mtimeMs !== undefined && src.mtimeMs > nowMs + FUTURE_TOLERANCE_MS) {
    out.push(`source ${src.path} has an mtime in the future (${new Date(src.mtimeMs).toISOString()}): the source clock is ahead`);
  }
  if (facts.futureEvents.length > 0) {
    const shown = facts.futureEvents.slice(0, 3).join(', ') + (facts.futureEvents.length > 3 ? ` and ${facts.futureEvents.length - 3} more` : '');
    out.push(`archived event${facts.futureEvents.length === 1 ? '' : 's'} stamped in the future: ${shown} (never "latest"; rotated out like the others)`);
  }
  const reverted = facts.state?.clock?.revertedTo !== undefined && facts.steppedBack?.latest === facts.state.clock.ts;
  if (facts.steppedBack && reverted) {
    // Not a wrong clock: the source went back to older content, archived as the latest event.
    out.push(`${clockJumpText(facts.state!.clock!, src.path)} (retention keeps the ${RECENT_PROTECTED} most recently archived meanwhile)`);
  } else if (facts.steppedBack) {
    out.push(`source clock stepped back: the newest snapshot ${facts.steppedBack.latest} is stamped before ${facts.steppedBack.newerNamed}, archived earlier (retention keeps the ${RECENT_PROTECTED} most recently archived meanwhile)`);
  }
  // The jump recorded when archiving, for a day: retention may already have removed what shows it above.
  const jump = facts.state?.clock;
  const seenMs = jump ? Date.parse(jump.at) : NaN;
  if (jump && nowMs - seenMs < CLOCK_JUMP_WARN_MS && out.length === 0) {
    out.push(`${clockJumpText(jump, src.path)}; seen ${jump.at}`);
  }
  return out;
}

/** How long `check` reports a clock jump recorded in the state, when the archive no longer shows it. */
export const CLOCK_JUMP_WARN_MS = 24 * 3_600_000;

/** Performance data in the plugin format: label=value[UOM];warn;crit;min;max. */
function perfData(c: InstanceCheck, prefix: string): string[] {
  return [
    `${prefix}age=${c.ageSeconds === null ? 'U' : `${c.ageSeconds}s`};${c.warnAgeSeconds};${c.critAgeSeconds};0`,
    `${prefix}events=${c.events};;;0`,
    `${prefix}archive=${c.archiveBytes}B;;;0`,
    ...(c.freeBytes === null ? [] : [`${prefix}free=${c.freeBytes}B;;;0`]),
    `${prefix}orphans=${c.orphans};;;0`,
    `${prefix}orphan_bytes=${c.orphanBytes}B;;;0`,
    `${prefix}lock_age=${c.lockAgeSeconds}s;${c.warnAgeSeconds};${c.critAgeSeconds};0`,
    ...(c.lagSeconds === null ? [] : [`${prefix}lag=${c.lagSeconds}s;${c.maxLagSeconds ?? ''};;0`]),
  ];
}

/** The single plugin output line: the worst state, the instances at that state and why, then the perf data. */
export function checkLine(checks: InstanceCheck[]): { state: NagiosState; line: string } {
  const state = worstState(checks.map((c) => c.state));
  const multi = checks.length > 1;
  let text: string;
  if (state === Nagios.OK) {
    text = checks.map((c) => `${c.instance}: ${c.summary}`).join('; ');
  } else {
    text = checks
      .filter((c) => c.state === state)
      .map((c) => `${c.instance}: ${c.problems.filter((p) => p.state === state).map((p) => p.text).join(', ')}`)
      .join('; ');
    const others = checks.filter((c) => c.state !== state && c.state !== Nagios.OK);
    if (others.length > 0) text += ` (also ${others.map((c) => `${c.status}: ${c.instance}`).join(', ')})`;
  }
  // The plugin line must stay one line, and "|" starts the perf data.
  text = text.replace(/[\r\n]+/g, ' ').replace(/\|/g, '/');
  const perf = checks.flatMap((c) => perfData(c, multi ? `${c.instance}_` : ''));
  return { state, line: `RDB-ARCHIVER ${STATE_NAMES[state]} - ${text} | ${perf.join(' ')}` };
}

function unknown(message: string, json: boolean): void {
  const line = `RDB-ARCHIVER UNKNOWN - ${message.replace(/[\r\n]+/g, ' ').replace(/\|/g, '/')}`;
  print(json ? JSON.stringify({ status: 'UNKNOWN', exitCode: Nagios.UNKNOWN, summary: line, instances: [] }) : line);
  process.exitCode = Nagios.UNKNOWN;
}

function thresholdsFor(instance: InstanceConfig, flags: { warnAge?: string; critAge?: string }): MonitorConfig {
  const parse = (flag: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const ms = parseDuration(text);
    if (ms === undefined) throw new Error(`${flag} "${text}" is not a duration such as 90m, 2h or 1d`);
    return ms;
  };
  const warnAgeMs = parse('--warn-age', flags.warnAge) ?? instance.monitor.warnAgeMs;
  const critAgeMs = parse('--crit-age', flags.critAge) ?? instance.monitor.critAgeMs;
  if (critAgeMs < warnAgeMs) {
    throw new Error(`${instance.name}: crit-age (${formatDuration(critAgeMs)}) is shorter than warn-age (${formatDuration(warnAgeMs)})`);
  }
  return { ...instance.monitor, warnAgeMs, critAgeMs };
}

async function runCheck(cmd: Command, flags: { warnAge?: string; critAge?: string; json?: boolean }): Promise<void> {
  const json = flags.json === true;
  let ctx;
  try {
    ctx = contextFor(cmd);
  } catch (err) {
    // Nagios: a plugin that cannot even read its configuration is UNKNOWN (3), not the usual config exit 2.
    unknown(err instanceof Error ? err.message : String(err), json);
    return;
  }
  let thresholds: MonitorConfig[];
  try {
    thresholds = ctx.config.instances.map((inst) => thresholdsFor(inst, flags));
  } catch (err) {
    unknown((err as Error).message, json);
    return;
  }
  const now = Date.now();
  const checks: InstanceCheck[] = [];
  for (const [i, instance] of ctx.config.instances.entries()) {
    // inspectInstance never throws; the guard is for bugs, so one instance cannot take the line down.
    try {
      checks.push(evaluateInstance(await inspectInstance(ctx.fs, instance), thresholds[i]!, now));
    } catch (err) {
      checks.push({
        instance: instance.name, state: Nagios.UNKNOWN, status: 'UNKNOWN', problems: [{ state: Nagios.UNKNOWN, text: `internal error: ${String(err)}` }],
        summary: '', ageSeconds: null, warnAgeSeconds: 0, critAgeSeconds: 0, events: 0, archiveBytes: 0, freeBytes: null, orphans: 0, orphanBytes: 0, lockAgeSeconds: 0, lagSeconds: null, maxLagSeconds: null,
      });
    }
  }
  const { state, line } = checkLine(checks);
  print(json ? JSON.stringify({ status: STATE_NAMES[state], exitCode: state, summary: line, instances: checks }) : line);
  process.exitCode = state;
}

// ---------------------------------------------------------------------------
// status

export interface StatusReport {
  instance: string;
  /** A cluster shard: its cluster instance, folder name, slots, master (last discovery) and whether it is retired. */
  shard?: { cluster: string; name: string; slots: string; retired: boolean; master: string | null };
  lastRun: { at: string; result: string; exitCode: number; durationMs: number; error: string | null; ruleErrors: RuleErrorRecord[] } | null;
  lastSuccessAt: string | null;
  lastSnapshot: {
    ts: string; time: string; ageSeconds: number; bytes: number; sha256: string | null; archivedAt: string | null; path: string;
    /** How the .rdb was copied (null: linked from an earlier copy, or archived by an older version); shared: its data blocks are the source's (a reflink). */
    copy: CopyMethod | null; shared: boolean;
  } | null;
  /** Why the event the state says was archived last is no longer the archive's latest (restore latest refuses), or null. */
  lostLatest: string | null;
  /** The source clock: the last jump seen (state) and what the archive shows now. */
  clock: { lastJump: (ClockJump & { text: string }) | null; problems: string[] };
  source: {
    path: string;
    exists: boolean;
    mtime: string | null;
    ts: string | null;
    bytes: number | null;
    unarchived: boolean | null;
    rejected: { reason: string; at: string } | null;
    error: string | null;
  };
  rules: Record<string, { dir: string; events: number; bytes: number; newest: string | null; oldest: string | null; incomplete: number; error: string | null; foreign: string[]; warnings: string[] }>;
  archive: { dir: string; exists: boolean; sameFilesystemAsSource: boolean | null; bytes: number; freeBytes: number | null; totalBytes: number | null; error: string | null };
  state: { path: string; error: string | null };
  /** Folders of the archive root with event files that no rule names (never pruned, never deleted by us). */
  orphans: Array<{ folder: string; dir: string; events: number; bytes: number; newest: string | null; oldest: string | null }>;
  /**
   * The newest failed run known: from a failure record (recordedIn: its file) when newer than the
   * state's, else the state's lastFailure (recordedIn: the state file). Kept after later successes.
   */
  lastFailure: { at: string; command: string; exitCode: number; kind: string | null; error: string | null; user: string | null; recordedIn: string } | null;
  /** Each hook's last failure and success; failing while the last run of the hook failed. */
  hooks: Record<string, { failing: boolean; lastFailureAt: string | null; lastError: string | null; lastSuccessAt: string | null }>;
  /** The run lock, when held. */
  lock: { path: string; since: string; ageSeconds: number; pid: number | null; command: string | null; futureTime: string | null } | null;
  /** Folders a run must write that it cannot. */
  unwritable: Array<{ path: string; reason: string }>;
  /** Off-site remotes: what waits for each, and how its last attempts went (src/offsite/facts.ts). */
  remotes: RemoteStatus[];
  /** A watching daemon's watch (watch: true): watching, or fallen back to its schedule and why; null without one. */
  watch: { mode: 'watching' | 'fallback'; dir: string; kind: string | null; reason: string | null; since: string; pid: number; daemonRunning: boolean | null; debounceMs: number } | null;
  /**
   * The recovery point lag: seconds from the source's mtime to the event being durable, for the
   * last new event (and what started its cycle); pendingSeconds while the current source waits.
   */
  lag: { lastSeconds: number | null; ts: string | null; durableAt: string | null; trigger: string | null; pendingSeconds: number | null };
  /**
   * The last verification, scheduled or by `rdb-archiver verify` (trigger), and the bad events it
   * (or an earlier one not re-checked since) found that are still archived; null when none ran.
   */
  verify: {
    at: string; trigger: 'schedule' | 'verify'; scope: string | null; sample: string | number; eventsChecked: number; filesRead: number; bytesRead: number; durationMs: number;
    error: string | null; bad: Array<{ ts: string; rules: string[]; problems: string[]; foundAt: string; newest: boolean }>;
    /** When the next scheduled run is due; null without verify: in the config. */
    nextDueAt: string | null;
  } | null;
  /** verify.every in seconds; null without scheduled verification. */
  verifyEverySeconds: number | null;
  /** The last restore drill, scheduled or by `rdb-archiver drill`; null when none ran. */
  drill: {
    at: string; ts: string | null; rule: string | null; status: string; loadSeconds: number | null; dbsize: number | null; keys: number | null;
    keyspace: Record<string, string> | null; digest: string | null; server: { binary: string; version: string | null } | null; error: string | null; durationMs: number;
    nextDueAt: string | null; text: string;
  } | null;
  /** drill.every in seconds; null without scheduled drills. */
  drillEverySeconds: number | null;
  exitCode: number;
}

/** When a schedule is next due: `every` after its last run; null without a schedule, or when it never ran (due at the next run). */
function nextDue(lastAt: string | undefined, everyMs: number | undefined): string | null {
  const lastMs = lastAt ? Date.parse(lastAt) : NaN;
  return everyMs !== undefined && Number.isFinite(lastMs) ? new Date(lastMs + everyMs).toISOString() : null;
}

export function verifyStatus(facts: InstanceFacts): StatusReport['verify'] {
  const v = facts.state?.verify;
  if (!v) return null;
  return {
    at: v.at, trigger: v.trigger ?? 'schedule', scope: v.scope ?? null, sample: v.sample, eventsChecked: v.eventsChecked, filesRead: v.filesRead,
    bytesRead: v.bytesRead, durationMs: v.durationMs, error: v.error ?? null,
    bad: (facts.verifyBad ?? []).map((b) => ({ ts: b.ts, rules: b.rules, problems: b.problems, foundAt: b.foundAt ?? v.at, newest: b.newest })),
    nextDueAt: nextDue(lastScheduledAt(v), facts.verifyEveryMs),
  };
}

export function drillStatus(facts: InstanceFacts): StatusReport['drill'] {
  const d: DrillRecord | undefined = facts.state?.drill;
  if (!d) return null;
  return {
    at: d.at, ts: d.ts, rule: d.rule, status: d.status, loadSeconds: d.loadSeconds ?? null, dbsize: d.dbsize ?? null, keys: d.keys ?? null,
    keyspace: d.keyspace ?? null, digest: d.digest ?? null, server: d.server ?? null, error: d.error ?? null, durationMs: d.durationMs,
    nextDueAt: nextDue(d.at, facts.drillEveryMs),
    text: drillText(d),
  };
}

/** The status lines of the last verification and drill. */
function verifyDrillLines(r: StatusReport): string[] {
  const lines: string[] = [];
  const v = r.verify;
  if (v) {
    const who = v.trigger === 'verify' ? `by rdb-archiver verify${v.scope ? ` (${v.scope})` : ''}` : `scheduled (sample ${v.sample})`;
    const result = v.error ? `COULD NOT FINISH: ${v.error}`
      : `${v.eventsChecked} event${v.eventsChecked === 1 ? '' : 's'} checked (${v.filesRead} file${v.filesRead === 1 ? '' : 's'}, ${formatBytes(v.bytesRead)}, ${(v.durationMs / 1000).toFixed(1)}s): `
        + (v.bad.length === 0 ? 'all intact' : `${v.bad.length} BAD`);
    lines.push(`last verify:    ${v.at} ${who}: ${result}${v.nextDueAt ? `; next scheduled after ${v.nextDueAt}` : ''}`);
    for (const b of v.bad) lines.push(`                BAD ${b.ts}${b.newest ? ' (the newest event)' : ''} in ${b.rules.join(', ')}, found ${b.foundAt}: ${b.problems.join('; ')}`);
  } else if (r.verifyEverySeconds !== null) {
    lines.push('last verify:    never (the schedule runs it on the next run)');
  }
  const d = r.drill;
  if (d) {
    const what = d.status === 'loaded'
      ? `event ${d.ts} (${d.rule}) loaded in ${d.loadSeconds?.toFixed(3)} s: DBSIZE ${d.dbsize}, ${d.keys} keys in all databases, digest ${d.digest ?? 'n/a'}, server ${d.server?.version ?? '?'} (${d.server?.binary ?? '?'})`
      : d.text;
    lines.push(`last drill:     ${d.at} ${d.status === 'loaded' ? what : `${d.status.toUpperCase()}: ${what}`}${d.nextDueAt ? `; next scheduled after ${d.nextDueAt}` : ''}`);
  } else if (r.drillEverySeconds !== null) {
    lines.push('last drill:     never (the schedule runs it on the next run)');
  }
  return lines;
}

/** The newest known failure: the failure record or the state's lastFailure, whichever is newer. */
export function lastFailureOf(facts: InstanceFacts): StatusReport['lastFailure'] {
  const fromState = facts.state?.lastFailure;
  const rec = facts.failure?.record;
  if (rec && (!fromState || Date.parse(rec.at) > Date.parse(fromState.at))) {
    return { at: rec.at, command: rec.command, exitCode: rec.exitCode, kind: rec.kind || null, error: rec.error || null, user: rec.user || null, recordedIn: facts.failure!.path };
  }
  return fromState
    ? { at: fromState.at, command: fromState.command, exitCode: fromState.exitCode, kind: null, error: fromState.error ?? null, user: null, recordedIn: facts.statePath }
    : null;
}

export function statusReport(facts: InstanceFacts, nowMs: number): StatusReport {
  const run = facts.state?.lastRun;
  const ruleErrors = facts.rules.filter((r) => r.error);
  return {
    instance: facts.instance,
    ...(facts.shard ? { shard: facts.shard } : {}),
    lastRun: run ? { at: run.at, result: run.result, exitCode: run.exitCode, durationMs: run.durationMs, error: run.error ?? null, ruleErrors: ruleErrorsOf(run) } : null,
    lastSuccessAt: facts.state?.lastSuccessAt ?? null,
    lastSnapshot: facts.newest
      ? {
        ts: facts.newest.ts, time: timestampToIso(facts.newest.ts), ageSeconds: ageSeconds(facts.newest.ts, nowMs, facts.newest.archivedAt),
        bytes: facts.newest.bytes, sha256: facts.newest.sha256 ?? null, archivedAt: facts.newest.archivedAt ?? null, path: facts.newest.path,
        copy: facts.newest.copy, shared: facts.newest.shared,
      }
      : null,
    lostLatest: facts.lostLatest ?? null,
    clock: {
      lastJump: facts.state?.clock ? { ...facts.state.clock, text: clockJumpText(facts.state.clock, facts.source.path) } : null,
      problems: clockProblems(facts, nowMs),
    },
    source: {
      path: facts.source.path,
      exists: facts.source.exists,
      mtime: facts.source.mtimeMs !== undefined ? new Date(facts.source.mtimeMs).toISOString() : null,
      ts: facts.source.ts ?? null,
      bytes: facts.source.size ?? null,
      unarchived: facts.source.unarchived ?? null,
      rejected: facts.source.rejected ?? null,
      error: facts.source.error?.message ?? null,
    },
    rules: Object.fromEntries(facts.rules.map((r) => [r.rule, {
      dir: r.dir, events: r.events, bytes: r.bytes, newest: r.newest ?? null, oldest: r.oldest ?? null, incomplete: r.incomplete, error: r.error?.message ?? null,
      foreign: r.foreign ?? [], warnings: r.warnings ?? [],
    }])),
    archive: { dir: facts.archiveDir, exists: facts.archiveRoot.exists, sameFilesystemAsSource: facts.archiveRoot.sameFilesystemAsSource ?? null, bytes: facts.archiveBytes, freeBytes: facts.space?.available ?? null, totalBytes: facts.space?.total ?? null, error: facts.spaceError ?? null },
    state: { path: facts.statePath, error: facts.stateError ?? null },
    orphans: facts.orphans.map((o) => ({ folder: o.folder, dir: o.dir, events: o.events, bytes: o.bytes, newest: o.newest ?? null, oldest: o.oldest ?? null })),
    lastFailure: lastFailureOf(facts),
    hooks: Object.fromEntries(Object.entries(facts.state?.hooks ?? {}).map(([name, h]) => [name, {
      failing: hookFailing(h), lastFailureAt: h.lastFailureAt ?? null, lastError: h.lastError ?? null, lastSuccessAt: h.lastSuccessAt ?? null,
    }])),
    lock: facts.lock ? {
      path: facts.lock.path,
      since: new Date(facts.lock.sinceMs).toISOString(),
      ageSeconds: Math.max(0, Math.floor((nowMs - facts.lock.sinceMs) / 1000)),
      pid: facts.lock.pid ?? null,
      command: facts.lock.command ?? null,
      // A time in the future (another host's clock): the age is then how long this host has seen it unchanged.
      futureTime: facts.lock.future ? new Date(facts.lock.future.mtimeMs).toISOString() : null,
    } : null,
    unwritable: facts.unwritable,
    remotes: remoteStatus(facts.remotes ?? []),
    watch: facts.watch ? {
      mode: facts.watch.record.mode, dir: facts.watch.record.dir, kind: facts.watch.record.kind ?? null, reason: facts.watch.record.reason ?? null,
      since: facts.watch.record.since, pid: facts.watch.record.pid, daemonRunning: facts.watch.alive ?? null, debounceMs: facts.watch.record.debounceMs,
    } : null,
    lag: (() => {
      const now = lagNow(facts, nowMs);
      const last = facts.state?.lag;
      return {
        lastSeconds: last?.seconds ?? null, ts: last?.ts ?? null, durableAt: last?.durableAt ?? null, trigger: last?.trigger ?? null,
        pendingSeconds: now?.pending ? Math.round(now.seconds * 1000) / 1000 : null,
      };
    })(),
    verify: verifyStatus(facts),
    verifyEverySeconds: facts.verifyEveryMs !== undefined ? facts.verifyEveryMs / 1000 : null,
    drill: drillStatus(facts),
    drillEverySeconds: facts.drillEveryMs !== undefined ? facts.drillEveryMs / 1000 : null,
    // status only reports; an unreadable rule folder is the one thing it could not report.
    exitCode: ruleErrors.length > 0 ? ruleErrors[0]!.error!.exitCode : ExitCode.OK,
  };
}

export function statusText(r: StatusReport): string {
  const lines: string[] = [];
  if (r.shard) {
    lines.push(`shard:          ${r.shard.name}, slots ${r.shard.slots || '?'}${r.shard.retired ? ' (retired: no master serves these slots as one shard any more; never pulled again)' : r.shard.master ? `, master ${r.shard.master}` : ''}`);
  }
  const run = r.lastRun;
  lines.push(`last run:       ${run ? `${run.at} ${run.result} (exit ${run.exitCode}, ${(run.durationMs / 1000).toFixed(1)}s)${run.error ? `: ${run.error}` : ''}` : 'never'}`);
  for (const e of run?.ruleErrors ?? []) lines.push(`                rule ${e.rule}: ${e.stage} failed: ${e.message}`);
  lines.push(`last success:   ${r.lastSuccessAt ?? 'never'}`);
  const f = r.lastFailure;
  if (f) lines.push(`last failure:   ${f.at} ${f.command} (exit ${f.exitCode})${f.error ? `: ${f.error}` : ''}${f.user ? `, as ${f.user}` : ''} [${f.recordedIn}]`);
  const s = r.lastSnapshot;
  lines.push(`last snapshot:  ${s ? `${s.ts} (${formatAge(s.ageSeconds)} ago, ${formatBytes(s.bytes)}${s.sha256 ? `, sha256 ${s.sha256.slice(0, 16)}…` : ''}${s.copy ? `, ${s.copy}` : ''})` : 'none'}`);
  if (s?.shared) lines.push('                shares its data blocks with the source (reflink): not a second copy on this disk until Redis replaces dump.rdb');
  if (r.lostLatest) lines.push(`latest:         LOST: ${r.lostLatest}`);
  for (const p of r.clock.problems) lines.push(`clock:          WARNING: ${p}`);
  if (r.clock.lastJump) lines.push(`clock:          last jump seen ${r.clock.lastJump.at}: ${r.clock.lastJump.text}`);
  const src = r.source;
  const srcState = !src.exists ? `MISSING (${src.error ?? 'not found'})`
    : src.rejected ? `FAILED VALIDATION: ${src.rejected.reason}`
    : src.unarchived ? 'changed, not archived yet'
    : 'archived';
  lines.push(`source:         ${src.path}${src.mtime ? ` (mtime ${src.mtime}, ${formatBytes(src.bytes ?? 0)})` : ''}: ${srcState}`);
  lines.push('rules:');
  const width = Math.max(...Object.keys(r.rules).map((n) => n.length));
  for (const [name, rule] of Object.entries(r.rules)) {
    if (rule.error) {
      lines.push(`  ${name.padEnd(width)}  UNREADABLE: ${rule.error}`);
      continue;
    }
    const range = rule.newest ? `, newest ${rule.newest}, oldest ${rule.oldest}` : '';
    const incomplete = rule.incomplete > 0 ? `, ${rule.incomplete} incomplete` : '';
    const foreign = rule.foreign.length > 0 ? `, ${rule.foreign.length} FOREIGN (not counted)` : '';
    lines.push(`  ${name.padEnd(width)}  ${rule.events} event${rule.events === 1 ? '' : 's'}, ${formatBytes(rule.bytes)}${range}${incomplete}${foreign}`);
  }
  for (const rule of Object.values(r.rules)) for (const warning of rule.warnings) lines.push(`warning: ${warning}`);
  const a = r.archive;
  lines.push(`archive:        ${a.dir}: ${formatBytes(a.bytes)} on disk (hard links counted once)${a.freeBytes !== null ? `, ${formatBytes(a.freeBytes)} free` : `, free space unknown (${a.error})`}`);
  r.orphans.forEach((o, i) => {
    const range = o.newest ? `, newest ${o.newest}, oldest ${o.oldest}` : '';
    lines.push(`${i === 0 ? 'orphans:' : ''}`.padEnd(16) + `${o.folder}: ${o.events} event${o.events === 1 ? '' : 's'}, ${formatBytes(o.bytes)}${range}; not in the config: never pruned (delete it or add the rule back)`);
  });
  for (const [name, h] of Object.entries(r.hooks)) {
    if (h.failing) lines.push(`hook ${name}:`.padEnd(16) + `FAILING since ${h.lastFailureAt}: ${h.lastError}${h.lastSuccessAt ? ` (last success ${h.lastSuccessAt})` : ' (never succeeded)'}`);
  }
  if (r.lock) lines.push(`lock:           held for ${formatAge(r.lock.ageSeconds)} (since ${r.lock.since}${r.lock.pid !== null ? `, pid ${r.lock.pid}` : ''}${r.lock.command ? `, ${r.lock.command}` : ''}): ${r.lock.path}`
    + (r.lock.futureTime ? `; WARNING: its time ${r.lock.futureTime} is in the future (another host's clock): its lease is judged by how long this host sees it unchanged` : ''));
  for (const u of r.unwritable) lines.push(`NOT WRITABLE:   ${u.path} ${u.reason}`);
  if (!a.exists) lines.push(`warning: the archive root ${a.dir} does not exist (is the backup disk mounted?)`);
  if (a.sameFilesystemAsSource) lines.push(`warning: ${sameFilesystemWarning(a.dir, r.source.path, (r.remotes ?? []).map((x) => x.remote))}`);
  if (r.state.error) lines.push(`state:          ${r.state.error}`);
  if (r.lag.lastSeconds !== null) lines.push(`recovery lag:   ${r.lag.lastSeconds.toFixed(1)}s from save to durable for ${r.lag.ts} (${r.lag.trigger})${r.lag.pendingSeconds !== null ? `; the current source has waited ${r.lag.pendingSeconds.toFixed(0)}s` : ''}`);
  const w = r.watch;
  if (w) {
    const who = w.daemonRunning === false ? ` (daemon pid ${w.pid} is not running: stale record)` : ` (daemon pid ${w.pid})`;
    lines.push(w.mode === 'watching'
      ? `watch:          watching ${w.dir} since ${w.since}, debounce ${w.debounceMs} ms${who}`
      : `watch:          FALLBACK to the schedule since ${w.since}: ${w.reason ?? w.kind}${who}`);
  }
  lines.push(...verifyDrillLines(r));
  lines.push(...remoteStatusLines(r.remotes ?? []));
  return lines.join('\n');
}

// ---------------------------------------------------------------------------

export function registerMonitorCommands(program: Command): void {
  program
    .command('status')
    .description('show, per instance, the last run, the last snapshot, the source, events and bytes per rule, free space, and orphan rule folders (a renamed rule\'s old folder)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (_opts: object, cmd: Command) => {
      const ctx = contextFor(cmd);
      const now = Date.now();
      const results = [];
      for (const instance of ctx.config.instances) {
        results.push({ instance: instance.name, report: statusReport(await inspectInstance(ctx.fs, instance), now) });
      }
      printResults(ctx, results, (r) => r, statusText);
    });

  const check = program
    .command('check')
    .description('monitoring plugin (Nagios/Icinga/Sensu): one line with perf data; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. ' +
      'Besides snapshot age it reports failed runs (also those that could not write their state: failure records), ' +
      'state or rule folders that cannot be written, a lock held past warn/crit age, failing hooks and orphan rule folders; ' +
      'no permission to read the source or archive is UNKNOWN, naming the user')
    .option('--warn-age <duration>', 'WARNING when the newest snapshot (or the held lock) is older than this (default: monitor.warn_age, 2h)')
    .option('--crit-age <duration>', 'CRITICAL when the newest snapshot (or the held lock) is older than this (default: monitor.crit_age, 6h)')
    .option('--json', 'print one JSON object on stdout (the exit code still follows the plugin convention)')
    .action(async (opts: { warnAge?: string; critAge?: string; json?: boolean }, cmd: Command) => {
      try {
        await runCheck(cmd, opts);
      } catch (err) {
        unknown(err instanceof ArchiverError ? err.message : `internal error: ${String(err)}`, opts.json === true);
      }
    });
  // A usage error of `check` is UNKNOWN (3) too: monitoring systems treat 2 as CRITICAL.
  check.exitOverride((err) => {
    if (err.exitCode === 0) throw err; // --help
    process.stdout.write(`RDB-ARCHIVER UNKNOWN - ${err.message.replace(/[\r\n]+/g, ' ')}\n`);
    process.exit(Nagios.UNKNOWN);
  });
}
