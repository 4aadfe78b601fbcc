#!/usr/bin/env node
/**
 * Measures what a test command costs: wall-clock time, CPU time (user + sys of
 * the command and every descendant it waited for, as /usr/bin/time reports it)
 * and peak memory, sampled from /proc every 200 ms.
 *
 * Peak memory is the largest SUM of the resident sets of the command's process
 * tree at one instant (vitest, its pool's forks, and what the tests start:
 * the CLI, redis-server, s3rver...), and separately of the Node processes
 * of vitest alone (the main process and its pool's forks). /usr/bin/time's
 * "max RSS" is the largest single process only, which understates a pool.
 *
 *   node scripts/test-footprint.mjs -- npx vitest run test/unit
 *   node scripts/test-footprint.mjs -- npm test
 *
 * Prints one JSON line on stderr at the end; the command's exit status is kept.
 */
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const sep = process.argv.indexOf('--');
const command = sep >= 0 ? process.argv.slice(sep + 1) : process.argv.slice(2);
if (command.length === 0) {
  process.stderr.write('usage: node scripts/test-footprint.mjs -- <command> [args...]\n');
  process.exit(2);
}

const PAGE = 4096;
const scratch = mkdtempSync(join(tmpdir(), 'rdb-archiver-footprint-'));
const timeFile = join(scratch, 'time');

/** pid -> { ppid, rssBytes, cmd } of every process visible now. */
function snapshot() {
  const procs = new Map();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const rss = Number(readFileSync(`/proc/${name}/statm`, 'utf8').split(' ')[1]) * PAGE;
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
      procs.set(Number(name), { ppid: Number(fields[1]), rss, cmd });
    } catch {
      // it exited meanwhile
    }
  }
  return procs;
}

function descendants(procs, root) {
  const children = new Map();
  for (const [pid, p] of procs) {
    if (!children.has(p.ppid)) children.set(p.ppid, []);
    children.get(p.ppid).push(pid);
  }
  const out = [];
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop();
    if (procs.has(pid)) out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

const started = Date.now();
const child = spawn('/usr/bin/time', ['-o', timeFile, '-f', '%e %U %S %M', ...command], { stdio: 'inherit' });
let peakTree = 0;
let peakVitest = 0;
let peakProcs = 0;
const sample = () => {
  const procs = snapshot();
  const tree = descendants(procs, child.pid);
  let sum = 0;
  let vitest = 0;
  for (const pid of tree) {
    const p = procs.get(pid);
    sum += p.rss;
    if (/vitest/.test(p.cmd)) vitest += p.rss;
  }
  peakTree = Math.max(peakTree, sum);
  peakVitest = Math.max(peakVitest, vitest);
  peakProcs = Math.max(peakProcs, tree.length);
};
const timer = setInterval(sample, 200);
child.on('close', (code, signal) => {
  clearInterval(timer);
  let wall, user, sys, maxSingleKiB;
  try {
    [wall, user, sys, maxSingleKiB] = readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ').map(Number);
  } catch {
    // time wrote nothing (killed)
  }
  rmSync(scratch, { recursive: true, force: true });
  const mib = (b) => Math.round(b / 2 ** 20);
  process.stderr.write(`${JSON.stringify({
    command: command.join(' '),
    wallSeconds: wall ?? (Date.now() - started) / 1000,
    cpuSeconds: user !== undefined ? Math.round((user + sys) * 10) / 10 : undefined,
    userSeconds: user,
    sysSeconds: sys,
    peakTreeRssMiB: mib(peakTree),
    peakVitestRssMiB: mib(peakVitest),
    maxSingleProcessRssMiB: maxSingleKiB !== undefined ? Math.round(maxSingleKiB / 1024) : undefined,
    peakProcesses: peakProcs,
    exit: code ?? signal,
  })}\n`);
  process.exit(code ?? 1);
});
