/**
 * The catalog of archived events: `list` and `verify`, and the lookups that
 * `restore` shares (which rules, which event, is it intact).
 *
 *  - list reads only the start of each .rdb (its magic and leading AUX
 *    fields), never the whole file.
 *  - verify re-reads every file an event's sha256 sidecar lists, in one pass
 *    per file (copyPass: sha256 and the RDB CRC together), and reads each
 *    inode once: hard-linked copies in several rule folders cost one read.
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import type { InstanceConfig, Rule } from '../core/config.js';
import { ruleDir } from '../core/config.js';
import { contextFor, failureLine, formatBytes, printResults, type TextOptions } from '../core/context.js';
import { errorReport, type ErrorReport } from '../pipeline/cycle.js';
import { ArchiverError, ConfigError, ExitCode, InvalidSnapshotError, type ExitCodeValue } from '../core/errors.js';
import { errorCode, readFromStart, type FileInfo, type FileSystem } from '../core/fs.js';
import type { Log } from '../core/log.js';
import { RdbValidator, AUX_LIMIT, type RdbAux, type RdbHeader, type RdbInfo, type ValidationMode } from '../rdb/validate.js';
import { latestArchived, latestContradiction, type StateLatest } from '../pipeline/event-order.js';
import { bumpCounter, loadState } from '../pipeline/state.js';
import { updateState } from '../pipeline/state-update.js';
import { manualVerifyRecord, pairKey } from '../pipeline/scheduled-verify.js';
import { scanFolder, scanWarnings, type FolderEvent } from '../pipeline/retention.js';
import { discoverFolders, folderNote, type FolderOrigin } from '../pipeline/archive-index.js';
import { sha256Hex } from '../core/sha256.js';
import { eventFileName, parseEventFileName, parseUserTimestamp, type Timestamp } from '../core/timestamp.js';
import { copyPass, parseArchiveRecord } from '../pipeline/worker.js';
import type { ServerFacts } from '../sources/source.js';
import { parseServerFacts } from '../sources/facts.js';
import { runRemoteList, runRemoteVerify } from './offsite.js';
import type { CopyMethod } from '../pipeline/copy-methods.js';
import { sharingOf } from '../pipeline/extents.js';
import { statSource } from '../pipeline/watcher.js';

/** `verify` found at least one bad event. */
export const VERIFY_FAILED = 1 as ExitCodeValue;

/** Bytes read per step while looking for the end of the AUX fields. */
export const HEADER_READ_BYTES = 64 * 1024;

/** No archived event matches the request (EX_NOINPUT). */
export class EventNotFoundError extends ArchiverError {
  readonly exitCode = ExitCode.NO_SOURCE;
  readonly kind = 'no-event';
  constructor(message: string) {
    super(message);
    this.name = 'EventNotFoundError';
  }
}

/**
 * `restore latest` would give older data than the event the state file says
 * was archived last (see latestContradiction): refused, never silently
 * replaced by an older event (EX_NOINPUT, like a missing event).
 */
export class LatestMissingError extends ArchiverError {
  readonly exitCode = ExitCode.NO_SOURCE;
  readonly kind = 'latest-missing';
  constructor(message: string) {
    super(message);
    this.name = 'LatestMissingError';
  }
}

// ---------------------------------------------------------------------------
// Rules, timestamps, events

/** Parses a TS argument: our file-name form (2025-02-24T23-59-00) or an ISO 8601 instant. */
export function parseTsArgument(text: string, what = 'TS'): Timestamp {
  const ts = parseUserTimestamp(text);
  if (!ts) {
    throw new ConfigError(undefined, what,
      `"${text}" is not a timestamp: use the form 2025-02-24T23-59-00 (as shown by list) or an ISO 8601 instant such as 2025-02-24T23:59:00Z`);
  }
  return ts;
}

export interface RuleEvents {
  rule: string;
  dir: string;
  /** Where the folder's name came from (archive-index.ts); 'config' for a configured rule. */
  origin?: FolderOrigin;
  /** Newest first, as scanned (including incomplete events). */
  events: FolderEvent[];
  /** Foreign files and a folder others can write (scanWarnings): reported by every command that scans. */
  warnings: string[];
  /** The folder could not be scanned (a symlink, unreadable) and was skipped (scanArchive's skipUnreadable). */
  skipped?: boolean;
}

/** Scans the folders of the given rules. */
export async function scanRules(fs: FileSystem, instance: InstanceConfig, rules: readonly Rule[]): Promise<RuleEvents[]> {
  const out: RuleEvents[] = [];
  for (const rule of rules) {
    const dir = ruleDir(instance, rule);
    const scan = await scanFolder(fs, dir);
    out.push({ rule: rule.name, dir, events: scan.events, warnings: scanWarnings(scan) });
  }
  return out;
}

/**
 * Scans every rule folder of the archive (archive-index.ts discoverFolders):
 * the config's rules and any other folder holding events, each marked with
 * its origin. `ruleName` keeps only that folder. `notes` says which folders
 * the config does not name. With skipUnreadable (restore), a folder that
 * cannot be scanned safely (a symlink out of the archive, an I/O error) is
 * skipped with a warning, so an event another folder holds can still be
 * restored; only when no folder can be scanned does the first error stand.
 */
export async function scanArchive(
  fs: FileSystem,
  instance: InstanceConfig,
  ruleName: string | undefined,
  options: { skipUnreadable?: boolean } = {},
): Promise<{ scanned: RuleEvents[]; notes: string[]; names: string[] }> {
  const { folders, warnings } = await discoverFolders(fs, instance);
  const notes = [...warnings];
  const scanned: RuleEvents[] = [];
  let firstError: unknown;
  for (const folder of folders) {
    if (ruleName !== undefined && folder.name !== ruleName) continue;
    const note = folderNote(folder, instance.archiveOnly === true);
    if (note) notes.push(note);
    try {
      const scan = await scanFolder(fs, folder.dir);
      scanned.push({ rule: folder.name, dir: folder.dir, origin: folder.origin, events: scan.events, warnings: scanWarnings(scan) });
    } catch (err) {
      if (!options.skipUnreadable) throw err;
      firstError ??= err;
      scanned.push({ rule: folder.name, dir: folder.dir, origin: folder.origin, events: [], warnings: [`rule folder ${folder.name} skipped: ${errorReport(err).message}`], skipped: true });
    }
  }
  if (firstError !== undefined && scanned.every((r) => r.skipped)) throw firstError;
  return { scanned, notes, names: folders.map((f) => f.name) };
}

/**
 * What the state file says was archived last. Read it BEFORE scanning: a run
 * archiving meanwhile then only adds an event newer than the state's, which
 * latestContradiction accepts. A missing or corrupt state cannot tell (the
 * archive alone decides then); `problem` says why, for a warning.
 */
export async function readStateLatest(fs: FileSystem, instance: InstanceConfig): Promise<{ archived?: StateLatest; problem?: string }> {
  try {
    const loaded = await loadState(fs, instance.statePath);
    const a = loaded.state.archived;
    return { ...(a ? { archived: { ts: a.ts, seq: a.seq, missingIn: a.missingIn } } : {}), ...(loaded.problem ? { problem: loaded.problem } : {}) };
  } catch (err) {
    return { problem: `state file ${instance.statePath} is unreadable (${errorReport(err).message}): "latest" is taken from the archive alone` };
  }
}

/** Why "latest" in these scanned folders is not the event the state says was archived last (latestContradiction), or undefined. */
export function latestProblem(archived: StateLatest | undefined, scanned: readonly RuleEvents[]): string | undefined {
  return latestContradiction(archived, scanned.filter((r) => !r.skipped));
}

/** --rule names no folder of any instance (configured or found in the archive): a usage error listing those there are. */
export function checkFolderNamed(ruleName: string | undefined, names: ReadonlyArray<readonly string[]>): void {
  if (ruleName === undefined || names.some((n) => n.includes(ruleName))) return;
  const known = [...new Set(names.flat())].join(', ');
  throw new ConfigError(undefined, '--rule', `no rule named "${ruleName}" (rules: ${known || 'none'})`);
}

export interface EventLocation {
  rule: string;
  dir: string;
  ts: Timestamp;
  kinds: FolderEvent['kinds'];
  /** The archive sequence number in the name of its archive record in this folder; undefined without one. */
  seq?: number;
  /** The event's archive records in this folder (dump-<ts>.seq<N>.json). */
  seqs?: number[];
}

/**
 * The complete events (with an .rdb) that match `which`: 'latest' is the
 * event archived most recently across the scanned rules (event-order.ts),
 * whatever the timestamp in its name. Returns every rule folder that holds
 * that event, in rule order; empty when there is none.
 */
export function findEvent(scanned: readonly RuleEvents[], which: Timestamp | 'latest'): EventLocation[] {
  let ts: Timestamp | undefined = which === 'latest' ? undefined : which;
  if (ts === undefined) {
    ts = latestArchived(scanned.flatMap((r) => r.events.filter((e) => e.kinds.includes('rdb'))))?.ts;
    if (ts === undefined) return [];
  }
  const out: EventLocation[] = [];
  for (const r of scanned) {
    const e = r.events.find((ev) => ev.ts === ts && ev.kinds.includes('rdb'));
    if (e) out.push({ rule: r.rule, dir: r.dir, ts: e.ts, kinds: e.kinds, ...(e.seq === undefined ? {} : { seq: e.seq }), ...(e.seqs ? { seqs: e.seqs } : {}) });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Sidecar

export interface SidecarEntry {
  sha256: string;
  name: string;
}

/** Parses `sha256sum` output (text or binary mode). Blank lines are skipped; anything else malformed is an error. */
export function parseSidecar(text: string): { entries: SidecarEntry[]; errors: string[] } {
  const entries: SidecarEntry[] = [];
  const errors: string[] = [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    if (!m) {
      errors.push(`line ${i + 1} is not "<sha256>  <file>"`);
      continue;
    }
    entries.push({ sha256: m[1]!.toLowerCase(), name: m[2]! });
  }
  return { entries, errors };
}

// ---------------------------------------------------------------------------
// Reading files once per inode

export interface FileCheck {
  /** The file's device:inode: hard links share it. */
  key?: string;
  bytes: number;
  /** Undefined when the read failed or the RDB check failed before the digest was known. */
  sha256?: string;
  /** For .rdb files: the validator's result. */
  rdb?: RdbInfo;
  /** RDB validation failure (CRC mismatch, truncated...). */
  invalid?: string;
  /** I/O failure reading the file. */
  ioError?: string;
}

function identityKey(info: FileInfo): string {
  return `${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}`;
}

/**
 * Reads and checks files, each inode at most once per process: hard links in
 * several rule folders share one result. `filesRead`/`bytesRead` count the
 * real reads.
 */
export class FileChecker {
  private readonly cache = new Map<string, Promise<FileCheck>>();
  filesRead = 0;
  bytesRead = 0;

  constructor(
    private readonly fs: FileSystem,
    private readonly validation: ValidationMode = 'full',
  ) {}

  /** undefined when the file does not exist. */
  async check(path: string, kind: 'rdb' | 'other'): Promise<FileCheck | undefined> {
    let info: FileInfo;
    try {
      info = await this.fs.lstat(path);
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return undefined;
      return { bytes: 0, ioError: (err as Error).message };
    }
    if (info.kind !== 'file') return { bytes: 0, ioError: `${path} is not a regular file` };
    const key = `${kind}:${identityKey(info)}`;
    let pending = this.cache.get(key);
    if (!pending) {
      pending = this.read(path, kind).then((c) => ({ ...c, key: `${info.dev}:${info.ino}` }));
      this.cache.set(key, pending);
    }
    return pending;
  }

  private async read(path: string, kind: 'rdb' | 'other'): Promise<FileCheck> {
    let handle;
    try {
      handle = await this.fs.open(path, 'read-nofollow');
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return { bytes: 0, ioError: `${path} disappeared while verifying` };
      return { bytes: 0, ioError: (err as Error).message };
    }
    try {
      const info = await handle.stat();
      this.filesRead += 1;
      if (kind === 'rdb') {
        try {
          const pass = await copyPass(handle, path, undefined, undefined, this.validation, undefined, info.size);
          this.bytesRead += pass.bytes;
          return { bytes: pass.bytes, sha256: pass.sha256, rdb: pass.rdb };
        } catch (err) {
          this.bytesRead += info.size;
          if (err instanceof InvalidSnapshotError) return { bytes: info.size, invalid: err.reason };
          return { bytes: info.size, ioError: (err as Error).message };
        }
      }
      const data = await readFromStart(handle, info.size);
      this.bytesRead += data.length;
      return { bytes: data.length, sha256: sha256Hex(data) };
    } catch (err) {
      return { bytes: 0, ioError: (err as Error).message };
    } finally {
      await handle.close().catch(() => undefined);
    }
  }
}

// ---------------------------------------------------------------------------
// Verifying one event

export interface EventVerdict {
  ts: Timestamp;
  ok: boolean;
  problems: string[];
  warnings: string[];
  /** A file vanished between the scan and the read (retention or a run in progress). */
  raced: boolean;
  /** The checked .rdb, when it could be read. */
  rdb?: FileCheck;
}

/**
 * Checks one event in one folder: the sidecar exists and lists the .rdb (and
 * the nodes file, when present), every listed file exists with the listed
 * sha256, and the .rdb passes the RDB check (magic, AUX, EOF, CRC-64).
 */
export async function verifyEvent(fs: FileSystem, checker: FileChecker, dir: string, event: FolderEvent): Promise<EventVerdict> {
  const { ts } = event;
  const problems: string[] = [];
  const warnings: string[] = [];
  let raced = false;
  const rdbName = eventFileName('rdb', ts);
  const sidecarName = eventFileName('sha256', ts);
  const nodesName = eventFileName('nodes', ts);

  let rdb: FileCheck | undefined;
  if (!event.kinds.includes('rdb')) {
    problems.push(`missing ${rdbName}: incomplete event (left by an interrupted run, or being written or pruned right now)`);
  } else {
    rdb = await checker.check(join(dir, rdbName), 'rdb');
    if (!rdb) {
      raced = true;
      problems.push(`missing ${rdbName}: it disappeared while verifying`);
    } else if (rdb.ioError) {
      problems.push(`${rdbName}: cannot read: ${rdb.ioError}`);
    } else if (rdb.invalid) {
      problems.push(`${rdbName}: RDB check failed: ${rdb.invalid}`);
    } else {
      for (const w of rdb.rdb?.warnings ?? []) warnings.push(`${rdbName}: ${w}`);
    }
  }

  let sidecarText: string | undefined;
  if (!event.kinds.includes('sha256')) {
    problems.push(`missing sidecar ${sidecarName}: the event cannot be checked against its sha256`);
  } else {
    try {
      sidecarText = (await fs.readFile(join(dir, sidecarName))).toString('utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT') {
        raced = true;
        problems.push(`missing sidecar ${sidecarName}: it disappeared while verifying`);
      } else {
        problems.push(`${sidecarName}: cannot read: ${(err as Error).message}`);
      }
    }
  }

  if (sidecarText !== undefined) {
    const { entries, errors } = parseSidecar(sidecarText);
    for (const e of errors) problems.push(`${sidecarName}: malformed: ${e}`);
    const listed = new Set<string>();
    for (const entry of entries) {
      const parsed = parseEventFileName(entry.name);
      if (!parsed || parsed.ts !== ts || parsed.kind === 'sha256') {
        problems.push(`${sidecarName} lists "${entry.name}", which is not a file of this event`);
        continue;
      }
      listed.add(entry.name);
      const check = parsed.kind === 'rdb' ? rdb : await checker.check(join(dir, entry.name), 'other');
      if (!check) {
        if (parsed.kind === 'rdb') continue; // already reported as missing
        if (event.kinds.includes(parsed.kind)) raced = true;
        problems.push(`missing companion ${entry.name}: listed in ${sidecarName} but absent`);
        continue;
      }
      if (check.ioError) {
        if (parsed.kind !== 'rdb') problems.push(`${entry.name}: cannot read: ${check.ioError}`);
        continue;
      }
      if (check.sha256 === undefined) continue; // the RDB check failed first; reported above
      if (check.sha256 !== entry.sha256) {
        problems.push(`sha256 mismatch: ${entry.name}: ${sidecarName} says ${entry.sha256}, the file has ${check.sha256}`);
      }
    }
    if (event.kinds.includes('rdb') && !listed.has(rdbName)) problems.push(`${sidecarName} does not list ${rdbName}`);
    if (event.kinds.includes('nodes') && !listed.has(nodesName)) problems.push(`${sidecarName} does not list ${nodesName}`);
  }

  // The archive record: only its sha256 is checked (it orders events; the sidecar is the checksum of record).
  for (const seq of event.seqs ?? []) {
    const name = eventFileName('meta', ts, seq);
    let record;
    try {
      record = parseArchiveRecord((await fs.readFile(join(dir, name))).toString('utf8'));
    } catch (err) {
      if (errorCode(err) === 'ENOENT') {
        raced = true;
        continue;
      }
      problems.push(`${name}: cannot read: ${(err as Error).message}`);
      continue;
    }
    if (!record) problems.push(`${name}: not a valid archive record`);
    else if (rdb?.sha256 !== undefined && record.sha256 !== rdb.sha256) problems.push(`sha256 mismatch: ${rdbName}: ${name} says ${record.sha256}, the file has ${rdb.sha256}`);
  }

  return { ts, ok: problems.length === 0, problems, warnings, raced, rdb };
}

// ---------------------------------------------------------------------------
// list

export interface ListedEvent {
  ts: Timestamp;
  /** The archive sequence number (archive order); null for an event archived before records existed. */
  seq: number | null;
  bytes: number;
  nodes: boolean;
  redisVersion: string | null;
  /** The RDB header's ctime (when the snapshot was taken), ISO 8601; null when unreadable. */
  ctime: string | null;
  /** Its folder is a configured rule ('config'), named by the archive index only ('index'), or found by scanning ('found'). */
  origin: FolderOrigin;
  /** Pulled from a server (source.redis): its facts from the archive record (version, run_id, replication offset, server time); absent otherwise. */
  server?: ServerFacts;
  /** How the .rdb was copied (its archive record); null when the record does not say. */
  copy: CopyMethod | null;
  /** Its data blocks are shared with the source it was cloned from (a reflink, while that file exists): see extents.ts. */
  shared: boolean;
}

export interface ListReport {
  instance: string;
  rules: Record<string, ListedEvent[]>;
  /** Each listed folder's origin (see ListedEvent.origin). */
  origins: Record<string, FolderOrigin>;
  /** Folders the config does not name, one line each. */
  notes: string[];
  warnings: string[];
  exitCode: ExitCodeValue;
}

export interface HeaderRead {
  bytes: number;
  header: RdbHeader | null;
  /** Why the header could not be read (bad magic, malformed AUX, I/O). */
  problem?: string;
  /** How many bytes were actually read. */
  bytesRead: number;
}

/**
 * Reads only the start of an RDB: HEADER_READ_BYTES at a time until the
 * leading AUX fields are parsed (at most AUX_LIMIT bytes).
 */
export async function readRdbHeaderFile(fs: FileSystem, path: string): Promise<HeaderRead> {
  const handle = await fs.open(path, 'read-nofollow');
  try {
    const info = await handle.stat();
    const validator = new RdbValidator(path);
    const buffer = Buffer.allocUnsafe(HEADER_READ_BYTES);
    let position = 0;
    let header: RdbHeader | null = null;
    try {
      while (position < Math.min(info.size, AUX_LIMIT)) {
        const n = await handle.read(buffer, 0, Math.min(buffer.length, info.size - position), position);
        if (n === 0) break;
        position += n;
        validator.update(buffer.subarray(0, n));
        header = validator.peekHeader();
        if (header?.complete) break;
      }
    } catch (err) {
      if (err instanceof InvalidSnapshotError) return { bytes: info.size, header: null, problem: err.reason, bytesRead: position };
      throw err;
    }
    if (!header) return { bytes: info.size, header: null, problem: `truncated: ${info.size} bytes`, bytesRead: position };
    return { bytes: info.size, header, bytesRead: position };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

export function versionOf(header: { aux: RdbAux } | null): string | null {
  if (!header) return null;
  return header.aux.valkeyVer ?? header.aux.redisVer ?? null;
}

/** The header's ctime (unix seconds) as ISO 8601, or null. */
export function ctimeOf(header: { aux: RdbAux } | null): string | null {
  const ctime = header?.aux.ctime;
  if (typeof ctime !== 'number' || !Number.isFinite(ctime) || ctime <= 0) return null;
  const d = new Date(ctime * 1000);
  return Number.isNaN(d.getTime()) ? null : d.toISOString().replace('.000Z', 'Z');
}

/** The server facts an event's archive record carries (source.redis), or null: what list, restore, drill and the upload's manifest show. */
export async function serverFactsOf(fs: FileSystem, dir: string, event: { ts: Timestamp; seqs?: number[] }): Promise<ServerFacts | null> {
  for (const seq of event.seqs ?? []) {
    try {
      const facts = parseServerFacts(parseArchiveRecord((await fs.readFile(join(dir, eventFileName('meta', event.ts, seq)))).toString('utf8'))?.server);
      if (facts) return facts;
    } catch {
      // an unreadable record only loses the facts; verify reports the record itself
    }
  }
  return null;
}

export async function listInstance(fs: FileSystem, log: Log, instance: InstanceConfig, ruleName: string | undefined, archive?: Awaited<ReturnType<typeof scanArchive>>): Promise<ListReport> {
  const report: ListReport = { instance: instance.name, rules: {}, origins: {}, notes: [], warnings: [], exitCode: ExitCode.OK };
  const headers = new Map<string, Promise<HeaderRead>>();
  const { scanned, notes } = archive ?? await scanArchive(fs, instance, ruleName);
  report.notes = notes;
  for (const n of notes) log.info({ archive: instance.archiveDir }, n);
  // (read after the scan here: a run archiving in between can at worst cause this warning once)
  const lost = latestProblem((await readStateLatest(fs, instance)).archived, scanned);
  if (lost) {
    const w = `${lost}; \`restore latest\` refuses until \`once\` archives the source again (or name an event)`;
    report.warnings.push(w);
    log.warn({ state: instance.statePath }, w);
  }
  for (const { rule, dir, events, warnings, origin = 'config' } of scanned) {
    report.origins[rule] = origin;
  let sourceNow: Promise<FileInfo | undefined> | undefined;
    for (const w of warnings) {
      report.warnings.push(w);
      log.warn({ rule, dir }, w);
    }
    const listed: ListedEvent[] = [];
    for (const event of events) {
      if (!event.kinds.includes('rdb')) {
        const w = `${rule}: event ${event.ts} has no .rdb (incomplete: an interrupted run); not listed`;
        report.warnings.push(w);
        log.warn({ rule, ts: event.ts }, w);
        continue;
      }
      const path = join(dir, eventFileName('rdb', event.ts));
      let read: HeaderRead;
      try {
        const info = await fs.lstat(path);
        const key = identityKey(info);
        let pending = headers.get(key);
        if (!pending) {
          pending = readRdbHeaderFile(fs, path);
          headers.set(key, pending);
        }
        read = await pending;
      } catch (err) {
        if (errorCode(err) === 'ENOENT') continue; // pruned since the scan
        throw err;
      }
      if (read.problem) {
        const w = `${path}: cannot read the RDB header: ${read.problem}`;
        report.warnings.push(w);
        log.warn({ path }, w);
      }
      const server = await serverFactsOf(fs, dir, event);
      const record = event.seq === undefined ? undefined : await readRecord(fs, join(dir, eventFileName('meta', event.ts, event.seq)));
      sourceNow ??= statSource(fs, instance.sourceRdb).catch(() => undefined);
      listed.push({ ...sharingOf(record, await sourceNow), ts: event.ts, seq: event.seq ?? null, bytes: read.bytes, nodes: event.kinds.includes('nodes'), redisVersion: versionOf(read.header), ctime: ctimeOf(read.header), origin, ...(server ? { server } : {}) });
    }
    report.rules[rule] = listed;
  }
  return report;
}

/** An event's archive record, or undefined when it is missing or not one (list shows what it can). */
async function readRecord(fs: FileSystem, path: string): Promise<ReturnType<typeof parseArchiveRecord>> {
  try {
    return parseArchiveRecord((await fs.readFile(path)).toString('utf8'));
  } catch {
    return undefined;
  }
}

export function listText(report: ListReport): string {
  const lines: string[] = [];
  for (const [rule, events] of Object.entries(report.rules)) {
    const origin = report.origins[rule];
    const mark = origin === 'index' ? ' [not in the config: named by the archive index]' : origin === 'found' ? ' [not in the config: found in the archive]' : '';
    lines.push(`${rule}: ${events.length === 0 ? 'no events' : `${events.length} event${events.length === 1 ? '' : 's'}`}${mark}`);
    for (const e of events) {
      const version = e.redisVersion ?? 'version ?';
      lines.push(`  ${e.ts}  ${formatBytes(e.bytes).padStart(10)}  ${e.nodes ? 'nodes' : '-    '}  ${version.padEnd(9)}  ctime ${e.ctime ?? '?'}${e.shared ? '  shared with source' : ''}`);
    }
  }
  for (const n of report.notes) lines.push(`note: ${n}`);
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// verify

export interface VerifiedEvent {
  ts: Timestamp;
  ok: boolean;
  problems: string[];
  warnings: string[];
}

/** A bad event, once per file: the rule folders that hold this copy (hard links) are listed together. */
export interface BadCopy {
  ts: Timestamp;
  /** The rule folders holding this copy of the event. */
  rules: string[];
  problems: string[];
}

export interface VerifyReport {
  instance: string;
  ok: boolean;
  events: Record<string, VerifiedEvent[]>;
  bad: Array<{ rule: string; ts: Timestamp; problems: string[] }>;
  /** The bad events, once per inode of their .rdb (not once per hard link). */
  badCopies: BadCopy[];
  /** Folders the config does not name (verified too). */
  notes: string[];
  warnings: string[];
  filesRead: number;
  bytesRead: number;
  durationMs: number;
  error?: ErrorReport;
  exitCode: ExitCodeValue;
}

export interface VerifyTarget {
  rule: string;
  dir: string;
  event: FolderEvent;
}

/**
 * Verifies events (each inode read once: FileChecker) into `report`: a file
 * that vanished between the scan and the read is looked up again once (retention
 * or a run in progress); an event that is gone by then is skipped with a warning.
 */
export async function verifyTargets(fs: FileSystem, log: Log, checker: FileChecker, targets: readonly VerifyTarget[], report: VerifyReport): Promise<void> {
  const byCopy = new Map<string, BadCopy>();
  for (const { rule, dir, event } of targets) {
    const results = (report.events[rule] ??= []);
    let verdict = await verifyEvent(fs, checker, dir, event);
    if (verdict.raced) {
      const now = (await scanFolder(fs, dir)).events.find((e) => e.ts === event.ts);
      if (!now) {
        const w = `${rule}: event ${event.ts} was removed while verifying (retention); skipped`;
        report.warnings.push(w);
        log.warn({ rule, ts: event.ts }, w);
        continue;
      }
      verdict = await verifyEvent(fs, checker, dir, now);
    }
    results.push({ ts: verdict.ts, ok: verdict.ok, problems: verdict.problems, warnings: verdict.warnings });
    for (const w of verdict.warnings) log.warn({ rule, ts: event.ts }, w);
    if (verdict.ok) continue;
    report.bad.push({ rule, ts: verdict.ts, problems: verdict.problems });
    // Hard links of one bad file are one bad copy: reported (and logged) once.
    const key = `${verdict.ts}|${verdict.rdb?.key ?? `${rule}`}`;
    const copy = byCopy.get(key);
    if (copy) {
      copy.rules.push(rule);
      continue;
    }
    const fresh: BadCopy = { ts: verdict.ts, rules: [rule], problems: verdict.problems };
    byCopy.set(key, fresh);
    report.badCopies.push(fresh);
    log.error({ rule, ts: verdict.ts, problems: verdict.problems }, 'archived event failed verification');
  }
}

export function emptyVerifyReport(instance: string): VerifyReport {
  return { instance, ok: true, events: {}, bad: [], badCopies: [], notes: [], warnings: [], filesRead: 0, bytesRead: 0, durationMs: 0, exitCode: ExitCode.OK };
}

export async function verifyInstance(
  fs: FileSystem,
  log: Log,
  instance: InstanceConfig,
  options: { rule?: string; ts?: Timestamp },
  archive?: Awaited<ReturnType<typeof scanArchive>>,
): Promise<VerifyReport> {
  const started = Date.now();
  const report = emptyVerifyReport(instance.name);
  const checker = new FileChecker(fs, instance.validation);
  try {
    const { scanned, notes } = archive ?? await scanArchive(fs, instance, options.rule);
    report.notes = notes;
    for (const n of notes) log.info({ archive: instance.archiveDir }, n);
    for (const { rule, dir, warnings } of scanned) {
      report.events[rule] = [];
      for (const w of warnings) {
        report.warnings.push(w);
        log.warn({ rule, dir }, w);
      }
    }
    // (An instance without the --rule at all has nothing to check, which is not an error.)
    if (options.ts && scanned.length > 0 && !scanned.some((r) => r.events.some((e) => e.ts === options.ts))) {
      const where = scanned.map((r) => r.rule).join(', ');
      throw new EventNotFoundError(`no archived event ${options.ts} in ${where || 'any rule'} (instance ${instance.name}); see \`rdb-archiver list\``);
    }
    const targets = scanned.flatMap(({ rule, dir, events }) => events.filter((e) => !options.ts || e.ts === options.ts).map((event) => ({ rule, dir, event })));
    await verifyTargets(fs, log, checker, targets, report);
  } catch (err) {
    report.error = errorReport(err);
    report.ok = false;
    report.exitCode = report.error.exitCode as ExitCodeValue;
    log.error({ err: report.error.message, kind: report.error.kind }, 'verify failed');
  }
  report.filesRead = checker.filesRead;
  report.bytesRead = checker.bytesRead;
  report.durationMs = Date.now() - started;
  if (report.bad.length > 0) {
    report.ok = false;
    if (report.exitCode === ExitCode.OK) report.exitCode = VERIFY_FAILED;
  }
  return report;
}

/**
 * Records a manual verify in the state, in the fields the scheduled
 * verification fills (scheduled-verify.ts manualVerifyRecord), so that
 * `check`, `status`, the metrics and `once`'s exit code know what a person
 * found. Incomplete events (no .rdb: an interrupted run's leftovers, which
 * retention removes) are not recorded as bad. Not recording (a lock held
 * past the wait, another user's archive, an unwritable state) is a warning
 * of the verify, never its failure.
 */
export async function recordVerify(
  fs: FileSystem,
  log: Log,
  instance: InstanceConfig,
  report: VerifyReport,
  scanned: readonly RuleEvents[],
  options: { rule?: string; ts?: Timestamp },
): Promise<void> {
  const complete = new Set(scanned.flatMap((r) => r.events.filter((e) => e.kinds.includes('rdb')).map((e) => pairKey(r.rule, e.ts))));
  const checkedEvents = scanned.flatMap((r) => r.events.filter((e) => !options.ts || e.ts === options.ts).map((e) => ({ rule: r.rule, ts: e.ts })));
  const fresh = report.badCopies
    .map((b) => ({ ...b, rules: b.rules.filter((rule) => complete.has(pairKey(rule, b.ts))) }))
    .filter((b) => b.rules.length > 0);
  const newest = latestArchived(scanned.flatMap((r) => r.events.filter((e) => e.kinds.includes('rdb'))))?.ts ?? null;
  const scope = [options.rule !== undefined ? `rule ${options.rule}` : '', options.ts ? `event ${options.ts}` : ''].filter(Boolean).join(', ');
  const at = new Date(Date.now() - report.durationMs).toISOString();
  try {
    await updateState(fs, instance, 'verify', (state) => {
      state.verify = manualVerifyRecord(state.verify, {
        at, durationMs: report.durationMs, ...(scope ? { scope } : {}),
        events: new Set(checkedEvents.filter((e) => complete.has(pairKey(e.rule, e.ts))).map((e) => e.ts)).size,
        filesRead: report.filesRead, bytesRead: report.bytesRead,
        // A --rule verify saw one folder: the newest event of the archive is the state's business (inspect), not this run's.
        newest: options.rule === undefined ? newest : state.verify?.newest ?? newest,
        fresh,
        checked: new Set(checkedEvents.map((e) => pairKey(e.rule, e.ts))),
        scannedRules: new Set(scanned.map((r) => r.rule)),
        present: new Set(scanned.flatMap((r) => r.events.map((e) => pairKey(r.rule, e.ts)))),
      });
      bumpCounter(state, 'verify_runs');
      if (fresh.length > 0) bumpCounter(state, 'verify_runs_bad');
    });
    log.debug({ state: instance.statePath, bad: fresh.length }, 'verify recorded in the state');
  } catch (err) {
    const w = `the result was not recorded in the state (check, status and the metrics do not show it): ${errorReport(err).message}`;
    report.warnings.push(w);
    log.warn({ state: instance.statePath }, w);
  }
}

export function verifyJson(report: VerifyReport): object {
  return {
    ok: report.ok,
    events: report.events,
    bad: report.bad,
    badCopies: report.badCopies,
    notes: report.notes,
    warnings: report.warnings,
    filesRead: report.filesRead,
    bytesRead: report.bytesRead,
    durationMs: report.durationMs,
    ...(report.error ? { error: report.error } : {}),
    exitCode: report.exitCode,
  };
}

export function verifyText(report: VerifyReport, opts?: TextOptions): string {
  const lines: string[] = [];
  let total = 0;
  for (const [rule, events] of Object.entries(report.events)) {
    for (const e of events) {
      total += 1;
      // A bad event's problems are also an error line of the log: shown once where both are read together.
      const problems = opts?.errorsLogged ? 'see the error logged above' : e.problems.join('; ');
      lines.push(`${e.ok ? 'ok ' : 'BAD'}  ${rule}  ${e.ts}${e.ok ? '' : `: ${problems}`}`);
      for (const w of e.warnings) lines.push(`     warning: ${w}`);
    }
  }
  for (const n of report.notes) lines.push(`note: ${n}`);
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  if (report.error) lines.push(failureLine('error', report.error.message, report.exitCode, opts));
  lines.push(`verified ${total} event${total === 1 ? '' : 's'} (${report.filesRead} file${report.filesRead === 1 ? '' : 's'} read, ${formatBytes(report.bytesRead)}, ${(report.durationMs / 1000).toFixed(1)} s): ${total - report.bad.length} ok, ${report.bad.length} bad`);
  if (report.badCopies.length > 0) {
    // Once per file: the rule folders holding hard links of one bad file share a line.
    lines.push('bad events:');
    for (const b of report.badCopies) {
      lines.push(`  ${b.rules.join(', ')} ${b.ts}`);
      if (!opts?.errorsLogged) for (const p of b.problems) lines.push(`    - ${p}`);
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// Commands

/** Discovers and scans every instance's folders; a --rule that names no folder anywhere is a usage error (exit 2). */
export async function scanInstances(
  fs: FileSystem,
  instances: readonly InstanceConfig[],
  ruleName: string | undefined,
  options: { skipUnreadable?: boolean } = {},
): Promise<Array<Awaited<ReturnType<typeof scanArchive>>>> {
  const all = [];
  for (const instance of instances) all.push(await scanArchive(fs, instance, ruleName, options));
  checkFolderNamed(ruleName, all.map((a) => a.names));
  return all;
}

export function registerCatalogCommands(program: Command): void {
  program
    .command('list')
    .description('list archived events per rule, most recently archived first: timestamp, size, nodes.conf, Redis/Valkey version and ctime from the RDB header')
    .option('--rule <name>', 'only this rule folder')
    .option('--remote <name>', 'list the complete events at this off-site remote instead')
    .option('--identity <file>', 'with --remote: an age identity file; encrypted events then show whether it opens them (or RDB_ARCHIVER_AGE_IDENTITY_FILE)')
    .option('--json', 'print one JSON object on stdout: {"<rule>":[{"ts","seq","bytes","nodes","redisVersion","ctime","origin","copy","shared"[,"server"]}]}')
    .action(async (opts: { rule?: string; remote?: string; identity?: string }, cmd: Command) => {
      if (opts.remote !== undefined) {
        if (opts.rule !== undefined) throw new ConfigError(undefined, '--rule', 'does not apply with --remote');
        await runRemoteList(cmd, opts.remote, opts.identity);
        return;
      }
      if (opts.identity !== undefined) throw new ConfigError(undefined, '--identity', 'applies to --remote only (local archives are not encrypted)');
      const ctx = contextFor(cmd, { archiveOnly: true });
      const archives = await scanInstances(ctx.fs, ctx.config.instances, opts.rule);
      const results = [];
      for (const [i, instance] of ctx.config.instances.entries()) {
        results.push({ instance: instance.name, report: await listInstance(ctx.fs, ctx.log, instance, opts.rule, archives[i]) });
      }
      // One instance: keyed by rule. Several: the rules go under "rules", since a rule may be named "instance".
      printResults(ctx, results, (r: ListReport) => r.rules, listText, (r) => ({ rules: r.rules }));
    });

  program
    .command('verify')
    .argument('[ts]', 'only the event with this timestamp (2025-02-24T23-59-00 or ISO 8601)')
    .description('re-check archived events against their sha256 sidecar and the RDB CRC-64; exit 1 when any is bad')
    .option('--rule <name>', 'only this rule folder')
    .option('--remote <name>', 'verify the events at this off-site remote instead: manifest, sizes and ETags (HEAD)')
    .option('--read-data', 'with --remote: download every event and recompute sha256 and the RDB CRC-64 (of the plaintext: encrypted events need --identity)')
    .option('--identity <file>', 'with --remote: the age identity file that decrypts encrypted events (or RDB_ARCHIVER_AGE_IDENTITY_FILE); without it their content is not checked')
    .option('--json', 'print one JSON object on stdout')
    .action(async (tsText: string | undefined, opts: { rule?: string; remote?: string; readData?: boolean; identity?: string }, cmd: Command) => {
      if (opts.remote !== undefined) {
        if (opts.rule !== undefined) throw new ConfigError(undefined, '--rule', 'does not apply with --remote');
        await runRemoteVerify(cmd, opts.remote, { readData: opts.readData === true, ts: tsText === undefined ? undefined : parseTsArgument(tsText), identity: opts.identity });
        return;
      }
      if (opts.identity !== undefined) throw new ConfigError(undefined, '--identity', 'applies to --remote only (local archives are not encrypted)');
      if (opts.readData) throw new ConfigError(undefined, '--read-data', 'applies to --remote only (a local verify always reads every byte)');
      const ctx = contextFor(cmd, { archiveOnly: true });
      const ts = tsText === undefined ? undefined : parseTsArgument(tsText);
      const archives = await scanInstances(ctx.fs, ctx.config.instances, opts.rule);
      const results = [];
      for (const [i, instance] of ctx.config.instances.entries()) {
        const report = await verifyInstance(ctx.fs, ctx.log, instance, { rule: opts.rule, ts }, archives[i]);
        // With a config, what a person found is what check and the metrics report; a rescue host (--archive alone) is read-only.
        if (!instance.archiveOnly && !report.error) await recordVerify(ctx.fs, ctx.log, instance, report, archives[i]!.scanned, { rule: opts.rule, ts });
        results.push({ instance: instance.name, report });
      }
      printResults(ctx, results, verifyJson, verifyText);
    });
}
