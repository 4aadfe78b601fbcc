/**
 * Long-running CLI processes for daemon tests (start, read the JSON log as it
 * comes, signal, wait for the exit), plus helpers shared by the operations
 * tests: fast large snapshots, multi-instance configs, an externally held lock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach } from 'vitest';
import { crc64 } from '../../src/rdb/crc64.js';
import { CLI } from './cli.js';
import { buildRdb, concat, encodeString } from './rdb-builder.js';
import type { Snapshot } from './snapshots.js';

export type LogLine = Record<string, unknown> & { level: number; msg: string };

export interface RunningCli {
  child: ChildProcess;
  stdout(): string;
  logs(): LogLine[];
  /** Resolves with the first log line matching, or rejects after timeoutMs. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number, what?: string): Promise<LogLine>;
  /** Resolves when `count` log lines match. */
  waitForLogs(match: (line: LogLine) => boolean, count: number, timeoutMs?: number, what?: string): Promise<LogLine[]>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>;
  kill(signal: NodeJS.Signals): void;
}

const running: ChildProcess[] = [];
afterEach(() => {
  for (const child of running.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** prefix: a command that execs the rest (e.g. `unshare -Ur sh -c '…; exec "$0" "$@"'`). */
export function startCli(args: string[], env: Record<string, string | undefined> = {}, options: { prefix?: string[] } = {}): RunningCli {
  const fullEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, RDB_ARCHIVER_CONFIG: undefined, ...env })) if (v !== undefined) fullEnv[k] = v;
  const argv = [...(options.prefix ?? []), process.execPath, CLI, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  running.push(child);
  let out = '';
  let err = '';
  const lines: LogLine[] = [];
  const waiters = new Set<() => void>();
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    let nl: number;
    while ((nl = err.indexOf('\n')) >= 0) {
      const text = err.slice(0, nl);
      err = err.slice(nl + 1);
      if (text.startsWith('{')) {
        try {
          lines.push(JSON.parse(text) as LogLine);
        } catch {
          lines.push({ level: 0, msg: text });
        }
      } else if (text.trim() !== '') {
        lines.push({ level: 0, msg: text });
      }
    }
    for (const w of waiters) w();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>((resolve) => {
    child.on('close', (code, signal) => {
      for (const w of waiters) w();
      resolve({ code, signal, atMs: Date.now() });
    });
  });
  const waitForLogs = (match: (line: LogLine) => boolean, count: number, timeoutMs = 20_000, what = 'log line') =>
    new Promise<LogLine[]>((resolve, reject) => {
      const check = () => {
        const found = lines.filter(match);
        if (found.length >= count) {
          cleanup();
          resolve(found);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup();
          reject(new Error(`process exited (${child.exitCode ?? child.signalCode}) before ${count}× ${what}; log:\n${dump(lines)}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${count}× ${what}; log:\n${dump(lines)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });
  return {
    child,
    stdout: () => out,
    logs: () => lines,
    waitForLogs,
    waitForLog: async (match, timeoutMs, what) => (await waitForLogs(match, 1, timeoutMs, what))[0]!,
    exited,
    kill: (signal) => child.kill(signal),
  };
}

export function dump(lines: LogLine[]): string {
  return lines.map((l) => JSON.stringify(l)).join('\n');
}

export const msg = (text: string, extra: Record<string, unknown> = {}) => (line: LogLine) =>
  line.msg === text && Object.entries(extra).every(([k, v]) => line[k] === v);

/** A valid RDB of about `size` bytes, built in a few hundred ms even for hundreds of MiB. */
export function writeLargeSnapshot(path: string, options: { seed: string; mtime: Date; size: number }): Snapshot {
  const block = createHash('sha512').update(options.seed).digest();
  const padding = Buffer.alloc(Math.max(0, options.size - 200));
  padding.fill(block);
  const body = concat([
    Uint8Array.of(0xfe, 0x00, 0xfb, 0x01, 0x00),
    Uint8Array.of(0x00), encodeString('padding'), encodeString(padding, '32bit'),
  ]);
  const file = Buffer.from(buildRdb({ body, checksum: 'zero' }));
  file.writeBigUInt64LE(crc64(file.subarray(0, file.length - 8)), file.length - 8);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, file);
  utimesSync(path, options.mtime, options.mtime);
  return { bytes: file, length: file.length, sha256: createHash('sha256').update(file).digest('hex') };
}

/** Our temp files (.tmp-rdb-archiver-*) anywhere below dir. */
export function tempFiles(dir: string): string[] {
  const out: string[] = [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    if (e.isDirectory()) out.push(...tempFiles(join(dir, e.name)));
    else if (e.name.startsWith('.tmp-rdb-archiver-')) out.push(join(dir, e.name));
  }
  return out;
}

/** Writes the lock file as a live run (this test process) would hold it. */
export function holdLock(stateDir: string): string {
  mkdirSync(stateDir, { recursive: true });
  const path = join(stateDir, 'lock');
  writeFileSync(path, JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString(), command: 'test' }) + '\n');
  return path;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until fn returns a truthy value. */
export async function until<T>(fn: () => T, timeoutMs: number, what: string, everyMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}
