/**
 * The local cycle's side of off-site copies (called from src/pipeline/cycle.ts under
 * the instance lock): queue each new event for the remotes, and drop the
 * items every remote is done with.
 */
import { versionOf } from '../commands/catalog.js';
import type { InstanceConfig } from '../core/config.js';
import type { FileSystem } from '../core/fs.js';
import type { State } from '../pipeline/state.js';
import type { SnapshotResult } from '../pipeline/worker.js';
import { enqueue, loadRemoteState, remoteStatePath, settleQueue } from './state.js';

/** Queues a freshly archived (or re-confirmed) event for every remote. */
export function queueForRemotes(state: State, instance: InstanceConfig, result: SnapshotResult): void {
  if (instance.remotes.length === 0) return;
  const item = {
    ts: result.ts,
    seq: result.seq,
    bytes: result.bytes,
    sha256: result.sha256,
    rdbVersion: result.rdb.version ?? null,
    redisVersion: versionOf(result.rdb),
    archivedAt: new Date().toISOString(),
  };
  const queued = state.offsite?.queue.find((q) => q.ts === item.ts && q.sha256 === item.sha256);
  state.offsite = { queue: enqueue(state.offsite?.queue ?? [], queued ?? item) };
}

/**
 * Drops queue items that every configured remote holds or gave up on. Reads
 * the remotes' small state files only when something is queued; without
 * remotes the queue goes away.
 */
export async function settleRemoteQueue(fs: FileSystem, instance: InstanceConfig, state: State): Promise<void> {
  if (!state.offsite) return;
  if (instance.remotes.length === 0) {
    delete state.offsite;
    return;
  }
  if (state.offsite.queue.length === 0) return;
  const states = [];
  try {
    for (const remote of instance.remotes) states.push((await loadRemoteState(fs, remoteStatePath(instance, remote))).state);
  } catch {
    return; // unreadable now: keeping the items is safe (an upload of an event the remote has is a no-op)
  }
  state.offsite.queue = settleQueue(state.offsite.queue, states);
}
