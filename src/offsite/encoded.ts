/**
 * Uploads of encoded objects (compressed and/or encrypted, src/codecs/): the
 * archived file is read once, hashed as plaintext on the way (the sha256 the
 * copy pass recorded must come out again), compressed, encrypted and sent in
 * multipart parts as the bytes come, with the stored bytes hashed too. Memory
 * is bounded by the parts in flight and the codecs' own buffers.
 */
import type { Handle } from '../core/fs.js';
import { createSha256 } from '../core/sha256.js';
import { encodedName, encodingChain } from '../codecs/encoding.js';
import { encodeStream, tap } from '../codecs/stream.js';
import type { ManifestObject } from '../targets/manifest.js';
import type { S3Target, UploadCallbacks } from '../targets/s3.js';

/** Read size of the archived file: large enough for few system calls, small against a part. */
const READ_CHUNK = 1024 * 1024;

/** The file's bytes [0, size) in order; fails when the file ends early (it changed). */
export async function* readChunks(file: Handle, size: number): AsyncGenerator<Uint8Array> {
  let offset = 0;
  while (offset < size) {
    const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK, size - offset));
    let filled = 0;
    while (filled < buffer.length) {
      const n = await file.read(buffer, filled, buffer.length - filled, offset + filled);
      if (n === 0) throw new Error(`the file ended at ${offset + filled} bytes, before the ${size} expected: it changed while uploading`);
      filled += n;
    }
    offset += filled;
    yield buffer;
  }
}

/**
 * At most how many bytes encoding `size` bytes yields: zstd's worst case
 * adds 1/256 of the input (ZSTD_compressBound), deflate less, age 16 bytes
 * per 64 KiB chunk plus a header; 1/128 and 1 MiB cover all of them.
 */
export function encodedSizeBound(size: number): number {
  return size + Math.ceil(size / 128) + 1024 * 1024;
}

export interface EncodedUpload {
  object: ManifestObject;
  /** sha256 of the plaintext as read during the upload (the caller compares it with the copy pass's). */
  plaintextSha256: string;
}

/**
 * Streams `size` bytes of `file` through the remote's encoding chain to
 * `<name><suffixes>`. The manifest object records the plaintext's size and
 * the copy pass's sha256 (`expectedSha256`), the stored size and digest.
 */
export async function uploadEncodedFile(target: S3Target, name: string, file: Handle, size: number, expectedSha256: string, callbacks?: UploadCallbacks, signal?: AbortSignal): Promise<EncodedUpload> {
  const { compression, encryption } = target.remote;
  const encoding = encodingChain(compression, encryption);
  const storedName = encodedName(name, encoding);
  const plain = createSha256();
  const stored = createSha256();
  const source = encodeStream(tap(readChunks(file, size), (c) => plain.update(c)), compression, encryption);
  const { etag, bytes } = await target.uploadStream(storedName, source, encodedSizeBound(size), (c) => stored.update(c), callbacks, signal);
  return {
    object: { name: storedName, bytes: size, sha256: expectedSha256, storedBytes: bytes, etag, encoding, storedSha256: stored.digest('hex') },
    plaintextSha256: plain.digest('hex'),
  };
}

/** A small object (nodes.conf) through the same chain, whole in memory. */
export async function uploadEncodedSmall(target: S3Target, name: string, data: Buffer, sha256: string, signal?: AbortSignal): Promise<ManifestObject> {
  const { compression, encryption } = target.remote;
  const encoding = encodingChain(compression, encryption);
  const storedName = encodedName(name, encoding);
  const chunks: Uint8Array[] = [];
  for await (const chunk of encodeStream((async function* () { yield data; })(), compression, encryption)) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  const { etag } = await target.putSmall(storedName, body, 'application/octet-stream', signal);
  return { name: storedName, bytes: data.length, sha256, storedBytes: body.length, etag, encoding, storedSha256: createSha256().update(body).digest('hex') };
}
