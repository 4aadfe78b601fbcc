/**
 * Scheduled verification (issue 13 item 2) through the real CLI: `once`
 * re-reads archived events when `verify.every` is due; a flipped byte in the
 * newest event is found within one cycle and `check` turns CRITICAL; an older
 * bad event is a WARNING; the metrics say the same; a bad file hard-linked
 * into two rule folders is one bad event.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { parseExposition, sampleValue } from '../helpers/prom.js';
import { readJson, setupArchive, writeSnapshot } from '../helpers/snapshots.js';
import { sleep } from '../helpers/redis.js';
import type { VerifyRecord } from '../../src/pipeline/scheduled-verify.js';

interface OnceJson { status: string; warnings: string[]; verify?: VerifyRecord; exitCode: number }
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

    // A newer good event is archived: the bad one is older now, a WARNING (sample: all re-reads both).
    env.writeConfig({ extra: `verify:\n  every: 1s\n  sample: all\nmetrics:\n  textfile: ${metrics}` });
    writeSnapshot(env.source, { seed: 'two', mtime: new Date(now - 30_000), size: 20_000 });
    await sleep(1_100);
    const third = await runCli(['once', '--json', '-c', env.config]);
    expect(jsonOf<OnceJson>(third)).toMatchObject({ status: 'archived', verify: { eventsChecked: 2, bad: [{ ts: archived.ts }] } });
    const warning = await runCli(['check', '--json', '-c', env.config]);
    expect(warning.code, warning.stdout).toBe(1);
    expect(jsonOf<CheckJson>(warning).instances[0]!.problems.map((p) => p.text).join('\n')).toContain(`an older event ${archived.ts} failed verification`);
    const after = parseExposition(readFileSync(metrics, 'utf8'));
    expect(sampleValue(after, 'rdb_archiver_verify_newest_bad', labels)).toBe(0);
    expect(sampleValue(after, 'rdb_archiver_verify_bad_events', labels)).toBe(1);

    // Not due again within verify.every: a run right away reads nothing.
    env.writeConfig({ extra: `verify:\n  every: 1h\n  sample: all\nmetrics:\n  textfile: ${metrics}` });
    const quiet = await runCli(['once', '--json', '-c', env.config]);
    expect(jsonOf<OnceJson>(quiet).verify).toBeUndefined();
  });

  it('rejects a bad verify key with the key path (exit 2)', async () => {
    const env = setupArchive();
    env.writeConfig({ extra: 'verify:\n  every: 1d\n  sample: some' });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('verify.sample: must be newest, all, or a number N >= 1');
  });
});
