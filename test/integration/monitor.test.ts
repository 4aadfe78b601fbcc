/**
 * `status` and `check` through the real CLI: every state `check` can be in
 * maps to its Nagios exit code and one summary line with perf data.
 */
import { mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const HOUR = 3_600_000;
const ago = (ms: number) => new Date(Date.now() - ms);

/** The plugin output: exactly one line, "RDB-ARCHIVER STATE - text | perfdata". */
function pluginLine(stdout: string): { state: string; text: string; perf: Record<string, string> } {
  const lines = stdout.split('\n').filter((l) => l !== '');
  expect(lines, stdout).toHaveLength(1);
  const m = /^RDB-ARCHIVER (OK|WARNING|CRITICAL|UNKNOWN) - (.*?)(?: \| (.*))?$/.exec(lines[0]!);
  expect(m, lines[0]).not.toBeNull();
  const perf: Record<string, string> = {};
  for (const item of (m![3] ?? '').split(' ').filter(Boolean)) {
    // label=value[UOM];[warn];[crit];[min];[max]
    expect(item).toMatch(/^[a-z0-9_-]+=(U|\d+(\.\d+)?(s|B|%|c)?)(;[\d.]*){0,4}$/);
    const [label, value] = item.split('=') as [string, string];
    perf[label] = value;
  }
  return { state: m![1]!, text: m![2]!, perf };
}

describe('rdb-archiver check', () => {
  it('OK for a fresh snapshot, with perf data in the plugin format', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 5 }, { name: 'last', count: 5 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: ago(60_000) });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);

    const r = await runCli(['check', '-c', env.config]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const line = pluginLine(r.stdout);
    expect(line.state).toBe('OK');
    expect(line.text).toMatch(/^default: newest snapshot \d+s ago, note: archive on the same filesystem as the source, last run \d+s ago: archived$/);
    expect(line.perf.age).toMatch(/^\d+s;7200;21600;0$/);
    expect(line.perf.events).toBe('1;;;0');
    expect(line.perf.archive).toMatch(/^\d+B;;;0$/);
    expect(line.perf.free).toMatch(/^\d+B;;;0$/);

    const j = await runCli(['check', '--json', '-c', env.config]);
    expect(j.code).toBe(0);
    expect(jsonOf(j)).toMatchObject({ status: 'OK', exitCode: 0, instances: [{ instance: 'default', status: 'OK', problems: [], events: 1 }] });
  });

  it('WARNING past warn-age, CRITICAL past crit-age; flags override the config, which overrides the defaults', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: ago(3 * HOUR + 60_000) });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);

    let r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(1);
    expect(pluginLine(r.stdout).text).toBe('default: newest snapshot 3h ago (> 2h)');

    r = await runCli(['check', '-c', env.config, '--warn-age', '1h', '--crit-age', '2h']);
    expect(r.code).toBe(2);
    expect(pluginLine(r.stdout)).toMatchObject({ state: 'CRITICAL', text: 'default: newest snapshot 3h ago (> 2h)' });
    expect(pluginLine(r.stdout).perf.age).toMatch(/^\d+s;3600;7200;0$/);

    r = await runCli(['check', '-c', env.config, '--warn-age', '4h']);
    expect(r.code).toBe(0);

    env.writeConfig({ extra: 'monitor:\n  warn_age: 30m\n  crit_age: 90m' });
    r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(2);
    expect(pluginLine(r.stdout).text).toBe('default: newest snapshot 3h ago (> 90m)');
  });

  it('CRITICAL when the source is missing, when it failed validation, and when the last run failed', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    const t = ago(10 * 60_000);
    writeSnapshot(env.source, { seed: 'a', mtime: t });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);

    // Missing source.
    unlinkSync(env.source);
    let r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(2);
    expect(pluginLine(r.stdout).text).toMatch(/^default: source unavailable: .*dump\.rdb.*does not exist/);

    // The current source failed validation (and so the last run failed).
    writeFileSync(env.source, 'this is not an RDB file at all');
    expect((await runCli(['once', '-c', env.config])).code).toBe(65);
    r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(2);
    // One reason, not two: the failed run is this same invalid file.
    expect(pluginLine(r.stdout).text).toMatch(/^default: source \S+dump\.rdb failed validation: not an RDB file: bad magic/);

    // A valid source whose run failed for another reason: every name of its second is taken (exit 73).
    // (Since issue 10 item 15 a second snapshot of one second gets the name <ts>_1; only all ten names taken is a conflict.)
    const taken = readdirSync(join(env.archive, 'last')).find((n) => n.endsWith('.rdb'))!.slice(5, 24);
    for (const suffix of ['', '_1', '_2', '_3', '_4', '_5', '_6', '_7', '_8', '_9']) {
      if (suffix !== '') mkdirSync(join(env.archive, 'last', `dump-${taken}${suffix}.rdb`));
    }
    writeSnapshot(env.source, { seed: 'different', mtime: t, size: 4096 });
    expect((await runCli(['once', '-c', env.config])).code).toBe(73);
    r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(2);
    expect(pluginLine(r.stdout).text).toMatch(/^default: last run at \S+ failed \(exit 73: .*no name left/);
  });

  it('CRITICAL when nothing was ever archived; WARNING when the last run must be retried', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: ago(60_000) });
    let r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(2);
    expect(pluginLine(r.stdout).text).toBe('default: no snapshot archived yet');
    expect(pluginLine(r.stdout).perf.age).toBe('U;7200;21600;0');

    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const state = JSON.parse(readFileSync(env.state, 'utf8')) as { lastRun: Record<string, unknown> };
    state.lastRun = { ...state.lastRun, result: 'failed', exitCode: 75, error: 'source changed during the copy' };
    writeFileSync(env.state, JSON.stringify(state));
    r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(1);
    expect(pluginLine(r.stdout).text).toMatch(/^default: last run at \S+ must be retried \(exit 75: source changed during the copy\)$/);
  });

  it('UNKNOWN when the state is corrupt or unreadable, the config is missing, or the flags are wrong', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: ago(60_000) });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);

    writeFileSync(env.state, '{"version": 1, "archived": ');
    let r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(3);
    expect(pluginLine(r.stdout).text).toMatch(/^default: state file .* is corrupt/);

    unlinkSync(env.state);
    mkdirSync(env.state); // reading it fails with EISDIR
    r = await runCli(['check', '-c', env.config]);
    expect(r.code).toBe(3);
    expect(pluginLine(r.stdout).text).toMatch(/^default: state file .* is unreadable/);

    r = await runCli(['check', '-c', join(tempDir(), 'missing.yaml')]);
    expect(r.code).toBe(3);
    expect(pluginLine(r.stdout).text).toMatch(/config file not found/);

    r = await runCli(['check', '-c', env.config, '--warn-age', 'soon']);
    expect(r.code).toBe(3);
    expect(pluginLine(r.stdout).text).toContain('--warn-age "soon" is not a duration');

    r = await runCli(['check', '-c', env.config, '--no-such-flag']);
    expect(r.code).toBe(3);
    expect(pluginLine(r.stdout).text).toContain('unknown option');

    r = await runCli(['check', '--json', '-c', join(tempDir(), 'missing.yaml')]);
    expect(r.code).toBe(3);
    expect(jsonOf(r)).toMatchObject({ status: 'UNKNOWN', exitCode: 3 });
  });
});

describe('rdb-archiver status', () => {
  it('reports the last run and snapshot, the source, events and bytes per rule (hard links once per folder), free space', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 5 }, { name: 'daily', every: 'day', count: 5 }] });
    const first = writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-07-01T10:00:00Z'), size: 10_000 });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const second = writeSnapshot(env.source, { seed: 'b', mtime: new Date('2025-07-01T11:00:00Z'), size: 20_000 });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    writeSnapshot(env.source, { seed: 'c', mtime: new Date('2025-07-01T12:00:00Z'), size: 30_000 });

    const r = await runCli(['status', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    const s = jsonOf<Record<string, any>>(r);
    expect(s.lastRun).toMatchObject({ result: 'archived', exitCode: 0, error: null });
    expect(s.lastSnapshot).toMatchObject({ ts: '2025-07-01T11-00-00', time: '2025-07-01T11:00:00Z', bytes: second.length, sha256: second.sha256 });
    expect(s.lastSnapshot.ageSeconds).toBeGreaterThan(0);
    expect(s.source).toMatchObject({ exists: true, mtime: '2025-07-01T12:00:00.000Z', ts: '2025-07-01T12-00-00', unarchived: true, rejected: null });
    expect(s.rules.hourly).toMatchObject({ events: 2, newest: '2025-07-01T11-00-00', oldest: '2025-07-01T10-00-00', incomplete: 0 });
    expect(s.rules.daily).toMatchObject({ events: 1, newest: '2025-07-01T11-00-00' }); // newest per day
    expect(s.rules.hourly.bytes).toBeGreaterThan(first.length + second.length);
    expect(s.rules.hourly.bytes).toBeLessThan(first.length + second.length + 2500); // + two small .sha256 sidecars and archive records
    // The archive total counts the snapshot hard-linked into both folders once.
    expect(s.archive.bytes).toBe(s.rules.hourly.bytes);
    expect(s.archive.freeBytes).toBeGreaterThan(0);
    expect(s.exitCode).toBe(0);

    const text = await runCli(['status', '-c', env.config]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('last snapshot:  2025-07-01T11-00-00');
    expect(text.stdout).toContain('changed, not archived yet');
    expect(text.stdout).toMatch(/hourly\s+2 events/);
  });
});
