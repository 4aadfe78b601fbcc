/**
 * source.redis against real redis-servers on loopback: the replication pull
 * (plain, ACL user, TLS), change detection without a pull, BGSAVE mode, and
 * the faults a network source meets (server killed, connection reset,
 * connection closed by the server, wrong password, missing ACL permission,
 * failing BGSAVE): each its documented exit code and no file under a final name.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { jsonOf, runCli, tempDir, type CliResult } from '../helpers/cli.js';
import { describeWithRedis, freePort, registerRedisCleanup, startRedis, waitFor, type RedisServer } from '../helpers/redis.js';
import { archivedFiles, finalRdbs } from '../helpers/redis-archive.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

registerRedisCleanup();

const FAST_SYNC = ['--repl-diskless-sync-delay', '0'];

interface OnceJson {
  status: string;
  snapshot: { ts: string; bytes: number; sha256: string } | null;
  error?: { kind: string; message: string; exitCode: number };
}

function writeConfig(dir: string, redis: string, rdb?: string): string {
  const path = join(dir, 'config.yaml');
  const redisLines = redis.split('\n').filter(Boolean).map((l) => `    ${l}`).join('\n');
  writeFileSync(path, `source:\n${rdb ? `  rdb: ${rdb}\n` : ''}  redis:\n${redisLines}\narchive:\n  dir: ${join(dir, 'archive')}\n  create: true\n`);
  return path;
}

/** Loads an archived RDB into a fresh server and returns DEBUG DIGEST. */
async function digestOfRestore(rdb: string, args: string[] = []): Promise<string> {
  const dir = tempDir('rdb-restore-');
  copyFileSync(rdb, join(dir, 'dump.rdb'));
  const server = await startRedis(dir, { args });
  try {
    return String(await server.call('DEBUG', 'DIGEST'));
  } finally {
    await server.stop();
  }
}

async function fullSyncs(server: RedisServer): Promise<number> {
  return Number((await server.info('stats')).sync_full);
}

/** The child processes of a process (the server's save fork), from /proc. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (text) out.push(...text.split(/\s+/).map(Number));
  }
  return out;
}

/** Starts a CLI run and resolves once the server is streaming a snapshot to it (its fork is running). */
async function startPullAndWait(server: RedisServer, config: string): Promise<{ run: Promise<CliResult> }> {
  const run = runCli(['once', '--config', config, '--json'], { timeoutMs: 60_000 });
  await waitFor('the pull to start', async () => (await server.info('persistence')).rdb_bgsave_in_progress === '1', 20_000);
  return { run }; // (a bare promise would be adopted: the caller would wait for the whole run)
}

describeWithRedis('source.redis mode replicate', () => {
  it('pulls a snapshot, archives it with the server facts, restores to the same digest; an unchanged server is not pulled again', async () => {
    const dir = tempDir();
    const server = await startRedis(join(dir), { args: FAST_SYNC });
    await server.call('DEBUG', 'POPULATE', 5000, 'key', 50);
    await server.call('SELECT', 3);
    await server.call('HSET', 'h', 'a', '1', 'b', '2');
    await server.call('SELECT', 0);
    const digest = String(await server.call('DEBUG', 'DIGEST'));
    const config = writeConfig(dir, `url: redis://127.0.0.1:${server.port}`);

    const first = await runCli(['once', '--config', config, '--json']);
    expect(first.code, first.stderr).toBe(0);
    const report = jsonOf<OnceJson>(first);
    expect(report.status).toBe('archived');
    const rdbs = finalRdbs(dir);
    expect(rdbs).toHaveLength(2); // hourly and daily (hard links)
    expect(spawnSync('redis-check-rdb', [join(dir, 'archive', rdbs[0]!)]).status).toBe(0);
    expect(await digestOfRestore(join(dir, 'archive', rdbs[0]!))).toBe(digest);

    // The event is named after the server's clock when the transfer began; the facts go to the record, state and list.
    const state = JSON.parse(readFileSync(join(dir, 'archive', '.rdb-archiver', 'state.json'), 'utf8'));
    const info = await server.info('server');
    expect(state.archived.server).toMatchObject({ url: `redis://127.0.0.1:${server.port}`, redisVersion: info.redis_version, runId: info.run_id, transfer: 'diskless' });
    expect(typeof state.archived.server.replOffset).toBe('number');
    expect(state.archived.ts).toBe(report.snapshot!.ts);
    const takenAt = new Date(state.archived.server.takenAt);
    expect(report.snapshot!.ts).toBe(takenAt.toISOString().slice(0, 19).replace(/:/g, '-'));
    // The recovery point lag of a pull runs from when the transfer was requested (a pull has no
    // source mtime: it once counted from 1970, some 1.8e9 s).
    expect(state.lag.sourceMtime).toBe(takenAt.toISOString());
    expect(state.lag.seconds).toBeGreaterThanOrEqual(0);
    expect(state.lag.seconds).toBeLessThan(120);
    const list = jsonOf<Record<string, Array<{ ts: string; server: { runId: string; redisVersion: string } | null }>>>(await runCli(['list', '--config', config, '--json']));
    expect(list.hourly![0]!.server).toMatchObject({ runId: info.run_id, redisVersion: info.redis_version });

    // Unchanged: INFO says so, and the server is not asked for another snapshot.
    const syncs = await fullSyncs(server);
    const second = await runCli(['once', '--config', config, '--json']);
    expect(second.code, second.stderr).toBe(0);
    expect(jsonOf<OnceJson>(second).status).toBe('unchanged');
    expect(await fullSyncs(server)).toBe(syncs);

    // A write: pulled again. --force pulls an unchanged server.
    await server.call('SET', 'new-key', 'v');
    const third = await runCli(['once', '--config', config, '--json']);
    expect(jsonOf<OnceJson>(third).status).toBe('archived');
    expect(await fullSyncs(server)).toBe(syncs + 1);
    const forced = await runCli(['once', '--config', config, '--json', '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(await fullSyncs(server)).toBe(syncs + 2);
  });

  it('authenticates as an ACL user with the documented rules; a user without +psync/+sync and a wrong password exit 78; the password is nowhere', async () => {
    const dir = tempDir();
    const server = await startRedis(dir, { args: FAST_SYNC });
    const password = 'S3cret-pass-0f-backup';
    await server.call('ACL', 'SETUSER', 'backup', 'on', `>${password}`, 'resetkeys', '-@all', '+ping', '+info', '+time', '+replconf', '+psync', '+sync', '+cluster|nodes', '+cluster|shards');
    await server.call('ACL', 'SETUSER', 'nosync', 'on', `>${password}`, '-@all', '+ping', '+info', '+time', '+replconf');
    await server.call('DEBUG', 'POPULATE', 5000);
    const digest = String(await server.call('DEBUG', 'DIGEST'));
    const passFile = join(dir, 'redis.pass');
    writeFileSync(passFile, `${password}\n`);
    chmodSync(passFile, 0o600);

    const good = writeConfig(dir, `url: redis://backup@127.0.0.1:${server.port}\npassword_file: ${passFile}`);
    const ok = await runCli(['once', '--config', good, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(await digestOfRestore(join(dir, 'archive', finalRdbs(dir)[0]!))).toBe(digest);

    const denied = tempDir();
    const noSync = await runCli(['once', '--config', writeConfig(denied, `url: redis://nosync@127.0.0.1:${server.port}\npassword_file: ${passFile}`), '--json']);
    expect(noSync.code, noSync.stderr).toBe(78);
    expect(jsonOf<OnceJson>(noSync).error!.message).toMatch(/NOPERM/);
    expect(finalRdbs(denied)).toEqual([]);

    const wrong = tempDir();
    const wrongFile = join(wrong, 'wrong.pass');
    writeFileSync(wrongFile, 'not-the-password\n', { mode: 0o600 });
    const bad = await runCli(['once', '--config', writeConfig(wrong, `url: redis://backup@127.0.0.1:${server.port}\npassword_file: ${wrongFile}`), '--json']);
    expect(bad.code, bad.stderr).toBe(78);
    expect(jsonOf<OnceJson>(bad).error!.message).toMatch(/WRONGPASS|invalid username-password/);
    expect(finalRdbs(wrong)).toEqual([]);

    // Never in output, state, records or failure records.
    for (const r of [ok, noSync, bad]) expect(r.stdout + r.stderr).not.toContain(password);
    for (const d of [dir, denied, wrong]) {
      const found = spawnSync('grep', ['-rl', password, join(d, 'archive')], { encoding: 'utf8' });
      expect(found.stdout).toBe('');
    }
  });

  it('pulls over TLS (rediss://) with a CA and a client certificate', async () => {
    const dir = tempDir();
    const ssl = (args: string[]) => {
      const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
    };
    ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=test-ca']);
    for (const name of ['server', 'client']) {
      ssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'server' ? 'localhost' : 'backup'}`]);
      writeFileSync(join(dir, `${name}.ext`), name === 'server' ? 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' : 'extendedKeyUsage=clientAuth\n');
      ssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`]);
    }
    chmodSync(join(dir, 'client.key'), 0o600);
    const tlsPort = await freePort();
    const server = await startRedis(dir, {
      args: [...FAST_SYNC, '--tls-port', String(tlsPort), '--tls-cert-file', join(dir, 'server.crt'), '--tls-key-file', join(dir, 'server.key'),
        '--tls-ca-cert-file', join(dir, 'ca.crt'), '--tls-auth-clients', 'yes'],
    });
    await server.call('DEBUG', 'POPULATE', 3000);
    const digest = String(await server.call('DEBUG', 'DIGEST'));
    const config = writeConfig(dir, `url: rediss://127.0.0.1:${tlsPort}\ntls:\n  ca: ${join(dir, 'ca.crt')}\n  cert: ${join(dir, 'client.crt')}\n  key: ${join(dir, 'client.key')}\n  servername: localhost`);
    const r = await runCli(['once', '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(await digestOfRestore(join(dir, 'archive', finalRdbs(dir)[0]!))).toBe(digest);

    // Without the client certificate the server refuses the handshake: a network failure, nothing archived.
    const other = tempDir();
    const noCert = await runCli(['once', '--config', writeConfig(other, `url: rediss://127.0.0.1:${tlsPort}\ntls:\n  ca: ${join(dir, 'ca.crt')}\n  servername: localhost`), '--json']);
    expect(noCert.code, noCert.stderr).toBe(68);
    expect(finalRdbs(other)).toEqual([]);
  });

  it('faults mid-transfer: server killed, connection reset by a proxy, connection closed by the server: exit 68, nothing under a final name, no temp left', async () => {
    // rdb-key-save-delay slows the server's fork so that the transfer is still running when the fault comes.
    const slow = [...FAST_SYNC, '--rdb-key-save-delay', '200'];

    const killedDir = tempDir();
    const killed = await startRedis(killedDir, { args: slow });
    await killed.call('DEBUG', 'POPULATE', 10000, 'key', 100);
    const { run: killRun } = await startPullAndWait(killed, writeConfig(killedDir, `url: redis://127.0.0.1:${killed.port}`));
    // The whole server: its fork (which may write to our socket itself, an inherited descriptor) and the parent.
    for (const pid of childrenOf(killed.process.pid!)) process.kill(pid, 'SIGKILL');
    killed.process.kill('SIGKILL');
    const k = await killRun;
    expect(k.code, k.stderr).toBe(68);
    expect(jsonOf<OnceJson>(k).error!.message).toMatch(/before the whole snapshot arrived|closed|ECONNRESET/);
    expect(archivedFiles(killedDir)).toEqual([]);

    const resetDir = tempDir();
    const plain = await startRedis(resetDir, { args: FAST_SYNC });
    await plain.call('DEBUG', 'POPULATE', 50000, 'key', 100);
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: plain.port }, { resetAfter: 1_000_000 });
    try {
      const r = await runCli(['once', '--config', writeConfig(resetDir, `url: redis://127.0.0.1:${proxy.port}`), '--json']);
      expect(r.code, r.stderr).toBe(68);
      expect(jsonOf<OnceJson>(r).error!.message).toMatch(/ECONNRESET|closed/);
      expect(archivedFiles(resetDir)).toEqual([]);
    } finally {
      await proxy.close();
    }

    // What client-output-buffer-limit does to a replica that lags: the server closes its connection.
    const closedDir = tempDir();
    const closing = await startRedis(closedDir, { args: slow });
    await closing.call('DEBUG', 'POPULATE', 10000, 'key', 100);
    const { run: closeRun } = await startPullAndWait(closing, writeConfig(closedDir, `url: redis://127.0.0.1:${closing.port}`));
    await closing.call('CLIENT', 'KILL', 'TYPE', 'replica');
    const c = await closeRun;
    expect(c.code, c.stderr).toBe(68);
    expect(archivedFiles(closedDir)).toEqual([]);
  });

  it('client-output-buffer-limit replica 1mb 0 0: writes during the pull of a larger dataset do not kill it (rdb-only: nothing buffered for us)', async () => {
    const dir = tempDir();
    const server = await startRedis(dir, { args: [...FAST_SYNC, '--rdb-key-save-delay', '100', '--client-output-buffer-limit', 'replica 1mb 0 0'] });
    await server.call('DEBUG', 'POPULATE', 20000, 'key', 200); // ~4.5 MB of data
    const digest = String(await server.call('DEBUG', 'DIGEST'));
    const { run } = await startPullAndWait(server, writeConfig(dir, `url: redis://127.0.0.1:${server.port}`));
    const big = 'w'.repeat(64 * 1024);
    for (let i = 0; i < 48; i++) await server.call('SET', `written-during-pull:${i}`, big); // 3 MiB of writes, 3x the limit
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(await digestOfRestore(join(dir, 'archive', finalRdbs(dir)[0]!))).toBe(digest);
  });
});

describeWithRedis('source.redis mode bgsave', () => {
  it('runs BGSAVE and archives the new dump; with no changes it neither saves nor archives; a failing BGSAVE exits 71 and archives nothing', async () => {
    const dir = tempDir();
    const data = join(dir, 'data');
    mkdirSync(data);
    const server = await startRedis(data);
    await server.call('DEBUG', 'POPULATE', 2000);
    const digest = String(await server.call('DEBUG', 'DIGEST'));
    const path = writeConfig(dir, `url: redis://127.0.0.1:${server.port}\nmode: bgsave`, join(data, 'dump.rdb'));

    const first = await runCli(['once', '--config', path, '--json']);
    expect(first.code, first.stderr).toBe(0);
    expect(jsonOf<OnceJson>(first).status).toBe('archived');
    expect(await digestOfRestore(join(dir, 'archive', finalRdbs(dir)[0]!))).toBe(digest);
    const saves = Number((await server.info('persistence')).rdb_saves);

    const again = await runCli(['once', '--config', path, '--json']);
    expect(jsonOf<OnceJson>(again).status).toBe('unchanged');
    expect(Number((await server.info('persistence')).rdb_saves)).toBe(saves);

    // The server's dir disappears (a lost volume): its BGSAVE fails; the old dump is not archived as new.
    await server.call('SET', 'another', 'write');
    const before = finalRdbs(dir);
    rmSync(data, { recursive: true, force: true });
    const failed = await runCli(['once', '--config', path, '--json']);
    expect(failed.code, failed.stderr).toBe(71);
    expect(jsonOf<OnceJson>(failed).error!.message).toMatch(/rdb_last_bgsave_status:err/);
    expect(finalRdbs(dir)).toEqual(before);
  });
});
