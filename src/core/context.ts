/**
 * What every command shares: the resolved config, the logger, the filesystem,
 * and how results reach stdout. Command modules register themselves on the
 * commander program and use this; cli.ts only wires them together.
 */
import type { Command } from 'commander';
import { loadConfig, type Config, type ConfigOverrides } from './config.js';
import { ExitCode } from './errors.js';
import { checkHookExecutables } from '../ops/hooks.js';
import { OSFS } from './fs.js';
import { chooseLogFormat, createLog, descriptorId, levelValue, stderrFacts, stderrText, wantsColor, type Log } from './log.js';

interface GlobalOptions extends ConfigOverrides {
  json?: boolean;
}

export interface CommandContext {
  config: Config;
  log: Log;
  fs: OSFS;
  json: boolean;
}

/** How a command's human summary is written. */
export interface TextOptions {
  /**
   * The log has already shown this run's errors where stdout goes: stdout and
   * stderr are the same terminal, cron's mail or the journal, and the log
   * level shows warnings (every error of a report is logged at warn or
   * error). The summary then names the failure without repeating its
   * message, so that each error is printed once. Where they go to different
   * places (`2>/dev/null`, `> result.txt`), each is read alone and both carry it.
   */
  errorsLogged: boolean;
}

/** True when fds 1 and 2 are the same open file (a terminal, one pipe, one journal socket). */
export function stdoutIsStderr(): boolean {
  const out = descriptorId(1);
  return out !== undefined && out === descriptorId(2);
}

export function textOptions(ctx: CommandContext): TextOptions {
  return { errorsLogged: levelValue(ctx.config.logLevel) <= levelValue('warn') && stdoutIsStderr() };
}

/**
 * The summary line of a failure: its message, or, when the log already
 * showed it (TextOptions), a pointer to it. `what` is "failed" or "error".
 */
export function failureLine(what: string, message: string, exitCode: number, opts?: TextOptions): string {
  return opts?.errorsLogged ? `${what} (exit ${exitCode}): see the error logged above` : `${what}: ${message}`;
}

export interface ContextOptions {
  /** The command runs hooks (once, prune, daemon): their executables must pass the StrictModes check first. */
  runsHooks?: boolean;
  /** The command only reads the archive: --archive alone (no config, no source) is enough (config.ts archiveOnly). */
  archiveOnly?: boolean;
}

/**
 * The context made for a command, for the hooks that run after its action
 * (ops/metrics.ts): one config load per run, not two. Reading, parsing and
 * checking the config was a large part of a no-change `once` (issue 11), and
 * one run then works from one reading of the file.
 */
const contexts = new WeakMap<Command, { archiveOnly: boolean; hooksChecked: boolean; ctx: CommandContext }>();

export function contextFor(cmd: Command, options: ContextOptions = {}): CommandContext {
  const archiveOnly = options.archiveOnly === true;
  const made = contexts.get(cmd);
  if (made && made.archiveOnly === archiveOnly) {
    if (options.runsHooks && !made.hooksChecked) {
      checkHookExecutables(made.ctx.config);
      made.hooksChecked = true;
    }
    return made.ctx;
  }
  const opts = cmd.optsWithGlobals<GlobalOptions>();
  const config = loadConfig(archiveOnly ? { ...opts, archiveOnly: true } : opts);
  if (options.runsHooks) checkHookExecutables(config);
  const format = chooseLogFormat(config.logFormat, stderrFacts());
  const ctx = { config, log: createLog(config.logLevel, { format, color: format === 'pretty' && wantsColor() }), fs: new OSFS(), json: opts.json === true };
  contexts.set(cmd, { archiveOnly, hooksChecked: options.runsHooks === true, ctx });
  return ctx;
}

/** Set once stdout failed (EPIPE: `rdb-archiver list | head -1`): later output is dropped. */
let stdoutGone = false;

/**
 * A reader that goes away (`| head -1`, a closed terminal) must not crash a
 * run: without a listener, the EPIPE of the next write is an unhandled
 * 'error' event, a stack trace and exit 1, and the run dies before its state
 * and metrics writes. With this, the rest of the output is discarded and the
 * command finishes; its exit code is its own. Called once, at start-up.
 */
export function tolerateClosedStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (!stdoutGone && err.code !== 'EPIPE') {
      // Anything but a reader that left (EIO, ENOSPC on a redirect) is worth one line; EPIPE is normal use.
      try {
        process.stderr.write(stderrText(`rdb-archiver: stdout failed (${err.code ?? err.message}); the rest of the output is discarded, the command goes on\n`, chooseLogFormat(undefined, stderrFacts())));
      } catch {
        // stderr is gone too: nothing left to tell
      }
    }
    stdoutGone = true;
  });
}

export function print(text: string): void {
  if (stdoutGone || process.stdout.destroyed) return;
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * The worst exit code of several instances' results: any failure beats
 * success; a failure of the run itself beats "archived, but an archived event
 * is known bad" (81), which beats "archived, off-site pending" (76), which
 * beats "try again later" (75, which systemd units treat as success:
 * SuccessExitStatus=75, and must not hide another instance's failure). Among
 * codes of one rank, the first instance's wins.
 */
export function worstExitCode(codes: number[]): number {
  const rank = (c: number) => (c === ExitCode.OK ? 0 : c === ExitCode.TEMPFAIL ? 1 : c === ExitCode.OFFSITE ? 2 : c === ExitCode.ARCHIVE_BAD ? 3 : 4);
  return codes.reduce((worst, c) => (rank(c) > rank(worst) ? c : worst), ExitCode.OK as number);
}

/**
 * Prints per-instance results: one instance prints its own object/summary (the
 * single-instance shape), several print {"instances":[...],"exitCode"} or one
 * section per instance.
 */
export function printResults<R extends { exitCode: number }>(
  ctx: CommandContext,
  results: Array<{ instance: string; report: R }>,
  toJson: (report: R) => object,
  toText: (report: R, opts: TextOptions) => string,
  /** The JSON of one entry of "instances", where toJson's keys could clash with "instance" (default: toJson). */
  toInstanceJson: (report: R) => object = toJson,
): void {
  const exitCode = worstExitCode(results.map((r) => r.report.exitCode));
  const opts = ctx.json ? { errorsLogged: false } : textOptions(ctx);
  if (results.length === 1) {
    const only = results[0]!.report;
    print(ctx.json ? JSON.stringify(toJson(only)) : toText(only, opts));
  } else if (ctx.json) {
    print(JSON.stringify({ instances: results.map((r) => ({ instance: r.instance, ...toInstanceJson(r.report) })), exitCode }));
  } else {
    print(results.map((r) => `[${r.instance}]\n${toText(r.report, opts)}`).join('\n\n'));
  }
  process.exitCode = exitCode;
}
