/**
 * The state file: what was archived last, what was rejected, how the last run
 * went. Written atomically; a missing or corrupt file is rebuilt, never fatal,
 * because the archive itself (not the state) is the source of truth.
 */
import { dirname } from 'node:path';
import type { FileInfo, FileSystem } from '../core/fs.js';
import { ensureDir, errorCode, replaceFileAtomic } from '../core/fs.js';
import { MAX_SEQ } from '../core/timestamp.js';
import type { NodesChange } from './worker.js';
import { parseQueue, type OffsiteItem } from '../offsite/state.js';
import { parseVerifyRecord, type VerifyRecord } from './scheduled-verify.js';
import type { ServerFacts } from '../sources/source.js';
import { parseDrillRecord, type DrillRecord } from '../ops/drill.js';

/** What makes a source file "the same file": any difference means a new snapshot. */
export interface SourceIdentity {
  dev: string;
  ino: string;
  size: number;
  mtimeNs: string;
  /**
   * The inode change time: a write moves it even when the mtime is put back
   * (`cp -p` over the file, `touch -r`). Absent in states of older versions
   * (then not compared).
   */
  ctimeNs?: string;
}

export interface ArchivedRecord {
  identity: SourceIdentity;
  ts: string;
  /** The event's archive sequence number (absent in a state written by an older version). */
  seq?: number;
  sha256: string;
  bytes: number;
  at: string;
  /** nodes.conf differed before and after the RDB copy: which version was kept (see worker.pairNodes). */
  nodesChanged?: NodesChange;
  /** Rule folders that could not take this event; the next run links it in there. */
  missingIn?: string[];
  /** A network source: the server's facts about this snapshot (version, run_id, replication offset, server time). */
  server?: ServerFacts;
}

/** A rule folder that failed in a run: writing the event into it, or pruning it. */
export interface RuleErrorRecord {
  rule: string;
  stage: 'archive' | 'retention';
  kind: string;
  message: string;
  exitCode: number;
}

/** A source mtime that contradicts the archive order: logged, kept here, shown by status and check. */
export interface ClockJump {
  kind: 'future' | 'backwards';
  /** The event archived with the odd timestamp. */
  ts: string;
  /** For 'backwards': the previously archived event, stamped later. */
  previousTs?: string;
  /** The source mtime, ISO 8601. */
  sourceMtime: string;
  /** Our clock when it was seen. */
  at: string;
  /** How far the source mtime lies from what was expected (ahead of now, or behind the previous event), in ms. */
  offsetMs: number;
  /** For 'backwards': the source went back to the content of this older event (`cp -p` of an old dump), not a wrong clock. */
  revertedTo?: string;
}

/**
 * The recovery point lag of the event archived last: seconds from the
 * source's mtime (Redis finished the save) to the event being durable in the
 * archive. A save lost with the host inside that window is lost for good.
 */
export interface LagRecord {
  seconds: number;
  ts: string;
  sourceMtime: string;
  durableAt: string;
  /** What started the cycle: once, a schedule tick, the watch. */
  trigger: string;
}

/** Upper bounds (seconds) of the recovery point lag histogram's buckets; +Inf is implied. */
export const LAG_BUCKETS = [1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600] as const;

/** Every lag recorded, bucketed (counts per bucket, not cumulative; the last entry is +Inf). */
export interface LagHistogram {
  counts: number[];
  sum: number;
  count: number;
}

export interface RejectedRecord {
  identity: SourceIdentity;
  reason: string;
  at: string;
}

export interface RunRecord {
  at: string;
  result: string;
  exitCode: number;
  durationMs: number;
  error?: string;
  /** Each rule folder that failed in that run (the others were archived into and pruned). */
  ruleErrors?: RuleErrorRecord[];
}

/** The last failed run that this state recorded (kept after later successes: history for the metrics). */
export interface FailureSummary {
  at: string;
  command: string;
  exitCode: number;
  error?: string;
}

/** The last outcome of each hook: a failure stays visible (check WARNING) until the hook next succeeds. */
export interface HookRecord {
  lastFailureAt?: string;
  lastError?: string;
  lastSuccessAt?: string;
}

export interface State {
  version: 1;
  archived?: ArchivedRecord;
  /** The last archive sequence number given to an event (the archive's file names are checked too). */
  seq?: number;
  /** The last clock jump seen in the source's mtimes. */
  clock?: ClockJump;
  rejected?: RejectedRecord;
  /** The recovery point lag of the last new event, and of every one so far. */
  lag?: LagRecord;
  lagHistogram?: LagHistogram;
  lastRun?: RunRecord;
  lastSuccessAt?: string;
  lastFailure?: FailureSummary;
  hooks?: Record<string, HookRecord>;
  /** Monotonic counters (runs by result, hook failures...), kept across restarts for metrics. */
  counters: Record<string, number>;
  /** Events waiting for off-site remotes (see src/offsite/state.ts); absent without remotes. */
  offsite?: { queue: OffsiteItem[] };
  /** The last scheduled verification (scheduled-verify.ts). */
  verify?: VerifyRecord;
  /** The last restore drill (src/ops/drill.ts), scheduled or by `rdb-archiver drill`. */
  drill?: DrillRecord;
}

export function emptyState(): State {
  return { version: 1, counters: {} };
}

export function identityOf(info: FileInfo): SourceIdentity {
  return { dev: info.dev, ino: info.ino, size: info.size, mtimeNs: info.mtimeNs, ...(info.ctimeNs !== undefined ? { ctimeNs: info.ctimeNs } : {}) };
}

/**
 * ctime: false ignores the change time (the worker's check of the descriptor
 * it copies: Redis renaming a new dump over it moves the old inode's ctime).
 */
export function sameIdentity(a: SourceIdentity | undefined, b: SourceIdentity | undefined, options: { ctime?: boolean } = {}): boolean {
  return !!a && !!b && a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs
    && (options.ctime === false || a.ctimeNs === undefined || b.ctimeNs === undefined || a.ctimeNs === b.ctimeNs);
}

function isIdentity(v: unknown): v is SourceIdentity {
  const o = v as SourceIdentity;
  return !!o && typeof o.dev === 'string' && typeof o.ino === 'string' && typeof o.size === 'number' && typeof o.mtimeNs === 'string'
    && (o.ctimeNs === undefined || typeof o.ctimeNs === 'string');
}

/** Parses state JSON defensively: anything malformed is dropped, not trusted. */
export function parseState(text: string): State | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  const o = raw as Partial<State> | null;
  if (!o || typeof o !== 'object' || o.version !== 1) return undefined;
  const state = emptyState();
  if (o.archived && isIdentity(o.archived.identity) && typeof o.archived.ts === 'string' && typeof o.archived.sha256 === 'string') {
    state.archived = o.archived;
  }
  if (typeof o.seq === 'number' && Number.isSafeInteger(o.seq) && o.seq >= 0 && o.seq <= MAX_SEQ) state.seq = o.seq;
  if (o.clock && (o.clock.kind === 'future' || o.clock.kind === 'backwards') && typeof o.clock.ts === 'string' && typeof o.clock.at === 'string') {
    state.clock = o.clock;
  }
  if (o.rejected && isIdentity(o.rejected.identity) && typeof o.rejected.reason === 'string') state.rejected = o.rejected;
  const lag = o.lag;
  if (lag && typeof lag.seconds === 'number' && Number.isFinite(lag.seconds) && typeof lag.ts === 'string' && typeof lag.durableAt === 'string') {
    state.lag = { seconds: lag.seconds, ts: lag.ts, durableAt: lag.durableAt, sourceMtime: String(lag.sourceMtime ?? ''), trigger: String(lag.trigger ?? 'once') };
  }
  const h = o.lagHistogram;
  if (h && Array.isArray(h.counts) && h.counts.length === LAG_BUCKETS.length + 1 && h.counts.every((c) => Number.isSafeInteger(c) && c >= 0)
    && typeof h.sum === 'number' && Number.isFinite(h.sum) && Number.isSafeInteger(h.count)) {
    state.lagHistogram = { counts: [...h.counts], sum: h.sum, count: h.count };
  }
  if (o.lastRun && typeof o.lastRun.at === 'string' && typeof o.lastRun.result === 'string') state.lastRun = o.lastRun;
  if (typeof o.lastSuccessAt === 'string') state.lastSuccessAt = o.lastSuccessAt;
  const f = o.lastFailure;
  if (f && typeof f.at === 'string' && typeof f.command === 'string' && typeof f.exitCode === 'number') {
    state.lastFailure = { at: f.at, command: f.command, exitCode: f.exitCode, ...(typeof f.error === 'string' ? { error: f.error } : {}) };
  }
  if (o.hooks && typeof o.hooks === 'object') {
    for (const [name, h] of Object.entries(o.hooks)) {
      if (!h || typeof h !== 'object') continue;
      const rec: HookRecord = {};
      if (typeof h.lastFailureAt === 'string') rec.lastFailureAt = h.lastFailureAt;
      if (typeof h.lastError === 'string') rec.lastError = h.lastError;
      if (typeof h.lastSuccessAt === 'string') rec.lastSuccessAt = h.lastSuccessAt;
      (state.hooks ??= {})[name] = rec;
    }
  }
  if (o.offsite && typeof o.offsite === 'object') state.offsite = { queue: parseQueue(o.offsite) };
  const verify = parseVerifyRecord(o.verify);
  if (verify) state.verify = verify;
  const drill = parseDrillRecord(o.drill);
  if (drill) state.drill = drill;
  if (o.counters && typeof o.counters === 'object') {
    for (const [k, v] of Object.entries(o.counters)) if (typeof v === 'number' && Number.isFinite(v)) state.counters[k] = v;
  }
  return state;
}

export interface LoadedState {
  state: State;
  /** Set when the file existed but could not be used; the caller logs it. */
  problem?: string;
}

export async function loadState(fs: FileSystem, path: string): Promise<LoadedState> {
  let text: string;
  try {
    text = (await fs.readFile(path)).toString('utf8');
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return { state: emptyState() };
    throw err;
  }
  const state = parseState(text);
  return state ? { state } : { state: emptyState(), problem: `state file ${path} is corrupt; rebuilding it` };
}

/**
 * `durable: false` skips the fsyncs: for a run that archived nothing, the state
 * only records "ran at T" and losing that to a power cut costs nothing (the
 * archive is the truth), while two fsyncs per minute are most of such a run.
 */
export async function saveState(fs: FileSystem, path: string, state: State, dirMode: number, options: { durable?: boolean } = {}): Promise<void> {
  await ensureDir(fs, dirname(path), dirMode);
  await replaceFileAtomic(fs, path, Buffer.from(JSON.stringify(state, null, 2) + '\n'), 0o600, options);
}

/** True while a hook's last run failed (a failure with no success since). */
export function hookFailing(h: HookRecord | undefined): boolean {
  return !!h?.lastFailureAt && (!h.lastSuccessAt || h.lastFailureAt > h.lastSuccessAt);
}

/** The per-rule failures a state file's last run recorded (defensive: the file is not trusted). */
export function ruleErrorsOf(run: RunRecord | undefined): RuleErrorRecord[] {
  const list: unknown = run?.ruleErrors;
  return Array.isArray(list) ? list.filter((e): e is RuleErrorRecord => !!e && typeof e.rule === 'string' && typeof e.message === 'string') : [];
}

/** Records a new event's recovery point lag (never negative: a source clock ahead says nothing about the wait). */
export function recordLag(state: State, lag: LagRecord): void {
  const seconds = Math.max(0, lag.seconds);
  state.lag = { ...lag, seconds };
  const h = state.lagHistogram ?? { counts: new Array<number>(LAG_BUCKETS.length + 1).fill(0), sum: 0, count: 0 };
  const i = LAG_BUCKETS.findIndex((le) => seconds <= le);
  h.counts[i < 0 ? LAG_BUCKETS.length : i]! += 1;
  h.sum += seconds;
  h.count += 1;
  state.lagHistogram = h;
}

export function bumpCounter(state: State, name: string, by = 1): void {
  state.counters[name] = (state.counters[name] ?? 0) + by;
}
