/**
 * The watcher's counterpart for source.redis mode replicate: "has anything
 * changed since the last archived snapshot?" answered from INFO (one small
 * command, no fork on the server), and a job that pulls the snapshot when it
 * has. Loaded only for instances with source.redis (see cycle.ts).
 */
import type { InstanceConfig, RedisSourceConfig } from '../core/config.js';
import type { ArchivedRecord } from '../pipeline/state.js';
import { detectChange, type ChangeReason, type Detection, type SnapshotJob } from '../pipeline/watcher.js';
import type { Endpoint } from './connection.js';
import { connectRedis, readServerInfo, redisIdentity, startPull, type ServerInfo } from './redis.js';
import type { StreamedSnapshot } from './source.js';

export interface RedisPoll {
  detection: Detection;
  job?: SnapshotJob;
  /** A job for this source whatever the detection said (the last archived event's files are gone). */
  jobFor(reason: ChangeReason): SnapshotJob;
  info: ServerInfo;
}

/** Connects, reads INFO, closes. */
export async function serverInfo(cfg: RedisSourceConfig, endpoint?: Endpoint): Promise<ServerInfo> {
  const conn = await connectRedis(cfg, Date.now() + cfg.timeoutMs, endpoint);
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
export async function openPull(cfg: RedisSourceConfig, endpoint?: Endpoint, nodes?: Buffer, slots?: string): Promise<StreamedSnapshot> {
  const conn = await connectRedis(cfg, Date.now() + cfg.timeoutMs, endpoint);
  try {
    const info = await readServerInfo(conn);
    const url = endpoint ? `${cfg.tls ? 'rediss' : 'redis'}://${endpoint.host}:${endpoint.port}` : cfg.url;
    const snapshot = await startPull(conn, url, info);
    if (slots) snapshot.facts.slots = slots;
    return nodes ? { ...snapshot, nodes } : snapshot;
  } catch (err) {
    conn.close();
    throw err;
  }
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

export async function pollRedis(instance: InstanceConfig, last: ArchivedRecord | undefined, force: boolean, endpoint?: Endpoint, nodes?: Buffer, slots?: string): Promise<RedisPoll> {
  const cfg = instance.redis!;
  const info = await serverInfo(cfg, endpoint);
  const detection = decide(info, cfg, last, force, Date.now());
  const jobFor = (reason: ChangeReason): SnapshotJob => ({
    sourceRdb: instance.sourceRdb,
    identity: detection.identity,
    reason,
    stream: { open: () => openPull(cfg, endpoint, nodes, slots), ...(last ? { estimateBytes: last.bytes } : {}) },
  });
  return { detection, info, jobFor, ...(detection.changed ? { job: jobFor(detection.reason) } : {}) };
}
