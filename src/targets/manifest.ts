/**
 * The remote event format: object names under the prefix, and the manifest
 * that makes an event complete. Pure: no I/O.
 *
 *   <prefix>dump-<ts>.rdb        the snapshot (stored as is: encoding chain []),
 *                                or dump-<ts>.rdb.zst.age etc. (src/codecs/encoding.ts)
 *   <prefix>nodes-<ts>.config    its nodes.conf, when it has one (with the same suffixes)
 *   <prefix>dump-<ts>.sha256     the same sha256sum sidecar as the local one
 *   <prefix>manifest-<ts>.seq<N>.json   written last, after HEAD checks of the others
 *
 * N is the event's archive sequence number, the one in the name of its local
 * archive record (dump-<ts>.seq<N>.json): in the manifest's name so that a
 * listing alone orders the remote's events the way the archive does
 * (src/pipeline/event-order.ts: "latest" is the highest N, whatever clock
 * named the event). A manifest written before that is manifest-<ts>.json:
 * still complete, ranked below every event with a sequence number.
 *
 * An event whose manifest is missing is incomplete: never listed, restored or
 * counted by retention; its objects are removed after the grace period.
 */
import { sortNewestArchivedFirst } from '../pipeline/event-order.js';
import { eventFileName, isSeq, parseTimestamp, type Timestamp } from '../core/timestamp.js';
import type { TargetEvent } from './target.js';
import { encodedName, KNOWN_ENCODINGS } from '../codecs/encoding.js';
import { parseServerFacts } from '../sources/facts.js';
import type { ServerFacts } from '../sources/source.js';

export const MANIFEST_FORMAT = 'rdb-archiver remote event';
export const MANIFEST_VERSION = 1;
/** A manifest is small; anything bigger is not one of ours. */
export const MANIFEST_MAX_BYTES = 64 * 1024;

/**
 * Encodings a reader knows (src/codecs/encoding.ts), applied in order when
 * writing and undone in reverse when reading. [] = stored as is ("none").
 */
export { KNOWN_ENCODINGS };

export interface ManifestObject {
  /** The object's name relative to the prefix. */
  name: string;
  /** Bytes of the content before encoding (what restore writes). */
  bytes: number;
  /** sha256 of the content before encoding: for the .rdb, the one computed by the local copy pass. */
  sha256: string;
  /** Bytes stored at the server (after encoding). */
  storedBytes: number;
  /** The ETag the server returned for the upload, as HEAD shows it later. */
  etag: string | null;
  /** The encoding chain applied, in order; [] = none. */
  encoding: string[];
  /**
   * sha256 of the stored (encoded) bytes, when they differ from the content:
   * what `verify --read-data` checks without an identity. Absent for
   * objects stored as is (their sha256 is the content's).
   */
  storedSha256?: string;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  ts: Timestamp;
  instance: string;
  host: string;
  /** The event's archive sequence number (its local archive record's); null in a manifest written before it was recorded. */
  seq: number | null;
  /** When the event was archived locally (ISO 8601); null when not recorded. */
  archivedAt: string | null;
  /** When the upload completed (ISO 8601). */
  uploadedAt: string;
  /** RDB format version from the header, when known. */
  rdbVersion: number | null;
  /** redis-ver AUX field, when known. */
  redisVersion: string | null;
  /**
   * Pulled from a server (source.redis): its facts from the archive record
   * (redis_version, run_id, master_repl_offset, the server's clock), so that a
   * restore from the remote alone knows which server wrote the file. Absent
   * for a local file source, and in manifests written before it was recorded.
   */
  server?: ServerFacts;
  rdb: ManifestObject;
  nodes: ManifestObject | null;
  sidecar: ManifestObject;
}

export type RemoteKind = 'rdb' | 'nodes' | 'sha256' | 'manifest';

/**
 * The event's files keep their local names (timestamp.ts makes them); the
 * manifest is the remote's own, with the archive sequence number when the
 * event has one (without: the name manifests had before).
 */
export function remoteName(kind: RemoteKind, ts: Timestamp, seq?: number): string {
  if (kind !== 'manifest') return eventFileName(kind, ts);
  if (seq === undefined) return `manifest-${ts}.json`;
  if (!isSeq(seq)) throw new RangeError(`a manifest's sequence number must be >= 1, not ${seq}`);
  return `manifest-${ts}.seq${seq}.json`;
}

/** Ours: the event's timestamp (with a same-second ordinal), then a suffix. */
const OUR_NAME = /^(dump|nodes|manifest)-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:_[1-9])?)\.([A-Za-z0-9.]+)$/;
const MANIFEST_SUFFIX = /^(?:seq([1-9]\d{0,14})\.)?json$/;

/**
 * The event a name under the prefix belongs to, or undefined for names that
 * are not ours (left alone by every command). An encoded data object
 * (dump-<ts>.rdb.zst.age, issue 12) still belongs to its event. A manifest's
 * name gives the event's archive sequence number, when it has one.
 */
export function parseRemoteName(name: string): { ts: Timestamp; manifest: boolean; seq?: number } | undefined {
  const m = OUR_NAME.exec(name);
  if (!m) return undefined;
  const ts = parseTimestamp(m[2]!);
  if (!ts) return undefined;
  if (m[1] !== 'manifest') return { ts, manifest: false };
  const suffix = MANIFEST_SUFFIX.exec(m[3]!);
  if (!suffix) return undefined;
  if (suffix[1] === undefined) return { ts, manifest: true };
  const seq = Number(suffix[1]);
  return isSeq(seq) ? { ts, manifest: true, seq } : undefined;
}

export function serializeManifest(m: Manifest): Buffer {
  return Buffer.from(`${JSON.stringify(m, null, 2)}\n`);
}

const HEX64 = /^[0-9a-f]{64}$/;

function parseObject(v: unknown, where: string, problems: string[]): ManifestObject | null {
  const o = v as Partial<ManifestObject> | null;
  if (!o || typeof o !== 'object') {
    problems.push(`${where}: missing`);
    return null;
  }
  const ok = typeof o.name === 'string' && o.name !== '' && !o.name.includes('/')
    && Number.isSafeInteger(o.bytes) && (o.bytes as number) >= 0
    && Number.isSafeInteger(o.storedBytes) && (o.storedBytes as number) >= 0
    && typeof o.sha256 === 'string' && HEX64.test(o.sha256)
    && (o.etag === null || typeof o.etag === 'string')
    && Array.isArray(o.encoding) && o.encoding.every((e) => typeof e === 'string')
    && (o.storedSha256 === undefined || (typeof o.storedSha256 === 'string' && HEX64.test(o.storedSha256)));
  if (!ok) {
    problems.push(`${where}: malformed`);
    return null;
  }
  const unknown = o.encoding!.filter((e) => !(KNOWN_ENCODINGS as readonly string[]).includes(e));
  if (unknown.length > 0) {
    problems.push(`${where}: encoding ${unknown.join(', ')} is not supported by this version of rdb-archiver`);
    return null;
  }
  return {
    name: o.name!, bytes: o.bytes!, sha256: o.sha256!, storedBytes: o.storedBytes!, etag: o.etag ?? null, encoding: o.encoding!,
    ...(o.storedSha256 !== undefined ? { storedSha256: o.storedSha256 } : {}),
  };
}

/** Parses a manifest defensively; `expectedTs` and `expectedSeq` are what its name carries. */
export function parseManifest(text: string, expectedTs: Timestamp, expectedSeq?: number): { manifest: Manifest } | { error: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { error: 'not valid JSON' };
  }
  const o = raw as Partial<Manifest> | null;
  if (!o || typeof o !== 'object' || o.format !== MANIFEST_FORMAT) return { error: 'not an rdb-archiver manifest' };
  if (o.version !== MANIFEST_VERSION) return { error: `manifest version ${String(o.version)} is not supported by this version of rdb-archiver` };
  if (o.ts !== expectedTs) return { error: `names event ${String(o.ts)}, not ${expectedTs}` };
  const seq = o.seq === undefined || o.seq === null ? null : o.seq;
  if ((seq ?? undefined) !== expectedSeq) return { error: `records archive sequence number ${String(seq)}, its name ${String(expectedSeq ?? 'none')}` };
  const problems: string[] = [];
  const rdb = parseObject(o.rdb, 'rdb', problems);
  const sidecar = parseObject(o.sidecar, 'sidecar', problems);
  const nodes = o.nodes === null || o.nodes === undefined ? null : parseObject(o.nodes, 'nodes', problems);
  if (o.nodes !== null && o.nodes !== undefined && !nodes && problems.length === 0) problems.push('nodes: malformed');
  if (problems.length > 0 || !rdb || !sidecar) return { error: problems.join('; ') || 'malformed' };
  // Each object is this event's own, under the name its encoding gives it: a manifest pointing at
  // another event's object (copied or swapped in the bucket), or at any other name, is not trusted.
  const own = (obj: ManifestObject, kind: 'rdb' | 'nodes' | 'sha256', where: string) => {
    const expected = encodedName(eventFileName(kind, expectedTs), kind === 'sha256' ? [] : obj.encoding);
    if (obj.name !== expected || (kind === 'sha256' && obj.encoding.length > 0)) {
      problems.push(`${where}: names the object ${JSON.stringify(obj.name.slice(0, 80))}${obj.encoding.length > 0 ? ` (${obj.encoding.join(' + ')})` : ''}, not this event's ${expected}`);
    }
  };
  own(rdb, 'rdb', 'rdb');
  if (nodes) own(nodes, 'nodes', 'nodes');
  own(sidecar, 'sha256', 'sidecar');
  if (problems.length > 0) return { error: problems.join('; ') };
  // Facts that do not parse lose only themselves: the event is still complete and restorable.
  const server = parseServerFacts(o.server);
  return {
    manifest: {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      ts: expectedTs,
      instance: typeof o.instance === 'string' ? o.instance : '',
      host: typeof o.host === 'string' ? o.host : '',
      seq,
      archivedAt: typeof o.archivedAt === 'string' ? o.archivedAt : null,
      uploadedAt: typeof o.uploadedAt === 'string' ? o.uploadedAt : '',
      rdbVersion: typeof o.rdbVersion === 'number' ? o.rdbVersion : null,
      redisVersion: typeof o.redisVersion === 'string' ? o.redisVersion : null,
      ...(server ? { server } : {}),
      rdb,
      nodes,
      sidecar,
    },
  };
}

export interface ListedObject {
  name: string;
  bytes: number;
  modifiedMs: number;
}

/** An event as the remote listing shows it: the target view plus its objects. */
export interface RemoteEvent extends TargetEvent {
  objects: ListedObject[];
  modifiedMs: number;
  /** The name of the manifest that makes it complete (the one with the highest sequence number), when there is one. */
  manifest?: string;
}

/**
 * Groups a listing into events, most recently archived first (event-order.ts:
 * by the sequence number in the manifest's name; events without one below,
 * by name); names that are not ours are dropped.
 */
export function groupListing(objects: readonly ListedObject[]): RemoteEvent[] {
  const byTs = new Map<Timestamp, RemoteEvent>();
  for (const obj of objects) {
    const parsed = parseRemoteName(obj.name);
    if (!parsed) continue;
    let ev = byTs.get(parsed.ts);
    if (!ev) {
      ev = { ts: parsed.ts, complete: false, names: [], objects: [], bytes: 0, modifiedMs: 0 };
      byTs.set(parsed.ts, ev);
    }
    ev.objects.push(obj);
    ev.names.push(obj.name);
    ev.bytes += obj.bytes;
    ev.modifiedMs = Math.max(ev.modifiedMs, obj.modifiedMs);
    if (parsed.manifest && (!ev.complete || (parsed.seq ?? 0) > (ev.seq ?? 0))) {
      ev.complete = true;
      ev.manifest = obj.name;
      if (parsed.seq === undefined) delete ev.seq;
      else ev.seq = parsed.seq;
    }
  }
  return sortNewestArchivedFirst([...byTs.values()].sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0)));
}

/**
 * Incomplete events whose newest object is older than the grace period: an
 * upload still running (here or on another host) is younger than that.
 */
export function staleIncomplete(events: readonly RemoteEvent[], nowMs: number, graceMs: number): RemoteEvent[] {
  return events.filter((e) => !e.complete && nowMs - e.modifiedMs >= graceMs);
}

/** An unfinished multipart upload, as the server lists it. */
export interface OpenUpload {
  key: string;
  uploadId: string;
  initiatedMs: number;
}

/**
 * Unfinished multipart uploads to abort: of one of our objects directly
 * under the prefix (another tool's upload under it is left alone), and
 * started before the grace period (an upload still running, here or on
 * another host, is younger).
 */
export function staleUploads(uploads: readonly OpenUpload[], prefix: string, nowMs: number, graceMs: number): OpenUpload[] {
  return uploads.filter((u) => {
    if (!u.key.startsWith(prefix)) return false;
    const name = u.key.slice(prefix.length);
    return !name.includes('/') && parseRemoteName(name) !== undefined && nowMs - u.initiatedMs >= graceMs;
  });
}
