/**
 * Reading a remote object back, for `verify --read-data` and `restore --from`:
 * one streaming pass that hashes the stored bytes, undoes the encoding chain
 * the manifest records (decrypt, then decompress), hashes the plaintext,
 * runs the RDB check over it, and hands it to a writer. Each object is read
 * by its own manifest entry, so events of different encodings mix freely.
 *
 * Without an identity an encrypted object can only be checked as stored
 * bytes (size and sha256 against the manifest): the result says so.
 */
import { IdentityError, InvalidSnapshotError, RemoteError } from '../core/errors.js';
import { createSha256 } from '../core/sha256.js';
import { AgeDecryptError } from '../codecs/age.js';
import { isEncrypted } from '../codecs/encoding.js';
import { decodeStream, tap } from '../codecs/stream.js';
import { RdbValidator } from '../rdb/validate.js';
import type { ManifestObject } from '../targets/manifest.js';
import type { S3Target } from '../targets/s3.js';

export interface ObjectRead {
  storedBytes: number;
  storedSha256: string;
  /** false: encrypted and no identity given; only the stored bytes were checked. */
  contentChecked: boolean;
  bytes: number;
  sha256: string | null;
  rdb?: ReturnType<RdbValidator['finish']>;
}

export interface ReadOptions {
  /** age identities; without them an encrypted object is checked as stored bytes only. */
  identities?: readonly string[];
  /** Run the RDB check over the plaintext (the .rdb). */
  validate: boolean;
  /** Receives the plaintext in order, in batches; its first call comes after the first bytes are authenticated. */
  write?: (chunk: Uint8Array) => Promise<void>;
  /** With `write`: an encrypted object without identities is an IdentityError instead of a stored-bytes check. */
  requireContent?: boolean;
}

const BATCH = 4 * 1024 * 1024;

/** Gathers small chunks (age yields 64 KiB) into larger batches for the RDB check and the writer. */
async function* batches(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let parts: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of source) {
    parts.push(chunk);
    size += chunk.length;
    if (size >= BATCH) {
      yield Buffer.concat(parts, size);
      parts = [];
      size = 0;
    }
  }
  if (size > 0) yield Buffer.concat(parts, size);
}

/** A decoding failure as the typed error the commands report: a wrong key (67) or damaged data (65). */
export function decodeError(target: S3Target, obj: ManifestObject, err: unknown): unknown {
  if (err instanceof RemoteError || err instanceof IdentityError || err instanceof InvalidSnapshotError) return err;
  const where = `${target.location}${obj.name}`;
  if (err instanceof AgeDecryptError) {
    return err.reason === 'no-identity-matched' ? new IdentityError(where, err.message) : new InvalidSnapshotError(where, err.message);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new InvalidSnapshotError(where, `cannot be decoded (${obj.encoding.join(' + ')}): ${message}`);
}

export async function readObject(target: S3Target, obj: ManifestObject, options: ReadOptions): Promise<ObjectRead> {
  const encrypted = isEncrypted(obj.encoding);
  const haveKey = (options.identities?.length ?? 0) > 0;
  if (encrypted && !haveKey && options.requireContent) {
    throw new IdentityError(`${target.location}${obj.name}`, 'is encrypted (age): give the identity file with --identity FILE or RDB_ARCHIVER_AGE_IDENTITY_FILE');
  }
  const storedHash = createSha256();
  let storedBytes = 0;
  // Past the manifest's sizes nothing can match any more: stop there, before a lying manifest or
  // a decompression bomb fills the restore's disk (or memory, for a nodes file).
  const tooLong = (what: string, got: number, said: number) =>
    new InvalidSnapshotError(`${target.location}${obj.name}`, `${what} go on past the ${said} bytes the manifest says (${got} read): stopped there`);
  const stored = tap(target.downloadChunks(obj.name), (c) => {
    storedHash.update(c);
    storedBytes += c.length;
    if (storedBytes > obj.storedBytes) throw tooLong('the stored bytes', storedBytes, obj.storedBytes);
  });
  if (encrypted && !haveKey) {
    for await (const _ of stored) { /* hashed by the tap */ }
    return { storedBytes, storedSha256: storedHash.digest('hex'), contentChecked: false, bytes: 0, sha256: null };
  }
  const hash = createSha256();
  const validator = options.validate ? new RdbValidator(`${target.location}${obj.name}`) : undefined;
  let bytes = 0;
  try {
    for await (const batch of batches(decodeStream(stored, obj.encoding, options.identities))) {
      bytes += batch.length;
      if (bytes > obj.bytes) throw tooLong('the decoded bytes', bytes, obj.bytes);
      hash.update(batch);
      validator?.update(batch);
      if (validator?.earlyError) throw validator.earlyError;
      await options.write?.(batch);
    }
  } catch (err) {
    // End the download: a decoder that failed (a wrong key, damage) may leave it suspended, and its
    // request and timer would keep the process alive until the remote's timeout.
    await stored.return(undefined).catch(() => undefined);
    throw decodeError(target, obj, err);
  }
  return {
    storedBytes, storedSha256: storedHash.digest('hex'), contentChecked: true, bytes, sha256: hash.digest('hex'),
    ...(validator ? { rdb: validator.finish() } : {}),
  };
}

/** What differs between a read and its manifest entry; [] when it matches. */
export function readProblems(obj: ManifestObject, got: ObjectRead): string[] {
  const problems: string[] = [];
  if (got.storedBytes !== obj.storedBytes) problems.push(`${obj.name}: ${got.storedBytes} bytes downloaded, the manifest says ${obj.storedBytes}`);
  const storedSha = obj.storedSha256 ?? (obj.encoding.length === 0 ? obj.sha256 : undefined);
  if (storedSha !== undefined && got.storedSha256 !== storedSha) problems.push(`${obj.name}: stored bytes have sha256 ${got.storedSha256}, the manifest says ${storedSha}`);
  if (got.contentChecked) {
    if (got.bytes !== obj.bytes) problems.push(`${obj.name}: ${got.bytes} bytes after decoding, the manifest says ${obj.bytes}`);
    if (got.sha256 !== obj.sha256) problems.push(`${obj.name}: sha256 ${got.sha256}, the manifest says ${obj.sha256}`);
  }
  return problems;
}
