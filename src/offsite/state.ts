/**
 * What the off-site work remembers, in two places with one writer each:
 *
 *  - the instance's state file holds the upload queue: one item per event
 *    archived while remotes are configured. Only the local cycle writes it,
 *    under the instance lock.
 *  - remote-<name>.json, next to it, holds one remote's progress: which
 *    queued events it has (uploaded) or can never get (lost: pruned locally
 *    first), its failures and backoff, counters and open multipart uploads.
 *    Only that remote's off-site run writes it, under the remote's lock.
 *
 * So an upload never holds the instance lock (a slow remote never delays
 * local archiving), and no file has two writers. An item leaves the queue
 * once every configured remote is done with it.
 */
import { dirname, join } from 'node:path';
import type { InstanceConfig, RemoteConfig } from '../core/config.js';
import { errorCode, replaceFileAtomic, ensureDir, type FileSystem } from '../core/fs.js';
import { isSeq, parseTimestamp, type Timestamp } from '../core/timestamp.js';
import { newestArchivedFirst } from '../pipeline/event-order.js';

/** One archived event waiting for (some) remotes. */
export interface OffsiteItem {
  ts: Timestamp;
  /** The event's archive sequence number (absent in a queue written before it was recorded). */
  seq?: number;
  bytes: number;
  /** From the local copy pass: what the manifest records and the upload must match. */
  sha256: string;
  rdbVersion: number | null;
  redisVersion: string | null;
  /** When it was archived locally (ISO 8601): off-site lag is measured from here. */
  archivedAt: string;
}

export interface RemoteState {
  version: 1;
  /** Queued events this remote holds (complete, manifest written). */
  uploaded: Timestamp[];
  /** Queued events this remote will never get, with why (pruned locally before they could be uploaded). */
  lost: Array<{ ts: Timestamp; reason: string; at: string }>;
  consecutiveFailures: number;
  /** Unattended runs (once, daemon) make no attempt before this (ISO 8601); `push` ignores it. */
  nextAttemptAt?: string;
  lastAttemptAt?: string;
  lastSuccessAt?: string;
  lastError?: { kind: string; message: string; at: string };
  /** The last remote retention run. */
  lastPrune?: { at: string; ok: boolean; error?: string; kept: number; deleted: number; refused: number };
  /** Multipart uploads started and not yet completed or aborted: a killed run's are aborted by the next. */
  openUploads: Array<{ key: string; uploadId: string; startedAt: string }>;
  counters: { uploads: number; bytesUploaded: number; failures: number; pruneFailures: number; lost: number };
}

export function emptyRemoteState(): RemoteState {
  return { version: 1, uploaded: [], lost: [], consecutiveFailures: 0, openUploads: [], counters: { uploads: 0, bytesUploaded: 0, failures: 0, pruneFailures: 0, lost: 0 } };
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** The queue from a state file, defensively: malformed items are dropped. Oldest first. */
export function parseQueue(raw: unknown): OffsiteItem[] {
  const list = (raw as { queue?: unknown } | undefined)?.queue;
  if (!Array.isArray(list)) return [];
  const out: OffsiteItem[] = [];
  for (const v of list) {
    const o = v as Partial<OffsiteItem>;
    const ts = isStr(o?.ts) ? parseTimestamp(o.ts) : undefined;
    if (!ts || !isNum(o.bytes) || !isStr(o.sha256) || !/^[0-9a-f]{64}$/.test(o.sha256) || !isStr(o.archivedAt)) continue;
    out.push({ ts, ...(isNum(o.seq) && isSeq(o.seq) ? { seq: o.seq } : {}), bytes: o.bytes, sha256: o.sha256, rdbVersion: isNum(o.rdbVersion) ? o.rdbVersion : null, redisVersion: isStr(o.redisVersion) ? o.redisVersion : null, archivedAt: o.archivedAt });
  }
  return sortOldestFirst(out);
}

/** Archive order (event-order.ts), the least recently archived first: the order uploads go in. */
function sortOldestFirst(items: OffsiteItem[]): OffsiteItem[] {
  return items.sort((a, b) => newestArchivedFirst(b, a));
}

/** Adds (or refreshes) an item; one item per timestamp. */
export function enqueue(queue: readonly OffsiteItem[], item: OffsiteItem): OffsiteItem[] {
  return sortOldestFirst([...queue.filter((q) => q.ts !== item.ts), item]);
}

/** The items a remote still has to upload, oldest first. */
export function pendingFor(queue: readonly OffsiteItem[], state: RemoteState): OffsiteItem[] {
  const done = new Set<string>([...state.uploaded, ...state.lost.map((l) => l.ts)]);
  return queue.filter((q) => !done.has(q.ts));
}

/** The queue without the items every configured remote is done with. */
export function settleQueue(queue: readonly OffsiteItem[], states: readonly RemoteState[]): OffsiteItem[] {
  return queue.filter((q) => states.some((s) => pendingFor([q], s).length > 0));
}

/** A remote's records trimmed to what is still queued (the rest is settled). */
export function trimToQueue(state: RemoteState, queue: readonly OffsiteItem[]): RemoteState {
  const queued = new Set<string>(queue.map((q) => q.ts));
  return { ...state, uploaded: state.uploaded.filter((ts) => queued.has(ts)), lost: state.lost.filter((l) => queued.has(l.ts)) };
}

export const BACKOFF_BASE_MS = 60_000;
export const BACKOFF_MAX_MS = 30 * 60_000;

/** After n consecutive failed attempts, unattended runs wait 1, 2, 4 ... up to 30 minutes. */
export function backoffMs(consecutiveFailures: number): number {
  if (consecutiveFailures <= 0) return 0;
  return Math.min(BACKOFF_BASE_MS * 2 ** Math.min(consecutiveFailures - 1, 20), BACKOFF_MAX_MS);
}

export function inBackoff(state: RemoteState, nowMs: number): boolean {
  return state.nextAttemptAt !== undefined && Date.parse(state.nextAttemptAt) > nowMs;
}

/** How long the oldest pending event has waited (ms), 0 when none waits. */
export function lagMs(pending: readonly OffsiteItem[], nowMs: number): number {
  if (pending.length === 0) return 0;
  const archived = Date.parse(pending[0]!.archivedAt);
  return Number.isFinite(archived) ? Math.max(0, nowMs - archived) : 0;
}

export function parseRemoteState(text: string): RemoteState | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  const o = raw as Partial<RemoteState> | null;
  if (!o || typeof o !== 'object' || o.version !== 1) return undefined;
  const s = emptyRemoteState();
  if (Array.isArray(o.uploaded)) s.uploaded = o.uploaded.map((t) => (isStr(t) ? parseTimestamp(t) : undefined)).filter((t): t is Timestamp => t !== undefined);
  if (Array.isArray(o.lost)) {
    for (const l of o.lost) {
      const ts = isStr(l?.ts) ? parseTimestamp(l.ts) : undefined;
      if (ts) s.lost.push({ ts, reason: isStr(l.reason) ? l.reason : '', at: isStr(l.at) ? l.at : '' });
    }
  }
  if (isNum(o.consecutiveFailures)) s.consecutiveFailures = o.consecutiveFailures;
  for (const k of ['nextAttemptAt', 'lastAttemptAt', 'lastSuccessAt'] as const) if (isStr(o[k])) s[k] = o[k];
  if (o.lastError && isStr(o.lastError.message)) s.lastError = { kind: String(o.lastError.kind), message: o.lastError.message, at: String(o.lastError.at) };
  if (o.lastPrune && isStr(o.lastPrune.at)) s.lastPrune = o.lastPrune;
  if (Array.isArray(o.openUploads)) s.openUploads = o.openUploads.filter((u) => isStr(u?.key) && isStr(u.uploadId));
  if (o.counters && typeof o.counters === 'object') {
    for (const k of Object.keys(s.counters) as Array<keyof RemoteState['counters']>) if (isNum(o.counters[k])) s.counters[k] = o.counters[k];
  }
  return s;
}

export function remoteStatePath(instance: InstanceConfig, remote: Pick<RemoteConfig, 'name'>): string {
  return join(dirname(instance.statePath), `remote-${remote.name}.json`);
}

export function remoteLockPath(instance: InstanceConfig, remote: Pick<RemoteConfig, 'name'>): string {
  return join(dirname(instance.statePath), `remote-${remote.name}.lock`);
}

/** A missing file is a fresh remote; a corrupt one is rebuilt (the bucket is the truth), with `problem` set. */
export async function loadRemoteState(fs: FileSystem, path: string): Promise<{ state: RemoteState; problem?: string }> {
  let text: string;
  try {
    text = (await fs.readFile(path)).toString('utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return { state: emptyRemoteState() };
    throw err;
  }
  const state = parseRemoteState(text);
  return state ? { state } : { state: emptyRemoteState(), problem: `remote state file ${path} is corrupt; rebuilding it (queued events are uploaded again)` };
}

export async function saveRemoteState(fs: FileSystem, path: string, state: RemoteState, dirMode: number): Promise<void> {
  await ensureDir(fs, dirname(path), dirMode);
  await replaceFileAtomic(fs, path, Buffer.from(`${JSON.stringify(state, null, 2)}\n`), 0o600);
}
