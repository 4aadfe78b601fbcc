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
import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import { prng } from '../helpers/rdb-builder.js';
import { spawn } from 'node:child_process';

/** `npm run test:reliability` sets this: the full-size figure run. `npm run test:slow` (and CI) runs a deterministic subset. */
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
// them into RELIABILITY.md (test/reliability/figures.mjs holds the arithmetic).
//
// The unit is the trial: one scenario, with one fault or condition, and one
// verdict. What the counts mean (README of the figures, in RELIABILITY.md):
//   planned  trials the suite set out to run (fixed by the seed and the size)
//   landed   trials whose fault or condition actually took effect
//   missed   planned trials whose fault never took effect (a kill that came
//            after the run had ended, a fault at a call the run never made),
//            and nothing failed: they prove nothing and count neither way
//   notRun   planned trials never run (cut short by an error, or a setup failure)
//   passed   landed trials that held every invariant
//   failed   landed trials that broke one, plus each failed setup step
// A missed fault never hides a failure: a trial whose fault did not land but
// whose run failed anyway is landed and failed.
//
// Two kinds of test case: an "explicit" one announces its trials with plan()
// and gives each a verdict with result()/check(); any other test case is one
// trial by itself, whose verdict is the test case's own (pass or fail), or
// missed when it called missed().

export interface SuiteFigures {
  suite: string;
  title: string;
  /** The test file (set once the suite starts). */
  file?: string;
  seed: number;
  full: boolean;
  startedAt: string;
  durationMs: number;
  planned: number;
  landed: number;
  missed: number;
  notRun: number;
  passed: number;
  /** Failed trials plus failed setup steps (setupFailures.length of them). */
  failed: number;
  /** Test cases skipped (not trials: the reason is in the notes). */
  skipped: number;
  /** Why planned trials missed, by reason. */
  missedBy: Record<string, number>;
  /** A beforeAll/afterAll that failed, or a test case that failed outside its trials. */
  setupFailures: string[];
  /** Faults that landed, by errno code (or kind, e.g. SIGKILL). */
  faults: Record<string, number>;
  /** Crash points covered (landed kills), by pipeline phase. */
  phases: Record<string, number>;
  /** Inputs tried (configs, sources, archive contents...). */
  inputs: Record<string, number>;
  /** Outcomes seen (exit codes...). */
  outcomes: Record<string, number>;
  failureDetails: string[];
  notes: string[];
  /** What the seed does not reproduce (timing-dependent parts), in words. */
  random: string[];
  /**
   * sha256 (16 hex digits) of the sorted labels of every planned trial: two
   * runs of the same code with the same seed and size plan the same trials
   * exactly when their digests match.
   */
  planDigest: string;
}

interface TaskLike {
  name: string;
  type?: string;
  mode?: string;
  filepath?: string;
  tasks?: TaskLike[];
  result?: { state?: string; errors?: Array<{ message?: string }>; note?: string };
}

interface CurrentTest {
  name: string;
  explicit: boolean;
  missed?: string;
  violations: string[];
  /** Trial failures recorded by result()/check() in this test case. */
  failures: number;
}

export class Figures {
  readonly data: SuiteFigures;
  private readonly started = Date.now();
  private current?: CurrentTest;
  private readonly planLabels: string[] = [];

  /**
   * `hooks: false` for a unit test of the counting itself; otherwise the
   * constructor registers the file-level hooks that turn test cases into
   * trials and write the figures at the end (it must be called at the top
   * level of the test file).
   */
  constructor(suite: string, title: string, options: { hooks?: boolean } = {}) {
    this.data = {
      suite, title, seed: SEED, full: FULL, startedAt: new Date().toISOString(), durationMs: 0,
      planned: 0, landed: 0, missed: 0, notRun: 0, passed: 0, failed: 0, skipped: 0, missedBy: {}, setupFailures: [],
      faults: {}, phases: {}, inputs: {}, outcomes: {}, failureDetails: [], notes: [], random: [], planDigest: '',
    };
    if (options.hooks === false) return;
    beforeAll(({}, file) => {
      this.data.file = (file as unknown as TaskLike).filepath;
    });
    beforeEach((ctx) => this.startTest(ctx.task.name));
    afterEach((ctx) => {
      const result = ctx.task.result as TaskLike['result'];
      this.endTest(result?.state ?? 'fail', result?.errors?.[0]?.message ?? '', result?.note);
    });
    // Registered first, so it runs after every other afterAll of the file (vitest runs them as a stack).
    afterAll(({}, file) => {
      this.collectSetupFailures(file as unknown as TaskLike);
      this.write();
    });
  }

  private static bump(map: Record<string, number>, key: string, by = 1): void {
    map[key] = (map[key] ?? 0) + by;
  }

  /** A test case starts: one trial by itself, unless it calls plan(). */
  startTest(name: string): void {
    this.current = { name, explicit: false, violations: [], failures: 0 };
    this.data.planned += 1;
    this.planLabels.push(name);
  }

  /** A test case ended with vitest's state ('pass', 'fail', 'skip'...): gives its own trial a verdict. */
  endTest(state: string, error = '', note?: string): void {
    const t = this.current;
    this.current = undefined;
    if (!t) return;
    const firstLine = error.split('\n')[0]!.slice(0, 300);
    if (t.explicit) {
      // Its trials have their verdicts; a failure outside them (an exception, a broken harness) is a failure too.
      if (state === 'fail' && t.failures === 0) this.setupFailed(`test case "${t.name}" failed outside its trials: ${firstLine}`);
      return;
    }
    if (state === 'skip' || state === 'todo') {
      this.data.planned -= 1;
      this.planLabels.splice(this.planLabels.lastIndexOf(t.name), 1);
      this.data.skipped += 1;
      this.note(`skipped: "${t.name}"${note ? ` (${note})` : ''}`);
      return;
    }
    if (t.missed !== undefined && t.violations.length === 0) {
      this.data.missed += 1;
      Figures.bump(this.data.missedBy, t.missed);
      // A case built to land that did not: the suite lost coverage, which is a failure of the harness.
      if (state === 'fail') this.setupFailed(`test case "${t.name}" failed: its fault never landed (${t.missed}): ${firstLine}`);
      return;
    }
    this.data.landed += 1;
    if (state === 'pass' && t.violations.length === 0) {
      this.data.passed += 1;
    } else {
      this.data.failed += 1;
      this.detail(`${t.name}: ${[...t.violations, ...(state === 'fail' ? [firstLine] : [])].join('; ')}`);
    }
  }

  /**
   * This test case runs trials of its own (each gets result() or check()):
   * their labels (what the seed chose: a call number, a kill instant...), or
   * how many there are.
   */
  plan(trials: number | readonly string[] = 1): void {
    const t = this.current;
    if (t && !t.explicit) {
      t.explicit = true;
      this.data.planned -= 1; // the test case is no longer a trial by itself
      this.planLabels.splice(this.planLabels.lastIndexOf(t.name), 1);
    }
    const labels = typeof trials === 'number' ? Array.from({ length: trials }, (_, i) => `${t?.name ?? ''} #${i + 1}`) : trials.map((l) => `${t?.name ?? ''}: ${l}`);
    this.data.planned += labels.length;
    this.planLabels.push(...labels);
  }

  /** This test case checks the harness, not the archiver: no trial; its failure counts as a setup failure. */
  harness(): void {
    this.plan(0);
  }

  /**
   * The verdict of one planned trial. `missed`: why its fault never took
   * effect (counted as missed only when nothing failed). Returns the violations.
   */
  result(label: string, outcome: { missed?: string; violations?: string[] }): string[] {
    const violations = outcome.violations ?? [];
    if (outcome.missed !== undefined && violations.length === 0) {
      this.data.missed += 1;
      Figures.bump(this.data.missedBy, outcome.missed);
      return violations;
    }
    if (this.current && !this.current.explicit) {
      // Inside a one-trial test case: the violations decide that trial's verdict.
      this.current.violations.push(...violations.map((v) => `${label}: ${v}`));
      return violations;
    }
    this.data.landed += 1;
    if (violations.length === 0) {
      this.data.passed += 1;
    } else {
      this.data.failed += 1;
      if (this.current) this.current.failures += 1;
      this.detail(`${label}${outcome.missed !== undefined ? ` (its fault did not land: ${outcome.missed})` : ''}: ${violations.join('; ')}`);
    }
    return violations;
  }

  /** The verdict of one landed trial. */
  check(label: string, violations: string[]): string[] {
    return this.result(label, { violations });
  }

  /** In a one-trial test case: its fault or condition never took effect. */
  missed(reason: string): void {
    if (this.current && !this.current.explicit) this.current.missed = reason;
    else this.result('missed', { missed: reason });
  }

  /** A setup step (or a test case outside its trials) failed: it counts as a failure. */
  setupFailed(text: string): void {
    this.data.failed += 1;
    this.data.setupFailures.push(text);
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
  /** Says what part of this suite the seed does not reproduce (timing). */
  random(text: string): void {
    if (!this.data.random.includes(text)) this.data.random.push(text);
  }

  private detail(text: string): void {
    if (this.data.failureDetails.length < 50) this.data.failureDetails.push(text);
  }

  /** Hooks that failed (beforeAll, afterAll), anywhere in the file; the test cases they kept from running are not run. */
  collectSetupFailures(file: TaskLike): void {
    const walk = (task: TaskLike, path: string) => {
      const where = path || 'the test file';
      if (task.type !== 'test' && task.result?.state === 'fail' && task.result.errors?.length) {
        for (const e of task.result.errors) this.setupFailed(`setup of ${where} failed: ${(e.message ?? String(e)).split('\n')[0]!.slice(0, 300)}`);
        const tests = (t: TaskLike): number => (t.type === 'test' ? (t.result?.state === 'skip' || !t.result ? 1 : 0) : (t.tasks ?? []).reduce((n, c) => n + tests(c), 0));
        const unrun = tests(task);
        this.data.planned += unrun; // each test case it kept from running was at least one trial
        this.planLabels.push(...Array.from({ length: unrun }, (_, i) => `${where}: not run #${i + 1}`));
      }
      for (const child of task.tasks ?? []) if (child.type !== 'test') walk(child, path ? `${path} > ${child.name}` : child.name);
    };
    walk(file, '');
  }

  /** Closes the counts (duration, not run). */
  finish(): void {
    this.data.durationMs = Date.now() - this.started;
    this.data.notRun = this.data.planned - this.data.landed - this.data.missed;
    this.data.planDigest = createHash('sha256').update([...this.planLabels].sort().join('\n')).digest('hex').slice(0, 16);
  }

  /** Writes the figures where run.mjs collects them (only when RELIABILITY_FIGURES_DIR is set). */
  write(): void {
    this.finish();
    const dir = process.env.RELIABILITY_FIGURES_DIR;
    if (!dir) return;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${this.data.suite}.json`), JSON.stringify(this.data, null, 2) + '\n');
  }
}

/** The CLI's `--json` result line is on stdout: the run had finished its work when it printed it. */
export function printedResult(stdout: string): boolean {
  return stdout.split('\n').some((line) => {
    try {
      return typeof (JSON.parse(line) as { exitCode?: unknown }).exitCode === 'number';
    } catch {
      return false;
    }
  });
}

/**
 * Whether a SIGKILL sent at a wall-clock instant landed: only if the run was
 * still running. A process that had exited, or had finished its run (its
 * result was out, the archive complete) and was only exiting, was not killed
 * in any sense that tests crash safety: that trial is missed.
 */
export function killLanded(r: Pick<ProcResult, 'code' | 'signal' | 'killedByUs'>, finished: boolean): { landed: true } | { landed: false; why: string } {
  if (!r.killedByUs) return { landed: false, why: r.code === null ? 'the process was not killed by the test' : 'the process had exited before the kill' };
  if (finished) return { landed: false, why: 'the run had finished (result written) before the kill' };
  return { landed: true };
}

// ---------------------------------------------------------------------------

/**
 * A family of trials, one per item, run one after the other: each trial
 * collects its violations in `v` (an exception counts as one), gets its
 * verdict in the figures, and the test case fails when any trial did.
 */
export async function family<T>(figures: Figures, items: readonly T[], label: (item: T) => string, run: (item: T, v: string[]) => Promise<void>): Promise<void> {
  figures.plan(items.map(label));
  const failures: string[] = [];
  for (const item of items) {
    const v: string[] = [];
    try {
      await run(item, v);
    } catch (err) {
      v.push(`threw: ${(err instanceof Error ? err.message : String(err)).split('\n')[0]}`);
    }
    figures.check(label(item), v);
    failures.push(...v.map((p) => `${label(item)}: ${p}`));
  }
  expect(failures, `${failures.length} violations, ${reproduce()}\n${failures.join('\n')}`).toEqual([]);
}

// ---------------------------------------------------------------------------
// CLI steps of a trial: each records what went wrong in the trial's violations instead of throwing.

/** Where a trial's CLI runs: its config, and a folder for restored files. */
export interface CliEnv {
  config: string;
  root: string;
}

export interface OnceResult {
  status: string;
  snapshot: { ts: string; sha256: string; outcome?: string } | null;
  error?: { kind: string; message: string };
  code: number | null;
}

/** One CLI call of a trial: a stack trace, or an exit code other than the expected ones, is a violation. */
export async function cli(env: CliEnv, v: string[], args: string[], codes: number[] = [0]): Promise<ProcResult> {
  const r = await runNode(CLI_JS, [...args, '-c', env.config]);
  const traces = stackTraceLines(r.stderr);
  if (traces.length > 0) v.push(`${args[0]}: stack trace: ${traces[0]}`);
  if (!codes.includes(r.code ?? -1)) v.push(`${args.join(' ')} exited ${r.code} ${r.signal ?? ''} (expected ${codes.join(' or ')}): ${r.stdout.trim().slice(0, 300)} ${r.stderr.trim().slice(0, 200)}`);
  return r;
}

export async function onceJson(env: CliEnv, v: string[], extra: string[] = [], codes = [0]): Promise<OnceResult> {
  const r = await cli(env, v, ['once', '--json', ...extra], codes);
  try {
    return { ...(JSON.parse(r.stdout) as Omit<OnceResult, 'code'>), code: r.code };
  } catch {
    v.push(`once --json printed no JSON: ${r.stdout.slice(0, 200)}`);
    return { status: 'no output', snapshot: null, code: r.code };
  }
}

/** What "latest" means to every command: restore latest's bytes, list's first event per rule, status's last snapshot. */
export async function latestEverywhere(env: CliEnv, v: string[], rules: string[], want: { ts: string; bytes: Buffer }): Promise<void> {
  const to = join(env.root, `restored-${Date.now()}-${Math.random().toString(36).slice(2)}.rdb`);
  await cli(env, v, ['restore', 'latest', '--to', to]);
  if (!existsSync(to) || !readFileSync(to).equals(want.bytes)) v.push(`restore latest did not restore the snapshot taken last (${want.ts})`);
  const list = await cli(env, v, ['list', '--json']);
  try {
    const byRule = JSON.parse(list.stdout) as Record<string, Array<{ ts: string }>>;
    for (const rule of rules) if (byRule[rule]?.[0]?.ts !== want.ts) v.push(`list: the first event of ${rule} is ${byRule[rule]?.[0]?.ts}, not ${want.ts}`);
  } catch {
    v.push(`list --json printed no JSON: ${list.stdout.slice(0, 200)}`);
  }
  const status = await cli(env, v, ['status', '--json']);
  try {
    const ts = (JSON.parse(status.stdout) as { lastSnapshot?: { ts?: string } }).lastSnapshot?.ts;
    if (ts !== want.ts) v.push(`status: the last snapshot is ${ts}, not ${want.ts}`);
  } catch {
    v.push(`status --json printed no JSON: ${status.stdout.slice(0, 200)}`);
  }
}

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
  const src = statSync(join(REPO, 'src/pipeline/worker.ts')).mtimeMs;
  const built = statSync(join(DIST, 'pipeline', 'worker.js')).mtimeMs;
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
