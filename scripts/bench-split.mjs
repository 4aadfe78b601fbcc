// Which split of the work wins on this machine's cores (issue 15), measured
// outside the CLI so that only the split differs:
//
//   node scripts/bench-split.mjs FILE [runs]
//
//   main      the kernel copy (fs.copyFile, copy_file_range) in a thread-pool
//             thread; sha256 and CRC-64 both on the main thread (what `once` does)
//   crc-thread  the same copy; sha256 on the main thread, CRC-64 in a worker
//             thread over shared buffers (each chunk is read once into a
//             SharedArrayBuffer, hashed here and CRC'd there, then reused)
//   serial    the copy first, then sha256 + CRC-64 (no overlap: the baseline)
//
// Each mode copies FILE (in the page cache) to FILE.split-copy, fsyncs it, and
// prints the median wall time and the process's user/system CPU time (all its
// threads). SPLIT_FSYNC=0 leaves out the fsync of the copy: the CPU-bound part
// alone, where the split can matter (a loaded disk's write-back hides it).
import { closeSync, constants, openSync, readSync, rmSync } from 'node:fs';
import { copyFile, open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const file = process.argv[2];
const runs = Number(process.argv[3] ?? 5);
if (!file) {
  console.error('usage: node scripts/bench-split.mjs FILE [runs]');
  process.exit(2);
}
const { Crc64 } = await import(pathToFileURL(join(ROOT, 'dist', 'rdb', 'crc64.js')).href);
const CHUNK = 8 * 1024 * 1024;
const dst = `${file}.split-copy`;

function warm() {
  const fd = openSync(file, 'r');
  const b = Buffer.allocUnsafe(CHUNK);
  for (let p = 0; ; ) {
    const n = readSync(fd, b, 0, CHUNK, p);
    if (n === 0) break;
    p += n;
  }
  closeSync(fd);
}

async function kernelCopy() {
  rmSync(dst, { force: true });
  await copyFile(file, dst, constants.COPYFILE_EXCL);
  if (process.env.SPLIT_FSYNC === '0') return;
  const h = await open(dst, 'r');
  await h.sync();
  await h.close();
}

async function hashMain() {
  const h = await open(file, 'r');
  const bufs = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
  const sha = createHash('sha256');
  const crc = new Crc64();
  let pos = 0;
  let which = 0;
  let reading = h.read(bufs[0], 0, CHUNK, 0);
  for (;;) {
    const { bytesRead: n } = await reading;
    if (n === 0) break;
    const chunk = bufs[which].subarray(0, n);
    pos += n;
    which ^= 1;
    reading = h.read(bufs[which], 0, CHUNK, pos);
    sha.update(chunk);
    crc.update(chunk);
  }
  await h.close();
  return [sha.digest('hex'), crc.hex()];
}

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.crcModule).then(({ Crc64 }) => {
  const crc = new Crc64();
  const bufs = workerData.sabs.map((s) => new Uint8Array(s));
  parentPort.on('message', (m) => {
    if (m.done) return parentPort.postMessage({ crc: crc.hex() });
    crc.update(bufs[m.i], 0, m.n);
    parentPort.postMessage({ i: m.i });
  });
  parentPort.postMessage({ ready: true });
});`;

async function hashSplit() {
  const SLOTS = 3;
  const sabs = Array.from({ length: SLOTS }, () => new SharedArrayBuffer(CHUNK));
  const worker = new Worker(WORKER, { eval: true, workerData: { sabs, crcModule: pathToFileURL(join(ROOT, 'dist', 'rdb', 'crc64.js')).href } });
  const waiters = new Map();
  let ready;
  const readyP = new Promise((r) => (ready = r));
  let final;
  const finalP = new Promise((r) => (final = r));
  worker.on('message', (m) => {
    if (m.ready) ready();
    else if (m.crc) final(m.crc);
    else waiters.get(m.i)?.();
  });
  await readyP;
  const h = await open(file, 'r');
  const views = sabs.map((s) => Buffer.from(s));
  const busy = Array(SLOTS).fill(Promise.resolve());
  const sha = createHash('sha256');
  let pos = 0;
  for (let k = 0; ; k++) {
    const i = k % SLOTS;
    await busy[i];
    const { bytesRead: n } = await h.read(views[i], 0, CHUNK, pos);
    if (n === 0) break;
    pos += n;
    busy[i] = new Promise((r) => waiters.set(i, r));
    worker.postMessage({ i, n });
    sha.update(views[i].subarray(0, n));
  }
  await Promise.all(busy);
  worker.postMessage({ done: true });
  const crc = await finalP;
  await h.close();
  await worker.terminate();
  return [sha.digest('hex'), crc];
}

const modes = {
  main: async () => (await Promise.all([kernelCopy(), hashMain()]))[1],
  'crc-thread': async () => (await Promise.all([kernelCopy(), hashSplit()]))[1],
  serial: async () => {
    await kernelCopy();
    return hashMain();
  },
};

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const results = {};
for (let r = 0; r < runs; r++) {
  for (const [name, fn] of Object.entries(modes)) {
    warm();
    const u0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const out = await fn();
    const wall = Number(process.hrtime.bigint() - t0) / 1e6;
    const u = process.cpuUsage(u0);
    (results[name] ??= []).push({ wall, user: u.user / 1000, sys: u.system / 1000, out: out.join(' ') });
  }
}
rmSync(dst, { force: true });
const digests = new Set(Object.values(results).flat().map((x) => x.out));
if (digests.size !== 1) throw new Error(`the modes disagree: ${[...digests].join(' / ')}`);
for (const [name, xs] of Object.entries(results)) {
  console.log(`${name.padEnd(10)} wall ${median(xs.map((x) => x.wall)).toFixed(0)} ms  user ${median(xs.map((x) => x.user)).toFixed(0)} ms  sys ${median(xs.map((x) => x.sys)).toFixed(0)} ms  (runs: ${xs.map((x) => x.wall.toFixed(0)).join(', ')})`);
}
