/**
 * A hostile or broken "Redis" on the other end of source.redis: small fake
 * servers (node:net) that answer INFO, REPLCONF and TIME like Redis does, then
 * misbehave where a real server cannot be made to: a payload shorter or longer
 * than announced, a diskless end mark never sent or sent early, garbage after
 * +FULLRESYNC, a stream that never ends, an absurd length, a clock far off or
 * not a number, an identity that goes back, an error text that echoes the
 * password. Each through the real CLI: the documented exit code, nothing under
 * a final name, no temp left, never an older or foreign snapshot as "latest".
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { archivedFiles } from '../helpers/redis-archive.js';
import { jsonOf, runCli, tempDir, type CliResult } from '../helpers/cli.js';
import { snapshotBytes } from '../helpers/snapshots.js';
import { mountXfs } from '../helpers/xfs.js';

interface OnceJson {
  status: string;
  snapshot: { ts: string; bytes: number; sha256: string } | null;
  warnings?: string[];
  error?: { kind: string; message: string; exitCode: number };
}

/** What a fake server says about itself and does after PSYNC. */
interface Behaviour {
  runId?: string;
  changes?: number;
  lastSave?: number;
  /** TIME's two items (seconds, microseconds), as the server sends them. */
  time?: () => [string, string];
  /** Everything sent after PSYNC (the +FULLRESYNC line, the payload header, the payload). */
  psync: (socket: Socket) => void | Promise<void>;
  /** The reply to AUTH (default +OK). */
  auth?: string;
}

const servers: Server[] = [];
const sockets = new Set<Socket>();
afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets.clear();
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

/** Splits RESP arrays of bulk strings (what a client sends) off the front of `buf`. */
function takeCommands(buf: Buffer): { commands: string[][]; rest: Buffer } {
  const commands: string[][] = [];
  let pos = 0;
  for (;;) {
    if (buf[pos] !== 0x2a) break;
    const end = buf.indexOf('\r\n', pos);
    if (end < 0) break;
    const count = Number(buf.toString('latin1', pos + 1, end));
    let at = end + 2;
    const args: string[] = [];
    let complete = true;
    for (let i = 0; i < count; i++) {
      const lineEnd = buf.indexOf('\r\n', at);
      if (lineEnd < 0) { complete = false; break; }
      const len = Number(buf.toString('latin1', at + 1, lineEnd));
      if (buf.length < lineEnd + 2 + len + 2) { complete = false; break; }
      args.push(buf.toString('utf8', lineEnd + 2, lineEnd + 2 + len));
      at = lineEnd + 2 + len + 2;
    }
    if (!complete) break;
    commands.push(args);
    pos = at;
  }
  return { commands, rest: buf.subarray(pos) };
}

const bulk = (text: string) => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;

/** A fake server on a free loopback port; `behaviour()` is asked afresh for every connection (a run makes two: the poll and the pull). */
async function fakeRedis(behaviour: () => Behaviour): Promise<{ port: number; commands: string[][] }> {
  const seen: string[][] = [];
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    const b = behaviour();
    let buf = Buffer.alloc(0);
    let replicating = false;
    socket.on('data', (d: Buffer) => {
      if (replicating) return;
      buf = Buffer.concat([buf, d]);
      const { commands, rest } = takeCommands(buf);
      buf = rest;
      for (const args of commands) {
        seen.push(args);
        const name = args[0]!.toUpperCase();
        if (name === 'INFO') {
          const info = [
            '# Server', 'redis_version:7.0.99', `run_id:${b.runId ?? 'a'.repeat(40)}`, '',
            '# Persistence', `rdb_changes_since_last_save:${b.changes ?? 0}`, `rdb_last_save_time:${b.lastSave ?? 1700000000}`,
            'rdb_bgsave_in_progress:0', 'rdb_last_bgsave_status:ok', 'rdb_saves:1', '',
            '# Replication', 'role:master', 'master_repl_offset:100', '',
            '# Cluster', 'cluster_enabled:0', '',
          ].join('\r\n');
          socket.write(bulk(info));
        } else if (name === 'AUTH') socket.write(b.auth ?? '+OK\r\n');
        else if (name === 'REPLCONF') socket.write('+OK\r\n');
        else if (name === 'TIME') {
          const [s, us] = b.time?.() ?? [String(Math.floor(Date.now() / 1000)), '0'];
          socket.write(`*2\r\n${bulk(s)}${bulk(us)}`);
        } else if (name === 'PSYNC') {
          replicating = true;
          void b.psync(socket);
          return;
        } else socket.write(`-ERR unknown command '${name}'\r\n`);
      }
    });
  });
  servers.push(server);
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  return { port, commands: seen };
}

const MARK = 'x'.repeat(20) + 'y'.repeat(20);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** An honest disk-based transfer of `rdb`. */
const diskTransfer = (rdb: Buffer) => (socket: Socket) => {
  socket.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$${rdb.length}\r\n`);
  socket.write(rdb);
};

function setup(port: number, options: { extra?: string[]; timeout?: string; dir?: string; archive?: string[] } = {}): { dir: string; config: string } {
  const dir = options.dir ?? tempDir();
  const config = join(dir, 'config.yaml');
  writeFileSync(config, [
    'source:', '  redis:', `    url: redis://127.0.0.1:${port}`, `    timeout: ${options.timeout ?? '4s'}`, ...(options.extra ?? []).map((l) => `    ${l}`),
    'archive:', `  dir: ${join(dir, 'archive')}`, '  create: true', ...(options.archive ?? []).map((l) => `  ${l}`), '',
  ].join('\n'));
  return { dir, config };
}

const once = (config: string): Promise<CliResult> => runCli(['once', '--config', config, '--json'], { timeoutMs: 45_000 });

async function restoredSha(config: string, dir: string): Promise<string> {
  const to = join(dir, `restored-${Math.random().toString(36).slice(2)}`);
  mkdirSync(to);
  const r = await runCli(['restore', 'latest', '--config', config, '--to', to, '--json']);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return sha256(readFileSync(join(to, 'dump.rdb')));
}

describe('a hostile or broken server behind source.redis', { timeout: 120_000 }, () => {
  it('the fake server is honest: a disk-based transfer is archived byte for byte (the baseline the attacks below change one thing of)', async () => {
    const rdb = snapshotBytes('honest', 50_000);
    const { port } = await fakeRedis(() => ({ psync: diskTransfer(rdb) }));
    const { dir, config } = setup(port);
    const r = await once(config);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r).snapshot!.sha256).toBe(sha256(rdb));
    expect(await restoredSha(config, dir)).toBe(sha256(rdb));
  });

  it('$<len> larger than what is sent, then the connection closes: exit 68, nothing under a final name, no temp', async () => {
    const rdb = snapshotBytes('short', 50_000);
    const { port } = await fakeRedis(() => ({
      psync: (s) => {
        s.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$${rdb.length + 5000}\r\n`);
        s.end(rdb);
      },
    }));
    const { dir, config } = setup(port);
    const r = await once(config);
    expect(r.code, r.stdout + r.stderr).toBe(68);
    expect(jsonOf<OnceJson>(r).error!.message).toContain(`before the whole snapshot arrived (${rdb.length} of ${rdb.length + 5000} bytes)`);
    expect(archivedFiles(dir)).toEqual([]);
  });

  it('more bytes than announced: the archive holds exactly the announced payload (a valid RDB), not the bytes after it', async () => {
    const rdb = snapshotBytes('exact', 40_000);
    const { port } = await fakeRedis(() => ({
      psync: (s) => {
        s.write(Buffer.concat([Buffer.from(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$${rdb.length}\r\n`), rdb, randomBytes(10_000)]));
      },
    }));
    const { dir, config } = setup(port);
    const r = await once(config);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r).snapshot).toMatchObject({ bytes: rdb.length, sha256: sha256(rdb) });
    expect(await restoredSha(config, dir)).toBe(sha256(rdb));
  });

  it('$<len> smaller than the RDB (the payload cut at the announced length): exit 65, nothing archived', async () => {
    const rdb = snapshotBytes('cut', 40_000);
    const { port } = await fakeRedis(() => ({
      psync: (s) => {
        s.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$${rdb.length - 100}\r\n`);
        s.write(rdb);
      },
    }));
    const { dir, config } = setup(port);
    const r = await once(config);
    expect(r.code, r.stdout + r.stderr).toBe(65);
    expect(archivedFiles(dir)).toEqual([]);
  });

  it('diskless: the end mark never sent (connection closed): exit 68; the mark sent early, mid-RDB: exit 65; nothing archived either way', async () => {
    const rdb = snapshotBytes('diskless', 60_000);
    const never = await fakeRedis(() => ({
      psync: (s) => {
        s.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$EOF:${MARK}\r\n`);
        s.end(rdb);
      },
    }));
    const a = setup(never.port);
    const r1 = await once(a.config);
    expect(r1.code, r1.stdout + r1.stderr).toBe(68);
    expect(jsonOf<OnceJson>(r1).error!.message).toMatch(/no end mark/);
    expect(archivedFiles(a.dir)).toEqual([]);

    const early = await fakeRedis(() => ({
      psync: async (s) => {
        s.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$EOF:${MARK}\r\n`);
        s.write(Buffer.concat([rdb.subarray(0, 30_000), Buffer.from(MARK)]));
        await sleep(300);
        s.write(rdb.subarray(30_000));
        s.write(MARK);
      },
    }));
    const b = setup(early.port);
    const r2 = await once(b.config);
    expect(r2.code, r2.stdout + r2.stderr).toBe(65);
    expect(archivedFiles(b.dir)).toEqual([]);
  });

  it('garbage after +FULLRESYNC instead of a payload header: exit 68 (protocol error), nothing archived', async () => {
    const { port } = await fakeRedis(() => ({
      psync: (s) => {
        s.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\nHTTP/1.1 200 OK\r\n\r\n`);
      },
    }));
    const { dir, config } = setup(port);
    const r = await once(config);
    expect(r.code, r.stdout + r.stderr).toBe(68);
    expect(jsonOf<OnceJson>(r).error!.message).toMatch(/payload header/);
    expect(archivedFiles(dir)).toEqual([]);
  });

  it('a diskless stream that never ends (a valid RDB header, then empty keys forever): stopped at source.redis.timeout, exit 68, no temp left', async () => {
    const header = snapshotBytes('endless', 0).subarray(0, 9); // REDIS00xx
    const { port } = await fakeRedis(() => ({
      psync: async (s) => {
        s.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$EOF:${MARK}\r\n`);
        s.write(Buffer.concat([header, Buffer.from([0xfe, 0x00])]));
        // Zero bytes walk as string keys "" = "": structurally valid, endless.
        while (!s.destroyed) {
          s.write(Buffer.alloc(4096));
          await sleep(20);
        }
      },
    }));
    const { dir, config } = setup(port);
    const r = await once(config);
    expect(r.code, r.stdout + r.stderr).toBe(68);
    expect(jsonOf<OnceJson>(r).error!.message).toMatch(/source\.redis\.timeout/);
    expect(archivedFiles(dir)).toEqual([]);
  });

  it('a diskless stream larger than the archive filesystem can take: stopped at archive.min_free (exit 1), no temp, the filesystem never filled', async (ctx) => {
    const xfs = mountXfs(320);
    if ('skip' in xfs) return ctx.skip(xfs.skip);
    try {
      const header = snapshotBytes('flood', 0).subarray(0, 9);
      const { port } = await fakeRedis(() => ({
        psync: async (s) => {
          s.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$EOF:${MARK}\r\n`);
          s.write(Buffer.concat([header, Buffer.from([0xfe, 0x00])]));
          const chunk = Buffer.alloc(1024 * 1024);
          while (!s.destroyed) {
            if (!s.write(chunk)) await new Promise((resolve) => { s.once('drain', resolve); s.once('close', resolve); });
          }
        },
      }));
      const dir = join(xfs.dir, 'flood');
      mkdirSync(dir);
      const { config } = setup(port, { dir, timeout: '60s', archive: ['min_free: 200MiB'] });
      const r = await once(config);
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(jsonOf<OnceJson>(r).error!.message).toMatch(/not enough free space/);
      expect(archivedFiles(dir)).toEqual([]);
      expect(statfsSync(xfs.dir).bavail * statfsSync(xfs.dir).bsize).toBeGreaterThan(190 * 1024 * 1024);
    } finally {
      xfs.cleanup();
    }
  });

  it('an absurd $<len> (1 PB, and one beyond 2^53): refused for space before a byte is written, exit 1', async () => {
    for (const len of ['1000000000000000', '99999999999999999999999']) {
      const { port } = await fakeRedis(() => ({
        psync: (s) => {
          s.write(`+FULLRESYNC ${'b'.repeat(40)} 100\r\n$${len}\r\n`);
          s.write(Buffer.alloc(1024));
        },
      }));
      const { dir, config } = setup(port, { timeout: '30s' });
      const r = await once(config);
      expect(r.code, `${len}: ${r.stdout}${r.stderr}`).toBe(1);
      expect(archivedFiles(dir)).toEqual([]);
    }
  });

  it('TIME that is not a number, or beyond what a date can hold: exit 68 naming TIME, never an internal error, nothing archived', async () => {
    for (const time of [['abc', 'def'], ['99999999999999', '0'], ['', '']] as Array<[string, string]>) {
      const rdb = snapshotBytes('clock', 10_000);
      const { port } = await fakeRedis(() => ({ time: () => time, psync: diskTransfer(rdb) }));
      const { dir, config } = setup(port);
      const r = await once(config);
      expect(r.code, `${time.join(' ')}: ${r.stdout}${r.stderr}`).toBe(68);
      expect(jsonOf<OnceJson>(r).error!.message).toMatch(/TIME/);
      expect(archivedFiles(dir)).toEqual([]);
    }
  });

  it('the server clock far in the future, then right again, then far in the past, then right: each pull is "latest" in turn (restore latest gives its bytes), the odd ones are warned about and kept', async () => {
    const first = snapshotBytes('future', 10_000);
    const second = snapshotBytes('present', 10_000);
    const third = snapshotBytes('past', 10_000);
    const fourth = snapshotBytes('now', 10_000);
    let phase = 0;
    const { port } = await fakeRedis(() => [
      { runId: 'c'.repeat(40), time: (): [string, string] => ['7258118400', '0'], psync: diskTransfer(first) }, // 2200-01-01
      { runId: 'd'.repeat(40), psync: diskTransfer(second) },
      { runId: 'e'.repeat(40), time: (): [string, string] => ['315532800', '0'], psync: diskTransfer(third) }, // 1980-01-01
      { runId: 'f'.repeat(40), psync: diskTransfer(fourth) },
    ][phase]!);
    const { dir, config } = setup(port);
    const r1 = await once(config);
    expect(r1.code, r1.stdout + r1.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r1).snapshot!.ts).toMatch(/^2200-01-01/);
    expect(JSON.stringify(jsonOf<OnceJson>(r1).warnings)).toMatch(/future/);
    phase = 1;
    const r2 = await once(config);
    expect(r2.code, r2.stdout + r2.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r2).snapshot!.sha256).toBe(sha256(second));
    expect(await restoredSha(config, dir)).toBe(sha256(second));
    // (Retention files the future event under the period of the event archived after it, where that newer one
    // wins: it rotates out like any other, as for a file source's future mtime; see retention.ts.)

    phase = 2;
    const r3 = await once(config);
    expect(r3.code, r3.stdout + r3.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r3).snapshot!.ts).toMatch(/^1980-01-01/);
    expect(JSON.stringify(jsonOf<OnceJson>(r3).warnings)).toMatch(/stepped back/);
    expect(await restoredSha(config, dir)).toBe(sha256(third));
    phase = 3;
    const r4 = await once(config);
    expect(r4.code, r4.stdout + r4.stderr).toBe(0);
    expect(await restoredSha(config, dir)).toBe(sha256(fourth));
    // The stepped-back event is among the most recently archived: not pruned for its old name.
    expect(archivedFiles(dir).filter((f) => f.endsWith('.rdb')).some((f) => f.includes('1980-01-01'))).toBe(true);
  });

  it('an identity that goes back (run_id A, then B, then A again with the old save time): every change is pulled, the last pull is "latest"; the same identity twice in a row is not pulled', async () => {
    const x = snapshotBytes('x', 10_000);
    const y = snapshotBytes('y', 10_000);
    const z = snapshotBytes('z', 10_000);
    let current: Behaviour = { runId: 'a'.repeat(40), changes: 3, lastSave: 1700000000, psync: diskTransfer(x) };
    const { port } = await fakeRedis(() => current);
    const { dir, config } = setup(port);
    expect((await once(config)).code).toBe(0);
    current = { runId: 'b'.repeat(40), changes: 0, lastSave: 1700000500, psync: diskTransfer(y) };
    const r2 = await once(config);
    expect(jsonOf<OnceJson>(r2).snapshot!.sha256).toBe(sha256(y));
    // A failover back to the first server (or a server lying about its identity): other content, an older identity.
    current = { runId: 'a'.repeat(40), changes: 3, lastSave: 1700000000, psync: diskTransfer(z) };
    const r3 = await once(config);
    expect(r3.code, r3.stdout + r3.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r3)).toMatchObject({ status: 'archived', snapshot: { sha256: sha256(z) } });
    expect(await restoredSha(config, dir)).toBe(sha256(z));
    const r4 = await once(config);
    expect(jsonOf<OnceJson>(r4).status).toBe('unchanged');
    // Back to the content of the first event (a restore on the server): the server's current data, so a new latest event.
    current = { runId: 'e'.repeat(40), changes: 0, lastSave: 1700000900, psync: diskTransfer(x) };
    const r5 = await once(config);
    expect(r5.code, r5.stdout + r5.stderr).toBe(0);
    expect(jsonOf<OnceJson>(r5)).toMatchObject({ status: 'archived', snapshot: { sha256: sha256(x) } });
    expect(await restoredSha(config, dir)).toBe(sha256(x));
  });

  it('a server that echoes the password in its AUTH error: exit 78, and the password is in no output, log, state or failure record', async () => {
    const secret = 'hunter2-s3cr3t-PASS';
    const { port } = await fakeRedis(() => ({ auth: `-WRONGPASS invalid username-password pair (you sent '${secret}')\r\n`, psync: diskTransfer(snapshotBytes('auth', 1000)) }));
    const dir = tempDir();
    const pw = join(dir, 'pw');
    writeFileSync(pw, `${secret}\n`);
    chmodSync(pw, 0o600);
    const { config } = setup(port, { dir, extra: [`password_file: ${pw}`] });
    const r = await once(config);
    expect(r.code, r.stdout + r.stderr).toBe(78);
    expect(r.stdout + r.stderr).not.toContain(secret);
    const meta = join(dir, 'archive', '.rdb-archiver');
    const grepTree = (d: string): string[] => !existsSync(d) ? [] : readdirSync(d, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? grepTree(join(d, e.name)) : readFileSync(join(d, e.name), 'utf8').includes(secret) ? [join(d, e.name)] : []);
    expect(grepTree(meta)).toEqual([]);
    const status = await runCli(['status', '--config', config, '--json']);
    expect(status.stdout + status.stderr).not.toContain(secret);
  });
});
