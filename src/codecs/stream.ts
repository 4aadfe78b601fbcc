/**
 * The encoding chain as one streaming pass: plaintext chunks in, stored
 * chunks out (compress, then encrypt), and back (decrypt, then decompress).
 * Each stage pulls from the one before, so memory is bounded by the stages'
 * own buffers (zstd's window, age's 64 KiB chunks), never by the snapshot.
 */
import type { Transform } from 'node:stream';
import { Readable, pipeline } from 'node:stream';
import type { Compression, Encryption } from './encoding.js';
import { KNOWN_ENCODINGS, isEncrypted } from './encoding.js';
import { createCompressor, createDecompressor } from './compress.js';
import { decryptAge, encryptAge } from './age.js';

/** Runs `source` through a Node Transform; an error on either side ends the iteration with it. */
export async function* throughTransform(source: AsyncIterable<Uint8Array>, transform: Transform): AsyncGenerator<Uint8Array> {
  const input = Readable.from(source, { objectMode: false });
  pipeline(input, transform, () => undefined); // errors reach the iteration below through `transform`
  try {
    for await (const chunk of transform) yield chunk as Uint8Array;
  } finally {
    input.destroy();
    transform.destroy();
  }
}

/** Calls `fn` with every chunk as it passes (hashing, counting). */
export async function* tap(source: AsyncIterable<Uint8Array>, fn: (chunk: Uint8Array) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    fn(chunk);
    yield chunk;
  }
}

/** Plaintext -> what is stored: compressed with `compression`, then encrypted when `encryption` is set. */
export function encodeStream(source: AsyncIterable<Uint8Array>, compression: Compression, encryption: Encryption | undefined): AsyncIterable<Uint8Array> {
  let out = source;
  if (compression.algorithm !== 'none') out = throughTransform(out, createCompressor(compression));
  if (encryption) out = encryptAge(encryption.recipients, out);
  return out;
}

/**
 * What is stored -> plaintext, undoing `chain` (as the manifest records it)
 * in reverse. `identities` are needed when the chain holds age.
 */
export function decodeStream(source: AsyncIterable<Uint8Array>, chain: readonly string[], identities: readonly string[] | undefined): AsyncIterable<Uint8Array> {
  let out = source;
  for (const step of [...chain].reverse()) {
    if (!(KNOWN_ENCODINGS as readonly string[]).includes(step)) throw new Error(`encoding ${step} is not supported by this version of rdb-archiver`);
    if (step === 'age') {
      if (!identities || identities.length === 0) throw new Error('encrypted: an age identity is needed');
      out = decryptAge(identities, out);
    } else {
      out = throughTransform(out, createDecompressor(step as 'gzip' | 'zstd'));
    }
  }
  return out;
}

export { isEncrypted };
