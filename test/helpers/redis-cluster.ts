/**
 * A real Redis Cluster for tests: N masters (no replicas) on 127.0.0.1, each
 * a redis-server started by startRedis (so registerRedisCleanup stops them
 * all), joined by `redis-cli --cluster create … --cluster-yes`. Also the key
 * slot function (CRC16/XMODEM of the key or its {hash tag}, mod 16384), so a
 * test can write each key on the master that owns it and check that a
 * restored shard holds only keys of its slots.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, parseInfo, startRedis, waitFor, type RedisServer } from './redis.js';

export const REDIS_CLI = process.env.REDIS_CLI ?? 'redis-cli';

/** CRC16-CCITT (XMODEM): polynomial 0x1021, initial 0, as Redis Cluster hashes keys. */
export function crc16(data: Buffer): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The cluster slot of a key: the {hash tag} when it has a non-empty one, else the whole key. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) return crc16(Buffer.from(key.slice(open + 1, close))) % 16384;
  }
  return crc16(Buffer.from(key)) % 16384;
}

export interface ClusterMaster {
  server: RedisServer;
  id: string;
  /** Slot ranges, sorted. */
  ranges: Array<[number, number]>;
}

export interface TestCluster {
  masters: ClusterMaster[];
  /** The master that owns a slot. */
  ownerOf(slot: number): ClusterMaster;
  /** Writes each key (SET key value) on the master that owns its slot. */
  setAll(entries: ReadonlyArray<[string, string]>): Promise<void>;
}

/** Slots "0-5460" as text, the way the archiver names shard folders: "slots-0-5460". */
export function folderOf(master: ClusterMaster): string {
  return `slots-${master.ranges.map(([a, b]) => `${a}-${b}`).join('_')}`;
}

export async function startCluster(dir: string, count = 3, extraArgs: string[] = []): Promise<TestCluster> {
  const servers: RedisServer[] = [];
  for (let i = 0; i < count; i++) {
    const nodeDir = join(dir, `node-${i}`);
    mkdirSync(nodeDir, { recursive: true });
    // The bus on a port of its own (Redis 7: cluster-port), not port + 10000, which may be taken.
    servers.push(await startRedis(nodeDir, {
      args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(await freePort()),
        '--cluster-node-timeout', '5000', '--repl-diskless-sync-delay', '0', ...extraArgs],
    }));
  }
  const create = spawnSync(REDIS_CLI, ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8', timeout: 60_000 });
  if (create.status !== 0) throw new Error(`redis-cli --cluster create failed (${create.status ?? create.signal}): ${create.stdout}\n${create.stderr}`);
  // Every node must see the whole cluster (slots and all nodes) before a test asks any of them.
  await waitFor('the cluster to be ok on every node', async () => {
    for (const s of servers) {
      const info = parseInfo(String(await s.call('CLUSTER', 'INFO')));
      if (info.cluster_state !== 'ok' || Number(info.cluster_known_nodes) !== count) return false;
    }
    return true;
  }, 30_000, 100);

  const masters: ClusterMaster[] = [];
  for (const server of servers) {
    const nodes = String(await server.call('CLUSTER', 'NODES'));
    const mine = nodes.split('\n').find((l) => l.split(' ')[2]?.split(',').includes('myself'))!.split(' ');
    const ranges = mine.slice(8).filter((s) => !s.startsWith('[')).map((s): [number, number] => {
      const [a, b] = s.split('-');
      return [Number(a), Number(b ?? a)];
    }).sort((x, y) => x[0] - y[0]);
    masters.push({ server, id: mine[0]!, ranges });
  }
  const ownerOf = (slot: number) => masters.find((m) => m.ranges.some(([a, b]) => slot >= a && slot <= b))!;
  return {
    masters,
    ownerOf,
    async setAll(entries) {
      const byMaster = new Map<ClusterMaster, Array<[string, string]>>();
      for (const e of entries) {
        const m = ownerOf(keySlot(e[0]));
        byMaster.set(m, [...(byMaster.get(m) ?? []), e]);
      }
      for (const [m, list] of byMaster) await m.server.client.pipeline(list.map(([k, v]) => ['SET', k, v]));
    },
  };
}
