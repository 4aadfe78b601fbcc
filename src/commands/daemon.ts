/**
 * `rdb-archiver daemon`: the `once` cycle for every instance, on a croner
 * schedule, in one long-lived process.
 *
 * - Ticks never overlap: a tick that falls due while the previous one still
 *   runs is skipped and logged (croner's `protect`, which waits for the
 *   promise the tick returns). Each instance's cycle takes the same lock as
 *   `once`, so a stray `once` and the daemon never interleave; a tick that
 *   finds the lock held skips that instance (logged, not counted as a failure).
 * - Instances run one after the other inside a tick; one failing never stops
 *   the others, and a failed tick never stops the daemon (it is logged and
 *   counted in state.counters.runs_failed). A failed tick is recorded
 *   exactly as a failed `once` is (state, or a failure record when the state
 *   cannot be written: failure-record.ts), so `check` and the metrics see it.
 * - SIGTERM/SIGINT: no new tick starts; the running instance's cycle finishes
 *   (copy, publish, retention, hooks), the remaining instances of that tick
 *   are skipped, and the process exits 0. If the cycle takes longer than
 *   shutdown_timeout, it is aborted (below). A second signal aborts at once.
 * - Aborting trips the AbortSignal every cycle gets: the worker stops between
 *   two chunks and removes its temp file (a final name only ever appears for
 *   a complete, fsynced file), running hooks are killed. The archive is then
 *   exactly as before that cycle, so the exit code is still 0. Only if the
 *   cycle does not unwind within ABORT_GRACE_MS (a hung filesystem) does the
 *   daemon exit 1 without waiting; the next run removes any temp file left.
 *
 * - watch: true / --watch: each source's folder is watched too (source-watch.ts);
 *   a save starts a cycle after the debounce. Ticks and watch cycles share one
 *   lane (cycle-runner.ts): never two at once, one follow-up at most. The
 *   schedule keeps running as the fallback; the watch's mode goes to each
 *   instance's watch.json (watch-record.ts) for status, check and the metrics.
 *
 * croner is imported lazily, so `once` and the other commands never load it.
 */
import type { Command } from 'commander';
import type { Config } from '../core/config.js';
import { contextFor, type CommandContext } from '../core/context.js';
import { runConfigured } from '../pipeline/run-configured.js';
import { checkOwnerAtStart } from '../pipeline/archive-root.js';
import { ArchiverError, ConfigError, ExitCode } from '../core/errors.js';
import { metricsInstances, writeMetrics } from '../ops/metrics.js';
import { lstatIfExists } from '../core/fs.js';
import { CycleRunner, type CycleJob } from '../pipeline/cycle-runner.js';
import { SourceWatch } from '../pipeline/source-watch.js';
import { makeWatchRecord, removeWatchRecord, writeWatchRecord, type WatchRecord } from '../pipeline/watch-record.js';

/** After an abort, how long the daemon waits for the cycle to unwind before it exits anyway. */
export const ABORT_GRACE_MS = 10_000;

/** The reason a cycle was aborted: "try again later" (75), not a failure of the archive. */
export class ShutdownAbort extends ArchiverError {
  readonly exitCode = ExitCode.TEMPFAIL;
  readonly kind = 'shutdown';
  constructor(why: string) {
    super(`aborted by shutdown (${why}); nothing partial was published, the next run retries`);
    this.name = 'ShutdownAbort';
  }
}

/**
 * The timezone the schedule is read in: the instances' timezone when they
 * all agree, otherwise the top-level `timezone` (default UTC).
 */
export function scheduleTimezone(config: Config): string {
  const zones = new Set(config.instances.map((i) => i.timezone));
  return zones.size === 1 ? [...zones][0]! : config.timezone;
}

/**
 * Why `schedule` cannot drive the daemon: not a cron expression croner reads
 * (5 fields, or 6 with seconds first), or one that never fires; undefined when
 * it can. `daemon` refuses such a schedule (exit 2); `config check` reports it.
 */
export async function scheduleProblem(schedule: string, timezone: string): Promise<string | undefined> {
  const { Cron } = await import('croner');
  try {
    const probe = new Cron(schedule, { timezone, mode: '5-or-6-parts', paused: true });
    const never = probe.nextRun() === null;
    probe.stop();
    return never ? `"${schedule}" never fires` : undefined;
  } catch (err) {
    return `"${schedule}" is not a valid cron expression (5 fields, or 6 with seconds first): ${(err as Error).message}`;
  }
}

export async function runDaemon(cmd: Command, ctx: CommandContext, options: { schedule?: string; watch?: boolean }): Promise<number> {
  const { config, log, fs } = ctx;
  const schedule = options.schedule ?? config.schedule;
  const timezone = scheduleTimezone(config);
  const watching = options.watch === true || config.watch;
  const { Cron } = await import('croner');

  const counts = { ticks: 0, skipped: 0, failed: 0, archiveBad: 0, watchCycles: 0 };
  const problem = await scheduleProblem(schedule, timezone);
  if (problem) throw new ConfigError(options.schedule ? undefined : config.file, options.schedule ? '--schedule' : 'schedule', problem);

  // As configured: a cluster instance is one entry, discovered again on every tick (cluster-run.ts).
  const instances = config.configured;
  const metricsPath = config.metricsTextfile;
  const metricsFor = metricsPath ? metricsInstances(cmd, ctx) : [];
  const controller = new AbortController();
  let stopping = false;
  /** Standing notes already logged at warning in this daemon's life (see CycleDeps.notesLogged). */
  const notesLogged = new Set<string>();

  /** One cycle job: the named instances one after the other, then the metrics. */
  const runJob = async (job: CycleJob): Promise<void> => {
    const no = job.trigger === 'schedule' ? (counts.ticks += 1) : (counts.watchCycles += 1);
    const where = job.trigger === 'schedule' ? { tick: no } : { watchCycle: no };
    try {
      for (const instance of instances) {
        if (!job.instances.includes(instance.name)) continue;
        if (stopping) {
          log.info({ instance: instance.name, ...where }, 'shutting down: instance skipped in this tick');
          continue;
        }
        // An event that removed the source (its folder deleted, say) is no save: the schedule reports a missing source.
        if (job.trigger === 'watch' && !(await lstatIfExists(fs, instance.sourceRdb).catch(() => undefined))) {
          log.info({ instance: instance.name, source: instance.sourceRdb }, 'watch: the source is gone after the event; no cycle (the schedule reports a missing source)');
          continue;
        }
        const deps = { fs, log, signal: controller.signal, command: 'daemon tick' as const, trigger: job.trigger, notesLogged };
        const results = await runConfigured(deps, { configured: [instance], ...(config.onlyShard ? { onlyShard: config.onlyShard } : {}) }, { dryRun: false, force: false });
        for (const { instance: name, report } of results) {
          if (report.error?.kind === 'locked') {
            log.warn({ instance: name, ...where }, 'tick skipped for this instance: another run holds the lock');
          } else if (report.exitCode === ExitCode.ARCHIVE_BAD) {
            // The cycle worked; an archived event is known bad (its warnings are logged): not a failed tick.
            counts.archiveBad += 1;
            log.warn({ instance: name, ...where, exitCode: report.exitCode, bad: report.knownBad?.map((b) => b.ts) }, 'tick done, but an archived event is known bad (exit 81: see check and status)');
          } else if (report.exitCode !== ExitCode.OK) {
            counts.failed += 1;
            // The cycle has logged the error itself ("run failed"): not repeated here.
            log.error({ instance: name, ...where, exitCode: report.exitCode, kind: report.error?.kind }, 'tick failed for this instance; the daemon keeps running');
          }
        }
      }
      if (unwritten.size > 0) await writeWatchRecords();
      // A cluster's shards as the tick left them (a new shard after a resharding has its series at once).
      if (metricsPath && !controller.signal.aborted) await writeMetrics(fs, log, metricsPath, metricsFor);
    } catch (err) {
      counts.failed += 1;
      log.error({ err: err instanceof Error ? err.message : String(err) }, 'tick failed; the daemon keeps running');
    }
  };
  const runner = new CycleRunner(runJob);

  /**
   * Watch records not written yet (watch-record.ts), by instance: before an
   * instance's first run its state folder may not exist (it is never made
   * here: a missing archive root must stay missing), so they are tried again
   * after every cycle.
   */
  const unwritten = new Map<string, WatchRecord>();
  let writingRecords: Promise<void> = Promise.resolve();
  const writeWatchRecords = (): Promise<void> => (writingRecords = writingRecords.then(async () => {
    for (const instance of instances) {
      const record = unwritten.get(instance.name);
      if (!record || stopping) continue;
      try {
        await writeWatchRecord(fs, instance.statePath, record);
        if (unwritten.get(instance.name) === record) unwritten.delete(instance.name);
      } catch (err) {
        log.debug({ instance: instance.name, err: err instanceof Error ? err.message : String(err) }, 'watch record not written yet (status shows the watch once it is)');
      }
    }
  }));

  const job = new Cron(schedule, {
    timezone,
    mode: '5-or-6-parts',
    // croner awaits the tick's promise; while it is pending a due tick is not started, only reported here.
    protect: () => {
      counts.skipped += 1;
      log.warn({ schedule }, 'tick skipped: the previous tick is still running');
    },
    catch: (err: unknown) => log.error({ err: String(err) }, 'tick failed; the daemon keeps running'),
  });

  const tick = async (): Promise<void> => {
    if (stopping) return;
    const outcome = runner.request({ trigger: 'schedule', instances: instances.map((i) => i.name) });
    if (outcome === 'skipped') {
      // croner's protect already prevents this; kept so the guarantee does not rest on a library detail.
      counts.skipped += 1;
      log.warn({}, 'tick skipped: the previous tick is still running');
    } else if (outcome === 'follow-up') {
      log.info({}, 'tick deferred: a watch-triggered cycle is running; the scheduled cycle follows it');
    } else if (outcome === 'started') {
      await runner.running;
    }
  };

  const startedAt = new Date().toISOString();
  const watch = watching ? new SourceWatch(instances.filter((i) => i.redis?.mode !== 'replicate').map((i) => ({ instance: i.name, rdb: i.sourceRdb })), { // a server has no folder to watch: its schedule pulls
    debounceMs: config.watchDebounceMs,
    log,
    env: process.env,
    trigger: (names, info) => {
      if (stopping) return;
      const outcome = runner.request({ trigger: 'watch', instances: names });
      const fields = { instances: names, events: info.events, files: info.files, ...(info.rearmed ? { rearmed: true } : {}) };
      if (outcome === 'started') log.info(fields, 'watch triggered a cycle');
      else if (outcome === 'follow-up') log.info(fields, 'watch: a cycle is running; one follow-up cycle will look at the source');
    },
    onMode: (dir, names, mode) => {
      for (const name of names) unwritten.set(name, makeWatchRecord(dir, config.watchDebounceMs, startedAt, mode));
      void writeWatchRecords();
    },
  }) : undefined;

  return new Promise<number>((resolveExit) => {
    let finished = false;
    let shutdownTimer: NodeJS.Timeout | undefined;
    let graceTimer: NodeJS.Timeout | undefined;

    const done = (exitCode: number) => {
      if (finished) return;
      finished = true;
      if (shutdownTimer) clearTimeout(shutdownTimer);
      if (graceTimer) clearTimeout(graceTimer);
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      log.info({ exitCode, ...counts }, 'daemon stopped');
      const records = watch ? writingRecords.then(() => Promise.all(instances.map((i) => removeWatchRecord(fs, i.statePath).catch(() => undefined)))) : Promise.resolve();
      void records.then(() => resolveExit(exitCode));
    };

    const abort = (why: string) => {
      if (controller.signal.aborted) return;
      log.warn({ why }, 'aborting the current job: its temp files are removed and no partial file is published');
      controller.abort(new ShutdownAbort(why));
      graceTimer = setTimeout(() => {
        log.error({ graceMs: ABORT_GRACE_MS }, 'the aborted job did not stop in time; exiting anyway (the next run removes its temp files)');
        done(1);
        process.exit(1); // the stuck I/O would otherwise keep the process alive
      }, ABORT_GRACE_MS);
    };

    function onSignal(signal: NodeJS.Signals): void {
      if (stopping) {
        log.warn({ signal }, 'second signal: aborting now');
        abort(`second signal ${signal}`);
        return;
      }
      stopping = true;
      job.stop();
      watch?.close();
      runner.stop();
      const current = runner.running;
      if (!current) {
        log.info({ signal }, 'stopping: no job running');
        done(0);
        return;
      }
      log.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'stopping: letting the current job finish (a second signal aborts it)');
      shutdownTimer = setTimeout(() => abort(`shutdown_timeout of ${config.shutdownTimeoutMs} ms exceeded`), config.shutdownTimeoutMs);
      void current.finally(() => done(0));
    }

    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);

    job.schedule(tick);
    const started = () => log.info({
      schedule,
      timezone,
      instances: instances.map((i) => i.name),
      nextRun: job.nextRun()?.toISOString(),
      shutdownTimeoutMs: config.shutdownTimeoutMs,
      metrics: metricsPath,
      ...(watch ? { watch: watch.modes().map((m) => ({ dir: m.dir, instances: m.instances, mode: m.mode?.mode ?? 'starting' })), watchDebounceMs: config.watchDebounceMs } : {}),
    }, 'daemon started');
    if (!watch) started();
    else {
      void watch.start().then(started, (err) => {
        log.error({ err: err instanceof Error ? err.message : String(err) }, 'the watch could not start; the schedule archives');
        started();
      });
    }
  });
}

export function registerDaemonCommand(program: Command): void {
  program
    .command('daemon')
    .description('run the `once` cycle for every instance on a cron schedule (croner; seconds supported) until SIGTERM/SIGINT')
    .option('--schedule <cron>', 'cron expression, 5 fields or 6 with seconds (overrides schedule; default every minute)')
    .option('--watch', 'also watch each source\'s folder (inotify) and archive a save within watch_debounce (default 500ms); the schedule stays as the fallback (same as watch: true)')
    .action(async (opts: { schedule?: string; watch?: boolean }, cmd: Command) => {
      const ctx = contextFor(cmd, { runsHooks: true });
      for (const instance of ctx.config.instances) await checkOwnerAtStart(ctx.fs, instance);
      process.exitCode = await runDaemon(cmd, ctx, opts);
    });
}
