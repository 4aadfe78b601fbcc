/**
 * The off-site round trip with a real redis-server: what Redis saves, `once`
 * archives and uploads; with the local archive gone, `restore --from` brings
 * it back from the S3 server, and a fresh redis-server loads the same data.
 */
import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { bgsaveAndWait, describeWithRedis, registerRedisCleanup, startRedis, type RedisServer } from '../helpers/redis.js';
import { remoteYaml, s3Env, startS3, type S3Server } from '../helpers/s3.js';
import { setupArchive } from '../helpers/snapshots.js';

registerRedisCleanup();

let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3();
});

async function load(server: RedisServer): Promise<void> {
  const cmds: Array<Array<string | number>> = [];
  for (let i = 0; i < 5000; i++) cmds.push(['SET', `k:${i}`, `${i}:${'v'.repeat(i % 200)}`]);
  const hash: Array<string | number> = ['HSET', 'hash:big'];
  for (let i = 0; i < 2000; i++) hash.push(`f${i}`, `v${i}`);
  cmds.push(hash, ['RPUSH', 'list', 'a', 'b', 'c'], ['ZADD', 'zset', 1, 'one', 2.5, 'two'], ['SET', 'ttl', 'x', 'EX', 3600]);
  cmds.push(['SELECT', 1], ['SET', 'db1', 'one'], ['SELECT', 0]);
  await server.client.pipeline(cmds);
}

describeWithRedis('off-site round trip with a real redis-server', () => {
  it('BGSAVE -> once uploads -> the local archive is lost -> restore --from -> a fresh redis-server has the same DBSIZE and DEBUG DIGEST', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 48 }] });
    env.writeConfig({ extra: remoteYaml({ endpoint: s3.endpoint, prefix: `redis-${process.pid}/` }) });
    const source = await startRedis(join(env.root, 'data'));
    await load(source);
    const digest = await source.call('DEBUG', 'DIGEST');
    const size = await source.call('DBSIZE');
    expect(digest).not.toBe('0'.repeat(40));
    await bgsaveAndWait(source);

    const once = await runCli(['once', '--json', '-c', env.config], { env: s3Env() });
    expect(once.code, once.stderr).toBe(0);
    const out = jsonOf<{ status: string; snapshot: { ts: string; sha256: string }; offsite: Array<{ uploaded: string[] }> }>(once);
    expect(out.status).toBe('archived');
    expect(out.offsite[0]!.uploaded).toEqual([out.snapshot.ts]);
    const verify = await runCli(['verify', '--remote', 'offsite', '--read-data', '-c', env.config], { env: s3Env() });
    expect(verify.code, verify.stdout).toBe(0);

    await source.stop();
    rmSync(env.archive, { recursive: true, force: true }); // the host's disk is gone
    const restoreDir = join(env.root, 'restored');
    mkdirSync(restoreDir);
    const restore = await runCli(['restore', 'latest', '--from', 'offsite', '--to', restoreDir, '--json', '-c', env.config], { env: s3Env() });
    expect(restore.code, restore.stdout + restore.stderr).toBe(0);
    expect(jsonOf(restore)).toMatchObject({ status: 'restored', ts: out.snapshot.ts, sha256: out.snapshot.sha256 });
    expect(statSync(join(restoreDir, 'dump.rdb')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(restoreDir, 'dump.rdb')).length).toBeGreaterThan(0);

    const copy = await startRedis(restoreDir);
    expect(await copy.call('DBSIZE')).toBe(size);
    expect(await copy.call('DEBUG', 'DIGEST')).toBe(digest);
    expect(await copy.call('HGET', 'hash:big', 'f1999')).toBe('v1999');
  });
});
