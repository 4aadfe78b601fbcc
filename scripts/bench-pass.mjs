// The read pass alone (dist/pipeline/worker.js copyPass: read, sha256 and RDB
// validation, no output), in this process, with the validation thread and
// without it, interleaved; for issue 15's "which split wins on 2 cores".
//
//   node scripts/bench-pass.mjs FILE [runs] [full|crc]
//
// Also times the parts alone over the file in the page cache, one thread
// each: sha256, validation crc (header + CRC-64) and validation full
// (header + CRC-64 + walk); and the other split, simulated: sha256 and CRC-64
// on the main thread, the walk alone in a worker thread over the same shared
// buffers (the main thread's CRC copies each chunk into its WebAssembly
// memory there, 64 KiB at a time, which the real thread split avoids).
// Prints one JSON line per measurement, with the median wall time and the
// process CPU time (user + system, all threads) per run.
import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const [file, runsArg = '5', validation = 'full'] = process.argv.slice(2);
if (!file) {
  console.error('usage: node scripts/bench-pass.mjs FILE [runs] [full|crc]');
  process.exit(2);
}
const runs = Number(runsArg);
const dist = (p) => import(pathToFileURL(join(ROOT, 'dist', p)).href);
const { copyPass, COPY_CHUNK_BYTES } = await dist('pipeline/worker.js');
const { validateRdbFile } = await dist('rdb/validate.js');
const { THREAD_ENV } = await dist('rdb/validate-thread.js');

async function timed(fn) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const c = process.cpuUsage(c0);
  return { ms, cpuMs: (c.user + c.system) / 1000, userMs: c.user / 1000, sysMs: c.system / 1000 };
}

async function pass(mode) {
  process.env[THREAD_ENV] = mode;
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const source = { read: (b, o, l, p) => fh.read(b, o, l, p).then((r) => r.bytesRead) };
    return await copyPass(source, file, undefined, undefined, validation, undefined, size);
  } finally {
    await fh.close();
  }
}

async function sha256Only() {
  const fh = await open(file, 'r');
  const b = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
  const h = createHash('sha256');
  for (let p = 0; ; ) {
    const { bytesRead } = await fh.read(b, 0, b.length, p);
    if (bytesRead === 0) break;
    h.update(b.subarray(0, bytesRead));
    p += bytesRead;
  }
  await fh.close();
  return h.digest('hex');
}

// Split B, simulated: sha256 + CRC-64 here, RdbWalker in a worker; 4 shared buffers in rotation.
const { Crc64, shareablePassMemory } = await dist('rdb/crc64.js');
const { Worker } = await import('node:worker_threads');
const shared = shareablePassMemory(4, COPY_CHUNK_BYTES);
const walkerUrl = pathToFileURL(join(ROOT, 'dist', 'rdb', 'walker.js')).href;
const walkThread = new Worker(`
  const { parentPort, workerData } = require('node:worker_threads');
  const bytes = new Uint8Array(workerData.memory.buffer);
  let walker = null;
  import(${JSON.stringify(walkerUrl)}).then(({ RdbWalker }) => {
    parentPort.on('message', (m) => {
      if (m.op === 'begin') walker = new RdbWalker();
      else if (m.op === 'chunk') { walker.update(bytes.subarray(m.offset, m.offset + m.length)); parentPort.postMessage({ op: 'released', index: m.index }); }
      else if (m.op === 'finish') { const r = walker.conclude(m.dataEnd); parentPort.postMessage({ op: 'result', ok: typeof r !== 'string' }); }
    });
    parentPort.postMessage({ op: 'ready' });
  });`, { eval: true, workerData: { memory: shared.memory } });
await new Promise((resolve) => walkThread.once('message', resolve));
walkThread.unref();
async function splitB() {
  walkThread.ref();
  const held = [false, false, false, false];
  let wake = () => undefined;
  let result;
  const onMessage = (m) => {
    if (m.op === 'released') held[m.index] = false;
    else result = m;
    wake();
  };
  walkThread.on('message', onMessage);
  const changed = () => new Promise((resolve) => (wake = resolve));
  const fh = await open(file, 'r');
  const hash = createHash('sha256');
  const crc = new Crc64();
  walkThread.postMessage({ op: 'begin' });
  let position = 0;
  let cur = 0;
  let reading = fh.read(shared.buffers[cur], 0, COPY_CHUNK_BYTES, position);
  for (;;) {
    const { bytesRead: n } = await reading;
    if (n === 0) break;
    const chunk = shared.buffers[cur].subarray(0, n);
    position += n;
    held[cur] = true;
    walkThread.postMessage({ op: 'chunk', index: cur, offset: shared.offsets[cur], length: n });
    let next;
    while ((next = held.findIndex((h, i) => !h && i !== cur)) < 0) await changed();
    reading = fh.read(shared.buffers[next], 0, COPY_CHUNK_BYTES, position);
    hash.update(chunk);
    crc.update(chunk); // the trailer's 8 bytes too: a simulation of the cost only
    cur = next;
  }
  await fh.close();
  walkThread.postMessage({ op: 'finish', dataEnd: position - 8 });
  while (!result) await changed();
  walkThread.off('message', onMessage);
  walkThread.unref();
  if (!result.ok) throw new Error('split B: the walk failed');
  return hash.digest('hex');
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const modes = {
  'pass main thread': () => pass('never'),
  'pass with validation thread': () => pass('always'),
  'split B (simulated): sha256 + CRC-64 here, walk in a worker': splitB,
  'sha256 alone': sha256Only,
  'validation crc alone': () => validateRdbFile(file, { validation: 'crc' }),
  'validation full alone': () => validateRdbFile(file, { validation: 'full' }),
};
await pass('always'); // warm: page cache, JIT, the thread's first start
const results = Object.fromEntries(Object.keys(modes).map((k) => [k, []]));
for (let i = 0; i < runs; i++) {
  for (const [name, fn] of Object.entries(modes)) results[name].push(await timed(fn));
}
await walkThread.terminate();
for (const [name, rs] of Object.entries(results)) {
  console.log(JSON.stringify({ what: name, validation, runs, wallMs: Math.round(median(rs.map((r) => r.ms))), cpuMs: Math.round(median(rs.map((r) => r.cpuMs))), userMs: Math.round(median(rs.map((r) => r.userMs))), sysMs: Math.round(median(rs.map((r) => r.sysMs))) }));
}
