/**
 * Preloaded with `node --import` by the concurrency suite: loads every module
 * of the built CLI, then waits until all BARRIER_N processes have done the
 * same (each drops a file in BARRIER_DIR), so that they all reach the lock at
 * the same instant instead of one after another as they finish loading.
 * Reports on stderr how many were ready and when it was released.
 */
import { randomUUID } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dist = process.env.RELIABILITY_DIST ? pathToFileURL(`${process.env.RELIABILITY_DIST.replace(/\/$/, '')}/`) : new URL('../../dist/', import.meta.url);
const modules = readdirSync(dist, { recursive: true }).filter((f) => f.endsWith('.js') && f !== 'cli.js');
await Promise.all(modules.map((f) => import(new URL(f, dist).href)));

const dir = process.env.BARRIER_DIR;
const n = Number(process.env.BARRIER_N);
const deadline = Date.now() + Number(process.env.BARRIER_TIMEOUT_MS ?? 120_000);
const nap = new Int32Array(new SharedArrayBuffer(4));
let ready = 0;
if (dir && n > 0) {
  // pid and a random part: processes in separate PID namespaces may all be pid 1.
  writeFileSync(join(dir, `ready-${process.pid}-${randomUUID()}`), '');
  while ((ready = readdirSync(dir).length) < n && Date.now() < deadline) Atomics.wait(nap, 0, 0, 2);
}
process.stderr.write(`barrier: ${ready} of ${n} ready, released at ${Date.now()}\n`);
