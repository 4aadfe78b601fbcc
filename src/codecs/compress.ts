/**
 * Streaming compressors: gzip from node:zlib; zstd from node:zlib where this
 * Node has it (22.15 and later), else from the zstd-napi module.
 *
 * Why zstd-napi for Node 20: it exposes zstd's streaming API (a Transform
 * over ZSTD_compressStream2 / ZSTD_decompressStream), so memory stays bounded
 * by zstd's window whatever the snapshot size; it is a Node-API addon (one
 * build serves every Node version); and it carries zstd's C sources, so
 * `npm ci` builds it with node-gyp where its prebuilt download is not
 * reachable. WASM ports were the alternative: those on the registry either
 * compress whole buffers only or need the decompressed size up front.
 *
 * Both are loaded on first use only: a run that uploads nothing never loads
 * either (and gzip's zlib is in Node itself).
 */
import { createRequire } from 'node:module';
import type { Transform } from 'node:stream';
import type * as ZlibModule from 'node:zlib';
import { CodecUnavailableError } from '../core/errors.js';
import type { Compression } from './encoding.js';

const requireHere = createRequire(import.meta.url);

let zlib: typeof ZlibModule | undefined;
function loadZlib(): typeof ZlibModule {
  zlib ??= requireHere('node:zlib') as typeof ZlibModule;
  return zlib;
}

/** node:zlib's zstd (Node >= 22.15 / 23.8); @types/node 20 does not declare it. */
interface ZlibZstd {
  createZstdCompress(options?: { params?: Record<number, number> }): Transform;
  createZstdDecompress(): Transform;
  constants: { ZSTD_c_compressionLevel: number };
}

type ZstdNapi = { CompressStream: new (params?: { compressionLevel?: number }) => Transform; DecompressStream: new () => Transform };

/** Where zstd comes from on this Node: 'zlib', 'zstd-napi', or why it is missing. */
export function zstdProvider(): { kind: 'zlib' | 'zstd-napi' } | { kind: 'missing'; reason: string } {
  const z = loadZlib() as unknown as Partial<ZlibZstd>;
  if (typeof z.createZstdCompress === 'function' && typeof z.createZstdDecompress === 'function') return { kind: 'zlib' };
  try {
    requireHere.resolve('zstd-napi');
  } catch {
    return { kind: 'missing', reason: `this Node (${process.version}) has no zstd in node:zlib (Node 22.15 and later have it) and the zstd-napi module is not installed (npm ci builds it; it needs python3, make and g++)` };
  }
  return { kind: 'zstd-napi' };
}

function loadZstdNapi(): ZstdNapi {
  try {
    return requireHere('zstd-napi') as ZstdNapi;
  } catch (err) {
    throw new CodecUnavailableError('zstd', `the zstd-napi module cannot be loaded on ${process.version} (${(err as Error).message.split('\n')[0]}): reinstall rdb-archiver (npm ci builds it), use Node 22.15 or later, or set compression: gzip`);
  }
}

function zstdOrThrow(): { kind: 'zlib'; z: ZlibZstd } | { kind: 'zstd-napi'; m: ZstdNapi } {
  const provider = zstdProvider();
  if (provider.kind === 'missing') throw new CodecUnavailableError('zstd', `${provider.reason}; or set compression: gzip`);
  if (provider.kind === 'zlib') return { kind: 'zlib', z: loadZlib() as unknown as ZlibZstd };
  return { kind: 'zstd-napi', m: loadZstdNapi() };
}

/** A Transform that compresses with `c` (never called for 'none'). */
export function createCompressor(c: Exclude<Compression, { algorithm: 'none' }>): Transform {
  if (c.algorithm === 'gzip') return loadZlib().createGzip({ level: c.level });
  const zstd = zstdOrThrow();
  if (zstd.kind === 'zlib') return zstd.z.createZstdCompress({ params: { [zstd.z.constants.ZSTD_c_compressionLevel]: c.level } });
  return new zstd.m.CompressStream({ compressionLevel: c.level });
}

/** A Transform that undoes `algorithm`; it fails on damaged input and on input that ends early. */
export function createDecompressor(algorithm: 'gzip' | 'zstd'): Transform {
  if (algorithm === 'gzip') return loadZlib().createGunzip();
  const zstd = zstdOrThrow();
  if (zstd.kind === 'zlib') return zstd.z.createZstdDecompress();
  return new zstd.m.DecompressStream();
}
