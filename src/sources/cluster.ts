/**
 * source.redis cluster: true: which masters hold which slots.
 *
 * CLUSTER SHARDS (Redis 7.0+) is asked first; a server that does not know it
 * (Redis 6, or an ACL that allows only `cluster|nodes`) is asked CLUSTER
 * NODES. The seed URL is tried first, then the nodes the last discovery
 * found (the seed may be the master that is down). Every node is reached
 * with the seed's user, password and TLS settings, at the address the
 * cluster announces: CLUSTER SHARDS' `endpoint` (its `ip` when the endpoint
 * is unknown) and `port`, or `tls-port` over TLS; CLUSTER NODES' ip:port. A
 * node behind NAT must announce an address the archiver can reach
 * (cluster-announce-ip / cluster-announce-port / cluster-preferred-endpoint-type).
 *
 * The parsers are pure; discoverCluster is the only I/O.
 */
import { ConfigError, RedisSourceError } from '../core/errors.js';
import type { RedisSourceConfig } from '../core/config.js';
import { normalizeRanges, shardFolderName, slotsText, CLUSTER_SLOTS, type ClusterRecord, type ShardMaster, type SlotRange } from '../core/shards.js';
import { endpointLabel, type Endpoint } from './connection.js';
import { connectRedis, endpointOf } from './redis.js';
import { ReplyError, type Reply } from './resp.js';

export interface ClusterNodeInfo extends ShardMaster {
  role: 'master' | 'replica';
}

export interface DiscoveredShard {
  ranges: SlotRange[];
  master?: ClusterNodeInfo;
  replicas: ClusterNodeInfo[];
}

/** A flat [key, value, key, value...] array (RESP2 maps) as an object. */
function pairs(list: Reply): Map<string, Reply> {
  const out = new Map<string, Reply>();
  if (!Array.isArray(list)) return out;
  for (let i = 0; i + 1 < list.length; i += 2) out.set(String(list[i]), list[i + 1]!);
  return out;
}

function portOf(value: Reply | undefined): number | undefined {
  const n = Number(value);
  return Number.isInteger(n) && n > 0 && n < 65536 ? n : undefined;
}

/** CLUSTER SHARDS' reply -> shards. Over TLS a node's tls-port is used, else its port. */
export function parseClusterShards(reply: Reply, tls: boolean): DiscoveredShard[] {
  if (!Array.isArray(reply)) throw new Error('CLUSTER SHARDS: the reply is not a list');
  return reply.map((entry) => {
    const shard = pairs(entry);
    const slotList = shard.get('slots');
    const ranges: SlotRange[] = [];
    if (Array.isArray(slotList)) {
      for (let i = 0; i + 1 < slotList.length; i += 2) ranges.push({ start: Number(slotList[i]), end: Number(slotList[i + 1]) });
    }
    const nodes: ClusterNodeInfo[] = [];
    const nodeList = shard.get('nodes');
    for (const raw of Array.isArray(nodeList) ? nodeList : []) {
      const n = pairs(raw);
      const endpoint = String(n.get('endpoint') ?? '');
      const ip = String(n.get('ip') ?? '');
      const host = endpoint !== '' && endpoint !== '?' ? endpoint : ip;
      const port = tls ? (portOf(n.get('tls-port')) ?? portOf(n.get('port'))) : (portOf(n.get('port')) ?? portOf(n.get('tls-port')));
      if (host === '' || port === undefined) continue;
      nodes.push({ id: String(n.get('id') ?? ''), host, port, role: n.get('role') === 'master' ? 'master' : 'replica', health: String(n.get('health') ?? 'unknown') });
    }
    const master = nodes.find((n) => n.role === 'master');
    return { ranges: normalizeRanges(ranges), ...(master ? { master } : {}), replicas: nodes.filter((n) => n.role === 'replica') };
  });
}

/**
 * CLUSTER NODES' text -> shards (one per master). Lines:
 * `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`;
 * slots are "0-5460" or "7"; "[slot->-id]" / "[slot-<-id]" (migrating, importing) are not owned.
 */
export function parseClusterNodes(text: string): DiscoveredShard[] {
  const masters = new Map<string, DiscoveredShard>();
  const replicas: Array<{ of: string; node: ClusterNodeInfo }> = [];
  for (const line of text.split(/\r?\n/)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [id, address, flagText, masterId] = f as [string, string, string, string];
    const flags = flagText.split(',');
    const addr = /^(.*):(\d+)(?:@\d+)?(?:,.*)?$/.exec(address);
    const host = addr?.[1]?.replace(/^\[(.*)\]$/, '$1') ?? '';
    const port = Number(addr?.[2] ?? 0);
    const health = flags.includes('fail') ? 'fail' : flags.includes('fail?') ? 'fail?' : flags.includes('handshake') ? 'handshake' : 'online';
    const node = { id, host, port, health };
    if (flags.includes('noaddr') || host === '' || port === 0) continue;
    if (flags.includes('master')) {
      const ranges: SlotRange[] = [];
      for (const slot of f.slice(8)) {
        if (slot.startsWith('[')) continue;
        const m = /^(\d+)(?:-(\d+))?$/.exec(slot);
        if (m) ranges.push({ start: Number(m[1]), end: Number(m[2] ?? m[1]) });
      }
      masters.set(id, { ranges: normalizeRanges(ranges), master: { ...node, role: 'master' }, replicas: [] });
    } else if (flags.includes('slave') || flags.includes('replica')) {
      replicas.push({ of: masterId, node: { ...node, role: 'replica' } });
    }
  }
  for (const r of replicas) masters.get(r.of)?.replicas.push(r.node);
  return [...masters.values()];
}

/** The slots no shard covers, as "a-b,c-d" ("" when all 16384 are). */
export function uncoveredSlots(shards: readonly DiscoveredShard[]): string {
  const covered = normalizeRanges(shards.flatMap((s) => s.ranges));
  const gaps: SlotRange[] = [];
  let next = 0;
  for (const r of covered) {
    if (r.start > next) gaps.push({ start: next, end: r.start - 1 });
    next = r.end + 1;
  }
  if (next < CLUSTER_SLOTS) gaps.push({ start: next, end: CLUSTER_SLOTS - 1 });
  return slotsText(gaps);
}

/** The record of a discovery: shards (those with slots) by folder name, sorted by their first slot. */
export function topologyRecord(seed: string, from: string, via: ClusterRecord['via'], shards: readonly DiscoveredShard[], nowMs: number): ClusterRecord {
  const strip = (n: ClusterNodeInfo): ShardMaster => ({ id: n.id, host: n.host, port: n.port, health: n.health });
  const owning = shards.filter((s) => s.ranges.length > 0).sort((a, b) => a.ranges[0]!.start - b.ranges[0]!.start);
  return {
    version: 1,
    seed,
    discoveredAt: new Date(nowMs).toISOString(),
    discoveredFrom: from,
    via,
    shards: owning.map((s) => ({ name: shardFolderName(s.ranges), slots: slotsText(s.ranges), ...(s.master ? { master: strip(s.master) } : {}), replicas: s.replicas.length })),
    emptyMasters: shards.filter((s) => s.ranges.length === 0 && s.master).map((s) => strip(s.master!)),
    uncovered: uncoveredSlots(shards),
  };
}

/** Asks one node; CLUSTER SHARDS first, CLUSTER NODES when that is unknown or not allowed. */
async function askNode(cfg: RedisSourceConfig, endpoint: Endpoint, deadline: number): Promise<{ via: ClusterRecord['via']; shards: DiscoveredShard[] }> {
  const conn = await connectRedis(cfg, deadline, endpoint);
  try {
    const shardsReply = await conn.send(['CLUSTER', 'SHARDS'], 'CLUSTER SHARDS');
    if (!(shardsReply instanceof ReplyError)) return { via: 'CLUSTER SHARDS', shards: parseClusterShards(shardsReply, !!cfg.tls) };
    if (/cluster support disabled/i.test(shardsReply.message)) throw notACluster(conn.label);
    const nodesReply = await conn.send(['CLUSTER', 'NODES'], 'CLUSTER NODES');
    if (nodesReply instanceof ReplyError) {
      if (/cluster support disabled/i.test(nodesReply.message)) throw notACluster(conn.label);
      const denied = nodesReply.code === 'NOPERM' || shardsReply.code === 'NOPERM';
      throw new RedisSourceError(denied ? 'source-auth' : 'source-network', conn.label, 'CLUSTER NODES',
        `${nodesReply.message}${denied ? ' (the ACL user needs +cluster|shards or +cluster|nodes: see "ACL for a backup user" in the README)' : ''}; CLUSTER SHARDS answered: ${shardsReply.message}`);
    }
    if (typeof nodesReply !== 'string') throw new RedisSourceError('source-network', conn.label, 'CLUSTER NODES', 'unexpected reply');
    return { via: 'CLUSTER NODES', shards: parseClusterNodes(nodesReply) };
  } finally {
    conn.close();
  }
}

function notACluster(label: string): ConfigError {
  return new ConfigError(undefined, 'source.redis.cluster', `is true, but ${label} has cluster support disabled (cluster-enabled no): set cluster: false to archive it as one server`);
}

/**
 * Discovers the cluster from the seed, else from the nodes the last record
 * names. A refused password or ACL (exit 78) and "not a cluster" (exit 2)
 * end the search at once: every node shares them. Otherwise the seed's
 * error is the one thrown when no node answers.
 */
export async function discoverCluster(cfg: RedisSourceConfig, previous: ClusterRecord | undefined, nowMs = Date.now()): Promise<ClusterRecord> {
  const deadline = Date.now() + cfg.timeoutMs;
  const candidates: Array<{ host: string; port: number }> = [{ host: cfg.host, port: cfg.port }];
  for (const s of previous?.shards ?? []) if (s.master) candidates.push({ host: s.master.host, port: s.master.port });
  const seen = new Set<string>();
  let firstError: unknown;
  const tried: string[] = [];
  for (const c of candidates) {
    const key = `${c.host}:${c.port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const endpoint = endpointOf(cfg, c.host, c.port);
    try {
      const { via, shards } = await askNode(cfg, endpoint, deadline);
      const from = endpointLabel(endpoint);
      if (shards.every((s) => s.ranges.length === 0)) {
        throw new RedisSourceError('source-network', from, via, 'no master owns any slot: the cluster is not set up yet (redis-cli --cluster create), nothing to archive');
      }
      return topologyRecord(cfg.url, from, via, shards, nowMs);
    } catch (err) {
      if (err instanceof ConfigError || (err instanceof RedisSourceError && err.kind === 'source-auth')) throw err;
      firstError ??= err;
      tried.push(key);
    }
  }
  if (firstError instanceof Error && tried.length > 1) firstError.message += ` (no other known node answered either: ${tried.slice(1).join(', ')})`;
  throw firstError;
}
