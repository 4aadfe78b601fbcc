/**
 * Restore drills: load an archived event into a throwaway redis-server (or
 * valkey-server) and record what it holds.
 *
 *   pick the event -> temp folder (0700) -> copy the .rdb into it, checking
 *   sha256 against the sidecar and the RDB in the same read -> start the
 *   server on a private Unix socket (no TCP port, persistence off) -> wait
 *   until it has loaded -> DBSIZE, INFO keyspace, DEBUG DIGEST -> SHUTDOWN
 *   NOSAVE -> remove the temp folder.
 *
 * The server is always stopped and the folder always removed: on success, on
 * a failed load, on an error, and when the AbortSignal trips (SIGTERM). A
 * server that cannot read the event's RDB version says "Can't handle RDB
 * format version N" in its log: that is reported as exactly that
 * (version-unsupported), not as corruption.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, promises as fsp, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { InstanceConfig } from '../core/config.js';
import { ArchiverError, ConfigError, ExitCode, InvalidSnapshotError, type ExitCodeValue } from '../core/errors.js';
import type { FileSystem } from '../core/fs.js';
import type { Log } from '../core/log.js';
import { eventFileName, type Timestamp } from '../core/timestamp.js';
import { EventNotFoundError, parseSidecar, scanArchive, serverFactsOf, versionOf, type RuleEvents } from '../commands/catalog.js';
import { sortNewestArchivedFirst } from '../pipeline/event-order.js';
import { copyPass } from '../pipeline/worker.js';
import type { PassResult } from '../pipeline/copy-methods.js';
import type { ServerFacts } from '../sources/source.js';
import { parseInfo, ReplyError, type Reply } from '../sources/resp.js';
import { UnixRespClient } from './resp.js';
import { cleanKilledDrills, DRILL_HEARTBEAT_MS, DRILL_MARKER, DRILL_PREFIX, markerFor, setprivWithPdeathsig, tiedToUs, writeMarker } from './drill-folder.js';
import { processStartTime } from '../pipeline/lock.js';

export type DrillStatus = 'loaded' | 'load-failed' | 'version-unsupported' | 'failed';

/** What the state keeps of the last drill, and what `drill --json` prints. */
export interface DrillRecord {
  at: string;
  ts: Timestamp | null;
  rule: string | null;
  status: DrillStatus;
  /** Seconds the server took to load the event (its own log line, else measured from the start). */
  loadSeconds?: number;
  /** DBSIZE: the keys of database 0. */
  dbsize?: number;
  /** Keys in all databases (INFO keyspace). */
  keys?: number;
  /** INFO keyspace, e.g. {"db0": "keys=3,expires=1,avg_ttl=0"}. */
  keyspace?: Record<string, string>;
  /** DEBUG DIGEST; null when the server does not allow it (the reason is in `notes`). */
  digest?: string | null;
  server?: { binary: string; version: string | null };
  /**
   * Who wrote the event: its RDB format version and the server version (the
   * pulling server's facts from the archive record, else the RDB's redis-ver);
   * absent when the drill did not get as far as reading the event.
   */
  writtenBy?: { rdbVersion: number | null; redisVersion: string | null; server?: ServerFacts };
  /** What the server's log said about a failed load (its last lines). */
  serverLog?: string[];
  notes: string[];
  error?: string;
  /** For a drill that could not run: the exit code of its error (no event 66, no server 2, no space 1...). */
  failureCode?: number;
  durationMs: number;
}

/** The drill could not run or the event did not load; the exit code says which. */
export class DrillError extends ArchiverError {
  readonly kind = 'drill';
  constructor(readonly exitCode: ExitCodeValue, message: string) {
    super(message);
    this.name = 'DrillError';
  }
}

/** The exit code of a drill's outcome (`rdb-archiver drill`). */
export function drillExitCode(r: DrillRecord): ExitCodeValue {
  switch (r.status) {
    case 'loaded': return ExitCode.OK;
    case 'load-failed': return ExitCode.INVALID_SOURCE;
    case 'version-unsupported': return ExitCode.DRILL_VERSION;
    case 'failed': return (r.failureCode ?? ExitCode.IO) as ExitCodeValue;
  }
}

/** A drill of a scheduled kind is due when `every` has passed since the last (or the last lies in the future). */
export function drillDue(last: DrillRecord | undefined, everyMs: number, nowMs: number): boolean {
  const lastMs = last ? Date.parse(last.at) : NaN;
  return !Number.isFinite(lastMs) || lastMs > nowMs + 60_000 || nowMs - lastMs >= everyMs;
}

/** The server binary: drill.server (a path, or a name looked up in PATH), else redis-server, else valkey-server. */
export function findServer(configured: string | undefined, path = process.env.PATH ?? ''): string | undefined {
  const names = configured ? [configured] : ['redis-server', 'valkey-server'];
  for (const name of names) {
    if (name.includes('/')) return name;
    for (const dir of path.split(delimiter).filter(Boolean)) {
      try {
        accessSync(join(dir, name), fsConstants.X_OK);
        return join(dir, name);
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/** The event to drill and where its copies are: `latest` is the most recently archived complete event. */
export function pickEvent(scanned: readonly RuleEvents[], which: Timestamp | 'latest'): { ts: Timestamp; rule: string; dir: string; seqs?: number[] } | undefined {
  const complete = sortNewestArchivedFirst(scanned.flatMap((r) => r.events.filter((e) => e.kinds.includes('rdb')).map((e) => ({ ...e, rule: r.rule, dir: r.dir }))));
  const hit = which === 'latest' ? complete[0] : complete.find((e) => e.ts === which);
  return hit ? { ts: hit.ts, rule: hit.rule, dir: hit.dir, ...(hit.seqs ? { seqs: hit.seqs } : {}) } : undefined;
}

export interface DrillDeps {
  fs: FileSystem;
  log: Log;
  signal?: AbortSignal;
}

/** Runs one drill. Never throws: every outcome is a record (status + error). */
export async function runDrill(deps: DrillDeps, instance: InstanceConfig, which: Timestamp | 'latest'): Promise<DrillRecord> {
  const started = Date.now();
  const record: DrillRecord = { at: new Date(started).toISOString(), ts: null, rule: null, status: 'failed', notes: [], durationMs: 0 };
  let temp: string | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  try {
    const { scanned } = await scanArchive(deps.fs, instance, undefined);
    const event = pickEvent(scanned, which);
    if (!event) throw new EventNotFoundError(which === 'latest' ? `no archived events in ${instance.archiveDir}: nothing to drill` : `no archived event ${which} in ${instance.archiveDir}; see \`rdb-archiver list\``);
    record.ts = event.ts;
    record.rule = event.rule;
    const binary = findServer(instance.drill?.server);
    if (!binary) throw new ConfigError(undefined, 'drill.server', 'no redis-server or valkey-server in PATH: install one, or set drill.server to its path');
    record.server = { binary, version: null };
    const root = instance.drill?.dir ?? tmpdir();
    // What a killed drill left here (its folder, maybe its server): only folders our marker identifies.
    await cleanKilledDrills(root, deps.log);
    temp = await fsp.mkdtemp(join(root, DRILL_PREFIX));
    const dir = temp;
    await writeMarker(dir, markerFor(dir));
    heartbeat = setInterval(() => {
      const now = new Date();
      void fsp.utimes(join(dir, DRILL_MARKER), now, now).catch(() => undefined);
    }, DRILL_HEARTBEAT_MS);
    heartbeat.unref();
    const staged = await stageEvent(deps, instance, event, join(temp, 'dump.rdb'));
    const facts = await serverFactsOf(deps.fs, event.dir, event);
    record.writtenBy = { rdbVersion: staged.rdb.version, redisVersion: facts?.redisVersion ?? versionOf(staged.rdb), ...(facts ? { server: facts } : {}) };
    await loadAndInspect(deps, binary, temp, instance.drill?.timeoutMs ?? 600_000, record, started);
  } catch (err) {
    record.error = err instanceof Error ? err.message : String(err);
    // An event that fails verification on the copy would not load either: a failed drill.
    if (err instanceof InvalidSnapshotError) record.status = 'load-failed';
    else record.failureCode = err instanceof ArchiverError ? err.exitCode : ExitCode.INTERNAL;
  } finally {
    if (heartbeat) clearInterval(heartbeat);
    if (temp) await fsp.rm(temp, { recursive: true, force: true }).catch((err: Error) => deps.log.error({ temp, err: err.message }, 'could not remove the drill folder'));
  }
  record.durationMs = Date.now() - started;
  const level = record.status === 'loaded' ? 'info' : 'error';
  deps.log[level]({ ts: record.ts, status: record.status, loadSeconds: record.loadSeconds, keys: record.keys, digest: record.digest, err: record.error }, 'restore drill');
  return record;
}

/** Copies the event's .rdb into the drill folder, checking it on the way (sidecar sha256 + RDB check). */
async function stageEvent(deps: DrillDeps, instance: InstanceConfig, event: { ts: Timestamp; dir: string }, to: string): Promise<PassResult> {
  const rdbPath = join(event.dir, eventFileName('rdb', event.ts));
  const sidecar = join(event.dir, eventFileName('sha256', event.ts));
  const expected = parseSidecar((await deps.fs.readFile(sidecar)).toString('utf8')).entries.find((e) => e.name === eventFileName('rdb', event.ts))?.sha256;
  if (!expected) throw new InvalidSnapshotError(rdbPath, `${sidecar} does not list it: the event cannot be verified`);
  const source = await deps.fs.open(rdbPath, 'read-nofollow');
  try {
    const size = (await source.stat()).size;
    const { available } = await deps.fs.space(join(to, '..'));
    if (available < size) throw new DrillError(ExitCode.NO_SPACE, `the drill folder ${join(to, '..')} has ${available} bytes free; the event needs ${size}: set drill.dir to a larger filesystem`);
    const out = await deps.fs.open(to, 'create-exclusive', 0o600);
    try {
      const pass = await copyPass(source, rdbPath, out, deps.signal, instance.validation, undefined, size);
      if (pass.sha256 !== expected) throw new InvalidSnapshotError(rdbPath, `sha256 mismatch: the sidecar says ${expected}, the file has ${pass.sha256}`);
      return pass;
    } finally {
      await out.close();
    }
  } finally {
    await source.close().catch(() => undefined);
  }
}

/** The server's arguments: a private Unix socket, no TCP, no persistence, its log in the drill folder. */
function serverArgs(dir: string, debugCommand: boolean): string[] {
  return [
    '--port', '0', '--unixsocket', join(dir, 'server.sock'), '--unixsocketperm', '700',
    '--dir', dir, '--dbfilename', 'dump.rdb', '--save', '', '--appendonly', 'no',
    '--daemonize', 'no', '--logfile', join(dir, 'server.log'), '--loglevel', 'notice',
    ...(debugCommand ? ['--enable-debug-command', 'local'] : []),
  ];
}

function serverLog(dir: string): string {
  try {
    return readFileSync(join(dir, 'server.log'), 'utf8');
  } catch {
    return '';
  }
}

async function loadAndInspect(deps: DrillDeps, binary: string, dir: string, timeoutMs: number, record: DrillRecord, started: number): Promise<void> {
  const setpriv = setprivWithPdeathsig();
  if (!setpriv) {
    record.notes.push('no setpriv with --pdeathsig (util-linux) in PATH: if rdb-archiver is killed (SIGKILL) during the drill, its server keeps running until the next drill stops it and removes its folder');
  }
  let server = await startServer(binary, dir, true, timeoutMs, setpriv, deps.signal);
  // A server older than Redis 7 does not know enable-debug-command: start it again without.
  if (server.kind === 'exited' && /enable-debug-command/.test(serverLog(dir))) {
    record.notes.push('this server has no enable-debug-command setting (older than Redis 7): started without it');
    server = await startServer(binary, dir, false, timeoutMs, setpriv, deps.signal);
  }
  if (server.kind !== 'ready') {
    const log = serverLog(dir);
    record.serverLog = log.split('\n').filter(Boolean).slice(-8);
    const version = /Can't handle RDB format version (\d+)/.exec(log);
    if (version) {
      record.status = 'version-unsupported';
      const local = binaryVersion(binary);
      if (record.server) record.server.version = local;
      const writer = record.writtenBy?.redisVersion ? `; it was written by server ${record.writtenBy.redisVersion}, this one is ${local ?? 'of unknown version'}` : '';
      record.error = `the event's RDB format version ${version[1]} is newer than ${binary} can load (not corruption${writer}): drill it with a newer redis-server or valkey-server (drill.server)`;
    } else if (server.kind === 'exited') {
      record.status = 'load-failed';
      record.error = `${binary} could not load the event: ${record.serverLog.slice(-3).join(' | ') || 'it exited'}`;
    } else {
      record.error = server.kind === 'timeout' ? `${binary} did not finish loading within ${timeoutMs} ms` : `${binary}: ${server.error}`;
    }
    return;
  }
  try {
    const loaded = /DB loaded from disk: ([\d.]+) seconds/.exec(serverLog(dir));
    record.loadSeconds = loaded ? Number(loaded[1]) : (Date.now() - started) / 1000;
    await inspectServer(server.client, record);
    record.status = 'loaded';
  } finally {
    await stopServer(server.child, server.client);
  }
}

/** The server binary's own version (`--version`: "Redis server v=7.0.15 ..."), or null. */
function binaryVersion(binary: string): string | null {
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return /\bv=(\S+)/.exec(r.stdout ?? '')?.[1] ?? null;
}

type Started = { kind: 'ready'; child: ChildProcess; client: UnixRespClient } | { kind: 'exited' } | { kind: 'timeout' } | { kind: 'error'; error: string };

/** Starts the server and waits until it answers PING (it has loaded the dump), exits, or the time is up. */
async function startServer(binary: string, dir: string, debugCommand: boolean, timeoutMs: number, setpriv: string | null, signal?: AbortSignal): Promise<Started> {
  // Through setpriv --pdeathsig KILL where present: the kernel kills the server when we die, however we die.
  const [command, args] = tiedToUs(binary, serverArgs(dir, debugCommand), setpriv);
  const child = spawn(command, args, { cwd: dir, stdio: 'ignore' });
  let exited = false;
  let spawnError: string | undefined;
  child.once('exit', () => (exited = true));
  child.once('error', (err) => {
    exited = true;
    spawnError = err.message;
  });
  if (child.pid !== undefined) {
    // setpriv execs the server: the same pid. Recorded for the next drill, should this one be killed.
    const start = processStartTime(child.pid);
    await writeMarker(dir, markerFor(dir, { pid: child.pid, ...(start ? { start } : {}) })).catch(() => undefined);
  }
  const deadline = Date.now() + timeoutMs;
  while (!exited) {
    if (signal?.aborted || Date.now() > deadline) {
      await stopServer(child, undefined);
      if (signal?.aborted) return { kind: 'error', error: 'aborted by shutdown' };
      return { kind: 'timeout' };
    }
    const client = await UnixRespClient.connect(join(dir, 'server.sock')).catch(() => undefined);
    if (client) {
      const pong = await client.send('PING').catch(() => undefined);
      if (pong === 'PONG') return { kind: 'ready', child, client };
      client.close();
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return spawnError ? { kind: 'error', error: spawnError } : { kind: 'exited' };
}

async function inspectServer(client: UnixRespClient, record: DrillRecord): Promise<void> {
  const dbsize = await client.send('DBSIZE');
  if (typeof dbsize === 'number') record.dbsize = dbsize;
  const info = parseInfo(text(await client.send('INFO', 'server')));
  record.server = { binary: record.server?.binary ?? '', version: info.valkey_version ?? info.redis_version ?? null };
  const keyspace = parseInfo(text(await client.send('INFO', 'keyspace')));
  record.keyspace = keyspace;
  record.keys = Object.values(keyspace).reduce((sum, v) => sum + Number(/keys=(\d+)/.exec(v)?.[1] ?? 0), 0);
  const digest: Reply = await client.send('DEBUG', 'DIGEST');
  if (digest instanceof ReplyError) {
    record.digest = null;
    record.notes.push(`DEBUG DIGEST refused by the server: ${digest.message}`);
  } else {
    record.digest = typeof digest === 'string' ? digest : null;
  }
}

const text = (r: Reply): string => (typeof r === 'string' ? r : '');

/** SHUTDOWN NOSAVE, then SIGKILL if it has not exited within 10 s. */
async function stopServer(child: ChildProcess, client: UnixRespClient | undefined): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  if (client) {
    await Promise.race([client.send('SHUTDOWN', 'NOSAVE').catch(() => undefined), new Promise((r) => setTimeout(r, 2_000))]);
    client.close();
  } else {
    child.kill('SIGTERM');
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await gone;
  clearTimeout(timer);
}

/** Parses the state's drill record defensively. */
export function parseDrillRecord(v: unknown): DrillRecord | undefined {
  const o = v as DrillRecord | null;
  if (!o || typeof o !== 'object' || typeof o.at !== 'string' || typeof o.status !== 'string') return undefined;
  if (!['loaded', 'load-failed', 'version-unsupported', 'failed'].includes(o.status)) return undefined;
  const num = (n: unknown) => (typeof n === 'number' && Number.isFinite(n) ? n : undefined);
  return {
    at: o.at,
    ts: typeof o.ts === 'string' ? o.ts : null,
    rule: typeof o.rule === 'string' ? o.rule : null,
    status: o.status,
    ...(num(o.loadSeconds) !== undefined ? { loadSeconds: num(o.loadSeconds) } : {}),
    ...(num(o.dbsize) !== undefined ? { dbsize: num(o.dbsize) } : {}),
    ...(num(o.keys) !== undefined ? { keys: num(o.keys) } : {}),
    ...(typeof o.digest === 'string' || o.digest === null ? { digest: o.digest } : {}),
    ...(o.keyspace && typeof o.keyspace === 'object'
      ? { keyspace: Object.fromEntries(Object.entries(o.keyspace).filter(([k, v]) => typeof k === 'string' && typeof v === 'string')) }
      : {}),
    ...(o.server && typeof o.server === 'object' && typeof o.server.binary === 'string'
      ? { server: { binary: o.server.binary, version: typeof o.server.version === 'string' ? o.server.version : null } }
      : {}),
    ...(Array.isArray(o.serverLog) ? { serverLog: o.serverLog.filter((l) => typeof l === 'string') } : {}),
    ...(typeof o.error === 'string' ? { error: o.error } : {}),
    ...(num(o.failureCode) !== undefined ? { failureCode: num(o.failureCode) } : {}),
    notes: Array.isArray(o.notes) ? o.notes.filter((n) => typeof n === 'string') : [],
    durationMs: num(o.durationMs) ?? 0,
  };
}

/** One line for once's output, status and check. */
export function drillText(r: DrillRecord): string {
  if (r.status === 'loaded') {
    const writer = r.writtenBy?.redisVersion ? ` (written by server ${r.writtenBy.redisVersion})` : '';
    return `restore drill of ${r.ts} (${r.rule})${writer}: loaded in ${r.loadSeconds?.toFixed(3)} s by ${r.server?.version ? `server ${r.server.version}` : r.server?.binary}: DBSIZE ${r.dbsize}, ${r.keys} keys in all databases, digest ${r.digest ?? 'n/a'}`;
  }
  return `restore drill of ${r.ts ?? '?'} ${r.status === 'version-unsupported' ? 'could not load: RDB version unsupported' : r.status === 'load-failed' ? 'FAILED to load' : 'failed'}: ${r.error ?? '?'}`;
}
