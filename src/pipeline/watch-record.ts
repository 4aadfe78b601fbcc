/**
 * What a watching daemon tells `status`, `check` and the metrics about its
 * watch: `<state folder>/watch.json`, one per instance, written only by the
 * daemon (atomically, on every change of mode) and removed when it stops.
 *
 * The daemon may die without removing it (SIGKILL), so the record names its
 * process the way the lock does (host, boot, PID namespace, pid, start time):
 * a reader on the same host sees whether that process still runs.
 */
import { dirname, join } from 'node:path';
import type { FileSystem } from '../core/fs.js';
import { errorCode, replaceFileAtomic, unlinkIfExists } from '../core/fs.js';
import type { FallbackKind, FolderMode } from './source-watch.js';
import { probePid, processStartTime, thisIdentity } from './lock.js';

export interface WatchRecord {
  version: 1;
  pid: number;
  host: string;
  bootId?: string;
  pidNs?: string;
  procStart?: string;
  /** When the daemon started. */
  startedAt: string;
  /** The folder watched (the source's). */
  dir: string;
  debounceMs: number;
  mode: 'watching' | 'fallback';
  /** For 'fallback': why, and what kind of reason. */
  kind?: FallbackKind;
  reason?: string;
  /** Since when this mode holds. */
  since: string;
}

export function watchRecordPath(statePath: string): string {
  return join(dirname(statePath), 'watch.json');
}

export function makeWatchRecord(dir: string, debounceMs: number, startedAt: string, mode: FolderMode): WatchRecord {
  const here = thisIdentity();
  return {
    version: 1,
    pid: process.pid,
    host: here.host,
    ...(here.bootId ? { bootId: here.bootId } : {}),
    ...(here.pidNs ? { pidNs: here.pidNs } : {}),
    ...(processStartTime('self') ? { procStart: processStartTime('self') } : {}),
    startedAt,
    dir,
    debounceMs,
    mode: mode.mode,
    ...(mode.mode === 'fallback' ? { kind: mode.kind, reason: mode.reason } : {}),
    since: mode.since,
  };
}

/** Written without fsync: it describes a running process, which a power cut ends anyway. */
export async function writeWatchRecord(fs: FileSystem, statePath: string, record: WatchRecord): Promise<void> {
  await replaceFileAtomic(fs, watchRecordPath(statePath), Buffer.from(JSON.stringify(record, null, 2) + '\n'), 0o600, { durable: false });
}

export async function removeWatchRecord(fs: FileSystem, statePath: string): Promise<void> {
  await unlinkIfExists(fs, watchRecordPath(statePath));
}

const KINDS: readonly string[] = ['unsupported', 'limit', 'folder-gone', 'error'];

/** Parses a watch record defensively (the file is not trusted); undefined when it is not one. */
export function parseWatchRecord(text: string): WatchRecord | undefined {
  let o: Partial<WatchRecord> | null;
  try {
    o = JSON.parse(text) as Partial<WatchRecord> | null;
  } catch {
    return undefined;
  }
  if (!o || o.version !== 1 || typeof o.pid !== 'number' || typeof o.host !== 'string' || typeof o.dir !== 'string') return undefined;
  if (o.mode !== 'watching' && o.mode !== 'fallback') return undefined;
  if (typeof o.since !== 'string' || typeof o.startedAt !== 'string') return undefined;
  if (o.kind !== undefined && !KINDS.includes(o.kind)) return undefined;
  return {
    version: 1, pid: o.pid, host: o.host, startedAt: o.startedAt, dir: o.dir, debounceMs: typeof o.debounceMs === 'number' ? o.debounceMs : 0,
    mode: o.mode, since: o.since,
    ...(typeof o.bootId === 'string' ? { bootId: o.bootId } : {}),
    ...(typeof o.pidNs === 'string' ? { pidNs: o.pidNs } : {}),
    ...(typeof o.procStart === 'string' ? { procStart: o.procStart } : {}),
    ...(o.kind ? { kind: o.kind } : {}),
    ...(typeof o.reason === 'string' ? { reason: o.reason } : {}),
  };
}

/**
 * Whether the daemon that wrote the record still runs: true or false when it
 * ran on this host, boot and PID namespace; undefined when we cannot tell
 * (another host or container).
 */
export function writerAlive(record: WatchRecord): boolean | undefined {
  const here = thisIdentity();
  if (record.host !== here.host || record.bootId !== here.bootId || record.pidNs !== here.pidNs) return undefined;
  const found = probePid(record.pid);
  if (!found.alive) return false;
  return record.procStart === undefined || found.start === undefined || found.start === record.procStart;
}

/** The instance's watch record and whether its daemon runs; undefined without one. */
export async function readWatchRecord(fs: FileSystem, statePath: string): Promise<{ record: WatchRecord; alive?: boolean } | undefined> {
  let text: string;
  try {
    text = (await fs.readFile(watchRecordPath(statePath))).toString('utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    return undefined; // unreadable (another user's): status says nothing about a watch it cannot see
  }
  const record = parseWatchRecord(text);
  if (!record) return undefined;
  const alive = writerAlive(record);
  return { record, ...(alive !== undefined ? { alive } : {}) };
}
