/**
 * Promise 1, crash consistency: `once` on a 64 MiB source (16 MiB in npm run test:slow) is killed with
 * SIGKILL at every filesystem call of a run (deterministic crash points,
 * through crash-child.mjs), and the real CLI is killed at seeded random
 * instants. After every kill the archive holds no partial or foreign file
 * under a final name, the state file is valid or absent, no event retention
 * was not entitled to delete is lost, and the next real `once` exits 0,
 * completes the event in every rule folder and removes the lock and temps.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEMP_PREFIX } from '../../src/core/fs.js';
import type { FsCall } from '../helpers/faulty-fs.js';
import {
  CLI_JS, CRASH_CHILD, FULL, Figures, assertBuilt, faultyFsModule, fsTypeOf, killLanded, lanes, printedResult, pool, removeTree, reproduce, rng, runNode,
  scratchRoot, SEED, spread, stackTraceLines, type ProcResult,
} from './common.js';
import {
  NEW_TS, TRIAL_RULES, buildScenario, checkArchive, checkRecovered, fileName, finalName, makeTrial, setReference, type Scenario, type Trial,
} from './scenario.js';

// Full run: >= 64 MiB. npm run test:slow: >= 16 MiB (still several copy chunks). Neither is a multiple of the copy chunk.
const SOURCE_SIZE = (FULL ? 64 : 16) * 1024 * 1024 + 4099;
const figures = new Figures('crash', 'Crash consistency: SIGKILL at any instant');

/** The pipeline phases a crash point can fall in, in run order. */
export const PHASES = [
  'startup: lock, state read, watcher',
  'during the copy (read, write, fsync of the temp file)',
  'after the fsync, before the .rdb link (companions published)',
  'between the rule links (first folder published, others linking)',
  'during retention (scans and deletes)',
  'during the state write',
  'lock release',
] as const;

/** Assigns every call of a complete run's call sequence to the phase it belongs to. */
export function classifyCalls(calls: FsCall[], ctx: { source: string; primary: string; ruleDirs: string[]; stateDir: string }): string[] {
  const after = (i: number) => (i < 0 ? calls.length : i + 1);
  const from = (start: number, test: (c: FsCall) => boolean) => {
    const i = calls.findIndex((c, j) => j >= start && test(c));
    return i < 0 ? calls.length : i;
  };
  const copy = from(0, (c) => c.op === 'open' && c.path === ctx.source);
  const fsynced = after(from(copy, (c) => c.op === 'fsync' && c.path.startsWith(`${ctx.primary}/${TEMP_PREFIX}`) && c.path.endsWith('.rdb')));
  const linked = after(from(fsynced, (c) => c.op === 'link' && c.path.endsWith(` -> ${ctx.primary}/${fileName('rdb', NEW_TS)}`)));
  // Retention starts after the worker's last rule-folder fsync, which comes before retention's first readdir.
  const firstReaddir = from(linked, (c) => c.op === 'readdir' && ctx.ruleDirs.includes(c.path));
  let retention = linked;
  for (let i = linked; i < firstReaddir; i += 1) if (calls[i]!.op === 'fsync-dir' && ctx.ruleDirs.includes(calls[i]!.path)) retention = i + 1;
  const inStateDir = (c: FsCall) => c.path === ctx.stateDir || c.path.startsWith(`${ctx.stateDir}/`);
  const stateWrite = from(firstReaddir, inStateDir);
  const released = after(from(stateWrite, (c) => c.op === 'fsync-dir' && c.path === ctx.stateDir));
  const bounds = [copy, fsynced, linked, retention, stateWrite, released];
  return calls.map((_, i) => PHASES[bounds.filter((b) => b <= i).length]!);
}

/** Where a random kill landed, inferred from what it left behind. */
export const COMPLETED = 'run had completed before the kill';
function inferPhase(scn: Scenario, trial: Trial, result: ProcResult): string {
  if (!result.killedByUs) return result.code === 0 ? COMPLETED : `run ended with ${result.code}`;
  const dirs = TRIAL_RULES.map((r) => join(trial.archive, r.name));
  const names = dirs.map((d) => readdirSync(d));
  const newRdb = names.map((ns) => ns.includes(fileName('rdb', NEW_TS)));
  const newCompanion = names.some((ns) => ns.includes(fileName('sha256', NEW_TS)));
  const temps = names.some((ns) => ns.some((n) => n.startsWith(TEMP_PREFIX)));
  const lock = existsSync(join(trial.stateDir, 'lock'));
  const state = existsSync(trial.state) ? (JSON.parse(readFileSync(trial.state, 'utf8')) as { archived?: { ts?: string } }) : undefined;
  const stateNew = state?.archived?.ts === NEW_TS;
  const retentionDone = TRIAL_RULES.every((r, i) => {
    const present = new Set(names[i]!.map((n) => finalName(n)?.ts).filter(Boolean));
    return [...present].sort().join(',') === scn.ref!.after[r.name]!.join(',');
  });
  if (stateNew) return lock ? 'lock release' : COMPLETED;
  if (newRdb.every(Boolean)) return retentionDone ? 'during the state write' : 'during retention (scans and deletes)';
  if (newRdb.some(Boolean)) return 'between the rule links (first folder published, others linking)';
  if (newCompanion) return 'after the fsync, before the .rdb link (companions published)';
  if (temps) return 'during the copy (read, write, fsync of the temp file)';
  return lock ? 'startup: lock, state read, watcher' : 'startup: before the lock (module loading)';
}

interface Lane {
  scn: Scenario;
  root: string;
}
let fast: Lane;
let disk: Lane;
let faultyFs: string;
let calls: FsCall[] = [];
let callPhases: string[] = [];
let cleanRunMs = 0;

/** The next real `once` completes the event; then the trial's verdict (missed only when its kill never landed and nothing failed). */
async function recoverAndCheck(scn: Scenario, trial: Trial, label: string, violations: string[], missed?: string): Promise<void> {
  const rec = await runNode(CLI_JS, ['once', '--json', '-c', trial.config]);
  if (rec.code !== 0) violations.push(`the next once exited ${rec.code} ${rec.signal ?? ''}: ${rec.stdout.slice(0, 300)} ${rec.stderr.slice(0, 300)}`);
  const traces = stackTraceLines(rec.stderr);
  if (traces.length > 0) violations.push(`the next once printed a stack trace: ${traces[0]}`);
  violations.push(...checkRecovered(scn, trial));
  figures.result(label, { missed, violations });
}

beforeAll(async () => {
  assertBuilt();
  faultyFs = faultyFsModule();
  const build = async (kind: 'fast' | 'disk'): Promise<Lane> => {
    const root = scratchRoot(kind, `crash-${kind}`);
    const scn = await buildScenario(root, SOURCE_SIZE);
    const ref = makeTrial(scn, join(root, 'reference'));
    const r = await runNode(CLI_JS, ['once', '--json', '-c', ref.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(setReference(scn, ref)).toEqual([]);
    return { scn, root };
  };
  fast = await build('fast');
  disk = await build('disk');
  figures.note(`source: ${fast.scn.sourceSize} bytes (${(fast.scn.sourceSize / 2 ** 20).toFixed(1)} MiB) with nodes.conf; 3 rule folders (hour/3, day/2, last 3) holding 6 older events and stray files`);
  figures.note(`deterministic crash points ran on ${fsTypeOf(fast.root)}; random kills of the real CLI on ${fsTypeOf(disk.root)}`);

  // The count pass: one complete run through the crash child, recording every call.
  const count = makeTrial(fast.scn, join(fast.root, 'count'));
  const logFile = join(count.dir, 'ops.json');
  const r = await runNode(CRASH_CHILD, ['once', '--json', '-c', count.config], { env: { RELIABILITY_FAULTY_FS: faultyFs, FAULT_LOG: logFile } });
  expect(r.code, r.stderr).toBe(0);
  expect(checkRecovered(fast.scn, count)).toEqual([]);
  calls = (JSON.parse(readFileSync(logFile, 'utf8')) as { calls: FsCall[] }).calls;
  const ruleDirs = TRIAL_RULES.map((rule) => join(count.archive, rule.name));
  callPhases = classifyCalls(calls, { source: fast.scn.source, primary: ruleDirs[0]!, ruleDirs, stateDir: count.stateDir });
  figures.note(`one complete run makes ${calls.length} filesystem calls`);

  // How long a clean run of the real CLI takes on disk, to spread the random kills over it.
  const timings: number[] = [];
  for (let i = 0; i < 2; i += 1) {
    const t = makeTrial(disk.scn, join(disk.root, `timing-${i}`));
    const run = await runNode(CLI_JS, ['once', '-c', t.config]);
    expect(run.code, run.stderr).toBe(0);
    timings.push(run.ms);
    removeTree(t.dir);
  }
  cleanRunMs = Math.max(...timings);
  figures.note(`a clean run of the real CLI on the ${(SOURCE_SIZE / 2 ** 20).toFixed(0)} MiB source took ${timings.map((t) => `${t} ms`).join(' and ')}`);
}, 300_000);

afterAll(() => {
  if (fast) removeTree(fast.root);
  if (disk) removeTree(disk.root);
});

describe('crash consistency (SIGKILL)', () => {
  it('classifies every call of a run into the named phases, and every phase has calls', () => {
    figures.harness();
    for (const p of PHASES) expect(callPhases.filter((x) => x === p).length, `phase "${p}" has no calls:\n${calls.map((c, i) => `${c.n} ${callPhases[i]} ${c.op} ${c.path}`).join('\n')}`).toBeGreaterThan(0);
    expect(calls.some((c, i) => callPhases[i] === PHASES[4] && c.op === 'unlink')).toBe(true);
  });

  it('kills the run before every filesystem call (deterministic crash points), and every kill recovers', async () => {
    // Full run: every N of the call sequence. npm run test:slow: 3 points per phase (first, middle, last).
    const all = calls.map((c) => c.n);
    const chosen = FULL ? all : PHASES.flatMap((p) => spread(all.filter((n) => callPhases[n - 1] === p), 3));
    figures.plan(chosen.map((n) => `kill before call ${n}`));
    const failures: string[] = [];
    await pool(chosen, lanes(), async (n) => {
      const phase = callPhases[n - 1]!;
      const trial = makeTrial(fast.scn, join(fast.root, `kill-${n}`));
      const logFile = join(trial.dir, 'ops.json');
      const label = `kill before call ${n} (${calls[n - 1]?.op} ${calls[n - 1]?.path}) [${phase}]`;
      const violations: string[] = [];
      const r = await runNode(CRASH_CHILD, ['once', '--json', '-c', trial.config], {
        env: { RELIABILITY_FAULTY_FS: faultyFs, FAULT_KILL_AT: String(n), FAULT_LOG: logFile },
      });
      let missed: string | undefined;
      if (r.signal === 'SIGKILL') {
        const killed = (JSON.parse(readFileSync(logFile, 'utf8')) as { killedAt?: FsCall }).killedAt;
        figures.fault('SIGKILL');
        figures.phase(phase);
        if (killed && killed.op !== calls[n - 1]!.op) figures.note('the call sequence varies slightly between runs (retention deletes run in parallel)');
      } else if (r.code === 0) {
        missed = 'the run made fewer calls than the crash point (it ended before call N)';
      } else {
        violations.push(`the child was not killed but exited ${r.code}: ${r.stderr.slice(0, 300)}`);
      }
      violations.push(...checkArchive(fast.scn, trial, { allowTemps: true, allowLock: true }));
      await recoverAndCheck(fast.scn, trial, label, violations, missed);
      if (violations.length > 0) failures.push(`${label}:\n  ${violations.join('\n  ')}`);
      removeTree(trial.dir);
    });
    expect(failures, `${failures.length} crash points broke an invariant, ${reproduce()}\n${failures.join('\n')}`).toEqual([]);
  }, 900_000);

  it('kills the real CLI at seeded random instants, and every kill recovers', async () => {
    const random = rng(SEED, 'crash-random');
    const trials = FULL ? 130 : 6;
    // The seed fixes each kill's instant as a fraction of a clean run; the run's length in ms is measured here.
    const fractions = Array.from({ length: trials }, () => 0.3 + 0.8 * random());
    const delays = fractions.map((f) => Math.round(cleanRunMs * f));
    figures.plan(fractions.map((f) => `kill at ${f.toFixed(6)} of a clean run`));
    figures.random(`random kills: the seed fixes ${trials} kill instants as fractions (0.3 to 1.1) of a clean run; the clean run is timed on this machine (${cleanRunMs} ms), so where each kill lands, and whether it lands before the run ends, depends on timing`);
    const failures: string[] = [];
    await pool(delays, lanes(), async (delay, i) => {
      const trial = makeTrial(disk.scn, join(disk.root, `random-${i}`));
      const r = await runNode(CLI_JS, ['once', '--json', '-c', trial.config], { killAfterMs: delay });
      const phase = inferPhase(disk.scn, trial, r);
      const kill = killLanded(r, printedResult(r.stdout) || phase === COMPLETED);
      if (kill.landed) {
        figures.fault('SIGKILL');
        figures.phase(`${phase} (random kill, inferred)`);
      }
      const label = `random kill #${i} after ${delay} ms [${kill.landed ? phase : kill.why}]`;
      const violations: string[] = [];
      if (!r.killedByUs && r.code !== 0) violations.push(`the run was not killed but exited ${r.code}: ${r.stderr.slice(0, 300)}`);
      violations.push(...checkArchive(disk.scn, trial, { allowTemps: true, allowLock: true }));
      await recoverAndCheck(disk.scn, trial, label, violations, kill.landed ? undefined : `random kill: ${kill.why}`);
      if (violations.length > 0) failures.push(`${label}:\n  ${violations.join('\n  ')}`);
      removeTree(trial.dir);
    });
    expect(failures, `${failures.length} random kills broke an invariant, ${reproduce()}\n${failures.join('\n')}`).toEqual([]);
  }, 900_000);
});
