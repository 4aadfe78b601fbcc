/**
 * Promise 5, a source that changes under us. dump.rdb replaced by rename
 * during the copy (as Redis does) archives a complete snapshot, old or new;
 * rewritten in place during the copy is detected (exit 75) and archived by
 * the next run. "During the copy" is hit exactly by running the change from
 * the fault-injecting filesystem at a read of the source (in-process), and
 * also against the real CLI on a 64 MiB source. A source that is a symlink, a
 * directory, a FIFO (without hanging), a device or missing gives exit 66 and
 * a clear message, also when it is swapped in between the watcher's stat and
 * the worker's open.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { runOnce, type RunReport } from '../../src/pipeline/cycle.js';
import { fsError } from '../../src/core/errors.js';
import { OSFS, TEMP_PREFIX } from '../../src/core/fs.js';
import { memoryLog } from '../../src/core/log.js';
import { FaultyFS, type FsCall } from '../helpers/faulty-fs.js';
import { setupArchive, snapshotBytes, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';
import { CLI_JS, Figures, FULL, runNode, stackTraceLines } from './common.js';
import { sha256 } from './scenario.js';

const figures = new Figures('source', 'A source that changes under us, or is not a regular file');

const RULES = [{ name: 'last', count: 10 }, { name: 'hourly', every: 'hour', count: 10 }];
const OLD_MTIME = new Date('2025-06-01T10:00:00.123Z');
const NEW_MTIME = new Date('2025-06-01T10:05:00.456Z');
const OLD_TS = '2025-06-01T10-00-00';
const NEW_TS = '2025-06-01T10-05-00';

async function once(env: ArchiveEnv, fs: OSFS | FaultyFS = new OSFS()): Promise<RunReport> {
  const instance = loadConfig({ config: env.config }).instances[0]!;
  return runOnce({ fs, log: memoryLog() }, instance, { dryRun: false, force: false });
}

/** Every file under the rule folders, with its sha256. */
function archived(env: ArchiveEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rule of RULES) {
    const dir = join(env.archive, rule.name);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) out[`${rule.name}/${name}`] = sha256(readFileSync(join(dir, name)));
  }
  return out;
}

const tempsIn = (env: ArchiveEnv) => Object.keys(archived(env)).filter((p) => p.split('/')[1]!.startsWith(TEMP_PREFIX));
const stateTs = (env: ArchiveEnv) => (existsSync(env.state) ? (JSON.parse(readFileSync(env.state, 'utf8')) as { archived?: { ts: string } }).archived?.ts : undefined);

/** A FaultyFS that runs `change` at the second read of the source (the copy is under way: one chunk read). */
function changeAtSecondRead(env: ArchiveEnv, change: () => void): FaultyFS {
  const faulty = new FaultyFS(new OSFS(), { wrapError: fsError });
  let reads = 0;
  faulty.at((c: FsCall) => c.op === 'read' && c.path === env.source && ++reads === 2, () => {
    changed.add(faulty);
    change();
  });
  return faulty;
}
const changed = new WeakSet<FaultyFS>();

/** The change never ran (the copy made fewer than two reads): this trial is missed, and the test case fails, since it no longer covers anything. */
function expectChanged(faulty: FaultyFS): void {
  if (!changed.has(faulty)) figures.missed('the change was never made (fewer than two reads of the source)');
  expect(changed.has(faulty), 'the change at the second read of the source never ran').toBe(true);
}

const SIZE = 20 * 1024 * 1024 + 5; // three copy chunks

describe('the source changes during the copy (in-process, exact instant)', () => {
  it('replaced by rename (as Redis does): the old snapshot is archived complete; the next run archives the new one', async () => {
    const env = setupArchive({ rules: RULES });
    const old = writeSnapshot(env.source, { seed: 'old', mtime: OLD_MTIME, size: SIZE });
    const fresh = snapshotBytes('new', SIZE);
    const faulty = changeAtSecondRead(env, () => {
      writeFileSync(`${env.source}.tmp`, fresh);
      utimesSync(`${env.source}.tmp`, NEW_MTIME, NEW_MTIME);
      renameSync(`${env.source}.tmp`, env.source);
    });
    const r = await once(env, faulty);
    expectChanged(faulty);
    figures.input('replaced by rename mid-copy');
    expect(r.exitCode, r.error?.message).toBe(0);
    expect(r.snapshot?.ts).toBe(OLD_TS);
    expect(r.snapshot?.sha256).toBe(old.sha256);
    for (const rule of RULES) expect(archived(env)[`${rule.name}/dump-${OLD_TS}.rdb`]).toBe(old.sha256);
    expect(tempsIn(env)).toEqual([]);
    const next = await once(env);
    expect(next.exitCode, next.error?.message).toBe(0);
    expect(next.snapshot?.ts).toBe(NEW_TS);
    for (const rule of RULES) expect(archived(env)[`${rule.name}/dump-${NEW_TS}.rdb`]).toBe(sha256(fresh));
  });

  // [label, rewrite, is the file a valid snapshot afterwards?]
  const rewrites: Array<[string, (path: string, fresh: Buffer) => void, boolean]> = [
    ['truncated and rewritten (new mtime)', (path, fresh) => writeFileSync(path, fresh), true],
    ['rewritten with the same size and the mtime put back (cp -p over it)', (path, fresh) => {
      writeFileSync(path, fresh);
      utimesSync(path, OLD_MTIME, OLD_MTIME);
    }, true],
    ['bytes scribbled in the middle (new mtime)', (path) => {
      const fd = openSync(path, 'r+');
      writeSync(fd, Buffer.from('garbage'), 0, 7, 12 * 1024 * 1024);
      closeSync(fd);
    }, false],
    ['grown by appending, mtime put back', (path) => {
      writeFileSync(path, Buffer.from('tail'), { flag: 'a' });
      utimesSync(path, OLD_MTIME, OLD_MTIME);
    }, false],
  ];
  it.each(rewrites)('rewritten in place: %s: detected, exit 75, nothing archived; the next run archives it (or rejects it, 65, if it is now corrupt)', async (label, rewrite, validAfter) => {
    const env = setupArchive({ rules: RULES });
    writeSnapshot(env.source, { seed: 'old', mtime: OLD_MTIME, size: SIZE });
    const fresh = snapshotBytes('new', SIZE); // the same size as the old one
    expect(fresh.length).toBe(readFileSync(env.source).length);
    const faulty = changeAtSecondRead(env, () => rewrite(env.source, fresh));
    const r = await once(env, faulty);
    expectChanged(faulty);
    figures.input(`rewritten in place mid-copy: ${label}`);
    figures.outcome(`exit ${r.exitCode} (${label})`);
    expect(r.exitCode, r.error?.message).toBe(75);
    expect(r.error?.message).toMatch(/modified in place during the copy/);
    expect(r.error?.message).toContain(env.source);
    expect(archived(env), 'nothing archived, no temp left').toEqual({});
    expect(stateTs(env)).toBeUndefined();
    const next = await once(env);
    if (!validAfter) {
      expect(next.exitCode, next.error?.message).toBe(65);
      expect(archived(env)).toEqual({});
      return;
    }
    expect(next.exitCode, next.error?.message).toBe(0);
    const content = readFileSync(env.source);
    for (const rule of RULES) expect(archived(env)[`${rule.name}/dump-${next.snapshot!.ts}.rdb`]).toBe(sha256(content));
  });
});

describe('the source changes during the copy (real CLI, 64 MiB source)', () => {
  /** Starts `once`, waits until its temp copy exists, then runs `change`. */
  async function raceCli(env: ArchiveEnv, change: () => void) {
    const running = runNode(CLI_JS, ['once', '--json', '-c', env.config]);
    const dir = join(env.archive, 'last');
    const deadline = Date.now() + 20_000;
    let acted = false;
    while (Date.now() < deadline) {
      if (existsSync(dir) && readdirSync(dir).some((n) => n.startsWith(TEMP_PREFIX) && n.endsWith('.rdb'))) {
        change();
        acted = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    return { result: await running, acted };
  }

  const BIG = 64 * 1024 * 1024 + 11;

  it('replaced by rename while the real CLI copies: a complete snapshot (old or new) is archived, exit 0', async () => {
    const attempts = FULL ? 5 : 1;
    figures.plan(attempts);
    figures.random('a source changed while the real CLI copies: the change is made when the temp copy appears, so how far the copy had got depends on timing (a change that came after the run ended is counted as missed)');
    const failures: string[] = [];
    for (let i = 0; i < attempts; i += 1) {
      const env = setupArchive({ rules: RULES });
      const old = writeSnapshot(env.source, { seed: `old-${i}`, mtime: OLD_MTIME, size: BIG });
      const fresh = snapshotBytes(`new-${i}`, BIG);
      writeFileSync(`${env.source}.next`, fresh);
      utimesSync(`${env.source}.next`, NEW_MTIME, NEW_MTIME);
      const { result, acted } = await raceCli(env, () => renameSync(`${env.source}.next`, env.source));
      const problems: string[] = [];
      if (acted) figures.input('replaced by rename during a real CLI copy');
      if (result.code !== 0) problems.push(`exit ${result.code}: ${result.stdout} ${result.stderr}`);
      else {
        const out = JSON.parse(result.stdout) as { snapshot: { ts: string; sha256: string } };
        if (![old.sha256, sha256(fresh)].includes(out.snapshot.sha256)) problems.push(`archived ${out.snapshot.sha256}, neither the old nor the new snapshot`);
        for (const rule of RULES) if (archived(env)[`${rule.name}/dump-${out.snapshot.ts}.rdb`] !== out.snapshot.sha256) problems.push(`${rule.name}: the event differs from the reported snapshot`);
      }
      if (tempsIn(env).length > 0) problems.push(`temp files left: ${tempsIn(env).join(', ')}`);
      figures.result(`rename during a real copy #${i}`, { missed: acted ? undefined : 'the run ended before its temp copy was seen', violations: problems });
      failures.push(...problems.map((p) => `#${i}: ${p}`));
      rmSync(env.root, { recursive: true, force: true });
    }
    expect(failures, failures.join('\n')).toEqual([]);
  }, 180_000);

  it('rewritten in place while the real CLI copies: exit 75 and nothing archived; the next run archives', async () => {
    const attempts = FULL ? 5 : 1;
    figures.plan(attempts);
    const failures: string[] = [];
    for (let i = 0; i < attempts; i += 1) {
      const env = setupArchive({ rules: RULES });
      const old = writeSnapshot(env.source, { seed: `old-${i}`, mtime: OLD_MTIME, size: BIG });
      const fresh = snapshotBytes(`new-${i}`, BIG);
      // A careless `cp -p other.rdb dump.rdb`: same inode, new bytes, the old mtime put back.
      const { result, acted } = await raceCli(env, () => {
        const fd = openSync(env.source, 'r+');
        writeSync(fd, fresh, 0, fresh.length, 0);
        closeSync(fd);
        utimesSync(env.source, OLD_MTIME, OLD_MTIME);
      });
      const problems: string[] = [];
      let missed: string | undefined = acted ? undefined : 'the run ended before its temp copy was seen';
      if (stackTraceLines(result.stderr).length > 0) problems.push(`stack trace: ${stackTraceLines(result.stderr)[0]}`);
      if (acted && result.code === 0) {
        // The rewrite came after the copy had been read and checked: the old snapshot, complete, is archived. Not this trial's fault.
        const out = JSON.parse(result.stdout) as { snapshot: { sha256: string } };
        if (out.snapshot.sha256 === old.sha256) missed = 'the rewrite came after the copy had been read and checked';
        else problems.push(`exit 0 archiving ${out.snapshot.sha256}, not the old snapshot`);
      } else if (acted) {
        figures.input('rewritten in place during a real CLI copy');
        if (result.code !== 75) problems.push(`exit ${result.code}, expected 75: ${result.stdout} ${result.stderr}`);
        if (Object.keys(archived(env)).length > 0) problems.push(`something was archived: ${Object.keys(archived(env)).join(', ')}`);
      }
      const next = await runNode(CLI_JS, ['once', '--json', '-c', env.config]);
      if (next.code !== 0) problems.push(`the next run exited ${next.code}: ${next.stdout} ${next.stderr}`);
      else if (acted && !missed && (JSON.parse(next.stdout) as { snapshot: { sha256: string } }).snapshot.sha256 !== sha256(fresh)) problems.push('the next run did not archive the rewritten source');
      figures.result(`rewrite in place during a real copy #${i}`, { missed, violations: problems });
      failures.push(...problems.map((p) => `#${i}: ${p}`));
      rmSync(env.root, { recursive: true, force: true });
    }
    expect(failures, failures.join('\n')).toEqual([]);
  }, 180_000);
});

describe('a source that is not a regular file', () => {
  type Maker = (path: string, env: ArchiveEnv) => void;
  const kinds: Array<[string, Maker, RegExp]> = [
    ['missing', () => undefined, /does not exist/],
    ['a symlink to a valid dump', (path, env) => {
      const real = join(env.root, 'data', 'real.rdb');
      writeSnapshot(real, { seed: 'real', mtime: OLD_MTIME });
      symlinkSync(real, path);
    }, /symlink/],
    ['a dangling symlink', (path) => symlinkSync('/nonexistent/dump.rdb', path), /symlink/],
    ['a directory', (path) => mkdirSync(path), /directory/],
    ['a FIFO (nobody writing)', (path) => execFileSync('mkfifo', [path]), /FIFO|not a regular file/],
    ['a character device', (path) => execFileSync('mknod', [path, 'c', '1', '3']), /not a regular file/],
  ];

  it.each(kinds)('%s: exit 66, one clear line naming the path, nothing written, no hang', async (label, make, reason) => {
    const env = setupArchive({ rules: RULES });
    make(env.source, env);
    const r = await runNode(CLI_JS, ['once', '-c', env.config], { timeoutMs: 15_000 });
    figures.input(`source is ${label}`);
    figures.outcome(`exit ${r.code} (source ${label})`);
    expect(r.signal, 'the run hung and was killed').toBeNull();
    expect(r.code, r.stdout + r.stderr).toBe(66);
    expect(r.stdout).toContain(env.source);
    expect(r.stdout).toMatch(reason);
    expect(stackTraceLines(r.stderr)).toEqual([]);
    expect(archived(env)).toEqual({});
  });

  it.each(kinds.filter(([label]) => label !== 'missing'))('swapped in for %s between the watcher and the worker: exit 66, no hang', async (label, make, reason) => {
    const env = setupArchive({ rules: RULES });
    writeSnapshot(env.source, { seed: 'regular', mtime: OLD_MTIME });
    const faulty = new FaultyFS(new OSFS(), { wrapError: fsError });
    // The worker's open of the source: after the watcher's lstat saw a regular file.
    faulty.at((c) => c.op === 'open' && c.path === env.source, () => {
      unlinkSync(env.source);
      make(env.source, env);
    });
    const started = Date.now();
    const r = await once(env, faulty);
    figures.input(`source swapped for ${label} before the worker's open`);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(r.exitCode, r.error?.message).toBe(66);
    expect(r.error?.message).toContain(env.source);
    expect(r.error?.message).toMatch(reason);
    expect(archived(env)).toEqual({});
  });
});
