/**
 * One cycle for one instance: lock -> state -> watcher -> queue -> worker ->
 * state -> retention. `once`, `prune` and each daemon tick call these.
 */
import { dirname, join } from 'node:path';
import type { InstanceConfig } from '../core/config.js';
import { ruleDir } from '../core/config.js';
import { ArchiverError, ConflictError, ExitCode, FoldersFailedError, InvalidSnapshotError, RedisSourceError, exitCodeOf, type ExitCodeValue } from '../core/errors.js';
import type { FileSystem } from '../core/fs.js';
import { acquireLock, type HeldLock } from './lock.js';
import { prepareArchiveRoot, sameFilesystemWarning } from './archive-root.js';
import type { Log } from '../core/log.js';
import { JobQueue } from './queue.js';
import { eventsHoldingSource } from './current-content.js';
import { FUTURE_TOLERANCE_MS, latestArchived } from './event-order.js';
import { lstatIfExists } from '../core/fs.js';
import { LocalFolderTarget } from '../targets/local.js';
import { planRetention, scanFolder, scanWarnings, type Decision, type FolderEvent, type FolderScan } from './retention.js';
import { runCycleHooks, runPruneHooks } from '../ops/hooks.js';
import { bumpCounter, loadState, recordLag, saveState, type ClockJump, type RuleErrorRecord, type State } from './state.js';
import { absorbFailureRecords, readOwnFailureRecords, removeFailureRecords, writeFailureRecord, type FailedCommand, type FoundRecord } from './failure-record.js';
import { userName } from '../core/trust.js';
import { MAX_SEQ, type Timestamp, eventFileName, parseTimestamp, timestampFromMs, timestampToMs, withOrdinal } from '../core/timestamp.js';
import { jobKey, pollOnce, type ChangeReason, type Detection, type SnapshotJob } from './watcher.js';
import { archiveSnapshot, COPY_CHUNK_BYTES, type ArchiveTarget, type FolderFailure, type NodesChange, type SnapshotResult } from './worker.js';
import { prestartValidationThread } from '../rdb/validate-thread.js';
import { queueForRemotes, settleRemoteQueue } from '../offsite/queue.js';
import { planOffsite, runOffsite, type RemoteRunReport } from '../offsite/run.js';
import { writeArchiveIndex } from './archive-index.js';
import { badEventText, mergeBad, pairKey, runScheduledVerify, type VerifyRecord } from './scheduled-verify.js';
import { drillDue, drillText, runDrill, type DrillRecord } from '../ops/drill.js';
import { knownBad, knownBadText, withKnownBad, type KnownBad } from './known-bad.js';

export type RunStatus = 'archived' | 'unchanged' | 'would-archive' | 'failed';

export interface RuleReport {
  keep: Decision[];
  delete: Decision[];
}

export interface ErrorReport {
  kind: string;
  message: string;
  exitCode: number;
  /** For a failure of one rule folder: which rule, and whether writing the event into it or pruning it failed. */
  rule?: string;
  stage?: 'archive' | 'retention';
}

export interface RunReport {
  instance: string;
  status: RunStatus;
  /** A cluster shard's run: which slots, and the master they were (or would be) pulled from. */
  shard?: { name: string; slots: string; master: string | null; masterId: string | null };
  snapshot: { ts: string; bytes: number; sha256: string; rules: string[]; nodes: boolean; nodesChanged?: NodesChange; outcome: SnapshotResult['outcome']; copy?: SnapshotResult['copy'] } | null;
  retention: Record<string, RuleReport>;
  warnings: string[];
  /**
   * Facts about the setup worth saying on every run but not about this run's
   * data (the archive shares the source's filesystem): printed as "note:",
   * logged at warn level, never changing the exit code.
   */
  notes: string[];
  /** Each rule folder that failed in this run (the others were still archived into and pruned). */
  ruleErrors: ErrorReport[];
  error?: ErrorReport;
  /** One entry per remote, after the local cycle (absent without remotes, and in a dry run). */
  offsite?: RemoteRunReport[];
  /** The scheduled verification, when this run did one (`verify:` in the config). */
  verify?: VerifyRecord;
  /** The scheduled restore drill, when this run did one (`drill.every`). */
  drill?: DrillRecord;
  /** Archived events known bad (verification or drill, this run's or an earlier one's): exit 81 when the run was otherwise OK. */
  knownBad?: KnownBad[];
  exitCode: ExitCodeValue;
}

export interface PruneReport {
  instance: string;
  dryRun: boolean;
  retention: Record<string, RuleReport>;
  warnings: string[];
  errors: ErrorReport[];
  exitCode: ExitCodeValue;
}

export interface CycleDeps {
  fs: FileSystem;
  log: Log;
  signal?: AbortSignal;
  /** What a failure record calls this run (the daemon says "daemon tick"); default: the command. */
  command?: FailedCommand;
  /** What started this cycle (logged, and kept with the recovery point lag); default 'once'. */
  trigger?: 'once' | 'schedule' | 'watch';
  /**
   * A long-lived caller (the daemon) passes one set for its lifetime: a standing note (the
   * archive on the source's filesystem) is logged at warning the first time only, then at
   * debug, so that a tick every minute does not repeat it in the journal forever.
   */
  notesLogged?: Set<string>;
}

/** Logs a note of the run's report: at warning, unless this daemon has logged it before (CycleDeps.notesLogged). */
function logNote(deps: CycleDeps, log: Log, archive: string, note: string): void {
  if (deps.notesLogged?.has(note)) {
    log.debug({ archive }, note);
    return;
  }
  deps.notesLogged?.add(note);
  log.warn({ archive }, note);
}

/** How long `once` waits for a running `prune` to finish before giving up with exit 75. */
const PRUNE_WAIT_MS = 30_000;

export function lockPathFor(instance: InstanceConfig): string {
  return `${dirname(instance.statePath)}/lock`;
}

function toRuleErrorRecord(e: ErrorReport): RuleErrorRecord {
  return { rule: e.rule ?? '', stage: e.stage ?? 'archive', kind: e.kind, message: e.message, exitCode: e.exitCode };
}

export function errorReport(err: unknown): ErrorReport {
  return {
    kind: err instanceof ArchiverError ? err.kind : 'internal',
    message: err instanceof Error ? err.message : String(err),
    exitCode: exitCodeOf(err),
  };
}

/**
 * Marks a report failed by `err` (status, error, exit code from one place)
 * and logs it: restore, restore --from and the once cycle share it.
 */
export function markFailed(report: { status: string; error?: ErrorReport; exitCode: ExitCodeValue }, err: unknown, log: Log, message: string): void {
  report.status = 'failed';
  report.error = errorReport(err);
  report.exitCode = report.error.exitCode as ExitCodeValue;
  log.error({ err: report.error.message, kind: report.error.kind }, message);
}

/**
 * Incomplete events (companions without their .rdb: a run that failed or was
 * killed half-way) are deleted by retention, under the lock, but only when
 * every file of theirs was last modified before `cutoffMs`: older than this
 * run, so no writer of this run or a concurrent one can still be adding the
 * .rdb. The others are kept, with a reason, for a later run.
 */
async function freshIncomplete(deps: CycleDeps, dir: string, events: readonly FolderEvent[], cutoffMs: number): Promise<Set<Timestamp>> {
  const fresh = new Set<Timestamp>();
  for (const event of events) {
    if (event.kinds.includes('rdb')) continue;
    for (const kind of event.kinds) {
      for (const seq of kind === 'meta' ? (event.seqs ?? []) : [undefined]) {
        const info = await lstatIfExists(deps.fs, join(dir, eventFileName(kind, event.ts, seq)));
        if (info && info.mtimeMs >= cutoffMs) fresh.add(event.ts);
      }
    }
  }
  return fresh;
}

/** How much older than the run an incomplete event's files must be (filesystem timestamps can be this coarse). */
export const INCOMPLETE_GRACE_MS = 2_000;

/**
 * Plans (and unless dryRun, applies) retention in every rule folder. Each
 * folder is planned and pruned on its own: one whose scan or deletes fail is
 * reported (errors carry the rule) and the other folders are still pruned.
 */
export async function pruneAll(
  deps: CycleDeps,
  instance: InstanceConfig,
  options: {
    dryRun: boolean;
    protect: ReadonlyMap<Timestamp, string>;
    pretend?: Timestamp;
    startedMs?: number;
    /** Scans made earlier under this same lock (scanRuleFolders), in rule order; otherwise each folder is scanned here. */
    scans?: ReadonlyArray<RuleFolderScan>;
  },
): Promise<{ retention: Record<string, RuleReport>; errors: ErrorReport[]; warnings: string[] }> {
  const retention: Record<string, RuleReport> = {};
  const errors: ErrorReport[] = [];
  const warnings: string[] = [];
  const cutoffMs = (options.startedMs ?? Date.now()) - INCOMPLETE_GRACE_MS;
  for (const [i, rule] of instance.rules.entries()) {
    const dir = ruleDir(instance, rule);
    try {
      const folder = new LocalFolderTarget(deps.fs, dir);
      const given = options.scans?.[i];
      if (given && 'error' in given) throw given.error;
      const scan = given ? given.scan : await folder.scan();
      for (const warning of scanWarnings(scan)) {
        warnings.push(warning);
        deps.log.warn({ rule: rule.name, dir, foreign: scan.foreign?.length ?? 0 }, warning);
      }
      const fresh = await freshIncomplete(deps, dir, scan.events, cutoffMs);
      // A dry run of `once` shows the plan as it will be once the pending snapshot exists (archived last).
      let events: FolderEvent[] = options.pretend && !scan.events.some((e) => e.ts === options.pretend)
        ? [{ ts: options.pretend, kinds: ['rdb'], seq: Number.MAX_SAFE_INTEGER }, ...scan.events]
        : scan.events;
      if (fresh.size > 0) events = events.filter((e) => !fresh.has(e.ts));
      const plan = planRetention(events, rule, instance.timezone, { protect: options.protect });
      for (const ts of fresh) plan.keep.push({ ts, reason: 'incomplete event (no .rdb) modified during this run: left for a later run' });
      retention[rule.name] = plan;
      if (options.dryRun) continue;
      const applied = await folder.applyRetention(scan, plan);
      for (const path of applied.skipped) deps.log.warn({ path, rule: rule.name }, 'left alone: not a regular file owned by this user');
      if (applied.deleted.length > 0 || applied.tempsRemoved.length > 0) {
        deps.log.info({ rule: rule.name, deleted: applied.deleted, tempsRemoved: applied.tempsRemoved.length }, 'pruned');
      }
    } catch (err) {
      const report: ErrorReport = { ...errorReport(err), rule: rule.name, stage: 'retention' };
      errors.push(report);
      deps.log.error({ rule: rule.name, dir, err: report.message }, 'retention skipped for this folder');
    }
  }
  return { retention, errors, warnings };
}

/**
 * Runs body under the instance lock. When body succeeded but the lock cannot
 * be removed, onReleaseError decides how the run reports it (the next run
 * takes the stale lock over); when body failed, its error is the one reported.
 */
async function withLock<T>(
  deps: CycleDeps,
  instance: InstanceConfig,
  command: string,
  body: () => Promise<T>,
  onReleaseError: (err: unknown) => void,
): Promise<T> {
  // `once` waits (bounded) for a running `prune` instead of skipping this snapshot, and for a manual
  // `verify` or `drill` recording its result (they hold the lock only to write the state); anything else gives up at once.
  const wait = command === 'once' ? { waitFor: ['prune', 'verify', 'drill'], waitMs: PRUNE_WAIT_MS } : {};
  const lock: HeldLock = await acquireLock(deps.fs, lockPathFor(instance), command, instance.dirMode, wait);
  let result: T;
  try {
    result = await body();
  } catch (err) {
    await lock.release().catch((e) => deps.log.warn({ err: String((e as Error)?.message ?? e) }, 'could not release the lock'));
    throw err;
  }
  try {
    await lock.release();
  } catch (err) {
    deps.log.error({ err: String((err as Error)?.message ?? err) }, 'could not release the lock; the next run takes it over');
    onReleaseError(err);
  }
  return result;
}

const CURRENT_REASON = 'the source\'s current content (last archived), kept whatever its timestamp';

/** What retention must keep whatever the timestamps: the event last archived (the source's current content, as far as the state knows). */
function protectionFromState(state: State): Map<Timestamp, string> {
  const ts = state.archived ? parseTimestamp(state.archived.ts) : undefined;
  return new Map(ts ? [[ts, CURRENT_REASON]] : []);
}

/**
 * The protection when the state cannot tell (missing, corrupt, or from before
 * any archive): the events holding the source's current content, found in the
 * archive itself. The most recently archived event of each folder is kept by
 * the planner anyway.
 */
async function protectionFromArchive(deps: CycleDeps, instance: InstanceConfig, log: Log, scanned: ReadonlyArray<RuleFolderScan>): Promise<Map<Timestamp, string>> {
  // A folder that cannot be scanned holds nothing to protect here (its retention fails and is reported).
  const scans: FolderScan[] = scanned.map((s) => ('scan' in s ? s.scan : { dir: '', events: [], temps: [] }));
  const held = await eventsHoldingSource(deps.fs, log, instance, scans);
  return new Map(held.map((ts) => [ts, 'holds the source\'s current content (sha256 matches; found without the state file), kept whatever its timestamp']));
}

/** A rule folder's scan, or why it failed (that folder's retention then fails alone). */
export type RuleFolderScan = { scan: FolderScan } | { error: unknown };

/**
 * Scans every rule folder once, for a `prune` that needs the listings twice
 * (the protection without a state, then the plan): at 100k events a scan is
 * a readdir of 200k names and 100k lstats. Both uses run under one lock
 * hold, so nothing of ours changes the folders in between.
 */
async function scanRuleFolders(deps: CycleDeps, instance: InstanceConfig): Promise<RuleFolderScan[]> {
  const out: RuleFolderScan[] = [];
  for (const rule of instance.rules) {
    try {
      out.push({ scan: await new LocalFolderTarget(deps.fs, ruleDir(instance, rule)).scan() });
    } catch (err) {
      out.push({ error: err });
    }
  }
  return out;
}

/** Scans every rule folder (a folder that does not exist yet has no events). */
async function scanAll(deps: CycleDeps, instance: InstanceConfig): Promise<{ scans: FolderScan[]; errors: unknown[] }> {
  const scans: FolderScan[] = [];
  const errors: unknown[] = [];
  for (const rule of instance.rules) {
    const dir = ruleDir(instance, rule);
    try {
      scans.push(await scanFolder(deps.fs, dir));
      errors.push(undefined);
    } catch (err) {
      // That folder fails alone (the worker reports it); the others are still archived into.
      scans.push({ dir, events: [], temps: [] });
      errors.push(err);
    }
  }
  return { scans, errors };
}

/**
 * Item 14: the files of the event last archived are still there (a cheap
 * lstat of its .rdb, sidecar and archive record in each folder, no hashing). The names of the
 * folders and files that are gone; empty when all are present.
 */
async function missingArchivedFiles(deps: CycleDeps, instance: InstanceConfig, state: State): Promise<string[]> {
  const ts = state.archived ? parseTimestamp(state.archived.ts) : undefined;
  if (!ts) return [];
  const gone: string[] = [];
  // Its archive record too: without it the event ranks below older ones, and `restore latest` refuses.
  const seq = state.archived!.seq;
  const recorded = typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 1 && seq <= MAX_SEQ;
  for (const rule of instance.rules) {
    for (const kind of recorded ? (['rdb', 'sha256', 'meta'] as const) : (['rdb', 'sha256'] as const)) {
      const path = join(ruleDir(instance, rule), eventFileName(kind, ts, seq));
      // (a folder that cannot be looked at counts as missing it: the worker then reports that folder)
      const info = await lstatIfExists(deps.fs, path).catch(() => undefined);
      if (!info || info.kind !== 'file') gone.push(path);
    }
  }
  return gone;
}

/** A source mtime that contradicts the archive order, or undefined. */
export function detectClockJump(
  archived: { ts: Timestamp; mtimeMs: number },
  previous: { ts: Timestamp } | undefined,
  nowMs: number,
): ClockJump | undefined {
  const at = new Date(nowMs).toISOString();
  const sourceMtime = new Date(archived.mtimeMs).toISOString();
  if (archived.mtimeMs > nowMs + FUTURE_TOLERANCE_MS) {
    return { kind: 'future', ts: archived.ts, sourceMtime, at, offsetMs: archived.mtimeMs - nowMs };
  }
  if (previous && withOrdinal(archived.ts, 0) < withOrdinal(previous.ts, 0)) {
    return { kind: 'backwards', ts: archived.ts, previousTs: previous.ts, sourceMtime, at, offsetMs: timestampToMs(previous.ts) - timestampToMs(archived.ts) };
  }
  return undefined;
}

/**
 * No sequence number is left after `highest`: a record name or a state that
 * rdb-archiver did not write (one run adds one). Refusing is loud (check sees
 * the failed run); writing a number no name can hold would silently make
 * every later event rank below the old ones.
 */
function sequenceExhausted(scans: readonly FolderScan[], highest: number, statePath: string): ConflictError {
  const holder = scans.flatMap((scan) => scan.events.filter((e) => e.seq === highest).map((e) => `${scan.dir}/${eventFileName('meta', e.ts, e.seq)}`))[0];
  return new ConflictError(holder ?? statePath,
    `archive sequence number ${highest} leaves no higher number an archive record's name can hold: it was not written by rdb-archiver; ` +
    'nothing was archived. Remove that file (or the "seq" of the state file) and run again');
}

/** Whether the instance's snapshots come over the network (source.redis mode replicate), not from a local file. */
export function isNetworkSource(instance: InstanceConfig): boolean {
  return instance.redis?.mode === 'replicate';
}

interface Polled {
  detection: Detection;
  job?: SnapshotJob;
  jobFor(reason: ChangeReason): SnapshotJob;
}

/**
 * Asks the source whether it holds a new snapshot. A local file: an mtime
 * poll. source.redis: INFO's persistence identity (replicate), or a BGSAVE
 * awaited first (bgsave). The Redis modules load only here, so a local-file
 * run never loads them.
 */
async function pollSource(deps: CycleDeps, instance: InstanceConfig, state: State, force: boolean): Promise<Polled> {
  if (isNetworkSource(instance)) {
    const { pollRedis } = await import('../sources/poll.js');
    const shard = instance.shard;
    if (!shard) return pollRedis(instance, state.archived, force);
    // A shard this run cannot pull (the discovery failed): its run fails with that error, visible in its state.
    if (shard.failure) throw shard.failure;
    if (!shard.master) throw new RedisSourceError('source-network', instance.redis!.url, 'cluster discovery', `no master serves the slots ${shard.slots} (the cluster announces none): nothing archived for this shard`);
    const { endpointOf } = await import('../sources/redis.js');
    return pollRedis(instance, state.archived, force, { endpoint: endpointOf(instance.redis!, shard.master.host, shard.master.port), slots: shard.slots, nodeId: shard.master.id });
  }
  if (instance.redis?.mode === 'bgsave') {
    const { awaitBgsave } = await import('../sources/bgsave.js');
    await awaitBgsave(deps.fs, deps.log.child({ instance: instance.name }), instance, state.archived, force);
  }
  const polled = await pollOnce(deps.fs, { rdb: instance.sourceRdb, nodes: instance.sourceNodes }, state.archived?.identity, force);
  return {
    ...polled,
    jobFor: (reason) => ({ sourceRdb: instance.sourceRdb, sourceNodes: instance.sourceNodes, identity: polled.detection.identity, reason }),
  };
}

/** The `once` cycle. Never throws: the outcome, including errors, is in the report. */
export async function runOnce(
  deps: CycleDeps,
  instance: InstanceConfig,
  options: { dryRun: boolean; force: boolean },
): Promise<RunReport> {
  const report: RunReport = { instance: instance.name, status: 'failed', snapshot: null, retention: {}, warnings: [], notes: [], ruleErrors: [], exitCode: ExitCode.OK };
  if (instance.shard?.name) {
    const s = instance.shard;
    report.shard = { name: s.name, slots: s.slots, master: s.master ? instance.sourceRdb : null, masterId: s.master?.id ?? null };
  }
  const started = Date.now();
  const log = deps.log.child({ instance: instance.name, ...(deps.trigger ? { trigger: deps.trigger } : {}) });
  /** Whether this run's outcome reached the state file; when a failure did not, a failure record carries it. */
  let stateSaved = false;
  /** Failure records of earlier runs, taken into the state by this run. */
  let absorbed: FoundRecord[] = [];
  /** A dry run: the event a real run would archive (its off-site plan uploads it too). */
  let wouldArchive: Timestamp | undefined;

  const body = async () => {
    const loaded = await loadState(deps.fs, instance.statePath);
    if (loaded.problem) {
      log.warn({ path: instance.statePath }, loaded.problem);
      report.warnings.push(loaded.problem);
    }
    const state = loaded.state;
    // Earlier runs that failed without reaching the state: their records join it now.
    absorbed = await readOwnFailureRecords(deps.fs, instance);
    absorbFailureRecords(state, absorbed);
    try {
      await cycleBody(state);
    } catch (err) {
      recordFailure(state, err);
    }
    // Scheduled checks of what is archived: after the cycle (a new event is archived first),
    // whatever its outcome (a missing source says nothing about the archive).
    if (!options.dryRun) await scheduledChecks(state);
    // The archive describes itself (archive-index.ts): after a good cycle only, so a refused
    // run (a full disk, say) writes nothing. Unchanged content is not rewritten.
    if (!options.dryRun && report.exitCode === ExitCode.OK) {
      await writeArchiveIndex(deps.fs, instance).catch((err) => recordFailure(state, err));
    }
    // An archived event known bad (this run's verification or drill, or an earlier one's that
    // still stands): the run's own work went fine, but it must not say OK (exit 81).
    if (!options.dryRun && report.exitCode === ExitCode.OK) markKnownBad(state);
    // Hooks run under the lock, after archive and retention; they never change the report.
    if (!options.dryRun) {
      await runCycleHooks({ log, signal: deps.signal }, instance, state, report);
      state.lastRun = {
        at: new Date(started).toISOString(),
        result: report.status,
        exitCode: report.exitCode,
        durationMs: Date.now() - started,
        ...(report.error ? { error: report.error.message } : {}),
        ...(report.ruleErrors.length > 0 ? { ruleErrors: report.ruleErrors.map(toRuleErrorRecord) } : {}),
      };
      // Exit 81 is a success of the run itself (archived or unchanged): the bad event is the verification's finding,
      // reported by check and the verify/drill metrics, and must not stop the last-success clock.
      const succeeded = report.exitCode === ExitCode.OK || report.exitCode === ExitCode.ARCHIVE_BAD;
      if (succeeded) state.lastSuccessAt = state.lastRun.at;
      else state.lastFailure = { at: state.lastRun.at, command: deps.command ?? 'once', exitCode: report.exitCode, ...(report.error ? { error: report.error.message } : {}) };
      bumpCounter(state, `runs_${report.exitCode === ExitCode.OK ? 'ok' : succeeded ? 'bad_event' : 'failed'}`);
      try {
        await settleRemoteQueue(deps.fs, instance, state);
        await saveState(deps.fs, instance.statePath, state, instance.dirMode, { durable: report.status !== 'unchanged' });
        stateSaved = true;
      } catch (err) {
        // The run already failed: report that first cause, not this consequence (a full disk fails both).
        if (report.exitCode === ExitCode.OK) throw err;
        const message = `the state file could not be written either: ${errorReport(err).message}`;
        report.warnings.push(message);
        log.error({ err: message }, 'state not saved');
      }
    }
  };

  const scheduledChecks = async (state: State) => {
    const verified = await runScheduledVerify({ fs: deps.fs, log }, instance, state.verify);
    if (verified) {
      state.verify = verified;
      report.verify = verified;
      bumpCounter(state, 'verify_runs');
      if (verified.bad.length > 0) bumpCounter(state, 'verify_runs_bad');
      for (const b of verified.bad) report.warnings.push(`scheduled verification: ${badEventText(b)}`);
      if (verified.error) report.warnings.push(`scheduled verification failed: ${verified.error}`);
    }
    const everyMs = instance.drill?.everyMs;
    if (everyMs !== undefined && !deps.signal?.aborted && drillDue(state.drill, everyMs, Date.now())) {
      const drilled = await runDrill({ fs: deps.fs, log, signal: deps.signal }, instance, 'latest');
      state.drill = drilled;
      report.drill = drilled;
      bumpCounter(state, 'drill_runs');
      if (drilled.status !== 'loaded') report.warnings.push(drillText(drilled));
    }
  };

  const markKnownBad = (state: State) => {
    const present = new Set(Object.values(report.retention).flatMap((plan) => plan.keep.map((d) => d.ts)));
    const bad = knownBad(state, present, { verifyAt: report.verify?.at, drillAt: report.drill?.at });
    if (bad.length === 0) return;
    report.knownBad = bad;
    report.exitCode = withKnownBad(report.exitCode, bad);
    for (const b of bad) {
      if (b.fresh) continue; // this run's finding: already a warning of its own
      const w = knownBadText(b);
      report.warnings.push(w);
      log.warn({ ts: b.ts, by: b.by, foundAt: b.at }, w);
    }
  };

  const recordFailure = (state: State, err: unknown) => {
    markFailed(report, err, log, 'run failed');
    // A rule folder that failed before this error is the first cause (a dying disk
    // fails one call after another): it is the one reported; this one is said too.
    const first = report.ruleErrors[0];
    if (first) {
      report.warnings.push(`then the run stopped: ${report.error!.message}`);
      report.error = first;
      report.exitCode = first.exitCode as ExitCodeValue;
    }
    if (err instanceof InvalidSnapshotError && pendingJob) {
      state.rejected = { identity: pendingJob.identity, reason: err.reason, at: new Date().toISOString() };
    }
  };

  let pendingJob: SnapshotJob | undefined;
  let archiveDev: string | undefined;
  const cycleBody = async (state: State) => {
    const polled = await pollSource(deps, instance, state, options.force);
    const { detection } = polled;
    if (archiveDev !== undefined && archiveDev === detection.identity.dev) {
      const note = sameFilesystemWarning(instance.archiveDir, instance.sourceRdb, instance.remotes.map((r) => r.name));
      report.notes.push(note);
      logNote(deps, log, instance.archiveDir, note);
    }
    let job = polled.job;
    if (!job) {
      // The event last archived must still exist: if it was deleted, archive the source again.
      const gone = await missingArchivedFiles(deps, instance, state);
      if (gone.length > 0) {
        const w = `the event last archived (${state.archived!.ts}) is missing ${gone.join(', ')}: archiving the source again`;
        report.warnings.push(w);
        log.warn({ missing: gone }, w);
        job = polled.jobFor('event-missing');
      }
    }
    // The event holding the source's current content is kept whatever its timestamp: an
    // event with a skewed (future) name must never push it out, in this run or a later one.
    const protect = protectionFromState(state);
    let pretend: Timestamp | undefined;
    if (!job) {
      report.status = 'unchanged';
      log.debug({ source: instance.sourceRdb, ts: state.archived?.ts }, 'source unchanged since the last archived snapshot');
    } else if (options.dryRun) {
      report.status = 'would-archive';
      pretend = timestampFromMs(isNetworkSource(instance) ? Date.now() : Number(BigInt(detection.identity.mtimeNs) / 1_000_000n));
      wouldArchive = pretend;
      protect.clear(); // the pending snapshot (archived last, so kept) will be the source's current content
    } else {
      pendingJob = job;
      // The copy will want the validation thread: let it boot while the folders are scanned.
      if (!isNetworkSource(instance)) prestartValidationThread(job.identity.size, COPY_CHUNK_BYTES);
      // The archive order: the next sequence number, after the state's and every one in the folders' names
      // (a lost or older state file must never hand out a number twice).
      const { scans, errors: scanErrors } = await scanAll(deps, instance);
      const previous = latestArchived(scans.flatMap((scan) => scan.events.filter((e) => e.kinds.includes('rdb'))));
      const highest = scans.reduce((max, scan) => scan.events.reduce((m, e) => Math.max(m, e.seq ?? 0), max), state.seq ?? 0);
      if (highest >= MAX_SEQ) throw sequenceExhausted(scans, highest, instance.statePath);
      const target: ArchiveTarget = { seq: highest + 1, scans, scanErrors };
      const onFolderFailure = (f: FolderFailure) => report.ruleErrors.push({ ...errorReport(f.error), rule: f.rule, stage: 'archive' });
      const queue = new JobQueue<SnapshotJob, SnapshotResult>((j) => archiveSnapshot({ fs: deps.fs, log, instance, signal: deps.signal, onFolderFailure }, j, target), jobKey);
      let result: SnapshotResult | undefined;
      try {
        result = await queue.push(job);
      } catch (err) {
        // No folder could take the snapshot, each for its own reason (full, read-only,
        // failing): a folder-level failure, so every folder is still pruned below.
        if (!(err instanceof FoldersFailedError)) throw err;
        report.status = 'failed';
        log.error({ rules: err.failures.map((f) => f.rule) }, 'no rule folder could take the snapshot');
      }
      if (result) {
        report.warnings.push(...result.warnings);
        report.status = 'archived';
        report.snapshot = {
          ts: result.ts,
          bytes: result.bytes,
          sha256: result.sha256,
          rules: Object.keys(result.files),
          nodes: result.nodes !== undefined,
          ...(result.nodes?.changed ? { nodesChanged: result.nodes.changed } : {}),
          outcome: result.outcome,
          ...(result.copy ? { copy: result.copy } : {}),
        };
        // The state advances now: the event is durable in every rule folder that could take it,
        // and names the ones that could not (the next run links it in there: see missingArchivedFiles).
        const failedRules = result.failed.map((f) => f.rule);
        state.archived = {
          identity: result.identity, ts: result.ts, seq: result.seq, sha256: result.sha256, bytes: result.bytes, at: new Date().toISOString(),
          ...(result.nodes?.changed ? { nodesChanged: result.nodes.changed } : {}),
          ...(failedRules.length > 0 ? { missingIn: failedRules } : {}),
          ...(result.server ? { server: result.server } : {}),
        };
        state.seq = Math.max(state.seq ?? 0, result.seq);
        delete state.rejected;
        // A corrupt .rdb of this event was quarantined and replaced from the source (once --force): the
        // verification findings about those copies no longer stand (the new copy was checked as it was written).
        if (result.replaced && state.verify?.bad.some((b) => b.ts === result.ts)) {
          const rewritten = new Set(result.replaced.map((rule) => pairKey(rule, result.ts)));
          state.verify = { ...state.verify, bad: mergeBad(state.verify.bad, [], rewritten, new Set(), new Set(), state.verify.at) };
        }
        // The recovery point lag: Redis finished the save at the source's mtime (a pulled snapshot: the
        // server's clock when the transfer was requested; its identity has no mtime); the event is durable now.
        const mtimeMs = result.server ? Date.parse(result.server.takenAt) : Number(BigInt(result.identity.mtimeNs) / 1_000_000n);
        const durableMs = Date.now();
        if (result.outcome === 'archived') {
          recordLag(state, {
            seconds: (durableMs - mtimeMs) / 1000, ts: result.ts, sourceMtime: new Date(mtimeMs).toISOString(),
            durableAt: new Date(durableMs).toISOString(), trigger: deps.trigger ?? 'once',
          });
        }
        queueForRemotes(state, instance, result);
        protect.clear();
        protect.set(result.ts, 'archived by this run (the source\'s current content), kept whatever its timestamp');
        const detected = result.outcome === 'archived' && result.seq === target.seq
          ? detectClockJump({ ts: result.ts, mtimeMs: result.server ? Date.parse(result.server.takenAt) : Number(BigInt(result.identity.mtimeNs) / 1_000_000n) }, previous, Date.now())
          : undefined;
        const jump = detected?.kind === 'backwards' && result.revertedTo ? { ...detected, revertedTo: result.revertedTo } : detected;
        if (jump) {
          state.clock = jump;
          bumpCounter(state, 'clock_jumps');
          const w = clockJumpText(jump, instance.sourceRdb);
          report.warnings.push(w);
          log.warn({ clock: jump }, w);
        }
        log.info({
          ts: result.ts, seq: result.seq, bytes: result.bytes, sha256: result.sha256, outcome: result.outcome, durationMs: result.durationMs, rdbVersion: result.rdb.version,
          ...(result.outcome === 'archived' ? { lagSeconds: state.lag!.seconds } : {}),
        }, 'snapshot archived');
      }
    }
    // Retention runs after the archive step, also when rule folders failed to take the
    // event: the planner counts only complete events, so a failed write never rotates a
    // good copy out, and a full folder is still cleaned of leftovers and pruned. It is
    // skipped only when the source itself failed (the throw above).
    const pruned = await pruneAll({ ...deps, log }, instance, { dryRun: options.dryRun, protect, pretend, startedMs: started });
    report.retention = pruned.retention;
    report.warnings.push(...pruned.warnings);
    report.ruleErrors.push(...pruned.errors);
    // The exit code of a partly failed run is that of the first failing rule, in config order:
    // archive failures first, then retention failures.
    const first = report.ruleErrors[0];
    if (first) {
      report.error = first;
      report.exitCode = first.exitCode as ExitCodeValue;
      if (report.status === 'unchanged') report.status = 'failed';
    }
  };

  try {
    // Before the lock, whose folder would otherwise be made inside a missing archive root.
    const root = await prepareArchiveRoot(deps.fs, instance, { writes: !options.dryRun });
    archiveDev = root.dev;
    for (const note of root.notes) {
      report.notes.push(note);
      logNote(deps, log, instance.archiveDir, note);
    }
    if (options.dryRun) await body();
    else {
      await withLock(deps, instance, 'once', body, (err) => {
        if (report.exitCode !== ExitCode.OK) return;
        report.error = errorReport(err);
        report.exitCode = report.error.exitCode as ExitCodeValue;
      });
    }
  } catch (err) {
    // Locked, or the state itself could not be written.
    report.status = 'failed';
    report.error = errorReport(err);
    report.exitCode = report.error.exitCode as ExitCodeValue;
    if (report.error.kind === 'locked') log.warn({ err: report.error.message }, 'run skipped: another run holds the lock');
    else log.error({ err: report.error.message, kind: report.error.kind }, 'run failed');
  }
  if (!options.dryRun) {
    if (stateSaved) await removeFailureRecords(deps.fs, absorbed);
    else await recordUnsavedFailure(deps, log, instance, deps.command ?? 'once', started, report.exitCode, report.error);
  }
  // Off-site copies, after the instance lock is released: a slow remote never delays local archiving.
  if (!options.dryRun && instance.remotes.length > 0 && report.error?.kind !== 'locked') {
    const offsite = await runOffsite(deps, instance, { explicit: false });
    report.offsite = offsite.remotes;
    // "Archived locally, off-site pending" has its own code; a local failure's code wins.
    if (report.exitCode === ExitCode.OK && offsite.exitCode !== ExitCode.OK) report.exitCode = ExitCode.OFFSITE;
  } else if (options.dryRun && instance.remotes.length > 0 && report.status !== 'failed') {
    // The plan the real run would execute off-site: uploads pending, then each remote's retention.
    const plan = await planOffsite(deps, instance, wouldArchive && { ts: wouldArchive, seq: Number.MAX_SAFE_INTEGER });
    report.offsite = plan.remotes;
    if (report.exitCode === ExitCode.OK && plan.exitCode !== ExitCode.OK) report.exitCode = ExitCode.OFFSITE;
  }
  return report;
}

/**
 * Makes a failure the state file does not hold visible anyway (see
 * failure-record.ts). A run that only found the lock held is no failure:
 * `check` reports a lock held too long by itself.
 */
async function recordUnsavedFailure(
  deps: CycleDeps,
  log: Log,
  instance: InstanceConfig,
  command: FailedCommand,
  started: number,
  exitCode: number,
  error: ErrorReport | undefined,
): Promise<void> {
  if (exitCode === ExitCode.OK || error?.kind === 'locked') return;
  const uid = typeof process.geteuid === 'function' ? process.geteuid() : 0;
  await writeFailureRecord(deps.fs, log, instance, {
    version: 1,
    instance: instance.name,
    statePath: instance.statePath,
    command,
    at: new Date(started).toISOString(),
    exitCode,
    kind: error?.kind ?? 'internal',
    error: error?.message ?? 'failed',
    user: userName(uid),
    pid: process.pid,
  });
}

/** The `prune` command: retention alone, under the same lock. */
export async function runPrune(deps: CycleDeps, instance: InstanceConfig, options: { dryRun: boolean }): Promise<PruneReport> {
  const log = deps.log.child({ instance: instance.name });
  const started = Date.now();
  const report: PruneReport = { instance: instance.name, dryRun: options.dryRun, retention: {}, warnings: [], errors: [], exitCode: ExitCode.OK };
  const body = async () => {
    const loaded = await loadState(deps.fs, instance.statePath);
    let protect = protectionFromState(loaded.state);
    let scans: RuleFolderScan[] | undefined;
    if (loaded.problem || !loaded.state.archived) {
      // Without a usable state, find the source's content in the archive itself (slower: reads files).
      const w = `${loaded.problem ?? `state file ${instance.statePath} is missing or has no archived snapshot`}: retention keeps the event holding the source's current content (by sha256) and the most recently archived event of each folder`;
      report.warnings.push(w);
      log.warn({ path: instance.statePath }, w);
      scans = await scanRuleFolders(deps, instance);
      protect = await protectionFromArchive(deps, instance, log, scans);
    }
    const pruned = await pruneAll({ ...deps, log }, instance, { dryRun: options.dryRun, protect, startedMs: started, scans });
    report.retention = pruned.retention;
    report.errors = pruned.errors;
    if (!options.dryRun && report.errors.length === 0) {
      await writeArchiveIndex(deps.fs, instance).catch((err) => report.errors.push(errorReport(err)));
    }
    if (!options.dryRun) await runPruneHooks({ fs: deps.fs, log, signal: deps.signal }, instance, report);
    if (!options.dryRun && report.errors.length === 0) {
      await absorbPruneFailures(deps.fs, instance).catch((err) => log.warn({ err: errorReport(err).message }, 'could not take earlier failure records into the state'));
    }
  };
  try {
    await prepareArchiveRoot(deps.fs, instance, { writes: !options.dryRun });
    if (options.dryRun) await body();
    else await withLock(deps, instance, 'prune', body, (err) => report.errors.push(errorReport(err)));
  } catch (err) {
    report.errors.push(errorReport(err));
    log.error({ err: String((err as Error).message ?? err) }, 'prune failed');
  }
  if (report.errors.length > 0) report.exitCode = report.errors[0]!.exitCode as ExitCodeValue;
  // prune keeps no run record in the state: its failures always go to a failure record.
  if (!options.dryRun) await recordUnsavedFailure(deps, log, instance, 'prune', started, report.exitCode, report.errors[0]);
  return report;
}

/**
 * A good prune (under the lock) takes the records of failed prunes into the
 * state and removes them; a failed `once`'s record waits for a good `once`,
 * the run that proves the archive can be written again.
 */
async function absorbPruneFailures(fs: FileSystem, instance: InstanceConfig): Promise<void> {
  const found = (await readOwnFailureRecords(fs, instance)).filter((f) => f.record.command === 'prune');
  if (found.length === 0) return;
  const { state } = await loadState(fs, instance.statePath);
  absorbFailureRecords(state, found);
  await saveState(fs, instance.statePath, state, instance.dirMode);
  await removeFailureRecords(fs, found);
}

/** One line about a clock jump, for the log, `status` and `check`. */
export function clockJumpText(jump: ClockJump, source: string): string {
  const hours = (jump.offsetMs / 3_600_000).toFixed(1);
  if (jump.kind === 'backwards' && jump.revertedTo) {
    return `source went back to older content: ${source} holds the content of ${jump.revertedTo} again (mtime ${jump.sourceMtime}); archived as a new event ${jump.ts}, the latest (after ${jump.previousTs})`;
  }
  return jump.kind === 'future'
    ? `source clock ahead: ${source} has the mtime ${jump.sourceMtime}, ${hours} h in the future (archived as ${jump.ts})`
    : `source clock stepped back: snapshot ${jump.ts} (mtime ${jump.sourceMtime}) is stamped ${hours} h before ${jump.previousTs}, archived before it`;
}
