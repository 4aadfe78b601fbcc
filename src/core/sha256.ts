/**
 * sha256, the checksum of the .sha256 sidecars, with node:crypto loaded on
 * first use. A run that finds nothing to do never hashes, and loading
 * node:crypto (about 20 internal modules, streams included) was a visible
 * part of such a run's start-up.
 */
import type { Hash } from 'node:crypto';
import { createRequire } from 'node:module';

let nodeCrypto: typeof import('node:crypto') | undefined; // not `crypto`: that is the Web Crypto global

/** A streaming sha256: update() it chunk by chunk, then digest('hex'). */
export function createSha256(): Hash {
  nodeCrypto ??= createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
  return nodeCrypto.createHash('sha256');
}

/** The sha256 of a buffer, as lowercase hex (the sidecar format). */
export function sha256Hex(data: Uint8Array): string {
  return createSha256().update(data).digest('hex');
}
