/**
 * Which archived event holds the source's current content, found from the
 * archive itself: the fallback when the state file is missing or corrupt, so
 * that retention can still protect it (issue 10, item 3).
 *
 * This path reads files per event (archive records, sidecars, the source's
 * sha256); the normal path takes the answer from the state and reads nothing.
 */
import { join } from 'node:path';
import type { InstanceConfig } from '../core/config.js';
import { ruleDir } from '../core/config.js';
import type { FileSystem } from '../core/fs.js';
import { errorCode } from '../core/fs.js';
import type { Log } from '../core/log.js';
import type { FolderScan } from './retention.js';
import { eventFileName, timestampFromMs, withOrdinal, type Timestamp } from '../core/timestamp.js';
import { statSource } from './watcher.js';
import { hashFile, listedSha, parseArchiveRecord } from './worker.js';

/**
 * The events (timestamps) whose content is the source's current content:
 * first those named after the source's mtime (their archive record's source
 * identity, or their sidecar's sha256, must match), then, if none, every
 * event's sidecar. Empty when the source is missing or not archived.
 */
export async function eventsHoldingSource(fs: FileSystem, log: Log, instance: InstanceConfig, scans: ReadonlyArray<FolderScan>): Promise<Timestamp[]> {
  if (instance.redis?.mode === 'replicate') return []; // no local file: the planner keeps each folder's newest event
  let info;
  try {
    info = await statSource(fs, instance.sourceRdb);
  } catch {
    return []; // no source, nothing of it to protect
  }
  const dirs = instance.rules.map((rule) => ({ dir: ruleDir(instance, rule) }));
  const second = timestampFromMs(info.mtimeMs);
  const all = new Set<Timestamp>();
  for (const scan of scans) for (const e of scan.events) if (e.kinds.includes('rdb')) all.add(e.ts);
  const named = [...all].filter((ts) => withOrdinal(ts, 0) === second);

  // The cheapest proof: an archive record naming this very file (dev, inode, size, mtime).
  for (const ts of named) {
    for (const [i, scan] of scans.entries()) {
      const event = scan.events.find((e) => e.ts === ts);
      for (const seq of event?.seqs ?? []) {
        const record = await readRecord(fs, join(dirs[i]!.dir, eventFileName('meta', ts, seq)));
        const s = record?.source;
        if (s && s.dev === info.dev && s.ino === info.ino && s.size === info.size && s.mtimeNs === info.mtimeNs) return [ts];
      }
    }
  }
  // Otherwise by content: the source's sha256 against the sidecars, the events named after its mtime first.
  const sha = await hashFile(fs, instance.sourceRdb);
  const matching = async (candidates: Iterable<Timestamp>): Promise<Timestamp[]> => {
    const out: Timestamp[] = [];
    for (const ts of candidates) {
      const existing = scans.map((scan) => scan.events.find((e) => e.ts === ts));
      if ((await listedSha(fs, dirs, existing, ts)) === sha) out.push(ts);
    }
    return out;
  };
  const byName = await matching(named);
  if (byName.length > 0) return byName;
  log.warn({ events: all.size }, 'looking for the source\'s content in every event\'s sidecar (the state file cannot tell which event holds it)');
  return matching([...all].filter((ts) => !named.includes(ts)));
}

async function readRecord(fs: FileSystem, path: string) {
  try {
    return parseArchiveRecord((await fs.readFile(path)).toString('utf8'));
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}
