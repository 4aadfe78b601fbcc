/**
 * Preloaded with `node --import` into the real CLI: pauses the process at one
 * chosen call on a file, so a test can change the world at that exact instant
 * (for instance rewrite nodes.conf while the RDB is being copied).
 *
 *   PAUSE_OP    read (a read on an opened handle) or open
 *   PAUSE_PATH  the exact path the call is made on
 *   PAUSE_NTH   pause at the Nth matching call (default 1)
 *   PAUSE_DIR   on the pause, the process creates PAUSE_DIR/paused, then
 *               blocks until PAUSE_DIR/resume exists (at most 60 s)
 */
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const fsp = require('node:fs/promises');
const { PAUSE_OP: OP, PAUSE_PATH: PATH, PAUSE_DIR: DIR } = process.env;
const NTH = Number(process.env.PAUSE_NTH ?? 1);
let seen = 0;
const nap = new Int32Array(new SharedArrayBuffer(4));

function maybePause(op, path) {
  if (op !== OP || path !== PATH) return;
  seen += 1;
  if (seen !== NTH) return;
  writeFileSync(join(DIR, 'paused'), String(process.pid));
  const deadline = Date.now() + 60_000;
  while (!existsSync(join(DIR, 'resume')) && Date.now() < deadline) Atomics.wait(nap, 0, 0, 2);
}

const realOpen = fsp.open;
fsp.open = async function (path, ...rest) {
  maybePause('open', String(path));
  const handle = await realOpen.call(this, path, ...rest);
  const realRead = handle.read;
  handle.read = async function (...args) {
    maybePause('read', String(path));
    return realRead.apply(handle, args);
  };
  return handle;
};
syncBuiltinESMExports();
