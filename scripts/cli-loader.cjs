#!/usr/bin/env node
// dist/cli.cjs (the package's bin): starts the bundled CLI (dist/cli.bundle.cjs)
// from V8's code cache.
//
// Why: a cron run that finds nothing to do is mostly start-up, and compiling
// the ~800 KB bundle (commander, yaml, zod and our code) took longer than the
// run itself. `npm run build` runs the bundle once on the no-change path and
// saves V8's code cache of it, with the functions that run compiled, in
// dist/cli.bundle.cache; here the bundle is compiled from that cache instead
// (measured: about 60 ms less per run on the bench machine).
//
// Why CommonJS: an ES module as the entry point starts Node's ESM loader
// (and builds ESM facades of node:fs & co., which loads the streams), about
// 19 M instructions on every run (issue 11, callgrind). dist/cli.js, the
// entry point of old, imports this file.
//
// The cache is only an accelerator: when it is missing, made for another
// bundle (it holds a copy of the bundle it was made for), damaged (its
// header holds a checksum of V8's data) or refused by V8
// (another Node version or other V8 flags), the bundle is compiled from
// source as usual, with the same behaviour.
//
// Written by scripts/build.mjs from scripts/cli-loader.cjs; not TypeScript,
// because it must not be bundled or compiled itself.
'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { Script } = require('node:vm');

const bundlePath = join(__dirname, 'cli.bundle.cjs');
const cachePath = join(__dirname, 'cli.bundle.cache');
const bundle = readFileSync(bundlePath);

// The cache file: a header line with a checksum of V8's data, a copy of the
// bundle it was made for, then the data. V8 checks its own version, its
// flags and the length of the source, but neither the source nor the data:
// a cache made for another bundle of the same length ran that bundle's code,
// and a damaged cache crashed the process (test/integration/startup.test.ts).
// The bundle is compared byte for byte (native, instant); the data gets a
// checksum. (V8's --verify-snapshot-checksum would check the data too, but
// setting it needs node:v8, which costs more to load: ~12 ms against ~4 ms.)
//
// The checksum is FNV-1a over 32-bit little-endian words, then the 0-3 bytes
// left. A loop in JavaScript over the ~700 KB of data ran in V8's interpreter
// (~17 M instructions, a tenth of a no-change run's own cost); the same loop
// as a 93-byte WebAssembly function costs about 1 M. Without WebAssembly
// (node --jitless) the JavaScript loop gives the same value.
const FNV_BASIS = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
// (func (param $len i32) (result i32)): FNV-1a over the words of memory[0, len).
const FNV_WASM = 'AGFzbQEAAAABBgFgAX8BfwIIAQFtAW0CAAEDAgEABwUBAWYAAAo2ATQBAn9BxbvyiHghAgJAA0AgASAATw0BIAIgASgCAHNBk4OACGwhAiABQQRqIQEMAAsLIAIL';
function wordsChecksum(data, length) {
  if (typeof WebAssembly === 'object') {
    try {
      const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(length / 65536)) });
      new Uint8Array(memory.buffer).set(data.subarray(0, length));
      const { exports } = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(FNV_WASM, 'base64')), { m: { m: memory } });
      return exports.f(length);
    } catch {
      // fall back to the same loop in JavaScript
    }
  }
  const bytes = data.byteOffset % 4 === 0 ? data : Buffer.from(data); // Int32Array needs alignment
  const words = new Int32Array(bytes.buffer, bytes.byteOffset, length >>> 2);
  let h = FNV_BASIS;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i], FNV_PRIME);
  return h;
}
function checksum(data) {
  const length = data.length - (data.length % 4);
  let h = wordsChecksum(data, length);
  for (let i = length; i < data.length; i++) h = Math.imul(h ^ data[i], FNV_PRIME);
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

const bundleModule = { exports: {} };
script.runInThisContext()(bundleModule.exports, require, bundleModule, bundlePath, __dirname);
