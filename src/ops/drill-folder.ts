/**
 * The restore drill's temp folder, and what a killed drill leaves behind.
 *
 * A drill that is SIGKILLed (OOM killer, a `kill -9`, a container stopped
 * hard) cannot stop its throwaway server or remove its folder. Two defences:
 *
 * 1. The server dies with us: it is started through `setpriv --pdeathsig
 *    KILL` (util-linux) where present, so the kernel sends it SIGKILL when
 *    the rdb-archiver process that started it dies, however it dies.
 * 2. The next drill cleans up: every drill folder holds a marker file written
 *    by its drill (who made it: host, boot, PID namespace, pid and the pid's
 *    start time, and the server's pid and start time), refreshed as a
 *    heartbeat while the drill runs. A later drill removes a folder only when
 *    it is owned by this user, holds a marker naming that very folder, and
 *    the marker's drill is provably dead (same host, boot and PID namespace,
 *    and the pid is gone or now another process) or its heartbeat stopped for
 *    DRILL_LEASE_MS. A PID alone is never trusted: the drill folder may be
 *    shared by containers whose PIDs mean nothing to each other. A surviving
 *    server is stopped through the Unix socket in that folder (only our
 *    server listens there), then, when it is provably the recorded process,
 *    by SIGKILL. Folders without our marker are never touched.
 */
import { spawnSync } from 'node:child_process';
import { constants as fsConstants, promises as fsp, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Log } from '../core/log.js';
import { errorCode } from '../core/fs.js';
import { judgeLock, probePid, processStartTime, thisIdentity, type LockOwner, type LockVerdict, type PidProbe, type ProcessIdentity } from '../pipeline/lock.js';
import { UnixRespClient } from './resp.js';

/** The prefix of every drill folder's name. */
export const DRILL_PREFIX = 'rdb-archiver-drill-';
/** The marker file in a drill folder. */
export const DRILL_MARKER = 'rdb-archiver-drill.json';
const MARKER_TOOL = 'rdb-archiver-drill';
/** How often a running drill refreshes its marker's mtime. */
export const DRILL_HEARTBEAT_MS = 30_000;
/** A marker not refreshed for this long belongs to a dead drill, wherever it ran. */
export const DRILL_LEASE_MS = 10 * 60_000;

export interface DrillMarker extends LockOwner {
  tool: typeof MARKER_TOOL;
  /** The folder it was written into: a marker copied elsewhere identifies nothing. */
  dir: string;
  /** The throwaway server, once started: its pid and that pid's start time (field 22 of /proc/PID/stat). */
  server?: { pid: number; start?: string };
}

/** The marker for a drill folder made by this process now. */
export function markerFor(dir: string, server?: DrillMarker['server']): DrillMarker {
  const here = thisIdentity();
  return {
    tool: MARKER_TOOL, dir, pid: process.pid, startedAt: new Date().toISOString(), command: 'drill',
    host: here.host, ...(here.bootId ? { bootId: here.bootId } : {}), ...(here.pidNs ? { pidNs: here.pidNs } : {}),
    ...(processStartTime('self') ? { procStart: processStartTime('self') } : {}), ...(server ? { server } : {}),
  };
}

/** Writes the marker atomically (a temp file in the folder, then rename). */
export async function writeMarker(dir: string, marker: DrillMarker): Promise<void> {
  const tmp = join(dir, `${DRILL_MARKER}.tmp`);
  await fsp.writeFile(tmp, JSON.stringify(marker) + '\n', { mode: 0o600 });
  await fsp.rename(tmp, join(dir, DRILL_MARKER));
}

/** Parses a marker defensively; undefined unless it is ours and names `dir`. */
export function parseMarker(text: string, dir: string): DrillMarker | undefined {
  let o: Partial<DrillMarker>;
  try {
    o = JSON.parse(text) as Partial<DrillMarker>;
  } catch {
    return undefined;
  }
  if (!o || typeof o !== 'object' || o.tool !== MARKER_TOOL || o.dir !== dir || typeof o.pid !== 'number' || typeof o.startedAt !== 'string') return undefined;
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const server = o.server && typeof o.server.pid === 'number' ? { pid: o.server.pid, ...(str(o.server.start) ? { start: str(o.server.start) } : {}) } : undefined;
  return {
    tool: MARKER_TOOL, dir, pid: o.pid, startedAt: o.startedAt, command: 'drill',
    ...(str(o.host) ? { host: str(o.host) } : {}), ...(str(o.bootId) ? { bootId: str(o.bootId) } : {}),
    ...(str(o.pidNs) ? { pidNs: str(o.pidNs) } : {}), ...(str(o.procStart) ? { procStart: str(o.procStart) } : {}),
    ...(server ? { server } : {}),
  };
}

/**
 * Pure: is the drill that wrote `marker` dead? Provably (same host, boot and
 * PID namespace; its pid gone or reused), or its heartbeat is older than the
 * lease. A marker without host/boot/namespace (never written by us) is judged
 * by its lease only.
 */
export function judgeDrill(marker: DrillMarker, here: ProcessIdentity, probe: (pid: number) => PidProbe, ageMs: number): LockVerdict {
  const anonymous = marker.host === undefined || marker.bootId === undefined || marker.pidNs === undefined;
  if (anonymous) {
    return ageMs > DRILL_LEASE_MS ? { stale: true, why: `its heartbeat stopped ${Math.round(ageMs / 1000)} s ago` } : { stale: false, why: 'whose drill cannot be told dead yet' };
  }
  return judgeLock(marker, here, probe, ageMs, DRILL_LEASE_MS);
}

/** The server is the recorded process, seen from here: same host, boot and namespace, same pid and start time, and its command line names the folder. */
function isRecordedServer(marker: DrillMarker, here: ProcessIdentity): boolean {
  const s = marker.server;
  if (!s || s.start === undefined || marker.host !== here.host || marker.bootId !== here.bootId || marker.pidNs !== here.pidNs) return false;
  if (processStartTime(s.pid) !== s.start) return false;
  try {
    // Redis rewrites its title ("redis-server unixsocket:<dir>/server.sock"); before that, --dir <dir> is an argument.
    const cmdline = readFileSync(`/proc/${s.pid}/cmdline`, 'utf8');
    return cmdline.split('\0').includes(marker.dir) || cmdline.includes(join(marker.dir, 'server.sock'));
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Stops a server a killed drill left running: SHUTDOWN NOSAVE on the folder's socket, then SIGKILL of the recorded process when provably it. */
async function stopLeftoverServer(marker: DrillMarker, log: Log): Promise<void> {
  const here = thisIdentity();
  const client = await UnixRespClient.connect(join(marker.dir, 'server.sock')).catch(() => undefined);
  if (client) {
    await Promise.race([client.send('SHUTDOWN', 'NOSAVE').catch(() => undefined), sleep(2_000)]);
    client.close();
    log.warn({ dir: marker.dir }, 'stopped the throwaway server a killed drill left running');
  }
  for (let i = 0; i < 40 && isRecordedServer(marker, here); i++) {
    if (i === 20) {
      try {
        process.kill(marker.server!.pid, 'SIGKILL');
        log.warn({ dir: marker.dir, pid: marker.server!.pid }, 'killed the throwaway server a killed drill left running');
      } catch {
        // gone meanwhile
      }
    }
    await sleep(100);
  }
}

/** Reads a folder's marker without following a symlink; undefined when there is none (or it is not ours). */
async function readMarker(dir: string): Promise<{ marker: DrillMarker; mtimeMs: number } | undefined> {
  let handle;
  try {
    handle = await fsp.open(join(dir, DRILL_MARKER), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.size > 64 * 1024) return undefined;
    const marker = parseMarker((await handle.readFile()).toString('utf8'), dir);
    return marker ? { marker, mtimeMs: info.mtimeMs } : undefined;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Removes the folders (and stops the servers) of drills that were killed, in
 * `root`. Never throws: what cannot be cleaned is logged and left. Returns the
 * folders removed.
 */
export async function cleanKilledDrills(root: string, log: Log, nowMs = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = (await fsp.readdir(root)).filter((n) => n.startsWith(DRILL_PREFIX));
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') log.warn({ dir: root, err: (err as Error).message }, 'could not look for folders of killed drills');
    return removed;
  }
  const uid = typeof process.geteuid === 'function' ? process.geteuid() : undefined;
  const here = thisIdentity();
  for (const name of names) {
    const dir = join(root, name);
    try {
      const info = await fsp.lstat(dir);
      if (!info.isDirectory() || (uid !== undefined && info.uid !== uid)) continue;
      const found = await readMarker(dir);
      if (!found) continue;
      const verdict = judgeDrill(found.marker, here, probePid, Math.max(0, nowMs - found.mtimeMs));
      if (!verdict.stale) continue;
      await stopLeftoverServer(found.marker, log);
      await fsp.rm(dir, { recursive: true, force: true });
      removed.push(dir);
      log.warn({ dir, why: verdict.why }, 'removed the folder of a drill that was killed');
    } catch (err) {
      log.warn({ dir, err: (err as Error).message }, 'could not clean up the folder of a killed drill');
    }
  }
  return removed;
}

let pdeathsig: string | null | undefined;
/**
 * `setpriv` with --pdeathsig (util-linux 2.33+), found in PATH; null when
 * there is none. Asked once per process.
 */
export function setprivWithPdeathsig(path = process.env.PATH ?? ''): string | null {
  if (pdeathsig !== undefined) return pdeathsig;
  pdeathsig = null;
  for (const dir of path.split(delimiter).filter(Boolean)) {
    const candidate = join(dir, 'setpriv');
    const help = spawnSync(candidate, ['--help'], { encoding: 'utf8', timeout: 5_000 });
    if (help.error) continue;
    if (/--pdeathsig/.test(help.stdout ?? '')) pdeathsig = candidate;
    break;
  }
  return pdeathsig;
}

/** The command that starts `binary` so that it dies with this process: [command, args]. */
export function tiedToUs(binary: string, args: readonly string[], setpriv: string | null): [string, string[]] {
  return setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', binary, ...args]] : [binary, [...args]];
}
