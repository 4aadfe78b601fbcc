/**
 * The counting behind RELIABILITY.md: what a trial is, when it landed or
 * missed, and that a failure anywhere (a trial, a setup, a suite that never
 * reported) shows as a failure in the figures and in run.mjs's exit status.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Figures, REPO, SEED, killLanded, printedResult, rng, runNode, type SuiteFigures } from './common.js';
// @ts-expect-error: a plain .mjs module (run.mjs imports it), without type declarations
import { aggregate, render, SUITES } from './figures.mjs';

type Agg = {
  rows: Array<SuiteFigures & { setupFailures: string[] }>;
  total: Record<string, number>;
  problems: string[];
  failedTestCases: Array<{ name: string }>;
  exitCode: number;
  missedBy: Record<string, number>;
};

function record(suite: string, counts: Partial<SuiteFigures>): SuiteFigures {
  const f = new Figures(suite, `Suite ${suite}`, { hooks: false });
  Object.assign(f.data, counts);
  return f.data;
}
const passedReport = { testResults: [], numPassedTests: 1, numFailedTests: 0, numPendingTests: 0, numTodoTests: 0, numTotalTests: 1 };

describe('aggregate (the table of RELIABILITY.md)', () => {
  const clean = (name: string, extra: Partial<SuiteFigures> = {}) =>
    record(name, { planned: 10, landed: 8, missed: 2, notRun: 0, passed: 8, failed: 0, missedBy: { 'kill after exit': 2 }, ...extra });

  it('sums every suite and exits 0 when nothing failed and everything adds up', () => {
    const agg = aggregate({ suites: SUITES.map((s: string) => clean(s)), vitest: passedReport, vitestStatus: 0 }) as Agg;
    expect(agg.problems).toEqual([]);
    const n = SUITES.length; // each clean suite: 10 planned, 8 landed and passed, 2 missed
    expect(agg.total).toMatchObject({ planned: 10 * n, landed: 8 * n, missed: 2 * n, notRun: 0, passed: 8 * n, failed: 0 });
    expect(agg.missedBy).toEqual({ 'kill after exit': 2 * n });
    expect(agg.exitCode).toBe(0);
    const md = render(agg, { command: 'x', date: 'd', machine: 'm', seed: 1, wallMs: 1, vitestStatus: 0, tests: passedReport }) as string;
    expect(md).toContain('| suite | planned | landed | missed | not run | passed | failed |');
    expect(md).toContain(`| **total** | **${10 * n}** | **${8 * n}** | **${2 * n}** | **0** | **${8 * n}** | **0** |`);
    expect(md).toContain(`missed, by reason | kill after exit: ${2 * n}`);
  });

  it('a suite that wrote no figures is a failure, and the exit status is non-zero', () => {
    const agg = aggregate({ suites: SUITES.filter((s: string) => s !== 'clock').map((s: string) => clean(s)), vitest: passedReport, vitestStatus: 0 }) as Agg;
    const clock = agg.rows.find((r) => r.suite === 'clock')!;
    expect(clock.failed).toBe(1);
    expect(clock.setupFailures[0]).toMatch(/wrote no figures/);
    expect(agg.total.failed).toBe(1);
    expect(agg.exitCode).toBe(1);
  });

  it('figures that do not add up are reported and fail the run', () => {
    const suites = SUITES.map((s: string) => clean(s));
    suites[0] = clean(SUITES[0], { landed: 9 }); // 9 + 2 missed != 10 planned, and 9 landed != 8 passed
    const agg = aggregate({ suites, vitest: passedReport, vitestStatus: 0 }) as Agg;
    expect(agg.problems.join('\n')).toMatch(/planned 10 is not landed 9 \+ missed 2/);
    expect(agg.problems.join('\n')).toMatch(/landed 9 is not passed 8/);
    expect(agg.exitCode).toBe(1);
  });

  it('trials that never ran without a failure to explain them are a problem', () => {
    const suites = SUITES.map((s: string) => clean(s));
    suites[1] = clean(SUITES[1], { planned: 12, notRun: 2 });
    const agg = aggregate({ suites, vitest: passedReport, vitestStatus: 0 }) as Agg;
    expect(agg.problems.join('\n')).toMatch(/2 planned trials never ran, and no failure says why/);
    expect(agg.exitCode).toBe(1);
  });

  it('a test file vitest saw fail, whose figures count no failure, gets a setup failure', () => {
    const suites = SUITES.map((s: string) => clean(s, { file: `/repo/test/reliability/${s}.test.ts` }));
    const vitest = { ...passedReport, testResults: [{ name: '/repo/test/reliability/space.test.ts', status: 'failed', message: 'afterAll hook failed: EBUSY', assertionResults: [] }] };
    const agg = aggregate({ suites, vitest, vitestStatus: 1 }) as Agg;
    const space = agg.rows.find((r) => r.suite === 'space')!;
    expect(space.failed).toBe(1);
    expect(space.setupFailures[0]).toMatch(/space.test.ts failed: afterAll hook failed: EBUSY/);
    expect(agg.exitCode).toBe(1);
  });

  it('no vitest report is a problem, not a silent pass', () => {
    const agg = aggregate({ suites: SUITES.map((s: string) => clean(s)), vitest: undefined, vitestStatus: 0 }) as Agg;
    expect(agg.problems).toContain('vitest wrote no JSON report: the test cases could not be checked');
    expect(agg.exitCode).toBe(1);
  });
});

describe('Figures: the verdict of each trial', () => {
  it('a one-trial test case takes the test case\'s verdict; a skip is no trial; missed counts neither way', () => {
    const f = new Figures('unit', 'unit', { hooks: false });
    f.startTest('passes');
    f.endTest('pass');
    f.startTest('fails');
    f.endTest('fail', 'expected 1 to be 2\nstack');
    f.startTest('skipped');
    f.endTest('skip', '', 'no mount here');
    f.startTest('missed');
    f.missed('the syscall was never made');
    f.endTest('pass');
    f.startTest('violations recorded by check() fail it');
    f.check('step', ['an invariant broke']);
    f.endTest('pass');
    f.finish();
    expect(f.data).toMatchObject({ planned: 4, landed: 3, missed: 1, notRun: 0, passed: 1, failed: 2, skipped: 1 });
    expect(f.data.failureDetails).toEqual(['fails: expected 1 to be 2', 'violations recorded by check() fail it: step: an invariant broke']);
  });

  it('an explicit test case: planned trials that never got a verdict are "not run"; an exception outside the trials is a failure', () => {
    const f = new Figures('unit', 'unit', { hooks: false });
    f.startTest('explicit');
    f.plan(4);
    f.check('a', []);
    f.result('b', { missed: 'kill after exit' });
    f.endTest('fail', 'TypeError: cannot read x');
    f.finish();
    expect(f.data).toMatchObject({ planned: 4, landed: 1, missed: 1, notRun: 2, passed: 1, failed: 1 });
    expect(f.data.setupFailures).toEqual(['test case "explicit" failed outside its trials: TypeError: cannot read x']);
  });
});

describe('the seed reproduces the plan', () => {
  const planned = (order: 'forward' | 'backward', seed: number) => {
    const f = new Figures('unit', 'unit', { hooks: false });
    const random = rng(seed, 'crash-random');
    const fractions = Array.from({ length: 20 }, () => 0.3 + 0.8 * random());
    f.startTest('kills');
    f.plan((order === 'forward' ? fractions : [...fractions].reverse()).map((x) => `kill at ${x.toFixed(6)} of a clean run`));
    f.endTest('pass');
    f.finish();
    return f.data.planDigest;
  };

  it('the same seed plans the same trials (whatever order they ran in); another seed plans others', () => {
    expect(planned('forward', SEED)).toMatch(/^[0-9a-f]{16}$/);
    expect(planned('backward', SEED)).toBe(planned('forward', SEED));
    expect(planned('forward', SEED + 1)).not.toBe(planned('forward', SEED));
  });
});

describe('a timed SIGKILL counts only if it reached a running run', () => {
  it('a kill after the process exited is missed; a kill after it printed its result is missed; a kill of a running process landed', async () => {
    const f = new Figures('unit', 'unit', { hooks: false });
    f.startTest('kills');
    f.plan(3);
    const verdict = (label: string, r: Awaited<ReturnType<typeof runNode>>) => {
      const kill = killLanded(r, printedResult(r.stdout));
      f.result(label, { missed: kill.landed ? undefined : kill.why, violations: [] });
      return kill;
    };
    // Exits at once; the kill comes 2 s later.
    const exited = await runNode('-e', ['process.exit(0)'], { killAfterMs: 2000 });
    expect(exited.killedByUs).toBe(false);
    expect(verdict('exited', exited)).toEqual({ landed: false, why: 'the process had exited before the kill' });
    // Prints its result, then lingers (as a process does while it exits): killed, but the run was over.
    const finished = await runNode('-e', ['console.log(JSON.stringify({ status: "archived", exitCode: 0 })); setInterval(() => {}, 1000)'], { killAfterMs: 2000 });
    expect(finished.signal).toBe('SIGKILL');
    expect(verdict('finished', finished)).toEqual({ landed: false, why: 'the run had finished (result written) before the kill' });
    // Still working when the kill comes.
    const running = await runNode('-e', ['setInterval(() => {}, 1000)'], { killAfterMs: 1000 });
    expect(verdict('running', running)).toEqual({ landed: true });
    f.endTest('pass');
    f.finish();
    expect(f.data).toMatchObject({ planned: 3, landed: 1, missed: 2, passed: 1, failed: 0, notRun: 0 });
    expect(f.data.missedBy).toEqual({ 'the process had exited before the kill': 1, 'the run had finished (result written) before the kill': 1 });
  }, 30_000);
});

describe('run.mjs on fixtures (a failing case, a failing setup, a suite that never reports)', () => {
  it('counts each as a failure in RELIABILITY.md and exits non-zero', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-counting-'));
    try {
      const out = join(dir, 'RELIABILITY.md');
      const env: Record<string, string | undefined> = {
        ...process.env, RELIABILITY_OUT: out, RELIABILITY_EXPECTED_SUITES: 'fixture-counting,fixture-setup,fixture-absent',
        RELIABILITY_FIGURES_DIR: undefined, VITEST: undefined, VITEST_WORKER_ID: undefined, VITEST_POOL_ID: undefined, NODE_ENV: undefined,
      };
      const r = spawnSync(process.execPath, ['test/reliability/run.mjs', '--config', 'test/reliability/fixtures/vitest.config.mjs'], {
        cwd: REPO, env: env as NodeJS.ProcessEnv, encoding: 'utf8', timeout: 120_000,
      });
      expect(r.status, r.stdout + r.stderr).toBe(1);
      const md = readFileSync(out, 'utf8');
      // counting.fixture.ts: planned 9, landed 6, missed 2, not run 1, passed 3, failed 3.
      expect(md).toContain('| Fixture: every kind of trial | 9 | 6 | 2 | 1 | 3 | 3 |');
      // setup-fails.fixture.ts: its two test cases never ran; the setup is one failure.
      expect(md).toContain('| Fixture: a setup that fails | 2 | 0 | 0 | 2 | 0 | 1 (1 setup) |');
      expect(md).toContain('SETUP FAILURE: setup of the test file failed: cannot build the scenario (on purpose)');
      expect(md).toContain('| fixture-absent (no figures) | 0 | 0 | 0 | 0 | 0 | 1 (1 setup) |');
      expect(md).toContain('| **total** | **11** | **6** | **2** | **3** | **3** | **5** (2 setup) |');
      expect(md).toMatch(/\*\*Result: FAILED/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 150_000);
});
