/**
 * `restore <TS|latest> --to PATH`: copies one archived event back out, after
 * checking it, and prints how to load it into Redis.
 *
 *   find the event -> check the target(s) -> one read pass per file that
 *   writes a temp file in the target folder and computes sha256 + the RDB
 *   check -> compare with the sidecar -> fsync -> rename (no-overwrite link
 *   unless --force) -> fsync the folder.
 *
 * Nothing appears under the target name unless the event verified, so
 * "verify first" costs no second read of a large file. If one copy of the
 * event is bad and another rule folder holds an independent copy (another
 * inode), that copy is used instead, with a warning.
 */
import { basename, dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import {
  EventNotFoundError,
  FileChecker,
  LatestMissingError,
  ctimeOf,
  findEvent,
  latestProblem,
  parseSidecar,
  parseTsArgument,
  readStateLatest,
  scanArchive,
  scanInstances,
  serverFactsOf,
  verifyEvent,
  versionOf,
  type EventLocation,
  type RuleEvents,
} from './catalog.js';
import { sortNewestArchivedFirst } from '../pipeline/event-order.js';
import type { InstanceConfig } from '../core/config.js';
import { ruleDir } from '../core/config.js';
import { contextFor, failureLine, formatBytes, printResults, type TextOptions } from '../core/context.js';
import { markFailed, type ErrorReport } from '../pipeline/cycle.js';
import { ArchiverError, ConfigError, ConflictError, ExitCode, InsufficientSpaceError, InvalidSnapshotError, type ExitCodeValue } from '../core/errors.js';
import { errorCode, lstatIfExists, publishNew, tempPathFor, unlinkIfExists, writeNewFile, type FileInfo, type FileSystem } from '../core/fs.js';
import type { Log } from '../core/log.js';
import type { RdbInfo, ValidationMode } from '../rdb/validate.js';
import { sha256Hex } from '../core/sha256.js';
import { eventFileName, type Timestamp } from '../core/timestamp.js';
import { copyPass, parseArchiveRecord } from '../pipeline/worker.js';
import { runRemoteRestore } from './offsite.js';
import { writtenByText } from '../sources/facts.js';
import type { ServerFacts } from '../sources/source.js';

/** Restored files are readable by their owner only; the follow-up steps chown them to the redis user. */
export const RESTORE_FILE_MODE = 0o600;
/** The name used when --to (or --nodes-to) is an existing folder. */
export const DEFAULT_RDB_NAME = 'dump.rdb';
export const DEFAULT_NODES_NAME = 'nodes.conf';

export interface RestoreOptions {
  which: Timestamp | 'latest';
  to: string;
  nodesTo?: string;
  rule?: string;
  force: boolean;
  /** With latest: when the newest event fails verification, restore the newest one that passes (never without it). */
  fallback?: boolean;
}

export interface RestoreReport {
  instance: string;
  status: 'restored' | 'failed';
  ts: Timestamp | null;
  rule: string | null;
  from: string | null;
  to: string | null;
  bytes: number;
  sha256: string | null;
  redisVersion: string | null;
  ctime: string | null;
  /** Pulled from a server (source.redis): the facts of the server that wrote it (archive record or manifest); null otherwise. */
  server: ServerFacts | null;
  nodes: { from: string; to: string | null } | null;
  replaced: string[];
  /** latest --fallback restored an older event: the newer ones that failed verification, newest first. */
  fallback?: { skipped: Array<{ ts: Timestamp; problem: string }> } | null;
  warnings: string[];
  steps: string[];
  error?: ErrorReport;
  exitCode: ExitCodeValue;
}

/**
 * `restore latest` without --fallback: the newest event failed verification
 * and an older one passes. Nothing is restored; the message names both.
 */
export class NewestEventBadError extends ArchiverError {
  readonly exitCode = ExitCode.NEWEST_BAD;
  readonly kind = 'newest-bad';
  constructor(readonly newest: Timestamp, readonly problem: string, readonly good: Timestamp) {
    super(`the newest event ${newest} failed verification (${problem}); nothing restored. The newest event that passes is ${good}: ` +
      `restore it with \`restore latest --fallback\` (or \`restore ${good}\`), knowing it is older`);
    this.name = 'NewestEventBadError';
  }
}

// ---------------------------------------------------------------------------
// Pure helpers

/** Quotes a path for a POSIX shell (only when needed). */
export function shellQuote(text: string): string {
  if (/^[A-Za-z0-9_./:@%+=,-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * The exact commands that load a restored RDB (and nodes.conf) into Redis.
 * `nodesNotRestored` is the archived nodes file when the event has one but
 * --nodes-to was not given.
 */
export function followUpSteps(input: { rdbPath: string; nodesPath?: string; nodesNotRestored?: string }): string[] {
  const rdb = shellQuote(input.rdbPath);
  const cluster = input.nodesPath !== undefined || input.nodesNotRestored !== undefined;
  const steps: string[] = [
    '1. While the server still runs, note where it loads its snapshot from, and whether AOF is on',
    '   (add -h/-p/-a to redis-cli as needed):',
    '     DIR=$(redis-cli CONFIG GET dir | tail -n 1)',
    '     DBFILENAME=$(redis-cli CONFIG GET dbfilename | tail -n 1)',
  ];
  if (cluster) steps.push('     NODESFILE=$(redis-cli CONFIG GET cluster-config-file | tail -n 1)');
  steps.push(
    '     redis-cli CONFIG GET appendonly',
    '   If appendonly is "yes", Redis loads the AOF at startup, NOT the RDB: set "appendonly no" in redis.conf',
    '   before step 4 (step 5 turns it back on).',
    '2. Stop the server: systemctl stop redis-server (or: redis-cli SHUTDOWN NOSAVE). A save on shutdown is',
    '   harmless: it happens before the next step replaces the file.',
    '3. Put the restored file in place as dbfilename in dir, owned by the redis user:',
    `     mv ${rdb} "$DIR/$DBFILENAME"`,
    '     chown redis:redis "$DIR/$DBFILENAME" && chmod 0600 "$DIR/$DBFILENAME"',
  );
  if (input.nodesPath !== undefined) {
    const nodes = shellQuote(input.nodesPath);
    steps.push(
      '   and the cluster state that belongs to it, as cluster-config-file in dir:',
      `     mv ${nodes} "$DIR/$NODESFILE"`,
      '     chown redis:redis "$DIR/$NODESFILE" && chmod 0600 "$DIR/$NODESFILE"',
    );
  } else if (input.nodesNotRestored !== undefined) {
    const nodes = shellQuote(input.nodesNotRestored);
    steps.push(
      '   This event also has a nodes.conf, which was NOT restored (no --nodes-to). A cluster node needs it:',
      `     cp ${nodes} "$DIR/$NODESFILE"`,
      '     chown redis:redis "$DIR/$NODESFILE" && chmod 0600 "$DIR/$NODESFILE"',
    );
  }
  steps.push(
    '4. Start the server (systemctl start redis-server) and check it loaded the data:',
    '     redis-cli INFO persistence | grep -E "loading:|rdb_last_load_keys_loaded"',
    '     redis-cli DBSIZE',
  );
  if (cluster) steps.push('     redis-cli CLUSTER INFO | grep cluster_state');
  steps.push(
    '5. If AOF was on: redis-cli CONFIG SET appendonly yes (Redis writes a new AOF from the loaded data), wait until',
    '   redis-cli INFO persistence shows aof_rewrite_in_progress:0, then set "appendonly yes" in redis.conf again.',
  );
  return steps;
}

// ---------------------------------------------------------------------------

interface Target {
  /** The final path. */
  path: string;
  dir: string;
  exists: boolean;
  /** The folder's device:inode and the name: equal for every spelling of one directory entry. */
  entry: string;
  /** The existing file's device:inode. */
  file?: string;
}

const identity = (info: FileInfo) => `${info.dev}:${info.ino}`;

/**
 * The device:inode of every folder restore must never write into: the archive
 * root, its rule folders and the state folder. Compared by identity, not by
 * path, so a symlink or a bind mount cannot spell its way in.
 */
async function archiveIdentities(fs: FileSystem, instance: InstanceConfig, scanned: readonly RuleEvents[] = []): Promise<Set<string>> {
  const folders = [instance.archiveDir, dirname(instance.statePath), ...instance.rules.map((rule) => ruleDir(instance, rule)), ...scanned.map((r) => r.dir)];
  const ids = new Set<string>();
  for (const folder of folders) {
    const info = await statOrUndefined(fs, folder);
    if (info) ids.add(identity(info));
  }
  return ids;
}

/**
 * Whether `dir` is one of `folders` or below one. Walks up through `..`,
 * which the kernel resolves from the real directory (after symlinks), so the
 * walk follows the physical tree whatever the spelling of `dir`.
 */
async function insideAny(fs: FileSystem, dir: string, folders: ReadonlySet<string>): Promise<boolean> {
  let path = dir;
  let info = await fs.stat(path);
  for (let depth = 0; depth < 4096; depth += 1) {
    if (folders.has(identity(info))) return true;
    path = `${path === '/' ? '' : path}/..`; // not join(): that would resolve ".." lexically
    const parent = await fs.stat(path);
    if (identity(parent) === identity(info)) return false; // the root is its own parent
    info = parent;
  }
  return false;
}

/**
 * Resolves --to / --nodes-to: an existing folder (or a symlink to one) gets
 * `defaultName` inside it; the folder must exist and must not be inside the
 * archive however it is spelled. A target that is itself a symlink is
 * refused: replacing it would replace the link, not what it points to, and
 * what it points to may be an archived file.
 */
async function resolveTarget(
  fs: FileSystem,
  option: string,
  text: string,
  defaultName: string,
  force: boolean,
  archive: { dir: string; ids: ReadonlySet<string> },
): Promise<Target> {
  let path = resolve(text);
  let info = await lstatIfExists(fs, path);
  if (info?.kind === 'dir' || (info?.kind === 'symlink' && (await statOrUndefined(fs, path))?.kind === 'dir')) {
    path = join(path, defaultName);
    info = await lstatIfExists(fs, path);
  }
  const dir = dirname(path);
  const dirInfo = await statOrUndefined(fs, dir);
  if (!dirInfo || dirInfo.kind !== 'dir') {
    throw new ConfigError(undefined, option, `folder ${dir} does not exist: create it first (restore writes ${basename(path)} into it)`);
  }
  if (await insideAny(fs, dir, archive.ids)) {
    throw new ConfigError(undefined, option, `${path} is inside the archive (${archive.dir}), through its real path: restore somewhere else`);
  }
  if (info?.kind === 'symlink') {
    throw new ConfigError(undefined, option, `${path} is a symlink: restore never writes through one (it could point into the archive); give the real path`);
  }
  if (info) {
    if (info.kind === 'dir') throw new ConflictError(path, 'is a directory; refusing to replace it');
    if (!force) throw new ConflictError(path, `exists; refusing to overwrite it (add --force to replace it atomically)`);
  }
  return { path, dir, exists: info !== undefined, entry: `${identity(dirInfo)}/${basename(path)}`, file: info ? identity(info) : undefined };
}

/** Two targets naming one file, by folder identity and name, or (existing) by inode. */
function sameFile(a: Target, b: Target): boolean {
  return a.entry === b.entry || (a.file !== undefined && a.file === b.file);
}

async function statOrUndefined(fs: FileSystem, path: string): Promise<FileInfo | undefined> {
  try {
    return await fs.stat(path);
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

interface Staged {
  rdbTemp: string;
  rdb: RdbInfo;
  sha256: string;
  bytes: number;
  nodesTemp?: string;
  nodesFrom?: string;
}

/**
 * Copies one copy of the event into temp files next to the targets and checks
 * it on the way (sidecar sha256 + RDB check). Throws InvalidSnapshotError
 * listing every problem; on any failure its temp files are gone.
 */
async function stageCopy(
  fs: FileSystem,
  loc: EventLocation,
  rdbTarget: Target,
  nodesTarget: Target | undefined,
  temps: string[],
  validation: ValidationMode | undefined,
): Promise<Staged> {
  const rdbName = eventFileName('rdb', loc.ts);
  const nodesName = eventFileName('nodes', loc.ts);
  const sidecarName = eventFileName('sha256', loc.ts);
  const rdbPath = join(loc.dir, rdbName);
  const problems: string[] = [];

  // The sidecar first: without it there is nothing to verify against.
  let expected = new Map<string, string>();
  try {
    const { entries, errors } = parseSidecar((await fs.readFile(join(loc.dir, sidecarName))).toString('utf8'));
    for (const e of errors) problems.push(`${sidecarName}: malformed: ${e}`);
    expected = new Map(entries.map((e) => [e.name, e.sha256]));
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
    problems.push(`missing sidecar ${sidecarName}: the event cannot be verified`);
  }
  if (problems.length === 0 && !expected.has(rdbName)) problems.push(`${sidecarName} does not list ${rdbName}`);
  const hasNodes = loc.kinds.includes('nodes');
  if (problems.length === 0 && hasNodes && !expected.has(nodesName)) problems.push(`${sidecarName} does not list ${nodesName}`);
  if (problems.length === 0 && !hasNodes && expected.has(nodesName)) problems.push(`missing companion ${nodesName}: listed in ${sidecarName} but absent`);
  if (problems.length > 0) throw new InvalidSnapshotError(rdbPath, problems.join('; '));

  // nodes.conf: small; read, check, stage.
  let nodesTemp: string | undefined;
  if (hasNodes) {
    let data: Buffer;
    try {
      data = await fs.readFile(join(loc.dir, nodesName));
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
      throw new InvalidSnapshotError(rdbPath, `missing companion ${nodesName}: it disappeared`);
    }
    const sha = sha256Hex(data);
    if (sha !== expected.get(nodesName)) {
      throw new InvalidSnapshotError(rdbPath, `sha256 mismatch: ${nodesName}: ${sidecarName} says ${expected.get(nodesName)}, the file has ${sha}`);
    }
    if (nodesTarget) {
      nodesTemp = tempPathFor(nodesTarget.path);
      temps.push(nodesTemp);
      await writeNewFile(fs, nodesTemp, data, RESTORE_FILE_MODE);
    }
  }

  // The .rdb: one read that writes the temp copy, hashes it and checks the RDB.
  const source = await fs.open(rdbPath, 'read-nofollow');
  try {
    const info = await source.stat();
    const { available } = await fs.space(rdbTarget.dir);
    if (available < info.size) throw new InsufficientSpaceError(rdbTarget.dir, info.size, available);
    const rdbTemp = tempPathFor(rdbTarget.path);
    temps.push(rdbTemp);
    const out = await fs.open(rdbTemp, 'create-exclusive', RESTORE_FILE_MODE);
    let pass;
    try {
      await out.chmod(RESTORE_FILE_MODE);
      pass = await copyPass(source, rdbPath, out, undefined, validation, undefined, info.size);
      await out.sync();
    } finally {
      await out.close();
    }
    if (pass.sha256 !== expected.get(rdbName)) {
      throw new InvalidSnapshotError(rdbPath, `sha256 mismatch: ${rdbName}: ${sidecarName} says ${expected.get(rdbName)}, the file has ${pass.sha256}`);
    }
    // The archive records say it too (as verify checks): an .rdb and sidecar replaced together still disagree with them.
    const recorded = await recordProblems(fs, loc, pass.sha256);
    if (recorded.length > 0) throw new InvalidSnapshotError(rdbPath, recorded.join('; '));
    return { rdbTemp, rdb: pass.rdb, sha256: pass.sha256, bytes: pass.bytes, nodesTemp, nodesFrom: hasNodes ? join(loc.dir, nodesName) : undefined };
  } finally {
    await source.close().catch(() => undefined);
  }
}

/** Each archive record of the event (in its folder) that does not name `sha256` as the .rdb's content, or cannot be read. */
async function recordProblems(fs: FileSystem, loc: EventLocation, sha256: string): Promise<string[]> {
  const problems: string[] = [];
  for (const seq of loc.seqs ?? []) {
    const name = eventFileName('meta', loc.ts, seq);
    let text: string;
    try {
      text = (await fs.readFile(join(loc.dir, name))).toString('utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT') continue; // pruned since the scan: the .rdb read above was complete
      throw err;
    }
    const record = parseArchiveRecord(text);
    if (!record) problems.push(`${name}: not a valid archive record`);
    else if (record.sha256 !== sha256) problems.push(`sha256 mismatch: ${eventFileName('rdb', loc.ts)}: ${name} says ${record.sha256}, the file has ${sha256}`);
  }
  return problems;
}

async function publish(fs: FileSystem, temp: string, target: Target, force: boolean): Promise<void> {
  if (force) {
    await fs.rename(temp, target.path); // atomic replace
    return;
  }
  try {
    await publishNew(fs, temp, target.path); // never overwrites: fails with EEXIST
  } catch (err) {
    if (errorCode(err) === 'EEXIST') throw new ConflictError(target.path, 'appeared while restoring; refusing to overwrite it (add --force to replace it)');
    throw err;
  }
}

/** The complete events' timestamps, most recently archived first (event-order.ts), each once. */
function archiveOrder(scanned: readonly RuleEvents[]): Timestamp[] {
  const events = sortNewestArchivedFirst(scanned.flatMap((r) => r.events.filter((e) => e.kinds.includes('rdb'))));
  return [...new Set(events.map((e) => e.ts))];
}

/**
 * Stages the first copy of the event (distinct inodes only) that verifies.
 * `failures` says why each other copy was refused; on success the temps are
 * added to `temps`, otherwise none is left.
 */
async function stageFirstGoodCopy(
  fs: FileSystem,
  log: Log,
  locations: readonly EventLocation[],
  rdbTarget: Target,
  nodesTarget: Target | undefined,
  temps: string[],
  validation: ValidationMode | undefined,
): Promise<{ staged?: Staged; used?: EventLocation; failures: string[] }> {
  const seen = new Set<string>();
  const failures: string[] = [];
  for (const loc of locations) {
    const rdbPath = join(loc.dir, eventFileName('rdb', loc.ts));
    const info = await lstatIfExists(fs, rdbPath);
    if (!info) continue; // pruned since the scan
    const key = `${info.dev}:${info.ino}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const mine: string[] = [];
    try {
      const staged = await stageCopy(fs, loc, rdbTarget, nodesTarget, mine, validation);
      temps.push(...mine);
      return { staged, used: loc, failures };
    } catch (err) {
      for (const t of mine) await unlinkIfExists(fs, t).catch(() => undefined);
      if (!(err instanceof InvalidSnapshotError)) throw err;
      failures.push(`${loc.rule}/${eventFileName('rdb', loc.ts)}: ${err.reason}`);
      log.error({ rule: loc.rule, ts: loc.ts, problem: err.reason }, 'archived copy failed verification');
    }
  }
  return { failures };
}

/** The newest of `candidates` (newest first) with a copy that passes verify's checks; read only. */
async function newestGoodEvent(fs: FileSystem, scanned: readonly RuleEvents[], candidates: readonly Timestamp[], validation: ValidationMode | undefined): Promise<Timestamp | undefined> {
  const checker = new FileChecker(fs, validation);
  for (const ts of candidates) {
    for (const r of scanned) {
      const event = r.events.find((e) => e.ts === ts && e.kinds.includes('rdb'));
      if (event && (await verifyEvent(fs, checker, r.dir, event)).ok) return ts;
    }
  }
  return undefined;
}

/** A restore report before anything happened (failed until the steps say otherwise). */
export function emptyRestoreReport(instance: string): RestoreReport {
  return {
    instance, status: 'failed', ts: null, rule: null, from: null, to: null, bytes: 0, sha256: null,
    redisVersion: null, ctime: null, server: null, nodes: null, replaced: [], fallback: null, warnings: [], steps: [], exitCode: ExitCode.OK,
  };
}

/**
 * Runs a restore's steps (local or --from): an error becomes the report's
 * failure (markFailed), and the temp files still listed in `temps` are removed
 * either way (after a publish they are gone already: renamed).
 */
export async function settleRestore(fs: FileSystem, log: Log, report: RestoreReport, temps: string[], steps: () => Promise<void>): Promise<RestoreReport> {
  try {
    await steps();
  } catch (err) {
    markFailed(report, err, log, 'restore failed');
  } finally {
    for (const t of temps) await unlinkIfExists(fs, t).catch(() => undefined);
  }
  return report;
}

/**
 * latest: the state file names the event archived last; when the archive no
 * longer ranks it first (its .rdb or archive record is gone), the newest event
 * left is older data. Refused, unless --fallback asks for the newest good one.
 */
function checkLatestAgainstState(lost: string | undefined, options: RestoreOptions, warn: (w: string) => void): void {
  if (!lost) return;
  if (options.fallback) {
    warn(`--fallback: ${lost}; restoring the newest event left, which is OLDER data`);
    return;
  }
  throw new LatestMissingError(`refusing to restore older data as "latest": ${lost}. ` +
    '`rdb-archiver once` archives the source again if it still holds that snapshot; to restore an older event, name it (see `rdb-archiver list`) or add --fallback');
}

export async function restoreEvent(fs: FileSystem, log: Log, instance: InstanceConfig, options: RestoreOptions): Promise<RestoreReport> {
  const report = emptyRestoreReport(instance.name);
  const temps: string[] = [];
  const warn = (w: string, obj: object = {}) => {
    report.warnings.push(w);
    log.warn(obj, w);
  };
  return settleRestore(fs, log, report, temps, async () => {
    const stateLatest = options.which === 'latest' ? await readStateLatest(fs, instance) : undefined; // before the scan
    if (stateLatest?.problem) warn(stateLatest.problem);
    // An unsafe folder (a symlink out of the archive, unreadable) is skipped and reported, never followed.
    const { scanned, notes } = await scanArchive(fs, instance, options.rule, { skipUnreadable: true });
    for (const n of notes) log.info({ archive: instance.archiveDir }, n);
    for (const { rule, dir, warnings } of scanned) for (const w of warnings) warn(w, { rule, dir });
    checkLatestAgainstState(latestProblem(stateLatest?.archived, scanned), options, warn);
    // latest: every complete event, most recently archived first (a bad newest one is never skipped silently).
    const candidates = options.which === 'latest' ? archiveOrder(scanned) : [options.which];
    const first = candidates.length > 0 ? findEvent(scanned, candidates[0]!) : [];
    if (first.length === 0) {
      const where = scanned.map((r) => r.rule).join(', ') || 'any rule folder';
      throw new EventNotFoundError(options.which === 'latest'
        ? `no archived events in ${where} (instance ${instance.name}): nothing to restore`
        : `no archived event ${options.which} in ${where} (instance ${instance.name}); see \`rdb-archiver list\``);
    }
    const hasNodes = first.some((l) => l.kinds.includes('nodes'));

    const archive = { dir: instance.archiveDir, ids: await archiveIdentities(fs, instance, scanned) };
    const rdbTarget = await resolveTarget(fs, '--to', options.to, DEFAULT_RDB_NAME, options.force, archive);
    let nodesTarget: Target | undefined;
    if (options.nodesTo !== undefined) {
      if (!hasNodes) {
        warn(`event ${first[0]!.ts} has no nodes.conf: --nodes-to ${options.nodesTo} ignored`, { ts: first[0]!.ts });
      } else {
        nodesTarget = await resolveTarget(fs, '--nodes-to', options.nodesTo, DEFAULT_NODES_NAME, options.force, archive);
        if (sameFile(nodesTarget, rdbTarget)) {
          throw new ConfigError(undefined, '--nodes-to', `${nodesTarget.path} is the same file as --to (${rdbTarget.path}): give each its own path`);
        }
      }
    }

    let staged: Staged | undefined;
    let used: EventLocation | undefined;
    let failures: string[] = [];
    const skipped: Array<{ ts: Timestamp; problem: string }> = [];
    for (const [i, candidate] of candidates.entries()) {
      const locations = i === 0 ? first : findEvent(scanned, candidate);
      if (locations.length === 0) continue;
      const attempt = await stageFirstGoodCopy(fs, log, locations, rdbTarget, nodesTarget, temps, instance.validation);
      failures = attempt.failures;
      if (attempt.staged) {
        staged = attempt.staged;
        used = attempt.used;
        break;
      }
      const problem = failures.join(' | ') || 'no readable copy';
      if (options.which !== 'latest') {
        throw new InvalidSnapshotError(join(locations[0]!.dir, eventFileName('rdb', candidate)), `event ${candidate} failed verification; nothing restored: ${problem}`);
      }
      skipped.push({ ts: candidate, problem });
      log.error({ ts: candidate, problem }, options.fallback ? 'event failed verification; trying the next older one (--fallback)' : 'the newest event failed verification');
      if (!options.fallback) {
        // Name the newest event that passes (read-only: nothing is written), and stop.
        const good = await newestGoodEvent(fs, scanned, candidates.slice(i + 1), instance.validation);
        if (good) throw new NewestEventBadError(candidate, problem, good);
        throw new InvalidSnapshotError(join(locations[0]!.dir, eventFileName('rdb', candidate)), `event ${candidate} failed verification; nothing restored: ${problem} (it is the newest event, and no older one passes either)`);
      }
    }
    if (!staged || !used) {
      throw new InvalidSnapshotError(instance.archiveDir,
        `no archived event passes verification (${skipped.length} tried, newest first); nothing restored: ${skipped.map((k) => `${k.ts}: ${k.problem}`).join(' || ')}`);
    }
    const ts = used.ts;
    if (skipped.length > 0) {
      report.fallback = { skipped };
      warn(`--fallback: restored ${ts}, an OLDER event: the newer ${skipped.map((k) => k.ts).join(', ')} failed verification (${skipped.map((k) => k.problem).join(' || ')})`, { ts });
    }
    for (const f of failures) warn(`skipped a bad copy of event ${ts}: ${f}; restored the copy in ${used.rule} instead`);
    for (const w of staged.rdb.warnings) warn(`${eventFileName('rdb', ts)}: ${w}`);

    // Publish, then make the names durable.
    await publish(fs, staged.rdbTemp, rdbTarget, options.force);
    if (rdbTarget.exists) report.replaced.push(rdbTarget.path);
    if (staged.nodesTemp && nodesTarget) {
      await publish(fs, staged.nodesTemp, nodesTarget, options.force);
      if (nodesTarget.exists) report.replaced.push(nodesTarget.path);
    }
    await fs.syncDir(rdbTarget.dir);
    if (nodesTarget && nodesTarget.dir !== rdbTarget.dir) await fs.syncDir(nodesTarget.dir);

    const nodesNotRestored = staged.nodesFrom && !nodesTarget ? staged.nodesFrom : undefined;
    if (nodesNotRestored) {
      warn(`event ${ts} has a nodes.conf (${nodesNotRestored}) that was NOT restored: add --nodes-to PATH, or copy it as the follow-up steps show`, { ts });
    }
    Object.assign(report, {
      status: 'restored',
      ts,
      rule: used.rule,
      from: join(used.dir, eventFileName('rdb', ts)),
      to: rdbTarget.path,
      bytes: staged.bytes,
      sha256: staged.sha256,
      redisVersion: versionOf(staged.rdb),
      ctime: ctimeOf(staged.rdb),
      server: await serverFactsOf(fs, used.dir, used),
      nodes: staged.nodesFrom ? { from: staged.nodesFrom, to: nodesTarget?.path ?? null } : null,
      steps: followUpSteps({ rdbPath: rdbTarget.path, nodesPath: nodesTarget?.path, nodesNotRestored }),
    });
    log.info({ ts, rule: used.rule, to: rdbTarget.path, bytes: staged.bytes, sha256: staged.sha256, nodesTo: nodesTarget?.path }, 'snapshot restored');
  });
}

export function restoreJson(report: RestoreReport): object {
  const { instance: _instance, ...rest } = report;
  return rest;
}

export function restoreText(report: RestoreReport, opts?: TextOptions): string {
  if (report.status !== 'restored') {
    return [failureLine('failed', report.error?.message ?? 'unknown error', report.exitCode, opts), ...report.warnings.map((w) => `warning: ${w}`)].join('\n');
  }
  const lines = [
    `restored ${report.ts} from ${report.rule ?? report.from} (verified: sha256 and RDB CRC-64)`,
    `  rdb:   ${report.to} (${formatBytes(report.bytes)}, sha256 ${report.sha256}, version ${report.redisVersion ?? '?'}, ctime ${report.ctime ?? '?'}, mode 0600)`,
  ];
  const writer = writtenByText(report.server, report.redisVersion);
  if (writer) lines.push(`  written by ${writer}: load it into this version or a newer one`);
  if (report.nodes?.to) lines.push(`  nodes: ${report.nodes.to} (mode 0600)`);
  for (const r of report.replaced) lines.push(`  replaced the existing ${r} (--force)`);
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  lines.push('', 'To load it into Redis:', ...report.steps.map((s) => `  ${s}`));
  return lines.join('\n');
}

/** For `restore --from` (src/commands/offsite.ts): the same target rules and publishing. */
export { resolveTarget as resolveRestoreTarget, publish as publishRestored, archiveIdentities };

export function registerRestoreCommand(program: Command): void {
  program
    .command('restore')
    .argument('<ts>', 'the event to restore: a timestamp (2025-02-24T23-59-00 or ISO 8601) or "latest" (the event archived most recently, whatever its timestamp)')
    .description('verify an archived event and write its RDB (and nodes.conf) atomically to --to, then print how to load it into Redis')
    .requiredOption('--to <path>', 'where to write the RDB (a file path, or an existing folder: writes dump.rdb in it)')
    .option('--nodes-to <path>', 'where to write the event\'s nodes.conf, if it has one (a file path, or an existing folder)')
    .option('--rule <name>', 'look only in this rule folder (with latest: the event it archived most recently)')
    .option('--from <remote>', 'restore from this off-site remote (downloads and verifies while streaming) instead of the local archive')
    .option('--identity <file>', 'with --from: the age identity file that decrypts an encrypted event (or RDB_ARCHIVER_AGE_IDENTITY_FILE)')
    .option('--force', 'replace existing target files (atomically)')
    .option('--fallback', 'with latest: if the newest event fails verification, restore the newest one that passes (without it: exit 79, nothing restored)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (tsText: string, opts: { to: string; nodesTo?: string; rule?: string; from?: string; force?: boolean; fallback?: boolean; identity?: string }, cmd: Command) => {
      if (opts.from !== undefined) {
        if (opts.rule !== undefined) throw new ConfigError(undefined, '--rule', 'does not apply with --from (a remote holds one copy of each event)');
        const which = tsText === 'latest' ? 'latest' : parseTsArgument(tsText);
        await runRemoteRestore(cmd, opts.from, { which, to: opts.to, nodesTo: opts.nodesTo, force: opts.force === true, identity: opts.identity });
        return;
      }
      if (opts.identity !== undefined) throw new ConfigError(undefined, '--identity', 'applies to --from only (local archives are not encrypted)');
      if (opts.fallback && tsText !== 'latest') throw new ConfigError(undefined, '--fallback', 'applies to latest only (a named event is restored as it is, or not at all)');
      const ctx = contextFor(cmd, { archiveOnly: true });
      if (ctx.config.instances.length !== 1) {
        throw new ConfigError(ctx.config.file, '--instance', `restore works on one instance: add --instance NAME (instances: ${ctx.config.instances.map((i) => i.name).join(', ')})`);
      }
      const which = tsText === 'latest' ? 'latest' : parseTsArgument(tsText);
      await scanInstances(ctx.fs, ctx.config.instances, opts.rule, { skipUnreadable: true }); // a --rule that names no folder: exit 2
      const instance = ctx.config.instances[0]!;
      const report = await restoreEvent(ctx.fs, ctx.log, instance, { which, to: opts.to, nodesTo: opts.nodesTo, rule: opts.rule, force: opts.force === true, fallback: opts.fallback === true });
      printResults(ctx, [{ instance: instance.name, report }], restoreJson, restoreText);
    });
}
