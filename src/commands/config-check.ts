/**
 * `rdb-archiver config check`: is this config ready to run, here, as this user?
 * (sanoid's --configcheck, `pgbackrest check`.) The config itself is loaded by
 * the loader every command uses (a bad config is exit 2 before any check).
 * Then, per instance, a small I/O layer gathers facts (gatherFacts: stat,
 * open + read of the source header, a probe file in the archive root, statfs)
 * and a pure function (judgeInstance) turns them into findings: ok, warning
 * or error, each with its reason and its fix.
 *
 * It writes nothing but the probe file, which it removes; it never takes the
 * lock. Secrets never appear: the resolved settings hold paths, rules and
 * thresholds; hook argv is shown as the executable alone (arguments may hold
 * tokens).
 */
import { describeCompression } from '../codecs/encoding.js';
import { zstdProvider } from '../codecs/compress.js';
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { missingRootError, ownerMismatchError, sameFilesystemWarning } from '../pipeline/archive-root.js';
import { describeEvery, ruleDir, type Config, type InstanceConfig, type MinFree, type RemoteConfig } from '../core/config.js';
import { contextFor, formatBytes, print } from '../core/context.js';
import { ExitCode } from '../core/errors.js';
import { errorCode, type FileInfo, type FileSystem } from '../core/fs.js';
import { hookExecutable, untrustedHookReason } from '../ops/hooks.js';
import { archiveSpace, formatDuration } from '../ops/inspect.js';
import { eventFileNames, scanFolder } from '../pipeline/retention.js';
import { effectiveUid, untrustedPathReason, userName } from '../core/trust.js';
import { scheduleProblem, scheduleTimezone } from './daemon.js';
import { defaultFailureDir, isOwnFallbackDir } from '../pipeline/failure-record.js';
import { reserveBytes } from '../pipeline/worker.js';

export type Verdict = 'ok' | 'warning' | 'error';

export interface Finding {
  check: string;
  verdict: Verdict;
  /** What was found. */
  reason: string;
  /** What to do about it (warnings and errors). */
  fix?: string;
  path?: string;
}

/** What a stat said of one path; `error` is the errno code when it could not be stat'ed (ENOENT: missing). */
export interface PathFacts {
  path: string;
  info?: Pick<FileInfo, 'kind' | 'uid' | 'gid' | 'mode' | 'dev'>;
  error?: string;
}

export interface SourceFacts extends PathFacts {
  /** open + read of the first bytes: 'ok', or the errno code. */
  read?: 'ok' | string;
  /** The first bytes, as text (the RDB magic). */
  header?: string;
  /** Its size, read through the open descriptor. */
  size?: number;
  /** The first folder above the source this user may not search (x), when the open failed with EACCES. */
  unsearchable?: string;
}

export interface RuleFolderFacts extends PathFacts {
  rule: string;
  /** Event files in the folder owned by another user: retention never deletes them. */
  foreignFiles: number;
}

export interface HookFacts {
  key: string;
  command: string;
  /** The file spawn() would run; undefined: not found in PATH. */
  executable?: string;
  info?: PathFacts['info'];
  error?: string;
  runnable: boolean;
  untrusted?: string;
}

export interface SpaceFacts {
  /** Rule folders on this filesystem (or their nearest existing parent's). */
  paths: string[];
  available?: number;
  total?: number;
  error?: string;
}

/** The read/write probe of one remote: a small object put, read back (head + get) and deleted under its prefix. */
export type RemoteProbeFacts = { name: string; location: string } & ({ ok: true } | { ok: false; step: 'put' | 'head' | 'get' | 'delete'; error: string });

/** A remote whose compression this Node cannot run (zstd without node:zlib zstd or zstd-napi). */
export interface CodecFacts { remote: string; codec: string; reason: string }

export interface InstanceCheckFacts {
  user: { uid: number; gid: number; groups: number[] };
  remotes: RemoteProbeFacts[];
  /** Remotes whose compression cannot run here; absent or empty when every codec is available. */
  codecs?: CodecFacts[];
  source: SourceFacts;
  nodes?: SourceFacts;
  /** source.redis: whether connect, AUTH and INFO worked. */
  redis?: { ok: boolean; detail: string };
  /** source.redis cluster: true: each discovered master, probed like a single server. */
  shards?: Array<{ shard: string; slots: string; master: string; ok: boolean; detail: string }>;
  archive: PathFacts;
  /** The nearest existing folder above a missing archive root, and whether this user may write it. */
  archiveParent?: PathFacts & { writable: boolean };
  /** The probe file in the archive root: 'ok', or the errno code of the step that failed. */
  probe?: { ok: true } | { ok: false; step: string; code: string };
  ruleFolders: RuleFolderFacts[];
  stateDir: PathFacts;
  hooks: HookFacts[];
  spaces: SpaceFacts[];
  /**
   * Where a failed run records itself when the state folder cannot take it
   * (failure-record.ts): monitor.failure_dir, or /var/tmp/rdb-archiver-<uid>.
   */
  failureDir: PathFacts & { configured: boolean; writable: boolean };
}

/** What the whole config shares: the file, the daemon's schedule, the metrics file's folder. */
export interface ConfigWideFacts {
  config?: PathFacts & { untrusted?: string };
  schedule: { expression: string; timezone: string; problem?: string };
  /** The folder of metrics.textfile; when it is missing, the nearest existing folder above it (a run makes the rest, 0755). */
  metricsDir?: PathFacts & { writable?: boolean; parent?: { path: string; writable: boolean } };
}

// ---------------------------------------------------------------------------
// Pure: facts -> findings.

const shortName = (uid: number) => userName(uid).replace(/ \(uid \d+\)$/, '');
const octal = (mode: number) => `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;

/** "rdb-archiver (uid 998), groups rdb-archiver (gid 998), redis (gid 110)". */
export function describeUser(user: InstanceCheckFacts['user'], groupName: (gid: number) => string = groupNameOf): string {
  const groups = [...new Set([user.gid, ...user.groups])].map(groupName).join(', ');
  return `${userName(user.uid)}, groups ${groups}`;
}

/** Which permission bits apply to this user for a file: owner, group, other (root reads everything). */
function readerClass(info: NonNullable<PathFacts['info']>, user: InstanceCheckFacts['user']): 'root' | 'owner' | 'group' | 'other' {
  if (user.uid === 0) return 'root';
  if (info.uid === user.uid) return 'owner';
  if (info.gid === user.gid || user.groups.includes(info.gid)) return 'group';
  return 'other';
}

function judgeSource(what: string, key: string, src: SourceFacts, user: InstanceCheckFacts['user'], optional: boolean, groupName: (gid: number) => string): Finding[] {
  const check = `${key} readable`;
  const path = src.path;
  if (src.error === 'ENOENT') {
    return [optional
      ? { check, verdict: 'warning', path, reason: `${what} ${path} does not exist: runs archive the RDB without it (a warning each run)`, fix: `check ${key}; remove the key if this is not a Redis Cluster node` }
      : { check, verdict: 'error', path, reason: `${what} ${path} does not exist (runs exit 66)`, fix: `set ${key} to the server's dir + dbfilename (CONFIG GET dir / dbfilename), or wait for its first save` }];
  }
  if (src.error === 'EACCES' || src.read === 'EACCES' || src.read === 'EPERM') {
    const where = src.unsearchable ? `the folder ${src.unsearchable} cannot be searched (no x permission for this user)` : `the file cannot be read`;
    const info = src.info;
    const group = info ? groupName(info.gid) : 'redis';
    return [{
      check, verdict: 'error', path,
      reason: `permission denied reading ${what} ${path} as ${describeUser(user, groupName)}: ${where}${info ? ` (mode ${octal(info.mode)}, owner ${userName(info.uid)}, group ${group})` : ''}; runs exit 77`,
      fix: src.unsearchable
        ? `sudo chmod g+x ${src.unsearchable} (its group must be one of this user's, e.g. redis), see README "Least privilege"`
        : `add this user to the file's group (usermod -aG ${info ? groupName(info.gid).replace(/ \(gid \d+\)$/, '') : 'redis'} ${shortName(user.uid)}) and give the group read: Redis's UMask=0027 (README "Least privilege"); a chmod of dump.rdb is lost at the next save`,
    }];
  }
  if (src.error) return [{ check, verdict: 'error', path, reason: `cannot stat ${what} ${path}: ${src.error}`, fix: `check ${key}` }];
  if (src.info?.kind !== 'file') {
    return [{ check, verdict: 'error', path, reason: `${what} ${path} is ${src.info?.kind === 'dir' ? 'a folder' : src.info?.kind === 'symlink' ? 'a symlink' : 'not a regular file'} (runs exit 66)`, fix: `point ${key} at the file itself` }];
  }
  if (src.read !== 'ok') return [{ check, verdict: 'error', path, reason: `cannot read ${what} ${path}: ${src.read}`, fix: 'check the disk and the file' }];

  const findings: Finding[] = [];
  const info = src.info;
  if (key === 'source.rdb' && src.header !== undefined && !/^(REDIS\d{4}|VALKEY\d{3})/.test(src.header)) {
    findings.push({ check: `${key} header`, verdict: 'warning', path, reason: `${path} does not start with an RDB magic (REDIS0nnn or VALKEYnnn): runs will refuse it (exit 65)`, fix: 'point source.rdb at the server\'s dump file' });
  } else {
    findings.push({ check, verdict: 'ok', path, reason: `${what} ${path} is readable as ${userName(user.uid)}${src.header ? ` (${src.header.slice(0, 9)})` : ''}` });
  }
  const cls = readerClass(info, user);
  const mode = info.mode;
  if (cls === 'group') {
    findings.push((mode & 0o040) !== 0
      ? { check: `${key} group read`, verdict: 'ok', path, reason: `read through its group ${groupName(info.gid)} (mode ${octal(mode)}), as README "Least privilege" documents` }
      : { check: `${key} group read`, verdict: 'warning', path, reason: `readable now only through the "other" bits (mode ${octal(mode)}), not through its group ${groupName(info.gid)}`, fix: 'give Redis UMask=0027 (README "Least privilege") so that the redis group can read each new dump' });
  } else if (cls === 'other') {
    findings.push({ check: `${key} group read`, verdict: 'warning', path, reason: `readable only because every user may read it (mode ${octal(mode)}): this user is not in its group ${groupName(info.gid)}, and every local user can read the dataset`, fix: 'add this user to the redis group and give Redis UMask=0027 (README "Least privilege")' });
  } else if (cls === 'owner') {
    findings.push({ check: `${key} owner`, verdict: 'warning', path, reason: `${path} is owned by the archiver's own user ${userName(user.uid)}: the archiver runs as the Redis user, which can then also delete every backup`, fix: 'run the archiver as its own user in the redis group (README "Deployment")' });
  }
  return findings;
}

/** A folder the archiver owns and writes: its owner, its mode against dir_mode, group/other write. */
function judgeOwnFolder(check: string, what: string, dir: PathFacts, user: InstanceCheckFacts['user'], expectedMode: number, checkOwner = true): Finding[] {
  const path = dir.path;
  if (dir.error === 'ENOENT') return [{ check, verdict: 'ok', path, reason: `${what} ${path} does not exist yet: the first run creates it (mode ${octal(expectedMode)})` }];
  if (dir.error) return [{ check, verdict: 'error', path, reason: `cannot stat ${what} ${path}: ${dir.error}`, fix: 'check the permissions of the folders above it' }];
  const info = dir.info!;
  if (info.kind !== 'dir') return [{ check, verdict: 'error', path, reason: `${what} ${path} is ${info.kind === 'symlink' ? 'a symlink (never followed)' : 'not a folder'}`, fix: `make ${path} a real folder` }];
  const findings: Finding[] = [];
  if (checkOwner && info.uid !== user.uid) {
    findings.push({
      check: `${check} owner`, verdict: 'error', path,
      reason: `${what} ${path} is owned by ${userName(info.uid)}, not by ${userName(user.uid)} who runs rdb-archiver: retention deletes only files the running user owns, so the other user's events are never pruned${user.uid === 0 ? '' : ', and runs may not write there'}`,
      fix: `sudo chown -R ${shortName(user.uid)}: ${path} (or run rdb-archiver as ${userName(info.uid)})`,
    });
  }
  const mode = info.mode;
  if ((mode & 0o022) !== 0) {
    findings.push({ check: `${check} mode`, verdict: 'error', path, reason: `${what} ${path} is writable by ${(mode & 0o002) !== 0 ? 'everyone' : 'its group'} (mode ${octal(mode)}): another user could plant, replace or delete snapshots`, fix: `chmod ${octal(expectedMode)} ${path}` });
  } else if ((mode & 0o077) !== (expectedMode & 0o077)) {
    findings.push({ check: `${check} mode`, verdict: 'warning', path, reason: `${what} ${path} has mode ${octal(mode)}, not ${octal(expectedMode)} (archive.dir_mode)`, fix: `chmod ${octal(expectedMode)} ${path}` });
  } else if (info.uid === user.uid && (mode & 0o200) === 0) {
    findings.push({ check: `${check} mode`, verdict: 'error', path, reason: `${what} ${path} is not writable by its owner (mode ${octal(mode)})`, fix: `chmod u+w ${path}` });
  }
  if (findings.length === 0) findings.push({ check, verdict: 'ok', path, reason: `${what} ${path}: owner ${userName(info.uid)}, mode ${octal(mode)}` });
  return findings;
}

const REMOTE_STEP_FIX: Record<'put' | 'head' | 'get' | 'delete', string> = {
  put: 'check the endpoint, the bucket, the credentials (environment, profile) and that they may s3:PutObject under the prefix',
  head: 'the credentials must allow s3:GetObject under the prefix (uploads are checked by reading them back)',
  get: 'the credentials must allow s3:GetObject under the prefix (verify and restore read objects back)',
  delete: 'the credentials must allow s3:DeleteObject under the prefix (the remote\'s retention deletes events)',
};

function judgeRemote(remote: RemoteProbeFacts): Finding {
  const check = `remotes.${remote.name}`;
  if (remote.ok) return { check, verdict: 'ok', path: remote.location, reason: `a probe object was put, read back and deleted under ${remote.location}` };
  return { check, verdict: 'error', path: remote.location, reason: `the probe failed at ${remote.step} under ${remote.location}: ${remote.error}`, fix: REMOTE_STEP_FIX[remote.step] };
}

function judgeHook(hook: HookFacts): Finding {
  const check = `hooks.${hook.key}`;
  if (hook.executable === undefined) return { check, verdict: 'error', reason: `the hook executable "${hook.command}" is not found in PATH`, fix: `install it, or give hooks.${hook.key}[0] as an absolute path` };
  const path = hook.executable;
  if (hook.error === 'ENOENT') return { check, verdict: 'error', path, reason: `the hook executable ${path} does not exist: every ${hook.key} hook run fails`, fix: `install ${path}, or fix hooks.${hook.key}` };
  if (hook.error) return { check, verdict: 'error', path, reason: `cannot stat the hook executable ${path}: ${hook.error}`, fix: 'check the permissions of the folders above it' };
  if (hook.info?.kind !== 'file') return { check, verdict: 'error', path, reason: `the hook executable ${path} is not a regular file`, fix: `fix hooks.${hook.key}` };
  if (!hook.runnable) return { check, verdict: 'error', path, reason: `the hook executable ${path} is not executable by this user (mode ${octal(hook.info.mode)})`, fix: `chmod +x ${path}` };
  if (hook.untrusted) return { check, verdict: 'error', path, reason: `${hook.untrusted} (once, prune and daemon refuse to start: exit 2)`, fix: `chmod go-w / chown root the file and its folders` };
  return { check, verdict: 'ok', path, reason: `${path}: executable, owner ${userName(hook.info.uid)}, mode ${octal(hook.info.mode)}` };
}

/**
 * Pure: the findings for one instance. `sourceDev` facts decide "same
 * filesystem"; free space uses the last snapshot's size (the source's) plus
 * the reserve, as the pre-copy check of a run does (worker.ts).
 */
export function judgeInstance(instance: InstanceConfig, facts: InstanceCheckFacts, groupName: (gid: number) => string = groupNameOf): Finding[] {
  const findings: Finding[] = [];
  const { user } = facts;
  if (instance.redis?.mode !== 'replicate') findings.push(...judgeSource('the source', 'source.rdb', facts.source, user, false, groupName));
  if (facts.redis) {
    findings.push(facts.redis.ok
      ? { check: 'source.redis', verdict: 'ok', path: instance.redis!.url, reason: facts.redis.detail }
      : { check: 'source.redis', verdict: 'error', path: instance.redis!.url, reason: facts.redis.detail, fix: 'check the url, password_file, tls and the ACL rules (README "source.redis")' });
  }
  for (const s of facts.shards ?? []) {
    findings.push(s.ok
      ? { check: `source.redis shard ${s.shard}`, verdict: 'ok', path: s.master, reason: `slots ${s.slots}: ${s.detail}` }
      : { check: `source.redis shard ${s.shard}`, verdict: 'error', path: s.master, reason: `slots ${s.slots}: ${s.detail}`,
        fix: 'the archiver must reach every master at the address the cluster announces (cluster-announce-ip/port), with the same user, password and TLS as the seed (README "Redis Cluster")' });
  }
  if (facts.nodes) findings.push(...judgeSource('nodes.conf', 'source.nodes', facts.nodes, user, true, groupName));

  // The archive root: writable (the probe), not on the source's filesystem, owned and moded.
  const archive = facts.archive;
  if (archive.error === 'ENOENT') {
    const parent = facts.archiveParent;
    // As prepareArchiveRoot (archive-root.ts): only archive.create, or an instance's own folder in an existing shared dir, may be made.
    const makeable = instance.createArchive || (instance.archiveParent !== undefined && parent?.path === instance.archiveParent);
    if (!makeable) {
      findings.push({ check: 'archive exists', verdict: 'error', path: archive.path, reason: `${missingRootError(instance.archiveParent ?? archive.path).message} (runs exit 69)` });
    } else {
      findings.push(parent?.writable
        ? { check: 'archive writable', verdict: 'ok', path: archive.path, reason: `${archive.path} does not exist yet; the first run creates it in ${parent.path}, which this user may write` }
        : { check: 'archive writable', verdict: 'error', path: archive.path, reason: `${archive.path} does not exist, and ${parent?.path ?? 'its parent'} is not writable by ${userName(user.uid)}: runs fail with exit 77`, fix: `sudo install -d -o ${shortName(user.uid)} -m 0700 ${archive.path}` });
    }
  } else if (facts.probe) {
    findings.push(facts.probe.ok
      ? { check: 'archive writable', verdict: 'ok', path: archive.path, reason: `a probe file was created and removed in ${archive.path}` }
      : { check: 'archive writable', verdict: 'error', path: archive.path, reason: `cannot ${facts.probe.step} a probe file in ${archive.path} as ${userName(user.uid)}: ${facts.probe.code}${facts.probe.code === 'EROFS' ? ' (read-only filesystem)' : ''}`, fix: facts.probe.code === 'EROFS' ? 'remount it read-write, or choose another archive.dir' : `sudo chown ${shortName(user.uid)} ${archive.path} && sudo chmod 0700 ${archive.path}` });
  }
  const archiveDev = archive.info?.dev ?? facts.archiveParent?.info?.dev;
  const sourceDev = facts.source.info?.dev;
  if (archiveDev !== undefined && sourceDev !== undefined) {
    const remoteNames = instance.remotes.map((r) => r.name);
    findings.push(archiveDev === sourceDev && remoteNames.length > 0
      // The remotes keep what a lost disk would take: said, not warned about.
      ? { check: 'archive filesystem', verdict: 'ok', path: archive.path, reason: sameFilesystemWarning(archive.path, facts.source.path, remoteNames) }
      : archiveDev === sourceDev
      ? { check: 'archive filesystem', verdict: 'warning', path: archive.path, reason: sameFilesystemWarning(archive.path, facts.source.path), fix: 'put archive.dir on another disk, and copy the snapshots off the host (remotes:, README "Off-site copies")' }
      : { check: 'archive filesystem', verdict: 'ok', path: archive.path, reason: `${archive.path} is on another filesystem than the source` });
  }
  if (archive.info && archive.info.uid !== user.uid) {
    const mismatch = ownerMismatchError(archive.path, archive.info.uid, user.uid).message;
    findings.push(instance.allowOwnerMismatch
      ? { check: 'archive owner', verdict: 'warning', path: archive.path, reason: `${mismatch} (allowed by --allow-owner-mismatch)` }
      : { check: 'archive owner', verdict: 'error', path: archive.path, reason: `${mismatch} (once, prune and daemon exit 77)` });
  }
  if (archive.error !== 'ENOENT') findings.push(...judgeOwnFolder('archive', 'the archive root', archive, user, instance.dirMode, false));
  for (const folder of facts.ruleFolders) {
    findings.push(...judgeOwnFolder(`rules.${folder.rule}`, `rule folder ${folder.rule}`, folder, user, instance.dirMode));
    if (folder.foreignFiles > 0) {
      findings.push({ check: `rules.${folder.rule} files`, verdict: 'warning', path: folder.path, reason: `${folder.foreignFiles} event-named file(s) in ${folder.path} belong to another user than ${userName(user.uid)}: they are no events of this archive (never counted, listed, restored or deleted), planted or left by a run as another user`, fix: `look at them (ls -ln ${folder.path}); if they are good snapshots, sudo chown ${shortName(user.uid)}: them, else remove them` });
    }
  }
  if (facts.stateDir.path !== archive.path) findings.push(...judgeOwnFolder('state', 'the state folder', facts.stateDir, user, instance.dirMode));

  for (const hook of facts.hooks) findings.push(judgeHook(hook));

  const sourceBytes = facts.source.read === 'ok' ? facts.source.size ?? 0 : 0;
  for (const space of facts.spaces) {
    const where = space.paths.join(', ');
    if (space.error || space.available === undefined || space.total === undefined) {
      findings.push({ check: 'free space', verdict: 'error', path: space.paths[0], reason: `cannot read the free space of ${where}: ${space.error ?? 'unknown'}`, fix: 'check the mount' });
      continue;
    }
    const reserve = reserveBytes(instance, space.total);
    const needed = reserve + sourceBytes;
    findings.push(space.available < needed
      ? { check: 'free space', verdict: 'error', path: space.paths[0], reason: `${formatBytes(space.available)} free on the filesystem of ${where}; a run needs ${formatBytes(needed)} (the snapshot, ${formatBytes(sourceBytes)}, + archive.min_free, ${formatBytes(reserve)}) and would exit 1`, fix: 'free space, lower the rules\' counts, or lower archive.min_free' }
      : { check: 'free space', verdict: 'ok', path: space.paths[0], reason: `${formatBytes(space.available)} free on the filesystem of ${where}; a run needs ${formatBytes(needed)} (snapshot + archive.min_free)` });
  }

  for (const remote of facts.remotes) findings.push(judgeRemote(remote));
  for (const c of facts.codecs ?? []) {
    findings.push({ check: `remotes.${c.remote}.compression`, verdict: 'error', reason: `${c.codec} cannot run here: ${c.reason}; every upload to this remote would fail`, fix: 'reinstall rdb-archiver (npm ci builds zstd-napi), run Node 22.15 or later, or set compression: gzip' });
  }

  const fd = facts.failureDir;
  const fdWhat = fd.configured ? 'monitor.failure_dir' : 'the default failure-record folder';
  if (fd.error === 'ENOENT') {
    findings.push({ check: 'failure records', verdict: 'ok', path: fd.path, reason: `${fdWhat} ${fd.path} does not exist yet: the first failure the state folder cannot take creates it` });
  } else if (fd.error || !fd.info) {
    findings.push({ check: 'failure records', verdict: 'warning', path: fd.path, reason: `cannot stat ${fdWhat} ${fd.path}: ${fd.error ?? 'unknown'}; a failure the state folder cannot take would be in the log only`, fix: 'check the folders above it' });
  } else if (!fd.configured && !isOwnFallbackDir(fd.info, user.uid)) {
    findings.push({ check: 'failure records', verdict: 'warning', path: fd.path, reason: `${fd.path} is not a folder of ${userName(user.uid)} that only it can write (someone else made it?): failure records are never written there, so a run that cannot write its state fails unseen by check`, fix: `remove it (sudo rm -r ${fd.path}), or set monitor.failure_dir` });
  } else if (!fd.writable) {
    findings.push({ check: 'failure records', verdict: 'warning', path: fd.path, reason: `${fdWhat} ${fd.path} is not writable by ${userName(user.uid)}: a failure the state folder cannot take would be in the log only`, fix: `sudo chown ${shortName(user.uid)} ${fd.path}` });
  } else {
    findings.push({ check: 'failure records', verdict: 'ok', path: fd.path, reason: `${fdWhat} ${fd.path} is writable by this user` });
  }
  return findings;
}

/** Pure: the findings that concern the whole config: its file, the daemon's schedule, the metrics file. */
export function judgeConfig(facts: ConfigWideFacts): Finding[] {
  const findings: Finding[] = [];
  if (facts.config) {
    const c = facts.config;
    findings.push(c.untrusted
      ? { check: 'config', verdict: 'error', path: c.path, reason: c.untrusted, fix: `chmod go-w ${c.path}` }
      : { check: 'config', verdict: 'ok', path: c.path, reason: `${c.path}: owner ${c.info ? userName(c.info.uid) : '?'}, mode ${c.info ? octal(c.info.mode) : '?'}, not writable by other users` });
  }
  const { schedule } = facts;
  findings.push(schedule.problem
    ? { check: 'schedule', verdict: 'error', reason: `${schedule.problem}: daemon refuses to start (exit 2)`, fix: 'fix schedule (5 fields, or 6 with seconds first), e.g. "*/5 * * * *"' }
    : { check: 'schedule', verdict: 'ok', reason: `"${schedule.expression}" (${schedule.timezone}) is a valid daemon schedule` });
  if (facts.metricsDir) {
    const m = facts.metricsDir;
    findings.push(m.writable
      ? { check: 'metrics.textfile', verdict: 'ok', path: m.path, reason: `${m.path} is writable by this user` }
      // A run makes a missing folder (mode 0755, like mkdir -p) when it may write where it starts.
      : m.error === 'ENOENT' && m.parent?.writable
      ? { check: 'metrics.textfile', verdict: 'ok', path: m.path, reason: `${m.path} does not exist yet: the first run creates it (mode 0755) in ${m.parent.path}, which this user may write` }
      : { check: 'metrics.textfile', verdict: 'error', path: m.path, reason: `${m.path} ${m.error === 'ENOENT' ? 'does not exist' : 'is not writable by this user'}: the metrics file is never written`, fix: `sudo install -d -o ${shortName(effectiveUid())} ${m.path}, or add the user to its group` });
  }
  return findings;
}

/** 0 without errors (warnings are listed, they do not stop a run); 1 with at least one error. */
export function exitCodeOfFindings(findings: readonly Finding[]): number {
  return findings.some((f) => f.verdict === 'error') ? 1 : ExitCode.OK;
}

function describeMinFree(m: MinFree): string {
  if (m.kind === 'bytes') return `${m.bytes} bytes`;
  if (m.kind === 'percent') return `${m.percent}%`;
  return '5% of the filesystem or 1 GiB, whichever is smaller';
}

/** The resolved settings, as `config check` prints them: paths, rules and thresholds, and of each hook only its executable (its arguments may hold secrets). */
export function resolvedSettings(config: Config): object {
  return {
    file: config.file ?? null,
    logLevel: config.logLevel,
    ...(config.logFormat ? { logFormat: config.logFormat } : {}),
    schedule: config.schedule,
    timezone: config.timezone,
    shutdownTimeout: formatDuration(config.shutdownTimeoutMs),
    watch: config.watch,
    watchDebounceMs: config.watchDebounceMs,
    metricsTextfile: config.metricsTextfile ?? null,
    instances: config.configured.map((i) => ({
      name: i.name,
      source: i.redis ? { rdb: i.redis.mode === 'replicate' ? null : i.sourceRdb, nodes: i.sourceNodes ?? null, redis: { url: i.redis.url, user: i.redis.username ?? null, mode: i.redis.mode, tls: !!i.redis.tls, cluster: i.redis.cluster, ...(i.redis.cluster ? { maxParallel: i.redis.maxParallel } : {}) } } : { rdb: i.sourceRdb, nodes: i.sourceNodes ?? null },
      archive: { dir: i.archiveDir, create: i.createArchive, fileMode: octal(i.fileMode), dirMode: octal(i.dirMode), minFree: describeMinFree(i.minFree), maxRate: i.maxRate ?? null },
      state: i.statePath,
      timezone: i.timezone,
      rules: i.rules.map((r) => ({ name: r.name, every: describeEvery(r.every), count: r.count, dir: ruleDir(i, r) })),
      remotes: i.remotes.map((r) => ({ name: r.name, type: r.type, location: `s3://${r.bucket}/${r.prefix}`, endpoint: r.endpoint ?? null, region: r.region ?? null, profile: r.profile ?? null,
        compression: describeCompression(r.compression), encryption: r.encryption ? { type: r.encryption.type, recipients: r.encryption.recipients.length, from: r.encryption.source } : null,
        rules: r.rules.map((x) => ({ name: x.name, every: describeEvery(x.every), count: x.count })) })),
      monitor: { warnAge: formatDuration(i.monitor.warnAgeMs), critAge: formatDuration(i.monitor.critAgeMs), maxLag: i.monitor.maxLagMs !== undefined ? formatDuration(i.monitor.maxLagMs) : null, failureDir: i.monitor.failureDir ?? null },
      hooks: {
        afterArchive: hookSummary(i.hooks.afterArchive),
        afterPrune: hookSummary(i.hooks.afterPrune),
        onFailure: hookSummary(i.hooks.onFailure),
        timeout: formatDuration(i.hooks.timeoutMs),
      },
    })),
  };
}

function hookSummary(argv: string[] | undefined): object | null {
  return argv ? { executable: argv[0], arguments: argv.length - 1 } : null;
}

// ---------------------------------------------------------------------------
// The I/O layer: facts of one instance.

let groups: Map<number, string> | undefined;
/** "redis (gid 110)", from /etc/group (read only when a message needs it). */
export function groupNameOf(gid: number): string {
  if (!groups) {
    groups = new Map();
    try {
      for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
        const [name, , id] = line.split(':');
        if (name && id !== undefined && /^\d+$/.test(id) && !groups.has(Number(id))) groups.set(Number(id), name);
      }
    } catch {
      // no group file: numbers alone
    }
  }
  const name = groups.get(gid);
  return name ? `${name} (gid ${gid})` : `gid ${gid}`;
}

async function statFacts(fs: FileSystem, path: string, follow = false): Promise<PathFacts> {
  try {
    const info = follow ? await fs.stat(path) : await fs.lstat(path);
    return { path, info: { kind: info.kind, uid: info.uid, gid: info.gid, mode: info.mode, dev: info.dev } };
  } catch (err) {
    return { path, error: errorCode(err) ?? 'EUNKNOWN' };
  }
}

function canAccess(path: string, mode: number): boolean {
  try {
    accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

/**
 * source.redis cluster: true: the discovery a run makes, then connect, AUTH and
 * INFO on every master it finds (a master that is no master any more is an error).
 */
async function probeCluster(instance: InstanceConfig): Promise<{ redis: { ok: boolean; detail: string }; shards: NonNullable<InstanceCheckFacts['shards']> }> {
  const cfg = instance.redis!;
  let record;
  try {
    const { discoverCluster } = await import('../sources/cluster.js');
    const { readClusterRecord } = await import('../core/shards.js');
    record = await discoverCluster(cfg, readClusterRecord(instance));
  } catch (err) {
    return { redis: { ok: false, detail: `cluster discovery failed: ${err instanceof Error ? err.message : String(err)}` }, shards: [] };
  }
  const { serverInfo } = await import('../sources/poll.js');
  const { endpointOf } = await import('../sources/redis.js');
  const shards: NonNullable<InstanceCheckFacts['shards']> = [];
  for (const s of record.shards) {
    if (!s.master) {
      shards.push({ shard: s.name, slots: s.slots, master: '(none)', ok: false, detail: 'the cluster announces no master for these slots' });
      continue;
    }
    const master = `${s.master.host}:${s.master.port}`;
    try {
      const info = await serverInfo(cfg, endpointOf(cfg, s.master.host, s.master.port));
      const ok = info.role === 'master';
      shards.push({ shard: s.name, slots: s.slots, master, ok, detail: ok ? `connected and authenticated: ${info.redisVersion ?? 'unknown version'}, master ${s.master.id.slice(0, 12)} (health ${s.master.health})` : `answers as role ${info.role}, not master: the cluster changed since the discovery` });
    } catch (err) {
      shards.push({ shard: s.name, slots: s.slots, master, ok: false, detail: err instanceof Error ? err.message : String(err) });
    }
  }
  const notes = [record.uncovered ? `slots ${record.uncovered} have no master (their keys are in no backup)` : '', record.emptyMasters.length ? `${record.emptyMasters.length} master(s) own no slot` : ''].filter(Boolean);
  return {
    redis: {
      ok: record.uncovered === '',
      detail: `cluster discovered with ${record.via} from ${record.discoveredFrom}: ${record.shards.length} shard(s), pulled at most ${cfg.maxParallel} at a time${notes.length ? `; ${notes.join('; ')}` : ''}`,
    },
    shards,
  };
}

/** source.redis: connect, AUTH and INFO, as a run starts (the pull itself is not tried: it forks on the server). */
async function probeRedis(instance: InstanceConfig): Promise<{ ok: boolean; detail: string }> {
  try {
    const { serverInfo } = await import('../sources/poll.js');
    const info = await serverInfo(instance.redis!);
    return { ok: true, detail: `connected and authenticated: ${info.redisVersion ?? 'unknown version'}, role ${info.role}${info.clusterEnabled ? ', cluster' : ''} (the ACL rules for the pull are checked by the first run: exit 78 names a missing one)` };
  } catch (err) {
    return { ok: false, detail: err instanceof Error ? err.message : String(err) };
  }
}

async function sourceFacts(fs: FileSystem, path: string): Promise<SourceFacts> {
  const facts: SourceFacts = { ...(await statFacts(fs, path)) };
  if (facts.error === 'EACCES') facts.unsearchable = firstUnsearchable(path);
  if (!facts.info || facts.info.kind !== 'file') return facts;
  try {
    const handle = await fs.open(path, 'read-nofollow');
    try {
      const buffer = Buffer.alloc(9);
      const n = await handle.read(buffer, 0, 9, 0);
      facts.header = buffer.subarray(0, n).toString('latin1').replace(/[^\x20-\x7e]/g, '?');
      facts.size = (await handle.stat()).size;
      facts.read = 'ok';
    } finally {
      await handle.close();
    }
  } catch (err) {
    facts.read = errorCode(err) ?? 'EUNKNOWN';
  }
  return facts;
}

function firstUnsearchable(path: string): string | undefined {
  const dirs: string[] = [];
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    dirs.unshift(dir);
    if (dir === dirname(dir)) break;
  }
  return dirs.find((dir) => !canAccess(dir, fsConstants.X_OK));
}

async function probeArchive(fs: FileSystem, dir: string): Promise<InstanceCheckFacts['probe']> {
  const probe = join(dir, `.rdb-archiver-config-check-${process.pid}`);
  let step = 'create';
  try {
    const handle = await fs.open(probe, 'create-exclusive', 0o600);
    try {
      step = 'write';
      await handle.write(Buffer.from('rdb-archiver config check\n'), 0, 26);
    } finally {
      await handle.close();
    }
    step = 'remove';
    await fs.unlink(probe);
    return { ok: true };
  } catch (err) {
    if (step !== 'create') await fs.unlink(probe).catch(() => undefined);
    return { ok: false, step, code: errorCode(err) ?? 'EUNKNOWN' };
  }
}

/**
 * Event-named files in a rule folder that belong to another user than the
 * one running: those the scan already set aside (scan.foreign: not the
 * folder owner's), and events of the folder's owner when that is not this user.
 */
async function countForeignFiles(fs: FileSystem, dir: string, uid: number): Promise<number> {
  const scan = await scanFolder(fs, dir).catch(() => undefined);
  let count = scan?.foreign?.length ?? 0;
  // The folder's owner's events are this user's unless the folder is another user's.
  if (scan?.ownerUid === uid) return count;
  for (const event of scan?.events ?? []) {
    for (const name of eventFileNames(event)) {
      const info = await fs.lstat(join(dir, name)).catch(() => undefined);
      if (info && info.kind === 'file' && info.uid !== uid) count += 1;
    }
  }
  return count;
}

/** A probe waits at most this long for each remote operation (the remote's own timeout is for snapshots of many GiB). */
const REMOTE_PROBE_TIMEOUT_MS = 30_000;

/** put, head, get, delete of a small object directly under the remote's prefix (never an event's name: nothing lists it as ours). */
async function probeRemote(remote: RemoteConfig): Promise<RemoteProbeFacts> {
  const { S3Target, scrubSecrets } = await import('../targets/s3.js');
  const where = { name: remote.name, location: `s3://${remote.bucket}/${remote.prefix}` };
  const name = `.rdb-archiver-config-check-${hostname()}-${process.pid}`;
  const body = Buffer.from(`rdb-archiver config check probe, ${new Date().toISOString()}\n`);
  let step: 'put' | 'head' | 'get' | 'delete' = 'put';
  let target: Awaited<ReturnType<typeof S3Target.open>> | undefined;
  try {
    target = await S3Target.open({ ...remote, timeoutMs: Math.min(remote.timeoutMs, REMOTE_PROBE_TIMEOUT_MS) });
    await target.putSmall(name, body, 'text/plain');
    step = 'head';
    const head = await target.head(name);
    if (head?.bytes !== body.length) throw new Error(head ? `it reports ${head.bytes} bytes, ${body.length} were put` : 'the object just put is not there');
    step = 'get';
    if (!(await target.getSmall(name, 4096)).equals(body)) throw new Error('it returned other bytes than were put');
    step = 'delete';
    await target.delete(name);
    return { ...where, ok: true };
  } catch (err) {
    if (target && step !== 'put' && step !== 'delete') await target.delete(name).catch(() => undefined);
    return { ...where, ok: false, step, error: scrubSecrets(err instanceof Error ? err.message : String(err)) };
  } finally {
    target?.close();
  }
}

const HOOK_KEYS = { afterArchive: 'after_archive', afterPrune: 'after_prune', onFailure: 'on_failure' } as const;

export async function gatherFacts(fs: FileSystem, config: Config, instance: InstanceConfig): Promise<InstanceCheckFacts> {
  const uid = effectiveUid();
  const user = { uid, gid: process.getegid?.() ?? 0, groups: process.getgroups?.() ?? [] };
  const facts: InstanceCheckFacts = {
    user,
    source: instance.redis?.mode === 'replicate' ? { path: instance.sourceRdb } : await sourceFacts(fs, instance.sourceRdb),
    ...(instance.redis?.cluster ? await probeCluster(instance) : instance.redis ? { redis: await probeRedis(instance) } : {}),
    archive: await statFacts(fs, instance.archiveDir, true),
    ruleFolders: [],
    stateDir: await statFacts(fs, dirname(instance.statePath)),
    hooks: [],
    spaces: [],
    failureDir: { path: '', configured: false, writable: false },
    remotes: [],
  };
  if (instance.sourceNodes) facts.nodes = await sourceFacts(fs, instance.sourceNodes);

  if (facts.archive.error === 'ENOENT') {
    for (let at = dirname(instance.archiveDir); ; at = dirname(at)) {
      const parent = await statFacts(fs, at, true);
      if (parent.error !== 'ENOENT' || at === dirname(at)) {
        facts.archiveParent = { ...parent, writable: canAccess(at, fsConstants.W_OK | fsConstants.X_OK) };
        break;
      }
    }
  } else if (facts.archive.info?.kind === 'dir') {
    facts.probe = await probeArchive(fs, instance.archiveDir);
  }

  const byDev = new Map<string, SpaceFacts>();
  for (const rule of instance.rules) {
    const dir = ruleDir(instance, rule);
    const folder: RuleFolderFacts = { ...(await statFacts(fs, dir)), rule: rule.name, foreignFiles: 0 };
    if (folder.info?.kind === 'dir') folder.foreignFiles = await countForeignFiles(fs, dir, uid);
    facts.ruleFolders.push(folder);
    // Free space per distinct filesystem (a rule folder may be a mount point of its own).
    let at = dir;
    let dev = folder.info?.dev;
    for (let up = dirname(dir); dev === undefined; up = dirname(up)) {
      const parent = await statFacts(fs, up, true);
      if (parent.info) {
        dev = parent.info.dev;
        at = up;
      } else if (up === dirname(up)) break;
    }
    const key = dev ?? dir;
    const space = byDev.get(key);
    if (space) {
      space.paths.push(dir);
      continue;
    }
    const entry: SpaceFacts = { paths: [dir] };
    try {
      Object.assign(entry, await archiveSpace(fs, at));
    } catch (err) {
      entry.error = errorCode(err) ?? String(err);
    }
    byDev.set(key, entry);
  }
  facts.spaces = [...byDev.values()];

  for (const [field, key] of Object.entries(HOOK_KEYS) as Array<[keyof typeof HOOK_KEYS, string]>) {
    const argv = instance.hooks[field];
    if (!argv) continue;
    const executable = hookExecutable(argv[0]!);
    const hook: HookFacts = { key, command: argv[0]!, runnable: false };
    if (executable !== undefined) {
      hook.executable = executable;
      const stat = await statFacts(fs, executable, true);
      if (stat.info) hook.info = stat.info;
      if (stat.error) hook.error = stat.error;
      hook.runnable = canAccess(executable, fsConstants.X_OK);
      if (stat.info) hook.untrusted = untrustedHookReason(argv);
    }
    facts.hooks.push(hook);
  }

  for (const remote of instance.remotes) facts.remotes.push(await probeRemote(remote));
  facts.codecs = instance.remotes.flatMap((r) => {
    if (r.compression.algorithm !== 'zstd') return [];
    const provider = zstdProvider();
    return provider.kind === 'missing' ? [{ remote: r.name, codec: 'zstd', reason: provider.reason }] : [];
  });
  const failureDir = instance.monitor.failureDir ?? defaultFailureDir(uid);
  facts.failureDir = { ...(await statFacts(fs, failureDir)), configured: instance.monitor.failureDir !== undefined, writable: canAccess(failureDir, fsConstants.W_OK | fsConstants.X_OK) };
  return facts;
}

export async function gatherConfigFacts(fs: FileSystem, config: Config): Promise<ConfigWideFacts> {
  const uid = effectiveUid();
  const timezone = scheduleTimezone(config);
  const problem = await scheduleProblem(config.schedule, timezone);
  const facts: ConfigWideFacts = { schedule: { expression: config.schedule, timezone, ...(problem ? { problem } : {}) } };
  if (config.file) {
    // The loader refused an untrusted config already; this shows what was accepted.
    facts.config = { ...(await statFacts(fs, config.file, true)), untrusted: untrustedPathReason(config.file, 'the config file', uid) };
  }
  if (config.metricsTextfile) {
    const dir = dirname(config.metricsTextfile);
    facts.metricsDir = { ...(await statFacts(fs, dir, true)), writable: canAccess(dir, fsConstants.W_OK | fsConstants.X_OK) };
    if (facts.metricsDir.error === 'ENOENT') {
      for (let at = dirname(dir); ; at = dirname(at)) {
        const parent = await statFacts(fs, at, true);
        if (parent.error !== 'ENOENT' || at === dirname(at)) {
          facts.metricsDir.parent = { path: at, writable: parent.info?.kind === 'dir' && canAccess(at, fsConstants.W_OK | fsConstants.X_OK) };
          break;
        }
      }
    }
  }
  return facts;
}

// ---------------------------------------------------------------------------
// The command.

const MARK: Record<Verdict, string> = { ok: 'ok     ', warning: 'WARNING', error: 'ERROR  ' };

export function findingsText(instance: string, findings: readonly Finding[]): string {
  const lines = [`[${instance}]`];
  for (const f of findings) {
    lines.push(`  ${MARK[f.verdict]} ${f.check}: ${f.reason}`);
    if (f.fix && f.verdict !== 'ok') lines.push(`          fix: ${f.fix}`);
  }
  return lines.join('\n');
}

function settingsText(config: Config): string {
  const lines = [`config: ${config.file ?? '(command-line flags)'}`, `schedule: ${config.schedule} (${config.timezone})${config.watch ? `; daemon watches the sources (debounce ${config.watchDebounceMs} ms)` : ''}; log level ${config.logLevel}`];
  if (config.metricsTextfile) lines.push(`metrics textfile: ${config.metricsTextfile}`);
  for (const i of config.configured) {
    lines.push(`instance ${i.name}:`);
    lines.push(`  source: ${i.sourceRdb}${i.sourceNodes ? ` (+ ${i.sourceNodes})` : ''}${i.redis?.cluster ? ` (cluster: every master, each shard in ${i.archiveDir}/slots-<ranges>, at most ${i.redis.maxParallel} pulled at a time)` : ''}`);
    lines.push(`  archive: ${i.archiveDir} (files ${octal(i.fileMode)}, folders ${octal(i.dirMode)}, min_free ${describeMinFree(i.minFree)}${i.maxRate ? `, max_rate ${formatBytes(i.maxRate)}/s` : ''})`);
    lines.push(`  state: ${i.statePath}`);
    lines.push(`  rules (${i.timezone}): ${i.rules.map((r) => `${r.name} every ${describeEvery(r.every)} x${r.count}`).join(', ')}`);
    lines.push(`  monitor: warn after ${formatDuration(i.monitor.warnAgeMs)}, critical after ${formatDuration(i.monitor.critAgeMs)}`);
    const hooks = (Object.entries(HOOK_KEYS) as Array<[keyof typeof HOOK_KEYS, string]>).filter(([f]) => i.hooks[f]).map(([f, k]) => `${k} ${i.hooks[f]![0]}`);
    if (hooks.length > 0) lines.push(`  hooks: ${hooks.join(', ')} (timeout ${formatDuration(i.hooks.timeoutMs)})`);
    for (const r of i.remotes) lines.push(`  remote ${r.name}: s3://${r.bucket}/${r.prefix}${r.endpoint ? ` at ${r.endpoint}` : ''}; compression ${describeCompression(r.compression)}${r.encryption ? `, age encryption to ${r.encryption.recipients.length} recipient${r.encryption.recipients.length === 1 ? '' : 's'}` : ', not encrypted'}; rules ${r.rules.map((x) => `${x.name} every ${describeEvery(x.every)} x${x.count}`).join(', ')}`);
  }
  return lines.join('\n');
}

export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('inspect the configuration');
  config
    .command('check')
    .description('validate the config, print the resolved settings, and check each instance can run here as this user')
    .option('--json', 'print one JSON object on stdout')
    .action(async (_opts: unknown, cmd: Command) => {
      const ctx = contextFor(cmd);
      const global = judgeConfig(await gatherConfigFacts(ctx.fs, ctx.config));
      const results: Array<{ instance: string; findings: Finding[] }> = [];
      // As configured: a cluster instance once (its discovery probes every master).
      for (const instance of ctx.config.configured) {
        const facts = await gatherFacts(ctx.fs, ctx.config, instance);
        results.push({ instance: instance.name, findings: judgeInstance(instance, facts) });
      }
      const all = [...global, ...results.flatMap((r) => r.findings)];
      const exitCode = exitCodeOfFindings(all);
      const count = (v: Verdict) => all.filter((f) => f.verdict === v).length;
      if (ctx.json) {
        print(JSON.stringify({ config: resolvedSettings(ctx.config), user: describeUser({ uid: effectiveUid(), gid: process.getegid?.() ?? 0, groups: process.getgroups?.() ?? [] }), findings: global, instances: results, errors: count('error'), warnings: count('warning'), exitCode }));
      } else {
        print([settingsText(ctx.config), '', findingsText('config', global), ...results.map((r) => findingsText(r.instance, r.findings)), '',
          `${count('error')} error(s), ${count('warning')} warning(s)${exitCode === 0 ? '' : ': fix the errors before the next run'}`].join('\n'));
      }
      process.exitCode = exitCode;
    });
}
