/**
 * The arithmetic and the text of RELIABILITY.md, apart from the script that
 * runs the suite (run.mjs), so that a unit test can prove the counting.
 *
 * Each suite writes a SuiteFigures record (test/reliability/common.ts):
 * planned, landed, missed, notRun, passed, failed, plus what it injected.
 * aggregate() checks that every record adds up, turns a suite that wrote no
 * record and a test file vitest saw fail outside any trial into failures, and
 * gives the exit code; render() writes the markdown.
 */
import { createHash } from 'node:crypto';

/** Every suite of test/reliability, in the order of the report. */
export const SUITES = ['crash', 'faults', 'space', 'concurrency', 'source', 'clock', 'hostile', 'permissions', 'walker'];

/** What the counts mean: printed in RELIABILITY.md under the table. */
export const DEFINITIONS = [
  '**trial**: one scenario with one fault or condition and one verdict (one kill point, one injected errno at call N, one bad config, one round of simultaneous runs, one clock scenario...). A scenario that is one test case counts once, however many processes it runs.',
  '**planned**: the trials the suite set out to run for this seed and size.',
  '**landed**: the trials whose fault or condition actually took effect: the SIGKILL reached a run that was still running, the injected call was made and failed, the processes were released together...',
  '**missed**: planned trials whose fault never took effect, and which therefore prove nothing: a kill that arrived after the run had ended (the process had exited, or had already printed its result and was only exiting), a fault at call N of a run that made fewer calls, a syscall never made, a change to the source that came after the copy. They count neither as passed nor as failed. A missed fault never hides a failure: a trial whose fault did not land but whose run failed anyway is landed and failed.',
  '**not run**: planned trials that never ran, because a failure cut the test case or the suite short.',
  '**passed** / **failed**: the verdict of each landed trial (every invariant held / one broke). **failed** also counts each setup or harness failure: a suite whose setup (beforeAll) failed, a test case that failed outside its trials, a suite that wrote no figures at all. So passed + failed = landed + setup failures.',
];

/** What the seed does not reproduce, whatever the suite reports: said once for the whole document. */
export const ALWAYS_RANDOM = [
  'Scheduling of parallel lanes and of retention\'s parallel deletes: the order of a few filesystem calls can vary from run to run, so a deterministic crash point near the end of a run may fall one call earlier or later, or miss.',
];

const n0 = (v) => (Number.isFinite(v) ? v : 0);

/** A suite that wrote no figures: a failure, with nothing else known. */
function missingSuite(name, why) {
  return {
    suite: name, title: `${name} (no figures)`, planned: 0, landed: 0, missed: 0, notRun: 0, passed: 0, failed: 1, skipped: 0,
    missedBy: {}, setupFailures: [why], faults: {}, phases: {}, inputs: {}, outcomes: {}, failureDetails: [], notes: [], random: [], planDigest: 'none',
  };
}

/**
 * suites: the SuiteFigures records written; expected: suite names that must
 * have written one; vitest: vitest's JSON report (or undefined); vitestStatus:
 * its exit status. Returns the rows, totals, every problem found, and the
 * exit code run.mjs must give.
 */
export function aggregate({ suites, expected = SUITES, vitest, vitestStatus }) {
  const problems = [];
  const rows = suites.map((s) => ({
    ...s,
    setupFailures: [...(s.setupFailures ?? [])],
    missedBy: { ...(s.missedBy ?? {}) },
    failed: n0(s.failed),
  }));
  for (const name of expected) {
    if (!rows.some((r) => r.suite === name)) rows.push(missingSuite(name, `the suite wrote no figures: it did not load, or its process died before the end (see the vitest output)`));
  }
  const order = [...new Set([...SUITES, ...rows.map((r) => r.suite)])];
  rows.sort((a, b) => order.indexOf(a.suite) - order.indexOf(b.suite));

  // vitest's own view, as a backstop: a file it saw fail is a failure even if its figures do not say so.
  const failedTestCases = [];
  if (vitest) {
    for (const file of vitest.testResults ?? []) {
      const row = rows.find((r) => r.file && file.name && (r.file === file.name || file.name.endsWith(r.file) || r.file.endsWith(file.name)));
      const failedCases = (file.assertionResults ?? []).filter((a) => a.status === 'failed');
      for (const a of failedCases) failedTestCases.push({ suite: row?.suite ?? file.name, name: a.fullName, message: (a.failureMessages?.[0] ?? '').split('\n')[0].slice(0, 300) });
      if (file.status === 'failed' && row && row.failed === 0) {
        row.failed += 1;
        row.setupFailures.push(`vitest reports ${file.name} failed${file.message ? `: ${file.message.split('\n')[0].slice(0, 300)}` : ''}`);
      }
    }
  } else {
    problems.push('vitest wrote no JSON report: the test cases could not be checked');
  }

  for (const r of rows) {
    const trialFailures = r.failed - r.setupFailures.length;
    if (r.planned !== r.landed + r.missed + r.notRun) problems.push(`${r.suite}: planned ${r.planned} is not landed ${r.landed} + missed ${r.missed} + not run ${r.notRun}`);
    if (r.landed !== r.passed + trialFailures) problems.push(`${r.suite}: landed ${r.landed} is not passed ${r.passed} + failed trials ${trialFailures}`);
    if (r.notRun < 0) problems.push(`${r.suite}: more trials ran than were planned (${r.landed + r.missed} of ${r.planned})`);
    if (r.notRun > 0 && r.failed === 0) problems.push(`${r.suite}: ${r.notRun} planned trials never ran, and no failure says why`);
  }

  const sum = (pick) => rows.reduce((n, r) => n + n0(pick(r)), 0);
  const merge = (pick) => {
    const total = {};
    for (const r of rows) for (const [k, v] of Object.entries(pick(r) ?? {})) total[k] = (total[k] ?? 0) + v;
    return total;
  };
  const total = {
    planned: sum((r) => r.planned), landed: sum((r) => r.landed), missed: sum((r) => r.missed), notRun: sum((r) => r.notRun),
    passed: sum((r) => r.passed), failed: sum((r) => r.failed), skipped: sum((r) => r.skipped), setupFailures: sum((r) => r.setupFailures.length),
  };
  const exitCode = vitestStatus === 0 && total.failed === 0 && problems.length === 0 && failedTestCases.length === 0 ? 0 : 1;
  return {
    rows, total, problems, failedTestCases, exitCode,
    faults: merge((r) => r.faults), phases: merge((r) => r.phases), missedBy: merge((r) => r.missedBy),
    random: [...new Set(rows.flatMap((r) => r.random ?? []))],
  };
}

/** One digest over the suites' plan digests, in report order. */
export function planDigest(rows) {
  return createHash('sha256').update(rows.map((r) => `${r.suite}:${r.planDigest ?? '?'}`).join('\n')).digest('hex').slice(0, 16);
}

const fmt = (n) => Number(n).toLocaleString('en-US');
const listOf = (map) => Object.entries(map ?? {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([k, v]) => `${k}: ${fmt(v)}`).join('; ') || 'none';
const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

/**
 * The markdown of RELIABILITY.md. `run`: { date, machine, seed, wallMs,
 * command, vitestStatus, tests (vitest counts or undefined), filtered }.
 */
export function render(agg, run) {
  const { rows, total } = agg;
  const lines = [];
  lines.push('# Reliability figures', '');
  lines.push(`Measured by \`${run.command}\` on ${run.date}: ${run.machine}. Every number below was counted by the suite during this run; a trial counts only if its fault actually landed (definitions below the table).`, '');
  if (run.filtered) lines.push(`**A filtered run** (\`${run.filtered}\`): only the suites it selected are counted.`, '');
  lines.push(`**Result: ${agg.exitCode === 0 ? 'no failure' : `FAILED (${fmt(total.failed)} failures${agg.problems.length ? `, ${agg.problems.length} problems with the figures` : ''}${agg.failedTestCases.length ? `, ${agg.failedTestCases.length} failed test cases` : ''}${run.vitestStatus !== 0 ? `, vitest exit ${run.vitestStatus}` : ''})`}.** ${fmt(total.landed)} of ${fmt(total.planned)} planned trials landed; ${fmt(total.missed)} missed (their fault never took effect: not counted as trials that passed); ${fmt(total.notRun)} not run.`, '');
  lines.push('| suite | planned | landed | missed | not run | passed | failed |', '|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) lines.push(`| ${r.title} | ${fmt(r.planned)} | ${fmt(r.landed)} | ${fmt(r.missed)} | ${fmt(r.notRun)} | ${fmt(r.passed)} | ${fmt(r.failed)}${r.setupFailures.length ? ` (${fmt(r.setupFailures.length)} setup)` : ''} |`);
  lines.push(`| **total** | **${fmt(total.planned)}** | **${fmt(total.landed)}** | **${fmt(total.missed)}** | **${fmt(total.notRun)}** | **${fmt(total.passed)}** | **${fmt(total.failed)}**${total.setupFailures ? ` (${fmt(total.setupFailures)} setup)` : ''} |`);
  lines.push('');
  lines.push('| figure | value |', '|---|---|');
  lines.push(`| faults that landed | ${fmt(Object.values(agg.faults).reduce((a, b) => a + b, 0))}: ${listOf(agg.faults)} |`);
  lines.push(`| missed, by reason | ${listOf(agg.missedBy)} |`);
  lines.push(`| kill points that landed, by phase | ${listOf(agg.phases)} |`);
  lines.push(`| test cases | ${run.tests ? `${fmt(run.tests.numPassedTests)} passed, ${fmt(run.tests.numFailedTests)} failed, ${fmt(run.tests.numPendingTests + run.tests.numTodoTests)} skipped, of ${fmt(run.tests.numTotalTests)}` : 'no vitest report'} |`);
  lines.push(`| seed | ${run.seed} (\`RELIABILITY_SEED=${run.seed} npm run test:reliability\` plans the same trials; see below for what timing decides) |`);
  lines.push(`| plan digest | ${planDigest(rows)} (sha256 of every suite's planned trials: the same code, seed and size give the same digest) |`);
  lines.push(`| duration | ${seconds(run.wallMs)} wall clock |`);
  lines.push('');
  lines.push('## How trials are counted', '');
  for (const d of DEFINITIONS) lines.push(`- ${d}`);
  lines.push('');
  if (total.failed > 0 || agg.problems.length > 0 || agg.failedTestCases.length > 0) {
    lines.push('## Failures', '');
    for (const r of rows) {
      for (const f of r.setupFailures) lines.push(`- ${r.suite}: SETUP FAILURE: ${f}`);
      for (const f of r.failureDetails ?? []) lines.push(`- ${r.suite}: FAILURE: ${f}`);
    }
    for (const p of agg.problems) lines.push(`- THE FIGURES DO NOT ADD UP: ${p}`);
    for (const t of agg.failedTestCases) lines.push(`- failed test case (${t.suite}): ${t.name}: ${t.message}`);
    lines.push('');
  }
  for (const r of rows) {
    lines.push(`## ${r.title}`, '');
    lines.push(`- planned ${fmt(r.planned)} (plan digest ${r.planDigest ?? '?'}), landed ${fmt(r.landed)}, missed ${fmt(r.missed)}, not run ${fmt(r.notRun)}, passed ${fmt(r.passed)}, failed ${fmt(r.failed)}${r.skipped ? `, test cases skipped ${fmt(r.skipped)}` : ''}${r.durationMs !== undefined ? `; duration ${seconds(r.durationMs)}` : ''}`);
    if (Object.keys(r.missedBy).length) lines.push(`- missed: ${listOf(r.missedBy)}`);
    if (Object.keys(r.faults ?? {}).length) lines.push(`- faults that landed: ${listOf(r.faults)}`);
    if (Object.keys(r.phases ?? {}).length) lines.push(`- kill points that landed, by phase: ${listOf(r.phases)}`);
    if (Object.keys(r.inputs ?? {}).length) lines.push(`- inputs tried: ${listOf(r.inputs)}`);
    if (Object.keys(r.outcomes ?? {}).length) lines.push(`- outcomes: ${listOf(r.outcomes)}`);
    for (const note of r.notes ?? []) lines.push(`- ${note}`);
    lines.push('');
  }
  lines.push('## What the seed reproduces, and what timing decides', '');
  lines.push(`The seed (${run.seed}) fixes which trials are planned: every crash point and fault call N, the seeded kill instants (as fractions of a clean run), the bad configs, the scenarios. \`RELIABILITY_SEED=${run.seed}\` plans the same trials again, on the same code: the plan digest above and each suite's say so (the number of filesystem calls of a run, and so the crash points and fault calls, change with the code). These parts depend on wall-clock timing, so the landed/missed split and a few phases may differ between two runs with the same seed:`, '');
  for (const r of [...agg.random, ...ALWAYS_RANDOM]) lines.push(`- ${r}`);
  lines.push('');
  lines.push('## What each suite proves', '');
  for (const p of PROVES) lines.push(p);
  lines.push('');
  lines.push('## Bugs this suite found (all fixed in `src/`)', '');
  for (const bug of BUGS) lines.push(`- ${bug}`);
  lines.push('');
  lines.push('## Reproduce', '');
  lines.push('```sh');
  lines.push('npm run test:reliability                          # full size: this report (exits non-zero on any failure)');
  lines.push(`RELIABILITY_SEED=${run.seed} npm run test:reliability   # the same planned trials`);
  lines.push('npm run test:slow                                  # includes a smaller deterministic subset of the same suite');
  lines.push('```', '');
  return lines.join('\n');
}
/** One paragraph per suite (markdown list items). */
export const PROVES = [
  '- **Crash consistency**: `once` on a source of more than 64 MiB (with nodes.conf, three rule folders and six older events) is SIGKILLed before every filesystem call of a run (through `test/reliability/crash-child.mjs`, which runs the built CLI with the fault-injecting filesystem), and the real CLI is SIGKILLed at seeded random instants (a kill that arrives after the run has ended, or after it printed its result, is counted as missed, not as a kill). After every kill: no partial or foreign file under a final name, the state file valid or absent, no event lost that retention was not entitled to delete, and the next real `once` exits 0, completes the event in every folder and removes the lock and temp files.',
  '- **Every I/O fault**: call N of a full run fails, for every N of the run, with ENOSPC, EIO, EACCES and EROFS (once), and with the disk staying full / read-only / broken from call N on (sticky). The exit code is the documented one, the message names the operation and the path, nothing partial is left, earlier events are intact and the next clean run recovers. A few go through the real CLI, and real ENOSPC/EROFS on a small tmpfs. One full rule folder (issue 10 item 9): one folder\'s own filesystem fills up at call N, for every N of the run that needs space there: that folder alone fails (reported by rule as no-space), is still pruned and keeps nothing partial of the new event, the other folders get the event and are pruned exactly as by a clean run, and the next run completes the event there.',
  '- **Disk space**: the pre-copy check refuses one byte short (exit 1, nothing written) and proceeds at exactly enough, for the default reserve and for `archive.min_free` sizes and percentages.',
  '- **Concurrency**: 32 `once` and 8 `prune` processes released by a barrier at the same instant; exactly one new event, exit codes 0 or 75, no stack traces; stale locks of killed runs (also killed during their own takeover) are taken over. Lock owners (issue 10 item 6): a planted lock of 11 kinds of owner (this host with its process gone, alive or its pid reused; another host, boot or PID namespace; an older version\'s pid-only lock), with a fresh or an expired lease: taken over exactly when provably dead here or the lease expired, otherwise respected (75) with nothing written.',
  '- **Changing source**: replaced by rename or rewritten in place at an exact read of the copy (in-process) and while the real CLI copies 64 MiB; symlink, directory, FIFO, device or missing source (also swapped in between the watcher and the worker).',
  '- **Clock trouble**: future, backwards and repeated (same-second) mtimes, names taken by other files, extreme years. Issue 10 as families: a snapshot stamped in the future by 2 minutes to 5 years never becomes "latest" for `restore latest`, `list` or `status`, `check` warns naming the source and the event, and it rotates out; after the source clock steps back by 90 minutes to a year, none of the 3 most recently archived snapshots is deleted for its timestamp after any run, in any folder, and `check` says so; 2 to 10 saves within one second are all archived under their own names (the last is "latest", an idle server stays fine) and an eleventh is refused (73) without changing anything.',
  '- **Hostile inputs**: the bad-config corpus through the real CLI; symlinks (pointing outside), subdirectories, FIFOs, near-miss names and other users\' files in rule folders; a rule folder symlinked out of the archive. An archived event deleted or damaged behind our back (issue 10 item 14), 7 ways: a deletion is archived again by the next `once`; a corruption is seen by `verify` and replaced by `once --force`, the corrupt file kept in the quarantine; afterwards `verify` is clean, every command\'s "latest" is the snapshot, and an idle run says unchanged. Files another user planted in a group-writable rule folder (issue 10 item 5), 4 ways (newer or older complete events, bare newer .rdb files, an event stamped a minute ahead): never events for retention, `list`, `verify` or `restore latest`, never deleted, and `check` names them as foreign files.',
  '- **Permissions**: modes under several umasks, and another user (nobody) refused.',
];

/** Bugs the suite found, all fixed. */
export const BUGS = [
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
];
