/**
 * Round-trips through a real redis-server: what Redis saves, `once` archives,
 * `restore` gives back, and a fresh redis-server loads to the same dataset.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { bgsaveAndWait, describeWithRedis, freePort, registerRedisCleanup, sleep, startRedis, waitFor, type RedisServer, type Reply } from '../helpers/redis.js';
import { listTree, setupArchive } from '../helpers/snapshots.js';

registerRedisCleanup();

interface OnceJson {
  status: string;
  snapshot: { ts: string; bytes: number; sha256: string; rules: string[]; nodes: boolean } | null;
  error?: { kind: string; message: string };
}
interface ListJson {
  [rule: string]: Array<{ ts: string; bytes: number; nodes: boolean; redisVersion: string | null; ctime: string | null }>;
}
interface VerifyJson {
  ok: boolean;
  events: Record<string, Array<{ ts: string; ok: boolean; problems: string[] }>>;
  bad: Array<{ rule: string; ts: string; problems: string[] }>;
}
interface RestoreJson {
  status: string;
  ts: string;
  to: string;
  bytes: number;
  sha256: string;
  nodes: { from: string; to: string | null } | null;
  warnings: string[];
  steps: string[];
}

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/** Strings, hashes, lists, sets, sorted sets and streams in small and large encodings; some keys with TTLs; a second db. */
async function loadKnownData(server: RedisServer): Promise<void> {
  const cmds: Array<Array<string | number>> = [];
  for (let i = 0; i < 200; i++) cmds.push(['SET', `str:${i}`, `value-${i}-${'v'.repeat(i % 40)}`]);
  cmds.push(['SET', 'str:int', 1234567], ['SET', 'str:neg', -42], ['SET', 'str:big', 'compressible '.repeat(4000)]);
  cmds.push(['HSET', 'hash:small', 'name', 'ada', 'lang', 'en', 'n', 3]);
  const bigHash: Array<string | number> = ['HSET', 'hash:big'];
  for (let i = 0; i < 1000; i++) bigHash.push(`field-${i}`, `value-${i}`);
  cmds.push(bigHash);
  cmds.push(['RPUSH', 'list:small', 'a', 'b', 'c', 7]);
  const bigList: Array<string | number> = ['RPUSH', 'list:big'];
  for (let i = 0; i < 5000; i++) bigList.push(`item-${i}`);
  cmds.push(bigList);
  cmds.push(['SADD', 'set:int', 1, 2, 3, 1000, -5], ['SADD', 'set:small', 'x', 'y', 'z']);
  const bigSet: Array<string | number> = ['SADD', 'set:big'];
  for (let i = 0; i < 1000; i++) bigSet.push(`member-${i}`);
  cmds.push(bigSet);
  cmds.push(['ZADD', 'zset:small', 1, 'one', 2.5, 'two-and-a-half', -3, 'minus-three']);
  const bigZset: Array<string | number> = ['ZADD', 'zset:big'];
  for (let i = 0; i < 1000; i++) bigZset.push(i * 0.5, `m-${i}`);
  cmds.push(bigZset);
  for (let i = 0; i < 100; i++) cmds.push(['XADD', 'stream:events', '*', 'n', i, 'kind', i % 2 ? 'odd' : 'even']);
  cmds.push(['XGROUP', 'CREATE', 'stream:events', 'workers', '0']);
  cmds.push(['XREADGROUP', 'GROUP', 'workers', 'alice', 'COUNT', 10, 'STREAMS', 'stream:events', '>']);
  cmds.push(['XACK', 'stream:events', 'workers', '0-1']);
  // TTLs far enough out that nothing expires during the test.
  cmds.push(['SET', 'ttl:str', 'soon', 'EX', 3600], ['PEXPIRE', 'hash:small', 7_200_000]);
  cmds.push(['RPUSH', 'ttl:list', 1, 2, 3], ['EXPIRE', 'ttl:list', 5000]);
  cmds.push(['SELECT', 1], ['SET', 'db1:key', 'in db 1'], ['HSET', 'db1:hash', 'a', 1], ['SELECT', 0]);
  await server.client.pipeline(cmds);
}

async function dbsizes(server: RedisServer): Promise<Reply[]> {
  const [, db0, , db1] = await server.client.pipeline([['SELECT', 0], ['DBSIZE'], ['SELECT', 1], ['DBSIZE'], ['SELECT', 0]]);
  return [db0!, db1!];
}

describeWithRedis('against a real redis-server', () => {
  it('standalone round-trip: BGSAVE -> once -> restore latest -> a fresh redis-server has the same DBSIZE and DEBUG DIGEST', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 48 }, { name: 'last', count: 5 }] });
    const source = await startRedis(join(env.root, 'data'));
    await loadKnownData(source);
    const digest = await source.call('DEBUG', 'DIGEST');
    const sizes = await dbsizes(source);
    expect(sizes[0]).toBeGreaterThan(200);
    expect(sizes[1]).toBe(2);
    await bgsaveAndWait(source);
    const version = (await source.info('server')).redis_version;

    const once = await runCli(['once', '--json', '-c', env.config]);
    expect(once.code, once.stderr).toBe(0);
    const archived = jsonOf<OnceJson>(once);
    expect(archived.status).toBe('archived');
    expect(archived.snapshot!.sha256).toBe(sha256(readFileSync(env.source)));

    // list reads version and ctime from the real header.
    const list = await runCli(['list', '--json', '-c', env.config]);
    expect(list.code, list.stderr).toBe(0);
    const listed = jsonOf<ListJson>(list);
    expect(listed.hourly).toEqual([{ ts: archived.snapshot!.ts, seq: 1, bytes: statSync(env.source).size, nodes: false, redisVersion: version, ctime: expect.any(String), origin: 'config', copy: expect.stringMatching(/^(reflink|direct|copy_file_range|read-write)$/), shared: expect.any(Boolean) }]);
    expect(Math.abs(Date.parse(listed.hourly![0]!.ctime!) - Date.now())).toBeLessThan(120_000);

    const restoreDir = join(env.root, 'restored');
    mkdirSync(restoreDir);
    const restore = await runCli(['restore', 'latest', '--to', join(restoreDir, 'dump.rdb'), '--json', '-c', env.config]);
    expect(restore.code, restore.stderr).toBe(0);
    const restored = jsonOf<RestoreJson>(restore);
    expect(restored).toMatchObject({ status: 'restored', ts: archived.snapshot!.ts, sha256: archived.snapshot!.sha256 });
    expect(statSync(join(restoreDir, 'dump.rdb')).mode & 0o777).toBe(0o600);

    const copy = await startRedis(restoreDir);
    expect(await copy.info('persistence').then((i) => i.loading)).toBe('0');
    expect(await dbsizes(copy)).toEqual(sizes);
    expect(await copy.call('DEBUG', 'DIGEST')).toBe(digest);
    expect(digest).not.toBe('0'.repeat(40)); // an empty dataset would also "match"
    // Spot checks of types and TTLs.
    expect(await copy.call('GET', 'str:big')).toBe('compressible '.repeat(4000));
    expect(await copy.call('HGET', 'hash:big', 'field-999')).toBe('value-999');
    expect(await copy.call('ZSCORE', 'zset:small', 'two-and-a-half')).toBe('2.5');
    expect(await copy.call('XLEN', 'stream:events')).toBe(100);
    const ttl = Number(await copy.call('TTL', 'ttl:str'));
    expect(ttl).toBeGreaterThan(3000);
    expect(Number(await copy.call('PTTL', 'hash:small'))).toBeGreaterThan(7_000_000);
  });

  it('concurrent writes: saves repeat while once runs; every archived event verifies and is exactly one of the saves', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 100 }, { name: 'hourly', every: 'hour', count: 48 }] });
    const source = await startRedis(join(env.root, 'data'));
    // About 3 MB, so a save takes a moment.
    const fill: Array<Array<string | number>> = [];
    for (let i = 0; i < 20_000; i++) fill.push(['SET', `k:${i}`, `${i}:${'p'.repeat(120)}`]);
    await source.client.pipeline(fill);
    await bgsaveAndWait(source);

    // Keep a hard link to every dump.rdb Redis produces: the set of files a correct archive may contain.
    const saves = join(env.root, 'saves');
    mkdirSync(saves);
    let saveCount = 0;
    linkSync(env.source, join(saves, `save-${saveCount++}.rdb`));
    let stop = false;
    const saver = (async () => {
      while (!stop) {
        const writes: Array<Array<string | number>> = [['INCR', 'generation']];
        for (let i = 0; i < 200; i++) writes.push(['SET', `k:${Math.floor(Math.random() * 20_000)}`, `${saveCount}:${'q'.repeat(100)}`]);
        await source.client.pipeline(writes);
        await bgsaveAndWait(source);
        linkSync(env.source, join(saves, `save-${saveCount++}.rdb`));
        await sleep(Math.random() * 120);
      }
    })();

    const codes: number[] = [];
    try {
      // At least 8 runs, and on until Redis has saved more than 8 times during them (a fast
      // machine finishes 8 runs before that): the number of saves must not depend on speed.
      for (let i = 0; i < 40 && (i < 8 || saveCount <= 8); i++) {
        const r = await runCli(['once', '--json', '-c', env.config]);
        expect([0, 73, 75], r.stdout + r.stderr).toContain(r.code);
        codes.push(r.code!);
      }
    } finally {
      stop = true;
      await saver;
    }
    expect(codes.filter((c) => c === 0).length).toBeGreaterThanOrEqual(2);
    expect(saveCount).toBeGreaterThan(8);

    const verify = await runCli(['verify', '--json', '-c', env.config]);
    expect(verify.code, verify.stdout).toBe(0);
    const verified = jsonOf<VerifyJson>(verify);
    expect(verified.bad).toEqual([]);
    expect(verified.events.all!.length).toBeGreaterThanOrEqual(2);
    expect(verified.events.all!.every((e) => e.ok)).toBe(true);

    const known = new Set(readdirSync(saves).map((f) => sha256(readFileSync(join(saves, f)))));
    const archived = readdirSync(join(env.archive, 'all')).filter((f) => f.endsWith('.rdb'));
    expect(archived.length).toBe(verified.events.all!.length);
    for (const name of archived) {
      expect(known.has(sha256(readFileSync(join(env.archive, 'all', name)))), `${name} is byte-identical to one save`).toBe(true);
    }
  });

  it('cluster mode: the archived RDB + nodes.conf restore to a node that owns all slots with its keys', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }], nodes: true });
    const clusterArgs = async () => ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(await freePort())];
    const node = await startRedis(join(env.root, 'data'), { args: await clusterArgs() });
    await node.call('CLUSTER', 'ADDSLOTSRANGE', 0, 16383);
    await waitFor('cluster_state:ok', async () => String(await node.call('CLUSTER', 'INFO')).includes('cluster_state:ok'));
    const myid = String(await node.call('CLUSTER', 'MYID'));
    const keys: Array<Array<string | number>> = [['SET', '{user:1}:name', 'alice'], ['HSET', '{user:1}:profile', 'lang', 'en'], ['SET', '{user:2}:name', 'bob']];
    for (let i = 0; i < 50; i++) keys.push(['RPUSH', '{orders}:queue', `order-${i}`], ['SET', `{k${i}}:v`, i]);
    await node.client.pipeline(keys);
    const size = await node.call('DBSIZE');
    await node.call('SAVE');
    await waitFor('nodes.conf with the slots', async () => existsSync(env.nodes!) && /0-16383/.test(readFileSync(env.nodes!, 'utf8')) && /^vars /m.test(readFileSync(env.nodes!, 'utf8')));

    const once = await runCli(['once', '--json', '-c', env.config]);
    expect(once.code, once.stderr).toBe(0);
    expect(jsonOf<OnceJson>(once).snapshot!.nodes).toBe(true);

    const restoreDir = join(env.root, 'restored');
    mkdirSync(restoreDir);
    const restore = await runCli(['restore', 'latest', '--to', restoreDir, '--nodes-to', join(restoreDir, 'nodes.conf'), '--json', '-c', env.config]);
    expect(restore.code, restore.stderr).toBe(0);
    const restored = jsonOf<RestoreJson>(restore);
    expect(restored.to).toBe(join(restoreDir, 'dump.rdb'));
    expect(restored.nodes!.to).toBe(join(restoreDir, 'nodes.conf'));
    expect(statSync(join(restoreDir, 'nodes.conf')).mode & 0o777).toBe(0o600);
    expect(restored.steps.join('\n')).toContain('cluster-config-file');

    const copy = await startRedis(restoreDir, { args: await clusterArgs() });
    await waitFor('restored node: cluster_state:ok', async () => String(await copy.call('CLUSTER', 'INFO')).includes('cluster_state:ok'), 15_000, 100);
    expect(await copy.call('CLUSTER', 'MYID')).toBe(myid);
    const slots = (await copy.call('CLUSTER', 'SLOTS')) as Reply[][];
    expect(slots.length).toBe(1);
    expect(slots[0]!.slice(0, 2)).toEqual([0, 16383]);
    expect((slots[0]![2] as Reply[])[2]).toBe(myid);
    expect(String(await copy.call('CLUSTER', 'INFO'))).toContain('cluster_slots_assigned:16384');
    expect(await copy.call('DBSIZE')).toBe(size);
    expect(await copy.call('GET', '{user:1}:name')).toBe('alice');
    expect(await copy.call('LLEN', '{orders}:queue')).toBe(50);
  });

  it('a corrupt copy of a real dump (bytes flipped) is rejected with exit 65; previous events stay intact', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 10 }, { name: 'daily', every: 'day', count: 7 }] });
    const source = await startRedis(join(env.root, 'data'));
    await loadKnownData(source);
    await source.call('SAVE');
    await source.stop();
    const good = readFileSync(env.source);
    const t0 = new Date('2025-03-01T10:00:00Z');
    utimesSync(env.source, t0, t0);
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const before = listTree(env.archive).filter((f) => !f.startsWith('.rdb-archiver'));

    const corrupt = Buffer.from(good);
    for (const at of [Math.floor(corrupt.length / 3), Math.floor(corrupt.length / 2), corrupt.length - 100]) corrupt[at]! ^= 0x5a;
    writeFileSync(env.source, corrupt);
    const t1 = new Date('2025-03-01T11:00:00Z');
    utimesSync(env.source, t1, t1);
    if (existsSync('/usr/bin/redis-check-rdb')) {
      expect(spawnSync('/usr/bin/redis-check-rdb', [env.source]).status, 'redis-check-rdb agrees it is corrupt').not.toBe(0);
    }

    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(65);
    expect(jsonOf<OnceJson>(r).error!.message).toMatch(/CRC mismatch: stored [0-9a-f]{16}, computed [0-9a-f]{16}/);
    expect(listTree(env.archive).filter((f) => !f.startsWith('.rdb-archiver'))).toEqual(before);

    const verify = await runCli(['verify', '--json', '-c', env.config]);
    expect(verify.code, verify.stdout).toBe(0);
    expect(jsonOf<VerifyJson>(verify).events.all!.map((e) => e.ts)).toEqual(['2025-03-01T10-00-00']);
  });
});
