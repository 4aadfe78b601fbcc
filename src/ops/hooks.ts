/**
 * Hooks: operator commands run after a cycle (ship a snapshot off-host,
 * notify, sync deletions).
 *
 *   after_archive  after a run wrote a new snapshot event (not when the source
 *                  was unchanged, nor when an identical event already existed)
 *   after_prune    after retention deleted at least one event (in `once`,
 *                  a daemon tick or `prune`); not after passes that deleted nothing
 *   on_failure     after a run (or `prune`) failed; not when it only found the
 *                  lock held by another run
 *
 * Each is an argv array run with spawn() and no shell, in its own process
 * group, with the RDB_ARCHIVER_* variables added to the environment. Output
 * lines go to the log. A timeout (hooks.timeout) sends SIGTERM to the group,
 * then SIGKILL after a grace period. Hooks run after the archive and the
 * retention work are done and while the run still holds the lock, so the
 * files they are given cannot be pruned under them. A failing hook is logged
 * at error level and counted (state counter hook_failures_<hook>, metric
 * rdb_archiver_hook_failures_total); it never changes the run's exit code.
 * Each hook's last failure and last success are kept in the state: `check`
 * is WARNING while a hook's last run failed, until that hook next succeeds.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import type { Config, InstanceConfig } from '../core/config.js';
import { ruleDir } from '../core/config.js';
import { ConfigError, ExitCode } from '../core/errors.js';
import { effectiveUid, untrustedPathReason } from '../core/trust.js';
import type { PruneReport, RunReport } from '../pipeline/cycle.js';
import type { FileSystem } from '../core/fs.js';
import type { Log } from '../core/log.js';
import { bumpCounter, hookFailing, loadState, saveState, type State } from '../pipeline/state.js';
import { type Timestamp, eventFileName } from '../core/timestamp.js';

export type HookName = 'after_archive' | 'after_prune' | 'on_failure';

/** After SIGTERM (timeout or shutdown), how long a hook's process group gets before SIGKILL. */
export const HOOK_KILL_GRACE_MS = 3000;
/** Lines of output logged per stream and hook run; the rest is counted, not logged. */
const MAX_LOGGED_LINES = 500;
const MAX_LINE_CHARS = 4000;

export interface HookVars {
  status: string;
  ts?: string;
  rdbPath?: string;
  nodesPath?: string;
  sha256?: string;
  bytes?: number;
  error?: string;
  exitCode?: number;
  /** after_prune: what retention deleted, as "rule/ts" words. */
  deleted?: string[];
}

export interface HookResult {
  hook: HookName;
  ok: boolean;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
  error?: string;
  /** Not started because the daemon is shutting down: not a failure. */
  skipped?: boolean;
}

export interface HookDeps {
  log: Log;
  /** Aborting (daemon shutdown) kills a running hook and starts no new one. */
  signal?: AbortSignal;
}

/** The environment a hook sees: the archiver's own, plus every RDB_ARCHIVER_* variable (empty when not applicable). */
export function hookEnv(instance: InstanceConfig, hook: HookName, vars: HookVars): NodeJS.ProcessEnv {
  return {
    ...withoutRemoteCredentials(process.env, instance),
    RDB_ARCHIVER_HOOK: hook,
    RDB_ARCHIVER_INSTANCE: instance.name,
    RDB_ARCHIVER_ARCHIVE_DIR: instance.archiveDir,
    RDB_ARCHIVER_TS: vars.ts ?? '',
    RDB_ARCHIVER_RDB_PATH: vars.rdbPath ?? '',
    RDB_ARCHIVER_NODES_PATH: vars.nodesPath ?? '',
    RDB_ARCHIVER_SHA256: vars.sha256 ?? '',
    RDB_ARCHIVER_BYTES: vars.bytes !== undefined ? String(vars.bytes) : '',
    RDB_ARCHIVER_STATUS: vars.status,
    RDB_ARCHIVER_ERROR: vars.error ?? '',
    RDB_ARCHIVER_EXIT_CODE: vars.exitCode !== undefined ? String(vars.exitCode) : '',
    RDB_ARCHIVER_DELETED: (vars.deleted ?? []).join(' '),
  };
}

/** The AWS credential variables the remotes use (src/targets/s3.ts): never handed to a hook of an instance with remotes. */
export const REMOTE_CREDENTIAL_VARS = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'] as const;

function withoutRemoteCredentials(env: NodeJS.ProcessEnv, instance: InstanceConfig): NodeJS.ProcessEnv {
  if (instance.remotes.length === 0) return env;
  const out = { ...env };
  for (const k of REMOTE_CREDENTIAL_VARS) delete out[k];
  return out;
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

/** The file spawn() would run for argv[0]: a path as given, a bare name searched in PATH; undefined when none is found. */
export function hookExecutable(command: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (command.includes('/')) return isAbsolute(command) ? command : resolve(command);
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, command);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Why a hook's executable must not be run (StrictModes, src/core/trust.ts): it, or
 * a folder above it, can be changed by another user. Only argv[0] is checked:
 * a script handed to an interpreter (["/bin/sh", "ship.sh"]) is the
 * operator's to protect. A missing executable is not refused here; running it
 * fails and is counted like any hook failure.
 */
export function untrustedHookReason(argv: readonly string[]): string | undefined {
  const executable = hookExecutable(argv[0]!);
  return executable === undefined ? undefined : untrustedPathReason(executable, 'the hook executable', effectiveUid());
}

const HOOK_KEYS = { afterArchive: 'after_archive', afterPrune: 'after_prune', onFailure: 'on_failure' } as const;

/** Refuses (exit 2) a config whose hook executables another user could change; commands that run hooks call it first. */
export function checkHookExecutables(config: Config): void {
  for (const instance of config.instances) {
    for (const [field, key] of Object.entries(HOOK_KEYS) as Array<[keyof typeof HOOK_KEYS, string]>) {
      const argv = instance.hooks[field];
      const reason = argv ? untrustedHookReason(argv) : undefined;
      if (reason) throw new ConfigError(config.file, `hooks.${key}`, `refused: ${reason}`);
    }
  }
}

/** Runs one hook to completion (or until its timeout). Never throws. */
export async function runHook(
  deps: HookDeps,
  instance: InstanceConfig,
  hook: HookName,
  argv: string[],
  vars: HookVars,
): Promise<HookResult> {
  // Loaded here, not at start-up: most runs have no hooks.
  const { createInterface } = await import('node:readline');
  const log = deps.log.child({ hook });
  const started = Date.now();
  const timeoutMs = instance.hooks.timeoutMs;
  return new Promise<HookResult>((resolve) => {
    const result: HookResult = { hook, ok: false, exitCode: null, signal: null, timedOut: false, durationMs: 0 };
    if (deps.signal?.aborted) {
      log.warn({ argv }, 'hook not started: shutting down');
      resolve({ ...result, skipped: true, error: 'not started: shutting down' });
      return;
    }
    // Checked again right before each run: a daemon runs for weeks, and the file can change after start-up.
    const untrusted = untrustedHookReason(argv);
    if (untrusted) {
      result.error = `refused to run: ${untrusted}`;
      log.error({ argv, err: result.error }, 'hook failed');
      resolve(result);
      return;
    }
    log.info({ argv, status: vars.status, ts: vars.ts }, 'running hook');
    // detached: the hook leads its own process group, so a timeout can kill everything it started.
    let child: ChildProcessByStdio<null, Readable, Readable>;
    try {
      child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: hookEnv(instance, hook, vars) });
    } catch (err) {
      // e.g. a NUL byte in an argument: spawn throws instead of emitting 'error'.
      result.durationMs = Date.now() - started;
      result.error = `could not start ${argv[0]}: ${err instanceof Error ? err.message : String(err)}`;
      log.error({ argv, err: result.error }, 'hook failed');
      resolve(result);
      return;
    }
    let killTimer: NodeJS.Timeout | undefined;
    let drainTimer: NodeJS.Timeout | undefined;
    let settled = false;
    let exited = false;

    const terminate = (why: string) => {
      if (exited || child.pid === undefined) return;
      log.warn({ hookPid: child.pid, why }, 'stopping hook: SIGTERM to its process group');
      killGroup(child.pid, 'SIGTERM');
      killTimer ??= setTimeout(() => {
        if (child.pid !== undefined) {
          log.warn({ hookPid: child.pid }, 'hook still running: SIGKILL to its process group');
          killGroup(child.pid, 'SIGKILL');
        }
      }, HOOK_KILL_GRACE_MS);
    };
    const timeout = setTimeout(() => {
      if (exited) return; // exited in time; only its output is still draining
      result.timedOut = true;
      terminate(`timed out after ${timeoutMs} ms`);
    }, timeoutMs);
    let abortedWhileRunning = false;
    const onAbort = () => {
      abortedWhileRunning = true;
      terminate('shutting down');
    };
    deps.signal?.addEventListener('abort', onAbort, { once: true });

    // A hook is done when its main process is: whatever it left running in its group is stopped.
    const reapGroup = () => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 0);
      } catch {
        return; // nothing left
      }
      log.warn({ hookPid: child.pid }, 'hook left processes behind: SIGTERM to its process group');
      killGroup(child.pid, 'SIGTERM');
    };
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timeout);
      if (killTimer) clearTimeout(killTimer);
      if (drainTimer) clearTimeout(drainTimer);
      deps.signal?.removeEventListener('abort', onAbort);
      reapGroup();
      result.durationMs = Date.now() - started;
      result.ok = !result.timedOut && result.error === undefined && result.exitCode === 0;
      if (result.ok) {
        log.info({ durationMs: result.durationMs }, 'hook finished');
      } else if (abortedWhileRunning && !result.timedOut) {
        // Killed because the daemon is shutting down: reported, not counted as the hook's failure.
        result.skipped = true;
        result.error = 'killed: shutting down';
        log.warn({ argv, exitCode: result.exitCode, signal: result.signal, durationMs: result.durationMs }, 'hook killed: shutting down');
      } else {
        result.error ??= result.timedOut
          ? `timed out after ${timeoutMs} ms and was killed`
          : result.signal ? `killed by ${result.signal}` : `exited with status ${result.exitCode}`;
        log.error({ argv, exitCode: result.exitCode, signal: result.signal, timedOut: result.timedOut, durationMs: result.durationMs, err: result.error }, 'hook failed');
      }
      resolve(result);
    };

    for (const [stream, level] of [[child.stdout, 'info'], [child.stderr, 'warn']] as const) {
      let logged = 0;
      let dropped = 0;
      const name = stream === child.stdout ? 'stdout' : 'stderr';
      const lines = createInterface({ input: stream, crlfDelay: Infinity });
      lines.on('line', (line) => {
        if (logged >= MAX_LOGGED_LINES) {
          dropped += 1;
          return;
        }
        logged += 1;
        log[level]({ stream: name, line: line.length > MAX_LINE_CHARS ? `${line.slice(0, MAX_LINE_CHARS)}…` : line }, 'hook output');
      });
      lines.on('close', () => {
        if (dropped > 0) log.warn({ stream: name, dropped }, 'hook output: more lines than are logged');
      });
    }

    child.on('error', (err) => {
      // Could not start (ENOENT, EACCES): no 'exit' follows.
      result.error = `could not start ${argv[0]}: ${(err as NodeJS.ErrnoException).code ?? err.message}`;
      exited = true;
      finish();
    });
    child.on('exit', (code, signal) => {
      exited = true;
      result.exitCode = code;
      result.signal = signal;
      // Wait for the output to drain, but not for a background process that kept the pipes open.
      drainTimer = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish();
      }, 1000);
    });
    child.on('close', finish);
  });
}

/** What the hooks of one run did, for the state: failures are counted, and each outcome is the hook's latest. */
interface HookOutcomes {
  failures: HookName[];
  outcomes: Array<{ hook: HookName; at: string; ok: boolean; error?: string }>;
}

async function runAndCount(deps: HookDeps, instance: InstanceConfig, hook: HookName, argv: string[] | undefined, vars: HookVars, done: HookOutcomes): Promise<void> {
  if (!argv) return;
  const at = new Date().toISOString();
  try {
    const result = await runHook(deps, instance, hook, argv, vars);
    if (result.skipped) return; // not started, or killed by a shutdown: no verdict on the hook
    if (!result.ok) done.failures.push(hook);
    done.outcomes.push({ hook, at, ok: result.ok, ...(result.error ? { error: result.error } : {}) });
  } catch (err) {
    // runHook does not throw; this keeps a bug in it from failing the run.
    const error = err instanceof Error ? err.message : String(err);
    deps.log.error({ hook, err: error }, 'hook failed');
    done.failures.push(hook);
    done.outcomes.push({ hook, at, ok: false, error });
  }
}

/**
 * Applies a run's hook outcomes to the state: counters, and each hook's last
 * failure / last success (a failure keeps `check` at WARNING until the same
 * hook next succeeds). True when the state changed.
 */
function recordHookOutcomes(state: State, done: HookOutcomes): boolean {
  let changed = false;
  for (const hook of done.failures) bumpCounter(state, `hook_failures_${hook}`);
  for (const o of done.outcomes) {
    const rec = ((state.hooks ??= {})[o.hook] ??= {});
    if (o.ok) {
      // A success only needs saving when it clears a failure (prune does not otherwise save the state).
      if (hookFailing(rec)) changed = true;
      rec.lastSuccessAt = o.at;
    } else {
      rec.lastFailureAt = o.at;
      rec.lastError = o.error ?? 'failed';
      changed = true;
    }
  }
  return changed || done.failures.length > 0;
}

function deletedOf(retention: Record<string, { delete: Array<{ ts: string }> }>): string[] {
  return Object.entries(retention).flatMap(([rule, plan]) => plan.delete.map((d) => `${rule}/${d.ts}`));
}

/**
 * The hooks of one `once` cycle (or daemon tick), called under the lock once
 * the archive and retention work is done. Failures are counted in `state`,
 * which the caller saves.
 */
export async function runCycleHooks(deps: HookDeps, instance: InstanceConfig, state: State, report: RunReport): Promise<void> {
  const hooks = instance.hooks;
  const failures: HookOutcomes = { failures: [], outcomes: [] };
  const snap = report.snapshot;
  if (snap && report.status === 'archived' && snap.outcome === 'archived') {
    // The first rule folder that holds the event (a folder that failed to take it has none).
    const holder = instance.rules.find((r) => snap.rules.includes(r.name)) ?? instance.rules[0]!;
    const dir = ruleDir(instance, holder);
    await runAndCount(deps, instance, 'after_archive', hooks.afterArchive, {
      status: 'archived',
      ts: snap.ts,
      rdbPath: join(dir, eventFileName('rdb', snap.ts as Timestamp)),
      nodesPath: snap.nodes ? join(dir, eventFileName('nodes', snap.ts as Timestamp)) : undefined,
      sha256: snap.sha256,
      bytes: snap.bytes,
      exitCode: report.exitCode,
    }, failures);
  }
  const deleted = deletedOf(report.retention);
  if (deleted.length > 0) {
    await runAndCount(deps, instance, 'after_prune', hooks.afterPrune, { status: 'pruned', deleted, exitCode: report.exitCode }, failures);
  }
  // A known-bad archived event (exit 81) calls on_failure when this run found it, not on every later run that still reports it.
  const fresh = report.knownBad?.filter((b) => b.fresh) ?? [];
  const archiveBad = report.exitCode === ExitCode.ARCHIVE_BAD;
  if (report.exitCode !== 0 && report.error?.kind !== 'locked' && (!archiveBad || fresh.length > 0)) {
    await runAndCount(deps, instance, 'on_failure', hooks.onFailure, {
      status: 'failed',
      error: report.error?.message ?? (archiveBad ? fresh.map((b) => b.text).join('; ') : report.status),
      exitCode: report.exitCode,
    }, failures);
  }
  recordHookOutcomes(state, failures);
}

/**
 * The hooks of `prune` (under its lock). `prune` does not otherwise write the
 * state file; it is updated here only to count a failed hook.
 */
export async function runPruneHooks(deps: HookDeps & { fs: FileSystem }, instance: InstanceConfig, report: PruneReport): Promise<void> {
  const hooks = instance.hooks;
  const failures: HookOutcomes = { failures: [], outcomes: [] };
  const deleted = deletedOf(report.retention);
  if (deleted.length > 0) {
    await runAndCount(deps, instance, 'after_prune', hooks.afterPrune, { status: 'pruned', deleted }, failures);
  }
  if (report.errors.length > 0) {
    await runAndCount(deps, instance, 'on_failure', hooks.onFailure, {
      status: 'failed',
      error: report.errors[0]!.message,
      exitCode: report.errors[0]!.exitCode,
    }, failures);
  }
  if (failures.outcomes.length === 0) return;
  try {
    const { state } = await loadState(deps.fs, instance.statePath);
    if (recordHookOutcomes(state, failures)) await saveState(deps.fs, instance.statePath, state, instance.dirMode);
  } catch (err) {
    deps.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not record the hook outcome in the state file');
  }
}
