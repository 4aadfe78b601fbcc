/**
 * Preloaded with `node --import` into the real, bundled CLI (dist/cli.js):
 * makes one system call fail with an errno code, underneath every module of
 * the CLI, by patching node:fs/promises (and the two synchronous calls of
 * retention's bulk delete) and publishing the change to ES module importers.
 *
 *   FAULT_OP    open, stat, lstat, readdir, readFile, mkdir, chmod, rename, link, unlink, statfs,
 *               copy (the kernel copy, fs.copyFile: FAULT_PATH matches its destination),
 *               read, write, sync, fstat, fchmod, close (calls on a handle), lstatSync, unlinkSync
 *   FAULT_PATH  a substring of the path (rename/link: "from -> to"; handle calls: the opened path)
 *   FAULT_NTH   fail the Nth matching call (default 1)
 *   FAULT_CODE  the errno code (default EIO)
 * On exit it reports on stderr whether the fault was injected.
 */
import { createRequire, syncBuiltinESMExports } from 'node:module';

const require = createRequire(import.meta.url);
const fsp = require('node:fs/promises');
const fs = require('node:fs');
const OP = process.env.FAULT_OP;
const PATH = process.env.FAULT_PATH ?? '';
const NTH = Number(process.env.FAULT_NTH ?? 1);
const CODE = process.env.FAULT_CODE ?? 'EIO';
const ERRNO = { EPERM: 1, EIO: 5, EACCES: 13, EXDEV: 18, ENOSPC: 28, EROFS: 30, EDQUOT: 122 };
let seen = 0;
let injected = '';
const hit = (op, path) => {
  if (op !== OP || !String(path).includes(PATH)) return false;
  seen += 1;
  if (seen !== NTH) return false;
  injected = `${op} ${path}`;
  return true;
};
const fault = (syscall, path) => Object.assign(new Error(`${CODE}: injected fault, ${syscall} '${path}'`), { code: CODE, errno: -(ERRNO[CODE] ?? 5), syscall, path });

for (const name of ['stat', 'lstat', 'readdir', 'readFile', 'mkdir', 'chmod', 'unlink', 'statfs']) {
  const real = fsp[name];
  fsp[name] = async function (path, ...rest) {
    if (hit(name, path)) throw fault(name, path);
    return real.call(this, path, ...rest);
  };
}
for (const name of ['rename', 'link']) {
  const real = fsp[name];
  fsp[name] = async function (from, to, ...rest) {
    if (hit(name, `${from} -> ${to}`)) throw fault(name, from);
    return real.call(this, from, to, ...rest);
  };
}
const realCopyFile = fsp.copyFile;
fsp.copyFile = async function (from, to, ...rest) {
  if (hit('copy', to)) throw fault('copyfile', to);
  return realCopyFile.call(this, from, to, ...rest);
};
const realOpen = fsp.open;
fsp.open = async function (path, ...rest) {
  if (hit('open', path)) throw fault('open', path);
  const handle = await realOpen.call(this, path, ...rest);
  for (const [method, op] of [['read', 'read'], ['write', 'write'], ['sync', 'sync'], ['stat', 'fstat'], ['chmod', 'fchmod'], ['close', 'close']]) {
    const real = handle[method];
    handle[method] = async function (...args) {
      if (hit(op, path)) {
        if (op === 'close') await real.apply(handle, args); // close(2) releases the descriptor even when it fails
        throw fault(op, path);
      }
      return real.apply(handle, args);
    };
  }
  return handle;
};
for (const name of ['lstatSync', 'unlinkSync']) {
  const real = fs[name];
  fs[name] = function (path, ...rest) {
    if (hit(name, path)) throw fault(name.replace('Sync', ''), path);
    return real.call(this, path, ...rest);
  };
}
syncBuiltinESMExports();
process.on('exit', () => process.stderr.write(`fault-preload: ${injected ? `injected ${CODE} at ${injected}` : 'no call matched'}\n`));
