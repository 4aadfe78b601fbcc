/**
 * `rdb-archiver config check` through the real CLI: one test per problem it
 * detects, and a good config that exits 0 with its resolved settings and no
 * secrets. Tests that need root (another user, chown, a tmpfs mount) skip
 * with a printed reason otherwise.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { remoteYaml, s3Env, S3_SECRET, startS3 } from '../helpers/s3.js';

const FIXTURE = resolve(import.meta.dirname, '../fixtures/redis-7.0-small.rdb');
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

interface Finding { check: string; verdict: 'ok' | 'warning' | 'error'; reason: string; fix?: string; path?: string }
interface Output {
  config: { instances: Array<Record<string, unknown>> };
  user: string;
  findings: Finding[];
  instances: Array<{ instance: string; findings: Finding[] }>;
  errors: number;
  warnings: number;
  exitCode: number;
}

/** A source, an archive root (0700) and a config; `extra` is appended to the YAML. */
function setup(extra = '', options: { archiveDir?: string } = {}) {
  const root = tempDir('rdb-archiver-config-check-');
  chmodSync(root, 0o755);
  const source = join(root, 'dump.rdb');
  copyFileSync(FIXTURE, source);
  const archive = options.archiveDir ?? join(root, 'archive');
  mkdirSync(archive, { recursive: true, mode: 0o700 });
  chmodSync(archive, 0o700);
  const config = join(root, 'config.yaml');
  writeFileSync(config, `source:\n  rdb: ${source}\narchive:\n  dir: ${archive}\n${extra}`, { mode: 0o644 });
  return { root, source, archive, config };
}

const findings = (out: Output) => [...out.findings, ...out.instances.flatMap((i) => i.findings)];
const find = (out: Output, check: string) => findings(out).filter((f) => f.check === check);

async function check(config: string, env?: Record<string, string>) {
  const r = await runCli(['config', 'check', '-c', config, '--json'], { env });
  return { r, out: jsonOf<Output>(r) };
}

const mounts: string[] = [];
afterEach(() => {
  for (const dir of mounts.splice(0)) spawnSync('umount', [dir]);
});

/** Mounts a tmpfs of `size` at dir; false (and why) when this machine does not allow it. */
function mountTmpfs(dir: string, size: string): true | string {
  mkdirSync(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) return `cannot mount a tmpfs here (${(r.stderr || r.error?.message || '').trim()})`;
  mounts.push(dir);
  return true;
}

describe('config check', () => {
  it('a good config: exit 0, the resolved settings in --json, no secret anywhere in the output', async () => {
    const hook = join(tempDir(), 'ship');
    writeFileSync(hook, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    const { config, archive, source } = setup(
      `rules:\n  - name: daily\n    every: day\n    count: 7\nmonitor:\n  warn_age: 3h\nhooks:\n  after_archive: [${hook}, --token, "\${SHIP_TOKEN}"]\ntimezone: Europe/Berlin\n`);
    const env = { SHIP_TOKEN: 'tok-very-secret-42' };
    const { r, out } = await check(config, env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(out.exitCode).toBe(0);
    expect(out.errors).toBe(0);
    const inst = out.config.instances[0]!;
    expect(inst).toMatchObject({
      name: 'default',
      source: { rdb: source, nodes: null },
      archive: { dir: archive, dirMode: '0700', fileMode: '0600' },
      state: join(archive, '.rdb-archiver', 'state.json'),
      timezone: 'Europe/Berlin',
      rules: [{ name: 'daily', every: 'day', count: 7 }],
      monitor: { warnAge: '3h', critAge: '6h' },
      hooks: { afterArchive: { executable: hook, arguments: 2 } },
    });
    expect(find(out, 'source.rdb readable')[0]?.verdict).toBe('ok');
    expect(find(out, 'archive writable')[0]?.verdict).toBe('ok');
    expect(find(out, 'hooks.after_archive')[0]?.verdict).toBe('ok');
    expect(find(out, 'free space')[0]?.verdict).toBe('ok');
    expect(find(out, 'schedule')[0]?.verdict).toBe('ok');
    expect(r.stdout + r.stderr).not.toContain('tok-very-secret-42');
    // The human form says the same, without the secret either.
    const text = await runCli(['config', 'check', '-c', config], { env });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('ok      archive writable');
    expect(text.stdout + text.stderr).not.toContain('tok-very-secret-42');
    // The probe file is gone.
    expect(spawnSync('ls', ['-A', archive], { encoding: 'utf8' }).stdout.trim()).toBe('');
  });

  it('an invalid config is exit 2, as for every command', async () => {
    const { config } = setup('rules:\n  - name: daily\n    count: 0\n');
    const r = await runCli(['config', 'check', '-c', config]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('rules[0].count');
  });

  it('a schedule the daemon would refuse, and a metrics folder that cannot be made, are errors (exit 1)', async () => {
    const blocker = join(tempDir(), 'a-file');
    writeFileSync(blocker, 'not a folder\n');
    const { config, root } = setup(`schedule: "61 * * * *"\nmetrics:\n  textfile: ${join(blocker, 'metrics', 'rdb_archiver.prom')}\n`);
    const { r, out } = await check(config);
    expect(r.code).toBe(1);
    expect(find(out, 'schedule')[0]).toMatchObject({ verdict: 'error' });
    expect(find(out, 'schedule')[0]!.reason).toContain('not a valid cron expression');
    expect(find(out, 'metrics.textfile')[0]).toMatchObject({ verdict: 'error', path: join(blocker, 'metrics') });
    expect(root).toBeTruthy();
  });

  it('a missing metrics folder that a run would make is ok, and the run does make it (README "Monitoring with Prometheus")', async () => {
    const metricsDir = join(tempDir(), 'node-exporter', 'textfiles');
    const { config } = setup(`metrics:\n  textfile: ${join(metricsDir, 'rdb_archiver.prom')}\n`);
    const { out } = await check(config);
    expect(find(out, 'metrics.textfile')[0]).toMatchObject({ verdict: 'ok', path: metricsDir });
    const once = await runCli(['once', '-c', config]);
    expect(once.code, once.stderr).toBe(0);
    expect(existsSync(join(metricsDir, 'rdb_archiver.prom'))).toBe(true);
  });

  it('a missing hook executable is an error (exit 1) naming the hook and the fix', async () => {
    const { config } = setup('hooks:\n  on_failure: [/nonexistent/rdb-archiver-notify]\n');
    const { r, out } = await check(config);
    expect(r.code).toBe(1);
    const f = find(out, 'hooks.on_failure')[0]!;
    expect(f.verdict).toBe('error');
    expect(f.reason).toContain('/nonexistent/rdb-archiver-notify does not exist');
    expect(f.fix).toBeTruthy();
  });

  it('a group-writable archive root is an error (exit 1) with the chmod that fixes it', async () => {
    const { config, archive } = setup();
    chmodSync(archive, 0o770);
    const { r, out } = await check(config);
    expect(r.code).toBe(1);
    const f = find(out, 'archive mode')[0]!;
    expect(f.verdict).toBe('error');
    expect(f.reason).toContain('writable by its group (mode 0770)');
    expect(f.fix).toBe(`chmod 0700 ${archive}`);
  });

  it('a missing archive root without archive.create is an error (runs exit 69)', async () => {
    const { config, archive } = setup();
    spawnSync('rmdir', [archive]);
    const { r, out } = await check(config);
    expect(r.code).toBe(1);
    expect(find(out, 'archive exists')[0]).toMatchObject({ verdict: 'error' });
  });

  it('free space below archive.min_free is an error (exit 1)', async () => {
    const { config } = setup();
    // More than any disk holds: the check must fail wherever the test runs.
    writeFileSync(config, readFileSync(config, 'utf8').replace('archive:\n', 'archive:\n  min_free: "1000TiB"\n'));
    const { r, out } = await check(config);
    expect(r.code).toBe(1);
    const f = find(out, 'free space')[0]!;
    expect(f.verdict).toBe('error');
    expect(f.reason).toContain('archive.min_free');
  });

  it('free space below min_free on a small tmpfs holding the rule folders (every distinct filesystem is checked)', async (ctx) => {
    if (!isRoot) return ctx.skip('mounting a tmpfs needs root');
    const { config, archive } = setup();
    // min_free 2MiB: the archive root's filesystem has it, the 1 MiB tmpfs of one rule folder has not.
    writeFileSync(config, readFileSync(config, 'utf8').replace('archive:\n', 'archive:\n  min_free: "2MiB"\n') +
      'rules:\n  - name: hourly\n    every: hour\n    count: 2\n  - name: daily\n    every: day\n    count: 2\n');
    const mounted = mountTmpfs(join(archive, 'daily'), '1m');
    if (mounted !== true) return ctx.skip(mounted);
    const { r, out } = await check(config);
    expect(r.code).toBe(1);
    const spaces = find(out, 'free space');
    expect(spaces).toHaveLength(2);
    expect(spaces.find((f) => f.path === join(archive, 'daily'))?.verdict).toBe('error');
    expect(spaces.find((f) => f.path === join(archive, 'hourly'))?.verdict).toBe('ok');
  });

  it('the archive on the source\'s filesystem is a warning; on another filesystem (a tmpfs) it is ok', async (ctx) => {
    const same = setup();
    const { r, out } = await check(same.config);
    expect(r.code).toBe(0);
    expect(find(out, 'archive filesystem')[0]).toMatchObject({ verdict: 'warning' });
    expect(find(out, 'archive filesystem')[0]!.reason).toContain('same filesystem');

    if (!isRoot) return ctx.skip('mounting a tmpfs needs root');
    const mountDir = join(tempDir(), 'mnt');
    const mounted = mountTmpfs(mountDir, '64m');
    if (mounted !== true) return ctx.skip(mounted);
    const other = setup('', { archiveDir: join(mountDir, 'archive') });
    const second = await check(other.config);
    expect(second.r.code, second.r.stdout).toBe(0);
    expect(find(second.out, 'archive filesystem')[0]).toMatchObject({ verdict: 'ok' });
  });

  it('an archive root owned by another user is an error (the owner-mismatch rule of once, prune and daemon)', async (ctx) => {
    if (!isRoot) return ctx.skip('chown to another user needs root');
    const { config, archive } = setup();
    chownSync(archive, NOBODY, NOBODY);
    const { r, out } = await check(config);
    expect(r.code).toBe(1);
    const f = find(out, 'archive owner')[0]!;
    expect(f.verdict).toBe('error');
    expect(f.reason).toContain('the archive belongs to nobody');
    // --allow-owner-mismatch makes it a warning, as it lets runs write there.
    const allowed = await runCli(['config', 'check', '-c', config, '--json', '--allow-owner-mismatch']);
    expect(find(jsonOf<Output>(allowed), 'archive owner')[0]?.verdict).toBe('warning');
  });

  it('an event file owned by another user in a rule folder is a warning: it is no event, never deleted', async (ctx) => {
    if (!isRoot) return ctx.skip('chown to another user needs root');
    const { config, archive, source } = setup();
    const once = await runCli(['once', '-c', config]);
    expect(once.code, once.stderr).toBe(0);
    const daily = join(archive, 'daily');
    const rdb = spawnSync('sh', ['-c', `ls ${daily}/*.rdb`], { encoding: 'utf8' }).stdout.trim().split('\n')[0]!;
    chownSync(rdb, NOBODY, NOBODY);
    expect(source).toBeTruthy();
    const { r, out } = await check(config);
    expect(r.code).toBe(0);
    expect(find(out, 'rules.daily files')[0]).toMatchObject({ verdict: 'warning' });
  });

  it('a source the running user cannot read (run as nobody): an error naming the user, its groups and the fix', async (ctx) => {
    if (!isRoot) return ctx.skip('running as another user needs root');
    const { config, source, archive } = setup();
    chmodSync(source, 0o600); // root's, like a Redis with umask 077
    chownSync(archive, NOBODY, NOBODY);
    const r = spawnSync(process.execPath, [CLI, 'config', 'check', '-c', config, '--json'], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', env: { ...process.env, RDB_ARCHIVER_CONFIG: '' } });
    expect(r.status, r.stdout + r.stderr).toBe(1);
    const out = JSON.parse(r.stdout) as Output;
    const f = find(out, 'source.rdb readable')[0]!;
    expect(f.verdict).toBe('error');
    expect(f.reason).toContain('permission denied');
    expect(f.reason).toContain('nobody (uid 65534), groups');
    expect(f.fix).toContain('UMask=0027');
    // The rest still ran: the archive owned by nobody is writable by nobody.
    expect(find(out, 'archive writable')[0]?.verdict).toBe('ok');

    // Readable through its group: ok, and says so.
    chownSync(source, 0, NOBODY);
    chmodSync(source, 0o640);
    const g = spawnSync(process.execPath, [CLI, 'config', 'check', '-c', config, '--json'], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
    const grouped = JSON.parse(g.stdout) as Output;
    expect(find(grouped, 'source.rdb readable')[0]?.verdict).toBe('ok');
    expect(find(grouped, 'source.rdb group read')[0]).toMatchObject({ verdict: 'ok' });

    // Readable only because everyone may read it: a warning.
    chownSync(source, 0, 0);
    chmodSync(source, 0o644);
    const o = spawnSync(process.execPath, [CLI, 'config', 'check', '-c', config, '--json'], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
    const other = JSON.parse(o.stdout) as Output;
    expect(find(other, 'source.rdb group read')[0]).toMatchObject({ verdict: 'warning' });
  });

  it('a source folder the running user cannot search names that folder', async (ctx) => {
    if (!isRoot) return ctx.skip('running as another user needs root');
    const { root, config, archive } = setup();
    const hidden = join(root, 'redis');
    mkdirSync(hidden, { mode: 0o700 });
    copyFileSync(FIXTURE, join(hidden, 'dump.rdb'));
    chmodSync(join(hidden, 'dump.rdb'), 0o644);
    writeFileSync(config, `source:\n  rdb: ${join(hidden, 'dump.rdb')}\narchive:\n  dir: ${archive}\n`, { mode: 0o644 });
    chownSync(archive, NOBODY, NOBODY);
    const r = spawnSync(process.execPath, [CLI, 'config', 'check', '-c', config, '--json'], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
    expect(r.status).toBe(1);
    const f = find(JSON.parse(r.stdout) as Output, 'source.rdb readable')[0]!;
    expect(f.reason).toContain(`the folder ${hidden} cannot be searched`);
    expect(f.fix).toContain(`chmod g+x ${hidden}`);
  });

  it('each remote gets a put/head/get/delete probe under its prefix (a real S3 server): ok, and an error naming the step when the bucket is missing', async () => {
    const s3 = await startS3();
    const good = remoteYaml({ endpoint: s3.endpoint, prefix: 'probe/ok/' });
    const missing = remoteYaml({ endpoint: s3.endpoint, name: 'nobucket', bucket: 'no-such-bucket-here', prefix: 'probe/x/' }).replace(/^remotes:\n/, '');
    const { config } = setup(`${good}\n${missing}\n`);
    const r = await runCli(['config', 'check', '-c', config, '--json'], { env: s3Env() });
    const out = jsonOf<Output>(r);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(find(out, 'remotes.offsite')[0]).toMatchObject({ verdict: 'ok', path: 's3://rdb-archiver-test/probe/ok/' });
    const bad = find(out, 'remotes.nobucket')[0]!;
    expect(bad).toMatchObject({ verdict: 'error' });
    expect(bad.reason).toContain('the probe failed at put');
    // The probe object is gone, and the resolved settings show the remote, never a credential.
    expect(spawnSync('find', [s3.dir, '-name', '*config-check*'], { encoding: 'utf8' }).stdout.trim()).toBe('');
    expect(out.config.instances[0]!.remotes).toMatchObject([{ name: 'offsite', location: 's3://rdb-archiver-test/probe/ok/' }, { name: 'nobucket' }]);
    expect(r.stdout + r.stderr).not.toContain(S3_SECRET);
  });
});
