/**
 * The two forms of the replication payload, end to end with real
 * redis-servers: the disk-based `$<len>` bulk (repl-diskless-sync no) and the
 * diskless `$EOF:<mark>` form, each pulled, archived and restored through the
 * CLI into a fresh server with the same DEBUG DIGEST; the old SYNC when an ACL
 * user may not PSYNC; and a server that closes the connection in the middle
 * of a `$<len>` body (exit 68, no file under a final name, no temp left).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { archivedFiles, archivedState, finalRdbs, restoreAndDigest, writeRedisConfig } from '../helpers/redis-archive.js';
import { describeWithRedis, registerRedisCleanup, startRedis, waitFor, type RedisServer } from '../helpers/redis.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

registerRedisCleanup();

const DISKLESS = ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0'];
const DISK = ['--repl-diskless-sync', 'no'];

interface OnceJson {
  status: string;
  snapshot: { ts: string; bytes: number; sha256: string } | null;
  error?: { kind: string; message: string; exitCode: number };
}

async function fullSyncs(server: RedisServer): Promise<number> {
  return Number((await server.info('stats')).sync_full);
}

/** INFO commandstats: calls and rejected calls of one command. */
async function commandStats(server: RedisServer, name: string): Promise<{ calls: number; rejected: number }> {
  const line = (await server.info('commandstats'))[`cmdstat_${name}`] ?? '';
  return { calls: Number(/calls=(\d+)/.exec(line)?.[1] ?? 0), rejected: Number(/rejected_calls=(\d+)/.exec(line)?.[1] ?? 0) };
}

async function populated(dir: string, args: string[], keys = 20000): Promise<{ server: RedisServer; digest: string }> {
  const server = await startRedis(dir, { args });
  await server.call('DEBUG', 'POPULATE', keys, 'key', 64);
  await server.call('SELECT', 5);
  await server.call('RPUSH', 'list', 'a', 'b', 'c');
  await server.call('SET', 'ttl', 'x', 'EX', 3600);
  await server.call('SELECT', 0);
  return { server, digest: String(await server.call('DEBUG', 'DIGEST')) };
}

describeWithRedis('replication payload forms', () => {
  for (const form of [
    { name: '$<len> (disk-based: repl-diskless-sync no)', args: DISK, transfer: 'disk' },
    { name: '$EOF:<mark> (diskless)', args: DISKLESS, transfer: 'diskless' },
  ]) {
    it(`${form.name}: pull -> archive -> restore into a fresh server gives the same DEBUG DIGEST; an unchanged server is not pulled again`, async () => {
      const dir = tempDir();
      const { server, digest } = await populated(join(dir), form.args);
      const config = writeRedisConfig(dir, `url: redis://127.0.0.1:${server.port}`);

      const first = await runCli(['once', '--config', config, '--json']);
      expect(first.code, first.stderr).toBe(0);
      expect(jsonOf<OnceJson>(first).status).toBe('archived');
      expect(archivedState(dir).server).toMatchObject({ transfer: form.transfer });
      expect((await restoreAndDigest(config)).digest).toBe(digest);

      // Unchanged: the second run does not ask for another snapshot. For the disk form this
      // needs the identity after the server's save (the pull moved rdb_last_save_time).
      const syncs = await fullSyncs(server);
      const second = await runCli(['once', '--config', config, '--json']);
      expect(second.code, second.stderr).toBe(0);
      expect(jsonOf<OnceJson>(second).status).toBe('unchanged');
      expect(await fullSyncs(server)).toBe(syncs);

      // A write is pulled, and the restore has it.
      await server.call('SET', 'after-the-first-pull', 'v');
      const third = await runCli(['once', '--config', config, '--json']);
      expect(third.code, third.stderr).toBe(0);
      expect(jsonOf<OnceJson>(third).status).toBe('archived');
      expect((await restoreAndDigest(config)).digest).toBe(String(await server.call('DEBUG', 'DIGEST')));
    });
  }

  it('an ACL user with +sync but not +psync: PSYNC is refused (NOPERM), the old SYNC brings the same snapshot', async () => {
    const dir = tempDir();
    for (const args of [DISKLESS, DISK]) {
      const sub = join(dir, args === DISK ? 'disk' : 'diskless');
      const { server, digest } = await populated(tempDir(), args, 5000);
      const password = 'sync-only-backup-pass';
      await server.call('ACL', 'SETUSER', 'synconly', 'on', `>${password}`, 'resetkeys', '-@all', '+ping', '+info', '+time', '+replconf', '+sync');
      const passFile = join(tempDir(), 'pass');
      writeFileSync(passFile, `${password}\n`, { mode: 0o600 });
      mkdirSync(sub);
      const config = writeRedisConfig(sub, `url: redis://synconly@127.0.0.1:${server.port}\npassword_file: ${passFile}`);

      const r = await runCli(['once', '--config', config, '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(await commandStats(server, 'psync')).toMatchObject({ calls: 0, rejected: 1 });
      expect((await commandStats(server, 'sync')).calls).toBe(1);
      // SYNC has no +FULLRESYNC line: no replication ID; the offset is INFO's master_repl_offset.
      const facts = archivedState(sub).server;
      expect(facts).toMatchObject({ replId: null, transfer: args === DISK ? 'disk' : 'diskless' });
      expect(typeof facts.replOffset).toBe('number');
      expect((await restoreAndDigest(config)).digest).toBe(digest);
      expect(r.stdout + r.stderr).not.toContain(password);
    }
  });

  it('the server closes the connection in the middle of a $<len> body: exit 68, the message counts the bytes, nothing under a final name, no temp left', async () => {
    const dir = tempDir();
    // ~40 MB of RDB: far more than the socket buffers between the server and the paused proxy.
    const { server } = await populated(join(dir), DISK, 300_000);
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: server.port }, { pauseAfter: 2 * 1024 * 1024 });
    try {
      const config = writeRedisConfig(dir, `url: redis://127.0.0.1:${proxy.port}`);
      const run = runCli(['once', '--config', config, '--json'], { timeoutMs: 120_000 });
      await waitFor('the body to be half sent', async () => proxy.paused(), 60_000);
      // The server is provably mid-body: its replica is in send_bulk, the proxy holds the rest back.
      const replication = await server.info('replication');
      expect(replication.slave0 ?? '', JSON.stringify(replication)).toMatch(/state=send_bulk/);
      await server.call('CLIENT', 'KILL', 'TYPE', 'replica');
      proxy.resume();
      const r = await run;
      expect(r.code, r.stdout + r.stderr).toBe(68);
      const error = jsonOf<OnceJson>(r).error!;
      expect(error.message).toMatch(/before the whole snapshot arrived \(\d+ of \d+ bytes\); nothing archived/);
      expect(archivedFiles(dir)).toEqual([]);
      expect(finalRdbs(dir)).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});
