/**
 * What `status`, `check` and the metrics report about each remote: read-only,
 * from the state file's queue and the remote's own state file. Never touches
 * the network: a check must answer in milliseconds, even with the remote down.
 */
import type { InstanceConfig, MonitorConfig } from '../core/config.js';
import { errorReport } from '../pipeline/cycle.js';
import type { FileSystem } from '../core/fs.js';
import type { State } from '../pipeline/state.js';
import { lagMs, loadRemoteState, pendingFor, remoteStatePath, type RemoteState } from './state.js';

export interface RemoteFacts {
  remote: string;
  location: string;
  pending: number;
  /** The oldest pending event, and since when it waits (archived at). */
  oldestPending?: { ts: string; archivedAt: string };
  lagSeconds: number;
  /** The same lag, unrounded: thresholds compare against it (a floor to seconds made "> 1s" mean ">= 2s"). */
  lagMs: number;
  state?: RemoteState;
  stateError?: string;
}

export async function inspectRemotes(fs: FileSystem, instance: InstanceConfig, state: State | undefined, nowMs: number): Promise<RemoteFacts[]> {
  const queue = state?.offsite?.queue ?? [];
  const out: RemoteFacts[] = [];
  for (const remote of instance.remotes) {
    const facts: RemoteFacts = { remote: remote.name, location: `s3://${remote.bucket}/${remote.prefix}`, pending: 0, lagSeconds: 0, lagMs: 0 };
    try {
      const loaded = await loadRemoteState(fs, remoteStatePath(instance, remote));
      if (loaded.problem) facts.stateError = loaded.problem;
      facts.state = loaded.state;
      const pending = pendingFor(queue, loaded.state);
      facts.pending = pending.length;
      if (pending[0]) facts.oldestPending = { ts: pending[0].ts, archivedAt: pending[0].archivedAt };
      facts.lagMs = lagMs(pending, nowMs);
      facts.lagSeconds = Math.floor(facts.lagMs / 1000);
    } catch (err) {
      facts.stateError = `remote state file is unreadable: ${errorReport(err).message}`;
    }
    out.push(facts);
  }
  return out;
}

/** Pure: the check's findings about the remotes. 1 = WARNING, 2 = CRITICAL, 3 = UNKNOWN (Nagios). */
export function remoteProblems(remotes: readonly RemoteFacts[], thresholds: MonitorConfig): Array<{ state: 1 | 2 | 3; text: string }> {
  const problems: Array<{ state: 1 | 2 | 3; text: string }> = [];
  const fmt = (s: number) => (s >= 7200 ? `${Math.floor(s / 3600)}h` : s >= 120 ? `${Math.floor(s / 60)}m` : `${s}s`);
  for (const r of remotes) {
    if (r.stateError) problems.push({ state: 3, text: `off-site ${r.remote}: ${r.stateError}` });
    if (r.pending > 0) {
      const why = r.state?.lastError ? `; last error: ${r.state.lastError.message}` : '';
      const text = `off-site ${r.remote}: ${r.pending} event${r.pending === 1 ? '' : 's'} pending, oldest waiting ${fmt(r.lagSeconds)}${why}`;
      if (r.lagMs > thresholds.offsiteCritLagMs) problems.push({ state: 2, text: `${text} (> ${fmt(thresholds.offsiteCritLagMs / 1000)})` });
      else if (r.lagMs > thresholds.offsiteWarnLagMs) problems.push({ state: 1, text: `${text} (> ${fmt(thresholds.offsiteWarnLagMs / 1000)})` });
    }
    const lost = r.state?.lost ?? [];
    if (lost.length > 0) problems.push({ state: 1, text: `off-site ${r.remote}: ${lost.length} event${lost.length === 1 ? '' : 's'} will not reach it (${lost[0]!.ts}: ${lost[0]!.reason})` });
    if (r.state?.lastPrune && !r.state.lastPrune.ok) problems.push({ state: 1, text: `off-site ${r.remote}: remote retention failed at ${r.state.lastPrune.at}: ${r.state.lastPrune.error ?? 'unknown error'}` });
  }
  return problems;
}

/** What `status` shows per remote. */
export interface RemoteStatus {
  remote: string;
  location: string;
  pending: number;
  oldestPending: string | null;
  lagSeconds: number;
  lastSuccessAt: string | null;
  lastError: { message: string; at: string } | null;
  nextAttemptAt: string | null;
  uploads: number;
  bytesUploaded: number;
  lost: Array<{ ts: string; reason: string }>;
  lastPrune: RemoteState['lastPrune'] | null;
  error: string | null;
}

export function remoteStatus(remotes: readonly RemoteFacts[]): RemoteStatus[] {
  return remotes.map((r) => ({
    remote: r.remote,
    location: r.location,
    pending: r.pending,
    oldestPending: r.oldestPending?.ts ?? null,
    lagSeconds: r.lagSeconds,
    lastSuccessAt: r.state?.lastSuccessAt ?? null,
    lastError: r.state?.lastError ? { message: r.state.lastError.message, at: r.state.lastError.at } : null,
    nextAttemptAt: r.state?.nextAttemptAt ?? null,
    uploads: r.state?.counters.uploads ?? 0,
    bytesUploaded: r.state?.counters.bytesUploaded ?? 0,
    lost: (r.state?.lost ?? []).map((l) => ({ ts: l.ts, reason: l.reason })),
    lastPrune: r.state?.lastPrune ?? null,
    error: r.stateError ?? null,
  }));
}

export function remoteStatusLines(remotes: readonly RemoteStatus[]): string[] {
  const lines: string[] = [];
  for (const r of remotes) {
    const waiting = r.pending === 0 ? 'nothing pending' : `${r.pending} pending (oldest ${r.oldestPending}, waiting ${r.lagSeconds}s)`;
    lines.push(`off-site ${r.remote}:`.padEnd(16) + `${r.location}: ${waiting}; last upload ${r.lastSuccessAt ?? 'never'}; ${r.uploads} uploaded`);
    if (r.lastError && r.pending > 0) lines.push(''.padEnd(16) + `last error ${r.lastError.at}: ${r.lastError.message}${r.nextAttemptAt ? `; next attempt after ${r.nextAttemptAt}` : ''}`);
    for (const l of r.lost) lines.push(''.padEnd(16) + `will not reach it: ${l.ts}: ${l.reason}`);
    if (r.lastPrune && !r.lastPrune.ok) lines.push(''.padEnd(16) + `remote retention failed at ${r.lastPrune.at}: ${r.lastPrune.error ?? 'unknown error'}`);
    if (r.error) lines.push(''.padEnd(16) + r.error);
  }
  return lines;
}
