/**
 * Real redis-server processes for tests: each on a free loopback port, in its
 * own temp folder, with no automatic saves and no AOF, always stopped after
 * the test (SHUTDOWN NOSAVE, then SIGKILL).
 *
 * Talks RESP2 over node:net (a tiny client below, with the archiver's own
 * parser from src/sources/resp.ts), so no npm dependency and no redis-cli
 * process per command.
 *
 * Without redis-server: in CI (CI=true) the tests fail; on a developer
 * machine they are skipped with a loud warning.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, describe, it } from 'vitest';
import { encodeCommand, parseInfo, parseReply, ReplyError, type Reply } from '../../src/sources/resp.js';

export const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';

function findRedis(): { ok: true; version: string } | { ok: false; reason: string } {
  const r = spawnSync(REDIS_SERVER, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return { ok: false, reason: `${REDIS_SERVER} --version failed: ${r.error?.message ?? r.stderr}` };
  return { ok: true, version: r.stdout.trim() };
}

export const redisAvailability = findRedis();

/**
 * describe() for tests that need redis-server: runs them when it is installed;
 * otherwise fails in CI and skips (loudly) elsewhere.
 */
export function describeWithRedis(name: string, body: () => void): void {
  if (redisAvailability.ok) {
    describe(name, body);
    return;
  }
  const reason = redisAvailability.reason;
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('needs redis-server, which CI must provide (.ci/run installs it)', () => {
        throw new Error(`redis-server is not available in CI: ${reason}`);
      });
    });
    return;
  }
  console.warn(
    `\n${'!'.repeat(78)}\n!! SKIPPING "${name}": redis-server is not installed (${reason}).\n` +
      `!! These tests prove round-trips against a real Redis; install redis-server (apt-get install redis-server) to run them.\n${'!'.repeat(78)}\n`,
  );
  describe.skip(name, body);
}

// ---------------------------------------------------------------------------
// RESP2 client: the source's own RESP module (src/sources/resp.ts) parses and
// encodes, so a test and the archiver read the wire the same way.

export type { Reply };

export class RespClient {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly waiting: Array<{ resolve: (r: Reply) => void; reject: (e: Error) => void }> = [];
  private closedError: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer = this.buffer.length === 0 ? d : Buffer.concat([this.buffer, d]);
      let pos = 0;
      for (;;) {
        const parsed = parseReply(this.buffer, pos);
        if (!parsed) break;
        pos = parsed.end;
        this.waiting.shift()?.resolve(parsed.value);
      }
      this.buffer = this.buffer.subarray(pos);
    });
    const fail = (err: Error) => {
      this.closedError ??= err;
      for (const w of this.waiting.splice(0)) w.reject(err);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  static connect(port: number, timeoutMs = 2000): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to 127.0.0.1:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new RespClient(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Sends one command; resolves with its reply (an error reply resolves as a ReplyError value). */
  send(...args: Array<string | number>): Promise<Reply> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(encodeCommand(args));
    });
  }

  /** Like send, but an error reply throws. */
  async call(...args: Array<string | number>): Promise<Reply> {
    const reply = await this.send(...args);
    if (reply instanceof ReplyError) throw new Error(`${args.join(' ')}: ${reply.message}`);
    return reply;
  }

  /** Sends many commands pipelined; throws on the first error reply. */
  async pipeline(commands: ReadonlyArray<ReadonlyArray<string | number>>): Promise<Reply[]> {
    const replies = await Promise.all(commands.map((c) => this.send(...c)));
    const bad = replies.findIndex((r) => r instanceof ReplyError);
    if (bad >= 0) throw new Error(`${commands[bad]!.join(' ')}: ${(replies[bad] as ReplyError).message}`);
    return replies;
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------
// Servers

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  port: number;
  dir: string;
  logfile: string;
  process: ChildProcess;
  client: RespClient;
  /** Runs a command on the server's client; an error reply throws. */
  call(...args: Array<string | number>): Promise<Reply>;
  info(section: string): Promise<Record<string, string>>;
  stop(): Promise<void>;
}

const running = new Set<RedisServer>();

/** Stops every server the current test started. Call from afterEach (registerRedisCleanup does). */
export async function stopAllRedis(): Promise<void> {
  await Promise.all([...running].map((s) => s.stop()));
}

/** Registers afterEach/afterAll hooks that stop every server; call once per test file. */
export function registerRedisCleanup(): void {
  afterEach(stopAllRedis);
  afterAll(stopAllRedis);
}

export { parseInfo };

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface StartOptions {
  /** Extra config directives, e.g. ['--cluster-enabled', 'yes']. */
  args?: string[];
  dbfilename?: string;
  /** How long to wait for PING (including loading a dump). */
  timeoutMs?: number;
}

/**
 * Starts redis-server in `dir` on a free loopback port and waits until PING
 * answers PONG (so a dump in `dir` has been loaded). Retries on another port
 * if the chosen one was taken meanwhile.
 */
export async function startRedis(dir: string, options: StartOptions = {}): Promise<RedisServer> {
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(dir, await freePort(), options);
    } catch (err) {
      lastError = err as Error;
      if (!/Address already in use|bind/i.test(lastError.message)) throw lastError;
    }
  }
  throw lastError!;
}

async function startOnce(dir: string, port: number, options: StartOptions): Promise<RedisServer> {
  const logfile = join(dir, `redis-${port}.log`);
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', dir,
    '--dbfilename', options.dbfilename ?? 'dump.rdb',
    '--save', '',
    '--appendonly', 'no',
    '--enable-debug-command', 'local',
    '--logfile', logfile,
    '--daemonize', 'no',
    ...(options.args ?? []),
  ];
  const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const logText = () => (existsSync(logfile) ? readFileSync(logfile, 'utf8').split('\n').slice(-15).join('\n') : '') + stderr;

  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  let client: RespClient | undefined;
  const kill = async () => {
    client?.close();
    child.kill('SIGKILL');
    await exited(child);
  };
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`redis-server on port ${port} exited (${child.exitCode ?? child.signalCode}):\n${logText()}`);
      }
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING in time:\n${logText()}`);
      try {
        client ??= await RespClient.connect(port, 500);
        const pong = await within(client.send('PING'), 1000);
        if (pong === 'PONG') break; // a LOADING error reply means: not yet
      } catch {
        client?.close();
        client = undefined;
      }
      await sleep(50);
    }
  } catch (err) {
    await kill();
    throw err;
  }

  const server: RedisServer = {
    port,
    dir,
    logfile,
    process: child,
    client: client!,
    call: (...a) => client!.call(...a),
    info: async (section) => parseInfo(String(await client!.call('INFO', section))),
    stop: async () => {
      running.delete(server);
      if (child.exitCode === null && child.signalCode === null) {
        await within(client!.send('SHUTDOWN', 'NOSAVE').catch(() => undefined), 2000);
        if ((await within(exited(child), 3000)) === 'timeout') {
          child.kill('SIGKILL');
          await exited(child);
        }
      }
      client!.close();
    },
  };
  running.add(server);
  return server;
}

/** Polls until `check` returns true; throws with `what` after timeoutMs. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000, intervalMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** BGSAVE and wait until it finished successfully (rdb_bgsave_in_progress:0, status ok). */
export async function bgsaveAndWait(server: RedisServer, timeoutMs = 10_000): Promise<void> {
  const before = Number((await server.info('persistence')).rdb_last_save_time);
  let reply = await server.client.send('BGSAVE');
  // A save started by someone else may be running: wait and retry.
  while (reply instanceof ReplyError) {
    await sleep(20);
    reply = await server.client.send('BGSAVE');
  }
  await waitFor('BGSAVE to finish', async () => {
    const info = await server.info('persistence');
    return info.rdb_bgsave_in_progress === '0' && Number(info.rdb_last_save_time) >= before;
  }, timeoutMs, 10);
  const info = await server.info('persistence');
  if (info.rdb_last_bgsave_status !== 'ok') throw new Error(`BGSAVE failed: rdb_last_bgsave_status:${info.rdb_last_bgsave_status}`);
}
