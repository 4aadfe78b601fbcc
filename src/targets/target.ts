/**
 * Where events are kept: the local rule folders and off-site object stores
 * are both archive targets. Retention plans over a target's listing with the
 * one pure planner (src/pipeline/retention.ts planRetention); the capability flags say
 * which write and check paths a target offers, so callers choose by
 * capability, never by a switch on the target's kind.
 */
import type { Timestamp } from '../core/timestamp.js';

export interface TargetCapabilities {
  /** One stored copy can appear under several names at no cost (local rule folders). */
  hardLinks: boolean;
  /** A complete file can replace a name in one step (rename). Object stores have no rename: a manifest written last marks completeness instead. */
  atomicRename: boolean;
  /** The server checks a digest of what it received (Content-MD5 per request) and returns one (ETag). */
  serverChecksums: boolean;
  /** A listing right after a write is guaranteed to show it. Not assumed of S3-compatible servers. */
  consistentListing: boolean;
}

/** One event as a target lists it. */
export interface TargetEvent {
  ts: Timestamp;
  /** Counts for retention, listing and restore only when complete (local: its .rdb exists; remote: its manifest exists). */
  complete: boolean;
  /** The names stored for this event, relative to the target's root (folder or key prefix). */
  names: string[];
  /** Stored bytes of all its names. */
  bytes: number;
  /** The archive sequence number (event-order.ts), when the target's names carry one. */
  seq?: number;
  /** The newest modification time of its names (ms), where the target knows it. */
  modifiedMs?: number;
}

export interface ArchiveTarget {
  /** For messages: a folder path or s3://bucket/prefix. */
  readonly location: string;
  readonly capabilities: TargetCapabilities;
  /** Every event of ours at the target, most recently archived first (event-order.ts); names that are not ours are ignored. */
  listEvents(): Promise<TargetEvent[]>;
}

/** The shape planRetention takes: a complete event counts as having its 'rdb'. */
export function retentionInput(events: readonly TargetEvent[]): Array<{ ts: Timestamp; kinds: Array<'rdb'>; seq?: number }> {
  return events.filter((e) => e.complete).map((e) => (e.seq === undefined ? { ts: e.ts, kinds: ['rdb'] } : { ts: e.ts, kinds: ['rdb'], seq: e.seq }));
}
