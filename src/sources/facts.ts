/**
 * The server facts of a pulled snapshot (ServerFacts: the server's version,
 * run_id, replication offset, clock) once they have left the process that
 * pulled it: read back from an archive record or a remote manifest, and said
 * in one line by `restore` and `drill`. Pure.
 *
 * What is read back is untrusted (a manifest comes from a bucket): only
 * well-formed fields are kept, and a value that is not an object is no facts.
 */
import type { ServerFacts } from './source.js';

const str = (v: unknown, max = 256): string | null => (typeof v === 'string' && v.length <= max ? v : null);
const offset = (v: unknown): number | null => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null);

/** ServerFacts from JSON, or null when `v` is not facts (absent: a local file source, or a record of an older version). */
export function parseServerFacts(v: unknown): ServerFacts | null {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  const url = str(o.url, 1024);
  const takenAt = str(o.takenAt, 64);
  if (url === null || takenAt === null || !/^rediss?:\/\//.test(url)) return null;
  if (o.transfer !== 'disk' && o.transfer !== 'diskless') return null;
  const slots = str(o.slots, 64 * 1024);
  const nodeId = str(o.nodeId, 64);
  return {
    url,
    redisVersion: str(o.redisVersion, 64),
    runId: str(o.runId, 64),
    replId: str(o.replId, 64),
    replOffset: offset(o.replOffset),
    transfer: o.transfer,
    takenAt,
    ...(slots !== null ? { slots } : {}),
    ...(nodeId !== null ? { nodeId } : {}),
  };
}

/**
 * Who wrote the snapshot, in one line: the server's own facts when it was
 * pulled from it (version, where, run_id, offset, when), else the version the
 * RDB's redis-ver AUX field names, else null.
 */
export function writtenByText(server: ServerFacts | null | undefined, rdbRedisVersion: string | null): string | null {
  if (server) {
    const parts = [server.url];
    if (server.runId) parts.push(`run_id ${server.runId}`);
    if (server.replOffset !== null) parts.push(`master_repl_offset ${server.replOffset}`);
    parts.push(`pulled ${server.takenAt}`);
    return `server ${server.redisVersion ?? rdbRedisVersion ?? 'of unknown version'} (${parts.join(', ')})`;
  }
  return rdbRedisVersion ? `server ${rdbRedisVersion} (the RDB's redis-ver field)` : null;
}
