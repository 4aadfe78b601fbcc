/**
 * The facts of the server a snapshot was pulled from (redis_version, run_id,
 * master_repl_offset, its clock) travel with the event: the archive record,
 * `list --json`, the off-site manifest, `list --remote --json`, `restore`
 * (local and --from) and `drill` all say which server wrote the file. A real
 * redis-server and a real S3 protocol server (s3rver); awscli plays an older
 * version of rdb-archiver that wrote a manifest without the facts.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { archivedState, restoreAndDigest, writeRedisConfig } from '../helpers/redis-archive.js';
import { describeWithRedis, registerRedisCleanup, startRedis } from '../helpers/redis.js';
import { remoteYaml, runAws, s3Env, startS3, TEST_BUCKET, type S3Server } from '../helpers/s3.js';

registerRedisCleanup();

let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3();
});

interface Facts { url: string; redisVersion: string; runId: string; replId: string | null; replOffset: number; transfer: string; takenAt: string }
type RemoteList = { events: Array<{ ts: string; redisVersion: string | null; server?: Facts }>; warnings: string[] };

describeWithRedis('server facts of a pulled snapshot', () => {
  it('are in list --json, the manifest, list --remote --json, restore (local and --from) and drill; a manifest without them still lists and restores', { timeout: 240_000 }, async () => {
    const dir = tempDir();
    const server = await startRedis(join(dir), { args: ['--repl-diskless-sync-delay', '0'] });
    await server.call('DEBUG', 'POPULATE', 3000, 'key', 32);
    await server.call('SET', 'offset-mover', 'x'); // a write after the backlog exists moves master_repl_offset
    const digest = String(await server.call('DEBUG', 'DIGEST'));
    const info = await server.info('server');
    const prefix = `facts-${process.pid}/`;
    const config = writeRedisConfig(dir, `url: redis://127.0.0.1:${server.port}`, `${remoteYaml({ endpoint: s3.endpoint, prefix })}\ndrill:\n  dir: ${tempDir()}`);
    const env = s3Env();

    const once = await runCli(['once', '--config', config, '--json'], { env });
    expect(once.code, once.stdout + once.stderr).toBe(0);
    const ts = jsonOf<{ snapshot: { ts: string } }>(once).snapshot.ts;
    const expected = { url: `redis://127.0.0.1:${server.port}`, redisVersion: info.redis_version, runId: info.run_id };
    const recorded = archivedState(dir).server as unknown as Facts;
    expect(recorded).toMatchObject(expected);
    expect(recorded.replOffset).toEqual(expect.any(Number));

    // Local list.
    const local = jsonOf<Record<string, Array<{ ts: string; server?: Facts }>>>(await runCli(['list', '--config', config, '--json']));
    expect(Object.values(local)[0]![0]!.server).toEqual(recorded);

    // The manifest, as another S3 client downloads it.
    const dl = tempDir();
    const manifestName = `manifest-${ts}.seq1.json`;
    const got = runAws(['s3', 'cp', `s3://${TEST_BUCKET}/${prefix}${manifestName}`, join(dl, manifestName)], s3.endpoint);
    expect(got.code, got.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(dl, manifestName), 'utf8')) as { redisVersion: string; server: Facts };
    expect(manifest.server).toEqual(recorded);
    expect(manifest.redisVersion).toBe(info.redis_version); // the RDB's redis-ver: the same server

    // list --remote --json and its text.
    const remote = await runCli(['list', '--remote', 'offsite', '--json', '--config', config], { env });
    expect(remote.code, remote.stderr).toBe(0);
    expect(jsonOf<RemoteList>(remote).events).toEqual([expect.objectContaining({ ts, redisVersion: info.redis_version, server: recorded })]);
    const remoteText = await runCli(['list', '--remote', 'offsite', '--config', config], { env });
    expect(remoteText.stdout).toContain(info.redis_version);

    // restore, local and from the remote: the JSON carries the facts, the text says who wrote the file.
    const writer = `written by server ${info.redis_version} (redis://127.0.0.1:${server.port}, run_id ${info.run_id}, master_repl_offset ${recorded.replOffset}`;
    const restoredLocal = await restoreAndDigest(config, [], env);
    expect(restoredLocal.digest).toBe(digest);
    expect(restoredLocal.report.server).toEqual(recorded);
    expect(restoredLocal.text).toContain(writer);
    const restoredRemote = await restoreAndDigest(config, ['--from', 'offsite'], env);
    expect(restoredRemote.digest).toBe(digest);
    expect(restoredRemote.report.server).toEqual(recorded);
    expect(restoredRemote.text).toContain(writer);

    // drill: which server wrote the event, beside the server that loaded it.
    const drill = await runCli(['drill', '--json', '--config', config], { timeoutMs: 120_000 });
    expect(drill.code, drill.stdout + drill.stderr).toBe(0);
    expect(jsonOf(drill)).toMatchObject({ status: 'loaded', digest, writtenBy: { rdbVersion: expect.any(Number), redisVersion: info.redis_version, server: recorded } });
    expect((await runCli(['drill', '--config', config], { timeoutMs: 120_000 })).stdout).toContain(`(written by server ${info.redis_version})`);

    // A manifest written before the facts were recorded (no "server"): still listed and restored, without them.
    delete (manifest as Partial<typeof manifest>).server;
    writeFileSync(join(dl, manifestName), JSON.stringify(manifest, null, 2));
    const put = runAws(['s3', 'cp', join(dl, manifestName), `s3://${TEST_BUCKET}/${prefix}${manifestName}`], s3.endpoint);
    expect(put.code, put.stderr).toBe(0);
    const old = jsonOf<RemoteList>(await runCli(['list', '--remote', 'offsite', '--json', '--config', config], { env }));
    expect(old.events).toHaveLength(1);
    expect(old.events[0]).toMatchObject({ ts, redisVersion: info.redis_version });
    expect(old.events[0]!.server).toBeUndefined();
    expect(old.warnings).toEqual([]);
    const restoredOld = await restoreAndDigest(config, ['--from', 'offsite'], env);
    expect(restoredOld.digest).toBe(digest);
    expect(restoredOld.report.server).toBeNull();
    expect(restoredOld.text).toContain(`written by server ${info.redis_version} (the RDB's redis-ver field)`);
  });
});
