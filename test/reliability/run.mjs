#!/usr/bin/env node
/**
 * `npm run test:reliability` (after the build): runs the reliability suite at
 * full size (RELIABILITY_FULL=1), collects the figures every suite measured,
 * and writes RELIABILITY.md. Exits with vitest's status, so a failure fails
 * the script, but the report is written either way (with the failures in it).
 *
 *   RELIABILITY_SEED=n   reproduce a run (default: the suite's fixed seed)
 *   RELIABILITY_OUT=f    write the report elsewhere (default: RELIABILITY.md)
 *   extra arguments      passed to vitest (e.g. a file filter)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';

const repo = resolve(import.meta.dirname, '../..');
const out = resolve(repo, process.env.RELIABILITY_OUT ?? 'RELIABILITY.md');
const figuresDir = mkdtempSync(join(tmpdir(), 'rdb-archiver-figures-'));
const jsonReport = join(figuresDir, 'vitest.json');
const started = Date.now();

const vitest = spawnSync(join(repo, 'node_modules/.bin/vitest'), [
  'run', 'test/reliability', '--reporter=default', '--reporter=json', `--outputFile.json=${jsonReport}`, ...process.argv.slice(2),
], {
  cwd: repo,
  stdio: 'inherit',
  env: { ...process.env, RELIABILITY_FULL: '1', RELIABILITY_FIGURES_DIR: figuresDir },
});
const wallMs = Date.now() - started;

const suites = readdirSync(figuresDir).filter((f) => f.endsWith('.json') && f !== 'vitest.json')
  .map((f) => JSON.parse(readFileSync(join(figuresDir, f), 'utf8')));
const order = ['crash', 'faults', 'space', 'concurrency', 'source', 'clock', 'hostile', 'permissions'];
suites.sort((a, b) => order.indexOf(a.suite) - order.indexOf(b.suite));
const tests = existsSync(jsonReport) ? JSON.parse(readFileSync(jsonReport, 'utf8')) : undefined;
rmSync(figuresDir, { recursive: true, force: true });

const sum = (pick) => suites.reduce((n, s) => n + pick(s), 0);
const merge = (pick) => {
  const total = {};
  for (const s of suites) for (const [k, v] of Object.entries(pick(s))) total[k] = (total[k] ?? 0) + v;
  return total;
};
const fmt = (n) => n.toLocaleString('en-US');
const listOf = (map) => Object.entries(map).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}: ${fmt(v)}`).join('; ') || 'none';
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

const faults = merge((s) => s.faults);
const killPhases = merge((s) => s.phases);
const trialFailures = sum((s) => s.failures);
const failedTests = tests ? tests.numFailedTests : NaN;
const seed = suites[0]?.seed ?? process.env.RELIABILITY_SEED ?? 'unknown';
const configs = suites.find((s) => s.suite === 'hostile')?.inputs['bad config'] ?? 0;
const byCode = (code) => Object.entries(faults).filter(([k]) => k.startsWith(code)).reduce((n, [, v]) => n + v, 0);

const lines = [];
lines.push('# Reliability figures', '');
lines.push(`Measured by \`npm run test:reliability\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${release()}, ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM. Every number below was counted by the suite during this run.`, '');
lines.push('| figure | value |', '|---|---|');
lines.push(`| trials run | ${fmt(sum((s) => s.trials))} |`);
lines.push(`| faults injected | ${fmt(Object.values(faults).reduce((a, b) => a + b, 0))} (ENOSPC ${fmt(byCode('ENOSPC'))}, EIO ${fmt(byCode('EIO'))}, EACCES ${fmt(byCode('EACCES'))}, EROFS ${fmt(byCode('EROFS'))}, SIGKILL ${fmt(byCode('SIGKILL'))}) |`);
lines.push(`| kill points covered, by phase | ${listOf(killPhases)} |`);
lines.push(`| bad configs tried | ${fmt(configs)} |`);
lines.push(`| test cases | ${tests ? `${fmt(tests.numPassedTests)} passed, ${fmt(tests.numFailedTests)} failed, ${fmt(tests.numPendingTests + tests.numTodoTests)} skipped, of ${fmt(tests.numTotalTests)}` : 'no vitest report'} |`);
lines.push(`| failures found | ${fmt(trialFailures + (Number.isNaN(failedTests) ? 0 : failedTests))} (${fmt(trialFailures)} trials broke an invariant; ${Number.isNaN(failedTests) ? '?' : fmt(failedTests)} test cases failed) |`);
lines.push(`| seed | ${seed} (\`RELIABILITY_SEED=${seed} npm run test:reliability\` repeats the same trials) |`);
lines.push(`| duration | ${seconds(wallMs)} wall clock |`);
lines.push('');

for (const s of suites) {
  lines.push(`## ${s.title}`, '');
  lines.push(`- trials: ${fmt(s.trials)}; failures: ${fmt(s.failures)}; duration: ${seconds(s.durationMs)}`);
  if (Object.keys(s.faults).length) lines.push(`- faults injected: ${listOf(s.faults)}`);
  if (Object.keys(s.phases).length) lines.push(`- kill points by phase: ${listOf(s.phases)}`);
  if (Object.keys(s.inputs).length) lines.push(`- inputs tried: ${listOf(s.inputs)}`);
  if (Object.keys(s.outcomes).length) lines.push(`- outcomes: ${listOf(s.outcomes)}`);
  for (const note of s.notes) lines.push(`- ${note}`);
  for (const f of s.failureDetails) lines.push(`- FAILURE: ${f}`);
  lines.push('');
}
if (tests && tests.numFailedTests > 0) {
  lines.push('## Failed test cases', '');
  for (const file of tests.testResults) {
    for (const a of file.assertionResults) if (a.status === 'failed') lines.push(`- ${a.fullName}: ${(a.failureMessages[0] ?? '').split('\n')[0].slice(0, 300)}`);
  }
  lines.push('');
}

lines.push('## What each suite proves', '');
lines.push('- **Crash consistency**: `once` on a source of more than 64 MiB (with nodes.conf, three rule folders and six older events) is SIGKILLed before every filesystem call of a run (through `test/reliability/crash-child.mjs`, which runs the built CLI with the fault-injecting filesystem), and the real CLI is SIGKILLed at seeded random instants. After every kill: no partial or foreign file under a final name, the state file valid or absent, no event lost that retention was not entitled to delete, and the next real `once` exits 0, completes the event in every folder and removes the lock and temp files.');
lines.push('- **Every I/O fault**: call N of a full run fails, for every N of the run, with ENOSPC, EIO, EACCES and EROFS (once), and with the disk staying full / read-only / broken from call N on (sticky). The exit code is the documented one, the message names the operation and the path, nothing partial is left, earlier events are intact and the next clean run recovers. A few go through the real CLI, and real ENOSPC/EROFS on a small tmpfs.');
lines.push('- **Disk space**: the pre-copy check refuses one byte short (exit 1, nothing written) and proceeds at exactly enough, for the default reserve and for `archive.min_free` sizes and percentages.');
lines.push('- **Concurrency**: 32 `once` and 8 `prune` processes released by a barrier at the same instant; exactly one new event, exit codes 0 or 75, no stack traces; stale locks of killed runs (also killed during their own takeover) are taken over.');
lines.push('- **Changing source**: replaced by rename or rewritten in place at an exact read of the copy (in-process) and while the real CLI copies 64 MiB; symlink, directory, FIFO, device or missing source (also swapped in between the watcher and the worker).');
lines.push('- **Clock trouble**: future, backwards and repeated (same-second) mtimes, names taken by other files, extreme years.');
lines.push('- **Hostile inputs**: the bad-config corpus through the real CLI; symlinks (pointing outside), subdirectories, FIFOs, near-miss names and other users\' files in rule folders; a rule folder symlinked out of the archive.');
lines.push('- **Permissions**: modes under several umasks, and another user (nobody) refused.');
lines.push('');
lines.push('## Bugs this suite found (all fixed in `src/`)', '');
for (const bug of [
  'A source read failing while a write of the copy was in flight was an unhandled promise rejection: the process crashed with a stack trace and exit 1 (documented as "no space"), leaving the lock and a temp file (worker.ts copyPass).',
  'Temp files in the state folder (a lock attempt or a state write killed half-way) were never removed (lock.ts: the lock holder now removes temps of dead processes there).',
  'A takeover lock left by a run killed during its own stale-lock takeover made the next runs exit 75 for ten seconds and was then left behind (lock.ts: a takeover lock of a dead process is stale at once; it is renamed aside and checked before removal; a new holder removes a leftover one).',
  'An unreadable lock file (EACCES from another user\'s run, EIO) was treated as stale and taken over while its owner was alive (lock.ts readOwner).',
  'A failed write of the lock file left its temp file behind, and a failed temp cleanup after the link left a lock the caller never learned about (lock.ts createWithContent).',
  'A lock whose release failed inside a long-running process (the daemon) locked that process out for good: its pid is alive (lock.ts: a lock naming this pid that this process does not hold is stale).',
  'A failure to release the lock after a successful run exited 0; a failure to write the state after a failed run replaced the real error in the report (cycle.ts).',
  'A close() failing after a failed write or read replaced the first error in the message (fs.ts closeAfter, used by the worker, writeNewFile and the lock).',
  'The worker unlinked already-published temp files a second time and ignored errors there; a failed fstat of the source leaked its descriptor (worker.ts).',
  'A source rewritten in place with its mtime put back (`cp -p` over dump.rdb) during the copy was reported as a corrupt snapshot (exit 65) instead of "changed, try again" (75): the copy now also compares the ctime, ignoring an unlinked (renamed-over) file (fs.ts FileInfo.ctimeNs, worker.ts).',
  'With an event named in the future (a clock that was wrong), a rule with a small count deleted the snapshot holding the source\'s current content on the next run or prune, and the archive then lacked it for good (cycle.ts: the last archived event is always protected).',
  'When a `prune` got the lock first among simultaneous runs, every `once` gave up with 75 and the snapshot was not archived (seen in one of the first 32+8 rounds): a `once` now waits, bounded (30 s), for a running `prune` (lock.ts, cycle.ts).',
  'A source mtime beyond year 9999 was archived under a name retention and list can never read back (worker.ts refuses it, exit 66).',
  'Retention deleted any file that started with the temp prefix, even with no pid in its name (retention.ts, fs.ts tempOwnerPid: only our exact pattern).',
]) lines.push(`- ${bug}`);
lines.push('');
lines.push('## Reproduce', '');
lines.push('```sh');
lines.push('npm run test:reliability                          # full size: this report');
lines.push(`RELIABILITY_SEED=${seed} npm run test:reliability   # the same trials`);
lines.push('npm test                                          # includes a smaller deterministic subset of the same suite');
lines.push('```', '');

writeFileSync(out, lines.join('\n'));
process.stdout.write(`\nreliability: wrote ${out} (${fmt(sum((s) => s.trials))} trials, ${fmt(trialFailures)} trial failures, ${seconds(wallMs)})\n`);
process.exit(vitest.status ?? 1);
