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
// The cache is only an accelerator: when it is missing, written for another
// build of the bundle (its first line holds the build id, and so must the
// cache's header), damaged or refused by V8 (another Node version or V8
// flags), the bundle is compiled from source as usual, with the same
// behaviour.
//
// Written by scripts/build.mjs from scripts/cli-loader.mjs; not TypeScript,
// because it must not be bundled or compiled itself.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

const bundlePath = fileURLToPath(new URL('cli.bundle.cjs', import.meta.url));
const cachePath = fileURLToPath(new URL('cli.bundle.cache', import.meta.url));
const source = readFileSync(bundlePath, 'utf8');
const buildId = source.slice(0, source.indexOf('\n'));

// The cache file: the bundle's build id on one line, a checksum of V8's data
// on the next, then the data. V8 checks its own version, its flags and the
// length of the source, but not the data: a damaged cache crashed the process
// (found by test/integration/startup.test.ts). V8 can check a checksum of its
// own (--verify-snapshot-checksum), but setting that flag needs node:v8, whose
// load cost more than this loop (measured: ~12 ms against ~3 ms).
function checksum(data) {
  const bytes = data.byteOffset % 4 === 0 ? data : Buffer.from(data); // Int32Array needs alignment
  const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
  let h = 0x811c9dc5 | 0; // FNV-1a over 32-bit words: enough to notice accidental damage
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i], 0x01000193);
  for (let i = words.length * 4; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}
const headerFor = (data) => Buffer.from(`${buildId}\n${checksum(data)}\n`);
const HEADER_LENGTH = Buffer.byteLength(buildId) + 1 + 8 + 1;

let cachedData;
try {
  const cache = readFileSync(cachePath);
  const data = cache.subarray(HEADER_LENGTH);
  if (cache.subarray(0, HEADER_LENGTH).equals(headerFor(data))) cachedData = data;
} catch {
  // no cache: compile from source
}

// The wrapper Node puts around a CommonJS module, in strict mode like the ES
// modules the sources are written as (the bundle's own "use strict" comes
// after its first line, where it is not a directive).
const script = new Script(`(function (exports, require, module, __filename, __dirname) {'use strict';${source}\n})`, {
  filename: bundlePath,
  cachedData,
});

// Used by scripts/build.mjs only: save the cache after a real run, so that it
// holds the functions that run compiled, not just the top level.
const writeCacheTo = process.env.RDB_ARCHIVER_WRITE_CODE_CACHE;
if (writeCacheTo) {
  process.once('exit', () => {
    const data = script.createCachedData();
    writeFileSync(writeCacheTo, Buffer.concat([headerFor(data), data]));
  });
}

const module = { exports: {} };
script.runInThisContext()(module.exports, createRequire(bundlePath), module, bundlePath, fileURLToPath(new URL('.', import.meta.url)));
