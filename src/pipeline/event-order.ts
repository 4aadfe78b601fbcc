/**
 * Archive order: which event was taken from the source most recently.
 *
 * An event's name carries the source's mtime, which a wrong clock can put
 * anywhere. Its archive sequence number (in the name of its archive record,
 * dump-<ts>.seq<N>.json) is given by us, in the order we archived, so it is
 * what "latest" means. Events without a record (archived by a version before
 * records existed) come before every event with one, by name among
 * themselves. `restore latest`, `list`, `verify`, `status`, `check`, the
 * metrics and retention all order events with this one function.
 */
import type { Timestamp } from '../core/timestamp.js';

export interface Ordered {
  ts: Timestamp;
  /** The archive sequence number; undefined for an event without an archive record. */
  seq?: number;
}

/** A source mtime further ahead of our clock than this is "in the future" (a wrong source clock). */
export const FUTURE_TOLERANCE_MS = 60_000;

/**
 * How many of the most recently archived events retention never deletes
 * because of their timestamps (see retention.ts): a clock stepped back by a
 * day must not make each new snapshot push out the previous one.
 */
export const RECENT_PROTECTED = 3;

/** Comparator: the most recently archived first. */
export function newestArchivedFirst(a: Ordered, b: Ordered): number {
  const sa = a.seq ?? 0;
  const sb = b.seq ?? 0;
  if (sa !== sb) return sb - sa;
  return a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0;
}

/**
 * Sorts in place, most recently archived first. Callers pass events already
 * sorted by name, newest first (a native string sort): names usually agree
 * with the archive order (a sane clock), and then one linear check replaces a
 * comparator sort of 100k events.
 */
export function sortNewestArchivedFirst<T extends Ordered>(events: T[]): T[] {
  for (let i = 1; i < events.length; i++) {
    if (newestArchivedFirst(events[i - 1]!, events[i]!) > 0) return events.sort(newestArchivedFirst);
  }
  return events;
}

/** The most recently archived of some events (no sort). */
export function latestArchived<T extends Ordered>(events: Iterable<T>): T | undefined {
  let best: T | undefined;
  for (const e of events) if (best === undefined || newestArchivedFirst(e, best) < 0) best = e;
  return best;
}

/** What the state file says was archived last (state.archived). */
export interface StateLatest {
  ts: string;
  /** Absent in a state written before archive records existed. */
  seq?: number;
  /** Rule folders that could not take the event when it was archived. */
  missingIn?: string[];
}

/** A rule folder's events, as scanned: every record's seq, and which files each event has. */
export interface ScannedFolder {
  rule: string;
  events: ReadonlyArray<Ordered & { seqs?: number[]; kinds: readonly string[] }>;
}

/**
 * Cross-checks the archive's "latest" with the state file: the event the state
 * says was archived last must be the latest complete event of `folders`, or
 * something archived after it (a higher seq: a run that saved no state yet).
 * Otherwise "latest" would be older data: that event lost its .rdb or its
 * archive record (deleted by hand), or another event claims its place.
 * Returns why, or undefined when they agree or cannot tell: no state, a state
 * without seq whose event is present, or only folders the event never reached
 * (missingIn).
 */
export function latestContradiction(archived: StateLatest | undefined, folders: readonly ScannedFolder[]): string | undefined {
  if (!archived) return undefined;
  if (folders.length > 0 && folders.every((f) => archived.missingIn?.includes(f.rule))) return undefined;
  const events = folders.flatMap((f) => f.events.filter((e) => e.kinds.includes('rdb')));
  const latest = latestArchived(events);
  if (latest && latest.ts === archived.ts) return undefined;
  if (latest && archived.seq !== undefined && (latest.seq ?? 0) > archived.seq) return undefined;
  const holders = events.filter((e) => e.ts === archived.ts);
  if (archived.seq === undefined && holders.length > 0) return undefined;
  const seqText = archived.seq === undefined ? '' : ` (seq ${archived.seq})`;
  const why = holders.length === 0 ? `its .rdb (dump-${archived.ts}.rdb) is missing`
    : !holders.some((e) => e.seqs?.includes(archived.seq!)) ? `its archive record dump-${archived.ts}.seq${archived.seq}.json is missing (deleted by hand?)`
    : `another event (${latest!.ts}) claims a sequence number as high as its own`;
  const instead = latest ? `the newest event left, ${latest.ts}${latest.seq === undefined ? '' : ` (seq ${latest.seq})`}, was archived before it` : 'no event is left';
  return `the event archived last, ${archived.ts}${seqText}, ${why}: ${instead}`;
}
