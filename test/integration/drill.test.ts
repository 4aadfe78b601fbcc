/**
 * Restore drills (issue 13 item 3) against a real redis-server: the drill of
 * an archived event reports the same DBSIZE and DEBUG DIGEST as the source
 * server; a scheduled drill runs from `once`; the throwaway server's folder
 * is always removed; an RDB version the local server cannot read is reported
 * as exactly that (exit 80), an event it cannot load as a failed load (65,
 * check CRITICAL).
 */
import { readdirSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { writeEvent } from '../helpers/events.js';
import { buildRdb } from '../helpers/rdb-builder.js';
import { bgsaveAndWait, describeWithRedis, registerRedisCleanup, startRedis, type RedisServer } from '../helpers/redis.js';
import { parseExposition, sampleValue } from '../helpers/prom.js';
import { setupArchive } from '../helpers/snapshots.js';
import type { DrillRecord } from '../../src/ops/drill.js';

registerRedisCleanup();

type DrillJson = DrillRecord & { exitCode: number; warnings: string[] };

/** Every type in both encodings, expiries, a stream with a consumer group, and three databases. */
async function loadData(server: RedisServer): Promise<void> {
  const cmds: Array<Array<string | number>> = [];
  for (let i = 0; i < 100; i++) cmds.push(['SET', `str:${i}`, `v-${i}`]);
  cmds.push(['SET', 'str:int', 42], ['SET', 'str:big', 'abc'.repeat(5000)], ['SET', 'ttl', 'x', 'EX', 3600]);
  const bigHash: Array<string | number> = ['HSET', 'hash:big'];
  for (let i = 0; i < 600; i++) bigHash.push(`f${i}`, `v${i}`);
  cmds.push(['HSET', 'hash:small', 'a', 1], bigHash);
  const bigZ: Array<string | number> = ['ZADD', 'zset:big'];
  for (let i = 0; i < 300; i++) bigZ.push(i, `m${i}`);
  cmds.push(['ZADD', 'zset:small', 1, 'one'], bigZ, ['SADD', 'set:int', 1, 2, 3], ['SADD', 'set:str', 'a', 'b'], ['RPUSH', 'list', 1, 2, 3]);
  for (let i = 0; i < 20; i++) cmds.push(['XADD', 'stream', '*', 'n', i]);
  cmds.push(['XGROUP', 'CREATE', 'stream', 'g', '0'], ['XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', 5, 'STREAMS', 'stream', '>']);
  cmds.push(['SELECT', 1], ['SET', 'one', '1'], ['SELECT', 2], ['HSET', 'two', 'a', 'b'], ['SELECT', 0]);
  await server.client.pipeline(cmds);
}

describeWithRedis('restore drills', () => {
  it('a drill of a real event reports the source server\'s DBSIZE and DEBUG DIGEST; a scheduled drill runs from once; nothing is left behind', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    const source = await startRedis(join(env.root, 'data'));
    await loadData(source);
    const digest = await source.call('DEBUG', 'DIGEST');
    const dbsize = await source.call('DBSIZE');
    await bgsaveAndWait(source);
    const drillDir = join(env.root, 'drills');
    mkdirSync(drillDir);
    const metrics = join(env.root, 'metrics.prom');
    env.writeConfig({ extra: `drill:\n  every: 1w\n  dir: ${drillDir}\nmetrics:\n  textfile: ${metrics}\nmonitor:\n  warn_age: 1000d\n  crit_age: 1000d` });

    // The scheduled drill: the first once archives the event, then drills it (never drilled is due).
    const once = await runCli(['once', '--json', '-c', env.config], { timeoutMs: 120_000 });
    expect(once.code, once.stderr).toBe(0);
    const scheduled = jsonOf<{ drill: DrillRecord }>(once).drill;
    expect(scheduled).toMatchObject({ status: 'loaded', dbsize, digest });
    expect(readdirSync(drillDir)).toEqual([]);

    const r = await runCli(['drill', 'latest', '--json', '-c', env.config], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    const out = jsonOf<DrillJson>(r);
    expect(out).toMatchObject({ status: 'loaded', rule: 'all', dbsize, digest, keys: (dbsize as number) + 2, exitCode: 0 });
    expect(Object.keys(out.keyspace!).sort()).toEqual(['db0', 'db1', 'db2']);
    expect(out.keyspace!.db0).toMatch(/expires=1/);
    expect(out.loadSeconds).toBeGreaterThanOrEqual(0);
    expect(out.server!.version).toMatch(/^\d+\.\d+/);
    expect(readdirSync(drillDir)).toEqual([]); // the server stopped and its folder removed

    const human = await runCli(['drill', '-c', env.config], { timeoutMs: 120_000 });
    expect(human.stdout).toContain(`DBSIZE ${dbsize}`);
    expect(human.stdout).toContain(`digest ${digest}`);

    // On a rescue host: --archive alone.
    const rescue = await runCli(['drill', '--archive', env.archive, '--json'], { timeoutMs: 120_000 });
    expect(rescue.code, rescue.stderr).toBe(0);
    expect(jsonOf<DrillJson>(rescue)).toMatchObject({ status: 'loaded', digest });

    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(0);
    const families = parseExposition(readFileSync(metrics, 'utf8'));
    const labels = { redis_instance: 'default' };
    expect(sampleValue(families, 'rdb_archiver_drill_success', labels)).toBe(1);
    expect(sampleValue(families, 'rdb_archiver_drill_keys', labels)).toBe((dbsize as number) + 2);
    expect(sampleValue(families, 'rdb_archiver_drill_last_run_timestamp_seconds', labels)).toBeGreaterThan(0);
  });

  it('an RDB version newer than the local server reads is reported as exactly that (exit 80, check WARNING); an event it cannot load is a failed load (65, check CRITICAL)', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    env.writeConfig({ extra: 'monitor:\n  warn_age: 1000d\n  crit_age: 1000d' });
    // RDB version 99: no released server reads it. A valid file otherwise (header, AUX, EOF, CRC).
    writeEvent(env.archive, ['all'], '2025-01-01T00-00-00', { rdb: Buffer.from(buildRdb({ version: 99 })) });
    const future = await runCli(['drill', '--json', '-c', env.config], { timeoutMs: 120_000 });
    expect(future.code, future.stdout + future.stderr).toBe(80);
    const f = jsonOf<DrillJson>(future);
    expect(f.status).toBe('version-unsupported');
    expect(f.error).toContain('RDB format version 99 is newer than');
    expect(f.error).toContain('not corruption');
    const warned = await runCli(['check', '--json', '-c', env.config]);
    const problems = jsonOf<{ instances: Array<{ problems: Array<{ state: number; text: string }> }> }>(warned).instances[0]!.problems;
    expect(problems.find((p) => p.text.includes('restore drill'))).toMatchObject({ state: 1 });
    expect(problems.find((p) => p.text.includes('restore drill'))!.text).toContain('RDB format version 99');

    // A structure our CRC-only validation accepts but the server refuses (validation: crc).
    env.writeConfig({ extra: 'validation: crc\nmonitor:\n  warn_age: 1000d\n  crit_age: 1000d' });
    const body = Buffer.from([0xfe, 0x00, 0x22, 0x01, 0x41, 0x01, 0x42]); // SELECTDB 0, then object type 0x22 (34): no such type
    writeEvent(env.archive, ['all'], '2025-01-02T00-00-00', { rdb: Buffer.from(buildRdb({ version: 9, body })) });
    const bad = await runCli(['drill', '2025-01-02T00-00-00', '--json', '-c', env.config], { timeoutMs: 120_000 });
    expect(bad.code, bad.stdout + bad.stderr).toBe(65);
    expect(jsonOf<DrillJson>(bad)).toMatchObject({ status: 'load-failed', ts: '2025-01-02T00-00-00' });
    expect(jsonOf<DrillJson>(bad).serverLog!.length).toBeGreaterThan(0);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
    expect(check.stdout).toContain('the restore drill at');
    expect(check.stdout).toContain('could not load event 2025-01-02T00-00-00');

    expect((await runCli(['drill', '2030-01-01T00-00-00', '-c', env.config])).code).toBe(66);
  });
});
