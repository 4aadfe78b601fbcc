/** The pure parts of source.redis cluster: true: topology parsing, shard names, the shard instances, parallel lanes. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { expandInstances, loadConfig } from '../../src/core/config.js';
import { clusterRecordPath, expandCluster, normalizeRanges, shardFolderName, SHARD_FOLDER_PATTERN, slotsOfFolder } from '../../src/core/shards.js';
import { failedShards, inParallel, planShards } from '../../src/pipeline/cluster-run.js';
import { parseClusterNodes, parseClusterShards, topologyRecord, uncoveredSlots } from '../../src/sources/cluster.js';

const NODES = [
  'a1 10.0.0.1:6379@16379,host-a master - 0 0 1 connected 0-5460',
  'b2 10.0.0.2:6379@16379 myself,master - 0 0 2 connected 5461-10922 [10923->-c3]',
  'c3 10.0.0.3:6380@16380 master,fail - 0 0 3 connected 10923-16383',
  'd4 10.0.0.4:6379@16379 slave a1 0 0 1 connected',
  'e5 :0@0 master,noaddr - 0 0 0 disconnected',
  'f6 10.0.0.6:6379@16379 master - 0 0 0 connected',
  '',
].join('\n');

describe('CLUSTER NODES', () => {
  it('finds each master with its slots (migrating marks are not owned), its replicas, and its health', () => {
    const shards = parseClusterNodes(NODES);
    expect(shards.map((s) => [s.master!.id, s.master!.host, s.master!.port, s.master!.health, s.ranges, s.replicas.map((r) => r.id)])).toEqual([
      ['a1', '10.0.0.1', 6379, 'online', [{ start: 0, end: 5460 }], ['d4']],
      ['b2', '10.0.0.2', 6379, 'online', [{ start: 5461, end: 10922 }], []],
      ['c3', '10.0.0.3', 6380, 'fail', [{ start: 10923, end: 16383 }], []],
      ['f6', '10.0.0.6', 6379, 'online', [], []],
    ]);
    const record = topologyRecord('redis://seed:6379', 'seed:6379', 'CLUSTER NODES', shards, 0);
    expect(record.shards.map((s) => s.name)).toEqual(['slots-0-5460', 'slots-5461-10922', 'slots-10923-16383']);
    expect(record.emptyMasters.map((m) => m.id)).toEqual(['f6']);
    expect(record.uncovered).toBe('');
  });
});

describe('CLUSTER SHARDS', () => {
  const node = (id: string, role: string, extra: Array<string | number>) => ['id', id, 'ip', '10.0.0.9', 'endpoint', 'redis-a.internal', 'role', role, 'replication-offset', 5, 'health', 'online', ...extra];
  const reply = [
    ['slots', [0, 100, 200, 5460], 'nodes', [node('m1', 'master', ['port', 6379, 'tls-port', 6390]), node('r1', 'replica', ['port', 6379])]],
    ['slots', [101, 199], 'nodes', [['id', 'm2', 'ip', '10.0.0.8', 'endpoint', '?', 'port', 7000, 'role', 'master', 'health', 'failed']]],
  ];
  it('uses the announced endpoint (the ip when it is "?"), port or tls-port over TLS; merges adjacent ranges', () => {
    const plain = parseClusterShards(reply, false);
    expect(plain[0]!.master).toMatchObject({ id: 'm1', host: 'redis-a.internal', port: 6379 });
    expect(plain[0]!.replicas.map((r) => r.id)).toEqual(['r1']);
    expect(plain[1]!.master).toMatchObject({ id: 'm2', host: '10.0.0.8', port: 7000, health: 'failed' });
    expect(parseClusterShards(reply, true)[0]!.master!.port).toBe(6390);
    expect(normalizeRanges([{ start: 200, end: 300 }, { start: 0, end: 100 }, { start: 101, end: 199 }])).toEqual([{ start: 0, end: 300 }]);
    expect(uncoveredSlots(plain)).toBe('5461-16383');
  });
});

describe('shard names', () => {
  it('are the slot ranges; a fragmented shard gets a short hashed name; every name matches the folder pattern', () => {
    expect(shardFolderName([{ start: 0, end: 5460 }])).toBe('slots-0-5460');
    expect(shardFolderName([{ start: 200, end: 300 }, { start: 0, end: 100 }])).toBe('slots-0-100_200-300');
    const many = Array.from({ length: 40 }, (_, i) => ({ start: i * 10, end: i * 10 + 4 }));
    const long = shardFolderName(many);
    expect(long).toMatch(/^slots-0-394-x40-[0-9a-f]{12}$/);
    for (const name of ['slots-0-5460', 'slots-0-100_200-300', long]) expect(SHARD_FOLDER_PATTERN.test(name)).toBe(true);
    for (const bad of ['slots-', 'slots-0', 'hourly', 'slots-0-5/../x']) expect(SHARD_FOLDER_PATTERN.test(bad)).toBe(false);
    expect(slotsOfFolder('slots-0-100_200-300')).toBe('0-100,200-300');
    expect(slotsOfFolder(long)).toBe('');
  });
});

describe('shard instances', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const clusterConfig = (extra = '') => {
    const dir = mkdtempSync(join(tmpdir(), 'rdb-cluster-unit-'));
    dirs.push(dir);
    const file = join(dir, 'config.yaml');
    writeFileSync(file, `source:\n  redis:\n    url: redis://10.0.0.1:6379\n    cluster: true\n    max_parallel: 3\narchive:\n  dir: ${dir}/archive\nremotes:\n  - { name: s3, type: s3, bucket: backups, prefix: prod/ }\n${extra}`, { mode: 0o600 });
    return { dir, config: loadConfig({ config: file }) };
  };

  it('before any run: the cluster instance itself; after a discovery: one instance per shard, with its own folder, state, remote prefix; other shard folders are retired', () => {
    const { dir, config } = clusterConfig();
    expect(config.instances.map((i) => i.name)).toEqual(['default']);
    expect(config.configured[0]!.redis!.maxParallel).toBe(3);
    const cluster = config.configured[0]!;
    const record = topologyRecord('redis://10.0.0.1:6379', '10.0.0.1:6379', 'CLUSTER NODES', parseClusterNodes(NODES), 0);
    mkdirSync(join(dir, 'archive', '.rdb-archiver'), { recursive: true });
    writeFileSync(clusterRecordPath(cluster), JSON.stringify(record));
    mkdirSync(join(dir, 'archive', 'slots-0-8191', 'last'), { recursive: true }); // a shard before a resharding
    mkdirSync(join(dir, 'archive', 'not-a-shard'));
    const shards = expandCluster(cluster);
    expect(shards.map((s) => [s.name, s.shard!.retired])).toEqual([
      ['default:slots-0-5460', false], ['default:slots-5461-10922', false], ['default:slots-10923-16383', false], ['default:slots-0-8191', true],
    ]);
    const first = shards[0]!;
    expect(first.archiveDir).toBe(join(dir, 'archive', 'slots-0-5460'));
    expect(first.statePath).toBe(join(dir, 'archive', 'slots-0-5460', '.rdb-archiver', 'state.json'));
    expect(first.remotes[0]!.prefix).toBe('prod/slots-0-5460/');
    expect(first.sourceRdb).toBe('redis://10.0.0.1:6379');
    expect(first.shard).toMatchObject({ cluster: 'default', slots: '0-5460', master: { id: 'a1', host: '10.0.0.1', port: 6379 } });
    // Already expanded instances are not expanded again.
    expect(expandInstances(shards).map((s) => s.name)).toEqual(shards.map((s) => s.name));
    // --instance NAME:SHARD
    const file = join(dir, 'config.yaml');
    expect(loadConfig({ config: file, instance: 'default:slots-5461-10922' }).instances.map((i) => i.name)).toEqual(['default:slots-5461-10922']);
    expect(() => loadConfig({ config: file, instance: 'default:slots-1-2' })).toThrow(/no shard "slots-1-2"/);

    expect(planShards(cluster, record, 'default:slots-10923-16383').map((s) => s.shard!.master!.id)).toEqual(['c3']);
    const failure = new Error('seed down');
    expect(failedShards(cluster, record, failure).map((s) => s.shard!.failure)).toEqual([failure, failure, failure]);
    expect(failedShards(cluster, undefined, failure).map((s) => [s.name, s.shard!.failure])).toEqual([['default', failure]]);
  });

  it('an explicit state file: each shard\'s state sits beside it in a folder named after the shard', () => {
    const { dir, config } = clusterConfig(`state: ${'/var/lib/rdb-archiver/cache/state.json'}\n`);
    const record = topologyRecord('redis://10.0.0.1:6379', '10.0.0.1:6379', 'CLUSTER NODES', parseClusterNodes(NODES), 0);
    const shard = planShards(config.configured[0]!, record)[0]!;
    expect(shard.statePath).toBe('/var/lib/rdb-archiver/cache/slots-0-5460/state.json');
    expect(shard.archiveDir).toBe(join(dir, 'archive', 'slots-0-5460'));
  });
});

describe('inParallel', () => {
  it('never runs more than the limit at once and keeps the order of results', async () => {
    let running = 0;
    let most = 0;
    const results = await inParallel([5, 1, 4, 2, 3], 2, async (n) => {
      running += 1;
      most = Math.max(most, running);
      await new Promise((resolve) => setTimeout(resolve, n * 3));
      running -= 1;
      return n * 10;
    });
    expect(results).toEqual([50, 10, 40, 20, 30]);
    expect(most).toBe(2);
  });
});
