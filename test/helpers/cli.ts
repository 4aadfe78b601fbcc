/**
 * Runs the built CLI (dist/cli.cjs, the package's bin) as a child process, the way cron or
 * systemd would, and gives tests temp folders that are removed afterwards.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach } from 'vitest';

export const CLI = resolve(import.meta.dirname, '../../dist/cli.cjs');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  timeoutMs?: number;
  /** Another copy of the built CLI (default: dist/cli.cjs). */
  cli?: string;
  /** Options for node itself, before the script (e.g. --import a preload). */
  nodeArgs?: string[];
}

export function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, RDB_ARCHIVER_CONFIG: undefined, ...options.env })) {
      if (v !== undefined) env[k] = v;
    }
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), options.cli ?? CLI, ...args], { cwd: options.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

/** Parses the single JSON object a `--json` run prints on stdout. */
export function jsonOf<T = Record<string, unknown>>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`stdout is not one JSON object (exit ${result.code}):\n${result.stdout}\nstderr:\n${result.stderr}`);
  }
}

/** Pino JSON log lines from stderr. */
export function logLines(result: CliResult): Array<Record<string, unknown>> {
  return result.stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

const made: string[] = [];
afterEach(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A fresh temp folder, removed after the current test. */
export function tempDir(prefix = 'rdb-archiver-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export const PAUSE_PRELOAD = resolve(import.meta.dirname, 'pause-preload.mjs');

/**
 * Runs the CLI paused at one call (see pause-preload.mjs): `during` runs while
 * it is paused, then it resumes. Fails the test if the pause was never reached.
 */
export async function runCliPausedAt(
  args: string[],
  at: { op: 'read' | 'open'; path: string; nth?: number },
  during: () => void | Promise<void>,
  options: CliOptions = {},
): Promise<CliResult & { paused: boolean }> {
  const dir = tempDir('rdb-archiver-pause-');
  const running = runCli(args, {
    ...options,
    nodeArgs: ['--import', PAUSE_PRELOAD, ...(options.nodeArgs ?? [])],
    env: { ...options.env, PAUSE_OP: at.op, PAUSE_PATH: at.path, PAUSE_NTH: String(at.nth ?? 1), PAUSE_DIR: dir },
  });
  let done = false;
  void running.finally(() => (done = true));
  while (!done && !existsSync(join(dir, 'paused'))) await new Promise((r) => setTimeout(r, 5));
  const paused = existsSync(join(dir, 'paused'));
  if (paused) {
    await during();
    writeFileSync(join(dir, 'resume'), '');
  }
  return { ...(await running), paused };
}

/**
 * The top-level keys of a JSON object text that occur more than once.
 * JSON.parse keeps the last of duplicate keys silently, so a log line with
 * two "pid" keys parses fine; this scans the text itself.
 */
export function duplicateKeys(json: string): string[] {
  const seen = new Set<string>();
  const dups: string[] = [];
  let depth = 0;
  for (let i = 0; i < json.length; i += 1) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      const text = json.slice(i, j + 1);
      i = j;
      if (depth === 1 && /^\s*:/.test(json.slice(j + 1))) {
        const key = JSON.parse(text) as string;
        if (seen.has(key)) dups.push(key);
        seen.add(key);
      }
    } else if (c === '{' || c === '[') depth += 1;
    else if (c === '}' || c === ']') depth -= 1;
  }
  return dups;
}
