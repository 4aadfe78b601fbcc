/**
 * The command line: parses arguments, loads the config, runs a command, and
 * turns its report into stdout (human summary or one JSON object), JSON logs
 * on stderr and an exit code.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { contextFor, failureLine, formatBytes, print, printResults, tolerateClosedStdout, type TextOptions } from './core/context.js';
import { runPrune, type ErrorReport, type PruneReport, type RuleReport, type RunReport } from './pipeline/cycle.js';
import { runConfigured } from './pipeline/run-configured.js';
import { ArchiverError, ExitCode, exitCodeOf } from './core/errors.js';
import { chooseLogFormat, LOG_FORMATS, stderrFacts, stderrText, type LogFormat } from './core/log.js';
import { registerCatalogCommands } from './commands/catalog.js';
import { registerRestoreCommand } from './commands/restore.js';
import { registerDaemonCommand } from './commands/daemon.js';
import { registerDrillCommand } from './commands/drill.js';
import { drillText } from './ops/drill.js';
import { registerMonitorCommands } from './ops/monitor.js';
import { registerMetrics } from './ops/metrics.js';
import { registerConfigCommands } from './commands/config-check.js';
import { addCommandHelp } from './commands/help.js';
import { registerOffsiteCommands, remoteRunLines, runRemotePrune } from './commands/offsite.js';

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function retentionLines(retention: Record<string, RuleReport>, dryRun: boolean, verbose: boolean): string[] {
  const lines: string[] = [];
  for (const [rule, plan] of Object.entries(retention)) {
    const verb = dryRun ? 'would delete' : 'deleted';
    lines.push(`  ${rule}: keep ${plan.keep.length}, ${verb} ${plan.delete.length}`);
    if (verbose) {
      for (const d of plan.keep) lines.push(`    keep    ${d.ts}  ${d.reason}`);
      for (const d of plan.delete) lines.push(`    delete  ${d.ts}  ${d.reason}`);
    } else {
      for (const d of plan.delete) lines.push(`    ${verb} ${d.ts}: ${d.reason}`);
    }
  }
  return lines;
}

export function onceSummary(report: RunReport, dryRun: boolean, opts?: TextOptions): string {
  const lines: string[] = [];
  if (report.shard) {
    const s = report.shard;
    lines.push(`shard ${s.name}: slots ${s.slots || '?'}${s.master ? ` from master ${s.master}${s.masterId ? ` (node ${s.masterId.slice(0, 12)})` : ''}` : ''}`);
  }
  switch (report.status) {
    case 'archived': {
      const s = report.snapshot!;
      const what = s.outcome === 'already-archived' ? 'already archived (identical), nothing rewritten' : 'archived';
      lines.push(`${what}: ${s.ts} (${formatBytes(s.bytes)}, sha256 ${s.sha256.slice(0, 16)}…${s.nodes ? ', with nodes.conf' : ''}) in ${s.rules.join(', ')}`);
      break;
    }
    case 'unchanged':
      lines.push('unchanged: the source has not changed since the last archived snapshot');
      break;
    case 'would-archive':
      lines.push('would archive: the source changed since the last archived snapshot (dry run: nothing written)');
      break;
    case 'failed':
      lines.push(failureLine('failed', report.error?.message ?? 'unknown error', report.exitCode, opts));
      break;
  }
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  for (const n of report.notes) lines.push(`note: ${n}`);
  // (a run that failed as a whole already named its first error on the first line)
  lines.push(...ruleErrorLines(report.ruleErrors.filter((e) => !(report.status === 'failed' && e === report.error)), opts));
  if (Object.keys(report.retention).length > 0) {
    lines.push(dryRun ? 'retention plan:' : 'retention:');
    lines.push(...retentionLines(report.retention, dryRun, dryRun));
  }
  if (report.status !== 'failed' && report.error && report.ruleErrors.length === 0) lines.push(failureLine('error', report.error.message, report.exitCode, opts));
  if (report.offsite) lines.push(...remoteRunLines(report.offsite));
  if (report.verify) {
    const v = report.verify;
    lines.push(v.error ? `scheduled verification failed: ${v.error}`
      : `scheduled verification: ${v.eventsChecked} event${v.eventsChecked === 1 ? '' : 's'} checked (${v.filesRead} files, ${formatBytes(v.bytesRead)}): ${v.bad.length === 0 ? 'all intact' : `${v.bad.length} BAD`}`);
  }
  if (report.drill) lines.push(drillText(report.drill));
  if (report.knownBad?.length) {
    const events = [...new Set(report.knownBad.map((b) => b.ts))];
    lines.push(`archived event${events.length === 1 ? '' : 's'} known bad: ${events.join(', ')} (exit ${ExitCode.ARCHIVE_BAD} until pruned, replaced or found good again; see status)`);
  }
  return lines.join('\n');
}

/** One line per failed rule folder: the error (or, when it was logged already, a pointer to it), then which rule and which step. */
function ruleErrorLines(errors: readonly ErrorReport[], opts?: TextOptions): string[] {
  return errors.map((e) => opts?.errorsLogged
    ? `error (exit ${e.exitCode}, rule ${e.rule}, ${e.stage}): see the error logged above`
    : `error: ${e.message} (rule ${e.rule}, ${e.stage})`);
}

export function pruneSummary(report: PruneReport, opts?: TextOptions): string {
  const lines = [report.dryRun ? 'retention plan (dry run: nothing deleted):' : 'retention:'];
  lines.push(...retentionLines(report.retention, report.dryRun, report.dryRun));
  if (opts?.errorsLogged && report.errors.length > 0) {
    lines.push(`failed (exit ${report.exitCode}): ${report.errors.length === 1 ? 'see the error' : `see the ${report.errors.length} errors`} logged above`);
  } else {
    for (const e of report.errors) lines.push(e.rule ? ruleErrorLines([e])[0]! : `error: ${e.message}`);
  }
  return lines.join('\n');
}

function onceJson(report: RunReport): object {
  return {
    status: report.status,
    ...(report.shard ? { shard: report.shard } : {}),
    snapshot: report.snapshot && { ts: report.snapshot.ts, bytes: report.snapshot.bytes, sha256: report.snapshot.sha256, rules: report.snapshot.rules, nodes: report.snapshot.nodes, ...(report.snapshot.nodesChanged ? { nodesChanged: report.snapshot.nodesChanged } : {}), outcome: report.snapshot.outcome, ...(report.snapshot.copy ? { copy: report.snapshot.copy } : {}) },
    retention: report.retention,
    warnings: report.warnings,
    notes: report.notes,
    ruleErrors: report.ruleErrors,
    ...(report.error ? { error: report.error } : {}),
    ...(report.offsite ? { offsite: report.offsite } : {}),
    ...(report.verify ? { verify: report.verify } : {}),
    ...(report.drill ? { drill: report.drill } : {}),
    ...(report.knownBad?.length ? { knownBad: report.knownBad } : {}),
    exitCode: report.exitCode,
  };
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('rdb-archiver')
    .description('Archive Redis/Valkey dump.rdb (and nodes.conf) as timestamped, verified snapshots, pruned per retention rule.')
    .version(VERSION, '-V, --version')
    .option('-c, --config <file>', 'config file (default: $RDB_ARCHIVER_CONFIG, else /etc/rdb-archiver/config.yaml)')
    .option('--source <path>', 'source dump.rdb (overrides source.rdb)')
    .option('--nodes <path>', 'source nodes.conf (overrides source.nodes)')
    .option('--archive <dir>', 'archive folder (overrides archive.dir)')
    .option('--state <file>', 'state file (overrides state)')
    .option('--instance <name>', 'only this instance of a multi-instance config (NAME:SHARD: one shard of a cluster, e.g. cache:slots-0-5460)')
    .option('--allow-owner-mismatch', 'let once, prune and daemon write into an archive root owned by another user (default: refuse, exit 77)')
    .addOption(new Option('--log-level <level>', 'log level (overrides log.level)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .addOption(new Option('--log-format <format>', 'stderr log format (overrides log.format; default: pretty on a terminal, journal under systemd, else json)').choices(LOG_FORMATS))
    .addHelpText('after', '\nA closed stdout (rdb-archiver list | head -1) is not an error: the rest of the output is dropped,\n' +
      'the command runs to its end (state and metrics included) and exits with its own code.')
    .showHelpAfterError('(run with --help for usage)')
    // Inherited by every subcommand: its --help lists -c, --instance, --log-format… too.
    .configureHelp({ showGlobalOptions: true })
    // commander's own errors (unknown option, missing argument) in the log's format: `<3>` under journald.
    .configureOutput({ writeErr: (text) => process.stderr.write(stderrText(text, fatalFormat(program))) })
    .exitOverride();

  program
    .command('once')
    .description('archive dump.rdb if it changed since the last run, then prune every rule folder')
    .option('--dry-run', 'show what would be archived and pruned; write nothing')
    .option('--force', 'archive even if the source looks unchanged (an identical event is still not rewritten; a corrupt one holding the same content is replaced, its .rdb moved to <archive>/.quarantine)')
    .option('--json', 'print one JSON object on stdout')
    .action(async (opts: { dryRun?: boolean; force?: boolean }, cmd: Command) => {
      const ctx = contextFor(cmd, { runsHooks: true });
      const results = await runConfigured({ fs: ctx.fs, log: ctx.log }, ctx.config, { dryRun: opts.dryRun === true, force: opts.force === true });
      printResults(ctx, results, onceJson, (r, text) => onceSummary(r, opts.dryRun === true, text));
    });

  program
    .command('prune')
    .description('apply the retention rules to every rule folder (no archiving)')
    .option('--dry-run', 'print what would be deleted and why; delete nothing')
    .option('--remote <name>', 'apply this off-site remote\'s retention rules to its events instead')
    .option('--json', 'print one JSON object on stdout')
    .action(async (opts: { dryRun?: boolean; remote?: string }, cmd: Command) => {
      if (opts.remote !== undefined) return runRemotePrune(cmd, opts.remote, opts.dryRun === true);
      const ctx = contextFor(cmd, { runsHooks: true });
      const results = [];
      for (const instance of ctx.config.instances) {
        results.push({ instance: instance.name, report: await runPrune({ fs: ctx.fs, log: ctx.log }, instance, { dryRun: opts.dryRun === true }) });
      }
      printResults(ctx, results, (r: PruneReport) => ({ dryRun: r.dryRun, retention: r.retention, errors: r.errors, exitCode: r.exitCode }), pruneSummary);
    });

  registerCatalogCommands(program);
  registerRestoreCommand(program);
  registerDaemonCommand(program);
  registerDrillCommand(program);
  registerMonitorCommands(program);
  registerMetrics(program);
  registerConfigCommands(program);
  registerOffsiteCommands(program);
  addCommandHelp(program);

  return program;
}

/** The log format for errors that end the command before it logs: --log-format when parsed, else the default for this stderr. */
function fatalFormat(program: Command): LogFormat {
  return chooseLogFormat(program.opts<{ logFormat?: LogFormat }>().logFormat, stderrFacts());
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return Number(process.exitCode ?? ExitCode.OK);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      return err.exitCode === 0 ? ExitCode.OK : ExitCode.CONFIG;
    }
    const wantsJson = argv.includes('--json');
    const message = err instanceof ArchiverError ? err.message : `internal error: ${(err as Error)?.stack ?? String(err)}`;
    if (wantsJson) print(JSON.stringify({ status: 'failed', error: { kind: err instanceof ArchiverError ? err.kind : 'internal', message, exitCode: exitCodeOf(err) } }));
    // The one place this error is printed: nothing logged it (the command could not run).
    process.stderr.write(stderrText(`rdb-archiver: ${message}\n`, fatalFormat(program)));
    return exitCodeOf(err);
  }
}

tolerateClosedStdout();
// Not a top-level await: the published CLI is a CommonJS bundle (see scripts/build.mjs).
let finished = false;
void main(process.argv).then((code) => {
  finished = true;
  process.exitCode = code;
});
// What a top-level await gave for free: if nothing is left to run and main()
// has not finished, it never will (a promise nobody settles). Exit non-zero,
// so that cron, systemd's Restart=on-failure and monitoring see it.
process.once('beforeExit', () => {
  if (finished) return;
  process.stderr.write(stderrText('rdb-archiver: internal error: the command stopped before it finished\n', chooseLogFormat(undefined, stderrFacts())));
  process.exitCode = ExitCode.INTERNAL;
});
