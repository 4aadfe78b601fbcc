/**
 * source.redis mode bgsave: the archiver decides when the server saves.
 * BGSAVE SCHEDULE, then INFO persistence polled until the save is over, with
 * a deadline (source.redis.timeout); the local dump.rdb (source.rdb) is then
 * archived by the ordinary file path.
 *
 * A failed save (rdb_last_bgsave_status:err) is an error (71), never "the old
 * file is the new snapshot"; so is a save after which source.rdb did not
 * change (it is not the file this server writes).
 */
import type { InstanceConfig } from '../core/config.js';
import { RedisSourceError, SourceUnavailableError } from '../core/errors.js';
import type { FileSystem } from '../core/fs.js';
import { errorCode } from '../core/fs.js';
import type { Log } from '../core/log.js';
import type { ArchivedRecord } from '../pipeline/state.js';
import { identityOf, sameIdentity } from '../pipeline/state.js';
import type { RedisConnection } from './connection.js';
import { connectRedis, readServerInfo, type ServerInfo } from './redis.js';
import { ReplyError } from './resp.js';

const POLL_MS = 100;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function statIfExists(fs: FileSystem, path: string) {
  try {
    return await fs.lstat(path);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Whether a save is needed: writes since the last save, or no dump at all. */
export function needsSave(info: ServerInfo, dumpExists: boolean): boolean {
  return !dumpExists || info.changesSinceSave !== 0;
}

/** Runs BGSAVE when the server has unsaved changes and waits for it; returns once source.rdb holds the new dump. */
export async function awaitBgsave(fs: FileSystem, log: Log, instance: InstanceConfig, _last: ArchivedRecord | undefined, _force: boolean): Promise<void> {
  const cfg = instance.redis!;
  const deadline = Date.now() + cfg.timeoutMs;
  const conn = await connectRedis(cfg, deadline);
  try {
    const before = await statIfExists(fs, instance.sourceRdb);
    const info = await readServerInfo(conn);
    if (!needsSave(info, before !== undefined)) {
      log.debug({ source: cfg.url }, 'no changes since the server\'s last save: no BGSAVE');
      return;
    }
    await triggerAndWait(conn, info, deadline, log);
    const after = await statIfExists(fs, instance.sourceRdb);
    if (!after || (before && sameIdentity(identityOf(before), identityOf(after)))) {
      throw new SourceUnavailableError(instance.sourceRdb,
        `${cfg.url} saved (BGSAVE ok) but this file ${after ? 'did not change' : 'does not exist'}: source.rdb must be the server's dir/dbfilename; nothing archived`);
    }
  } finally {
    conn.close();
  }
}

async function triggerAndWait(conn: RedisConnection, info: ServerInfo, deadline: number, log: Log): Promise<void> {
  let savesBefore = info.saves;
  let lastSaveBefore = info.lastSaveTime;
  // Someone else's save running: wait for it, then save ours (its fork may predate the latest writes).
  for (;;) {
    const reply = await conn.send(['BGSAVE', 'SCHEDULE'], 'BGSAVE SCHEDULE');
    if (!(reply instanceof ReplyError)) break;
    if (!/already in progress/i.test(reply.message)) {
      if (reply.code === 'NOPERM') throw new RedisSourceError('source-auth', conn.label, 'BGSAVE', `${reply.message} (mode bgsave needs +bgsave)`);
      throw new RedisSourceError('source-save', conn.label, 'BGSAVE', `the server answered: ${reply.message}`);
    }
    const now = await waitUntilIdle(conn, deadline);
    savesBefore = now.saves;
    lastSaveBefore = now.lastSaveTime;
  }
  log.info({ source: conn.label }, 'BGSAVE requested; waiting for it to finish');
  let started = false;
  for (;;) {
    const now = await readServerInfo(conn);
    // rdb_saves counts a save when it forks (Redis 7+); older servers: the save time moves when it ends.
    if (now.bgsaveInProgress || (now.saves !== null && savesBefore !== null && now.saves > savesBefore)) started = true;
    const finished = !now.bgsaveInProgress && (started || now.lastSaveTime !== lastSaveBefore);
    if (finished) {
      if (now.lastBgsaveStatus !== 'ok') {
        throw new RedisSourceError('source-save', conn.label, 'BGSAVE',
          `failed (rdb_last_bgsave_status:${now.lastBgsaveStatus}): the server could not write its dump (disk full? dir not writable? see its log); the previous dump is not archived as new`);
      }
      if (now.lastSaveTime !== lastSaveBefore || (now.saves !== null && savesBefore !== null && now.saves > savesBefore)) return;
    }
    if (Date.now() + POLL_MS > deadline) {
      throw new RedisSourceError('source-save', conn.label, 'BGSAVE', 'did not finish within source.redis.timeout; nothing archived (the save may still be running on the server)');
    }
    await sleep(POLL_MS);
  }
}

async function waitUntilIdle(conn: RedisConnection, deadline: number): Promise<ServerInfo> {
  for (;;) {
    const now = await readServerInfo(conn);
    if (!now.bgsaveInProgress) return now;
    if (Date.now() + POLL_MS > deadline) throw new RedisSourceError('source-save', conn.label, 'BGSAVE', 'another save kept running past source.redis.timeout');
    await sleep(POLL_MS);
  }
}
