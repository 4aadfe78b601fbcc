#!/usr/bin/env node
// dist/cli.js: starts the bundled CLI (dist/cli.bundle.cjs) from V8's code cache.
//
// Why: a cron run that finds nothing to do is mostly start-up, and compiling
// the ~420 KB bundle (commander, yaml, zod and our code) took longer than the
// run itself. `npm run build` runs the bundle once on the no-change path and
// saves V8's code cache of it, with the functions that run compiled, in
// dist/cli.bundle.cache; here the bundle is compiled from that cache instead
// (measured: about 60 ms less per run on the bench machine).
//
// The cache is only an accelerator: when it is missing, made for another
// bundle (it holds a copy of the bundle it was made for), damaged (its
// header holds a checksum of V8's data) or refused by V8
// (another Node version or other V8 flags), the bundle is compiled from
// source as usual, with the same behaviour.
//
// Written by scripts/build.mjs from scripts/cli-loader.mjs; not TypeScript,
// because it must not be bundled or compiled itself.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

const bundlePath = fileURLToPath(new URL('cli.bundle.cjs', import.meta.url));
const cachePath = fileURLToPath(new URL('cli.bundle.cache', import.meta.url));
const bundle = readFileSync(bundlePath);

// The cache file: a header line with a checksum of V8's data, a copy of the
// bundle it was made for, then the data. V8 checks its own version, its
// flags and the length of the source, but neither the source nor the data:
// a cache made for another bundle of the same length ran that bundle's code,
// and a damaged cache crashed the process (test/integration/startup.test.ts).
// The bundle is compared byte for byte (native, instant); the data gets a
// checksum. (V8's --verify-snapshot-checksum would check the data too, but
// setting it needs node:v8, which costs more to load: ~12 ms against ~4 ms.)
function checksum(data) {
  const bytes = data.byteOffset % 4 === 0 ? data : Buffer.from(data); // Int32Array needs alignment
  const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
  let h = 0x811c9dc5 | 0; // FNV-1a over 32-bit words: enough to notice accidental damage
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i], 0x01000193);
  for (let i = words.length * 4; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}
const HEADER_PREFIX = 'rdb-archiver code cache ';
const HEADER_LENGTH = HEADER_PREFIX.length + 8 + 1;
const headerFor = (data) => Buffer.from(`${HEADER_PREFIX}${checksum(data)}\n`);

let cachedData;
let cacheState = 'not used: no cache file';
try {
  const cache = readFileSync(cachePath);
  const dataStart = HEADER_LENGTH + bundle.length;
  const data = cache.subarray(dataStart);
  if (cache.length > dataStart && cache.subarray(HEADER_LENGTH, dataStart).equals(bundle) && cache.subarray(0, HEADER_LENGTH).equals(headerFor(data))) {
    cachedData = data;
  } else {
    cacheState = 'not used: made for another bundle, or damaged';
  }
} catch {
  // no cache: compile from source
}

// The wrapper Node puts around a CommonJS module, in strict mode like the ES
// modules the sources are written as (the bundle's own "use strict" comes
// after its banner, where it is not a directive).
const script = new Script(`(function (exports, require, module, __filename, __dirname) {'use strict';${bundle.toString('utf8')}\n})`, {
  filename: bundlePath,
  cachedData,
});
if (cachedData) cacheState = script.cachedDataRejected ? 'rejected by V8 (made by another Node version or with other V8 flags)' : 'used';
// For diagnosing a slow start-up (and for the tests): say what became of the cache.
if (process.env.RDB_ARCHIVER_DEBUG_CODE_CACHE) process.stderr.write(`rdb-archiver: code cache ${cacheState}\n`);

// Used by scripts/build.mjs only: save the cache after a real run, so that it
// holds the functions that run compiled, not just the top level.
const writeCacheTo = process.env.RDB_ARCHIVER_WRITE_CODE_CACHE;
if (writeCacheTo) {
  process.once('exit', () => {
    const data = script.createCachedData();
    writeFileSync(writeCacheTo, Buffer.concat([headerFor(data), bundle, data]));
  });
}

const module = { exports: {} };
script.runInThisContext()(module.exports, createRequire(bundlePath), module, bundlePath, fileURLToPath(new URL('.', import.meta.url)));
