#!/usr/bin/env node
/**
 * `npm run test:reliability` (after the build): runs the reliability suite at
 * full size (RELIABILITY_FULL=1), collects the figures every suite measured,
 * and writes RELIABILITY.md (test/reliability/figures.mjs does the counting).
 * The report is written either way, with the failures in it; the exit status
 * is non-zero when vitest failed, any trial or setup failed, a suite wrote no
 * figures, or the figures do not add up.
 *
 *   RELIABILITY_SEED=n              reproduce a run (default: the suite's fixed seed)
 *   RELIABILITY_OUT=f               write the report elsewhere (default: RELIABILITY.md)
 *   RELIABILITY_EXPECTED_SUITES=a,b the suites that must report (default: all, or only
 *                                   those that ran when extra arguments filter the run)
 *   extra arguments                 passed to vitest (e.g. a file filter)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { SUITES, aggregate, render } from './figures.mjs';

const repo = resolve(import.meta.dirname, '../..');
const out = resolve(repo, process.env.RELIABILITY_OUT ?? 'RELIABILITY.md');
const figuresDir = mkdtempSync(join(tmpdir(), 'rdb-archiver-figures-'));
const jsonReport = join(figuresDir, 'vitest.json');
const extra = process.argv.slice(2);
const started = Date.now();

const vitest = spawnSync(join(repo, 'node_modules/.bin/vitest'), [
  'run', 'test/reliability', '--reporter=default', '--reporter=json', `--outputFile.json=${jsonReport}`, ...extra,
], {
  cwd: repo,
  stdio: 'inherit',
  env: { ...process.env, RELIABILITY_FULL: '1', RELIABILITY_FIGURES_DIR: figuresDir },
});
const wallMs = Date.now() - started;

const suites = readdirSync(figuresDir).filter((f) => f.endsWith('.json') && f !== 'vitest.json')
  .map((f) => JSON.parse(readFileSync(join(figuresDir, f), 'utf8')));
const tests = existsSync(jsonReport) ? JSON.parse(readFileSync(jsonReport, 'utf8')) : undefined;
rmSync(figuresDir, { recursive: true, force: true });

const expected = process.env.RELIABILITY_EXPECTED_SUITES !== undefined
  ? process.env.RELIABILITY_EXPECTED_SUITES.split(',').map((s) => s.trim()).filter(Boolean)
  : extra.length > 0 ? [] : SUITES;
const vitestStatus = vitest.status ?? 1;
const agg = aggregate({ suites, expected, vitest: tests, vitestStatus });
const seed = suites[0]?.seed ?? process.env.RELIABILITY_SEED ?? 'unknown';
writeFileSync(out, render(agg, {
  command: 'npm run test:reliability',
  date: new Date().toISOString().slice(0, 10),
  machine: `Node ${process.version}, ${release()}, ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM`,
  seed,
  wallMs,
  vitestStatus,
  tests,
  filtered: extra.length > 0 ? extra.join(' ') : undefined,
}));
const t = agg.total;
process.stdout.write(`\nreliability: wrote ${out}: ${t.planned} planned, ${t.landed} landed, ${t.missed} missed, ${t.notRun} not run, ${t.passed} passed, ${t.failed} failed (${t.setupFailures} setup)${agg.problems.length ? `; the figures do not add up: ${agg.problems.join('; ')}` : ''} (${(wallMs / 1000).toFixed(1)} s)\n`);
process.exit(agg.exitCode);
