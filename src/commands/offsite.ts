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
import { ConfigError, ExitCode, IdentityError, InsufficientSpaceError, InvalidSnapshotError, type ExitCodeValue } from '../core/errors.js';
import { tempPathFor, writeNewFile, type FileSystem, type Handle } from '../core/fs.js';
import { acquireLock } from '../pipeline/lock.js';
import type { Log } from '../core/log.js';
import { RdbValidator } from '../rdb/validate.js';
import { versionOf, ctimeOf } from './catalog.js';
import { DEFAULT_NODES_NAME, DEFAULT_RDB_NAME, RESTORE_FILE_MODE, archiveIdentities, emptyRestoreReport, followUpSteps, publishRestored, resolveRestoreTarget, restoreJson, restoreText, settleRestore, type RestoreReport } from './restore.js';
import { createSha256, sha256Hex } from '../core/sha256.js';
import { loadState } from '../pipeline/state.js';
import type { Timestamp } from '../core/timestamp.js';
import { latestArchived } from '../pipeline/event-order.js';
import { remoteName, type Manifest, type RemoteEvent } from '../targets/manifest.js';
import type { ServerFacts } from '../sources/source.js';
import { S3Target } from '../targets/s3.js';
import { pruneRemote, type RemotePruneReport } from '../offsite/prune.js';
import { runOffsite, type RemoteRunReport } from '../offsite/run.js';
import { remoteLockPath } from '../offsite/state.js';
import { readManifest } from '../offsite/upload.js';
import { readObject, readProblems } from '../offsite/read.js';
import { identityOpens, identityPath, readIdentityFile, type IdentityFile } from '../codecs/age.js';
import { encodingOfName, isEncrypted } from '../codecs/encoding.js';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

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

/**
 * The age identity file of --identity or RDB_ARCHIVER_AGE_IDENTITY_FILE, or
 * undefined when neither is given. Its text is never logged or printed; a
 * file that group or others can read is loaded with a warning.
 */
export async function loadIdentity(ctx: CommandContext, option: string | undefined): Promise<IdentityFile | undefined> {
  const chosen = identityPath(option);
  if (!chosen) return undefined;
  const file = await readIdentityFile(chosen, async (path) => {
    const handle = await open(path, constants.O_RDONLY | constants.O_NOCTTY);
    try {
      return { info: await handle.stat(), data: await handle.readFile() };
    } finally {
      await handle.close();
    }
  });
  if (file.warning) ctx.log.warn({ identityFile: file.path }, file.warning);
  return file;
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
    if (r.status === 'planned') {
      lines.push(...plannedLines(r));
      continue;
    }
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

/** A dry run's off-site plan: what the real run would upload, then delete at the remote. */
function plannedLines(r: RemoteRunReport): string[] {
  const lines = [`off-site ${r.remote} plan (dry run: nothing uploaded or deleted): would upload ${r.pending.join(', ')}`];
  const p = r.retention;
  if (p) {
    lines.push(`  remote retention plan: keep ${p.kept.length}, would delete ${p.deleted.length}${p.refused.length ? `, would keep ${p.refused.length} it cannot delete` : ''}${p.incompleteRemoved.length ? `, would remove ${p.incompleteRemoved.length} incomplete` : ''}${p.uploadsAborted ? `, would abort ${p.uploadsAborted} stale multipart upload${p.uploadsAborted === 1 ? '' : 's'}` : ''}`);
    for (const d of p.kept) lines.push(`    keep    ${d.ts}  ${d.reason}`);
    for (const d of p.deleted) lines.push(`    delete  ${d.ts}  ${d.reason}`);
    for (const d of p.refused) lines.push(`    kept    ${d.ts}  ${d.reason}`);
    for (const e of p.errors) lines.push(`    error: ${e.message}`);
  }
  if (r.error && !p?.errors.length) lines.push(`  error: ${r.error.message}`);
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
  events: Array<{
    ts: Timestamp; seq: number | null; bytes: number; nodes: boolean;
    /** The .rdb's encoding chain, from its object name (dump-<ts>.rdb.zst.age: ["zstd", "age"]). */
    encoding: string[];
    /** With --identity, for encrypted events: whether the identity opens the event's age header. */
    identityOpens?: 'yes' | 'no' | 'damaged';
    /** The RDB's redis-ver, from the manifest; null when it does not say (or cannot be read: see warnings). */
    redisVersion: string | null;
    /** Pulled from a server (source.redis): its facts from the manifest (version, run_id, replication offset, server time); absent otherwise. */
    server?: ServerFacts;
  }>;
  incomplete: Array<{ ts: Timestamp; names: string[]; modified: string }>;
  warnings: string[];
  error?: ErrorReport;
  exitCode: ExitCodeValue;
}

/** Bytes enough for an age header with many recipients; the payload is never read. */
const AGE_HEADER_READ = 64 * 1024;
/** Manifests `list --remote` reads in parallel. */
const MANIFEST_READS_AT_ONCE = 8;

/** Runs `body` for each item, at most `limit` at a time; the first failure is thrown once all started ones have settled. */
async function forEachLimited<T>(items: readonly T[], limit: number, body: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await body(items[i]!, i);
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

export async function listRemote(remote: RemoteConfig, identities?: readonly string[]): Promise<RemoteListReport> {
  const report: RemoteListReport = { remote: remote.name, location: `s3://${remote.bucket}/${remote.prefix}`, events: [], incomplete: [], warnings: [], exitCode: ExitCode.OK };
  try {
    await withTarget(remote, async (target) => {
      const complete: RemoteEvent[] = [];
      for (const e of await target.listEvents()) {
        if (!e.complete) {
          report.incomplete.push({ ts: e.ts, names: e.names, modified: new Date(e.modifiedMs).toISOString() });
          continue;
        }
        const rdb = e.objects.find((o) => o.name.startsWith(`dump-${e.ts}.rdb`));
        const encoding = rdb ? encodingOfName(rdb.name.slice(`dump-${e.ts}.rdb`.length)) : [];
        const entry: RemoteListReport['events'][number] = { ts: e.ts, seq: e.seq ?? null, bytes: rdb?.bytes ?? 0, nodes: e.objects.some((o) => o.name.startsWith(`nodes-${e.ts}.`)), encoding, redisVersion: null };
        if (rdb && identities?.length && isEncrypted(encoding)) {
          entry.identityOpens = await identityOpens(identities, target.downloadChunks(rdb.name, { firstBytes: AGE_HEADER_READ }));
        }
        report.events.push(entry);
        complete.push(e);
      }
      // What each manifest says about the server that wrote the event: small GETs, a few at a time.
      await forEachLimited(complete, MANIFEST_READS_AT_ONCE, async (e, i) => {
        const read = await readManifest(target, e);
        if (!read || 'error' in read) {
          report.warnings.push(`${e.ts}: manifest ${read ? `cannot be read (${read.error})` : 'vanished since the listing'}: its server facts are not shown; \`verify --remote ${remote.name}\` checks it`);
          return;
        }
        const entry = report.events[i]!;
        entry.redisVersion = read.manifest.redisVersion;
        if (read.manifest.server) entry.server = read.manifest.server;
      });
    });
  } catch (err) {
    report.error = errorReport(err);
    report.exitCode = report.error.exitCode as ExitCodeValue;
  }
  const closed = report.events.filter((e) => e.identityOpens === 'no').length;
  if (closed > 0) report.warnings.push(`the identity opens none of ${closed} encrypted event${closed === 1 ? '' : 's'} (marked "key: NO"): keep the identity of their recipients, or they cannot be restored`);
  return report;
}

function listRemoteText(r: RemoteListReport): string {
  if (r.error) return `failed: ${r.error.message}`;
  const lines = [`${r.remote} (${r.location}): ${r.events.length === 0 ? 'no events' : `${r.events.length} event${r.events.length === 1 ? '' : 's'}`}`];
  for (const e of r.events) {
    const key = e.identityOpens === undefined ? '' : `  key: ${e.identityOpens === 'yes' ? 'opens' : e.identityOpens === 'no' ? 'NO' : 'header damaged'}`;
    const version = e.redisVersion ?? e.server?.redisVersion ?? 'version ?';
    lines.push(`  ${e.ts}  ${formatBytes(e.bytes).padStart(10)}  ${e.nodes ? 'nodes' : '-    '}  ${version.padEnd(9)}  ${e.encoding.length > 0 ? e.encoding.join('+') : 'none'}${key}`);
  }
  for (const i of r.incomplete) lines.push(`warning: ${i.ts} is incomplete (no manifest: an upload that did not finish, or not ours): not listed; removed after the grace period (${i.names.join(', ')}, last modified ${i.modified})`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

export async function runRemoteList(cmd: Command, name: string, identityOption?: string): Promise<void> {
  const ctx = contextFor(cmd);
  const found = instancesWithRemote(ctx, name, '--remote');
  const identity = await loadIdentity(ctx, identityOption);
  const results = [];
  for (const { instance, remote } of found) {
    const report = await listRemote(remote, identity?.identities);
    if (identity?.warning) report.warnings.unshift(identity.warning);
    results.push({ instance: instance.name, report });
  }
  printResults(ctx, results, (r) => { const { exitCode: _e, ...rest } = r; return rest; }, listRemoteText);
}

// ---------------------------------------------------------------------------
// verify --remote

interface RemoteVerified {
  ts: Timestamp;
  ok: boolean;
  problems: string[];
  /**
   * 'head': sizes and ETags as the server reports them; 'data': every byte
   * downloaded, decoded and checked; 'stored': every byte downloaded and
   * checked as stored, but encrypted and no identity given: the content was NOT checked.
   */
  checked: 'head' | 'data' | 'stored';
  /** The encoding chain of the event's .rdb, as its manifest records it ([] = none). */
  encoding: string[];
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

async function verifyOne(target: S3Target, event: RemoteEvent, readData: boolean, identities: readonly string[] | undefined): Promise<{ problems: string[]; bytesRead: number; contentChecked: boolean; encoding: string[] }> {
  const problems: string[] = [];
  let bytesRead = 0;
  let contentChecked = readData;
  const read = await readManifest(target, event);
  if (!read) return { problems: ['manifest vanished since the listing'], bytesRead, contentChecked: false, encoding: [] };
  if ('error' in read) return { problems: [`manifest cannot be read: ${read.error}`], bytesRead, contentChecked: false, encoding: [] };
  const m: Manifest = read.manifest;
  const encoding = m.rdb.encoding;
  for (const obj of [m.rdb, m.nodes, m.sidecar]) {
    if (!obj) continue;
    const head = await target.head(obj.name);
    if (!head) problems.push(`${obj.name}: missing`);
    else if (head.bytes !== obj.storedBytes) problems.push(`${obj.name}: ${head.bytes} bytes at the server, the manifest says ${obj.storedBytes}`);
    else if (obj.etag !== null && head.etag !== null && head.etag !== obj.etag) problems.push(`${obj.name}: ETag ${head.etag} at the server, the manifest says ${obj.etag} (the object was replaced)`);
  }
  if (!readData || problems.length > 0) return { problems, bytesRead, contentChecked: false, encoding };
  for (const obj of [m.rdb, m.nodes, m.sidecar]) {
    if (!obj) continue;
    try {
      const got = await readObject(target, obj, { identities, validate: obj === m.rdb });
      bytesRead += got.storedBytes;
      if (!got.contentChecked) contentChecked = false;
      problems.push(...readProblems(obj, got));
    } catch (err) {
      // A wrong key is no damage of the event: it stops the verify with its own code (IdentityError).
      if (err instanceof InvalidSnapshotError) problems.push(`${obj.name}: ${err.reason}`);
      else throw err;
    }
  }
  return { problems, bytesRead, contentChecked, encoding };
}

export async function verifyRemote(log: Log, remote: RemoteConfig, options: { readData: boolean; ts?: Timestamp; identities?: readonly string[] }): Promise<RemoteVerifyReport> {
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
        const { problems, bytesRead, contentChecked, encoding } = await verifyOne(target, e, options.readData, options.identities);
        report.bytesRead += bytesRead;
        const checked = !options.readData ? 'head' : contentChecked ? 'data' : 'stored';
        report.events.push({ ts: e.ts, ok: problems.length === 0, problems, checked, encoding });
        if (checked === 'stored') report.warnings.push(`${e.ts}: encrypted (${encoding.join(' + ')}) and no identity given: the stored bytes match the manifest (size, sha256), but the content was NOT checked (no RDB CRC-64, no plaintext sha256); add --identity FILE`);
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
  for (const e of r.events) {
    const how = e.checked === 'stored' ? '  (stored bytes only: content NOT checked)' : e.encoding.length > 0 ? `  (${e.encoding.join(' + ')})` : '';
    lines.push(`${e.ok ? 'ok ' : 'BAD'}  ${r.remote}  ${e.ts}${how}${e.ok ? '' : `: ${e.problems.join('; ')}`}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  if (r.error) lines.push(`error: ${r.error.message}`);
  const unchecked = r.events.filter((e) => e.checked === 'stored').length;
  const how = r.readData ? `downloaded ${formatBytes(r.bytesRead)}: sha256 and RDB CRC-64 recomputed${unchecked > 0 ? `, except for ${unchecked} encrypted event${unchecked === 1 ? '' : 's'} whose content was NOT checked (no identity)` : ''}` : 'HEAD only: sizes and ETags as the server reports them (add --read-data to download and check every byte)';
  lines.push(`verified ${r.events.length} remote event${r.events.length === 1 ? '' : 's'} (${how}, ${(r.durationMs / 1000).toFixed(1)} s): ${r.events.length - r.bad.length} ok, ${r.bad.length} bad`);
  return lines.join('\n');
}

export async function runRemoteVerify(cmd: Command, name: string, options: { readData: boolean; ts?: Timestamp; identity?: string }): Promise<void> {
  const ctx = contextFor(cmd);
  const found = instancesWithRemote(ctx, name, '--remote');
  const identity = await loadIdentity(ctx, options.identity);
  const results = [];
  for (const { instance, remote } of found) {
    const report = await verifyRemote(ctx.log, remote, { ...options, identities: identity?.identities });
    if (identity?.warning) report.warnings.unshift(identity.warning);
    results.push({ instance: instance.name, report });
  }
  printResults(ctx, results, (r) => { const { exitCode, ...rest } = r; return { ...rest, exitCode }; }, verifyRemoteText);
}

// ---------------------------------------------------------------------------
// restore --from

export async function restoreFromRemote(
  fs: FileSystem,
  log: Log,
  instance: InstanceConfig,
  remote: RemoteConfig,
  options: { which: Timestamp | 'latest'; to: string; nodesTo?: string; force: boolean; identities?: readonly string[] },
): Promise<RestoreReport> {
  const report = emptyRestoreReport(instance.name);
  const temps: string[] = [];
  return settleRestore(fs, log, report, temps, () => withTarget(remote, async (target) => {
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
      const knownSeq = await loadState(fs, instance.statePath).then((l) => l.state.seq, () => undefined);
      report.warnings.push(...provenanceWarnings(m, instance.name, knownSeq));

      const archive = { dir: instance.archiveDir, ids: await archiveIdentities(fs, instance) };
      const rdbTarget = await resolveRestoreTarget(fs, '--to', options.to, DEFAULT_RDB_NAME, options.force, archive);
      const nodesTarget = options.nodesTo !== undefined && m.nodes ? await resolveRestoreTarget(fs, '--nodes-to', options.nodesTo, DEFAULT_NODES_NAME, options.force, archive) : undefined;
      if (nodesTarget && nodesTarget.path === rdbTarget.path) throw new ConfigError(undefined, '--nodes-to', 'must differ from --to');
      if (options.nodesTo !== undefined && !m.nodes) report.warnings.push(`event ${m.ts} has no nodes.conf: --nodes-to ${options.nodesTo} ignored`);
      const { available } = await fs.space(rdbTarget.dir);
      if (available < m.rdb.bytes) throw new InsufficientSpaceError(rdbTarget.dir, m.rdb.bytes, available);

      // Download, decoding and checking while streaming, into a temp file next
      // to the target. The temp is made only once the first bytes are
      // authenticated: a wrong key or a missing identity writes nothing.
      if (isEncrypted(m.rdb.encoding) && !options.identities?.length) {
        throw new IdentityError(`${target.location}${m.rdb.name}`, 'is encrypted (age): give the identity file with --identity FILE or RDB_ARCHIVER_AGE_IDENTITY_FILE; nothing restored');
      }
      const rdbTemp = tempPathFor(rdbTarget.path);
      let out: Handle | undefined;
      let got;
      try {
        got = await readObject(target, m.rdb, {
          identities: options.identities, validate: true, requireContent: true,
          write: async (chunk) => {
            if (!out) {
              temps.push(rdbTemp);
              out = await fs.open(rdbTemp, 'create-exclusive', RESTORE_FILE_MODE);
              await out.chmod(RESTORE_FILE_MODE);
            }
            let off = 0;
            while (off < chunk.length) off += await out.write(chunk, off, chunk.length - off);
          },
        });
        await out?.sync();
      } finally {
        await out?.close();
      }
      if (!out || got.bytes !== m.rdb.bytes || got.sha256 !== m.rdb.sha256) {
        throw new InvalidSnapshotError(`${target.location}${m.rdb.name}`, `downloaded ${got.bytes} bytes with sha256 ${got.sha256}, the manifest says ${m.rdb.bytes} bytes, ${m.rdb.sha256}; nothing restored`);
      }
      let nodesTemp: string | undefined;
      if (m.nodes && nodesTarget) {
        const chunks: Uint8Array[] = [];
        const nodes = await readObject(target, m.nodes, { identities: options.identities, validate: false, requireContent: true, write: async (c) => { chunks.push(c); } });
        if (nodes.sha256 !== m.nodes.sha256) throw new InvalidSnapshotError(`${target.location}${m.nodes.name}`, 'sha256 does not match the manifest; nothing restored');
        nodesTemp = tempPathFor(nodesTarget.path);
        temps.push(nodesTemp);
        await writeNewFile(fs, nodesTemp, Buffer.concat(chunks), RESTORE_FILE_MODE);
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
        redisVersion: versionOf(got.rdb!), ctime: ctimeOf(got.rdb!), server: m.server ?? null, nodes: m.nodes ? { from: `${target.location}${m.nodes.name}`, to: nodesTarget?.path ?? null } : null,
        steps: followUpSteps({ rdbPath: rdbTarget.path, nodesPath: nodesTarget?.path }),
      });
      log.info({ remote: remote.name, ts: m.ts, to: rdbTarget.path, bytes: got.bytes, sha256: got.sha256 }, 'snapshot restored from the remote');
  }));
}

/**
 * What a restore from the bucket says about an event that is not plainly this
 * archive's own: uploaded under another instance name (a prefix shared by
 * mistake, or a renamed instance), or carrying a sequence number above any
 * this archive has handed out (uploaded by another archive, or planted).
 * Restored all the same (after a disaster the local state may be gone or
 * stale), but never silently.
 */
export function provenanceWarnings(m: Manifest, instanceName: string, knownSeq: number | undefined): string[] {
  const out: string[] = [];
  // The bucket's text, quoted as JSON: no control characters reach a terminal.
  const quoted = (text: string) => JSON.stringify(text.slice(0, 100));
  if (m.instance !== '' && m.instance !== instanceName) {
    out.push(`event ${m.ts} was uploaded by instance ${quoted(m.instance)}${m.host ? ` on ${quoted(m.host)}` : ''}, not by this instance "${instanceName}": if the prefix is shared, it is not this instance's data; check with \`rdb-archiver list --remote\` and restore a named event`);
  }
  if (knownSeq !== undefined && m.seq !== null && m.seq > knownSeq) {
    out.push(`event ${m.ts} has the archive sequence number ${m.seq}, above any this archive handed out (${knownSeq}): this archive did not upload it`);
  }
  return out;
}

export async function runRemoteRestore(cmd: Command, name: string, options: { which: Timestamp | 'latest'; to: string; nodesTo?: string; force: boolean; identity?: string }): Promise<void> {
  const ctx = contextFor(cmd);
  const found = instancesWithRemote(ctx, name, '--from');
  if (found.length !== 1) throw new ConfigError(ctx.config.file, '--instance', `several instances have a remote "${name}": add --instance NAME`);
  const { instance, remote } = found[0]!;
  const identity = await loadIdentity(ctx, options.identity);
  const report = await restoreFromRemote(ctx.fs, ctx.log, instance, remote, { ...options, identities: identity?.identities });
  if (identity?.warning) report.warnings.unshift(identity.warning);
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
