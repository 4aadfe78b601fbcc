/**
 * Prometheus metrics as a node_exporter textfile-collector file.
 *
 * When `metrics.textfile` is configured, every `once` and `prune` (and every
 * daemon tick) rewrites the file for all instances of the config: it is
 * rendered from the state files and the archive (inspect.ts), so it is the
 * same whichever process writes it last. Counters come from state.counters
 * and therefore survive restarts.
 *
 * The file is replaced atomically (temp file, fsync, rename, fsync of the
 * folder) with mode 0644 so that node_exporter, usually another user, can
 * read it. The temp file's name ends in ".tmp", never ".prom": the collector
 * reads every *.prom file in its folder and must never see a half-written one.
 */
import { dirname } from 'node:path';
import type { Command } from 'commander';
import { expandInstances, loadConfig, type ConfigOverrides, type InstanceConfig } from '../core/config.js';
import { contextFor, type CommandContext } from '../core/context.js';
import type { FileSystem } from '../core/fs.js';
import { ensureDir, replaceFileAtomic, tempPathFor } from '../core/fs.js';
import { inspectInstance, type InstanceFacts } from './inspect.js';
import type { Log } from '../core/log.js';
import { LAG_BUCKETS, ruleErrorsOf } from '../pipeline/state.js';
import { timestampToMs } from '../core/timestamp.js';
import { lastFailureOf, unrecordedFailure } from './monitor.js';
import { hookFailing as isHookFailing } from '../pipeline/state.js';

export const METRICS_FILE_MODE = 0o644;
const METRICS_DIR_MODE = 0o755;

/**
 * The exposition's name for the config instance's label. Not `instance`:
 * Prometheus itself puts that label (the scrape target, node_exporter's
 * host:port) on every series it scrapes, so ours would become
 * `exported_instance`, or overwrite the target's label under honor_labels.
 */
export const INSTANCE_LABEL = 'redis_instance';

/** Sample labels; the `instance` key (every series has it) is written as INSTANCE_LABEL. */
type Labels = { instance: string } & Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: 'gauge' | 'counter' | 'histogram';
  /** suffix: a histogram's _bucket, _sum and _count samples. */
  samples: Array<{ labels: Labels; value: number; suffix?: string }>;
}

/** The hooks whose failures are counted (state.counters `hook_failures_<hook>`). */
export const HOOK_NAMES = ['after_archive', 'after_prune', 'on_failure'] as const;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

const seconds = (iso: string | undefined): number => {
  const ms = iso ? Date.parse(iso) : NaN;
  return Number.isFinite(ms) ? ms / 1000 : 0;
};

/** The rdb_archiver_remote_* series: one sample per instance and remote. */
function remoteFamilies(family: (name: string, type: Family['type'], help: string) => Family) {
  const lastSuccess = family('rdb_archiver_remote_last_success_timestamp_seconds', 'gauge', 'Unix time of the last successful upload to the remote; 0 if none yet.');
  const pending = family('rdb_archiver_remote_pending_events', 'gauge', 'Archived events waiting for their upload to the remote.');
  const lag = family('rdb_archiver_remote_lag_seconds', 'gauge', 'How long the oldest pending event has waited for the remote; 0 when none waits.');
  const bytes = family('rdb_archiver_remote_uploaded_bytes_total', 'counter', 'Bytes uploaded to the remote (data objects, sidecars and manifests).');
  const uploads = family('rdb_archiver_remote_uploads_total', 'counter', 'Events uploaded to the remote (complete, manifest written).');
  const failures = family('rdb_archiver_remote_failures_total', 'counter', 'Off-site runs whose upload to the remote failed (the events stayed pending).');
  const pruneFailures = family('rdb_archiver_remote_prune_failures_total', 'counter', 'Remote retention runs that failed.');
  const lost = family('rdb_archiver_remote_lost_events_total', 'counter', 'Events that will never reach the remote (pruned locally before their upload, or a conflicting event at the remote).');
  return {
    add(instance: string, remotes: NonNullable<InstanceFacts['remotes']>) {
      for (const r of remotes) {
        const labels = { instance, remote: r.remote };
        const s = r.state;
        lastSuccess.samples.push({ labels, value: seconds(s?.lastSuccessAt) });
        pending.samples.push({ labels, value: r.pending });
        lag.samples.push({ labels, value: r.lagSeconds });
        if (!s) continue;
        bytes.samples.push({ labels, value: s.counters.bytesUploaded });
        uploads.samples.push({ labels, value: s.counters.uploads });
        failures.samples.push({ labels, value: s.counters.failures });
        pruneFailures.samples.push({ labels, value: s.counters.pruneFailures });
        lost.samples.push({ labels, value: s.counters.lost });
      }
    },
  };
}

/** The exposition text for some instances: HELP and TYPE once per family, then its samples. */
export function renderMetrics(all: InstanceFacts[]): string {
  const families: Family[] = [];
  const family = (name: string, type: Family['type'], help: string): Family => {
    const f: Family = { name, type, help, samples: [] };
    families.push(f);
    return f;
  };
  const lastRun = family('rdb_archiver_last_run_timestamp_seconds', 'gauge', 'Unix time the last run (once or daemon tick) started; 0 if it never ran.');
  const lastSuccess = family('rdb_archiver_last_success_timestamp_seconds', 'gauge', 'Unix time the last successful run started; 0 if none succeeded yet.');
  const lastSnapshot = family('rdb_archiver_last_snapshot_timestamp_seconds', 'gauge', 'Time the snapshot archived last was taken (its source mtime, or when it was archived if that is earlier); 0 if there is none.');
  const lostLatest = family('rdb_archiver_last_archived_missing', 'gauge', '1 if the event the state says was archived last lost its .rdb or archive record, so that restore latest refuses (older data is all that is left), else 0.');
  const lastSnapshotBytes = family('rdb_archiver_last_snapshot_bytes', 'gauge', 'Size in bytes of the newest archived snapshot (.rdb).');
  const duration = family('rdb_archiver_run_duration_seconds', 'gauge', 'How long the last run took.');
  const exitCode = family('rdb_archiver_last_run_exit_code', 'gauge', 'Exit code of the last run (0 ok, 75 retry later, 76 off-site pending, 81 worked but an archived event is known bad, other values failed).');
  const runs = family('rdb_archiver_runs_total', 'counter', 'Runs (once and daemon ticks) by result: ok, failed, or bad_event (the run worked, but an archived event is known bad: exit 81); runs that found the lock held are not counted.');
  const events = family('rdb_archiver_events', 'gauge', 'Complete snapshot events in the rule folder.');
  const ruleBytes = family('rdb_archiver_archive_bytes', 'gauge', 'Bytes of the event files in the rule folder; a snapshot hard-linked into several rule folders counts in each.');
  const diskBytes = family('rdb_archiver_archive_disk_bytes', 'gauge', 'Bytes under all rule folders with every hard-linked file counted once.');
  const free = family('rdb_archiver_archive_free_bytes', 'gauge', 'Bytes available to the archiver in the archive filesystem.');
  const invalid = family('rdb_archiver_source_invalid', 'gauge', '1 if the current source file failed validation in the last run, else 0.');
  const unarchived = family('rdb_archiver_source_unarchived', 'gauge', '1 if the current source file is not archived yet (or is missing), else 0.');
  const clockJumps = family('rdb_archiver_source_clock_jumps_total', 'counter', 'Snapshots archived with a source mtime in the future or before the previously archived snapshot (a wrong source clock).');
  const futureEvents = family('rdb_archiver_future_events', 'gauge', 'Archived events whose timestamp (source mtime) lies in the future.');
  const ruleFailed = family('rdb_archiver_rule_last_run_failed', 'gauge', '1 if writing the event into this rule folder, or pruning it, failed in the last run; else 0.');
  const hookFailures = family('rdb_archiver_hook_failures_total', 'counter', 'Hook runs that failed (non-zero exit, killed, timed out or could not start).');
  const lastFailure = family('rdb_archiver_last_failure_timestamp_seconds', 'gauge', 'Unix time the last failed run (once, daemon tick or prune) started, including runs that could not write their state; 0 if none failed.');
  const lastFailureCode = family('rdb_archiver_last_failure_exit_code', 'gauge', 'Exit code of the last failed run.');
  const writable = family('rdb_archiver_archive_writable', 'gauge', '1 if the state folder and every rule folder can be written by their owner (not read-only, owner write bit set), else 0.');
  const lockAge = family('rdb_archiver_lock_age_seconds', 'gauge', 'How long the run lock has been held (from the start its holder recorded); 0 when it is free.');
  const hookFailing = family('rdb_archiver_hook_failing', 'gauge', '1 while the last run of the hook failed (until it next succeeds), else 0.');
  const hookLastFailure = family('rdb_archiver_hook_last_failure_timestamp_seconds', 'gauge', 'Unix time the hook last failed; 0 if it never did.');
  const orphanBytes = family('rdb_archiver_orphan_folder_bytes', 'gauge', 'Bytes of event files in a folder of the archive root that no configured rule names (a renamed or removed rule): never pruned.');
  const orphanEvents = family('rdb_archiver_orphan_folder_events', 'gauge', 'Complete snapshot events in an orphan rule folder.');
  const lastLag = family('rdb_archiver_last_recovery_point_lag_seconds', 'gauge', 'Recovery point lag of the last new event: seconds from the source\'s mtime (the save) to the event being durable in the archive.');
  const lagHist = family('rdb_archiver_recovery_point_lag_seconds', 'histogram', 'Recovery point lag of every new event: seconds from the source\'s mtime to the event being durable.');
  const watchActive = family('rdb_archiver_watch_active', 'gauge', '1 while the daemon watches the source\'s folder (watch: true), 0 while it fell back to its schedule; absent without a watching daemon.');
  const verifyLast = family('rdb_archiver_verify_last_run_timestamp_seconds', 'gauge', 'Unix time of the last verification (scheduled by verify: in the config, or rdb-archiver verify with the config); 0 if none yet.');
  const verifyChecked = family('rdb_archiver_verify_events_checked', 'gauge', 'Events the last verification re-read.');
  const verifyBad = family('rdb_archiver_verify_bad_events', 'gauge', 'Archived events (once per file, not per hard link) that failed verification and are still in the archive, until a verification re-reads them.');
  const verifyNewestBad = family('rdb_archiver_verify_newest_bad', 'gauge', '1 if the most recently archived event failed verification, else 0.');
  const verifyRuns = family('rdb_archiver_verify_runs_total', 'counter', 'Verifications run (scheduled, and rdb-archiver verify with the config).');
  const drillLast = family('rdb_archiver_drill_last_run_timestamp_seconds', 'gauge', 'Unix time of the last restore drill (scheduled or rdb-archiver drill); 0 if none yet.');
  const drillOk = family('rdb_archiver_drill_success', 'gauge', '1 if the last restore drill loaded its event, else 0.');
  const drillLoad = family('rdb_archiver_drill_load_seconds', 'gauge', 'How long the throwaway server took to load the event in the last successful drill.');
  const drillKeys = family('rdb_archiver_drill_keys', 'gauge', 'Keys (all databases) the last successful drill loaded.');
  const drillRuns = family('rdb_archiver_drill_runs_total', 'counter', 'Restore drills run.');
  const shardInfo = family('rdb_archiver_cluster_shard', 'gauge', 'A shard of a source.redis cluster instance (one series per shard folder): 1 while the last discovery found its slots on one master, 0 once a resharding retired it.');
  const remote = remoteFamilies(family);

  const now = Date.now();
  for (const facts of all) {
    const instance = facts.instance;
    const state = facts.state;
    const counters = state?.counters ?? {};
    // A failed run the state could not record is the last run.
    const unrecorded = unrecordedFailure(facts)?.record;
    const run = unrecorded ? { at: unrecorded.at, exitCode: unrecorded.exitCode, durationMs: 0 } : state?.lastRun;
    lastRun.samples.push({ labels: { instance }, value: seconds(run?.at) });
    lastSuccess.samples.push({ labels: { instance }, value: seconds(state?.lastSuccessAt) });
    // The snapshot archived last; a name in the future is capped by when it was archived.
    const archivedMs = facts.newest?.archivedAt ? Date.parse(facts.newest.archivedAt) : NaN;
    const takenMs = facts.newest ? Math.min(timestampToMs(facts.newest.ts), Number.isFinite(archivedMs) ? archivedMs : Infinity) : 0;
    lastSnapshot.samples.push({ labels: { instance }, value: takenMs / 1000 });
    clockJumps.samples.push({ labels: { instance }, value: counters.clock_jumps ?? 0 });
    futureEvents.samples.push({ labels: { instance }, value: facts.futureEvents.length });
    lastSnapshotBytes.samples.push({ labels: { instance }, value: facts.newest?.bytes ?? 0 });
    lostLatest.samples.push({ labels: { instance }, value: facts.lostLatest ? 1 : 0 });
    duration.samples.push({ labels: { instance }, value: (run?.durationMs ?? 0) / 1000 });
    if (run) exitCode.samples.push({ labels: { instance }, value: run.exitCode });
    const failure = lastFailureOf(facts);
    lastFailure.samples.push({ labels: { instance }, value: seconds(failure?.at) });
    if (failure) lastFailureCode.samples.push({ labels: { instance }, value: failure.exitCode });
    writable.samples.push({ labels: { instance }, value: facts.unwritable.length === 0 ? 1 : 0 });
    lockAge.samples.push({ labels: { instance }, value: facts.lock ? Math.max(0, Math.floor((now - facts.lock.sinceMs) / 1000)) : 0 });
    runs.samples.push({ labels: { instance, result: 'ok' }, value: counters.runs_ok ?? 0 });
    runs.samples.push({ labels: { instance, result: 'failed' }, value: counters.runs_failed ?? 0 });
    runs.samples.push({ labels: { instance, result: 'bad_event' }, value: counters.runs_bad_event ?? 0 });
    const failedRules = new Set(ruleErrorsOf(state?.lastRun).map((e) => e.rule));
    for (const rule of facts.rules) ruleFailed.samples.push({ labels: { instance, rule: rule.rule }, value: failedRules.has(rule.rule) ? 1 : 0 });
    for (const rule of facts.rules) {
      if (rule.error) continue; // unknown is absent, not zero
      events.samples.push({ labels: { instance, rule: rule.rule }, value: rule.events });
      ruleBytes.samples.push({ labels: { instance, rule: rule.rule }, value: rule.bytes });
    }
    diskBytes.samples.push({ labels: { instance }, value: facts.archiveBytes });
    if (facts.space) free.samples.push({ labels: { instance }, value: facts.space.available });
    invalid.samples.push({ labels: { instance }, value: facts.source.rejected ? 1 : 0 });
    unarchived.samples.push({ labels: { instance }, value: !facts.source.exists || facts.source.unarchived ? 1 : 0 });
    for (const hook of HOOK_NAMES) {
      hookFailures.samples.push({ labels: { instance, hook }, value: counters[`hook_failures_${hook}`] ?? 0 });
      const rec = state?.hooks?.[hook];
      hookFailing.samples.push({ labels: { instance, hook }, value: isHookFailing(rec) ? 1 : 0 });
      hookLastFailure.samples.push({ labels: { instance, hook }, value: seconds(rec?.lastFailureAt) });
    }
    if (state?.lag) lastLag.samples.push({ labels: { instance }, value: state.lag.seconds });
    const h = state?.lagHistogram;
    if (h) {
      let cumulative = 0;
      LAG_BUCKETS.forEach((le, i) => {
        cumulative += h.counts[i] ?? 0;
        lagHist.samples.push({ labels: { instance, le: String(le) }, value: cumulative, suffix: '_bucket' });
      });
      lagHist.samples.push({ labels: { instance, le: '+Inf' }, value: h.count, suffix: '_bucket' });
      lagHist.samples.push({ labels: { instance }, value: h.sum, suffix: '_sum' });
      lagHist.samples.push({ labels: { instance }, value: h.count, suffix: '_count' });
    }
    if (facts.watch && facts.watch.alive !== false) watchActive.samples.push({ labels: { instance }, value: facts.watch.record.mode === 'watching' ? 1 : 0 });
    if (facts.verifyEveryMs !== undefined || state?.verify) {
      verifyLast.samples.push({ labels: { instance }, value: seconds(state?.verify?.at) });
      verifyChecked.samples.push({ labels: { instance }, value: state?.verify?.eventsChecked ?? 0 });
      verifyBad.samples.push({ labels: { instance }, value: facts.verifyBad?.length ?? 0 });
      verifyNewestBad.samples.push({ labels: { instance }, value: facts.verifyBad?.some((b) => b.newest) ? 1 : 0 });
      verifyRuns.samples.push({ labels: { instance }, value: counters.verify_runs ?? 0 });
    }
    const drill = state?.drill;
    if (facts.drillEveryMs !== undefined || drill) {
      drillLast.samples.push({ labels: { instance }, value: seconds(drill?.at) });
      drillOk.samples.push({ labels: { instance }, value: drill?.status === 'loaded' ? 1 : 0 });
      if (drill?.loadSeconds !== undefined && drill.status === 'loaded') drillLoad.samples.push({ labels: { instance }, value: drill.loadSeconds });
      if (drill?.keys !== undefined && drill.status === 'loaded') drillKeys.samples.push({ labels: { instance }, value: drill.keys });
      drillRuns.samples.push({ labels: { instance }, value: counters.drill_runs ?? 0 });
    }
    if (facts.shard) shardInfo.samples.push({ labels: { instance, cluster: facts.shard.cluster, shard: facts.shard.name, slots: facts.shard.slots }, value: facts.shard.retired ? 0 : 1 });
    for (const orphan of facts.orphans) {
      orphanBytes.samples.push({ labels: { instance, folder: orphan.folder }, value: orphan.bytes });
      orphanEvents.samples.push({ labels: { instance, folder: orphan.folder }, value: orphan.events });
    }
  }

  for (const facts of all) remote.add(facts.instance, facts.remotes ?? []);

  const lines: string[] = [];
  for (const f of families) {
    if (f.samples.length === 0) continue;
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const { instance, ...rest } = s.labels;
      const labels = Object.entries({ [INSTANCE_LABEL]: instance, ...rest }).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
      lines.push(`${f.name}${s.suffix ?? ''}{${labels}} ${formatValue(s.value)}`);
    }
  }
  return lines.join('\n') + '\n';
}

/** Renders and atomically replaces the textfile. Never throws: a metrics problem is logged, the run's outcome stands. */
export async function writeMetrics(fs: FileSystem, log: Log, path: string, instances: InstanceConfig[]): Promise<boolean> {
  try {
    const facts: InstanceFacts[] = [];
    // A cluster instance as its shards as they are now (the run may have found a new one).
    for (const instance of expandInstances(instances)) facts.push(await inspectInstance(fs, instance));
    const text = renderMetrics(facts);
    await ensureDir(fs, dirname(path), METRICS_DIR_MODE);
    await replaceFileAtomic(fs, path, Buffer.from(text), METRICS_FILE_MODE, { tmp: `${tempPathFor(path)}.tmp` });
    log.debug({ path, instances: instances.length }, 'metrics textfile written');
    return true;
  } catch (err) {
    log.error({ path, err: err instanceof Error ? err.message : String(err) }, 'could not write the metrics textfile');
    return false;
  }
}

/**
 * Every instance of the config file, so that `--instance a` does not drop b's
 * series from the shared file; the selected instance keeps its command-line overrides.
 */
export function metricsInstances(cmd: Command, ctx: CommandContext): InstanceConfig[] {
  const opts = cmd.optsWithGlobals<ConfigOverrides>();
  // As configured: writeMetrics expands a cluster instance into its shards when it writes.
  if (!opts.instance) return ctx.config.configured;
  try {
    const all = loadConfig({ config: opts.config, logLevel: opts.logLevel }).configured;
    return all.map((inst) => ctx.config.configured.find((s) => s.name === inst.name) ?? inst);
  } catch {
    return ctx.config.configured;
  }
}

/** After `once` and `prune` (not dry runs), rewrite the textfile when one is configured. */
export function registerMetrics(program: Command): void {
  program.hook('postAction', async (_program, action) => {
    if (action.name() !== 'once' && action.name() !== 'prune') return;
    if (action.opts<{ dryRun?: boolean }>().dryRun) return;
    let ctx: CommandContext;
    try {
      ctx = contextFor(action);
    } catch {
      return; // the action itself already reported the config error
    }
    if (!ctx.config.metricsTextfile) return;
    await writeMetrics(ctx.fs, ctx.log, ctx.config.metricsTextfile, metricsInstances(action, ctx));
  });
}
