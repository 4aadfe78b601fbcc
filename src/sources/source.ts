/**
 * What the pipeline needs from a snapshot that arrives over the network
 * rather than as a local file: bytes in order, read once, plus the facts that
 * name and describe the event. The worker (src/pipeline/worker.ts) copies,
 * hashes and validates them in the same single pass as a local file.
 */
import type { SourceIdentity } from '../pipeline/state.js';

/** The server's facts about a snapshot: recorded in the archive record, the state and `list --json`. Never a credential. */
export interface ServerFacts {
  /** The server, redis://host:port or rediss://host:port (no user, no password). */
  url: string;
  redisVersion: string | null;
  runId: string | null;
  /** The replication ID and offset the snapshot corresponds to (+FULLRESYNC), or INFO's master_repl_offset (SYNC). */
  replId: string | null;
  replOffset: number | null;
  /** How the server sent it: a file it saved (`$<len>`), or straight from the fork (`$EOF:<mark>`). */
  transfer: 'disk' | 'diskless';
  /** The server's clock (TIME) when the transfer was requested: the event's timestamp. ISO 8601. */
  takenAt: string;
  /** Cluster: the shard's slot ranges, e.g. "0-5460" or "0-100,200-5460". */
  slots?: string;
  /** Cluster: the node id of the server pulled (its master's, or a replica's after a failover during the run). */
  nodeId?: string;
}

export interface StreamedSnapshot {
  /** What logs and errors call the source (the server's URL). */
  label: string;
  /** The next bytes into buffer[offset..]; 0 at the end. Rejects when the stream fails or ends early. */
  read(buffer: Uint8Array, offset: number, length: number): Promise<number>;
  /** The payload's length when announced (disk-based transfer), for the free-space check. */
  expectedBytes?: number;
  /** When the snapshot was taken (the server's clock), ms since the epoch: it names the event. */
  takenAtMs: number;
  /** The nodes file archived with the RDB (a cluster shard's CLUSTER NODES). */
  nodes?: Buffer;
  facts: ServerFacts;
  /** The source's identity when the snapshot was requested (what the state records as archived). */
  identity: SourceIdentity;
  close(): void;
}
