/**
 * The event-driven half of the watcher (issue 16): inotify, through Node's
 * fs.watch, on the folder of each instance's source.
 *
 * Redis writes `temp-<pid>.rdb` and renames it over `dump.rdb`, so the folder
 * is watched, not the file (a watch on the file would follow the old inode).
 * What Node reports on Linux (libuv's inotify mask; the same on Node 20, 24
 * and 26, checked by hand):
 *  - a rename onto the source name: `rename <name>` (IN_MOVED_TO);
 *  - a write to the file itself, or its mtime set: `change <name>` (libuv does
 *    not ask for IN_CLOSE_WRITE, so "close after write" is "no further write
 *    for the debounce");
 *  - the folder removed or moved: `rename <folder's own name>` (IN_DELETE_SELF
 *    or IN_MOVE_SELF, then IN_IGNORED), no 'error' event, and the watch is dead;
 *  - the watch limit: fs.watch throws ENOSPC ("System limit for number of file
 *    watchers reached"); a missing folder: ENOENT.
 *
 * The watch only triggers. It never stats the source, copies or decides: the
 * cycle's identity comparison with the state (watcher.ts) does, so a spurious
 * event archives nothing. Events collapse (debounce); the daemon serializes
 * the cycles (cycle-runner.ts).
 *
 * Where watching is impossible the folder falls back to the schedule, which
 * keeps running anyway, and says why once: a filesystem whose writes from
 * other hosts inotify never sees (NFS, SMB, FUSE, 9p...), the watch limit,
 * a folder that is gone (re-armed as soon as it is back, then a cycle runs
 * for what may have been saved meanwhile), or any other error.
 */
import { watch, type FSWatcher } from 'node:fs';
import { lstat, statfs } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Log } from '../core/log.js';

export type FallbackKind = 'unsupported' | 'limit' | 'folder-gone' | 'error';

export type FolderMode =
  | { mode: 'watching'; since: string }
  | { mode: 'fallback'; kind: FallbackKind; reason: string; since: string };

/** How often each watched folder's identity is checked (a replaced or covered folder), and a gone one re-armed. */
export const WATCH_CHECK_MS = 1_000;
/** How often a watch that failed for a limit or an error is tried again (quietly). */
export const WATCH_RETRY_MS = 60_000;
/** Events keep deferring the cycle for at most this many debounce periods after the first one. */
export const MAX_WAIT_FACTOR = 4;

/**
 * statfs f_type of filesystems where inotify sees only this kernel's own
 * writes: a Redis on another host (or outside this VM) writing there would
 * never be seen. The schedule watches those.
 */
const UNWATCHABLE_FS: Record<number, string> = {
  0x6969: 'nfs',
  0x517b: 'smb',
  0xff534d42: 'cifs',
  0xfe534d42: 'smb2',
  0x65735546: 'fuse',
  0x01021997: '9p',
  0x00c36400: 'ceph',
  0x5346414f: 'afs',
  0x73757245: 'coda',
  0x0bd00bd0: 'lustre',
  0x47504653: 'gpfs',
  0x01161970: 'gfs2',
  0x7461636f: 'ocfs2',
};

export function unwatchableFilesystem(type: number): string | undefined {
  return UNWATCHABLE_FS[type];
}

/** What an fs.watch event on a folder means for us. */
export function classifyEvent(filename: string | null, sourceNames: ReadonlySet<string>, folderName: string): 'source' | 'folder' | 'ignore' {
  if (filename === null) return 'folder'; // cannot tell which file: look at the folder, and treat it as a save
  if (sourceNames.has(filename)) return 'source';
  // The folder's own name: it was removed or moved (or a file is named like it: the check is cheap).
  if (filename === folderName) return 'folder';
  return 'ignore'; // temp-<pid>.rdb, nodes.conf, the AOF, anything else
}

/** Why an fs.watch attempt failed, as a fallback kind. */
export function fallbackKindOf(code: string | undefined): FallbackKind {
  if (code === 'ENOSPC' || code === 'EMFILE') return 'limit';
  if (code === 'ENOENT' || code === 'ENOTDIR') return 'folder-gone';
  return 'error';
}

export function fallbackReason(kind: FallbackKind, dir: string, detail: string): string {
  switch (kind) {
    case 'limit':
      return `cannot watch ${dir}: the inotify limit is reached (${detail}); raise fs.inotify.max_user_watches / max_user_instances`;
    case 'folder-gone':
      return `the watched folder ${dir} is gone or was replaced (${detail}); re-armed as soon as it is back`;
    case 'unsupported':
      return `${dir} is on a ${detail} filesystem, where inotify does not see writes from other hosts`;
    default:
      return `cannot watch ${dir}: ${detail}`;
  }
}

/** Pure: when the pending events fire: `debounceMs` after the last, but no later than MAX_WAIT_FACTOR debounces after the first. */
export function debounceDeadline(firstMs: number, lastMs: number, debounceMs: number): number {
  return Math.min(lastMs + debounceMs, firstMs + MAX_WAIT_FACTOR * debounceMs);
}

export interface WatchedSource {
  instance: string;
  rdb: string;
}

export interface TriggerInfo {
  /** Events that collapsed into this trigger. */
  events: number;
  /** The source files they named. */
  files: string[];
  /** The watch was re-armed after its folder came back: a save may have been missed meanwhile. */
  rearmed?: boolean;
}

export interface SourceWatchOptions {
  debounceMs: number;
  log: Log;
  /** The debounce expired: the instances whose sources were named (at least one). */
  trigger(instances: string[], info: TriggerInfo): void;
  /** A folder's mode changed (armed, fell back, re-armed): for the status record. */
  onMode(dir: string, instances: string[], mode: FolderMode): void;
  /** Tests only: RDB_ARCHIVER_TEST_WATCH_FAIL=<errno code> makes every fs.watch attempt fail with that code. */
  env?: NodeJS.ProcessEnv;
}

interface Folder {
  dir: string;
  name: string;
  /** Source file name in this folder -> the instances whose source it is. */
  sources: Map<string, string[]>;
  instances: string[];
  watcher?: FSWatcher;
  /** dev:ino of the folder the watch is on. */
  identity?: string;
  mode?: FolderMode;
  nextRetryMs: number;
  checking: boolean;
}

const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** Watches the folders of some sources; see the module comment. */
export class SourceWatch {
  private readonly folders: Folder[] = [];
  private timer?: NodeJS.Timeout;
  private checker?: NodeJS.Timeout;
  private pending = new Map<string, Set<string>>();
  private events = 0;
  private firstMs = 0;
  private lastMs = 0;
  private rearmed = false;
  private closed = false;

  constructor(sources: readonly WatchedSource[], private readonly options: SourceWatchOptions) {
    for (const s of sources) {
      const dir = dirname(s.rdb);
      let folder = this.folders.find((f) => f.dir === dir);
      if (!folder) {
        folder = { dir, name: basename(dir), sources: new Map(), instances: [], nextRetryMs: 0, checking: false };
        this.folders.push(folder);
      }
      const name = basename(s.rdb);
      folder.sources.set(name, [...(folder.sources.get(name) ?? []), s.instance]);
      folder.instances.push(s.instance);
    }
  }

  /** Arms every folder (or records its fallback), then keeps checking them. */
  async start(): Promise<void> {
    for (const folder of this.folders) await this.arm(folder);
    this.checker = setInterval(() => {
      for (const folder of this.folders) void this.check(folder);
    }, WATCH_CHECK_MS);
    this.checker.unref();
  }

  modes(): Array<{ dir: string; instances: string[]; mode: FolderMode | undefined }> {
    return this.folders.map((f) => ({ dir: f.dir, instances: f.instances, mode: f.mode }));
  }

  close(): void {
    this.closed = true;
    if (this.checker) clearInterval(this.checker);
    if (this.timer) clearTimeout(this.timer);
    this.pending.clear();
    for (const folder of this.folders) this.disarm(folder);
  }

  private setMode(folder: Folder, mode: FolderMode): void {
    folder.mode = mode;
    this.options.onMode(folder.dir, folder.instances, mode);
  }

  private fallBack(folder: Folder, kind: FallbackKind, detail: string): void {
    const previous = folder.mode;
    folder.nextRetryMs = Date.now() + (kind === 'folder-gone' ? WATCH_CHECK_MS : WATCH_RETRY_MS);
    // Logged once: a retry that fails the same way says nothing new.
    if (previous?.mode === 'fallback' && previous.kind === kind) return;
    const reason = fallbackReason(kind, folder.dir, detail);
    this.options.log.warn({ dir: folder.dir, instances: folder.instances, kind, reason }, 'watch unavailable: falling back to the schedule');
    this.setMode(folder, { mode: 'fallback', kind, reason, since: new Date().toISOString() });
  }

  private disarm(folder: Folder): void {
    folder.watcher?.close();
    folder.watcher = undefined;
    folder.identity = undefined;
  }

  private async arm(folder: Folder): Promise<void> {
    if (this.closed) return;
    const forced = this.options.env?.RDB_ARCHIVER_TEST_WATCH_FAIL;
    let watcher: FSWatcher | undefined;
    try {
      if (forced) throw Object.assign(new Error(`${forced} (forced by RDB_ARCHIVER_TEST_WATCH_FAIL)`), { code: forced });
      const before = await lstat(folder.dir);
      if (!before.isDirectory()) throw Object.assign(new Error('not a folder'), { code: 'ENOTDIR' });
      const fsType = unwatchableFilesystem(Number((await statfs(folder.dir)).type));
      if (fsType) {
        folder.nextRetryMs = Number.POSITIVE_INFINITY;
        if (folder.mode?.mode !== 'fallback') {
          const reason = fallbackReason('unsupported', folder.dir, fsType);
          this.options.log.warn({ dir: folder.dir, instances: folder.instances, kind: 'unsupported', reason }, 'watch unavailable: falling back to the schedule');
          this.setMode(folder, { mode: 'fallback', kind: 'unsupported', reason, since: new Date().toISOString() });
        }
        return;
      }
      watcher = watch(folder.dir, { persistent: true }, (_event, filename) => this.onEvent(folder, filename === null ? null : String(filename)));
      watcher.on('error', (err) => {
        if (folder.watcher !== watcher) return;
        this.disarm(folder);
        this.fallBack(folder, fallbackKindOf(errnoOf(err)), err.message);
      });
      // The folder the watch is on: the one we looked at, or it was replaced in between (try again at the next check).
      const after = await lstat(folder.dir);
      if (after.ino !== before.ino || after.dev !== before.dev) throw Object.assign(new Error('replaced while arming'), { code: 'ENOENT' });
      if (this.closed) {
        watcher.close();
        return;
      }
      folder.watcher = watcher;
      folder.identity = `${after.dev}:${after.ino}`;
    } catch (err) {
      watcher?.close();
      this.fallBack(folder, fallbackKindOf(errnoOf(err)), (err as Error).message);
      return;
    }
    const was = folder.mode;
    this.setMode(folder, { mode: 'watching', since: new Date().toISOString() });
    if (was === undefined) {
      this.options.log.info({ dir: folder.dir, instances: folder.instances, debounceMs: this.options.debounceMs }, 'watching the source folder');
    } else if (was.mode === 'fallback') {
      this.options.log.info({ dir: folder.dir, instances: folder.instances, after: was.kind }, 'watch re-armed');
      // A save may have landed while nothing watched: one cycle looks (the identity check decides).
      this.rearmed = true;
      this.queue(folder.instances, []);
    }
  }

  /** The periodic look: a watched folder still the same one; a fallen-back one tried again when due. */
  private async check(folder: Folder): Promise<void> {
    if (this.closed || folder.checking) return;
    folder.checking = true;
    try {
      if (folder.watcher) {
        const now = await lstat(folder.dir).then((s) => `${s.dev}:${s.ino}`, () => undefined);
        if (now === folder.identity) return;
        this.disarm(folder);
        this.fallBack(folder, 'folder-gone', now === undefined ? 'it does not exist' : 'another folder is at its path');
      }
      if (folder.mode?.mode === 'fallback' && Date.now() >= folder.nextRetryMs) await this.arm(folder);
    } finally {
      folder.checking = false;
    }
  }

  private onEvent(folder: Folder, filename: string | null): void {
    if (this.closed) return;
    const kind = classifyEvent(filename, new Set(folder.sources.keys()), folder.name);
    if (kind === 'ignore') return;
    if (kind === 'folder') void this.check(folder);
    const instances = filename === null ? folder.instances : (folder.sources.get(filename) ?? []);
    if (instances.length > 0) this.queue(instances, filename === null ? [] : [`${folder.dir}/${filename}`]);
  }

  /** Adds instances to the pending trigger and (re)sets its timer. Never blocks, never touches the source. */
  private queue(instances: readonly string[], files: readonly string[]): void {
    const now = Date.now();
    if (this.pending.size === 0) this.firstMs = now;
    this.lastMs = now;
    this.events += 1;
    for (const instance of instances) {
      const set = this.pending.get(instance) ?? new Set<string>();
      for (const f of files) set.add(f);
      this.pending.set(instance, set);
    }
    if (this.timer) clearTimeout(this.timer);
    const wait = Math.max(0, debounceDeadline(this.firstMs, this.lastMs, this.options.debounceMs) - now);
    this.timer = setTimeout(() => this.fire(), wait);
  }

  private fire(): void {
    this.timer = undefined;
    if (this.closed || this.pending.size === 0) return;
    const instances = [...this.pending.keys()];
    const files = [...new Set([...this.pending.values()].flatMap((s) => [...s]))];
    const info: TriggerInfo = { events: this.events, files, ...(this.rearmed ? { rearmed: true } : {}) };
    this.pending = new Map();
    this.events = 0;
    this.rearmed = false;
    this.options.trigger(instances, info);
  }
}
