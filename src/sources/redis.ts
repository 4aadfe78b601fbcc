/**
 * source.redis: a running server as the snapshot source.
 *
 *  - connect (TLS for rediss://), AUTH with the user of the URL and the
 *    password of password_file;
 *  - INFO: the server's persistence identity (run_id, rdb_last_save_time,
 *    rdb_changes_since_last_save), which tells "nothing new" without a pull;
 *  - replicate: REPLCONF capa eof, REPLCONF rdb-only 1, TIME, PSYNC ? -1 (or
 *    SYNC), then the payload as a StreamedSnapshot for the worker's pass.
 *
 * Nothing sent changes the server's data or configuration. Credentials are
 * read here, at run time, and go nowhere but into the AUTH command.
 */
import { closeSync, fstatSync, openSync, constants as fsConstants } from 'node:fs';
import { readFromStartSync } from '../core/fs.js';
import type { RedisSourceConfig } from '../core/config.js';
import { ConfigError, RedisSourceError, registerSecret } from '../core/errors.js';
import type { SourceIdentity } from '../pipeline/state.js';
import { RedisConnection, replyFailure, type Endpoint } from './connection.js';
import { PayloadReader } from './payload.js';
import { parseFullResync, parseInfo, parsePayloadHeader, ReplyError } from './resp.js';
import type { ServerFacts, StreamedSnapshot } from './source.js';

const MAX_SECRET_FILE_BYTES = 64 * 1024;

/** Reads a small secret or certificate file: a regular file; a password file must not be readable by everyone. */
function readSmallFile(path: string, what: string, secret: boolean): Buffer {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
  } catch (err) {
    throw new ConfigError(undefined, what, `${path}: cannot open: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw new ConfigError(undefined, what, `${path} is not a regular file`);
    if (info.size > MAX_SECRET_FILE_BYTES) throw new ConfigError(undefined, what, `${path} is larger than 64 KiB`);
    if (secret && (info.mode & 0o004) !== 0) throw new ConfigError(undefined, what, `${path} is readable by every user (mode ${(info.mode & 0o777).toString(8)}): chmod o-r it`);
    return readFromStartSync(fd, info.size);
  } finally {
    closeSync(fd);
  }
}

/** The endpoint with its TLS material read from the files. */
export function endpointOf(cfg: RedisSourceConfig, host = cfg.host, port = cfg.port): Endpoint {
  const t = cfg.tls;
  return {
    host,
    port,
    ...(t ? {
      tls: {
        ...(t.ca ? { ca: readSmallFile(t.ca, 'source.redis.tls.ca', false) } : {}),
        ...(t.cert ? { cert: readSmallFile(t.cert, 'source.redis.tls.cert', false) } : {}),
        ...(t.key ? { key: readSmallFile(t.key, 'source.redis.tls.key', true) } : {}),
        ...(t.servername ? { servername: t.servername } : {}),
      },
    } : {}),
  };
}

/** The password from password_file: its first line, without the line end. */
export function readPassword(cfg: RedisSourceConfig): string | undefined {
  if (!cfg.passwordFile) return undefined;
  const text = readSmallFile(cfg.passwordFile, 'source.redis.password_file', true).toString('utf8');
  const first = text.split(/\r?\n/, 1)[0] ?? '';
  if (first === '') throw new ConfigError(undefined, 'source.redis.password_file', `${cfg.passwordFile} is empty`);
  registerSecret(first);
  return first;
}

/** Connects and authenticates. The deadline covers the connection's whole life. */
export async function connectRedis(cfg: RedisSourceConfig, deadlineMs: number, endpoint: Endpoint = endpointOf(cfg)): Promise<RedisConnection> {
  const password = readPassword(cfg);
  const conn = await RedisConnection.open(endpoint, deadlineMs);
  try {
    if (password !== undefined) {
      const args = cfg.username ? ['AUTH', cfg.username, password] : ['AUTH', password];
      const reply = await conn.send(args, 'AUTH');
      if (reply instanceof ReplyError) {
        // The server's text can name the user, never the password; say which was tried.
        throw new RedisSourceError('source-auth', conn.label, 'AUTH', `${reply.message} (user ${cfg.username ?? 'default'}, password from ${cfg.passwordFile})`);
      }
    } else if (cfg.username) {
      throw new ConfigError(undefined, 'source.redis.password_file', `is required with the user "${cfg.username}" in source.redis.url`);
    }
    return conn;
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** What INFO says about the server's persistence: the identity of its data without reading it. */
export interface ServerInfo {
  redisVersion: string | null;
  runId: string;
  role: string;
  lastSaveTime: number;
  changesSinceSave: number;
  bgsaveInProgress: boolean;
  lastBgsaveStatus: string;
  saves: number | null;
  replOffset: number | null;
  clusterEnabled: boolean;
}

export async function readServerInfo(conn: RedisConnection): Promise<ServerInfo> {
  const text = await conn.call(['INFO'], 'INFO');
  if (typeof text !== 'string') throw new RedisSourceError('source-network', conn.label, 'INFO', 'unexpected reply');
  const info = parseInfo(text);
  const num = (key: string): number | null => (info[key] !== undefined && /^-?\d+$/.test(info[key]!) ? Number(info[key]) : null);
  if (!info.run_id) throw new RedisSourceError('source-network', conn.label, 'INFO', 'the reply has no run_id: not a Redis server?');
  return {
    redisVersion: info.valkey_version ?? info.redis_version ?? null,
    runId: info.run_id,
    role: info.role ?? 'unknown',
    lastSaveTime: num('rdb_last_save_time') ?? 0,
    changesSinceSave: num('rdb_changes_since_last_save') ?? -1,
    bgsaveInProgress: info.rdb_bgsave_in_progress === '1',
    lastBgsaveStatus: info.rdb_last_bgsave_status ?? 'unknown',
    saves: num('rdb_saves'),
    replOffset: num('master_repl_offset'),
    clusterEnabled: info.cluster_enabled === '1',
  };
}

/**
 * The server's persistence identity in the state's SourceIdentity shape:
 * the same run_id (no restart, no failover to another process), the same last
 * save and the same count of changes since it mean the data is what it was.
 * Any write bumps the change count; any save moves the save time; a restart
 * changes the run_id. The pull itself changes none of them: it is a diskless
 * transfer (rdb-only), which neither resets the count nor moves the save time.
 */
export function redisIdentity(info: ServerInfo): SourceIdentity {
  return { dev: `redis:${info.runId}`, ino: `save:${info.lastSaveTime}:changes:${info.changesSinceSave}`, size: 0, mtimeNs: '0' };
}

/** The server's clock (TIME) in ms. */
async function serverTimeMs(conn: RedisConnection): Promise<number> {
  const reply = await conn.call(['TIME'], 'TIME');
  if (!Array.isArray(reply) || reply.length !== 2) throw new RedisSourceError('source-network', conn.label, 'TIME', 'unexpected reply');
  // The server's clock names the event: it must be a time at all (a broken or hostile server may
  // send anything). How far off it may be is the clock checks' business (cycle.ts), not this one's.
  const [seconds, micros] = reply.map((item) => (typeof item === 'string' && /^\d{1,15}$/.test(item) ? Number(item) : NaN));
  const ms = seconds! * 1000 + Math.floor(micros! / 1000);
  if (!Number.isFinite(ms) || micros! >= 1_000_000 || Number.isNaN(new Date(ms).getTime())) {
    throw new RedisSourceError('source-network', conn.label, 'TIME', `the reply "${reply.map(String).join(' ').slice(0, 60)}" is not a time (seconds and microseconds since 1970)`);
  }
  return ms;
}

/**
 * Asks for a full snapshot on an authenticated connection and returns it as
 * a stream. The connection then belongs to the snapshot (closed by close()).
 */
export async function startPull(conn: RedisConnection, url: string, info: ServerInfo): Promise<StreamedSnapshot> {
  // capa eof: we read the diskless $EOF:<mark> form. rdb-only (Redis 7.0+): the master sends the
  // snapshot and no command stream, so it neither buffers writes for us (client-output-buffer-limit)
  // nor keeps us as a replica; older servers answer an error, which is fine.
  await conn.call(['REPLCONF', 'capa', 'eof'], 'REPLCONF capa eof');
  const rdbOnly = await conn.send(['REPLCONF', 'rdb-only', '1'], 'REPLCONF rdb-only');
  if (rdbOnly instanceof ReplyError && rdbOnly.code === 'NOPERM') throw replyFailure(conn.label, 'REPLCONF rdb-only', rdbOnly);
  const takenAtMs = await serverTimeMs(conn);

  conn.write(['PSYNC', '?', '-1'], 'PSYNC');
  let line = await conn.readLine('PSYNC');
  let replId: string | null = null;
  let replOffset: number | null = info.replOffset;
  if (line.startsWith('-')) {
    const psyncError = new ReplyError(line.slice(1));
    // A server without PSYNC (or an ACL with +sync only): the old SYNC gives the same payload.
    if (psyncError.code !== 'NOPERM' && !/unknown command/i.test(psyncError.message)) throw replyFailure(conn.label, 'PSYNC', psyncError);
    conn.write(['SYNC'], 'SYNC');
    line = await conn.readLine('SYNC');
    if (line.startsWith('-')) throw replyFailure(conn.label, 'SYNC', new ReplyError(line.slice(1)));
  } else {
    const full = parseFullResync(line);
    if (!full) throw new RedisSourceError('source-network', conn.label, 'PSYNC', `expected +FULLRESYNC, got "${line.slice(0, 60)}"`);
    replId = full.replid;
    replOffset = full.offset;
    line = await conn.readLine('PSYNC payload header');
  }
  let header;
  try {
    header = parsePayloadHeader(line);
  } catch (err) {
    throw new RedisSourceError('source-network', conn.label, 'payload header', (err as Error).message);
  }
  const reader = new PayloadReader(conn, header);
  const facts: ServerFacts = {
    url,
    redisVersion: info.redisVersion,
    runId: info.runId,
    replId,
    replOffset,
    transfer: header.kind === 'eof' ? 'diskless' : 'disk',
    takenAt: new Date(takenAtMs).toISOString(),
  };
  return {
    label: url,
    read: (buffer, offset, length) => reader.read(buffer, offset, length),
    ...(reader.expectedBytes !== undefined ? { expectedBytes: reader.expectedBytes } : {}),
    takenAtMs,
    facts,
    identity: redisIdentity(info),
    close: () => conn.close(),
  };
}
