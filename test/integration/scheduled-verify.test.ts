/**
 * Scheduled verification (issue 13 item 2) through the real CLI: `once`
 * re-reads archived events when `verify.every` is due; a flipped byte in the
 * newest event is found within one cycle and `check` turns CRITICAL; an older
 * bad event is a WARNING; the metrics say the same; a bad file hard-linked
 * into two rule folders is one bad event. Exit 81 while a bad event is
 * archived; a manual verify with a config records its findings too, and
 * writes nothing on a rescue host (--archive alone); the daemon logs such a
 * tick as one that found a bad event, not as a failed tick.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, logLines, runCli } from '../helpers/cli.js';
import { parseExposition, sampleValue } from '../helpers/prom.js';
import { readJson, setupArchive, writeSnapshot } from '../helpers/snapshots.js';
import { sleep } from '../helpers/redis.js';
import { msg, startCli, until } from '../helpers/daemon.js';
import type { VerifyRecord } from '../../src/pipeline/scheduled-verify.js';

interface OnceJson { status: string; warnings: string[]; verify?: VerifyRecord; knownBad?: Array<{ ts: string; by: string; fresh: boolean }>; exitCode: number }
interface CheckJson { status: string; exitCode: number; instances: Array<{ problems: Array<{ state: number; text: string }> }> }

/** Flips one bit in the middle of a file, in place (every hard link sees it). */
function flipByte(path: string): void {
  const data = readFileSync(path);
  data[Math.floor(data.length / 2)]! ^= 0x10;
  writeFileSync(path, data);
}

describe('scheduled verification', () => {
  it('finds a flipped byte in the newest event within one cycle: check CRITICAL, metrics, once per inode; an older bad event is a WARNING', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 5 }, { name: 'b', count: 5 }] });
    const metrics = join(env.root, 'metrics.prom');
    env.writeConfig({ extra: `verify:\n  every: 1s\n  sample: newest\nmetrics:\n  textfile: ${metrics}` });
    const now = Date.now();
    writeSnapshot(env.source, { seed: 'one', mtime: new Date(now - 60_000), size: 20_000 });
    const first = await runCli(['once', '--json', '-c', env.config]);
    expect(first.code, first.stderr).toBe(0);
    // The first run verifies the event it just archived: never verified is due.
    expect(jsonOf<OnceJson>(first).verify).toMatchObject({ eventsChecked: 1, bad: [], sample: 'newest' });
    const okCheck = await runCli(['check', '-c', env.config]);
    expect(okCheck.code, okCheck.stdout).toBe(0);

    const { archived } = readJson<{ archived: { ts: string } }>(env.state);
    flipByte(join(env.archive, 'a', `dump-${archived.ts}.rdb`));
    await sleep(1_100); // verify.every is 1s: the next cycle is due

    const second = await runCli(['once', '--json', '-c', env.config]);
    const out = jsonOf<OnceJson>(second);
    expect(out.status).toBe('unchanged');
    // Archiving worked, but the archive holds a bad event: never exit 0 then.
    expect(second.code, second.stderr).toBe(81);
    expect(out.exitCode).toBe(81);
    expect(out.knownBad).toMatchObject([{ ts: archived.ts, by: 'verify', fresh: true }]);
    expect(out.verify!.bad).toHaveLength(1); // one file, hard-linked into a and b
    expect(out.verify!.bad[0]).toMatchObject({ ts: archived.ts, rules: ['a', 'b'] });
    expect(out.verify!.bad[0]!.problems.join(' ')).toMatch(/CRC mismatch|sha256 mismatch|RDB check failed/);
    expect(out.warnings.join('\n')).toContain(`scheduled verification: event ${archived.ts} (a, b) failed verification`);

    const check = await runCli(['check', '--json', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
    const problems = jsonOf<CheckJson>(check).instances[0]!.problems;
    expect(problems.find((p) => p.state === 2)!.text).toContain(`the newest event ${archived.ts} failed verification`);

    const families = parseExposition(readFileSync(metrics, 'utf8'));
    const labels = { redis_instance: 'default' };
    expect(sampleValue(families, 'rdb_archiver_verify_bad_events', labels)).toBe(1);
    expect(sampleValue(families, 'rdb_archiver_verify_newest_bad', labels)).toBe(1);
    expect(sampleValue(families, 'rdb_archiver_verify_events_checked', labels)).toBe(1);
    expect(sampleValue(families, 'rdb_archiver_verify_last_run_timestamp_seconds', labels)).toBeGreaterThan(now / 1000 - 5);
    expect(sampleValue(families, 'rdb_archiver_verify_runs_total', labels)).toBeGreaterThanOrEqual(2);
    expect(sampleValue(families, 'rdb_archiver_last_run_exit_code', labels)).toBe(81);
    expect(sampleValue(families, 'rdb_archiver_runs_total', { ...labels, result: 'bad_event' })).toBe(1);
    expect(sampleValue(families, 'rdb_archiver_runs_total', { ...labels, result: 'failed' })).toBe(0);
    // The run itself worked: the last-success clock moves (it must not page for "no backup").
    expect(readJson<{ lastSuccessAt: string; lastRun: { at: string } }>(env.state)).toMatchObject({ lastSuccessAt: expect.any(String) });
    const st = readJson<{ lastSuccessAt: string; lastRun: { at: string } }>(env.state);
    expect(st.lastSuccessAt).toBe(st.lastRun.at);

    // A newer good event is archived: the bad one is older now, a WARNING (sample: all re-reads both).
    env.writeConfig({ extra: `verify:\n  every: 1s\n  sample: all\nmetrics:\n  textfile: ${metrics}` });
    writeSnapshot(env.source, { seed: 'two', mtime: new Date(now - 30_000), size: 20_000 });
    await sleep(1_100);
    const third = await runCli(['once', '--json', '-c', env.config]);
    expect(jsonOf<OnceJson>(third)).toMatchObject({ status: 'archived', verify: { eventsChecked: 2, bad: [{ ts: archived.ts }] }, exitCode: 81 });
    expect(third.code).toBe(81);
    // check: WARNING (an older event), not CRITICAL: a last run that exited 81 is no failed run.
    const warning = await runCli(['check', '--json', '-c', env.config]);
    expect(warning.code, warning.stdout).toBe(1);
    expect(warning.stdout).not.toContain('last run at');
    expect(jsonOf<CheckJson>(warning).instances[0]!.problems.map((p) => p.text).join('\n')).toContain(`an older event ${archived.ts} failed verification`);
    const after = parseExposition(readFileSync(metrics, 'utf8'));
    expect(sampleValue(after, 'rdb_archiver_verify_newest_bad', labels)).toBe(0);
    expect(sampleValue(after, 'rdb_archiver_verify_bad_events', labels)).toBe(1);

    // sample: newest reads only the new event: the older bad one is not forgotten.
    env.writeConfig({ extra: `verify:\n  every: 1s\n  sample: newest\nmetrics:\n  textfile: ${metrics}` });
    await sleep(1_100);
    const newestOnly = await runCli(['once', '--json', '-c', env.config]);
    const n = jsonOf<OnceJson>(newestOnly);
    expect(n.verify).toMatchObject({ eventsChecked: 1, bad: [{ ts: archived.ts, rules: ['a', 'b'] }] });
    expect(newestOnly.code).toBe(81);
    expect(n.knownBad).toMatchObject([{ ts: archived.ts, fresh: false }]);
    expect(n.warnings.join('\n')).toContain(`known bad since`);

    // Not due again within verify.every: a run right away reads nothing, and still says 81 (the event is still archived).
    env.writeConfig({ extra: `verify:\n  every: 1h\n  sample: all\nmetrics:\n  textfile: ${metrics}` });
    const quiet = await runCli(['once', '--json', '-c', env.config]);
    expect(jsonOf<OnceJson>(quiet).verify).toBeUndefined();
    expect(quiet.code).toBe(81);
    const human = await runCli(['once', '-c', env.config]);
    expect(human.code).toBe(81);
    expect(human.stdout).toContain(`archived event known bad: ${archived.ts} (exit 81`);

    // The bad event leaves the archive (removed by hand): the runs say OK again, check too.
    for (const rule of ['a', 'b']) for (const f of readdirSync(join(env.archive, rule))) if (f.includes(archived.ts)) rmSync(join(env.archive, rule, f));
    const clean = await runCli(['once', '--json', '-c', env.config]);
    expect(clean.code, clean.stdout).toBe(0);
    expect(jsonOf<OnceJson>(clean).knownBad).toBeUndefined();
    expect((await runCli(['check', '-c', env.config])).code).toBe(0);
  });

  it('a manual verify with a config records what it found (once per inode) for check, status and once; with --archive alone it writes nothing', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 5 }, { name: 'b', count: 5 }] });
    env.writeConfig({}); // no verify: schedule: only the person's verify finds it
    writeSnapshot(env.source, { seed: 'one', mtime: new Date(Date.now() - 60_000), size: 20_000 });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const { archived } = readJson<{ archived: { ts: string } }>(env.state);
    const rdb = join(env.archive, 'a', `dump-${archived.ts}.rdb`);
    const good = readFileSync(rdb);
    flipByte(rdb); // a and b share the inode

    // On a rescue host (--archive alone): found, but nothing written (the state file stays byte for byte).
    const stateBefore = readFileSync(env.state);
    const rescue = await runCli(['verify', '--json', '--archive', env.archive]);
    expect(rescue.code, rescue.stderr).toBe(1);
    expect(readFileSync(env.state).equals(stateBefore)).toBe(true);
    expect(jsonOf<{ warnings: string[] }>(rescue).warnings.join('\n')).not.toContain('not recorded');

    // With the config: recorded. One bad file, hard-linked into a and b: one bad event, both folders.
    const manual = await runCli(['verify', '--json', '-c', env.config]);
    expect(manual.code, manual.stderr).toBe(1);
    const v = jsonOf<{ bad: unknown[]; badCopies: Array<{ ts: string; rules: string[] }>; warnings: string[] }>(manual);
    expect(v.bad).toHaveLength(2); // one line per folder in the listing...
    expect(v.badCopies).toEqual([expect.objectContaining({ ts: archived.ts, rules: ['a', 'b'] })]); // ...one bad event
    expect(v.warnings).toEqual([]);
    const text = await runCli(['verify', '-c', env.config, '--log-level', 'silent']);
    const badLines = text.stdout.split('\n').slice(text.stdout.split('\n').indexOf('bad events:') + 1).filter((l) => /^ {2}\S/.test(l));
    expect(badLines).toEqual([`  a, b ${archived.ts}`]);
    const errors = logLines(await runCli(['verify', '-c', env.config, '--log-format', 'json'])).filter((l) => l.msg === 'archived event failed verification');
    expect(errors).toHaveLength(1);

    const state = readJson<{ verify: VerifyRecord }>(env.state);
    expect(state.verify).toMatchObject({ trigger: 'verify', eventsChecked: 1, sample: 'all', bad: [{ ts: archived.ts, rules: ['a', 'b'] }] });
    expect(state.verify.scheduledAt).toBeUndefined();
    const check = await runCli(['check', '--json', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
    expect(jsonOf<CheckJson>(check).instances[0]!.problems.map((p) => p.text).join('\n')).toContain(`the newest event ${archived.ts} failed verification`);
    const once = await runCli(['once', '--json', '-c', env.config]);
    expect(once.code, once.stdout).toBe(81);
    expect(jsonOf<OnceJson>(once).knownBad).toMatchObject([{ ts: archived.ts, by: 'verify', fresh: false }]);

    // status: the last verify, human and --json.
    const status = await runCli(['status', '--json', '-c', env.config]);
    expect(jsonOf<{ verify: { trigger: string; eventsChecked: number; bad: Array<{ ts: string; rules: string[]; newest: boolean }> } }>(status).verify)
      .toMatchObject({ trigger: 'verify', eventsChecked: 1, bad: [{ ts: archived.ts, rules: ['a', 'b'], newest: true }] });
    const statusText = (await runCli(['status', '-c', env.config])).stdout;
    expect(statusText).toMatch(/last verify: +\S+ by rdb-archiver verify: 1 event checked \(\d+ files?, .*\): 1 BAD/);
    expect(statusText).toContain(`BAD ${archived.ts} (the newest event) in a, b`);

    // The file is repaired; a verify of that one event reads it again and clears the finding.
    writeFileSync(rdb, good);
    const again = await runCli(['verify', archived.ts, '--json', '-c', env.config]);
    expect(again.code, again.stdout).toBe(0);
    expect(readJson<{ verify: VerifyRecord }>(env.state).verify).toMatchObject({ trigger: 'verify', scope: `event ${archived.ts}`, bad: [] });
    expect((await runCli(['check', '-c', env.config])).code).toBe(0);
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
  });

  it('the daemon: a tick whose verification finds a bad event is logged as such (exit 81), not as a failed tick; the metrics say 81', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 5 }] });
    const metrics = join(env.root, 'metrics.prom');
    env.writeConfig({ extra: `schedule: "* * * * * *"\nverify:\n  every: 1s\n  sample: newest\nmetrics:\n  textfile: ${metrics}` });
    writeSnapshot(env.source, { seed: 'one', mtime: new Date(Date.now() - 60_000), size: 20_000 });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const { archived } = readJson<{ archived: { ts: string } }>(env.state);
    flipByte(join(env.archive, 'a', `dump-${archived.ts}.rdb`));

    const d = startCli(['daemon', '-c', env.config]);
    try {
      const line = await d.waitForLog(msg('tick done, but an archived event is known bad (exit 81: see check and status)'), 30_000, 'a tick that finds the bad event');
      expect(line).toMatchObject({ exitCode: 81, bad: [archived.ts] });
      await until(() => existsSync(metrics) && sampleValue(parseExposition(readFileSync(metrics, 'utf8')), 'rdb_archiver_last_run_exit_code', { redis_instance: 'default' }) === 81, 20_000, 'the metrics to say 81');
    } finally {
      d.kill('SIGTERM');
      await d.exited;
    }
    expect(d.logs().filter(msg('tick failed for this instance; the daemon keeps running'))).toEqual([]);
    const families = parseExposition(readFileSync(metrics, 'utf8'));
    expect(sampleValue(families, 'rdb_archiver_runs_total', { redis_instance: 'default', result: 'bad_event' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(families, 'rdb_archiver_runs_total', { redis_instance: 'default', result: 'failed' })).toBe(0);
  });

  it('rejects a bad verify key with the key path (exit 2)', async () => {
    const env = setupArchive();
    env.writeConfig({ extra: 'verify:\n  every: 1d\n  sample: some' });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('verify.sample: must be newest, all, or a number N >= 1');
  });
});
