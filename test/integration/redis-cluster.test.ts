/**
 * source.redis cluster: true against a real 3-master Redis Cluster on
 * loopback (test/helpers/redis-cluster.ts): discovery, one event per shard in
 * its own folder with the shard's CLUSTER NODES as the nodes file, restores
 * that match each master's digest and hold only keys of its slots, a real
 * ACL backup user, an unchanged second run that pulls nothing, a dry run's
 * plan, and one master down: the other shards still archive, the run exits
 * 68, and check, status and the metrics name the failing shard.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { describeWithRedis, registerRedisCleanup, startRedis, type RedisServer } from '../helpers/redis.js';
import { startCli } from '../helpers/daemon.js';
import { folderOf, keySlot, startCluster, type ClusterMaster } from '../helpers/redis-cluster.js';

registerRedisCleanup();

interface ShardRun {
  instance: string;
  status: string;
  shard?: { name: string; slots: string; master: string | null; masterId: string | null };
  snapshot: { ts: string } | null;
  error?: { message: string; exitCode: number };
  exitCode: number;
}
interface ManyJson {
  instances: ShardRun[];
  exitCode: number;
}

const PASSWORD = 'cluster-Backup-pass-9';
/** What the README documents for a backup user of a cluster (ACLs are per node: set on every master). */
const BACKUP_ACL = ['on', `>${PASSWORD}`, 'resetkeys', '-@all', '+ping', '+info', '+time', '+replconf', '+psync', '+sync', '+cluster|shards', '+cluster|nodes'];

async function fullSyncs(server: RedisServer): Promise<number> {
  return Number((await server.info('stats')).sync_full);
}

function writeConfig(dir: string, seedPort: number, user: string, extra = ''): string {
  const passFile = join(dir, 'redis.pass');
  writeFileSync(passFile, `${PASSWORD}\n`);
  chmodSync(passFile, 0o600);
  const path = join(dir, 'config.yaml');
  writeFileSync(path, [
    'source:',
    '  redis:',
    `    url: redis://${user}@127.0.0.1:${seedPort}`,
    `    password_file: ${passFile}`,
    '    cluster: true',
    '    max_parallel: 2',
    'archive:',
    `  dir: ${join(dir, 'archive')}`,
    '  create: true',
    'rules:',
    '  - { name: last, count: 5 }',
    'metrics:',
    `  textfile: ${join(dir, 'metrics.prom')}`,
    extra,
  ].join('\n'));
  return path;
}

/** The shard folder's archived .rdb files (final names only). */
function rdbsOf(dir: string, shard: string): string[] {
  const folder = join(dir, 'archive', shard, 'last');
  return existsSync(folder) ? readdirSync(folder).filter((n) => /^dump-.*\.rdb$/.test(n)).sort().map((n) => join(folder, n)) : [];
}

/** Loads an RDB into a fresh (non-cluster) server; returns DEBUG DIGEST and every key. */
async function loadRdb(rdb: string): Promise<{ digest: string; keys: string[] }> {
  const dir = tempDir('rdb-cluster-restore-');
  copyFileSync(rdb, join(dir, 'dump.rdb'));
  const server = await startRedis(dir);
  try {
    return { digest: String(await server.call('DEBUG', 'DIGEST')), keys: (await server.call('KEYS', '*')) as string[] };
  } finally {
    await server.stop();
  }
}

interface ProbeJson {
  instances: Array<{ instance: string; findings: Array<{ check: string; verdict: string; reason: string }> }>;
}
const shardFindings = (probe: ProbeJson) => probe.instances.flatMap((i) => i.findings).filter((f) => f.check.startsWith('source.redis shard '));

const inRanges = (m: ClusterMaster, slot: number) => m.ranges.some(([a, b]) => slot >= a && slot <= b);

describeWithRedis('source.redis cluster: true (a real 3-master cluster)', () => {
  it('archives one event per shard; each restores to its master\'s digest with only its slots\' keys; unchanged shards are not pulled; a dead master fails alone (exit 68) and check names it', async () => {
    const dir = tempDir();
    const cluster = await startCluster(join(dir, 'nodes'));
    const entries: Array<[string, string]> = [];
    for (let i = 0; i < 900; i++) entries.push([`key:${i}`, `value-${i}`]);
    await cluster.setAll(entries);
    for (const m of cluster.masters) {
      await m.server.call('ACL', 'SETUSER', 'backup', ...BACKUP_ACL);
      // A user with everything a single server's pull needs, but neither cluster subcommand.
      await m.server.call('ACL', 'SETUSER', 'nocluster', 'on', `>${PASSWORD}`, 'resetkeys', '-@all', '+ping', '+info', '+time', '+replconf', '+psync', '+sync');
      // CLUSTER NODES only (as on Redis 6, which has no CLUSTER SHARDS): the discovery falls back to it.
      await m.server.call('ACL', 'SETUSER', 'nodesonly', 'on', `>${PASSWORD}`, 'resetkeys', '-@all', '+ping', '+info', '+time', '+replconf', '+psync', '+sync', '+cluster|nodes');
      expect(Number(await m.server.call('DBSIZE'))).toBeGreaterThan(200); // data in every shard
    }
    // Our CRC16 agrees with the server's CLUSTER KEYSLOT.
    for (const key of ['key:1', 'key:77', '{user}:x', 'a{}b']) expect(await cluster.masters[0]!.server.call('CLUSTER', 'KEYSLOT', key)).toBe(keySlot(key));
    const seed = cluster.masters[0]!;
    const config = writeConfig(dir, seed.server.port, 'backup');

    // The dry run's plan: every shard, its slots and master; nothing pulled, nothing written.
    const syncsBefore = await Promise.all(cluster.masters.map((m) => fullSyncs(m.server)));
    const plan = await runCli(['once', '--dry-run', '--json', '--config', config]);
    expect(plan.code, plan.stderr).toBe(0);
    const planned = jsonOf<ManyJson>(plan).instances;
    expect(planned.map((r) => r.status)).toEqual(['would-archive', 'would-archive', 'would-archive']);
    expect(planned.map((r) => r.shard!.name).sort()).toEqual(cluster.masters.map(folderOf).sort());
    for (const r of planned) {
      const m = cluster.masters.find((x) => folderOf(x) === r.shard!.name)!;
      expect(r.shard).toMatchObject({ master: `redis://127.0.0.1:${m.server.port}`, masterId: m.id });
    }
    // The same plan for a person: a section per shard naming its slots and master.
    const planText = await runCli(['once', '--dry-run', '--config', config, '--log-level', 'error']);
    expect(planText.code, planText.stderr).toBe(0);
    for (const m of cluster.masters) {
      const slots = m.ranges.map(([a, b]) => `${a}-${b}`).join(',');
      expect(planText.stdout).toContain(`[default:${folderOf(m)}]\nshard ${folderOf(m)}: slots ${slots} from master redis://127.0.0.1:${m.server.port} (node ${m.id.slice(0, 12)})\nwould archive:`);
    }
    expect(await Promise.all(cluster.masters.map((m) => fullSyncs(m.server)))).toEqual(syncsBefore);

    // The real run: three events, each in its shard's folder.
    const first = await runCli(['once', '--json', '--config', config]);
    expect(first.code, first.stderr).toBe(0);
    const runs = jsonOf<ManyJson>(first).instances;
    expect(runs.map((r) => r.status)).toEqual(['archived', 'archived', 'archived']);
    expect(runs.map((r) => r.instance)).toEqual(cluster.masters.map((m) => `default:${folderOf(m)}`).sort((a, b) => Number(/slots-(\d+)/.exec(a)![1]) - Number(/slots-(\d+)/.exec(b)![1])));
    for (const m of cluster.masters) {
      const shard = folderOf(m);
      const rdbs = rdbsOf(dir, shard);
      expect(rdbs, shard).toHaveLength(1);
      expect(spawnSync('redis-check-rdb', [rdbs[0]!]).status).toBe(0);
      // The nodes file is this master's CLUSTER NODES (its own line flagged myself).
      const nodesFile = rdbs[0]!.replace(/dump-(.*)\.rdb$/, 'nodes-$1.config');
      const nodes = readFileSync(nodesFile, 'utf8');
      expect(nodes.split('\n').find((l) => l.includes('myself'))!.split(' ')[0]).toBe(m.id);
      // Restored, it is the master's data, and only keys of the master's slots.
      const restored = await loadRdb(rdbs[0]!);
      expect(restored.digest, shard).toBe(String(await m.server.call('DEBUG', 'DIGEST')));
      expect(restored.keys.length).toBe(Number(await m.server.call('DBSIZE')));
      for (const key of restored.keys) expect(inRanges(m, keySlot(key)), `${key} in ${shard}`).toBe(true);
    }
    // restore per shard through the CLI, with its nodes file.
    const one = cluster.masters[1]!;
    const restore = await runCli(['restore', 'latest', '--to', join(dir, 'restored.rdb'), '--nodes-to', join(dir, 'restored-nodes.conf'), '--instance', `default:${folderOf(one)}`, '--config', config]);
    expect(restore.code, restore.stderr).toBe(0);
    expect((await loadRdb(join(dir, 'restored.rdb'))).digest).toBe(String(await one.server.call('DEBUG', 'DIGEST')));
    expect(readFileSync(join(dir, 'restored-nodes.conf'), 'utf8')).toContain(`${one.id} 127.0.0.1:${one.server.port}@`);

    // status names each shard; check is OK.
    const status = jsonOf<{ instances: Array<{ instance: string; shard: { slots: string; retired: boolean } }> }>(await runCli(['status', '--json', '--config', config]));
    expect(status.instances.map((s) => s.shard.slots).sort()).toEqual(cluster.masters.map((m) => m.ranges.map(([a, b]) => `${a}-${b}`).join(',')).sort());
    const okCheck = await runCli(['check', '--config', config]);
    expect(okCheck.code, okCheck.stdout).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, 'archive', '.rdb-archiver', 'cluster.json'), 'utf8'))).toMatchObject({ via: 'CLUSTER SHARDS', discoveredFrom: `127.0.0.1:${seed.server.port}` });
    // config check discovers the cluster and probes every master.
    const probe = jsonOf<ProbeJson>(await runCli(['config', 'check', '--json', '--config', config]));
    expect(shardFindings(probe).map((f) => f.verdict)).toEqual(['ok', 'ok', 'ok']);

    // Unchanged: no shard is pulled again.
    const syncs = await Promise.all(cluster.masters.map((m) => fullSyncs(m.server)));
    const second = await runCli(['once', '--json', '--config', config]);
    expect(second.code, second.stderr).toBe(0);
    expect(jsonOf<ManyJson>(second).instances.map((r) => r.status)).toEqual(['unchanged', 'unchanged', 'unchanged']);
    expect(await Promise.all(cluster.masters.map((m) => fullSyncs(m.server)))).toEqual(syncs);
    // --force pulls every shard although none changed.
    const forced = await runCli(['once', '--force', '--json', '--config', config]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(await Promise.all(cluster.masters.map((m) => fullSyncs(m.server)))).toEqual(syncs.map((n) => n + 1));

    // A user allowed CLUSTER NODES only: discovered with it, every shard archived.
    const nodesOnly = tempDir();
    const nodesOnlyConfig = writeConfig(nodesOnly, seed.server.port, 'nodesonly');
    const viaNodes = await runCli(['once', '--json', '--config', nodesOnlyConfig]);
    expect(viaNodes.code, viaNodes.stderr).toBe(0);
    expect(jsonOf<ManyJson>(viaNodes).instances.map((r) => r.status)).toEqual(['archived', 'archived', 'archived']);
    expect(JSON.parse(readFileSync(join(nodesOnly, 'archive', '.rdb-archiver', 'cluster.json'), 'utf8')).via).toBe('CLUSTER NODES');

    // A write in one shard: only that shard is pulled.
    const changed = cluster.masters[2]!;
    const key = entries.map(([k]) => k).find((k) => inRanges(changed, keySlot(k)))!;
    await changed.server.call('SET', key, 'changed');
    const third = jsonOf<ManyJson>(await runCli(['once', '--json', '--config', config]));
    expect(third.instances.find((r) => r.shard!.name === folderOf(changed))!.status).toBe('archived');
    expect(third.instances.filter((r) => r.status === 'unchanged')).toHaveLength(2);

    // The daemon discovers and runs the cluster on each tick: a write in one shard is archived there.
    const ticked = cluster.masters[0]!;
    await ticked.server.call('SET', entries.map(([k]) => k).find((k) => inRanges(ticked, keySlot(k)))!, 'by-the-daemon');
    const daemon = startCli(['daemon', '--schedule', '* * * * * *', '--config', nodesOnlyConfig]);
    await daemon.waitForLog((l) => l.msg === 'snapshot archived' && l.instance === `default:${folderOf(ticked)}`, 60_000, 'the daemon to archive the changed shard');
    daemon.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
    expect(rdbsOf(nodesOnly, folderOf(ticked))).toHaveLength(2);

    // One master dies: the others still archive; the run exits 68; check, status and metrics name the shard.
    await cluster.setAll(entries.map(([k]) => [k, 'second-round']));
    const dead = cluster.masters[1]!;
    dead.server.process.kill('SIGKILL');
    await new Promise((resolve) => dead.server.process.once('exit', resolve));
    const eventsBefore = new Map(cluster.masters.map((m) => [m, rdbsOf(dir, folderOf(m)).length]));
    const down = await runCli(['once', '--json', '--config', config]);
    expect(down.code, down.stderr).toBe(68);
    const downRuns = jsonOf<ManyJson>(down);
    expect(downRuns.exitCode).toBe(68);
    const deadRun = downRuns.instances.find((r) => r.shard!.name === folderOf(dead))!;
    expect(deadRun).toMatchObject({ status: 'failed', exitCode: 68 });
    expect(deadRun.error!.message).toMatch(/ECONNREFUSED/);
    for (const r of downRuns.instances.filter((x) => x !== deadRun)) expect(r.status).toBe('archived');
    for (const m of cluster.masters) expect(rdbsOf(dir, folderOf(m)).length).toBe(eventsBefore.get(m)! + (m === dead ? 0 : 1));

    const checkText = await runCli(['check', '--config', config]);
    expect(checkText.stdout).toMatch(new RegExp(`^RDB-ARCHIVER CRITICAL - default:${folderOf(dead)}: .*exit 68`));
    // The recovery point lag of a pulled snapshot runs from the server's clock at the pull, not from 1970.
    const lags = [...checkText.stdout.matchAll(/_lag=([\d.]+)s/g)].map((m) => Number(m[1]));
    expect(lags).toHaveLength(3);
    for (const lag of lags) expect(lag).toBeLessThan(3600);
    const check = await runCli(['check', '--json', '--config', config]);
    expect(check.code).toBe(2);
    const verdict = jsonOf<{ instances: Array<{ instance: string; status: string; problems: Array<{ text: string }> }> }>(check);
    const failing = verdict.instances.filter((i) => i.status !== 'OK');
    expect(failing.map((i) => i.instance)).toEqual([`default:${folderOf(dead)}`]);
    expect(failing[0]!.problems.map((p) => p.text).join('\n')).toMatch(/exit 68/);
    const deadProbe = await runCli(['config', 'check', '--json', '--config', config]);
    expect(deadProbe.code).toBe(1);
    const probed = shardFindings(jsonOf<ProbeJson>(deadProbe));
    expect(probed.filter((f) => f.verdict === 'error').map((f) => f.check)).toEqual([`source.redis shard ${folderOf(dead)}`]);
    const metrics = readFileSync(join(dir, 'metrics.prom'), 'utf8');
    expect(metrics).toContain(`rdb_archiver_last_run_exit_code{redis_instance="default:${folderOf(dead)}"} 68`);
    expect(metrics).toMatch(new RegExp(`rdb_archiver_cluster_shard\\{redis_instance="default:${folderOf(dead)}",cluster="default",shard="${folderOf(dead)}",slots="[0-9,-]+"\\} 1`));

    // The documented ACL is needed: a user without +cluster|shards and +cluster|nodes is refused (78) at discovery.
    const denied = tempDir();
    const noCluster = await runCli(['once', '--json', '--config', writeConfig(denied, seed.server.port, 'nocluster')]);
    expect(noCluster.code, noCluster.stderr).toBe(78);
    expect(noCluster.stdout).toMatch(/NOPERM/);
    for (const r of [plan, first, second, forced, viaNodes, down, noCluster]) expect(r.stdout + r.stderr).not.toContain(PASSWORD);
  });
});
