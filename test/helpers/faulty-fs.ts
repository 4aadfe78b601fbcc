/**
 * A fault-injecting wrapper around the FileSystem interface (src/core/fs.ts).
 *
 * Every call, on the filesystem and on every handle it opened, gets a number
 * (1, 2, 3... in the order the calls are made) and is recorded with the
 * operation and path. A test can then:
 *   - fail call N with an errno code (ENOSPC, EIO, EACCES, EROFS...), as the
 *     real implementation would see it: a Node system error (errno, code,
 *     syscall, path) passed through the same op/path wrapping OSFS uses;
 *   - keep failing after call N ("sticky": a disk that stays full or read-only);
 *   - run a callback at call N, before or after the real call (SIGKILL itself
 *     for a deterministic crash point, swap the source file mid-copy, ...);
 *   - replace what space() reports (a nearly full archive filesystem).
 *
 * It has no value imports, so test/reliability can transpile it for child
 * processes that run the built CLI (see crash-child.mjs).
 */
import type { DirEntry, FileInfo, FileSystem, Handle, OpenMode } from '../../src/core/fs.js';

/** The operation names OSFS puts in its error messages; handle calls use the handle's path. */
export type FsOp =
  | 'open' | 'create' | 'stat' | 'lstat' | 'readdir' | 'readFile' | 'mkdir' | 'chmod' | 'rename' | 'link' | 'unlink'
  | 'fsync-dir' | 'statfs' | 'access' | 'read' | 'write' | 'fsync' | 'fstat' | 'fchmod' | 'close' | 'copy';

export interface FsCall {
  /** 1-based position in this wrapper's call sequence. */
  n: number;
  op: FsOp;
  /** The path as OSFS names it in errors (`from -> to` for rename and link). */
  path: string;
}

export interface InjectedFault extends FsCall {
  code: string;
  /** False for the call that triggered the fault, true for later calls failed by a sticky fault. */
  cascade: boolean;
}

/** The same op/path wrapping OSFS applies to a Node error (pass errors.ts's fsError). */
export type WrapError = (op: string, path: string, err: unknown) => Error;

export type Sticky = false | 'all' | 'writes';

const ERRNO: Record<string, { errno: number; text: string }> = {
  EPERM: { errno: 1, text: 'operation not permitted' },
  ENOENT: { errno: 2, text: 'no such file or directory' },
  EIO: { errno: 5, text: 'i/o error' },
  EBADF: { errno: 9, text: 'bad file descriptor' },
  EACCES: { errno: 13, text: 'permission denied' },
  EEXIST: { errno: 17, text: 'file already exists' },
  EXDEV: { errno: 18, text: 'cross-device link not permitted' },
  ENOTDIR: { errno: 20, text: 'not a directory' },
  EISDIR: { errno: 21, text: 'illegal operation on a directory' },
  ENOSPC: { errno: 28, text: 'no space left on device' },
  EROFS: { errno: 30, text: 'read-only file system' },
  EDQUOT: { errno: 122, text: 'disk quota exceeded' },
};

/** The libuv syscall name Node puts in a system error for each operation. */
const SYSCALL: Record<FsOp, string> = {
  open: 'open', create: 'open', stat: 'stat', lstat: 'lstat', readdir: 'scandir', readFile: 'open', mkdir: 'mkdir',
  chmod: 'chmod', rename: 'rename', link: 'link', unlink: 'unlink', 'fsync-dir': 'fsync', statfs: 'statfs', access: 'access',
  read: 'read', write: 'write', fsync: 'fsync', fstat: 'fstat', fchmod: 'fchmod', close: 'close', copy: 'copyfile',
};

/** The op name OSFS uses in its FsError for each call (readFile reports as "read"). */
const ERROR_OP: Record<FsOp, string> = { ...Object.fromEntries(Object.keys(SYSCALL).map((k) => [k, k])), readFile: 'read' } as Record<FsOp, string>;

/** Calls that change the filesystem (or need space / write access): what a full or read-only disk fails. */
export const WRITE_OPS: ReadonlySet<FsOp> = new Set<FsOp>(['create', 'mkdir', 'chmod', 'rename', 'link', 'unlink', 'fsync-dir', 'write', 'fsync', 'fchmod', 'copy']);

/** A Node.js system error as fs/promises would reject with it. */
export function nodeError(code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  const known = ERRNO[code] ?? { errno: 0, text: 'injected fault' };
  const err = new Error(`${code}: ${known.text}, ${syscall}${path ? ` '${path}'` : ''}`) as NodeJS.ErrnoException;
  err.errno = -known.errno;
  err.code = code;
  err.syscall = syscall;
  if (path) err.path = path;
  return err;
}

type Match = number | ((call: FsCall) => boolean);
type Callback = (call: FsCall) => void | Promise<void>;

interface Trigger {
  match: Match;
  /** Fires once (the default) or on every matching call. */
  repeat: boolean;
  fired: boolean;
  fail?: { code: string; sticky: Sticky };
  run?: { callback: Callback; after: boolean };
}

export interface FaultyFSOptions {
  /** How OSFS wraps a Node error (errors.ts fsError); without it the raw Node error is thrown. */
  wrapError?: WrapError;
  /** Keep every call in `calls` (default true; the counter always runs). */
  record?: boolean;
}

export class FaultyFS implements FileSystem {
  /** Every call so far, in order (when recording). */
  readonly calls: FsCall[] = [];
  /** Every call this wrapper failed on purpose. */
  readonly injected: InjectedFault[] = [];
  /** How many calls have been made. */
  count = 0;
  /** When set, space() returns this instead of (or computed from) the real answer. */
  spaceOverride?: (path: string, real: { available: number; total: number }) => { available: number; total: number };

  private readonly triggers: Trigger[] = [];
  private sticky?: { code: string; mode: Exclude<Sticky, false> };
  private readonly wrapError?: WrapError;
  private readonly record: boolean;

  constructor(
    readonly inner: FileSystem,
    options: FaultyFSOptions = {},
  ) {
    this.wrapError = options.wrapError;
    this.record = options.record ?? true;
  }

  /** Fails call `n` (or the first call matching a predicate) with `code`; `sticky` keeps failing afterwards. */
  failAt(match: Match, code: string, options: { sticky?: Sticky; repeat?: boolean } = {}): this {
    this.triggers.push({ match, repeat: options.repeat ?? false, fired: false, fail: { code, sticky: options.sticky ?? false } });
    return this;
  }

  /** Runs `callback` at call `n` (or at calls matching a predicate), before the real call unless `after`. */
  at(match: Match, callback: Callback, options: { after?: boolean; repeat?: boolean } = {}): this {
    this.triggers.push({ match, repeat: options.repeat ?? false, fired: false, run: { callback, after: options.after ?? false } });
    return this;
  }

  /** Stops every trigger and sticky fault: later calls pass through. */
  heal(): this {
    this.triggers.length = 0;
    this.sticky = undefined;
    return this;
  }

  /** The ops recorded so far, as `n op path` lines (for failure messages and reports). */
  describe(from = 1, to = this.count): string {
    return this.calls.filter((c) => c.n >= from && c.n <= to).map((c) => `${c.n} ${c.op} ${c.path}`).join('\n');
  }

  // -------------------------------------------------------------------------

  /** Numbers and records one call, fires its triggers, runs it (unless failed) and fires "after" callbacks. */
  async call<T>(op: FsOp, path: string, real: () => Promise<T>): Promise<T> {
    this.count += 1;
    const call: FsCall = { n: this.count, op, path };
    if (this.record) this.calls.push(call);

    if (this.sticky && (this.sticky.mode === 'all' || WRITE_OPS.has(op))) {
      this.injected.push({ ...call, code: this.sticky.code, cascade: true });
      throw this.makeError(call, this.sticky.code);
    }
    const matching = this.triggers.filter((t) => (t.repeat || !t.fired) && (typeof t.match === 'number' ? t.match === call.n : t.match(call)));
    for (const t of matching) t.fired = true;
    for (const t of matching) if (t.run && !t.run.after) await t.run.callback(call);
    const failing = matching.find((t) => t.fail);
    if (failing?.fail) {
      if (failing.fail.sticky) this.sticky = { code: failing.fail.code, mode: failing.fail.sticky };
      this.injected.push({ ...call, code: failing.fail.code, cascade: false });
      throw this.makeError(call, failing.fail.code);
    }
    const result = await real();
    for (const t of matching) if (t.run?.after) await t.run.callback(call);
    return result;
  }

  private makeError(call: FsCall, code: string): Error {
    const handleOp = ['read', 'write', 'fsync', 'fstat', 'fchmod', 'close'].includes(call.op);
    const raw = nodeError(code, SYSCALL[call.op], handleOp ? undefined : call.path.split(' -> ')[0]);
    return this.wrapError ? this.wrapError(ERROR_OP[call.op], call.path, raw) : raw;
  }

  open(path: string, mode: OpenMode, perm?: number): Promise<Handle> {
    return this.call(mode.startsWith('create') ? 'create' : 'open', path, async () => new FaultyHandle(this, await this.inner.open(path, mode, perm), path));
  }
  stat(path: string): Promise<FileInfo> {
    return this.call('stat', path, () => this.inner.stat(path));
  }
  lstat(path: string): Promise<FileInfo> {
    return this.call('lstat', path, () => this.inner.lstat(path));
  }
  readdir(path: string): Promise<DirEntry[]> {
    return this.call('readdir', path, () => this.inner.readdir(path));
  }
  readFile(path: string): Promise<Buffer> {
    return this.call('readFile', path, () => this.inner.readFile(path));
  }
  mkdir(path: string, perm: number): Promise<void> {
    return this.call('mkdir', path, () => this.inner.mkdir(path, perm));
  }
  chmod(path: string, perm: number): Promise<void> {
    return this.call('chmod', path, () => this.inner.chmod(path, perm));
  }
  rename(from: string, to: string): Promise<void> {
    return this.call('rename', `${from} -> ${to}`, () => this.inner.rename(from, to));
  }
  link(existing: string, to: string): Promise<void> {
    return this.call('link', `${existing} -> ${to}`, () => this.inner.link(existing, to));
  }
  unlink(path: string): Promise<void> {
    return this.call('unlink', path, () => this.inner.unlink(path));
  }
  syncDir(path: string): Promise<void> {
    return this.call('fsync-dir', path, () => this.inner.syncDir(path));
  }
  accessWrite(path: string): Promise<void> {
    return this.call('access', path, () => this.inner.accessWrite(path));
  }
  space(path: string): Promise<{ available: number; total: number }> {
    return this.call('statfs', path, async () => {
      const real = await this.inner.space(path);
      return this.spaceOverride ? this.spaceOverride(path, real) : real;
    });
  }
}

class FaultyHandle implements Handle {
  constructor(
    private readonly fs: FaultyFS,
    private readonly inner: Handle,
    private readonly path: string,
  ) {}
  get writesThrough(): boolean | undefined {
    return this.inner.writesThrough;
  }
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.fs.call('read', this.path, () => this.inner.read(buffer, offset, length, position));
  }
  write(buffer: Uint8Array, offset: number, length: number): Promise<number> {
    return this.fs.call('write', this.path, () => this.inner.write(buffer, offset, length));
  }
  sync(): Promise<void> {
    return this.fs.call('fsync', this.path, () => this.inner.sync());
  }
  stat(): Promise<FileInfo> {
    return this.fs.call('fstat', this.path, () => this.inner.stat());
  }
  chmod(mode: number): Promise<void> {
    return this.fs.call('fchmod', this.path, () => this.inner.chmod(mode));
  }
  /**
   * The kernel copy (reflink or copy_file_range) of this open file into a new
   * file: one call, named by its destination (the path its errors carry).
   * Where the wrapped handle has none, the caller copies through read/write.
   */
  get copyTo(): Handle['copyTo'] {
    const inner = this.inner;
    if (typeof inner.copyTo !== 'function') return undefined;
    return (to, how) => this.fs.call('copy', to, () => inner.copyTo!(to, how));
  }
  async close(): Promise<void> {
    // A failed close(2) still releases the descriptor on Linux: do the same, so no fd leaks.
    try {
      await this.fs.call('close', this.path, () => this.inner.close());
    } catch (err) {
      await this.inner.close().catch(() => undefined);
      throw err;
    }
  }
}
