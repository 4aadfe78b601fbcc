/**
 * A small change to the state file by a command that is not a cycle (a
 * manual `verify` or `drill` recording its result), under the run lock so
 * that it never races a cycle's own load-modify-save of the same file.
 *
 * A run that holds the lock is waited for (bounded): the result of a person's
 * verify or drill is worth a short wait, and losing it would hide a bad event
 * from `check` and the metrics.
 */
import type { InstanceConfig } from '../core/config.js';
import { ArchiveUnavailableError, OwnerMismatchError } from '../core/errors.js';
import type { FileSystem } from '../core/fs.js';
import { effectiveUid, userName } from '../core/trust.js';
import { lockPathFor } from './cycle.js';
import { acquireLock } from './lock.js';
import { loadState, saveState, type State } from './state.js';

/** How long a manual verify or drill waits for a running cycle before it gives up recording (with a warning). */
export const RECORD_WAIT_MS = 60_000;

/** The commands whose lock is worth waiting for: each holds it for one bounded run. */
const WAIT_FOR = ['once', 'prune', 'drill', 'verify'] as const;

/**
 * Loads the state under the lock, applies `change`, saves it. Throws when
 * the archive root is missing or belongs to another user (a state file
 * written as root would stop the service's runs), when the lock stays held,
 * or when the state cannot be written.
 */
export async function updateState(fs: FileSystem, instance: InstanceConfig, command: string, change: (state: State) => void, waitMs = RECORD_WAIT_MS): Promise<void> {
  const root = await fs.stat(instance.archiveDir).catch(() => undefined);
  if (root?.kind !== 'dir') throw new ArchiveUnavailableError(instance.archiveDir, 'does not exist or is not a directory');
  const uid = effectiveUid();
  if (!instance.allowOwnerMismatch && root.uid !== uid) {
    throw new OwnerMismatchError(instance.archiveDir, `${instance.archiveDir}: the archive belongs to ${userName(root.uid)}, but this is ${userName(uid)}: `
      + `files written now would belong to ${userName(uid)} (run it as the archive's owner, or pass --allow-owner-mismatch)`);
  }
  const lock = await acquireLock(fs, lockPathFor(instance), command, instance.dirMode, { waitFor: WAIT_FOR, waitMs });
  try {
    const { state } = await loadState(fs, instance.statePath);
    change(state);
    await saveState(fs, instance.statePath, state, instance.dirMode);
  } finally {
    await lock.release().catch(() => undefined);
  }
}
