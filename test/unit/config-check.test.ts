/**
 * The pure half of `config check` (judgeInstance): facts in, findings out.
 * The CLI tests (test/integration/config-check.test.ts) gather real facts.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { exitCodeOfFindings, judgeConfig, judgeInstance, resolvedSettings, type InstanceCheckFacts } from '../../src/commands/config-check.js';

const instance = loadConfig({ source: '/srv/redis/dump.rdb', archive: '/backup/redis' }, {}).instances[0]!;
const groupName = (gid: number) => (gid === 110 ? 'redis (gid 110)' : `gid ${gid}`);
const dir = (path: string, extra: Partial<NonNullable<InstanceCheckFacts['archive']['info']>> = {}) =>
  ({ path, info: { kind: 'dir' as const, uid: 998, gid: 998, mode: 0o700, dev: '2', ...extra } });

/** A deployment as README "Deployment" documents it: user 998 in the redis group (110), archive on another disk. */
function goodFacts(): InstanceCheckFacts {
  return {
    user: { uid: 998, gid: 998, groups: [998, 110] },
    source: { path: '/srv/redis/dump.rdb', info: { kind: 'file', uid: 110, gid: 110, mode: 0o640, dev: '1' }, read: 'ok', header: 'REDIS0011', size: 1000 },
    archive: dir('/backup/redis'),
    probe: { ok: true },
    ruleFolders: [{ ...dir('/backup/redis/hourly'), rule: 'hourly', foreignFiles: 0 }, { ...dir('/backup/redis/daily'), rule: 'daily', foreignFiles: 0 }],
    stateDir: dir('/backup/redis/.rdb-archiver'),
    hooks: [],
    spaces: [{ paths: ['/backup/redis/hourly', '/backup/redis/daily'], available: 10 * 2 ** 30, total: 100 * 2 ** 30 }],
    failureDir: { ...dir('/var/tmp/rdb-archiver-998', { mode: 0o755 }), configured: false, writable: true },
    remotes: [],
  };
}

const verdictOf = (facts: InstanceCheckFacts, check: string) => judgeInstance(instance, facts, groupName).filter((f) => f.check === check).map((f) => f.verdict);

describe('judgeInstance', () => {
  it('the documented deployment has no warning and no error', () => {
    const findings = judgeInstance(instance, goodFacts(), groupName);
    expect(findings.filter((f) => f.verdict !== 'ok')).toEqual([]);
    expect(findings.find((f) => f.check === 'source.rdb group read')?.reason).toContain('redis (gid 110)');
    expect(exitCodeOfFindings(findings)).toBe(0);
  });

  it('EACCES on the source names the user, its groups, the file mode, and the fix', () => {
    const facts = goodFacts();
    facts.source = { ...facts.source, info: { ...facts.source.info!, mode: 0o600 }, read: 'EACCES' };
    const f = judgeInstance(instance, facts, groupName).find((x) => x.check === 'source.rdb readable')!;
    expect(f.verdict).toBe('error');
    expect(f.reason).toMatch(/groups gid 998, redis \(gid 110\).*mode 0600/);
    expect(f.fix).toContain('UMask=0027');
    expect(exitCodeOfFindings([f])).toBe(1);
  });

  it('readable only through the other bits (not the redis group) is a warning', () => {
    const facts = goodFacts();
    facts.user.groups = [998];
    facts.source.info = { ...facts.source.info!, mode: 0o644 };
    expect(verdictOf(facts, 'source.rdb group read')).toEqual(['warning']);
  });

  it('a source owned by the running user (the archiver runs as redis) is a warning', () => {
    const facts = goodFacts();
    facts.source.info = { ...facts.source.info!, uid: 998 };
    expect(verdictOf(facts, 'source.rdb owner')).toEqual(['warning']);
  });

  it('modes: group-writable is an error, group-readable a warning, both with the chmod', () => {
    const facts = goodFacts();
    facts.ruleFolders[0] = { ...facts.ruleFolders[0]!, info: { ...facts.ruleFolders[0]!.info!, mode: 0o770 } };
    facts.stateDir = dir('/backup/redis/.rdb-archiver', { mode: 0o750 });
    expect(verdictOf(facts, 'rules.hourly mode')).toEqual(['error']);
    expect(verdictOf(facts, 'state mode')).toEqual(['warning']);
  });

  it('free space: the snapshot plus min_free must fit on every filesystem', () => {
    const facts = goodFacts();
    // Default reserve: min(5% of 100 GiB, 1 GiB) = 1 GiB; 1 GiB + 1000 bytes does not fit in 1 GiB.
    facts.spaces = [{ paths: ['/backup/redis/hourly'], available: 2 ** 30, total: 100 * 2 ** 30 }, { paths: ['/mnt/daily'], available: 2 * 2 ** 30, total: 100 * 2 ** 30 }];
    expect(verdictOf(facts, 'free space')).toEqual(['error', 'ok']);
  });

  it('a missing archive root: an error without archive.create, ok with it when the parent is writable', () => {
    const facts = goodFacts();
    facts.archive = { path: '/backup/redis', error: 'ENOENT' };
    delete facts.probe;
    facts.archiveParent = { ...dir('/backup'), writable: true };
    expect(verdictOf(facts, 'archive exists')).toEqual(['error']);
    expect(judgeInstance({ ...instance, createArchive: true }, facts, groupName).find((f) => f.check === 'archive writable')?.verdict).toBe('ok');
    facts.archiveParent.writable = false;
    expect(judgeInstance({ ...instance, createArchive: true }, facts, groupName).find((f) => f.check === 'archive writable')?.verdict).toBe('error');
  });

  it('hooks: not found, not executable, untrusted are errors', () => {
    const facts = goodFacts();
    const file = { kind: 'file' as const, uid: 0, gid: 0, mode: 0o755, dev: '1' };
    facts.hooks = [
      { key: 'after_archive', command: 'ship-it', runnable: false },
      { key: 'after_prune', command: '/usr/local/bin/sync', executable: '/usr/local/bin/sync', info: { ...file, mode: 0o644 }, runnable: false },
      { key: 'on_failure', command: '/opt/notify', executable: '/opt/notify', info: file, runnable: true, untrusted: 'the hook executable /opt/notify is writable by everyone' },
    ];
    const hooks = judgeInstance(instance, facts, groupName).filter((f) => f.check.startsWith('hooks.'));
    expect(hooks.map((f) => f.verdict)).toEqual(['error', 'error', 'error']);
    expect(hooks[0]!.reason).toContain('not found in PATH');
    expect(hooks[1]!.fix).toBe('chmod +x /usr/local/bin/sync');
  });
});

describe('failure records folder', () => {
  it('the default folder made by another user, or one that may be written by others, is a warning: records are never written there', () => {
    const facts = goodFacts();
    facts.failureDir = { ...dir('/var/tmp/rdb-archiver-998', { uid: 1234 }), configured: false, writable: true };
    expect(verdictOf(facts, 'failure records')).toEqual(['warning']);
    facts.failureDir = { ...dir('/var/tmp/rdb-archiver-998', { mode: 0o777 }), configured: false, writable: true };
    expect(verdictOf(facts, 'failure records')).toEqual(['warning']);
  });

  it('a configured monitor.failure_dir this user cannot write is a warning; a missing one is made at the first failure', () => {
    const facts = goodFacts();
    facts.failureDir = { ...dir('/var/lib/rdb-archiver', { uid: 0, mode: 0o755 }), configured: true, writable: false };
    expect(verdictOf(facts, 'failure records')).toEqual(['warning']);
    facts.failureDir = { path: '/var/lib/rdb-archiver', error: 'ENOENT', configured: true, writable: false };
    expect(verdictOf(facts, 'failure records')).toEqual(['ok']);
  });
});

describe('remotes', () => {
  it('a failed probe step is an error with the permission that step needs', () => {
    const facts = goodFacts();
    facts.remotes = [
      { name: 'a', location: 's3://b/p/', ok: true },
      { name: 'c', location: 's3://b/q/', ok: false, step: 'delete', error: 'AccessDenied (HTTP 403)' },
    ];
    const found = judgeInstance(instance, facts, groupName).filter((f) => f.check.startsWith('remotes.'));
    expect(found.map((f) => f.verdict)).toEqual(['ok', 'error']);
    expect(found[1]!.fix).toContain('s3:DeleteObject');
  });

  it('a remote whose zstd cannot run on this Node is an error with the ways out', () => {
    const facts = goodFacts();
    facts.codecs = [{ remote: 'offsite', codec: 'zstd', reason: 'no zstd in node:zlib and no zstd-napi' }];
    const f = judgeInstance(instance, facts, groupName).find((x) => x.check === 'remotes.offsite.compression')!;
    expect(f.verdict).toBe('error');
    expect(f.fix).toMatch(/npm ci.*Node 22\.15.*gzip/);
    expect(exitCodeOfFindings([f])).toBe(1);
  });
});

describe('judgeInstance: archive on the source\'s filesystem', () => {
  const sameDisk = () => {
    const facts = goodFacts();
    facts.archive = dir('/backup/redis', { dev: '1' });
    return facts;
  };

  it('without remotes: a warning whose fix is a remote', () => {
    const f = judgeInstance(instance, sameDisk(), groupName).find((x) => x.check === 'archive filesystem')!;
    expect(f.verdict).toBe('warning');
    expect(f.fix).toContain('remotes:');
  });

  it('with a remote: ok, naming the remote that keeps the off-host copies (not telling the operator to add one)', () => {
    const remote = { ...instance, remotes: [{ name: 'offsite' } as (typeof instance.remotes)[number]] };
    const f = judgeInstance(remote, sameDisk(), groupName).find((x) => x.check === 'archive filesystem')!;
    expect(f.verdict).toBe('ok');
    expect(f.reason).toContain('remote offsite');
    expect(f.reason).not.toContain('copy it off the host');
  });
});

describe('judgeConfig', () => {
  it('a missing metrics folder that a run can create (its nearest existing parent is writable) is ok, as a run makes it', () => {
    const [, metrics] = judgeConfig({
      schedule: { expression: '* * * * *', timezone: 'UTC' },
      metricsDir: { path: '/tmp/x/metrics', error: 'ENOENT', writable: false, parent: { path: '/tmp', writable: true } },
    });
    expect(metrics).toMatchObject({ check: 'metrics.textfile', verdict: 'ok' });
    expect(metrics!.reason).toContain('the first run creates it');
    const [, refused] = judgeConfig({
      schedule: { expression: '* * * * *', timezone: 'UTC' },
      metricsDir: { path: '/var/lib/x/metrics', error: 'ENOENT', writable: false, parent: { path: '/var/lib', writable: false } },
    });
    expect(refused).toMatchObject({ check: 'metrics.textfile', verdict: 'error' });
  });

  it('a schedule the daemon refuses is an error; a metrics folder this user cannot write is an error', () => {
    const findings = judgeConfig({
      schedule: { expression: '61 * * * *', timezone: 'UTC', problem: '"61 * * * *" is not a valid cron expression' },
      metricsDir: { path: '/var/lib/prometheus/node-exporter', error: 'ENOENT', writable: false },
    });
    expect(findings.map((f) => [f.check, f.verdict])).toEqual([['schedule', 'error'], ['metrics.textfile', 'error']]);
    expect(judgeConfig({ schedule: { expression: '* * * * *', timezone: 'UTC' } }).map((f) => f.verdict)).toEqual(['ok']);
  });
});

describe('resolvedSettings', () => {
  it('shows a hook as its executable and the number of its arguments, never the arguments', () => {
    const config = loadConfig({ source: '/srv/redis/dump.rdb', archive: '/backup/redis' }, {});
    config.instances[0]!.hooks.afterArchive = ['/usr/local/bin/ship', '--token', 'secret-token'];
    const text = JSON.stringify(resolvedSettings(config));
    expect(text).toContain('/usr/local/bin/ship');
    expect(text).not.toContain('secret-token');
  });
});
