/**
 * No silent failure (issue 10 item 4): a run that fails anywhere, even before
 * it could write its state, shows in `check` and in the metrics; a lock that
 * never goes stale and a failing or hanging hook show in `check`; a `check`
 * that lacks permission says UNKNOWN and as whom it ran.
 *
 * Runs as another user (nobody) need root: those tests are skipped, with the
 * reason printed, when the suite runs unprivileged.
 */
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, jsonOf, runCli, type CliResult } from '../helpers/cli.js';
import { readJson, setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
const asNobody = isRoot ? it : it.skip;
if (!isRoot) console.log('failures.test.ts: tests that run the CLI as another user (nobody) are skipped: they need root');

const HOUR = 3_600_000;
const ago = (ms: number) => new Date(Date.now() - ms);

/** The CLI as uid/gid `uid` (root can do this), like runCli. */
function runAs(uid: number, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.RDB_ARCHIVER_CONFIG;
    const child = spawn(process.execPath, [CLI, ...args], { env, uid, gid: uid, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function chownTree(path: string, uid: number): void {
  chownSync(path, uid, uid);
  if (statSync(path).isDirectory()) for (const name of readdirSync(path)) chownTree(join(path, name), uid);
}

/** chmod every folder of a tree (files keep their modes). */
function chmodDirs(path: string, mode: number): void {
  if (!statSync(path).isDirectory()) return;
  for (const name of readdirSync(path)) chmodDirs(join(path, name), mode);
  chmodSync(path, mode);
}

/** Files the tests put outside their temp folders (the default fallback folder for nobody): removed afterwards. */
const outside: string[] = [];
afterEach(() => {
  for (const path of outside.splice(0)) rmSync(path, { force: true });
});

/**
 * An archive owned by nobody with one good snapshot archived by nobody, every
 * path nobody needs traversable, metrics in a folder nobody can write.
 */
async function nobodyArchive(): Promise<ArchiveEnv & { prom: string }> {
  const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
  const prom = join(env.root, 'metrics', 'rdb.prom');
  mkdirSync(join(env.root, 'metrics'));
  chmodSync(env.root, 0o755);
  chmodSync(join(env.root, 'data'), 0o755);
  chownTree(env.archive, NOBODY);
  chownTree(join(env.root, 'metrics'), NOBODY);
  env.writeConfig({ extra: `metrics:\n  textfile: ${prom}` });
  writeSnapshot(env.source, { seed: 'a', mtime: ago(60_000) });
  chmodSync(env.source, 0o644);
  const r = await runAs(NOBODY, ['once', '-c', env.config]);
  expect(r.code, r.stderr).toBe(0);
  return { ...env, prom };
}

function metric(prom: string, name: string, labels = 'redis_instance="default"'): number | undefined {
  const m = new RegExp(`^${name}\\{${labels.replace(/[{}]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(readFileSync(prom, 'utf8'));
  return m ? Number(m[1]) : undefined;
}

describe('a run that fails before it can write its state', () => {
  asNobody('read-only archive: once exits 77, and check (CRITICAL), status and the metrics show it; the next good run clears it', async () => {
    const env = await nobodyArchive();
    writeSnapshot(env.source, { seed: 'b', mtime: ago(30_000) });
    chmodSync(env.source, 0o644);
    chmodDirs(env.archive, 0o555); // the archive goes read-only for its owner
    const failed = await runAs(NOBODY, ['once', '-c', env.config]);
    expect(failed.code, failed.stderr).toBe(77);
    // The state could not record it: it still says the last run was the good one.
    expect(readJson<{ lastRun: { exitCode: number } }>(env.state).lastRun.exitCode).toBe(0);

    // check, run as root (who can read everything) and as the archive's user.
    for (const run of [(a: string[]) => runCli(a), (a: string[]) => runAs(NOBODY, a)]) {
      const check = await run(['check', '-c', env.config]);
      expect(check.code, check.stdout).toBe(2);
      expect(check.stdout).toMatch(/^RDB-ARCHIVER CRITICAL - default: .*last once at \S+ failed \(exit 77: .*permission denied.*\); the state file could not record it/);
      expect(check.stdout).toMatch(/cannot be written: .* is not writable by its owner, nobody \(uid 65534\): mode 0555/);
    }
    const status = jsonOf<{ lastFailure: { command: string; exitCode: number; user: string; recordedIn: string } | null }>(await runCli(['status', '--json', '-c', env.config]));
    expect(status.lastFailure).toMatchObject({ command: 'once', exitCode: 77, user: 'nobody (uid 65534)' });
    const recordPath = status.lastFailure!.recordedIn;
    outside.push(recordPath);
    expect(dirname(recordPath)).toBe(`/var/tmp/rdb-archiver-${NOBODY}`);
    expect(basename(recordPath)).toMatch(/^default-[0-9a-f]{16}\.json$/);
    // The record is for monitoring users too: 0644 in a 0755 folder owned by the archive's user.
    expect(statSync(recordPath).mode & 0o777).toBe(0o644);
    expect(statSync(dirname(recordPath)).mode & 0o777).toBe(0o755);
    expect(statSync(recordPath).uid).toBe(NOBODY);
    const recordFile = basename(recordPath);

    // The metrics textfile (writable: it is elsewhere) says so.
    expect(metric(env.prom, 'rdb_archiver_last_run_exit_code')).toBe(77);
    expect(metric(env.prom, 'rdb_archiver_last_failure_exit_code')).toBe(77);
    expect(metric(env.prom, 'rdb_archiver_last_failure_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 120);

    // Writable again: the next run succeeds, clears the record, and check is OK.
    chmodDirs(env.archive, 0o700);
    const good = await runAs(NOBODY, ['once', '-c', env.config]);
    expect(good.code, good.stderr).toBe(0);
    expect(existsSync(join(`/var/tmp/rdb-archiver-${NOBODY}`, recordFile))).toBe(false);
    const ok = await runCli(['check', '-c', env.config]);
    expect(ok.code, ok.stdout).toBe(0);
    expect(metric(env.prom, 'rdb_archiver_last_run_exit_code')).toBe(0);
    // The good run took the record into the state: the last failure stays as history, and is counted.
    expect(metric(env.prom, 'rdb_archiver_last_failure_exit_code')).toBe(77);
    expect(metric(env.prom, 'rdb_archiver_runs_total', 'redis_instance="default",result="failed"')).toBe(1);
    expect(readJson<{ lastFailure: { exitCode: number; command: string } }>(env.state).lastFailure).toMatchObject({ exitCode: 77, command: 'once' });
  });

  asNobody('a run as root refused for an owner mismatch leaves no file in the archive; its record goes to root\'s folder, and check run as the archive\'s user sees it', async () => {
    const env = await nobodyArchive();
    writeSnapshot(env.source, { seed: 'r', mtime: ago(30_000) });
    chmodSync(env.source, 0o644);
    const refused = await runCli(['once', '-c', env.config]); // as root, into nobody's archive
    expect(refused.code, refused.stderr).toBe(77);
    const rootOwned = (dir: string): string[] => readdirSync(dir).flatMap((n) => {
      const p = join(dir, n);
      const st = statSync(p);
      return [...(st.uid === 0 ? [p] : []), ...(st.isDirectory() ? rootOwned(p) : [])];
    });
    expect(rootOwned(env.archive)).toEqual([]);
    expect(refused.stdout + refused.stderr).toContain('Nothing was written into the archive (the refusal is recorded for check, readable by root (uid 0) only)');
    // Its record is root's alone (0600): check as the archive's user cannot read it, but sees that it exists.
    const check = await runAs(NOBODY, ['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
    const m = /last once at \S+ failed \(exit 77: a run as root \(uid 0\) was refused .*\); the state file could not record it \(recorded in (\/var\/tmp\/rdb-archiver-0\/default-[0-9a-f]{16}\.json)\)/.exec(check.stdout);
    expect(m, check.stdout).not.toBeNull();
    outside.push(m![1]!);
    expect(statSync(m![1]!).mode & 0o777).toBe(0o600);
    // Root's check reads it in full.
    const asRoot = await runCli(['check', '-c', env.config]);
    expect(asRoot.stdout).toMatch(/last once at \S+ failed \(exit 77: .*the archive belongs to nobody/);
  });

  asNobody('monitor.failure_dir replaces the default fallback folder; a failed prune is recorded too', async () => {
    const env = await nobodyArchive();
    const dir = join(env.root, 'failures');
    env.writeConfig({ extra: `metrics:\n  textfile: ${env.prom}\nmonitor:\n  failure_dir: ${dir}` });
    mkdirSync(dir);
    chownTree(dir, NOBODY);
    chmodDirs(env.archive, 0o555);
    const pruned = await runAs(NOBODY, ['prune', '-c', env.config]);
    expect(pruned.code, pruned.stderr).toBe(77);
    expect(readdirSync(dir).filter((n) => n.endsWith('.json'))).toHaveLength(1);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
    expect(check.stdout).toMatch(/last prune at \S+ failed \(exit 77/);
  });

  asNobody('the daemon records a failed tick the same way', async () => {
    const env = await nobodyArchive();
    chmodDirs(env.archive, 0o555);
    writeSnapshot(env.source, { seed: 'c', mtime: ago(10_000) });
    chmodSync(env.source, 0o644);
    const env2 = { ...process.env };
    delete env2.RDB_ARCHIVER_CONFIG;
    const daemon = spawn(process.execPath, [CLI, 'daemon', '--schedule', '* * * * * *', '-c', env.config], { env: env2, uid: NOBODY, gid: NOBODY, stdio: 'ignore' });
    try {
      const deadline = Date.now() + 20_000;
      let check: CliResult | undefined;
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        check = await runCli(['check', '-c', env.config]);
        // (the writability probe makes it CRITICAL at once; wait for the tick's own record)
        if (/last daemon tick at/.test(check.stdout)) break;
      }
      expect(check!.code, check!.stdout).toBe(2);
      expect(check!.stdout).toMatch(/last daemon tick at \S+ failed \(exit 77/);
      // The tick writes the textfile after its cycle: wait for it.
      while (Date.now() < deadline && metric(env.prom, 'rdb_archiver_last_failure_exit_code') !== 77) await new Promise((r) => setTimeout(r, 200));
      expect(metric(env.prom, 'rdb_archiver_last_failure_exit_code')).toBe(77);
    } finally {
      daemon.kill('SIGTERM');
      await new Promise((r) => daemon.once('close', r));
      for (const n of existsSync(`/var/tmp/rdb-archiver-${NOBODY}`) ? readdirSync(`/var/tmp/rdb-archiver-${NOBODY}`) : []) {
        const path = join(`/var/tmp/rdb-archiver-${NOBODY}`, n);
        if (readFileSync(path, 'utf8').includes(env.state)) outside.push(path);
      }
    }
  });
});

describe('a lock that never goes stale', () => {
  it('check is WARNING past warn-age and CRITICAL past crit-age of a held lock; the metrics show its age', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    const prom = join(env.root, 'rdb.prom');
    env.writeConfig({ extra: `metrics:\n  textfile: ${prom}` });
    writeSnapshot(env.source, { seed: 'a', mtime: ago(60_000) });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    // A live process that is not rdb-archiver (this test runner) "holds" the lock since 3 hours.
    const lock = join(env.archive, '.rdb-archiver', 'lock');
    const since = ago(3 * HOUR);
    // Its file is fresh (as a lease a stuck run keeps refreshing would be); it records when it was taken.
    writeFileSync(lock, JSON.stringify({ pid: process.pid, startedAt: since.toISOString(), command: 'once' }) + '\n');
    writeSnapshot(env.source, { seed: 'b', mtime: ago(30_000) });
    const locked = await runCli(['once', '-c', env.config]);
    expect(locked.code).toBe(75);

    let check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/^RDB-ARCHIVER WARNING - default: the lock .*lock has been held for 3h \(> 2h\) by pid \d+ \(once\): no run can archive while it is held/);
    expect(check.stdout).toMatch(/ lock_age=\d+s;7200;21600;0/);
    expect(metric(prom, 'rdb_archiver_lock_age_seconds')).toBeGreaterThanOrEqual(3 * 3600 - 60);

    check = await runCli(['check', '-c', env.config, '--warn-age', '1h', '--crit-age', '2h']);
    expect(check.code, check.stdout).toBe(2);

    // Gone: OK again, and no lock age in the metrics.
    rmSync(lock);
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(0);
    expect(metric(prom, 'rdb_archiver_lock_age_seconds')).toBe(0);
  });
});

describe('failing hooks', () => {
  it('a hook that fails, or times out, makes check WARNING until that hook next succeeds', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    const flag = join(env.root, 'mode');
    const script = join(env.root, 'hook.sh');
    // fail: exit 3; hang: sleep past the timeout; anything else: succeed.
    writeFileSync(script, `#!/bin/sh\ncase "$(cat '${flag}')" in fail) exit 3;; hang) exec sleep 30;; esac\nexit 0\n`, { mode: 0o755 });
    const prom = join(env.root, 'rdb.prom');
    env.writeConfig({ extra: `metrics:\n  textfile: ${prom}\nhooks:\n  after_archive: ["${script}"]\n  timeout: 1s` });

    const archive = async (seed: string, mode: string) => {
      writeFileSync(flag, mode);
      writeSnapshot(env.source, { seed, mtime: ago(60_000 - seed.length * 1000) });
      const r = await runCli(['once', '-c', env.config]);
      expect(r.code, r.stderr).toBe(0); // a hook never changes the run's exit code
    };

    await archive('a', 'fail');
    let check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/^RDB-ARCHIVER WARNING - default: hook after_archive failed at \S+ \(exited with status 3\); WARNING until it next succeeds/);
    expect(metric(prom, 'rdb_archiver_hook_failing', 'redis_instance="default",hook="after_archive"')).toBe(1);
    expect(metric(prom, 'rdb_archiver_hook_last_failure_timestamp_seconds', 'redis_instance="default",hook="after_archive"')).toBeGreaterThan(Date.now() / 1000 - 120);

    // A run that does not run the hook (source unchanged) does not clear it.
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    expect((await runCli(['check', '-c', env.config])).code).toBe(1);

    await archive('bb', 'hang');
    check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/hook after_archive failed at \S+ \(timed out after 1000 ms and was killed\)/);
    const status = jsonOf<{ hooks: Record<string, { failing: boolean; lastFailureAt: string | null; lastError: string | null; lastSuccessAt: string | null }> }>(await runCli(['status', '--json', '-c', env.config]));
    expect(status.hooks.after_archive).toMatchObject({ failing: true, lastError: 'timed out after 1000 ms and was killed', lastSuccessAt: null });

    await archive('ccc', 'ok');
    check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(0);
    expect(metric(prom, 'rdb_archiver_hook_failing', 'redis_instance="default",hook="after_archive"')).toBe(0);
  });
});

describe('check without permission', () => {
  asNobody('cannot read the source or the archive: UNKNOWN (3), naming the user it ran as', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: ago(60_000) });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    // The config is readable by nobody; the source folder and the archive (0700, root's) are not.
    chmodSync(env.root, 0o755);
    chmodSync(env.config, 0o644);
    chmodSync(join(env.root, 'data'), 0o700);
    const check = await runAs(NOBODY, ['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(3);
    expect(check.stdout).toMatch(/^RDB-ARCHIVER UNKNOWN - default: /);
    expect(check.stdout).toMatch(/cannot read the source \S+ as user nobody \(uid 65534\): permission denied/);
    expect(check.stdout).toMatch(/as user nobody \(uid 65534\)/);
    expect(check.stdout).not.toMatch(/CRITICAL/);

    // The source alone unreadable (archive readable): still UNKNOWN, not CRITICAL.
    chmodDirs(env.archive, 0o755);
    chmodSync(env.state, 0o644);
    const only = await runAs(NOBODY, ['check', '-c', env.config]);
    expect(only.code, only.stdout).toBe(3);
    expect(only.stdout).toMatch(/cannot read the source \S+ as user nobody \(uid 65534\)/);
  });
});
