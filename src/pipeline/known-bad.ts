/**
 * Archived events known to be bad: what the last verification (scheduled, or
 * a manual `verify` with the config) found damaged, and the event the last
 * restore drill could not load, among the events still in the archive.
 *
 * A run whose own work succeeded still exits ARCHIVE_BAD (81) while any is
 * known ("never report OK while failing"), until the event leaves the archive
 * (retention, or removed by hand), or a later verification or drill of it
 * finds it good. Pure: the state and the events present in, findings out.
 */
import { ExitCode, type ExitCodeValue } from '../core/errors.js';
import type { Timestamp } from '../core/timestamp.js';
import { drillText } from '../ops/drill.js';
import { badEventText } from './scheduled-verify.js';
import type { State } from './state.js';

export interface KnownBad {
  ts: Timestamp;
  /** What found it: a verification, or a restore drill. */
  by: 'verify' | 'drill';
  /** When it was found. */
  at: string;
  /** Found by this run (its scheduled verification or drill), not carried over from an earlier one. */
  fresh: boolean;
  text: string;
}

/**
 * The known-bad events among `present` (events still archived in a rule
 * folder). `thisRun` names what this run did (the at of its verification
 * and drill), so findings can be told fresh from carried over.
 */
export function knownBad(state: Pick<State, 'verify' | 'drill'>, present: ReadonlySet<string>, thisRun: { verifyAt?: string; drillAt?: string } = {}): KnownBad[] {
  const out: KnownBad[] = [];
  for (const b of state.verify?.bad ?? []) {
    if (!present.has(b.ts)) continue;
    const at = b.foundAt ?? state.verify!.at;
    out.push({ ts: b.ts, by: 'verify', at, fresh: at === thisRun.verifyAt, text: badEventText(b) });
  }
  const d = state.drill;
  if (d && d.status === 'load-failed' && d.ts !== null && present.has(d.ts)) {
    out.push({ ts: d.ts, by: 'drill', at: d.at, fresh: d.at === thisRun.drillAt, text: drillText(d) });
  }
  return out;
}

/** The run's exit code once the known-bad events are taken into account: only a run that is otherwise OK becomes ARCHIVE_BAD. */
export function withKnownBad(exitCode: ExitCodeValue, bad: readonly KnownBad[]): ExitCodeValue {
  return exitCode === ExitCode.OK && bad.length > 0 ? ExitCode.ARCHIVE_BAD : exitCode;
}

/** The warning for a finding carried over from an earlier run (this run's own findings are already warnings). */
export function knownBadText(b: KnownBad): string {
  return `known bad since ${b.at} (${b.by === 'verify' ? 'verification' : 'restore drill'}; not checked again since): ${b.text}`;
}
