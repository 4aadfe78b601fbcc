/**
 * Typed errors. Every failure the CLI can report is one of these, so the
 * exit code is decided in exactly one place (ExitCode) and every message
 * carries the path and the operation that failed.
 */

export const ExitCode = {
  OK: 0,
  /** Not enough free space in the archive filesystem (pre-copy check, ENOSPC, EDQUOT). */
  NO_SPACE: 1,
  /** Bad command line or configuration. */
  CONFIG: 2,
  /** The source is not a valid RDB snapshot (sysexits EX_DATAERR). */
  INVALID_SOURCE: 65,
  /** The source file is missing or is not a regular file (EX_NOINPUT). */
  NO_SOURCE: 66,
  /** The Redis source refused our credentials (WRONGPASS, NOAUTH) or its ACL denies a command a backup needs (NOPERM) (EX_NOUSER). */
  SOURCE_AUTH: 78,
  /**
   * The Redis source could not be reached, or the connection failed before the
   * whole snapshot arrived: refused, TLS handshake, reset, closed by the server
   * (client-output-buffer-limit, killed), cut short, timeout, protocol error (EX_NOHOST).
   */
  SOURCE_NETWORK: 68,
  /**
   * An encrypted off-site event cannot be opened: no age identity was given,
   * the identity file cannot be read or holds no identity, or none of its keys
   * is a recipient of the event (EX_NOUSER: "addressee unknown"). Nothing is written.
   */
  IDENTITY: 67,
  /**
   * The archive root does not exist (an unmounted backup disk) or is not a
   * directory, and archive.create is not set (EX_UNAVAILABLE).
   */
  NO_ARCHIVE: 69,
  /** An unexpected internal error: a bug (EX_SOFTWARE). */
  INTERNAL: 70,
  /** source.redis mode bgsave: the server's BGSAVE failed (rdb_last_bgsave_status:err) or did not finish in time (EX_OSERR). */
  SOURCE_SAVE: 71,
  /**
   * A final name cannot be created: every name of the snapshot's second (<ts>, <ts>_1 .. _9) is
   * taken by other content or by something that is not a regular file; or a restore target exists (EX_CANTCREAT).
   */
  CONFLICT: 73,
  /** An I/O error other than space or permission (EX_IOERR). */
  IO: 74,
  /** Try again later: another run holds the lock, or the source changed during the copy (EX_TEMPFAIL). */
  TEMPFAIL: 75,
  /**
   * Off-site: `once` archived locally but an off-site copy is still pending
   * (or remote retention failed); `push`/remote commands: the remote failed
   * (EX_PROTOCOL: a remote error).
   */
  OFFSITE: 76,
  /**
   * Permission denied or read-only filesystem; also a writing run whose user
   * is not the archive root's owner (without --allow-owner-mismatch) (EX_NOPERM).
   */
  PERMISSION: 77,
  /**
   * `restore latest`: the newest event failed verification and an older one
   * passes; nothing restored without --fallback (the message names both).
   */
  NEWEST_BAD: 79,
  /** `drill`: the event's RDB format version is newer than the local server can load (not corruption). */
  DRILL_VERSION: 80,
  /**
   * `once`, a daemon tick: the run's own work succeeded, but an archived event
   * still in the archive is known bad: verification (scheduled, or a manual
   * `verify` with the config) found it damaged, or the last restore drill could
   * not load it. Reported by every run until the event is pruned, replaced or
   * verified good again.
   */
  ARCHIVE_BAD: 81,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * One line per exit code, as every command's --help lists them (src/commands/help.ts).
 * README's "Exit codes" table says the same at more length.
 */
export const EXIT_CODE_MEANINGS: Record<ExitCodeValue, string> = {
  0: 'OK',
  1: 'not enough disk space (the free-space check, ENOSPC, EDQUOT); nothing partial is left',
  2: 'usage or configuration error (the message names the file and the key)',
  65: 'the source is not a valid RDB snapshot; not archived',
  66: 'the source is missing, or not a regular file',
  67: 'an encrypted off-site event cannot be opened: no age identity given (--identity, RDB_ARCHIVER_AGE_IDENTITY_FILE), the identity file is unreadable, or none of its keys is a recipient; nothing written',
  68: 'source.redis: the server (with cluster: a master, or every node for the discovery) could not be reached, or the connection failed before the whole snapshot arrived (reset, closed by the server, cut short, timeout); nothing partial is left',
  69: 'the archive root is missing (is the backup disk mounted?) and archive.create is not set',
  70: 'internal error (a bug: please report it with the log)',
  71: 'source.redis mode bgsave: the server\'s BGSAVE failed (rdb_last_bgsave_status:err) or did not finish before the timeout; the previous dump is not archived as new',
  73: 'no name left for the snapshot: all ten of its second (<ts>, <ts>_1 .. _9) are taken by other content, or no archive sequence number is left (a planted record or state); all kept',
  74: 'I/O error; the message names the operation and the path',
  75: 'try again later: another run holds the lock, or the source changed during the copy',
  76: 'off-site: archived locally but an off-site copy is pending, or the remote failed (unreachable, timeout, missing bucket)',
  77: 'permission denied, or a read-only filesystem; or a run as another user than the archive\'s owner',
  78: 'source.redis: the server refused the credentials, or the ACL user lacks a command a backup needs (the message names it)',
  79: 'restore latest: the newest event failed verification; the message names the newest event that passes (restore it with --fallback); nothing restored',
  80: 'drill: the event\'s RDB format version is newer than the local redis-server/valkey-server can load (not corruption)',
  81: 'archived (or nothing new), but an archived event is known bad: verification found it damaged or the last restore drill could not load it (see status; until it is pruned, replaced or verified good)',
};

export abstract class ArchiverError extends Error {
  abstract readonly exitCode: ExitCodeValue;
  /** Short machine-readable kind, used in JSON output, state and metrics. */
  abstract readonly kind: string;
}

/** A config file or command-line problem. `keyPath` is like `rules[1].count`. */
export class ConfigError extends ArchiverError {
  readonly exitCode = ExitCode.CONFIG;
  readonly kind = 'config';
  constructor(
    readonly file: string | undefined,
    readonly keyPath: string | undefined,
    readonly detail: string,
  ) {
    super(
      [file, keyPath].filter((part) => part !== undefined && part !== '').join(': ') +
        (file || keyPath ? ': ' : '') +
        detail,
    );
    this.name = 'ConfigError';
  }
}

/** The source (or an archived file) is not a valid RDB snapshot. */
export class InvalidSnapshotError extends ArchiverError {
  readonly exitCode = ExitCode.INVALID_SOURCE;
  readonly kind = 'invalid-source';
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path}: not a valid RDB snapshot: ${reason}`);
    this.name = 'InvalidSnapshotError';
  }
}

export class SourceUnavailableError extends ArchiverError {
  readonly exitCode = ExitCode.NO_SOURCE;
  readonly kind = 'no-source';
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path}: cannot archive: ${reason}`);
    this.name = 'SourceUnavailableError';
  }
}

/** Passwords read at run time (source.redis.password_file): see redactSecrets. */
const runtimeSecrets = new Set<string>();

/** Marks a secret read at run time: from now on no RedisSourceError carries it, whatever a server echoes back. */
export function registerSecret(secret: string): void {
  if (secret !== '') runtimeSecrets.add(secret);
}

/** `text` with every registered secret replaced by [redacted]. */
export function redactSecrets(text: string): string {
  let out = text;
  for (const secret of runtimeSecrets) out = out.split(secret).join('[redacted]');
  return out;
}

/**
 * A Redis source failed. Messages name the server as host:port (never a
 * password) and the step: connect, AUTH, a command, the transfer. The detail
 * often quotes the server's own text; a hostile or broken server may echo the
 * password it was sent, so the detail is redacted (the exit, the logs, the
 * state and the failure record all take their text from here).
 */
export class RedisSourceError extends ArchiverError {
  readonly exitCode: ExitCodeValue;
  constructor(
    readonly kind: 'source-auth' | 'source-network' | 'source-save',
    readonly server: string,
    readonly step: string,
    detail: string,
  ) {
    super(`redis ${server}: ${step}: ${redactSecrets(detail)}`);
    this.name = 'RedisSourceError';
    this.exitCode = kind === 'source-auth' ? ExitCode.SOURCE_AUTH : kind === 'source-save' ? ExitCode.SOURCE_SAVE : ExitCode.SOURCE_NETWORK;
  }
}

/** Locked by another run, or the source changed under us: the next run retries. */
export class TryAgainError extends ArchiverError {
  readonly exitCode = ExitCode.TEMPFAIL;
  readonly kind: 'locked' | 'source-changed';
  constructor(
    kind: 'locked' | 'source-changed',
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.kind = kind;
    this.name = 'TryAgainError';
  }
}

/** The archive root is missing or not a directory: nothing is created, nothing written. */
export class ArchiveUnavailableError extends ArchiverError {
  readonly exitCode = ExitCode.NO_ARCHIVE;
  readonly kind = 'no-archive';
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${path}: archive root ${reason}`);
    this.name = 'ArchiveUnavailableError';
  }
}

/** A writing run as another user than the archive root's owner would leave files that user cannot prune. */
export class OwnerMismatchError extends ArchiverError {
  readonly exitCode = ExitCode.PERMISSION;
  readonly kind = 'owner-mismatch';
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = 'OwnerMismatchError';
  }
}

export class ConflictError extends ArchiverError {
  readonly exitCode = ExitCode.CONFLICT;
  readonly kind = 'conflict';
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(`${path}: ${detail}`);
    this.name = 'ConflictError';
  }
}

export class InsufficientSpaceError extends ArchiverError {
  readonly exitCode = ExitCode.NO_SPACE;
  readonly kind = 'no-space';
  constructor(
    readonly path: string,
    readonly needed: number,
    readonly available: number,
  ) {
    super(
      `${path}: not enough free space: need ${needed} bytes (snapshot + reserve), ${available} available; nothing was written`,
    );
    this.name = 'InsufficientSpaceError';
  }
}

/**
 * An off-site repository failed: unreachable, timed out, refused the
 * credentials, no such bucket, or returned something that does not match what
 * was sent. Never carries a secret: messages come from the server's error
 * code and text, scrubbed of the credential values in the environment.
 */
export class RemoteError extends ArchiverError {
  readonly exitCode: ExitCodeValue;
  constructor(
    readonly kind: 'remote' | 'remote-auth' | 'remote-no-bucket' | 'remote-timeout' | 'remote-integrity' | 'remote-not-found' | 'remote-refused',
    readonly remote: string,
    readonly op: string,
    readonly key: string,
    detail: string,
  ) {
    super(`remote ${remote}: ${op} ${key}: ${detail}`);
    this.name = 'RemoteError';
    this.exitCode = kind === 'remote-auth' ? ExitCode.PERMISSION : ExitCode.OFFSITE;
  }
}

/**
 * An age identity problem. Never carries the identity itself: only the file's
 * path and what is wrong with it.
 */
export class IdentityError extends ArchiverError {
  readonly exitCode = ExitCode.IDENTITY;
  readonly kind = 'identity';
  constructor(
    readonly where: string,
    detail: string,
  ) {
    super(`${where}: ${detail}`);
    this.name = 'IdentityError';
  }
}

/** A codec that this Node cannot run (zstd on a Node without it and without the zstd-napi module). */
export class CodecUnavailableError extends ArchiverError {
  readonly exitCode = ExitCode.CONFIG;
  readonly kind = 'codec-unavailable';
  constructor(
    readonly codec: string,
    detail: string,
  ) {
    super(`${codec}: ${detail}`);
    this.name = 'CodecUnavailableError';
  }
}

/**
 * No rule folder could take the snapshot: each failed on its own (full,
 * read-only, failing). Reported as the first folder's error, with every
 * folder's error kept for the per-rule report.
 */
export class FoldersFailedError extends ArchiverError {
  readonly exitCode: ExitCodeValue;
  readonly kind: string;
  constructor(readonly failures: ReadonlyArray<{ rule: string; error: unknown }>) {
    const first = failures[0]?.error;
    super(first instanceof Error ? first.message : 'no rule folder could take the snapshot');
    this.name = 'FoldersFailedError';
    this.exitCode = exitCodeOf(first);
    this.kind = first instanceof ArchiverError ? first.kind : 'internal';
  }
}

/**
 * The thread that validates a read pass beside the hashing (src/rdb/validate-thread.ts)
 * crashed or exited mid-pass: a bug or a resource limit, not the snapshot's fault. The pass
 * fails (nothing is archived from it, its temp is removed); the next pass starts a new thread.
 */
export class ValidationThreadError extends ArchiverError {
  readonly exitCode = ExitCode.INTERNAL;
  readonly kind = 'internal';
  constructor(
    readonly path: string,
    readonly detail: string,
  ) {
    super(`validate ${path}: the validation thread failed: ${detail}`);
    this.name = 'ValidationThreadError';
  }
}

const SPACE_CODES = new Set(['ENOSPC', 'EDQUOT']);
const PERMISSION_CODES = new Set(['EACCES', 'EPERM', 'EROFS']);

/** A failed system call, with the operation and path that failed. */
export class FsError extends ArchiverError {
  readonly exitCode: ExitCodeValue;
  readonly kind: string;
  constructor(
    readonly op: string,
    readonly path: string,
    readonly code: string,
    detail: string,
  ) {
    super(`${op} ${path}: ${code}: ${detail}`);
    this.name = 'FsError';
    if (SPACE_CODES.has(code)) {
      this.exitCode = ExitCode.NO_SPACE;
      this.kind = 'no-space';
    } else if (PERMISSION_CODES.has(code)) {
      this.exitCode = ExitCode.PERMISSION;
      this.kind = 'permission';
    } else {
      this.exitCode = ExitCode.IO;
      this.kind = 'io';
    }
  }
}

/** Wraps a Node system error into an FsError naming op and path. */
export function fsError(op: string, path: string, err: unknown): FsError | ArchiverError {
  if (err instanceof ArchiverError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = typeof e?.code === 'string' ? e.code : 'EUNKNOWN';
  const detail = describeCode(code) ?? (e?.message ?? String(err));
  return new FsError(op, path, code, detail);
}

function describeCode(code: string): string | undefined {
  switch (code) {
    case 'ENOSPC':
      return 'no space left on device';
    case 'EDQUOT':
      return 'disk quota exceeded';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only file system';
    case 'EIO':
      return 'input/output error';
    case 'ENOENT':
      return 'no such file or directory';
    default:
      return undefined;
  }
}

export function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === code;
}

export function exitCodeOf(err: unknown): ExitCodeValue {
  return err instanceof ArchiverError ? err.exitCode : ExitCode.INTERNAL;
}
