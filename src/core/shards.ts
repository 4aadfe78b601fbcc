/**
 * source.redis cluster: true. A cluster instance is archived as one shard
 * per master, each in its own folder under the instance's archive.dir, with
 * its own state, lock, retention and checks: the pipeline sees each shard as
 * an instance of its own (named "<instance>:<shard>").
 *
 * A shard is named by its slot ranges ("slots-0-5460"), never by its
 * master's node id: a failover promotes a replica with another id but the
 * same slots, and the slots are what a restore needs (the RDB holds only keys
 * of those slots). A resharding changes the ranges, so the shard's next
 * event goes to a new folder; the old folder is "retired": kept, still
 * listed, pruned by `prune`, never pulled again and not judged by age.
 *
 * The last discovered topology is kept in the cluster record
 * (<state folder>/cluster.json), so that the commands that work without the
 * network (list, status, check, metrics, verify, restore) know the shards.
 * This module is pure except for reading that record and listing the
 * instance's archive folder (both synchronous, at config load).
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readdirSync, lstatSync } from 'node:fs';
import { readFromStartSync } from './fs.js';
import { createHash } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import type { InstanceConfig } from './config.js';

export const CLUSTER_SLOTS = 16384;

export interface SlotRange {
  start: number;
  end: number;
}

/** A shard's folder name: "slots-" and its slot ranges. Matches every name shardFolderName makes. */
export const SHARD_FOLDER_PATTERN = /^slots-\d+-\d+(?:_\d+-\d+)*(?:-x\d+-[0-9a-f]{12})?$/;

/** Sorted, merged (adjacent ranges join), within 0..16383. */
export function normalizeRanges(ranges: readonly SlotRange[]): SlotRange[] {
  const sorted = ranges.filter((r) => r.start <= r.end && r.start >= 0 && r.end < CLUSTER_SLOTS).map((r) => ({ ...r })).sort((a, b) => a.start - b.start);
  const out: SlotRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
    else out.push(r);
  }
  return out;
}

/** "0-5460,10923-16383" (a single slot as "7-7"): how status, list and metrics show a shard's slots. */
export function slotsText(ranges: readonly SlotRange[]): string {
  return ranges.map((r) => `${r.start}-${r.end}`).join(',');
}

/** "0-5460,10923-16383" -> ranges; undefined when it is not that form. */
export function parseSlotsText(text: string): SlotRange[] | undefined {
  if (!/^\d+-\d+(?:,\d+-\d+)*$/.test(text)) return undefined;
  return text.split(',').map((part) => {
    const [a, b] = part.split('-');
    return { start: Number(a), end: Number(b) };
  });
}

/** A name longer than this would not fit comfortably in paths (255 bytes per name): the long form below. */
const MAX_FOLDER_NAME = 100;

/**
 * The shard's folder: "slots-0-5460", "slots-0-100_200-5460" for several
 * ranges. A shard fragmented into many ranges: its first and last slot, the
 * count of ranges and a hash of all of them ("slots-0-16000-x37-<12 hex>").
 */
export function shardFolderName(ranges: readonly SlotRange[]): string {
  const merged = normalizeRanges(ranges);
  const full = `slots-${merged.map((r) => `${r.start}-${r.end}`).join('_')}`;
  if (full.length <= MAX_FOLDER_NAME) return full;
  const hash = createHash('sha256').update(slotsText(merged)).digest('hex').slice(0, 12);
  return `slots-${merged[0]!.start}-${merged[merged.length - 1]!.end}-x${merged.length}-${hash}`;
}

/** A master as the cluster announces it (CLUSTER SHARDS endpoint/ip and port, or CLUSTER NODES ip:port). */
export interface ShardMaster {
  id: string;
  host: string;
  port: number;
  /** CLUSTER SHARDS health (online, failed, loading) or CLUSTER NODES flags such as "fail". */
  health: string;
}

export interface ShardRecord {
  name: string;
  /** slotsText of the ranges. */
  slots: string;
  master?: ShardMaster;
  replicas: number;
}

/** <state folder>/cluster.json: the topology the last discovery found. */
export interface ClusterRecord {
  version: 1;
  /** The seed URL (no credentials). */
  seed: string;
  /** The last discovery that worked. */
  discoveredAt: string;
  /** Which node answered, and with which command. */
  discoveredFrom: string;
  via: 'CLUSTER SHARDS' | 'CLUSTER NODES';
  shards: ShardRecord[];
  /** Masters that own no slot (a new, empty node): nothing to archive. */
  emptyMasters: ShardMaster[];
  /** Slots no master owns (the cluster does not cover them): their keys are in no backup. */
  uncovered: string;
  /** The last discovery that failed (every candidate node), when it is newer than discoveredAt. */
  lastError?: { at: string; message: string; exitCode: number };
}

export function clusterRecordPath(cluster: InstanceConfig): string {
  return join(dirname(cluster.statePath), 'cluster.json');
}

const MAX_RECORD_BYTES = 4 * 1024 * 1024;

/** The cluster record, or undefined when there is none or it cannot be read as one (the next run rewrites it). */
export function readClusterRecord(cluster: InstanceConfig): ClusterRecord | undefined {
  let fd: number;
  try {
    fd = openSync(clusterRecordPath(cluster), fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const info = fstatSync(fd);
    if (!info.isFile() || info.size > MAX_RECORD_BYTES) return undefined;
    const parsed = JSON.parse(readFromStartSync(fd, info.size).toString('utf8')) as ClusterRecord;
    if (parsed?.version !== 1 || !Array.isArray(parsed.shards)) return undefined;
    const shards = parsed.shards.filter((s) => typeof s?.name === 'string' && SHARD_FOLDER_PATTERN.test(s.name) && typeof s.slots === 'string');
    return { ...parsed, shards, emptyMasters: Array.isArray(parsed.emptyMasters) ? parsed.emptyMasters : [] };
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Shard folders found in the cluster's archive folder (real folders, not symlinks). */
export function shardFoldersOnDisk(cluster: InstanceConfig): string[] {
  let names: string[];
  try {
    names = readdirSync(cluster.archiveDir);
  } catch {
    return [];
  }
  return names.filter((name) => {
    if (!SHARD_FOLDER_PATTERN.test(name)) return false;
    try {
      return lstatSync(join(cluster.archiveDir, name)).isDirectory();
    } catch {
      return false;
    }
  });
}

/** The instance name of a shard: "<instance>:<shard folder>". */
export function shardInstanceName(clusterName: string, shard: string): string {
  return `${clusterName}:${shard}`;
}

export interface ShardOptions {
  slots: string;
  master?: ShardMaster;
  retired: boolean;
  /** Why the shard cannot be pulled in this run (discovery failed): its run fails with this error. */
  failure?: Error;
}

/**
 * The instance that archives one shard: archive.dir/<shard>, its own state
 * (archive.dir/<shard>/.rdb-archiver/state.json, or beside an explicit
 * `state:` file in a folder named after the shard), its own remote prefix
 * (<prefix><shard>/), the master's address as its source.
 */
export function shardInstance(cluster: InstanceConfig, shard: string, options: ShardOptions): InstanceConfig {
  const archiveDir = join(cluster.archiveDir, shard);
  const statePath = cluster.explicitState
    ? join(dirname(cluster.statePath), shard, basename(cluster.statePath))
    : join(archiveDir, '.rdb-archiver', 'state.json');
  const redis = cluster.redis!;
  const scheme = redis.tls ? 'rediss' : 'redis';
  const host = options.master ? (options.master.host.includes(':') ? `[${options.master.host}]` : options.master.host) : undefined;
  return {
    ...cluster,
    name: shardInstanceName(cluster.name, shard),
    sourceRdb: options.master ? `${scheme}://${host}:${options.master.port}` : redis.url,
    archiveDir,
    statePath,
    archiveParent: cluster.archiveDir,
    remotes: cluster.remotes.map((r) => ({ ...r, prefix: `${r.prefix}${shard}/` })),
    shard: {
      cluster: cluster.name,
      name: shard,
      slots: options.slots,
      retired: options.retired,
      ...(options.master ? { master: options.master } : {}),
      ...(options.failure ? { failure: options.failure } : {}),
    },
  };
}

/**
 * The shard instances the commands that read the archive work on: the shards
 * of the last discovered topology, then any other shard folder (retired by a
 * resharding). Without either (no run yet): the cluster instance itself,
 * which `check` then reports as never archived.
 */
export function expandCluster(cluster: InstanceConfig): InstanceConfig[] {
  const record = readClusterRecord(cluster);
  const current = record?.shards ?? [];
  const out = current.map((s) => shardInstance(cluster, s.name, { slots: s.slots, retired: false, ...(s.master ? { master: s.master } : {}) }));
  const known = new Set(current.map((s) => s.name));
  for (const name of shardFoldersOnDisk(cluster).sort(byFirstSlot)) {
    if (known.has(name)) continue;
    out.push(shardInstance(cluster, name, { slots: slotsOfFolder(name), retired: true }));
  }
  return out.length > 0 ? out : [cluster];
}

/** The slots a folder name states ("" for the hashed long form: the archive records hold them). */
export function slotsOfFolder(name: string): string {
  if (/-x\d+-[0-9a-f]{12}$/.test(name)) return '';
  return name.slice('slots-'.length).split('_').join(',');
}

function firstSlot(name: string): number {
  return Number(/^slots-(\d+)/.exec(name)?.[1] ?? 0);
}

export function byFirstSlot(a: string, b: string): number {
  return firstSlot(a) - firstSlot(b) || a.localeCompare(b);
}
