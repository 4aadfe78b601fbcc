/**
 * Remote retention: the same pure planner as the local rule folders
 * (planRetention), fed by the remote listing, and a careful executor.
 *
 * A remote holds one copy per event, so the rules combine: an event stays
 * when any rule keeps it, and goes only when every rule lets it go.
 *
 *  - a failed listing means no deletion at all in this run;
 *  - the newest complete event is never deleted, nor the one the source holds now;
 *  - an event whose manifest cannot be read is kept (we cannot tell what it is);
 *  - the manifest goes first (the event stops counting), then its data objects;
 *  - a delete the server refuses (object-lock retention, legal hold) keeps the
 *    event, reported with that reason;
 *  - events without a manifest and unfinished multipart uploads older than
 *    the grace period are removed: an upload in progress is younger.
 */
import type { RemoteConfig, Rule } from '../core/config.js';
import { errorReport, type ErrorReport, type RuleReport } from '../pipeline/cycle.js';
import { RemoteError } from '../core/errors.js';
import { planRetention, type Decision } from '../pipeline/retention.js';
import type { Timestamp } from '../core/timestamp.js';
import { parseRemoteName, staleIncomplete, staleUploads, type RemoteEvent } from '../targets/manifest.js';
import type { S3Target } from '../targets/s3.js';
import { retentionInput } from '../targets/target.js';
import { sortNewestArchivedFirst } from '../pipeline/event-order.js';
import { readManifest } from './upload.js';

export interface RemotePlan {
  /** Each rule's own plan over the complete events. */
  rules: Record<string, RuleReport>;
  keep: Decision[];
  delete: Decision[];
}

/** Pure: combines the rules' plans over one listing. */
export function planRemoteRetention(events: readonly RemoteEvent[], rules: readonly Rule[], timeZone: string, protect?: Timestamp): RemotePlan {
  const input = retentionInput(events);
  const perRule: Record<string, RuleReport> = {};
  const protected_ = protect ? new Map([[protect, 'the event the source holds now: kept whatever its timestamp']]) : undefined;
  const keptBy = new Map<Timestamp, string>();
  const deletedBy = new Map<Timestamp, string[]>();
  for (const rule of rules) {
    const plan = planRetention(input, rule, timeZone, { protect: protected_ });
    perRule[rule.name] = plan;
    for (const d of plan.keep) if (!keptBy.has(d.ts)) keptBy.set(d.ts, `${rule.name}: ${d.reason}`);
    for (const d of plan.delete) deletedBy.set(d.ts, [...(deletedBy.get(d.ts) ?? []), `${rule.name}: ${d.reason}`]);
  }
  const keep: Decision[] = [];
  const del: Decision[] = [];
  for (const { ts } of input) {
    const kept = keptBy.get(ts);
    if (kept !== undefined) keep.push({ ts, reason: kept });
    else del.push({ ts, reason: (deletedBy.get(ts) ?? []).join('; ') });
  }
  return { rules: perRule, keep, delete: del };
}

export interface RemotePruneReport {
  remote: string;
  dryRun: boolean;
  /** Per rule, the planner's own decisions. */
  rules: Record<string, RuleReport>;
  kept: Decision[];
  deleted: Decision[];
  /** Events the plan let go but that were kept: unreadable manifest, or the server refused the delete. */
  refused: Decision[];
  /** Incomplete events (no manifest) removed after the grace period, or that would be. */
  incompleteRemoved: Timestamp[];
  uploadsAborted: number;
  /** The server cannot list multipart uploads (a bucket lifecycle rule must abort them). */
  uploadsUnsupported: boolean;
  errors: ErrorReport[];
}

export async function pruneRemote(
  target: S3Target,
  remote: RemoteConfig,
  timeZone: string,
  options: {
    dryRun: boolean;
    protect?: Timestamp;
    nowMs?: number;
    signal?: AbortSignal;
    /** Dry run of `once`: events the real run would upload first, planned as if complete at the remote. */
    uploading?: readonly RemoteEvent[];
  },
): Promise<RemotePruneReport> {
  const report: RemotePruneReport = {
    remote: remote.name, dryRun: options.dryRun, rules: {}, kept: [], deleted: [], refused: [], incompleteRemoved: [], uploadsAborted: 0, uploadsUnsupported: false, errors: [],
  };
  const nowMs = options.nowMs ?? Date.now();
  let events: RemoteEvent[];
  try {
    events = await target.listEvents(options.signal);
    if (options.uploading?.length) {
      const listed = new Set(events.filter((e) => e.complete).map((e) => e.ts));
      const added = options.uploading.filter((u) => !listed.has(u.ts));
      events = sortNewestArchivedFirst([...events.filter((e) => !added.some((u) => u.ts === e.ts)), ...added]);
    }
  } catch (err) {
    report.errors.push(errorReport(err)); // no listing: no deletion
    return report;
  }
  const plan = planRemoteRetention(events, remote.rules, timeZone, options.protect);
  report.rules = plan.rules;
  report.kept = [...plan.keep];
  const newest = events.find((e) => e.complete); // the listing is in archive order (event-order.ts)
  const byTs = new Map(events.map((e) => [e.ts, e]));

  for (const decision of [...plan.delete].reverse()) { // oldest first
    if (decision.ts === newest?.ts) {
      report.kept.push({ ts: decision.ts, reason: 'newest complete event: never deleted' });
      continue;
    }
    const event = byTs.get(decision.ts)!;
    if (options.dryRun && options.uploading?.some((u) => u.ts === decision.ts)) {
      report.deleted.push({ ts: decision.ts, reason: `${decision.reason} (uploaded first by this run)` });
      continue;
    }
    try {
      const manifest = await readManifest(target, event, options.signal);
      if (!manifest || 'error' in manifest) {
        report.refused.push({ ts: decision.ts, reason: `kept: its manifest cannot be read (${manifest ? manifest.error : 'gone since the listing'})` });
        continue;
      }
      if (options.dryRun) {
        report.deleted.push(decision);
        continue;
      }
      // Every manifest of the event first (normally one): from then on it no longer counts as complete.
      const manifests = event.objects.filter((o) => parseRemoteName(o.name)?.manifest);
      try {
        for (const m of manifests) await target.delete(m.name, options.signal);
      } catch (err) {
        if (err instanceof RemoteError && err.kind === 'remote-auth') {
          report.refused.push({ ts: decision.ts, reason: `kept: the server refused to delete its manifest (object-lock retention or legal hold?): ${err.message}` });
          continue;
        }
        throw err;
      }
      const leftover: string[] = [];
      for (const obj of event.objects) {
        if (manifests.includes(obj)) continue;
        try {
          await target.delete(obj.name, options.signal);
        } catch (err) {
          if (!(err instanceof RemoteError && err.kind === 'remote-auth')) throw err;
          leftover.push(obj.name);
        }
      }
      if (leftover.length > 0) {
        report.refused.push({ ts: decision.ts, reason: `manifest deleted, but the server refused to delete ${leftover.join(', ')} (object lock?); retried as an incomplete event after the grace period` });
      } else {
        report.deleted.push(decision);
      }
    } catch (err) {
      // The remote failed mid-way: stop; what is left is retried by the next run.
      report.errors.push(errorReport(err));
      return report;
    }
  }

  // Incomplete events and unfinished uploads older than the grace period.
  for (const stale of staleIncomplete(events, nowMs, remote.incompleteGraceMs)) {
    try {
      if (!options.dryRun) for (const obj of stale.objects) await target.delete(obj.name, options.signal);
      report.incompleteRemoved.push(stale.ts);
    } catch (err) {
      report.errors.push(errorReport(err));
      return report;
    }
  }
  try {
    const uploads = await target.listUploads(options.signal);
    if (uploads === 'unsupported') report.uploadsUnsupported = true;
    else {
      for (const u of staleUploads(uploads, remote.prefix, nowMs, remote.incompleteGraceMs)) {
        if (!options.dryRun && !(await target.abortUpload(u.key, u.uploadId))) continue;
        report.uploadsAborted += 1;
      }
    }
  } catch (err) {
    report.errors.push(errorReport(err));
  }
  return report;
}
