/**
 * The off-site phase of a run: after the local cycle (and after it released
 * the instance lock), each remote with pending events uploads them, oldest
 * first, then applies its own retention.
 *
 * Cheap when there is nothing to do: the queue is in the state file the
 * local cycle just read; a remote with nothing pending costs one small file
 * read and never loads the S3 SDK. A remote that keeps failing is retried
 * with bounded backoff by unattended runs (once, daemon), so a dead endpoint
 * does not make every cron run slow; `push` always tries.
 */
import type { InstanceConfig, RemoteConfig } from '../core/config.js';
import { findEvent, scanRules } from '../commands/catalog.js';
import { errorReport, type ErrorReport } from '../pipeline/cycle.js';
import { ExitCode, TryAgainError, type ExitCodeValue } from '../core/errors.js';
import type { FileSystem } from '../core/fs.js';
import { acquireLock } from '../pipeline/lock.js';
import type { Log } from '../core/log.js';
import { loadState } from '../pipeline/state.js';
import type { Timestamp } from '../core/timestamp.js';
import { S3Target } from '../targets/s3.js';
import { pruneRemote, type RemotePruneReport } from './prune.js';
import {
  backoffMs, inBackoff, loadRemoteState, pendingFor, remoteLockPath, remoteStatePath, saveRemoteState, trimToQueue,
  type OffsiteItem, type RemoteState,
} from './state.js';
import { uploadEvent } from './upload.js';

/** 'planned': a dry run (`once --dry-run`) that only says what a real run would do. */
export type RemoteRunStatus = 'idle' | 'uploaded' | 'pending' | 'backoff' | 'busy' | 'failed' | 'planned';

export interface RemoteRunReport {
  remote: string;
  status: RemoteRunStatus;
  uploaded: Timestamp[];
  /** Still waiting for this remote after the run, oldest first. */
  pending: Timestamp[];
  /** Given up: the event is gone locally (pruned) or the remote holds other content under its name. */
  lost: Array<{ ts: Timestamp; reason: string }>;
  bytesUploaded: number;
  nextAttemptAt?: string;
  retention?: RemotePruneReport;
  error?: ErrorReport;
  warnings: string[];
}

export interface OffsiteReport {
  remotes: RemoteRunReport[];
  /** 0, or the code of the first remote problem (76 off-site pending, 77 credentials refused). */
  exitCode: ExitCodeValue;
}

export interface OffsiteDeps {
  fs: FileSystem;
  log: Log;
  signal?: AbortSignal;
}

export interface OffsiteOptions {
  /** `push`: ignore the backoff. */
  explicit: boolean;
  /** Only this remote. */
  only?: string;
}

/** The exit code a report stands for: pending or failed work is 76 (or the remote error's own code). */
function exitCodeOf(reports: readonly RemoteRunReport[]): ExitCodeValue {
  for (const r of reports) {
    if (r.error) return r.error.exitCode as ExitCodeValue;
    if (r.pending.length > 0 || r.retention?.errors.length) return ExitCode.OFFSITE;
  }
  return ExitCode.OK;
}

export async function runOffsite(deps: OffsiteDeps, instance: InstanceConfig, options: OffsiteOptions): Promise<OffsiteReport> {
  const remotes = instance.remotes.filter((r) => options.only === undefined || r.name === options.only);
  const reports: RemoteRunReport[] = [];
  if (remotes.length === 0) return { remotes: reports, exitCode: ExitCode.OK };
  const log = deps.log.child({ instance: instance.name });
  const { state } = await loadState(deps.fs, instance.statePath);
  const queue = state.offsite?.queue ?? [];
  const protect = state.archived?.ts as Timestamp | undefined;
  for (const remote of remotes) {
    const rlog = log.child({ remote: remote.name });
    let report: RemoteRunReport;
    try {
      report = await runRemote({ ...deps, log: rlog }, instance, remote, queue, protect, options);
    } catch (err) {
      // Our own state or lock could not be handled: the remote's work is still pending.
      const error = errorReport(err);
      rlog.error({ err: error.message }, 'off-site run failed');
      report = { remote: remote.name, status: 'failed', uploaded: [], pending: queue.map((q) => q.ts), lost: [], bytesUploaded: 0, error, warnings: [] };
    }
    reports.push(report);
  }
  return { remotes: reports, exitCode: exitCodeOf(reports) };
}

async function runRemote(
  deps: OffsiteDeps,
  instance: InstanceConfig,
  remote: RemoteConfig,
  queue: readonly OffsiteItem[],
  protect: Timestamp | undefined,
  options: OffsiteOptions,
): Promise<RemoteRunReport> {
  const statePath = remoteStatePath(instance, remote);
  const report: RemoteRunReport = { remote: remote.name, status: 'idle', uploaded: [], pending: [], lost: [], bytesUploaded: 0, warnings: [] };
  const first = await loadRemoteState(deps.fs, statePath);
  let pending = pendingFor(queue, first.state);
  report.pending = pending.map((p) => p.ts);
  if (pending.length === 0 && first.state.openUploads.length === 0 && !options.explicit) return report;
  if (!options.explicit && inBackoff(first.state, Date.now())) {
    report.status = 'backoff';
    report.nextAttemptAt = first.state.nextAttemptAt;
    deps.log.info({ pending: report.pending.length, nextAttemptAt: report.nextAttemptAt }, 'off-site upload postponed: the remote failed recently (backoff)');
    return report;
  }

  let lock;
  try {
    lock = await acquireLock(deps.fs, remoteLockPath(instance, remote), 'push', instance.dirMode);
  } catch (err) {
    if (err instanceof TryAgainError && err.kind === 'locked') {
      report.status = 'busy';
      report.warnings.push(`another run is working on remote ${remote.name}; the pending events stay queued`);
      deps.log.info({ pending: report.pending.length }, 'off-site upload left to the run that holds the remote lock');
      return report;
    }
    throw err;
  }
  let target: S3Target | undefined;
  try {
    const loaded = await loadRemoteState(deps.fs, statePath); // fresh, under the lock
    if (loaded.problem) {
      report.warnings.push(loaded.problem);
      deps.log.warn({ path: statePath }, loaded.problem);
    }
    let rs: RemoteState = trimToQueue(loaded.state, queue);
    pending = pendingFor(queue, rs);
    const now = () => new Date().toISOString();
    const save = () => saveRemoteState(deps.fs, statePath, rs, instance.dirMode);
    try {
      target = await S3Target.open(remote);
      // Multipart uploads a killed run left open.
      for (const open of [...rs.openUploads]) {
        if (await target.abortUpload(open.key, open.uploadId)) rs.openUploads = rs.openUploads.filter((u) => u.uploadId !== open.uploadId);
      }
      const callbacks = {
        onMultipartStarted: async (key: string, uploadId: string) => {
          rs.openUploads.push({ key, uploadId, startedAt: now() });
          await save();
        },
        onMultipartEnded: async (_key: string, uploadId: string) => {
          rs.openUploads = rs.openUploads.filter((u) => u.uploadId !== uploadId);
        },
      };
      if (pending.length > 0) rs.lastAttemptAt = now();
      let scanned: Awaited<ReturnType<typeof scanRules>> | undefined;
      for (const item of pending) {
        scanned ??= await scanRules(deps.fs, instance, instance.rules);
        const loc = findEvent(scanned, item.ts)[0];
        if (!loc) {
          const reason = 'no longer in any local rule folder (pruned before it could be uploaded)';
          rs.lost.push({ ts: item.ts, reason, at: now() });
          rs.counters.lost += 1;
          report.lost.push({ ts: item.ts, reason });
          deps.log.warn({ ts: item.ts }, `event ${item.ts} ${reason}: it will not reach remote ${remote.name}`);
          continue;
        }
        const started = Date.now();
        const result = await uploadEvent({ fs: deps.fs, target, instanceName: instance.name, callbacks, signal: deps.signal }, item, loc);
        if (result.outcome === 'conflict') {
          rs.lost.push({ ts: item.ts, reason: result.reason, at: now() });
          rs.counters.lost += 1;
          report.lost.push({ ts: item.ts, reason: result.reason });
          deps.log.error({ ts: item.ts }, result.reason);
          continue;
        }
        rs.uploaded.push(item.ts);
        report.uploaded.push(item.ts);
        if (result.outcome === 'uploaded') {
          rs.counters.uploads += 1;
          rs.counters.bytesUploaded += result.bytes;
          report.bytesUploaded += result.bytes;
        }
        rs.lastSuccessAt = now();
        rs.consecutiveFailures = 0;
        delete rs.nextAttemptAt;
        delete rs.lastError;
        await save();
        deps.log.info({ ts: item.ts, outcome: result.outcome, bytes: result.outcome === 'uploaded' ? result.bytes : 0, durationMs: Date.now() - started }, 'event uploaded off-site');
      }
      if (pending.length === 0 && rs.lastSuccessAt === undefined && options.explicit) rs.lastSuccessAt = now();
      // Retention after new uploads (or when asked for by push): never because of a failed upload.
      if (report.uploaded.length > 0 || options.explicit) {
        const pruned = await pruneRemote(target, remote, instance.timezone, { dryRun: false, protect, signal: deps.signal });
        report.retention = pruned;
        rs.lastPrune = { at: now(), ok: pruned.errors.length === 0, kept: pruned.kept.length, deleted: pruned.deleted.length, refused: pruned.refused.length, ...(pruned.errors[0] ? { error: pruned.errors[0].message } : {}) };
        if (pruned.errors.length > 0) {
          rs.counters.pruneFailures += 1;
          deps.log.error({ err: pruned.errors[0]!.message }, 'remote retention failed; nothing more deleted this run');
        }
        for (const r of pruned.refused) deps.log.warn({ ts: r.ts }, r.reason);
        if (pruned.deleted.length > 0) deps.log.info({ deleted: pruned.deleted.map((d) => d.ts) }, 'remote pruned');
      }
    } catch (err) {
      const error = errorReport(err);
      report.error = error;
      rs.consecutiveFailures += 1;
      rs.counters.failures += 1;
      rs.lastError = { kind: error.kind, message: error.message, at: now() };
      rs.nextAttemptAt = new Date(Date.now() + backoffMs(rs.consecutiveFailures)).toISOString();
      report.nextAttemptAt = rs.nextAttemptAt;
      deps.log.error({ err: error.message, kind: error.kind, nextAttemptAt: rs.nextAttemptAt }, 'off-site upload failed; the event stays pending');
    }
    await save();
    report.pending = pendingFor(queue, rs).map((p) => p.ts);
    report.status = report.error ? 'failed' : report.pending.length > 0 ? 'pending' : report.uploaded.length > 0 ? 'uploaded' : 'idle';
    return report;
  } finally {
    target?.close();
    await lock.release().catch((e: unknown) => deps.log.warn({ err: String((e as Error)?.message ?? e) }, 'could not release the remote lock'));
  }
}

/**
 * `once --dry-run`: what a real run would do off-site, per remote. Uploads
 * nothing and deletes nothing. The real run uploads the pending events (plus
 * `pretend`, the snapshot the dry run would archive), unless the remote is in
 * its backoff, and then applies the remote's retention: planned here over
 * the remote's listing with those events added as if complete. With nothing
 * to upload the real run does not touch the remote, and neither does this.
 */
export async function planOffsite(deps: OffsiteDeps, instance: InstanceConfig, pretend: { ts: Timestamp; seq: number } | undefined): Promise<OffsiteReport> {
  const reports: RemoteRunReport[] = [];
  if (instance.remotes.length === 0) return { remotes: reports, exitCode: ExitCode.OK };
  const { state } = await loadState(deps.fs, instance.statePath);
  const queue = state.offsite?.queue ?? [];
  for (const remote of instance.remotes) {
    const report: RemoteRunReport = { remote: remote.name, status: 'idle', uploaded: [], pending: [], lost: [], bytesUploaded: 0, warnings: [] };
    reports.push(report);
    try {
      const { state: rs } = await loadRemoteState(deps.fs, remoteStatePath(instance, remote));
      const pending: Array<{ ts: Timestamp; seq?: number }> = pendingFor(queue, rs);
      if (pretend && !pending.some((p) => p.ts === pretend.ts)) pending.push(pretend);
      report.pending = pending.map((p) => p.ts);
      if (pending.length === 0) continue;
      if (inBackoff(rs, Date.now())) {
        report.status = 'backoff';
        report.nextAttemptAt = rs.nextAttemptAt;
        continue;
      }
      report.status = 'planned';
      const uploading = pending.map((p) => ({ ts: p.ts, ...(p.seq === undefined ? {} : { seq: p.seq }), complete: true, names: [], objects: [], bytes: 0, modifiedMs: Date.now() }));
      const target = await S3Target.open(remote);
      try {
        const protect = (pretend?.ts ?? state.archived?.ts) as Timestamp | undefined;
        report.retention = await pruneRemote(target, remote, instance.timezone, { dryRun: true, protect, uploading, signal: deps.signal });
      } finally {
        target.close();
      }
      if (report.retention.errors[0]) report.error = report.retention.errors[0];
    } catch (err) {
      report.status = 'failed';
      report.error = errorReport(err);
    }
  }
  return { remotes: reports, exitCode: exitCodeOf(reports.map((r) => ({ ...r, pending: r.error ? r.pending : [] }))) };
}
