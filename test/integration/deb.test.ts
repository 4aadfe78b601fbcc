/**
 * The Debian package, installed for real: `npm run package:deb` (here with
 * --skip-build: `npm test` has just built dist/), `dpkg -i`, the files and
 * the user it creates, the CLI as that user reading a redis-group dump, then
 * `dpkg -r` and `dpkg --purge`.
 *
 * This changes the machine (a system user, /usr/lib, /etc, /lib/systemd), so
 * it runs only as root and only when asked: CI=true (CI runs as root on a
 * throwaway machine) or RUN_SYSTEM_TESTS=1. Otherwise it is skipped
 * with the reason. It never runs over an installed rdb-archiver package or an
 * existing rdb-archiver user, and purges what it installed even when a test
 * fails.
 *
 * Then, where systemd-nspawn is installed, the same package in a container
 * that boots systemd (this machine's own system, copy-on-write on a tmpfs
 * overlay, private network): the timer starts the service, the daemon unit
 * starts and stops, and a missing /var/lib/redis fails the run (exit 66), not
 * the unit's namespace set-up. CI does not install systemd-nspawn: there this
 * part is skipped with the reason.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
const USER = 'rdb-archiver';
const ARCHIVE_DEFAULT = '/var/backups/redis';
let DEB_ARCH = 'all';
const DPKG_ARCH = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout?.trim() ?? 'amd64';

// The installed CLI starts with `#!/usr/bin/env node`: let that be the node
// running the tests, which made the code cache (CI also runs the suite under
// other Node versions).
const NODE_FIRST_PATH = `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`;

// Building the package copies and hashes every file of the runtime dependencies
// (the S3 SDK is most of them): over a minute on a loaded 2-core machine.
const BUILD_MS = 300_000;

function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: BUILD_MS, env: { ...process.env, PATH: NODE_FIRST_PATH, RDB_ARCHIVER_CONFIG: undefined, ...env } });
  if (r.error) throw r.error;
  return r;
}
const ok = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return !r.error && r.status === 0;
};
const packageInstalled = () => /^(install|hold|deinstall) ok (installed|config-files|half)/m.test(spawnSync('dpkg-query', ['-W', '-f=${Status}\n', USER], { encoding: 'utf8' }).stdout ?? '');
const userExists = (name: string) => ok('getent', ['passwd', name]);
const groupExists = (name: string) => ok('getent', ['group', name]);

function whyNot(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'needs root (it installs a package and creates a system user)';
  // Not an RDB_ARCHIVER_* name: the CLI passes those on to hooks, and hooks.test checks their exact set.
  if (process.env.CI !== 'true' && process.env.RUN_SYSTEM_TESTS !== '1') {
    return 'changes the machine; runs only under CI=true or RUN_SYSTEM_TESTS=1';
  }
  if (!ok('dpkg-deb', ['--version'])) return 'dpkg-deb is not installed (not a Debian system)';
  if (packageInstalled()) return `the ${USER} package is installed on this machine; not touching it`;
  if (userExists(USER) || groupExists(USER)) return `a user or group named ${USER} already exists; not touching it`;
  return undefined;
}

const reason = whyNot();
if (reason) console.warn(`\n!! SKIPPING the Debian package test: ${reason}.\n`);

describe.skipIf(reason !== undefined)('Debian package: npm run package:deb, dpkg -i, dpkg --purge', () => {
  let work: string;
  let deb: string;
  const archiveExisted = existsSync(ARCHIVE_DEFAULT);
  const redisGroupExisted = groupExists('redis');

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'rdb-archiver-deb-test-'));
    const built = run(process.execPath, ['scripts/package-deb.mjs', '--skip-build', '--out', work]);
    expect(built.status, built.stderr).toBe(0);
    deb = built.stdout.trim();
    // A compiled addon in the package (zstd-napi's, when npm pack carried its build) makes it this
    // machine's architecture; without one it is "all" (zstd then needs a Node with node:zlib zstd).
    const listing = run('dpkg-deb', ['-c', deb]);
    DEB_ARCH = /\.node$/m.test(listing.stdout) ? DPKG_ARCH : 'all';
    expect(deb).toBe(join(work, `rdb-archiver_${pkg.version}_${DEB_ARCH}.deb`));
  }, BUILD_MS + 60_000);

  // Whatever happened above: purge what we installed, and undo what postinst made.
  afterAll(() => {
    if (packageInstalled()) run('dpkg', ['--purge', USER]);
    if (userExists(USER)) run('userdel', [USER]);
    if (groupExists(USER)) run('groupdel', [USER]);
    if (!redisGroupExisted && groupExists('redis')) run('groupdel', ['redis']);
    // Only the empty folder postinst made; never an archive with content.
    if (!archiveExisted && existsSync(ARCHIVE_DEFAULT) && readdirSync(ARCHIVE_DEFAULT).length === 0) rmdirSync(ARCHIVE_DEFAULT);
    rmSync(work, { recursive: true, force: true });
  });

  it('the package declares its dependency on nodejs and its conffile', () => {
    const control = run('dpkg-deb', ['--field', deb, 'Package', 'Architecture', 'Depends']);
    expect(control.stdout).toContain('Package: rdb-archiver');
    expect(control.stdout).toContain(`Architecture: ${DEB_ARCH}`);
    expect(control.stdout).toMatch(/Depends: .*nodejs \(>= 20\)/);
    const listed = run('sh', ['-c', `dpkg-deb --ctrl-tarfile '${deb}' | tar -xOf - ./conffiles`]);
    expect(listed.stdout.trim()).toBe('/etc/rdb-archiver/config.yaml');
  });

  it('dpkg -i installs it, creates the rdb-archiver user in the redis group, places the files with their modes', () => {
    // Depends: nodejs (>= 20). Where Node was not installed by dpkg (a tarball, nvm), dpkg -i would
    // refuse; the node that runs this test is the one the CLI will use, so the dependency is forced.
    const nodeFromDpkg = ok('dpkg-query', ['-W', 'nodejs']);
    if (!nodeFromDpkg) console.warn('!! nodejs is not a dpkg package here: dpkg -i --force-depends');
    const install = run('dpkg', ['-i', ...(nodeFromDpkg ? [] : ['--force-depends']), deb]);
    expect(install.status, install.stdout + install.stderr).toBe(0);

    const passwd = run('getent', ['passwd', USER]).stdout.trim().split(':');
    expect(passwd[5]).toBe('/nonexistent');
    expect(passwd[6]).toBe('/usr/sbin/nologin');
    expect(Number(passwd[2])).toBeLessThan(1000); // a system user
    expect(run('id', ['-nG', USER]).stdout.trim().split(' ').sort()).toEqual(['rdb-archiver', 'redis']);
    const gid = Number(passwd[3]);

    const config = statSync('/etc/rdb-archiver/config.yaml');
    expect(config.mode & 0o7777).toBe(0o640);
    expect([config.uid, config.gid]).toEqual([0, gid]);
    for (const unit of ['rdb-archiver.service', 'rdb-archiver.timer', 'rdb-archiver-daemon.service']) {
      expect(statSync(`/lib/systemd/system/${unit}`).mode & 0o7777).toBe(0o644);
    }
    expect(lstatSync('/usr/bin/rdb-archiver').isSymbolicLink()).toBe(true);
    expect(readlinkSync('/usr/bin/rdb-archiver')).toBe('../lib/rdb-archiver/dist/cli.cjs');
    expect(statSync('/usr/lib/rdb-archiver/dist/cli.cjs').mode & 0o7777).toBe(0o755);
    expect(statSync('/usr/lib/rdb-archiver/dist/cli.js').mode & 0o7777).toBe(0o755);
    expect(existsSync('/usr/lib/rdb-archiver/node_modules/@aws-sdk/client-s3/package.json')).toBe(true);
    expect(existsSync('/usr/share/doc/rdb-archiver/README.md')).toBe(true);
    expect(existsSync('/usr/share/doc/rdb-archiver/copyright')).toBe(true);
    if (!archiveExisted) {
      const archive = statSync(ARCHIVE_DEFAULT);
      expect(archive.mode & 0o7777).toBe(0o700);
      expect(archive.uid).toBe(Number(passwd[2]));
    }
  });

  it('as rdb-archiver it reads /etc/rdb-archiver/config.yaml (0640 root:rdb-archiver) and accepts it', () => {
    const stateDir = statSync('/var/lib/rdb-archiver'); // monitor.failure_dir of the example config
    expect([stateDir.mode & 0o7777, stateDir.uid]).toEqual([0o755, Number(run('id', ['-u', USER]).stdout.trim())]);
    const r = run('runuser', ['-u', USER, '--', '/usr/bin/rdb-archiver', 'once', '--dry-run']);
    // 0 if this machine's Redis has saved /var/lib/redis/dump.rdb, 66 if not; never 2 (config refused) or 77.
    expect([0, 66], r.stderr).toContain(r.status);
  });

  it('systemd-analyze verify accepts the installed units (ExecStart finds /usr/bin/rdb-archiver)', () => {
    if (!ok('systemd-analyze', ['--version'])) throw new Error('systemd-analyze is missing (.ci/run installs it)');
    const r = run('systemd-analyze', ['verify', '/lib/systemd/system/rdb-archiver.service', '/lib/systemd/system/rdb-archiver.timer', '/lib/systemd/system/rdb-archiver-daemon.service']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('/usr/bin/rdb-archiver runs, from its code cache', () => {
    const r = run('/usr/bin/rdb-archiver', ['--version'], { RDB_ARCHIVER_DEBUG_CODE_CACHE: '1' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
    expect(r.stderr).toContain('code cache used');
  });

  it('as rdb-archiver it archives a dump it can read only through the redis group; redis cannot delete the archive', () => {
    // Laid out as Debian's redis-server does: folder 0750 redis:redis, dump 0640 (UMask=0027) or 0660 (007).
    const dir = join(work, 'redis');
    mkdirSync(dir);
    copyFileSync(join(ROOT, 'examples/data/dump.rdb'), join(dir, 'dump.rdb'));
    run('chown', ['-R', 'redis:redis', dir]);
    run('chmod', ['0750', dir]);
    run('chmod', ['0640', join(dir, 'dump.rdb')]);
    run('chmod', ['0755', work]);
    const archive = join(work, 'archive');
    mkdirSync(archive);
    run('chown', [`${USER}:${USER}`, archive]);
    run('chmod', ['0700', archive]);

    const once = run('runuser', ['-u', USER, '--', '/usr/bin/rdb-archiver', 'once', '--source', join(dir, 'dump.rdb'), '--archive', archive, '--json']);
    expect(once.status, once.stderr).toBe(0);
    expect(JSON.parse(once.stdout)).toMatchObject({ status: 'archived' });
    const [rule] = readdirSync(archive).filter((n) => !n.startsWith('.'));
    const rdb = readdirSync(join(archive, rule!)).find((n) => n.endsWith('.rdb'))!;
    const file = join(archive, rule!, rdb);
    const st = statSync(file);
    expect(st.mode & 0o777).toBe(0o600);
    expect(run('id', ['-u', USER]).stdout.trim()).toBe(String(st.uid));

    // The redis user (a compromised Redis) can neither delete nor overwrite it.
    if (userExists('redis')) {
      expect(run('runuser', ['-u', 'redis', '--', 'rm', '-f', file]).status).not.toBe(0);
      expect(run('runuser', ['-u', 'redis', '--', 'sh', '-c', `: > '${file}'`]).status).not.toBe(0);
      expect(statSync(file).size).toBe(st.size);
    }
  });

  it('dpkg -r keeps the user and the config; dpkg --purge removes both, and keeps the archive and the redis group', () => {
    expect(run('dpkg', ['-r', USER]).status).toBe(0);
    expect(existsSync('/usr/bin/rdb-archiver')).toBe(false);
    expect(existsSync('/usr/lib/rdb-archiver')).toBe(false);
    expect(userExists(USER)).toBe(true);
    expect(existsSync('/etc/rdb-archiver/config.yaml')).toBe(true);

    const purge = run('dpkg', ['--purge', USER]);
    expect(purge.status, purge.stdout + purge.stderr).toBe(0);
    expect(userExists(USER)).toBe(false);
    expect(groupExists(USER)).toBe(false);
    expect(existsSync('/etc/rdb-archiver')).toBe(false);
    expect(existsSync('/var/lib/rdb-archiver')).toBe(false);
    expect(existsSync('/lib/systemd/system/rdb-archiver.service')).toBe(false);
    expect(run('dpkg-statoverride', ['--list', '/etc/rdb-archiver/config.yaml']).status).not.toBe(0);
    expect(groupExists('redis')).toBe(true);
    expect(existsSync(ARCHIVE_DEFAULT)).toBe(true); // backups are never deleted by a purge
  });
});

// ---------------------------------------------------------------------------
// Under a running systemd: systemd-nspawn -b on a copy-on-write view of this machine.

const nspawnReason = reason ?? (ok('systemd-nspawn', ['--version']) ? undefined : 'systemd-nspawn is not installed (apt-get install systemd-container)');
if (!reason && nspawnReason) console.warn(`\n!! SKIPPING the units under a running systemd: ${nspawnReason}.\n`);

describe.skipIf(nspawnReason !== undefined)('Debian package under a running systemd (systemd-nspawn)', () => {
  let top: string;
  let merged: string;
  let nspawn: ChildProcess | undefined;
  let leader = 0;
  const mounts: string[] = [];

  /** Runs a shell command inside the container. */
  const inside = (script: string) => run('nsenter', ['-t', String(leader), '-a', 'sh', '-c', script]);

  beforeAll(async () => {
    top = mkdtempSync(join(tmpdir(), 'rdb-archiver-nspawn-'));
    // The upper layer must be on a filesystem overlayfs accepts as upper: a tmpfs.
    expect(run('mount', ['-t', 'tmpfs', '-o', 'size=1g', 'tmpfs', top]).status).toBe(0);
    mounts.unshift(top);
    for (const d of ['upper', 'work', 'merged']) mkdirSync(join(top, d));
    merged = join(top, 'merged');
    const overlay = run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=/,upperdir=${join(top, 'upper')},workdir=${join(top, 'work')}`, merged]);
    expect(overlay.status, overlay.stderr).toBe(0);
    mounts.unshift(merged);
    const built = run(process.execPath, ['scripts/package-deb.mjs', '--skip-build', '--out', join(merged, 'root')]);
    expect(built.status, built.stderr).toBe(0);

    const log = openSync(join(top, 'nspawn.log'), 'w');
    nspawn = spawn('systemd-nspawn', ['--register=no', '--keep-unit', '--private-network', `--machine=rdb-archiver-test-${process.pid}`, '-D', merged, '-b', 'systemd.unit=basic.target'], { stdio: ['ignore', log, log] });
    // The container's init is nspawn's child; wait for it, then for the boot to finish.
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline && !leader) {
      await new Promise((r) => setTimeout(r, 250));
      const kids = spawnSync('pgrep', ['-P', String(nspawn.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
      if (kids.length && readFileSync(`/proc/${kids[0]}/comm`, 'utf8').trim() === 'systemd') leader = Number(kids[0]);
    }
    expect(leader, readFileSync(join(top, 'nspawn.log'), 'utf8')).toBeGreaterThan(0);
    // Until systemd listens on its bus, systemctl says "Failed to connect to bus".
    let state = '';
    while (Date.now() < deadline && !['running', 'degraded'].includes(state)) {
      await new Promise((r) => setTimeout(r, 500));
      state = spawnSync('nsenter', ['-t', String(leader), '-a', 'systemctl', 'is-system-running'], { encoding: 'utf8' }).stdout.trim();
    }
    expect(['running', 'degraded'], `${state}\n${readFileSync(join(top, 'nspawn.log'), 'utf8')}`).toContain(state);
  }, BUILD_MS + 180_000);

  // Shut the container down even when a test failed: poweroff, else SIGKILL its
  // init (that ends every process of its PID namespace; killing nspawn would not).
  afterAll(async () => {
    if (nspawn && nspawn.exitCode === null) {
      const exited = new Promise((r) => nspawn!.once('exit', r));
      const wait = (ms: number) => Promise.race([exited, new Promise((r) => setTimeout(r, ms))]);
      if (leader) spawnSync('nsenter', ['-t', String(leader), '-a', 'systemctl', 'poweroff']);
      await wait(30_000);
      if (nspawn.exitCode === null && leader) spawnSync('kill', ['-KILL', String(leader)]);
      await wait(10_000);
      if (nspawn.exitCode === null) nspawn.kill('SIGKILL');
    }
    for (const m of mounts) if (run('umount', [m]).status !== 0) run('umount', ['-l', m]);
    if (top) rmSync(top, { recursive: true, force: true });
  }, 90_000);

  it('dpkg -i in the container; the timer starts rdb-archiver.service, which archives what redis-server saved', () => {
    const install = inside('dpkg -i /root/rdb-archiver_*.deb');
    expect(install.status, install.stdout + install.stderr).toBe(0);
    // Debian's redis-server (UMask=007) saves dump.rdb 0660 redis:redis; the archiver reads it through the group.
    // (The container boots basic.target only: none of this machine's other services.)
    const saved = inside('systemctl start redis-server && redis-cli set k v >/dev/null && redis-cli save >/dev/null && stat -c "%a %U:%G" /var/lib/redis/dump.rdb');
    expect(saved.stdout.trim(), saved.stderr).toMatch(/^6[46]0 redis:redis$/);
    // Only the schedule changes: fire once, now, instead of every 5 minutes.
    const started = inside(
      'mkdir -p /run/systemd/system/rdb-archiver.timer.d && ' +
        'printf "[Timer]\\nOnCalendar=\\nOnActiveSec=1s\\nRandomizedDelaySec=0\\nAccuracySec=1s\\n" > /run/systemd/system/rdb-archiver.timer.d/now.conf && ' +
        'systemctl daemon-reload && systemctl start rdb-archiver.timer && ' +
        'for i in $(seq 1 60); do [ "$(systemctl show -P ExecMainExitTimestampMonotonic rdb-archiver.service)" != 0 ] && break; sleep 0.5; done; ' +
        'systemctl show -p Result -p ExecMainStatus rdb-archiver.service',
    );
    expect(started.stdout, started.stderr).toContain('Result=success');
    expect(started.stdout).toContain('ExecMainStatus=0');
    const archived = inside('find /var/backups/redis -name "dump-*.rdb" -printf "%m %u %p\\n"');
    expect(archived.stdout.trim().split('\n')).toHaveLength(3); // hourly, daily, weekly of the example config
    for (const line of archived.stdout.trim().split('\n')) expect(line).toMatch(/^600 rdb-archiver \/var\/backups\/redis\//);
  });

  it('systemd-analyze security rates both installed units at most 3.0 (online, as loaded by systemd)', () => {
    for (const unit of ['rdb-archiver.service', 'rdb-archiver-daemon.service']) {
      const r = inside(`systemd-analyze security --threshold=30 ${unit} | tail -1`);
      expect(r.status, r.stdout + r.stderr).toBe(0);
      const score = /exposure level for .*?: (\d+(?:\.\d+)?)/.exec(r.stdout);
      expect(Number(score?.[1]), r.stdout).toBeLessThanOrEqual(3.0);
    }
  });

  it('the daemon unit starts (stopping the timer), a manual run of the oneshot service leaves it running, SIGTERM stops it with success', () => {
    const r = inside(
      'systemctl start rdb-archiver-daemon.service && sleep 2 && ' +
        'echo "daemon=$(systemctl is-active rdb-archiver-daemon.service) timer=$(systemctl is-active rdb-archiver.timer)" && ' +
        'systemctl start rdb-archiver.service; echo "manual=$(systemctl show -P ExecMainStatus rdb-archiver.service)" && ' +
        'echo "daemon-after=$(systemctl is-active rdb-archiver-daemon.service)" && ' +
        'systemctl stop rdb-archiver-daemon.service && systemctl show -p Result rdb-archiver-daemon.service',
    );
    expect(r.stdout, r.stderr).toContain('daemon=active timer=inactive');
    expect(r.stdout).toMatch(/manual=(0|75)\n/);
    expect(r.stdout).toContain('daemon-after=active');
    expect(r.stdout).toContain('Result=success');
  });

  it('without /var/lib/redis the unit still starts and the run fails with its own exit code (66), not 226/NAMESPACE', () => {
    const r = inside(
      'systemctl stop redis-server && mv /var/lib/redis /var/lib/redis.away && ' +
        '{ systemctl start rdb-archiver.service; systemctl show -p Result -p ExecMainStatus rdb-archiver.service; mv /var/lib/redis.away /var/lib/redis; }',
    );
    expect(r.stdout, r.stderr).toContain('ExecMainStatus=66');
    expect(r.stdout).toContain('Result=exit-code');
  });

  it('journald files each log line under its priority: journalctl -p err lists the failed run and nothing of the good ones', () => {
    // Runs after the tests above: a successful run (timer), a manual run and the failed run without /var/lib/redis.
    const err = inside('journalctl -u rdb-archiver.service -p err -o cat --no-pager');
    expect(err.stdout, err.stderr).toMatch(/^run failed instance=default err=".*dump\.rdb: cannot archive: .*" kind=no-source$/m);
    expect(err.stdout).not.toContain('snapshot archived');
    const all = inside('journalctl -u rdb-archiver.service -o cat --no-pager');
    expect(all.stdout, all.stderr).toMatch(/^snapshot archived instance=default ts=\S+ seq=\d+ bytes=\d+ /m);
    expect(all.stdout).not.toMatch(/^<\d>/m); // journald took the prefixes as priorities
    expect(all.stdout).not.toContain('"level":'); // the journal format, chosen from JOURNAL_STREAM
    // Each error once: the summary on stdout (the same journal stream) points to the logged line.
    expect(all.stdout.split('cannot archive').length - 1).toBe(1);
    expect(all.stdout).toContain('failed (exit 66): see the error logged above');
  });
});
