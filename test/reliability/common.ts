/**
 * Shared pieces of the reliability suite: the seed and PRNG, where trials
 * run, the figures each suite records for RELIABILITY.md, a small worker
 * pool, and the transpiled fault-injecting filesystem for child processes.
 */
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import ts from 'typescript';
import { afterEach } from 'vitest';
import { prng } from '../helpers/rdb-builder.js';
import { spawn } from 'node:child_process';

/** `npm run test:reliability` sets this: the full-size figure run. `npm test` runs a deterministic subset. */
export const FULL = process.env.RELIABILITY_FULL === '1';

function parseSeed(text: string | undefined): number | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`RELIABILITY_SEED must be an integer 0..4294967295, got ${text}`);
  return n;
}

/** The suite's seed: RELIABILITY_SEED, else a fixed default so every run tries the same cases. */
export const SEED = parseSeed(process.env.RELIABILITY_SEED) ?? 20250601;

/** Deterministic PRNG (the builder's mulberry32): floats in [0, 1). Each suite derives its own stream from SEED. */
export function rng(seed: number, stream: string): () => number {
  return prng((seed ^ Number.parseInt(createHash('sha256').update(stream).digest('hex').slice(0, 8), 16)) >>> 0);
}

// Every failed test of the suite prints the seed that reproduces it.
afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail') process.stderr.write(`reliability: "${ctx.task.name}" failed; ${reproduce()}\n`);
});

/** Says how to reproduce a failure: printed with every failed expectation. */
export function reproduce(extra = ''): string {
  return `seed=${SEED}${FULL ? ' RELIABILITY_FULL=1' : ''}${extra ? ` ${extra}` : ''} (rerun with RELIABILITY_SEED=${SEED})`;
}

/**
 * A scratch root for trials. 'fast' prefers tmpfs (/dev/shm): a SIGKILL or an
 * injected fault does not depend on the medium, and fsync there is free.
 * 'disk' is the ordinary temp folder on a real filesystem.
 */
export function scratchRoot(kind: 'fast' | 'disk', name: string): string {
  let base = process.env.RELIABILITY_TMPDIR ?? tmpdir();
  if (kind === 'fast' && !process.env.RELIABILITY_TMPDIR) {
    try {
      accessSync('/dev/shm', constants.W_OK);
      base = '/dev/shm';
    } catch {
      // no tmpfs: the temp folder will do
    }
  }
  return mkdtempSync(join(base, `rdb-archiver-rel-${name}-`));
}

export function removeTree(path: string): void {
  rmSync(path, { recursive: true, force: true });
}

/** The filesystem type a path is on, for the report ("tmpfs", "ext4"...). */
export function fsTypeOf(path: string): string {
  try {
    const mounts = readFileSync('/proc/mounts', 'utf8').trim().split('\n').map((l) => l.split(' '));
    let best: string[] | undefined;
    const real = resolve(path);
    for (const m of mounts) {
      const mp = m[1]!;
      if ((real === mp || real.startsWith(mp.endsWith('/') ? mp : `${mp}/`)) && (!best || mp.length > best[1]!.length)) best = m;
    }
    return best?.[2] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------
// Figures: each suite writes what it measured; test/reliability/run.mjs merges
// them into RELIABILITY.md.

export interface SuiteFigures {
  suite: string;
  title: string;
  seed: number;
  full: boolean;
  startedAt: string;
  durationMs: number;
  trials: number;
  /** Faults injected, by errno code (or kind, e.g. SIGKILL). */
  faults: Record<string, number>;
  /** Crash points covered, by pipeline phase. */
  phases: Record<string, number>;
  /** Inputs tried (configs, sources, archive contents...). */
  inputs: Record<string, number>;
  /** Outcomes seen (exit codes...). */
  outcomes: Record<string, number>;
  failures: number;
  failureDetails: string[];
  notes: string[];
}

export class Figures {
  readonly data: SuiteFigures;
  private readonly started = Date.now();

  constructor(suite: string, title: string) {
    this.data = {
      suite, title, seed: SEED, full: FULL, startedAt: new Date().toISOString(), durationMs: 0, trials: 0,
      faults: {}, phases: {}, inputs: {}, outcomes: {}, failures: 0, failureDetails: [], notes: [],
    };
  }

  private static bump(map: Record<string, number>, key: string, by = 1): void {
    map[key] = (map[key] ?? 0) + by;
  }
  trial(n = 1): void {
    this.data.trials += n;
  }
  fault(code: string, n = 1): void {
    Figures.bump(this.data.faults, code, n);
  }
  phase(name: string, n = 1): void {
    Figures.bump(this.data.phases, name, n);
  }
  input(kind: string, n = 1): void {
    Figures.bump(this.data.inputs, kind, n);
  }
  outcome(kind: string, n = 1): void {
    Figures.bump(this.data.outcomes, kind, n);
  }
  note(text: string): void {
    if (!this.data.notes.includes(text)) this.data.notes.push(text);
  }
  /** Records a trial's violations (if any) and returns them. */
  check(label: string, violations: string[]): string[] {
    if (violations.length > 0) {
      this.data.failures += 1;
      if (this.data.failureDetails.length < 50) this.data.failureDetails.push(`${label}: ${violations.join('; ')}`);
    }
    return violations;
  }
  /** Writes the figures where run.mjs collects them (only when RELIABILITY_FIGURES_DIR is set). */
  write(): void {
    this.data.durationMs = Date.now() - this.started;
    const dir = process.env.RELIABILITY_FIGURES_DIR;
    if (!dir) return;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${this.data.suite}.json`), JSON.stringify(this.data, null, 2) + '\n');
  }
}

// ---------------------------------------------------------------------------

/** Runs `work` over `items` with at most `width` at a time, in order of start. */
export async function pool<T, R>(items: readonly T[], width: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(width, items.length)) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await work(items[i]!, i);
      }
    }),
  );
  return results;
}

/** How many trials to run side by side: the machine's cores, at most 4. */
export function lanes(): number {
  const env = Number(process.env.RELIABILITY_LANES);
  if (Number.isInteger(env) && env > 0) return env;
  const cores = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 2;
  return Math.max(1, Math.min(4, cores));
}

/** Picks `k` evenly spaced items of `items` (all of them when k >= length), always including the first and last. */
export function spread<T>(items: readonly T[], k: number): T[] {
  if (k >= items.length) return [...items];
  if (k <= 1) return items.slice(0, k);
  return Array.from({ length: k }, (_, i) => items[Math.round((i * (items.length - 1)) / (k - 1))]!);
}

// ---------------------------------------------------------------------------
// The fault-injecting filesystem for child processes: test/helpers/faulty-fs.ts
// has only type imports, so a plain transpile gives a module Node can load.

export const REPO = resolve(import.meta.dirname, '../..');
/** The built CLI: dist/, or RELIABILITY_DIST (a private build, when others rebuild dist/ meanwhile). */
export const DIST = process.env.RELIABILITY_DIST ? resolve(process.env.RELIABILITY_DIST) : join(REPO, 'dist');
export const CRASH_CHILD = join(REPO, 'test/reliability/crash-child.mjs');

export function faultyFsModule(): string {
  const sourcePath = join(REPO, 'test/helpers/faulty-fs.ts');
  const source = readFileSync(sourcePath, 'utf8');
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'rdb-archiver-reliability-build');
  const out = join(dir, `faulty-fs-${hash}.mjs`);
  if (!existsSync(out)) {
    const js = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false },
      fileName: sourcePath,
    }).outputText;
    mkdirSync(dir, { recursive: true });
    const tmp = `${out}.${process.pid}.tmp`;
    writeFileSync(tmp, js);
    renameSync(tmp, out); // a concurrent suite never reads a half-written module
  }
  return out;
}

/** The built CLI must exist (npm test and test:reliability build first). */
export function assertBuilt(): void {
  if (!existsSync(join(DIST, 'cli.js'))) throw new Error('dist/cli.js is missing: run `npx tsc -p tsconfig.json` (npm test builds first)');
  const src = statSync(join(REPO, 'src/worker.ts')).mtimeMs;
  const built = statSync(join(DIST, 'worker.js')).mtimeMs;
  if (built + 1000 < src) process.stderr.write('reliability: warning: dist/ looks older than src/; run the build\n');
}

// ---------------------------------------------------------------------------
// Child processes.

export interface ProcResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** True when this helper sent the SIGKILL (killAfterMs). */
  killedByUs: boolean;
}

export interface ProcOptions {
  env?: Record<string, string | undefined>;
  /** SIGKILL the child this many milliseconds after spawning it. */
  killAfterMs?: number;
  timeoutMs?: number;
  uid?: number;
  gid?: number;
  cwd?: string;
  /** Options for node itself, before the script (e.g. --import). */
  nodeArgs?: string[];
}

/** Spawns `node <script> args...` (the built CLI unless `script` says otherwise), collecting its output. */
export function runNode(script: string, args: string[], options: ProcOptions = {}): Promise<ProcResult> {
  return new Promise((resolvePromise, reject) => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries({ ...process.env, RDB_ARCHIVER_CONFIG: undefined, ...options.env })) {
      if (v !== undefined) env[k] = v;
    }
    const started = Date.now();
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), script, ...args], {
      env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], uid: options.uid, gid: options.gid,
    });
    let stdout = '';
    let stderr = '';
    let killedByUs = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const killer = options.killAfterMs !== undefined
      ? setTimeout(() => {
        killedByUs = child.kill('SIGKILL');
      }, options.killAfterMs)
      : undefined;
    const timeout = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timeout);
      if (killer) clearTimeout(killer);
      resolvePromise({ code, signal, stdout, stderr, ms: Date.now() - started, killedByUs: killedByUs && signal === 'SIGKILL' });
    });
  });
}

export const CLI_JS = join(DIST, 'cli.js');

/** Lines of stderr that look like a stack trace or an internal error. */
export function stackTraceLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /^\s+at .+[(:]\d+/.test(l) || /internal error/i.test(l) || /\bTypeError\b|\bReferenceError\b/.test(l));
}
