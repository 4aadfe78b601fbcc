/**
 * The watcher's counterpart for source.redis mode replicate: "has anything
 * changed since the last archived snapshot?" answered from INFO (one small
 * command, no fork on the server), and a job that pulls the snapshot when it
 * has. Loaded only for instances with source.redis (see cycle.ts).
 */
import type { InstanceConfig, RedisSourceConfig } from '../core/config.js';
import type { ArchivedRecord } from '../pipeline/state.js';
import { detectChange, type ChangeReason, type Detection, type SnapshotJob } from '../pipeline/watcher.js';
import { RedisSourceError, TryAgainError } from '../core/errors.js';
import type { Endpoint, RedisConnection } from './connection.js';
import { parseClusterNodes } from './cluster.js';
import { ReplyError } from './resp.js';
import { connectRedis, readServerInfo, redisIdentity, startPull, type ServerInfo } from './redis.js';
import { slotsText } from '../core/shards.js';
import type { StreamedSnapshot } from './source.js';

/** A cluster shard's pull: the master's announced address and the slots the discovery saw it own. */
export interface ShardTarget {
  endpoint: Endpoint;
  slots: string;
  nodeId: string;
}

export interface RedisPoll {
  detection: Detection;
  job?: SnapshotJob;
  /** A job for this source whatever the detection said (the last archived event's files are gone). */
  jobFor(reason: ChangeReason): SnapshotJob;
  info: ServerInfo;
}

/** Connects, reads INFO, closes. */
export async function serverInfo(cfg: RedisSourceConfig, endpoint?: Endpoint, timeoutMs = cfg.timeoutMs): Promise<ServerInfo> {
  const conn = await connectRedis(cfg, Date.now() + timeoutMs, endpoint);
  try {
    return await readServerInfo(conn);
  } finally {
    conn.close();
  }
}

/**
 * A pull on its own connection: INFO right before PSYNC gives the identity the
 * state records (a write between the poll and the pull is then not lost: it
 * is in the snapshot, or it moves the identity again).
 */
export async function openPull(cfg: RedisSourceConfig, shard?: ShardTarget): Promise<StreamedSnapshot> {
  const endpoint = shard?.endpoint;
  const conn = await connectRedis(cfg, Date.now() + cfg.timeoutMs, endpoint);
  try {
    const info = await readServerInfo(conn);
    // The shard's nodes file: this master's CLUSTER NODES, read on the pull's connection right before it.
    const nodes = shard ? await shardNodes(conn, shard) : undefined;
    const host = endpoint && endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint?.host;
    const url = endpoint ? `${cfg.tls ? 'rediss' : 'redis'}://${host}:${endpoint.port}` : cfg.url;
    const snapshot = await startPull(conn, url, info);
    if (shard) {
      snapshot.facts.slots = shard.slots;
      snapshot.facts.nodeId = nodes!.nodeId;
    }
    const pulled = nodes ? { ...snapshot, nodes: nodes.text } : snapshot;
    if (pulled.facts.transfer === 'disk') identityAfterDiskSave(pulled, info, () => serverInfo(cfg, endpoint, AFTER_SAVE_INFO_MS));
    return pulled;
  } catch (err) {
    conn.close();
    throw err;
  }
}

/** How long the INFO after a disk-based transfer may take: it only spares the next run a pull. */
const AFTER_SAVE_INFO_MS = 10_000;

/**
 * A disk-based transfer (`$<len>`: the server's repl-diskless-sync is no) is a
 * save: the server wrote its dump.rdb for us, which moved rdb_last_save_time
 * and reset rdb_changes_since_last_save. The identity read before the pull
 * would never match the server again, and every run would pull. So once the
 * whole payload has arrived (the read that returns 0), INFO on a new
 * connection gives the identity after that save. It replaces the snapshot's
 * only when it proves the snapshot holds everything: the same run_id, exactly
 * one save since (rdb_saves; before Redis 7: a later save time), none running,
 * and no change since. Otherwise (or when INFO fails) the identity from
 * before stays, and the next run pulls again: the safe side.
 */
export function identityAfterDiskSave(snapshot: StreamedSnapshot, before: ServerInfo, readInfo: () => Promise<ServerInfo>): void {
  const read = snapshot.read;
  let settled = false;
  snapshot.read = async (buffer, offset, length) => {
    const n = await read(buffer, offset, length);
    if (n === 0 && !settled) {
      settled = true;
      const after = await readInfo().catch(() => undefined);
      if (after && provesWholeSnapshot(before, after)) snapshot.identity = redisIdentity(after);
    }
    return n;
  };
}

/** Pure: INFO after a disk-based transfer shows that the save which served it is the server's data now. */
export function provesWholeSnapshot(before: ServerInfo, after: ServerInfo): boolean {
  if (after.runId !== before.runId || after.bgsaveInProgress || after.changesSinceSave !== 0 || after.lastBgsaveStatus !== 'ok') return false;
  if (after.saves !== null && before.saves !== null) return after.saves === before.saves + 1;
  return after.lastSaveTime > before.lastSaveTime;
}

/**
 * CLUSTER NODES from the shard's master, and a check that it still serves the
 * slots the discovery saw (as their master, or as a replica of their master
 * after a failover): a resharding or a failover between the discovery and the
 * pull must not archive another shard's data under this shard's name (75: the
 * next run discovers again).
 */
async function shardNodes(conn: RedisConnection, shard: ShardTarget): Promise<{ text: Buffer; nodeId: string }> {
  const reply = await conn.send(['CLUSTER', 'NODES'], 'CLUSTER NODES');
  if (reply instanceof ReplyError) {
    const denied = reply.code === 'NOPERM';
    throw new RedisSourceError(denied ? 'source-auth' : 'source-network', conn.label, 'CLUSTER NODES',
      `${reply.message}${denied ? ' (each shard\'s nodes file needs +cluster|nodes: see "ACL for a backup user" in the README)' : ''}`);
  }
  if (typeof reply !== 'string') throw new RedisSourceError('source-network', conn.label, 'CLUSTER NODES', 'unexpected reply');
  const myself = reply.split(/\r?\n/).find((line) => line.split(' ')[2]?.split(',').includes('myself'));
  const myId = myself?.split(' ')[0] ?? '';
  const isReplica = myself?.split(' ')[2]?.split(',').some((f) => f === 'slave' || f === 'replica') ?? false;
  const ownerId = isReplica ? myself!.split(' ')[3]! : myId;
  const owner = parseClusterNodes(reply).find((s) => s.master?.id === ownerId);
  const serves = owner ? slotsText(owner.ranges) : '';
  if (serves !== shard.slots) {
    throw new TryAgainError('source-changed', conn.label,
      `redis ${conn.label}: the cluster changed since the discovery: this node (${myId.slice(0, 12)}) now serves the slots ${serves || 'none'}, not ${shard.slots} (a resharding or failover): nothing archived for this shard; the next run discovers the cluster again`);
  }
  return { text: Buffer.from(reply, 'utf8'), nodeId: myId };
}

/**
 * Whether the server holds anything not archived yet: its persistence identity
 * (see redisIdentity) against the state's; or min_interval has passed since
 * the last archived snapshot; or --force.
 */
export function decide(info: ServerInfo, cfg: RedisSourceConfig, last: ArchivedRecord | undefined, force: boolean, nowMs: number): Detection {
  const identity = redisIdentity(info);
  // A server whose INFO lacks the change count cannot say "unchanged": pull every time.
  if (info.changesSinceSave < 0) return { changed: true, identity, reason: last ? 'changed' : 'first-snapshot' };
  const detection = detectChange(identity, last?.identity, force);
  if (detection.changed || !cfg.minIntervalMs || !last) return detection;
  const since = nowMs - Date.parse(last.at);
  return Number.isFinite(since) && since >= cfg.minIntervalMs ? { changed: true, identity, reason: 'min-interval' } : detection;
}

export async function pollRedis(instance: InstanceConfig, last: ArchivedRecord | undefined, force: boolean, shard?: ShardTarget): Promise<RedisPoll> {
  const cfg = instance.redis!;
  const info = await serverInfo(cfg, shard?.endpoint);
  const detection = decide(info, cfg, last, force, Date.now());
  const jobFor = (reason: ChangeReason): SnapshotJob => ({
    sourceRdb: instance.sourceRdb,
    identity: detection.identity,
    reason,
    stream: { open: () => openPull(cfg, shard), ...(last ? { estimateBytes: last.bytes } : {}) },
  });
  return { detection, info, jobFor, ...(detection.changed ? { job: jobFor(detection.reason) } : {}) };
}
