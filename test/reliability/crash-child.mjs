#!/usr/bin/env node
/**
 * Runs `rdb-archiver once` the way the CLI does (load the config, make the
 * logger, run the once cycle for every instance, print the outcome, exit with
 * the worst code) from the BUILT modules in dist/, with the filesystem wrapped
 * in the fault-injecting FaultyFS (test/helpers/faulty-fs.ts), so a test can
 * SIGKILL the process or fail a call at an exact point of the call sequence.
 *
 * (dist/cli.js itself is an esbuild bundle with its own copy of every module:
 * nothing can be injected into it. The modules it bundles are the same source,
 * emitted one by one by tsc next to it; the random kills and the real-fault
 * tests run the bundle itself.)
 *
 *   node test/reliability/crash-child.mjs once [--json] [--dry-run] [--force] -c CONFIG
 *
 * Environment:
 *   RELIABILITY_FAULTY_FS    path of the transpiled faulty-fs module (required)
 *   RELIABILITY_DIST         the built modules (default: dist/)
 *   FAULT_KILL_AT=N          SIGKILL this process just before filesystem call N
 *   FAULT_FAIL_AT=N          fail call N with FAULT_CODE (ENOSPC, EIO, EACCES, EROFS...)
 *   FAULT_STICKY=writes|all  keep failing after call N (a full or read-only disk)
 *   FAULT_LOG=FILE           write {count, calls, injected, killedAt} as JSON on exit or before the kill
 */
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const dist = process.env.RELIABILITY_DIST ? pathToFileURL(`${process.env.RELIABILITY_DIST.replace(/\/$/, '')}/`) : new URL('../../dist/', import.meta.url);
const load = (name) => import(new URL(name, dist).href);
const [{ OSFS }, { fsError, ExitCode, exitCodeOf, ArchiverError }, { loadConfig }, { runOnce }, { createLog }, { worstExitCode }] = await Promise.all(
  ['core/fs.js', 'core/errors.js', 'core/config.js', 'pipeline/cycle.js', 'core/log.js', 'core/context.js'].map(load),
);
const modulePath = process.env.RELIABILITY_FAULTY_FS;
if (!modulePath) {
  process.stderr.write('crash-child: RELIABILITY_FAULTY_FS is not set\n');
  process.exit(70);
}
const { FaultyFS } = await import(pathToFileURL(modulePath).href);

const logFile = process.env.FAULT_LOG;
const faulty = new FaultyFS(new OSFS(), { wrapError: fsError, record: Boolean(logFile) });
const dump = (extra) => {
  if (!logFile) return;
  writeFileSync(logFile, JSON.stringify({ count: faulty.count, calls: faulty.calls, injected: faulty.injected, ...extra }));
};
const intEnv = (name) => {
  const text = process.env[name];
  if (!text) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${text}`);
  return n;
};
const killAt = intEnv('FAULT_KILL_AT');
const failAt = intEnv('FAULT_FAIL_AT');
if (killAt !== undefined) {
  faulty.at(killAt, (call) => {
    dump({ killedAt: call });
    process.kill(process.pid, 'SIGKILL');
  });
}
if (failAt !== undefined) {
  const sticky = process.env.FAULT_STICKY === 'all' || process.env.FAULT_STICKY === 'writes' ? process.env.FAULT_STICKY : false;
  faulty.failAt(failAt, process.env.FAULT_CODE ?? 'EIO', { sticky });
}
process.on('exit', () => dump({}));

// The command line: once [--json] [--dry-run] [--force] -c FILE
const args = process.argv.slice(2);
if (args[0] !== 'once') {
  process.stderr.write('crash-child: only `once` is supported\n');
  process.exit(ExitCode.CONFIG);
}
const flag = (name) => args.includes(name);
const configIndex = args.findIndex((a) => a === '-c' || a === '--config');
const json = flag('--json');
try {
  const config = loadConfig({ config: configIndex >= 0 ? args[configIndex + 1] : undefined });
  const log = createLog(config.logLevel);
  const reports = [];
  for (const instance of config.instances) {
    reports.push(await runOnce({ fs: faulty, log }, instance, { dryRun: flag('--dry-run'), force: flag('--force') }));
  }
  for (const r of reports) {
    if (json) process.stdout.write(`${JSON.stringify({ status: r.status, snapshot: r.snapshot, retention: r.retention, warnings: r.warnings, ...(r.error ? { error: r.error } : {}), exitCode: r.exitCode })}\n`);
    else process.stdout.write(`${r.status === 'failed' ? `failed: ${r.error?.message}` : r.status}${r.status !== 'failed' && r.error ? `\nerror: ${r.error.message}` : ''}\n`);
  }
  process.exitCode = worstExitCode(reports.map((r) => r.exitCode));
} catch (err) {
  process.stderr.write(`rdb-archiver: ${err instanceof ArchiverError ? err.message : `internal error: ${err?.stack ?? err}`}\n`);
  process.exitCode = exitCodeOf(err);
}
