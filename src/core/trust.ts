/**
 * Who may have written a file we act on: the config (it names the hooks we
 * run, maybe as root) and the hook executables. The rule is sshd's
 * StrictModes: the file and every folder above it (after resolving
 * symlinks) must be owned by the running user or root, and writable by
 * nobody else. A folder writable by others is accepted only with the sticky
 * bit (like /tmp), where others cannot rename or remove what they do not own.
 *
 * Also the user names used in messages (/etc/passwd, read only on error paths).
 */
import { readFileSync, realpathSync, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';

export interface OwnerAndMode {
  uid: number;
  /** Permission bits and the sticky bit (st_mode & 0o7777). */
  mode: number;
  isDirectory: boolean;
}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;

/**
 * Pure: why `path` (described by `info`) cannot be trusted by a process
 * running as `euid`; undefined when it can.
 */
export function untrustedReason(path: string, info: OwnerAndMode, euid: number, what: string): string | undefined {
  if (info.uid !== euid && info.uid !== 0) {
    return `${what} ${path} is owned by ${userName(info.uid)}, not by ${userName(euid)} (who runs rdb-archiver) or root: ` +
      `another user could change it; chown it to ${userName(euid)} or root`;
  }
  const sticky = info.isDirectory && (info.mode & 0o1000) !== 0;
  const groupWrite = (info.mode & 0o020) !== 0 && !sticky;
  const otherWrite = (info.mode & 0o002) !== 0 && !sticky;
  if (groupWrite || otherWrite) {
    const who = groupWrite && otherWrite ? 'its group and by everyone' : groupWrite ? 'its group' : 'everyone';
    return `${what} ${path} is writable by ${who} (mode ${octal(info.mode)}): another user could change it; run chmod go-w ${path}`;
  }
  return undefined;
}

const describe = (s: Stats): OwnerAndMode => ({ uid: s.uid, mode: s.mode & 0o7777, isDirectory: s.isDirectory() });

/**
 * The first reason why the folders holding `path` (resolved through symlinks)
 * cannot be trusted; undefined when every one of them can. `fileInfo`, when
 * given, is what the caller already knows of the file itself (an fstat of the
 * descriptor it reads), and is checked first.
 */
export function untrustedPathReason(path: string, what: string, euid: number, fileInfo?: Stats): string | undefined {
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    return undefined; // the caller's own open or spawn reports a missing file
  }
  const own = untrustedReason(real, describe(fileInfo ?? statSync(real)), euid, what);
  if (own) return own;
  for (let dir = dirname(real); ; dir = dirname(dir)) {
    const reason = untrustedReason(dir, describe(statSync(dir)), euid, `the folder holding ${what}`);
    if (reason) return reason;
    if (dir === dirname(dir)) return undefined;
  }
}

export function effectiveUid(): number {
  return typeof process.geteuid === 'function' ? process.geteuid() : 0;
}

let users: Map<number, string> | undefined;

/** "redis (uid 999)", or "uid 999" when /etc/passwd does not name it. */
export function userName(uid: number): string {
  if (!users) {
    users = new Map();
    try {
      for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
        const [name, , id] = line.split(':');
        if (name && id !== undefined && /^\d+$/.test(id) && !users.has(Number(id))) users.set(Number(id), name);
      }
    } catch {
      // no passwd file (a minimal container): numbers alone
    }
  }
  const name = users.get(uid);
  return name ? `${name} (uid ${uid})` : `uid ${uid}`;
}
