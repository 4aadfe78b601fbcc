/**
 * The off-site commands: `push`, and the `--remote`/`--from` forms of list,
 * verify, restore and prune. Each works on the remote's complete events only
 * (those with a manifest).
 */
import type { Command } from 'commander';
import { EventNotFoundError, VERIFY_FAILED } from './catalog.js';
import type { InstanceConfig, RemoteConfig } from '../core/config.js';
import { contextFor, formatBytes, printResults, type CommandContext } from '../core/context.js';
import { errorReport, type ErrorReport } from '../pipeline/cycle.js';
import { ConfigError, ExitCode, InsufficientSpaceError, InvalidSnapshotError, type ExitCodeValue } from '../core/errors.js';
import { tempPathFor, unlinkIfExists, writeNewFile, type FileSystem, type Handle } from '../core/fs.js';
import { acquireLock } from '../pipeline/lock.js';
import type { Log } from '../core/log.js';
import { RdbValidator } from '../rdb/validate.js';
import { versionOf, ctimeOf } from './catalog.js';
import { DEFAULT_NODES_NAME, DEFAULT_RDB_NAME, RESTORE_FILE_MODE, archiveIdentities, followUpSteps, publishRestored, resolveRestoreTarget, restoreJson, restoreText, type RestoreReport } from './restore.js';
import { createSha256, sha256Hex } from '../core/sha256.js';
import { loadState } from '../pipeline/state.js';
import type { Timestamp } from '../core/timestamp.js';
import { latestArchived } from '../pipeline/event-order.js';
import { remoteName, type Manifest, type RemoteEvent } from '../targets/manifest.js';
import { S3Target } from '../targets/s3.js';
import { pruneRemote, type RemotePruneReport } from '../offsite/prune.js';
import { runOffsite, type RemoteRunReport } from '../offsite/run.js';
import { remoteLockPath } from '../offsite/state.js';
import { readManifest } from '../offsite/upload.js';

/** The instances that have remote `name`; a ConfigError when none has it. */
export function instancesWithRemote(ctx: CommandContext, name: string, option: string): Array<{ instance: InstanceConfig; remote: RemoteConfig }> {
  const found = ctx.config.instances.flatMap((instance) => instance.remotes.filter((r) => r.name === name).map((remote) => ({ instance, remote })));
  if (found.length === 0) {
    const known = [...new Set(ctx.config.instances.flatMap((i) => i.remotes.map((r) => r.name)))];
    throw new ConfigError(ctx.config.file, option, `no remote named "${name}" (${known.length > 0 ? `remotes: ${known.join(', ')}` : 'no remotes are configured'})`);
  }
  return found;
}

async function withTarget<T>(remote: RemoteConfig, body: (target: S3Target) => Promise<T>): Promise<T> {
  const target = await S3Target.open(remote);
  try {
    return await body(target);
  } finally {
    target.close();
  }
}

// ---------------------------------------------------------------------------
// push

interface PushReport {
  remotes: RemoteRunReport[];
  exitCode: ExitCodeValue;
}

export function remoteRunLines(reports: readonly RemoteRunReport[]): string[] {
  const lines: string[] = [];
  for (const r of reports) {
    const parts = [`off-site ${r.remote}: ${r.status}`];
    if (r.uploaded.length > 0) parts.push(`uploaded ${r.uploaded.join(', ')} (${formatBytes(r.bytesUploaded)})`);
    if (r.pending.length > 0) parts.push(`${r.pending.length} pending (oldest ${r.pending[0]})`);
    if (r.nextAttemptAt) parts.push(`next attempt after ${r.nextAttemptAt}`);
    lines.push(parts.join('; '));
    for (const l of r.lost) lines.push(`  not uploaded ${l.ts}: ${l.reason}`);
    if (r.error) lines.push(`  error: ${r.error.message}`);
    if (r.retention) {
      const p = r.retention;
      lines.push(`  remote retention: keep ${p.kept.length}, deleted ${p.deleted.length}${p.refused.length ? `, refused ${p.refused.length}` : ''}${p.incompleteRemoved.length ? `, incomplete removed ${p.incompleteRemoved.length}` : ''}`);
      for (const d of p.deleted) lines.push(`    deleted ${d.ts}: ${d.reason}`);
      for (const d of p.refused) lines.push(`    ${d.ts}: ${d.reason}`);
      for (const e of p.errors) lines.push(`    error: ${e.message}`);
    }
    for (const w of r.warnings) lines.push(`  warning: ${w}`);
  }
  return lines;
}

function registerPush(program: Command): void {
  program
    .command('push')
    .description('upload the events still pending for the remotes now (ignoring the backoff), then apply each remote\'s retention')
    .option('--remote <name>', 'only this remote')
    .option('--json', 'print one JSON object on stdout')
    .action(async (opts: { remote?: string }, cmd: Command) => {
      const ctx = contextFor(cmd);
      if (opts.remote !== undefined) instancesWithRemote(ctx, opts.remote, '--remote');
      else if (ctx.config.instances.every((i) => i.remotes.length === 0)) throw new ConfigError(ctx.config.file, 'remotes', 'no remotes are configured: nothing to push');
      const results: Array<{ instance: string; report: PushReport }> = [];
      for (const instance of ctx.config.instances) {
        const r = await runOffsite({ fs: ctx.fs, log: ctx.log }, instance, { explicit: true, only: opts.remote });
        results.push({ instance: instance.name, report: r });
      }
      printResults(ctx, results, (r) => ({ remotes: r.remotes, exitCode: r.exitCode }), (r) => remoteRunLines(r.remotes).join('\n') || 'no remotes');
    });
}

// ---------------------------------------------------------------------------
// list --remote

interface RemoteListReport {
  remote: string;
  location: string;
  /** Complete events, most recently archived first (event-order.ts); seq null for a manifest written before sequence numbers. */
  events: Array<{ ts: Timestamp; seq: number | null; bytes: number; nodes: boolean }>;
  incomplete: Array<{ ts: Timestamp; names: string[]; modified: string }>;
  error?: ErrorReport;
  exitCode: ExitCodeValue;
}

export async function listRemote(remote: RemoteConfig): Promise<RemoteListReport> {
  const report: RemoteListReport = { remote: remote.name, location: `s3://${remote.bucket}/${remote.prefix}`, events: [], incomplete: [], exitCode: ExitCode.OK };
  try {
    const events = await withTarget(remote, (t) => t.listEvents());
    for (const e of events) {
      if (e.complete) {
        const rdb = e.objects.find((o) => o.name.startsWith(`dump-${e.ts}.rdb`));
        report.events.push({ ts: e.ts, seq: e.seq ?? null, bytes: rdb?.bytes ?? 0, nodes: e.objects.some((o) => o.name.startsWith(`nodes-${e.ts}.`)) });
      } else {
        report.incomplete.push({ ts: e.ts, names: e.names, modified: new Date(e.modifiedMs).toISOString() });
      }
    }
  } catch (err) {
    report.error = errorReport(err);
    report.exitCode = report.error.exitCode as ExitCodeValue;
  }
  return report;
}

function listRemoteText(r: RemoteListReport): string {
  if (r.error) return `failed: ${r.error.message}`;
  const lines = [`${r.remote} (${r.location}): ${r.events.length === 0 ? 'no events' : `${r.events.length} event${r.events.length === 1 ? '' : 's'}`}`];
  for (const e of r.events) lines.push(`  ${e.ts}  ${formatBytes(e.bytes).padStart(10)}  ${e.nodes ? 'nodes' : '-'}`);
  for (const i of r.incomplete) lines.push(`warning: ${i.ts} is incomplete (no manifest: an upload that did not finish, or not ours): not listed; removed after the grace period (${i.names.join(', ')}, last modified ${i.modified})`);
  return lines.join('\n');
}

export async function runRemoteList(cmd: Command, name: string): Promise<void> {
  const ctx = contextFor(cmd);
  const results = [];
  for (const { instance, remote } of instancesWithRemote(ctx, name, '--remote')) results.push({ instance: instance.name, report: await listRemote(remote) });
  printResults(ctx, results, (r) => { const { exitCode: _e, ...rest } = r; return rest; }, listRemoteText);
}

// ---------------------------------------------------------------------------
// verify --remote

interface RemoteVerified {
  ts: Timestamp;
  ok: boolean;
  problems: string[];
  /** 'head': sizes and ETags as the server reports them; 'data': every byte downloaded and checked. */
  checked: 'head' | 'data';
}

interface RemoteVerifyReport {
  remote: string;
  ok: boolean;
  readData: boolean;
  events: RemoteVerified[];
  bad: Array<{ ts: Timestamp; problems: string[] }>;
  warnings: string[];
  bytesRead: number;
  durationMs: number;
  error?: ErrorReport;
  exitCode: ExitCodeValue;
}

const CHUNK = 8 * 1024 * 1024;

/**
 * Streams one remote object through sha256 + (for the .rdb) the RDB check, in
 * 8 MiB batches, optionally writing it to `out`. Returns bytes and digest;
 * throws InvalidSnapshotError when the RDB check fails.
 */
async function streamObject(target: S3Target, name: string, validatorPath: string | undefined, out: Handle | undefined): Promise<{ bytes: number; sha256: string; rdb?: ReturnType<RdbValidator['finish']> }> {
  const hash = createSha256();
  const validator = validatorPath ? new RdbValidator(validatorPath) : undefined;
  let batch = Buffer.allocUnsafe(CHUNK);
  let used = 0;
  const flush = async () => {
    if (used === 0) return;
    const view = batch.subarray(0, used);
    hash.update(view);
    validator?.update(view);
    if (validator?.earlyError) throw validator.earlyError;
    if (out) {
      let off = 0;
      while (off < used) off += await out.write(view, off, used - off);
    }

    used = 0;
  };
  const { bytes } = await target.download(name, async (chunk) => {
    let at = 0;
    while (at < chunk.length) {
      const n = Math.min(chunk.length - at, CHUNK - used);
      batch.set(chunk.subarray(at, at + n), used);
      used += n;
      at += n;
      if (used === CHUNK) await flush();
    }
  });
  await flush();
  batch = Buffer.alloc(0);
  return { bytes, sha256: hash.digest('hex'), ...(validator ? { rdb: validator.finish() } : {}) };
}

async function verifyOne(target: S3Target, event: RemoteEvent, readData: boolean): Promise<{ problems: string[]; bytesRead: number }> {
  const problems: string[] = [];
  let bytesRead = 0;
  const read = await readManifest(target, event);
  if (!read) return { problems: ['manifest vanished since the listing'], bytesRead };
  if ('error' in read) return { problems: [`manifest cannot be read: ${read.error}`], bytesRead };
  const m: Manifest = read.manifest;
  for (const obj of [m.rdb, m.nodes, m.sidecar]) {
    if (!obj) continue;
    const head = await target.head(obj.name);
    if (!head) problems.push(`${obj.name}: missing`);
    else if (head.bytes !== obj.storedBytes) problems.push(`${obj.name}: ${head.bytes} bytes at the server, the manifest says ${obj.storedBytes}`);
    else if (obj.etag !== null && head.etag !== null && head.etag !== obj.etag) problems.push(`${obj.name}: ETag ${head.etag} at the server, the manifest says ${obj.etag} (the object was replaced)`);
  }
  if (!readData || problems.length > 0) return { problems, bytesRead };
  try {
    const got = await streamObject(target, m.rdb.name, `${target.location}${m.rdb.name}`, undefined);
    bytesRead += got.bytes;
    if (got.bytes !== m.rdb.bytes) problems.push(`${m.rdb.name}: ${got.bytes} bytes downloaded, the manifest says ${m.rdb.bytes}`);
    if (got.sha256 !== m.rdb.sha256) problems.push(`${m.rdb.name}: sha256 ${got.sha256}, the manifest says ${m.rdb.sha256}`);
  } catch (err) {
    if (!(err instanceof InvalidSnapshotError)) throw err;
    problems.push(`${m.rdb.name}: ${err.reason}`);
  }
  for (const obj of [m.nodes, m.sidecar]) {
    if (!obj) continue;
    const data = await target.getSmall(obj.name);
    bytesRead += data.length;
    if (sha256Hex(data) !== obj.sha256) problems.push(`${obj.name}: sha256 ${sha256Hex(data)}, the manifest says ${obj.sha256}`);
  }
  return { problems, bytesRead };
}

export async function verifyRemote(log: Log, remote: RemoteConfig, options: { readData: boolean; ts?: Timestamp }): Promise<RemoteVerifyReport> {
  const started = Date.now();
  const report: RemoteVerifyReport = { remote: remote.name, ok: true, readData: options.readData, events: [], bad: [], warnings: [], bytesRead: 0, durationMs: 0, exitCode: ExitCode.OK };
  try {
    await withTarget(remote, async (target) => {
      const events = await target.listEvents();
      if (options.ts && !events.some((e) => e.complete && e.ts === options.ts)) {
        throw new EventNotFoundError(`no complete event ${options.ts} at remote ${remote.name}; see \`rdb-archiver list --remote ${remote.name}\``);
      }
      for (const e of events) {
        if (options.ts && e.ts !== options.ts) continue;
        if (!e.complete) {
          report.warnings.push(`${e.ts}: incomplete (no manifest): not verified, never restored; removed after the grace period`);
          continue;
        }
        const { problems, bytesRead } = await verifyOne(target, e, options.readData);
        report.bytesRead += bytesRead;
        report.events.push({ ts: e.ts, ok: problems.length === 0, problems, checked: options.readData ? 'data' : 'head' });
        if (problems.length > 0) {
          report.bad.push({ ts: e.ts, problems });
          log.error({ remote: remote.name, ts: e.ts, problems }, 'remote event failed verification');
        }
      }
    });
  } catch (err) {
    report.error = errorReport(err);
    report.exitCode = report.error.exitCode as ExitCodeValue;
  }
  report.durationMs = Date.now() - started;
  if (report.bad.length > 0 || report.error) report.ok = false;
  if (report.bad.length > 0 && report.exitCode === ExitCode.OK) report.exitCode = VERIFY_FAILED;
  return report;
}

function verifyRemoteText(r: RemoteVerifyReport): string {
  const lines: string[] = [];
  for (const e of r.events) lines.push(`${e.ok ? 'ok ' : 'BAD'}  ${r.remote}  ${e.ts}${e.ok ? '' : `: ${e.problems.join('; ')}`}`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  if (r.error) lines.push(`error: ${r.error.message}`);
  const how = r.readData ? `downloaded ${formatBytes(r.bytesRead)}: sha256 and RDB CRC-64 recomputed` : 'HEAD only: sizes and ETags as the server reports them (add --read-data to download and check every byte)';
  lines.push(`verified ${r.events.length} remote event${r.events.length === 1 ? '' : 's'} (${how}, ${(r.durationMs / 1000).toFixed(1)} s): ${r.events.length - r.bad.length} ok, ${r.bad.length} bad`);
  return lines.join('\n');
}

export async function runRemoteVerify(cmd: Command, name: string, options: { readData: boolean; ts?: Timestamp }): Promise<void> {
  const ctx = contextFor(cmd);
  const results = [];
  for (const { instance, remote } of instancesWithRemote(ctx, name, '--remote')) results.push({ instance: instance.name, report: await verifyRemote(ctx.log, remote, options) });
  printResults(ctx, results, (r) => { const { exitCode, ...rest } = r; return { ...rest, exitCode }; }, verifyRemoteText);
}

// ---------------------------------------------------------------------------
// restore --from

export async function restoreFromRemote(
  fs: FileSystem,
  log: Log,
  instance: InstanceConfig,
  remote: RemoteConfig,
  options: { which: Timestamp | 'latest'; to: string; nodesTo?: string; force: boolean },
): Promise<RestoreReport> {
  const report: RestoreReport = {
    instance: instance.name, status: 'failed', ts: null, rule: null, from: null, to: null, bytes: 0, sha256: null,
    redisVersion: null, ctime: null, nodes: null, replaced: [], warnings: [], steps: [], exitCode: ExitCode.OK,
  };
  const temps: string[] = [];
  try {
    await withTarget(remote, async (target) => {
      const complete = (await target.listEvents()).filter((e) => e.complete);
      // "latest": the most recently archived (event-order.ts), whatever clock named it.
      const event = options.which === 'latest' ? latestArchived(complete) : complete.find((e) => e.ts === options.which);
      if (!event) {
        throw new EventNotFoundError(options.which === 'latest'
          ? `no complete events at remote ${remote.name} (${target.location}): nothing to restore`
          : `no complete event ${options.which} at remote ${remote.name}; see \`rdb-archiver list --remote ${remote.name}\``);
      }
      const read = await readManifest(target, event);
      if (!read || 'error' in read) throw new InvalidSnapshotError(`${target.location}${event.manifest ?? remoteName('manifest', event.ts, event.seq)}`, `manifest cannot be read: ${read ? read.error : 'it vanished'}; nothing restored`);
      const m = read.manifest;

      const archive = { dir: instance.archiveDir, ids: await archiveIdentities(fs, instance) };
      const rdbTarget = await resolveRestoreTarget(fs, '--to', options.to, DEFAULT_RDB_NAME, options.force, archive);
      const nodesTarget = options.nodesTo !== undefined && m.nodes ? await resolveRestoreTarget(fs, '--nodes-to', options.nodesTo, DEFAULT_NODES_NAME, options.force, archive) : undefined;
      if (nodesTarget && nodesTarget.path === rdbTarget.path) throw new ConfigError(undefined, '--nodes-to', 'must differ from --to');
      if (options.nodesTo !== undefined && !m.nodes) report.warnings.push(`event ${m.ts} has no nodes.conf: --nodes-to ${options.nodesTo} ignored`);
      const { available } = await fs.space(rdbTarget.dir);
      if (available < m.rdb.bytes) throw new InsufficientSpaceError(rdbTarget.dir, m.rdb.bytes, available);

      // Download, checking while streaming, into a temp file next to the target.
      const rdbTemp = tempPathFor(rdbTarget.path);
      temps.push(rdbTemp);
      const out = await fs.open(rdbTemp, 'create-exclusive', RESTORE_FILE_MODE);
      let got;
      try {
        await out.chmod(RESTORE_FILE_MODE);
        got = await streamObject(target, m.rdb.name, `${target.location}${m.rdb.name}`, out);
        await out.sync();
      } finally {
        await out.close();
      }
      if (got.bytes !== m.rdb.bytes || got.sha256 !== m.rdb.sha256) {
        throw new InvalidSnapshotError(`${target.location}${m.rdb.name}`, `downloaded ${got.bytes} bytes with sha256 ${got.sha256}, the manifest says ${m.rdb.bytes} bytes, ${m.rdb.sha256}; nothing restored`);
      }
      let nodesTemp: string | undefined;
      if (m.nodes && nodesTarget) {
        const data = await target.getSmall(m.nodes.name);
        if (sha256Hex(data) !== m.nodes.sha256) throw new InvalidSnapshotError(`${target.location}${m.nodes.name}`, 'sha256 does not match the manifest; nothing restored');
        nodesTemp = tempPathFor(nodesTarget.path);
        temps.push(nodesTemp);
        await writeNewFile(fs, nodesTemp, data, RESTORE_FILE_MODE);
      }
      await publishRestored(fs, rdbTemp, rdbTarget, options.force);
      if (rdbTarget.exists) report.replaced.push(rdbTarget.path);
      if (nodesTemp && nodesTarget) {
        await publishRestored(fs, nodesTemp, nodesTarget, options.force);
        if (nodesTarget.exists) report.replaced.push(nodesTarget.path);
      }
      await fs.syncDir(rdbTarget.dir);
      if (nodesTarget && nodesTarget.dir !== rdbTarget.dir) await fs.syncDir(nodesTarget.dir);
      const nodesNotRestored = m.nodes && !nodesTarget ? `${target.location}${m.nodes.name}` : undefined;
      if (nodesNotRestored) report.warnings.push(`event ${m.ts} has a nodes.conf (${nodesNotRestored}) that was NOT restored: add --nodes-to PATH`);
      Object.assign(report, {
        status: 'restored', ts: m.ts, rule: null, from: `${target.location}${m.rdb.name}`, to: rdbTarget.path, bytes: got.bytes, sha256: got.sha256,
        redisVersion: versionOf(got.rdb!), ctime: ctimeOf(got.rdb!), nodes: m.nodes ? { from: `${target.location}${m.nodes.name}`, to: nodesTarget?.path ?? null } : null,
        steps: followUpSteps({ rdbPath: rdbTarget.path, nodesPath: nodesTarget?.path }),
      });
      log.info({ remote: remote.name, ts: m.ts, to: rdbTarget.path, bytes: got.bytes, sha256: got.sha256 }, 'snapshot restored from the remote');
    });
  } catch (err) {
    report.status = 'failed';
    report.error = errorReport(err);
    report.exitCode = report.error.exitCode as ExitCodeValue;
    log.error({ err: report.error.message, kind: report.error.kind }, 'restore failed');
  } finally {
    for (const t of temps) await unlinkIfExists(fs, t).catch(() => undefined);
  }
  return report;
}

export async function runRemoteRestore(cmd: Command, name: string, options: { which: Timestamp | 'latest'; to: string; nodesTo?: string; force: boolean }): Promise<void> {
  const ctx = contextFor(cmd);
  const found = instancesWithRemote(ctx, name, '--from');
  if (found.length !== 1) throw new ConfigError(ctx.config.file, '--instance', `several instances have a remote "${name}": add --instance NAME`);
  const { instance, remote } = found[0]!;
  const report = await restoreFromRemote(ctx.fs, ctx.log, instance, remote, options);
  printResults(ctx, [{ instance: instance.name, report }], restoreJson, restoreText);
}

// ---------------------------------------------------------------------------
// prune --remote

interface RemotePruneCommandReport extends RemotePruneReport {
  exitCode: ExitCodeValue;
}

function remotePruneText(r: RemotePruneCommandReport): string {
  const verb = r.dryRun ? 'would delete' : 'deleted';
  const lines = [`${r.dryRun ? 'remote retention plan (dry run: nothing deleted)' : 'remote retention'} for ${r.remote}: keep ${r.kept.length}, ${verb} ${r.deleted.length}`];
  for (const d of r.kept) lines.push(`  keep    ${d.ts}  ${d.reason}`);
  for (const d of r.deleted) lines.push(`  ${r.dryRun ? 'delete ' : 'deleted'} ${d.ts}  ${d.reason}`);
  for (const d of r.refused) lines.push(`  kept    ${d.ts}  ${d.reason}`);
  for (const ts of r.incompleteRemoved) lines.push(`  ${r.dryRun ? 'would remove' : 'removed'} incomplete ${ts} (no manifest, older than the grace period)`);
  if (r.uploadsAborted > 0) lines.push(`  ${r.dryRun ? 'would abort' : 'aborted'} ${r.uploadsAborted} stale multipart upload${r.uploadsAborted === 1 ? '' : 's'}`);
  if (r.uploadsUnsupported) lines.push('  note: the server cannot list multipart uploads; add a bucket lifecycle rule AbortIncompleteMultipartUpload');
  for (const e of r.errors) lines.push(`error: ${e.message}`);
  return lines.join('\n');
}

export async function runRemotePrune(cmd: Command, name: string, dryRun: boolean): Promise<void> {
  const ctx = contextFor(cmd);
  const results: Array<{ instance: string; report: RemotePruneCommandReport }> = [];
  for (const { instance, remote } of instancesWithRemote(ctx, name, '--remote')) {
    const { state } = await loadState(ctx.fs, instance.statePath);
    const base: RemotePruneReport = { remote: remote.name, dryRun, rules: {}, kept: [], deleted: [], refused: [], incompleteRemoved: [], uploadsAborted: 0, uploadsUnsupported: false, errors: [] };
    let report: RemotePruneReport = base;
    try {
      // Under the remote's lock (not for a dry run): never beside an upload to the same remote.
      const lock = dryRun ? undefined : await acquireLock(ctx.fs, remoteLockPath(instance, remote), 'prune', instance.dirMode);
      try {
        report = await withTarget(remote, (t) => pruneRemote(t, remote, instance.timezone, { dryRun, protect: state.archived?.ts as Timestamp | undefined }));
      } finally {
        await lock?.release().catch(() => undefined);
      }
    } catch (err) {
      report = { ...base, errors: [errorReport(err)] };
    }
    results.push({ instance: instance.name, report: { ...report, exitCode: (report.errors[0]?.exitCode ?? ExitCode.OK) as ExitCodeValue } });
  }
  printResults(ctx, results, (r) => r, remotePruneText);
}

export function registerOffsiteCommands(program: Command): void {
  registerPush(program);
}
