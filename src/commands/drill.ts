/**
 * `rdb-archiver drill [TS|latest]`: a restore drill now (src/ops/drill.ts).
 * With a config, the result is recorded in the state (under the run lock,
 * waiting up to a minute for a running cycle) so that `check` and the metrics report it like a
 * scheduled drill. SIGTERM/SIGINT stop the throwaway server and remove its
 * folder before the command exits.
 */
import type { Command } from 'commander';
import { contextFor, print } from '../core/context.js';
import { ConfigError } from '../core/errors.js';
import type { FileSystem } from '../core/fs.js';
import type { InstanceConfig } from '../core/config.js';
import type { Log } from '../core/log.js';
import { bumpCounter } from '../pipeline/state.js';
import { updateState } from '../pipeline/state-update.js';
import { drillExitCode, drillText, runDrill, type DrillRecord } from '../ops/drill.js';
import { parseTsArgument } from './catalog.js';

/**
 * Records a manual drill in the state (waiting a while for a running cycle's
 * lock); a lock that stays held or an unwritable state is a warning, not a
 * failure of the drill.
 */
async function recordDrill(fs: FileSystem, log: Log, instance: InstanceConfig, record: DrillRecord): Promise<string | undefined> {
  try {
    await updateState(fs, instance, 'drill', (state) => {
      state.drill = record;
      bumpCounter(state, 'drill_runs');
    });
    return undefined;
  } catch (err) {
    const w = `the drill's result was not recorded in the state (check and the metrics do not show it): ${(err as Error).message}`;
    log.warn({ state: instance.statePath }, w);
    return w;
  }
}

export function drillLines(r: DrillRecord): string[] {
  const lines = [drillText(r)];
  if (r.keyspace) for (const [db, v] of Object.entries(r.keyspace)) lines.push(`  ${db}: ${v}`);
  for (const line of r.serverLog ?? []) lines.push(`  server log: ${line}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines;
}

export function registerDrillCommand(program: Command): void {
  program
    .command('drill')
    .argument('[ts]', 'the event to load: a timestamp (2025-02-24T23-59-00 or ISO 8601) or "latest" (default)', 'latest')
    .description('restore drill: load an archived event into a throwaway redis-server/valkey-server (private Unix socket, temp folder, persistence off) and report load time, DBSIZE, INFO keyspace and DEBUG DIGEST')
    .option('--json', 'print one JSON object on stdout')
    .action(async (tsText: string, _opts: object, cmd: Command) => {
      const ctx = contextFor(cmd, { archiveOnly: true });
      if (ctx.config.instances.length !== 1) {
        throw new ConfigError(ctx.config.file, '--instance', `drill works on one instance: add --instance NAME (instances: ${ctx.config.instances.map((i) => i.name).join(', ')})`);
      }
      const which = tsText === 'latest' ? 'latest' : parseTsArgument(tsText);
      const instance = ctx.config.instances[0]!;
      const controller = new AbortController();
      const onSignal = (signal: NodeJS.Signals) => {
        ctx.log.warn({ signal }, 'stopping the drill: the server is stopped and its folder removed');
        controller.abort();
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      let record: DrillRecord;
      try {
        record = await runDrill({ fs: ctx.fs, log: ctx.log, signal: controller.signal }, instance, which);
      } finally {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
      }
      const warnings: string[] = [];
      if (!instance.archiveOnly && record.ts !== null) {
        const w = await recordDrill(ctx.fs, ctx.log, instance, record);
        if (w) warnings.push(w);
      }
      const exitCode = controller.signal.aborted ? 75 : drillExitCode(record);
      print(ctx.json ? JSON.stringify({ ...record, warnings, exitCode }) : [...drillLines(record), ...warnings.map((w) => `warning: ${w}`)].join('\n'));
      process.exitCode = exitCode;
    });
}
