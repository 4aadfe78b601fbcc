/**
 * Uploads one archived event to one remote, so that it is complete only when
 * everything in it is verified:
 *
 *   manifest already there? (same sha256: done; other content: conflict)
 *   -> the .rdb, streamed from the archived file, every part with Content-MD5,
 *      its sha256 recomputed on the way and compared with the copy pass's;
 *      with a compression or encryption set, encoded in the same pass
 *      (src/offsite/encoded.ts) and stored as dump-<ts>.rdb.zst.age etc.
 *   -> nodes.conf and the sha256 sidecar, each checked against the sidecar
 *   -> HEAD of each: size and ETag as uploaded
 *   -> the manifest, last (with the server facts of a pulled snapshot).
 *
 * A failure at any step leaves no manifest: the objects written so far form
 * an incomplete event that nothing lists, restores or counts, and that the
 * cleanup removes after the grace period.
 */
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseSidecar, serverFactsOf, type EventLocation } from '../commands/catalog.js';
import { InvalidSnapshotError, RemoteError } from '../core/errors.js';
import { closeAfter, type FileSystem } from '../core/fs.js';
import { createSha256, sha256Hex } from '../core/sha256.js';
import { eventFileName, type Timestamp } from '../core/timestamp.js';
import { MANIFEST_FORMAT, MANIFEST_MAX_BYTES, MANIFEST_VERSION, parseManifest, remoteName, serializeManifest, type Manifest, type ManifestObject, type RemoteEvent } from '../targets/manifest.js';
import type { S3Target, UploadCallbacks } from '../targets/s3.js';
import type { OffsiteItem } from './state.js';
import { encodingChain } from '../codecs/encoding.js';
import { uploadEncodedFile, uploadEncodedSmall } from './encoded.js';

export type UploadOutcome =
  | { outcome: 'uploaded'; bytes: number }
  | { outcome: 'already-there' }
  | { outcome: 'conflict'; reason: string };

export interface UploadContext {
  fs: FileSystem;
  target: S3Target;
  instanceName: string;
  callbacks?: UploadCallbacks;
  signal?: AbortSignal;
}

/** Reads and parses a listed event's manifest; undefined when it does not exist (any more). */
export async function readManifest(target: S3Target, event: Pick<RemoteEvent, 'ts' | 'seq' | 'manifest'>, signal?: AbortSignal): Promise<{ manifest: Manifest } | { error: string } | undefined> {
  const name = event.manifest ?? remoteName('manifest', event.ts, event.seq);
  const head = await target.head(name, signal);
  if (!head) return undefined;
  if (head.bytes > MANIFEST_MAX_BYTES) return { error: `manifest is ${head.bytes} bytes: not one of ours` };
  return parseManifest((await target.getSmall(name, MANIFEST_MAX_BYTES, signal)).toString('utf8'), event.ts, event.seq);
}

/**
 * The manifest an event already has at the remote: under its own name (with
 * its archive sequence number), or under the name manifests had before.
 */
async function existingManifest(target: S3Target, ts: Timestamp, seq: number | undefined, signal?: AbortSignal): ReturnType<typeof readManifest> {
  const own = seq === undefined ? undefined : await readManifest(target, { ts, seq }, signal);
  return own ?? readManifest(target, { ts }, signal);
}

export async function uploadEvent(ctx: UploadContext, item: OffsiteItem, loc: EventLocation): Promise<UploadOutcome> {
  const { fs, target, signal } = ctx;
  // The archive sequence number: in the name of the local archive record (the queue's copy for a queue item of an older record-less event).
  const seq = loc.seq ?? item.seq;
  const existing = await existingManifest(target, item.ts, seq, signal);
  if (existing && 'manifest' in existing) {
    if (existing.manifest.rdb.sha256 === item.sha256) return { outcome: 'already-there' };
    return { outcome: 'conflict', reason: `the remote already holds an event ${item.ts} with other content (sha256 ${existing.manifest.rdb.sha256.slice(0, 16)}…, ours ${item.sha256.slice(0, 16)}…): left as it is` };
  }
  if (existing) return { outcome: 'conflict', reason: `the remote holds a manifest for ${item.ts} that cannot be read (${existing.error}): left as it is` };

  const rdbName = eventFileName('rdb', item.ts);
  const nodesName = eventFileName('nodes', item.ts);
  const sidecarName = eventFileName('sha256', item.ts);
  const rdbPath = join(loc.dir, rdbName);

  // The local sidecar: what sha256sum -c checks at the remote too, and the nodes.conf digest.
  const sidecarBytes = await fs.readFile(join(loc.dir, sidecarName));
  const sidecar = parseSidecar(sidecarBytes.toString('utf8'));
  const listed = new Map(sidecar.entries.map((e) => [e.name, e.sha256]));
  if (sidecar.errors.length > 0 || listed.get(rdbName) !== item.sha256) {
    throw new InvalidSnapshotError(join(loc.dir, sidecarName), `does not list ${rdbName} with the sha256 of the copy pass (${item.sha256}): the archived event changed; not uploaded`);
  }

  // 1. The snapshot, hashed on the way out (as plaintext, before any encoding).
  const chain = encodingChain(target.remote.compression, target.remote.encryption);
  const hash = createSha256();
  let encodedSent: string | undefined;
  const rdbObject = await closeAfter(await fs.open(rdbPath, 'read-nofollow'), async (handle) => {
    const info = await handle.stat();
    if (info.size !== item.bytes) throw new InvalidSnapshotError(rdbPath, `is ${info.size} bytes, but ${item.bytes} were archived: it changed; not uploaded`);
    if (chain.length > 0) {
      const up = await uploadEncodedFile(target, rdbName, handle, info.size, item.sha256, ctx.callbacks, signal);
      encodedSent = up.plaintextSha256;
      return up.object;
    }
    const { etag } = await target.uploadFile(rdbName, handle, info.size, (chunk) => hash.update(chunk), ctx.callbacks, signal);
    return { name: rdbName, bytes: info.size, storedBytes: info.size, sha256: item.sha256, etag, encoding: [] } satisfies ManifestObject;
  });
  const sent = encodedSent ?? hash.digest('hex');
  if (sent !== item.sha256) {
    await target.delete(rdbObject.name, signal).catch(() => undefined);
    throw new InvalidSnapshotError(rdbPath, `its bytes (sha256 ${sent}) no longer match the copy pass (${item.sha256}): the archived file changed; not uploaded`);
  }

  // 2. nodes.conf, when the event has one (through the same encoding: it names the cluster's hosts).
  let nodesObject: ManifestObject | null = null;
  if (loc.kinds.includes('nodes')) {
    const data = await fs.readFile(join(loc.dir, nodesName));
    const sha = sha256Hex(data);
    if (listed.get(nodesName) !== sha) throw new InvalidSnapshotError(join(loc.dir, nodesName), `sha256 ${sha} is not the one in ${sidecarName}: not uploaded`);
    if (chain.length > 0) {
      nodesObject = await uploadEncodedSmall(target, nodesName, data, sha, signal);
    } else {
      const { etag } = await target.putSmall(nodesName, data, 'text/plain', signal);
      nodesObject = { name: nodesName, bytes: data.length, storedBytes: data.length, sha256: sha, etag, encoding: [] };
    }
  }

  // 3. The sidecar, byte for byte the local one.
  const { etag: sidecarEtag } = await target.putSmall(sidecarName, sidecarBytes, 'text/plain', signal);
  const sidecarObject: ManifestObject = { name: sidecarName, bytes: sidecarBytes.length, storedBytes: sidecarBytes.length, sha256: sha256Hex(sidecarBytes), etag: sidecarEtag, encoding: [] };

  // 4. What the server now holds, as it reports it.
  for (const obj of [rdbObject, nodesObject, sidecarObject]) {
    if (!obj) continue;
    const head = await target.head(obj.name, signal);
    const problem = !head ? 'is missing right after its upload'
      : head.bytes !== obj.storedBytes ? `is ${head.bytes} bytes at the server, ${obj.storedBytes} were sent`
      : obj.etag !== null && head.etag !== obj.etag ? `has ETag ${head.etag} at the server, the upload returned ${obj.etag}`
      : undefined;
    if (problem) throw new RemoteError('remote-integrity', target.remote.name, 'check', target.key(obj.name), problem);
  }

  // 5. The manifest, last: from now on the event is complete. A pulled snapshot's
  // server facts come from its archive record, so that the remote alone says which server wrote it.
  const server = await serverFactsOf(fs, loc.dir, loc);
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    ts: item.ts,
    instance: ctx.instanceName,
    host: hostname(),
    seq: seq ?? null,
    archivedAt: item.archivedAt,
    uploadedAt: new Date().toISOString(),
    rdbVersion: item.rdbVersion,
    redisVersion: item.redisVersion,
    ...(server ? { server } : {}),
    rdb: rdbObject,
    nodes: nodesObject,
    sidecar: sidecarObject,
  };
  const body = serializeManifest(manifest);
  await target.putSmall(remoteName('manifest', item.ts, seq), body, 'application/json', signal);
  return { outcome: 'uploaded', bytes: rdbObject.storedBytes + (nodesObject?.storedBytes ?? 0) + sidecarObject.storedBytes + body.length };
}
