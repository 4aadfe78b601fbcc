/**
 * Promise 4, concurrency: 32 `once` runs start at the same instant, mixed
 * with `prune` runs (real CLI processes, released together by a barrier after
 * loading). Afterwards there is exactly one new event, every exit code is 0
 * or 75, and no process printed a stack trace. A stale lock left by a killed
 * run is taken over, also when the takeover itself is killed half-way.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TryAgainError } from '../../src/core/errors.js';
import { OSFS, TEMP_PREFIX } from '../../src/core/fs.js';
import { acquireLock } from '../../src/pipeline/lock.js';
import type { FsCall } from '../helpers/faulty-fs.js';
import { setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';
import {
  CLI_JS, CRASH_CHILD, FULL, Figures, REPO, assertBuilt, faultyFsModule, family, lanes, pool, reproduce, runNode, spread, stackTraceLines, type ProcResult,
} from './common.js';

const figures = new Figures('concurrency', 'Concurrency: simultaneous runs and stale locks');
const BARRIER = join(REPO, 'test/reliability/barrier.mjs');
const RULES = [{ name: 'last', count: 5 }, { name: 'hourly', every: 'hour', count: 48 }];
let faultyFs: string;
/** The call number of the first write of the temp copy (or the call during the kernel copy), in a run without a stale lock. */
let firstTempWrite = 0;

beforeAll(async () => {
  assertBuilt();
  faultyFs = faultyFsModule();
  const probe = setupArchive({ rules: RULES });
  writeSnapshot(probe.source, { seed: 'probe', mtime: new Date('2025-06-01T10:00:00Z'), size: 9 * 1024 * 1024 });
  const logFile = join(probe.root, 'ops.json');
  const r = await runNode(CRASH_CHILD, ['once', '-c', probe.config], { env: { RELIABILITY_FAULTY_FS: faultyFs, FAULT_LOG: logFile } });
  expect(r.code, r.stderr).toBe(0);
  const calls = (JSON.parse(readFileSync(logFile, 'utf8')) as { calls: FsCall[] }).calls;
  const intoTemp = calls.filter((c) => (c.op === 'write' || c.op === 'copy') && c.path.includes(TEMP_PREFIX) && c.path.endsWith('.rdb'));
  // read/write: the first write of the temp copy; a kernel copy (one call, run in a thread): the call right after it
  // began, while the kernel copies (the first read of the hashing beside it).
  const write = intoTemp.find((c) => c.op === 'write');
  firstTempWrite = write ? write.n : intoTemp[intoTemp.length - 1]!.n + 1;
});

/** Spawn options that hold a CLI process after loading until all `n` processes of the batch are loaded. */
function barrier(n: number) {
  const dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-barrier-'));
  return { nodeArgs: ['--import', BARRIER], env: { BARRIER_DIR: dir, BARRIER_N: String(n) }, timeoutMs: 300_000 };
}

const events = (env: ArchiveEnv, rule: string) => readdirSync(join(env.archive, rule)).filter((n) => n.endsWith('.rdb')).sort();
const leftovers = (env: ArchiveEnv) => [
  ...RULES.flatMap((r) => readdirSync(join(env.archive, r.name)).filter((n) => n.startsWith(TEMP_PREFIX)).map((n) => `${r.name}/${n}`)),
  ...readdirSync(join(env.archive, '.rdb-archiver')).filter((n) => n !== 'state.json').map((n) => `.rdb-archiver/${n}`),
];

describe('simultaneous runs', () => {
  // Full run: 3 rounds of 32 once + 8 prune on a 24 MiB source. npm run test:slow: one round of 8 + 2 on 9 MiB (the same race, fewer racers).
  const racers = FULL ? 40 : 10;
  it(`${racers * 4 / 5} once + ${racers / 5} prune released at the same instant: exactly one new event, exit codes 0 or 75, no stack traces`, async () => {
    const rounds = FULL ? 3 : 1;
    figures.plan(rounds);
    figures.random('simultaneous runs: which process wins the lock depends on scheduling; every round is one trial, landed when all its processes were released together by the barrier');
    const failures: string[] = [];
    const env = setupArchive({ rules: RULES });
    writeSnapshot(env.source, { seed: 'before', mtime: new Date('2025-06-01T09:00:00Z'), size: 1024 * 1024 });
    expect((await runNode(CLI_JS, ['once', '-c', env.config])).code).toBe(0);
    for (let round = 0; round < rounds; round += 1) {
      const snap = writeSnapshot(env.source, { seed: `round-${round}`, mtime: new Date(Date.UTC(2025, 5, 1, 10 + round)), size: (FULL ? 24 : 9) * 1024 * 1024 });
      const before = RULES.map((r) => events(env, r.name));
      // 4 once to 1 prune, interleaved.
      const commands = Array.from({ length: racers }, (_, i) => (i % 5 === 4 ? ['prune', '--json'] : ['once', '--json']));
      const gate = barrier(commands.length);
      const results = await Promise.all(commands.map((cmd) => runNode(CLI_JS, [...cmd, '-c', env.config], gate)));
      rmSync(gate.env.BARRIER_DIR, { recursive: true, force: true });
      const released = results.map((r) => Number(/released at (\d+)/.exec(r.stderr)?.[1] ?? NaN));
      const allReady = results.filter((r) => new RegExp(`barrier: ${commands.length} of ${commands.length} ready`).test(r.stderr)).length;
      figures.note(`round ${round + 1}: ${allReady} of ${results.length} processes saw all ${commands.length} loaded and waiting at the barrier; they were released within ${Math.max(...released) - Math.min(...released)} ms of each other`);
      // The condition of the trial is simultaneity: without every process at the barrier it did not land.
      const missed = allReady === results.length ? undefined : `the barrier released only ${allReady} of ${results.length} processes together`;
      const problems: string[] = [];
      results.forEach((r, i) => {
        const cmd = commands[i]![0]!;
        figures.outcome(`${cmd} exit ${r.code}`);
        if (r.code !== 0 && r.code !== 75) problems.push(`${cmd} #${i} exited ${r.code} ${r.signal ?? ''}: ${r.stdout.slice(0, 200)} ${r.stderr.slice(0, 300)}`);
        const traces = stackTraceLines(r.stderr + r.stdout);
        if (traces.length > 0) problems.push(`${cmd} #${i} printed a stack trace: ${traces[0]}`);
        if (r.code === 75) {
          const out = JSON.parse(r.stdout) as { error?: { kind?: string; message?: string } } | { errors?: Array<{ kind?: string }> };
          const kind = 'error' in out ? out.error?.kind : (out as { errors?: Array<{ kind?: string }> }).errors?.[0]?.kind;
          if (kind !== 'locked') problems.push(`${cmd} #${i} exited 75 for another reason: ${r.stdout.slice(0, 200)}`);
        }
      });
      const archived = results.filter((r, i) => commands[i]![0] === 'once' && r.code === 0 && (JSON.parse(r.stdout) as { status: string }).status === 'archived');
      if (archived.length !== 1) problems.push(`${archived.length} runs archived, expected exactly 1`);
      RULES.forEach((r, i) => {
        const added = events(env, r.name).filter((n) => !before[i]!.includes(n));
        if (added.length !== 1) problems.push(`${r.name}: ${added.length} new events (${added.join(', ')}), expected exactly 1`);
        for (const name of added) {
          const bytes = readFileSync(join(env.archive, r.name, name));
          if (!bytes.equals(snap.bytes)) problems.push(`${r.name}/${name} differs from the source`);
        }
      });
      if (leftovers(env).length > 0) problems.push(`left over: ${leftovers(env).join(', ')}`);
      figures.result(`round ${round + 1} (${commands.length} processes)`, { missed, violations: problems });
      failures.push(...problems.map((p) => `round ${round + 1}: ${p}`));
    }
    expect(failures, `${reproduce()}\n${failures.join('\n')}`).toEqual([]);
  }, 600_000);
});

describe('once and prune', () => {
  it('a once that finds a prune holding the lock waits for it and then runs; a once that finds a once gives up at once (75)', async () => {
    const env = setupArchive({ rules: RULES });
    const lockPath = join(env.archive, '.rdb-archiver', 'lock');
    const fs = new OSFS();
    const prune = await acquireLock(fs, lockPath, 'prune', 0o700);
    const started = Date.now();
    const waiting = acquireLock(fs, lockPath, 'once', 0o700, { waitFor: ['prune'], waitMs: 10_000 });
    setTimeout(() => void prune.release(), 300);
    const held = await waiting;
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    const blocked = await acquireLock(fs, lockPath, 'once', 0o700, { waitFor: ['prune'], waitMs: 10_000 }).then(() => 'acquired', (err: Error) => err);
    expect(blocked).toBeInstanceOf(TryAgainError);
    await held.release();
  });
});

describe('stale locks', () => {
  /** Starts `once` on a big source and SIGKILLs it once its temp copy exists: a lock and a temp are left behind. */
  async function killedMidCopy(env: ArchiveEnv): Promise<void> {
    // Deterministic: the crash child kills itself at its first write of the temp copy.
    const r = await runNode(CRASH_CHILD, ['once', '-c', env.config], { env: { RELIABILITY_FAULTY_FS: faultyFs, FAULT_KILL_AT: String(firstTempWrite) } });
    expect(r.signal).toBe('SIGKILL');
    expect(existsSync(join(env.archive, '.rdb-archiver', 'lock'))).toBe(true);
  }

  it('a lock left by a killed run is taken over by the next run, which archives and cleans up', async () => {
    const env = setupArchive({ rules: RULES });
    const snap = writeSnapshot(env.source, { seed: 'x', mtime: new Date('2025-06-01T10:00:00Z'), size: 9 * 1024 * 1024 });
    await killedMidCopy(env);
    const r = await runNode(CLI_JS, ['once', '--json', '-c', env.config]);
    figures.input('stale lock of a killed run');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { status: string }).status).toBe('archived');
    for (const rule of RULES) expect(readFileSync(join(env.archive, rule.name, 'dump-2025-06-01T10-00-00.rdb')).equals(snap.bytes)).toBe(true);
    expect(leftovers(env)).toEqual([]);
  }, 120_000);

  // Full run: 16 racers. npm run test:slow: 6.
  const staleRacers = FULL ? 16 : 6;
  it(`${staleRacers} runs racing for the same stale lock: one takes it over, the rest exit 0 or 75, no stack traces`, async () => {
    const env = setupArchive({ rules: RULES });
    writeSnapshot(env.source, { seed: 'y', mtime: new Date('2025-06-01T10:00:00Z'), size: 9 * 1024 * 1024 });
    await killedMidCopy(env);
    const gate = barrier(staleRacers);
    const results = await Promise.all(Array.from({ length: staleRacers }, () => runNode(CLI_JS, ['once', '--json', '-c', env.config], gate)));
    rmSync(gate.env.BARRIER_DIR, { recursive: true, force: true });
    for (const r of results) {
      figures.outcome(`once exit ${r.code} (stale-lock race)`);
      expect([0, 75], r.stdout + r.stderr).toContain(r.code);
      expect(stackTraceLines(r.stderr)).toEqual([]);
    }
    const archived = results.filter((r) => r.code === 0 && (JSON.parse(r.stdout) as { status: string }).status === 'archived');
    expect(archived).toHaveLength(1);
    for (const rule of RULES) expect(events(env, rule.name)).toEqual(['dump-2025-06-01T10-00-00.rdb']);
    expect(leftovers(env)).toEqual([]);
  }, 180_000);

  it('a run killed at any call of its own stale-lock takeover still leaves the next run able to finish (exit 0)', async () => {
    // Count the calls of a takeover run, on a copy of the same situation.
    const probe = setupArchive({ rules: RULES });
    writeSnapshot(probe.source, { seed: 'z', mtime: new Date('2025-06-01T10:00:00Z'), size: 1024 * 1024 });
    await killedMidCopy(probe);
    const logFile = join(probe.root, 'takeover.json');
    const counted = await runNode(CRASH_CHILD, ['once', '-c', probe.config], { env: { RELIABILITY_FAULTY_FS: faultyFs, FAULT_LOG: logFile } });
    expect(counted.code, counted.stderr).toBe(0);
    const calls = (JSON.parse(readFileSync(logFile, 'utf8')) as { calls: FsCall[] }).calls;
    const lockCalls = calls.slice(0, calls.findIndex((c) => c.path.endsWith('state.json'))).map((c) => c.n);
    figures.note(`a stale-lock takeover makes ${lockCalls.length} filesystem calls before the state is read; a run was killed before each of them`);
    const failures: string[] = [];
    const chosen = FULL ? lockCalls : spread(lockCalls, 4);
    figures.plan(chosen.map((n) => `kill at call ${n} of a takeover`));
    await pool(chosen, lanes(), async (n) => {
      const e = setupArchive({ rules: RULES });
      const snap = writeSnapshot(e.source, { seed: 'z', mtime: new Date('2025-06-01T10:00:00Z'), size: 1024 * 1024 });
      await killedMidCopy(e);
      const killed = await runNode(CRASH_CHILD, ['once', '-c', e.config], { env: { RELIABILITY_FAULTY_FS: faultyFs, FAULT_KILL_AT: String(n) } });
      const next = await runNode(CLI_JS, ['once', '-c', e.config]);
      const problems: string[] = [];
      let missed: string | undefined;
      if (killed.signal === 'SIGKILL') {
        figures.fault('SIGKILL');
        figures.phase('during a stale-lock takeover');
      } else if (killed.code === 0) {
        missed = 'the takeover run made fewer calls than the kill point';
      } else {
        problems.push(`not killed at call ${n} but exited ${killed.code}`);
      }
      if (next.code !== 0) problems.push(`the next run exited ${next.code}: ${next.stdout.trim()}`);
      else if (!readFileSync(join(e.archive, 'last', 'dump-2025-06-01T10-00-00.rdb')).equals(snap.bytes)) problems.push('the event is not complete');
      if (leftovers(e).length > 0) problems.push(`left over: ${leftovers(e).join(', ')}`);
      figures.result(`kill at call ${n} of a takeover (${calls[n - 1]?.op} ${calls[n - 1]?.path})`, { missed, violations: problems });
      if (problems.length) failures.push(`kill at call ${n} (${calls[n - 1]?.op} ${calls[n - 1]?.path}): ${problems.join('; ')}`);
    });
    expect(failures, failures.join('\n')).toEqual([]);
  }, 300_000);
});

// ---------------------------------------------------------------------------
// Issue 10 item 6, as families of trials (test/integration/lock.test.ts has one case of each kind):
// a lock is taken over only when its owner is provably dead on this host, or its lease expired;
// runs in separate PID namespaces (overlapping CronJob pods on one volume) never take each other's lock.

const here = {
  host: hostname(),
  bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
  pidNs: readlinkSync('/proc/self/ns/pid'),
};
const startTimeOf = (pid: number) => {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ')[19]!;
};

type Pid = 'dead' | 'alive' | 'reused';
/** [who holds it, its fields (pid filled in), which pid, taken over when fresh?] */
const OWNERS: Array<[string, Record<string, string> | undefined, Pid, boolean]> = [
  ['this host, its process gone', here, 'dead', true],
  ['this host, its process alive', here, 'alive', false],
  ['this host, its pid reused by another process', here, 'reused', true],
  ['another host, pid dead here', { ...here, host: 'pod-b' }, 'dead', false],
  ['another host, pid alive here', { ...here, host: 'pod-b' }, 'alive', false],
  ['another boot, pid dead', { ...here, bootId: '00000000-0000-0000-0000-000000000000' }, 'dead', false],
  ['another boot, pid alive', { ...here, bootId: '00000000-0000-0000-0000-000000000000' }, 'alive', false],
  ['another PID namespace, pid 1', { ...here, pidNs: 'pid:[4026530000]' }, 'alive', false],
  ['another PID namespace, pid dead here', { ...here, pidNs: 'pid:[4026530000]' }, 'dead', false],
  ['an older version (pid only), process gone', undefined, 'dead', true],
  ['an older version (pid only), process alive', undefined, 'alive', false],
];
const LEASES: Array<[string, number]> = [['fresh lease (refreshed 1 min ago)', 60_000], ['expired lease (31 min without refresh)', 31 * 60_000]];

describe('lock owners (issue 10 item 6)', () => {
  const stranger: { child?: ChildProcess } = {};
  afterAll(() => void stranger.child?.kill('SIGKILL'));

  it('a planted lock, for every kind of owner and lease: taken over exactly when its owner is provably dead here or its lease expired; otherwise respected (75), nothing written', async () => {
    stranger.child = spawn('sleep', ['600'], { stdio: 'ignore' });
    const alive = stranger.child.pid!;
    const dead = spawnSync('true').pid!;
    const combos = OWNERS.flatMap((o) => LEASES.map((l) => [o, l] as const));
    // npm run test:slow: one of each verdict for a fresh lease, and an expired lease over a live owner.
    const chosen = FULL ? combos : combos.filter(([[label], [lease]]) => (lease.startsWith('fresh') && ['this host, its pid reused by another process', 'another PID namespace, pid 1'].includes(label)) || (lease.startsWith('expired') && label === 'another host, pid alive here'));
    await family(figures, chosen, ([[owner], [lease]]) => `lock of ${owner}, ${lease}`, async ([[, fields, pid, takenWhenFresh], [lease, ageMs]], v) => {
      figures.input(`planted lock: ${lease.split(' (')[0]}`);
      const env = setupArchive({ rules: RULES });
      const snap = writeSnapshot(env.source, { seed: 'lock', mtime: new Date('2025-06-01T10:00:00Z'), size: 64 * 1024 });
      const lock = join(env.archive, '.rdb-archiver', 'lock');
      mkdirSync(dirname(lock), { recursive: true, mode: 0o700 });
      const number = pid === 'dead' ? dead : alive;
      const procStart = pid === 'reused' ? String(Number(startTimeOf(alive)) - 1) : pid === 'alive' ? startTimeOf(alive) : '1';
      const foreignNs = fields !== undefined && fields.pidNs !== here.pidNs;
      const owner = { pid: pid !== 'dead' && foreignNs ? 1 : number, startedAt: '2026-01-01T00:00:00.000Z', command: 'once', ...(fields ? { ...fields, procStart } : {}) };
      writeFileSync(lock, JSON.stringify(owner) + '\n');
      const when = new Date(Date.now() - ageMs);
      utimesSync(lock, when, when);
      const takeover = takenWhenFresh || ageMs > 30 * 60_000;
      const r = await runNode(CLI_JS, ['once', '--json', '-c', env.config]);
      figures.outcome(`once exit ${r.code} (planted lock)`);
      if (stackTraceLines(r.stderr).length > 0) v.push(`stack trace: ${stackTraceLines(r.stderr)[0]}`);
      if (takeover) {
        if (r.code !== 0) v.push(`expected the lock to be taken over (exit 0), got ${r.code}: ${r.stdout.trim().slice(0, 300)}`);
        else if (!readFileSync(join(env.archive, 'last', 'dump-2025-06-01T10-00-00.rdb')).equals(snap.bytes)) v.push('taken over, but the event is not the snapshot');
        if (leftovers(env).length > 0) v.push(`left over: ${leftovers(env).join(', ')}`);
      } else {
        if (r.code !== 75) v.push(`expected the lock to be respected (exit 75), got ${r.code}: ${r.stdout.trim().slice(0, 300)}`);
        if (!existsSync(lock) || readFileSync(lock, 'utf8') !== JSON.stringify(owner) + '\n') v.push('the respected lock was changed or removed');
        for (const rule of RULES) if (existsSync(join(env.archive, rule.name)) && readdirSync(join(env.archive, rule.name)).length > 0) v.push(`${rule.name}/ was written although the lock is held`);
      }
      rmSync(env.root, { recursive: true, force: true });
    });
  }, 300_000);

  const unshareSkip = (() => {
    const r = spawnSync('unshare', ['-p', '-f', '--mount-proc', 'true'], { encoding: 'utf8' });
    return r.status === 0 ? undefined : `unshare -p -f --mount-proc is not allowed here (${(r.stderr || r.error?.message || `exit ${r.status}`).trim()})`;
  })();

  it('8 runs, each in its own PID namespace (all pid 1, like overlapping CronJob pods on one volume), released at the same instant: exactly one archives, the others exit 75 or find it done, nothing partial', async (ctx) => {
    if (unshareSkip) {
      figures.note(`PID-namespace race: skipped (${unshareSkip})`);
      process.stderr.write(`concurrency: skipping the PID-namespace race: ${unshareSkip}\n`);
      ctx.skip();
      return;
    }
    const rounds = FULL ? 3 : 1;
    figures.plan(rounds);
    figures.random('runs in separate PID namespaces: which one wins the lock depends on scheduling');
    const env = setupArchive({ rules: RULES });
    const failures: string[] = [];
    for (let round = 0; round < rounds; round += 1) {
      const snap = writeSnapshot(env.source, { seed: `ns-${round}`, mtime: new Date(Date.UTC(2025, 5, 2, 10 + round)), size: 8 * 1024 * 1024 });
      const gate = barrier(8);
      const results = await Promise.all(Array.from({ length: 8 }, () => new Promise<ProcResult>((resolve) => {
        const started = Date.now();
        const child = spawn('unshare', ['-p', '-f', '--mount-proc', process.execPath, ...gate.nodeArgs, CLI_JS, 'once', '--json', '-c', env.config], {
          stdio: ['ignore', 'pipe', 'pipe'], env: Object.fromEntries(Object.entries({ ...process.env, ...gate.env }).filter(([k]) => k !== 'RDB_ARCHIVER_CONFIG')),
        });
        let stdout = '';
        let stderr = '';
        child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - started, killedByUs: false }));
      })));
      rmSync(gate.env.BARRIER_DIR, { recursive: true, force: true });
      const allReady = results.filter((r) => /barrier: 8 of 8 ready/.test(r.stderr)).length;
      const problems: string[] = [];
      results.forEach((r, i) => {
        figures.outcome(`once exit ${r.code} (own PID namespace)`);
        if (r.code !== 0 && r.code !== 75) {
          let error = r.stdout.slice(0, 300);
          try {
            error = JSON.stringify((JSON.parse(r.stdout) as { error?: unknown }).error);
          } catch {
            // not JSON: the raw output
          }
          problems.push(`#${i} exited ${r.code}: ${error}`);
        }
        if (stackTraceLines(r.stderr).length > 0) problems.push(`#${i} printed a stack trace: ${stackTraceLines(r.stderr)[0]}`);
      });
      const archived = results.filter((r) => r.code === 0 && /"status":"archived"/.test(r.stdout)).length;
      if (archived !== 1) problems.push(`${archived} runs archived, expected exactly 1`);
      for (const rule of RULES) {
        const name = `dump-2025-06-02T${String(10 + round).padStart(2, '0')}-00-00.rdb`;
        const path = join(env.archive, rule.name, name);
        if (!existsSync(path) || !readFileSync(path).equals(snap.bytes)) problems.push(`${rule.name}/${name} is missing or differs`);
      }
      if (leftovers(env).length > 0) problems.push(`left over: ${leftovers(env).join(', ')}`);
      figures.result(`PID-namespace round ${round + 1}`, { missed: allReady === 8 ? undefined : `the barrier released only ${allReady} of 8 together`, violations: problems });
      failures.push(...problems.map((p) => `round ${round + 1}: ${p}`));
    }
    expect(failures, `${reproduce()}\n${failures.join('\n')}`).toEqual([]);
  }, 300_000);
});
