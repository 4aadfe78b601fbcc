/**
 * What a person (or journald) reads on stderr, through the real CLI: the
 * pretty format, the journal's `<N>` priorities, colour only on a terminal,
 * and each error printed once.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, runCli, tempDir } from '../helpers/cli.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

/** Runs the CLI with stdout and stderr on one file, as cron's mail, a terminal or the journal have them. */
function runShared(args: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number | null; output: string; streamId: string }> {
  const file = join(tempDir(), 'output');
  const fd = openSync(file, 'w');
  const st = fstatSync(fd, { bigint: true });
  const streamId = `${st.dev}:${st.ino}`;
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, RDB_ARCHIVER_CONFIG: undefined, JOURNAL_STREAM: undefined, NO_COLOR: undefined, ...env })) {
    if (v !== undefined) childEnv[k] = v.replace('<this stream>', streamId);
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', fd, fd], env: childEnv });
    closeSync(fd);
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output: readFileSync(file, 'utf8'), streamId }));
  });
}

/** Time and the temp root replaced, so the lines can be compared as text. */
const normalise = (text: string, root: string) => text.replaceAll(root, '<root>').replace(/^\d\d:\d\d:\d\d\.\d{3} /gm, 'HH:MM:SS.mmm ').replace(/durationMs=\d+/g, 'durationMs=N').replace(/lagSeconds=[\d.]+/g, 'lagSeconds=N');

const count = (text: string, needle: string) => text.split(needle).length - 1;

describe('log formats', () => {
  it('--log-format pretty: time, level word, message and key fields on one line each, no colour off a terminal', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 2 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-06-01T10:00:00Z') });
    const ok = await runCli(['once', '-c', env.config, '--log-format', 'pretty']);
    expect(ok.code, ok.stderr).toBe(0);
    const bad = await runCli(['once', '-c', env.config, '--log-format', 'pretty', '--source', join(env.root, 'missing.rdb')]);
    expect(bad.code).toBe(66);
    expect(normalise(ok.stderr + bad.stderr, env.root)).toBe([
      // (a test's archive and source share /tmp's filesystem: every run says so)
      'HH:MM:SS.mmm WARN  the archive <root>/archive is on the same filesystem as the source <root>/data/dump.rdb: it protects against mistakes, not against losing that disk; copy it off the host too (remotes:, README "Off-site copies") instance=default archive=<root>/archive',
      'HH:MM:SS.mmm INFO  snapshot archived instance=default ts=2025-06-01T10-00-00 seq=1 bytes=111 sha256=71dceea33b82570257dab968e60bda2f63d0f8753820e99b0609aea98f3ee0ac outcome=archived durationMs=N rdbVersion=11 lagSeconds=N',
      'HH:MM:SS.mmm ERROR run failed instance=default err="<root>/missing.rdb: cannot archive: does not exist (has Redis saved a snapshot yet?)" kind=no-source',
      '',
    ].join('\n'));
    expect(ok.stderr + bad.stderr).not.toContain('\x1b');
  });

  it('log.format in the config file selects the format; --log-format overrides it', async () => {
    const env = setupArchive();
    const withFormat = (format: string) => writeFileSync(env.config, readFileSync(env.config, 'utf8').replace(/^log:\n(  format: .*\n)?/m, `log:\n  format: ${format}\n`));
    withFormat('journal');
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code).toBe(66); // no source yet
    expect(r.stderr).toMatch(/^<3>run failed instance=default err=/m);
    const j = await runCli(['once', '-c', env.config, '--log-format', 'json']);
    expect(j.stderr).toMatch(/^\{"level":50,.*"msg":"run failed"\}$/m);
    withFormat('xml');
    const e = await runCli(['once', '-c', env.config]);
    expect(e.code).toBe(2);
    expect(e.stderr).toContain('log.format: must be one of json, pretty, journal');
  });

  it('under systemd (JOURNAL_STREAM names this stderr) every line carries its syslog priority; otherwise JSON', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 1 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-06-01T10:00:00Z') });
    const ok = await runShared(['once', '-c', env.config], { JOURNAL_STREAM: '<this stream>' });
    expect(ok.code, ok.output).toBe(0);
    expect(ok.output).toMatch(/^<6>snapshot archived instance=default ts=2025-06-01T10-00-00 /m);
    const bad = await runShared(['once', '-c', env.config, '--source', join(env.root, 'missing.rdb')], { JOURNAL_STREAM: '<this stream>' });
    expect(bad.code).toBe(66);
    expect(bad.output).toMatch(/^<3>run failed instance=default err=".*missing\.rdb: cannot archive/m);
    // A command that cannot run is an error for `journalctl -p err` too.
    const usage = await runShared(['once', '-c', join(env.root, 'nope.yaml')], { JOURNAL_STREAM: '<this stream>' });
    expect(usage.code).toBe(2);
    expect(usage.output).toMatch(/^<3>rdb-archiver: .*nope\.yaml: config file not found/m);
    // Inherited JOURNAL_STREAM, but stderr is another file (a hook's child, `2>file`): JSON, no prefixes.
    const other = await runShared(['once', '-c', env.config, '--source', join(env.root, 'missing.rdb')], { JOURNAL_STREAM: '1:2' });
    expect(other.output).toMatch(/^\{"level":50,.*"msg":"run failed"\}$/m);
    expect(other.output).not.toMatch(/^<\d>/m);
  });

  const hasScript = spawnSync('script', ['--version']).status === 0;
  if (!hasScript) console.warn('logs.test.ts: util-linux `script` is not installed: the terminal (pty) tests are skipped');
  it.skipIf(!hasScript)('on a terminal: pretty by default, coloured unless NO_COLOR is set', () => {
    const env = setupArchive();
    const onTty = (extraEnv: Record<string, string>) => {
      const r = spawnSync('script', ['-qec', `${process.execPath} ${CLI} once -c ${env.config}`, '/dev/null'], {
        encoding: 'utf8',
        env: { ...process.env, TERM: 'xterm', NO_COLOR: '', RDB_ARCHIVER_CONFIG: '', ...extraEnv },
      });
      return r.stdout;
    };
    const coloured = onTty({});
    expect(coloured).toMatch(/\x1b\[31mERROR/);
    expect(coloured).toContain('run failed');
    const plain = onTty({ NO_COLOR: '1' });
    expect(plain).toMatch(/^\d\d:\d\d:\d\d\.\d{3} ERROR run failed instance=default/m);
    expect(plain).not.toContain('\x1b');
  });
});

describe('each error is printed once', () => {
  const missing = 'cannot archive: does not exist';

  it('once: where stdout and stderr are one place (terminal, cron mail, journal) the log carries it and the summary points to it', async () => {
    const env = setupArchive();
    for (const format of ['json', 'pretty', 'journal']) {
      const r = await runShared(['once', '-c', env.config, '--log-format', format]);
      expect(r.code).toBe(66);
      expect(count(r.output, missing), r.output).toBe(1);
      expect(r.output).toContain('failed (exit 66): see the error logged above');
    }
    // Read apart (2>/dev/null, > result.txt), each stream still says it.
    const apart = await runCli(['once', '-c', env.config]);
    expect(apart.stdout).toContain(`failed: ${env.source}: ${missing}`);
    expect(count(apart.stderr, missing)).toBe(1);
    // With the log silenced, the summary is the only place, so it carries the message.
    const silent = await runShared(['once', '-c', env.config, '--log-level', 'silent']);
    expect(count(silent.output, missing)).toBe(1);
    expect(silent.output).toContain(`failed: ${env.source}: ${missing}`);
  });

  it('restore, verify and prune: the same rule; config and usage errors: one `rdb-archiver:` line', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 2 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-06-01T10:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const noEvent = 'no archived event 2020-01-01T00-00-00';

    const restore = await runShared(['restore', '2020-01-01T00-00-00', '--to', join(env.root, 'out.rdb'), '-c', env.config]);
    expect(restore.code).toBe(66);
    expect(count(restore.output, noEvent), restore.output).toBe(1);

    const verify = await runShared(['verify', '2020-01-01T00-00-00', '-c', env.config]);
    expect(verify.code).toBe(66);
    expect(count(verify.output, noEvent), verify.output).toBe(1);

    // A rule folder that cannot be read: a file where the folder should be.
    writeFileSync(join(env.archive, 'blocked'), 'x');
    env.writeConfig({ rules: [{ name: 'last', count: 2 }, { name: 'blocked', count: 1 }] });
    const prune = await runShared(['prune', '-c', env.config, '--log-format', 'pretty']);
    expect(prune.code).not.toBe(0);
    expect(prune.output).toMatch(/^\d\d:\d\d:\d\d\.\d{3} ERROR retention skipped for this folder instance=default rule=blocked/m);
    expect(count(prune.output, 'ENOTDIR: rule folder is not a directory'), prune.output).toBe(1);
    expect(prune.output).toMatch(/failed \(exit \d+\): see the error logged above/);

    // A bad archived event: its problem is logged once, the table marks it BAD and points to the log.
    const rdb = join(env.archive, 'last', 'dump-2025-06-01T10-00-00.rdb');
    const bytes = readFileSync(rdb);
    bytes[bytes.length >> 1]! ^= 0x10;
    writeFileSync(rdb, bytes);
    env.writeConfig({ rules: [{ name: 'last', count: 2 }] });
    const bad = await runShared(['verify', '-c', env.config]);
    expect(bad.code).toBe(1);
    expect(count(bad.output, 'CRC mismatch'), bad.output).toBe(1);
    expect(bad.output).toMatch(/^BAD {2}last {2}2025-06-01T10-00-00: see the error logged above$/m);
    const apart = await runCli(['verify', '-c', env.config]);
    expect(apart.stdout).toMatch(/^BAD {2}last {2}2025-06-01T10-00-00: .*CRC mismatch/m);

    const config = await runShared(['once', '-c', join(env.root, 'nope.yaml')]);
    expect(config.code).toBe(2);
    expect(count(config.output, 'config file not found'), config.output).toBe(1);
    expect(config.output).toMatch(/^rdb-archiver: .*nope\.yaml: config file not found/m);
  });
});
