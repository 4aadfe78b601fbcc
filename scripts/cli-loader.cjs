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
// bundle, damaged or refused by V8 (another Node version or other V8 flags),
// the bundle is compiled from source as usual, with the same behaviour.
//
// Written by scripts/build.mjs from scripts/cli-loader.cjs; not TypeScript,
// because it must not be bundled or compiled itself.
'use strict';
const { closeSync, fstatSync, openSync, readSync, writeFileSync } = require('node:fs');
const { join } = require('node:path');
const { Script } = require('node:vm');

const bundlePath = join(__dirname, 'cli.bundle.cjs');
const cachePath = join(__dirname, 'cli.bundle.cache');

// The cache file: a 64-byte header line, then V8's data. The header holds a
// checksum and the length of the bundle the cache was made for, and a
// checksum of the data. V8 checks its own version, its flags and the length
// of the source, but neither the source nor the data: a cache made for
// another bundle of the same length ran that bundle's code, and a damaged
// cache crashed the process (test/integration/startup.test.ts).
//
// The checksum is FNV-1a over 32-bit little-endian words, then the 0-3 bytes
// left. It runs as a 94-byte WebAssembly function over the files read
// straight into the WebAssembly memory: a JavaScript loop ran in V8's
// interpreter (~17 M instructions), and every copy of a buffer costs its
// page faults (on the bench VM about 8 ms per 700 KB touched for the first
// time). Without WebAssembly (node --jitless) the same checksum in JavaScript
// over ordinary buffers.
const HEADER_LENGTH = 64;
const HEADER = /^rdb-archiver code cache 2 ([0-9a-f]{8}) (\d+) ([0-9a-f]{8}) *\n$/;
const FNV_BASIS = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
// (func (param $at i32) (param $end i32) (result i32)): FNV-1a over the words of memory[at, end).
const FNV_WASM = 'AGFzbQEAAAABBwFgAn9/AX8CCAEBbQFtAgABAwIBAAcFAQFmAAAKNgE0AQF/QcW78oh4IQICQANAIAAgAU8NASACIAAoAABzQZODgAhsIQIgAEEEaiEADAALCyACCw==';

/** Room for `size` bytes: { bytes, words(at, end) }, in WebAssembly memory when there is WebAssembly. */
function workspace(size) {
  if (typeof WebAssembly === 'object') {
    try {
      const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil(size / 65536)) });
      const { exports: wasm } = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(FNV_WASM, 'base64')), { m: { m: memory } });
      return { bytes: Buffer.from(memory.buffer, 0, size), words: (at, end) => wasm.f(at, end) };
    } catch {
      // the same in JavaScript
    }
  }
  const bytes = Buffer.allocUnsafeSlow(size); // its own ArrayBuffer: offset 0, aligned for Int32Array
  const words = (at, end) => {
    const view = new Int32Array(bytes.buffer, at, (end - at) >>> 2);
    let h = FNV_BASIS;
    for (let i = 0; i < view.length; i++) h = Math.imul(h ^ view[i], FNV_PRIME);
    return h;
  };
  return { bytes, words };
}

/** The checksum of space.bytes[at, at + length); `at` is a multiple of 4. */
function checksum(space, at, length) {
  const end = at + length - (length % 4);
  let h = space.words(at, end);
  for (let i = end; i < at + length; i++) h = Math.imul(h ^ space.bytes[i], FNV_PRIME);
  return (h >>> 0).toString(16).padStart(8, '0');
}

function headerFor(bundleSum, bundleLength, dataSum) {
  const line = `rdb-archiver code cache 2 ${bundleSum} ${bundleLength} ${dataSum}`;
  return Buffer.from(`${line.padEnd(HEADER_LENGTH - 1)}\n`);
}

/** Reads the open file whole into space.bytes at `at`; returns the bytes read. */
function readInto(fd, space, at, size) {
  let done = 0;
  while (done < size) {
    const n = readSync(fd, space.bytes, at + done, size - done, done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

const bundleFd = openSync(bundlePath, 'r');
let cacheFd;
try {
  cacheFd = openSync(cachePath, 'r');
} catch {
  // no cache: compile from source
}
const bundleSize = fstatSync(bundleFd).size;
const cacheSize = cacheFd === undefined ? 0 : fstatSync(cacheFd).size;
const cacheAt = Math.ceil(bundleSize / 8) * 8; // V8 takes its data in place when it is 8-byte aligned
const space = workspace(cacheAt + cacheSize);
const bundleLength = readInto(bundleFd, space, 0, bundleSize);
closeSync(bundleFd);

let cachedData;
let cacheState = 'not used: no cache file';
if (cacheFd !== undefined) {
  const cacheLength = readInto(cacheFd, space, cacheAt, cacheSize);
  closeSync(cacheFd);
  const header = HEADER.exec(space.bytes.toString('latin1', cacheAt, cacheAt + Math.min(cacheLength, HEADER_LENGTH)));
  const dataAt = cacheAt + HEADER_LENGTH;
  if (header && cacheLength > HEADER_LENGTH && Number(header[2]) === bundleLength
    && header[1] === checksum(space, 0, bundleLength) && header[3] === checksum(space, dataAt, cacheLength - HEADER_LENGTH)) {
    cachedData = space.bytes.subarray(dataAt, cacheAt + cacheLength);
  } else {
    cacheState = 'not used: made for another bundle, or damaged';
  }
}

// The bundle is one function expression, the wrapper Node puts around a
// CommonJS module, in strict mode like the ES modules the sources are written
// as (scripts/build.mjs writes it so: no second copy of 800 KB to make here).
const script = new Script(space.bytes.toString('utf8', 0, bundleLength), {
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
    const sums = workspace(data.length);
    data.copy(sums.bytes);
    writeFileSync(writeCacheTo, Buffer.concat([headerFor(checksum(space, 0, bundleLength), bundleLength, checksum(sums, 0, data.length)), data]));
  });
}

const bundleModule = { exports: {} };
script.runInThisContext()(bundleModule.exports, require, bundleModule, bundlePath, __dirname);
