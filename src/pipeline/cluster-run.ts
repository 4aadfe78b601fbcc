/**
 * `once` (and each daemon tick) for a cluster instance: discover the masters,
 * record the topology, then run the ordinary cycle (cycle.ts runOnce) for
 * each shard, at most source.redis.max_parallel at a time. Each shard has
 * its own folder, state, lock and retention (src/core/shards.ts), so one
 * shard's failure never stops another's and `check` sees each on its own.
 *
 * When no node answers the discovery, every shard the last record knows
 * runs anyway and fails with that error (its state, check and metrics show
 * it); before any record exists the cluster instance itself carries it.
 */
import { dirname } from 'node:path';
import type { InstanceConfig } from '../core/config.js';
import { ensureDir, replaceFileAtomic } from '../core/fs.js';
import { byFirstSlot, clusterRecordPath, readClusterRecord, shardFoldersOnDisk, shardInstance, slotsOfFolder, type ClusterRecord } from '../core/shards.js';
import { ConfigError, ExitCode, exitCodeOf } from '../core/errors.js';
import { prepareArchiveRoot } from './archive-root.js';
import { errorReport, runOnce, type CycleDeps, type RunReport } from './cycle.js';

export interface ClusterRunResult {
  instance: string;
  report: RunReport;
}

/** Pure: the shard instances a run pulls, from the topology; `only` keeps one shard (its instance name). */
export function planShards(cluster: InstanceConfig, record: ClusterRecord, only?: string): InstanceConfig[] {
  const shards = record.shards.map((s) => shardInstance(cluster, s.name, { slots: s.slots, retired: false, ...(s.master ? { master: s.master } : {}) }));
  return only ? shards.filter((s) => s.name === only) : shards;
}

/** Pure: every known shard, failing with the discovery's error (no node answered). */
export function failedShards(cluster: InstanceConfig, previous: ClusterRecord | undefined, failure: Error, only?: string): InstanceConfig[] {
  const shards = (previous?.shards ?? []).map((s) => shardInstance(cluster, s.name, { slots: s.slots, retired: false, failure }));
  const chosen = only ? shards.filter((s) => s.name === only) : shards;
  if (chosen.length > 0 || only) return chosen;
  return [{ ...cluster, shard: { cluster: cluster.name, name: '', slots: '', retired: false, failure } }];
}

/** Runs `work` over `items`, at most `limit` at a time; results in the items' order. */
export async function inParallel<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  return results;
}

async function writeRecord(deps: CycleDeps, cluster: InstanceConfig, record: ClusterRecord): Promise<void> {
  const path = clusterRecordPath(cluster);
  await ensureDir(deps.fs, dirname(path), cluster.dirMode);
  await replaceFileAtomic(deps.fs, path, Buffer.from(`${JSON.stringify(record, null, 2)}\n`), 0o600);
}

export async function runClusterOnce(
  deps: CycleDeps,
  cluster: InstanceConfig,
  options: { dryRun: boolean; force: boolean; only?: string },
): Promise<ClusterRunResult[]> {
  const log = deps.log.child({ instance: cluster.name });
  const cfg = cluster.redis!;
  const previous = readClusterRecord(cluster);
  const runShards = async (shards: InstanceConfig[]) => {
    const reports = await inParallel(shards, cfg.maxParallel, (shard) => runOnce(deps, shard, options));
    return reports.map((report, i) => ({ instance: shards[i]!.name, report }));
  };

  let record: ClusterRecord;
  try {
    // The cluster's folder first (it holds the record and every shard's folder): a missing disk is exit 69 here.
    await prepareArchiveRoot(deps.fs, cluster, { writes: !options.dryRun });
    const { discoverCluster } = await import('../sources/cluster.js');
    record = await discoverCluster(cfg, previous);
  } catch (err) {
    const failure = err instanceof Error ? err : new Error(String(err));
    log.error({ err: errorReport(err).message, exitCode: exitCodeOf(err) }, 'cluster discovery failed: no shard can be pulled in this run');
    if (!options.dryRun && previous) {
      await writeRecord(deps, cluster, { ...previous, lastError: { at: new Date().toISOString(), message: failure.message, exitCode: exitCodeOf(err) } })
        .catch((e) => log.warn({ err: errorReport(e).message }, 'could not record the failed discovery in the cluster record'));
    }
    return runShards(failedShards(cluster, previous, failure, options.only));
  }

  log.info({ via: record.via, from: record.discoveredFrom, shards: record.shards.map((s) => `${s.name}@${s.master ? `${s.master.host}:${s.master.port}` : 'none'}`) }, 'cluster discovered');
  if (record.uncovered !== '') log.warn({ uncovered: record.uncovered }, 'slots no master owns: their keys are in no shard\'s backup');
  for (const m of record.emptyMasters) log.info({ master: `${m.host}:${m.port}`, id: m.id }, 'master owns no slot: nothing to archive');
  const current = new Set(record.shards.map((s) => s.name));
  const retired = shardFoldersOnDisk(cluster).filter((name) => !current.has(name)).sort(byFirstSlot);
  if (retired.length > 0) {
    log.warn({ retired }, 'shard folders of slots no master serves as one shard any more (resharded): kept, not pulled, pruned by `prune`; delete them when no longer needed');
  }
  if (!options.dryRun) {
    await writeRecord(deps, cluster, record).catch((e) => log.warn({ err: errorReport(e).message }, 'could not write the cluster record (status and check show the previous topology)'));
  }
  const shards = planShards(cluster, record, options.only);
  if (options.only && shards.length === 0) {
    // --instance NAME:SHARD of a shard the cluster no longer has (its slots were resharded).
    const name = options.only.slice(cluster.name.length + 1);
    const failure = new ConfigError(undefined, '--instance', `${options.only}: no master serves the slots of ${name} as one shard any more (resharded); the shards now: ${record.shards.map((s) => s.name).join(', ')}`);
    // A usage error of this command, not a failure of the shard: reported, nothing recorded in its state.
    const error = errorReport(failure);
    return [{ instance: options.only, report: { instance: options.only, status: 'failed', shard: { name, slots: slotsOfFolder(name), master: null, masterId: null }, snapshot: null, retention: {}, warnings: [], notes: [], ruleErrors: [], error, exitCode: ExitCode.CONFIG } }];
  }
  const results = await runShards(shards);
  if (record.uncovered !== '') {
    for (const r of results) r.report.warnings.push(`the cluster leaves the slots ${record.uncovered} without a master: their keys are in no backup`);
  }
  // Said once, with the first shard's report: what this run does not pull, and why.
  const first = results[0]?.report;
  if (first && retired.length > 0) first.notes.push(`retired shard folders (their slots are no single master's any more): ${retired.join(', ')}; kept and listed, never pulled; delete them when no longer needed`);
  if (first && record.emptyMasters.length > 0) first.notes.push(`masters that own no slot (nothing to archive): ${record.emptyMasters.map((m) => `${m.host}:${m.port}`).join(', ')}`);
  return results;
}
