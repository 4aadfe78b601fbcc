/**
 * Hooks through the real CLI: when each runs, the environment it gets, its
 * output in the log, and the timeout (process group, SIGTERM then SIGKILL).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { duplicateKeys, logLines, runCli } from '../helpers/cli.js';
import { until } from '../helpers/daemon.js';
import { readJson, setupArchive, writeSnapshot } from '../helpers/snapshots.js';

/** A hook script that records its RDB_ARCHIVER_* environment as <dir>/<label>-<n>.json and prints a line. */
function recorder(dir: string): string {
  const script = join(dir, 'record-hook.mjs');
  writeFileSync(script, [
    "import { readdirSync, writeFileSync } from 'node:fs';",
    "const [dir, label] = process.argv.slice(2);",
    "const n = readdirSync(dir).filter((f) => f.startsWith(label + '-')).length + 1;",
    "const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('RDB_ARCHIVER_')));",
    "writeFileSync(`${dir}/${label}-${n}.json`, JSON.stringify(env));",
    "console.log(`hello from ${label} ${n}`);",
    "console.error('a line on stderr');",
  ].join('\n'));
  return script;
}

const calls = (dir: string, label: string) => readdirSync(dir).filter((f) => f.startsWith(`${label}-`)).sort();
const envOf = (dir: string, file: string) => readJson<Record<string, string>>(join(dir, file));

/** A process is gone (or a zombie waiting for its reaper, which is as dead as a process gets). */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

describe('hooks', () => {
  it('after_archive gets the new event, after_prune what retention deleted; output goes to the log', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 1 }, { name: 'all', count: 10 }], nodes: true });
    const script = recorder(env.root);
    const hook = (label: string) => JSON.stringify([process.execPath, script, env.root, label]);
    env.writeConfig({ extra: `hooks:\n  after_archive: ${hook('archive')}\n  after_prune: ${hook('prune')}\n  on_failure: ${hook('failure')}` });

    const snap = writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-09-01T10:00:00Z') });
    writeFileSync(env.nodes!, 'abc 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\nvars currentEpoch 1 lastVoteEpoch 0\n');
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(calls(env.root, 'archive')).toEqual(['archive-1.json']);
    expect(calls(env.root, 'prune')).toEqual([]); // nothing was deleted
    const e = envOf(env.root, 'archive-1.json');
    expect(e).toEqual({
      RDB_ARCHIVER_HOOK: 'after_archive',
      RDB_ARCHIVER_INSTANCE: 'default',
      RDB_ARCHIVER_ARCHIVE_DIR: env.archive,
      RDB_ARCHIVER_TS: '2025-09-01T10-00-00',
      RDB_ARCHIVER_RDB_PATH: join(env.archive, 'last', 'dump-2025-09-01T10-00-00.rdb'),
      RDB_ARCHIVER_NODES_PATH: join(env.archive, 'last', 'nodes-2025-09-01T10-00-00.config'),
      RDB_ARCHIVER_SHA256: snap.sha256,
      RDB_ARCHIVER_BYTES: String(snap.length),
      RDB_ARCHIVER_STATUS: 'archived',
      RDB_ARCHIVER_ERROR: '',
      RDB_ARCHIVER_EXIT_CODE: '0',
      RDB_ARCHIVER_DELETED: '',
    });
    expect(createHash('sha256').update(readFileSync(e.RDB_ARCHIVER_RDB_PATH!)).digest('hex')).toBe(snap.sha256);
    expect(existsSync(e.RDB_ARCHIVER_NODES_PATH!)).toBe(true);
    const out = logLines(r).filter((l) => l.msg === 'hook output');
    expect(out).toContainEqual(expect.objectContaining({ hook: 'after_archive', stream: 'stdout', line: 'hello from archive 1', level: 30 }));
    expect(out).toContainEqual(expect.objectContaining({ hook: 'after_archive', stream: 'stderr', line: 'a line on stderr', level: 40 }));

    // Unchanged source: no hook at all.
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    expect(readdirSync(env.root).filter((f) => f.endsWith('.json'))).toHaveLength(1);

    // A new snapshot pushes the old one out of "last": after_archive, then after_prune with the deletion.
    writeSnapshot(env.source, { seed: 'b', mtime: new Date('2025-09-01T11:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    expect(calls(env.root, 'archive')).toEqual(['archive-1.json', 'archive-2.json']);
    expect(calls(env.root, 'prune')).toEqual(['prune-1.json']);
    expect(envOf(env.root, 'prune-1.json')).toMatchObject({ RDB_ARCHIVER_HOOK: 'after_prune', RDB_ARCHIVER_STATUS: 'pruned', RDB_ARCHIVER_DELETED: 'last/2025-09-01T10-00-00', RDB_ARCHIVER_TS: '' });
    expect(calls(env.root, 'failure')).toEqual([]);
  });

  it('on_failure gets the error; a failing hook is logged and counted but changes neither the exit code nor the archive', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    const script = recorder(env.root);
    env.writeConfig({ extra: [
      'hooks:',
      '  after_archive: ["sh", "-c", "echo shipping failed >&2; exit 3"]',
      `  on_failure: ${JSON.stringify([process.execPath, script, env.root, 'failure'])}`,
    ].join('\n') });

    // The source is missing: the run fails with 66 whatever the hook does.
    let r = await runCli(['once', '-c', env.config]);
    expect(r.code).toBe(66);
    expect(envOf(env.root, 'failure-1.json')).toMatchObject({
      RDB_ARCHIVER_HOOK: 'on_failure',
      RDB_ARCHIVER_STATUS: 'failed',
      RDB_ARCHIVER_EXIT_CODE: '66',
      RDB_ARCHIVER_TS: '',
      RDB_ARCHIVER_RDB_PATH: '',
    });
    expect(envOf(env.root, 'failure-1.json').RDB_ARCHIVER_ERROR).toContain('does not exist');

    const snap = writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-09-02T10:00:00Z') });
    r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    const failed = logLines(r).find((l) => l.msg === 'hook failed');
    expect(failed).toMatchObject({ level: 50, hook: 'after_archive', exitCode: 3, err: 'exited with status 3' });
    expect(readFileSync(join(env.archive, 'last', 'dump-2025-09-02T10-00-00.rdb')).equals(snap.bytes)).toBe(true);
    const state = readJson<{ counters: Record<string, number>; archived: { ts: string } }>(env.state);
    expect(state.counters.hook_failures_after_archive).toBe(1);
    expect(state.archived.ts).toBe('2025-09-02T10-00-00');
    expect(calls(env.root, 'failure')).toEqual(['failure-1.json']); // a failed hook is not a failed run
  });

  it('a hook that cannot start is a counted failure, not a failed run', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }], extra: 'hooks:\n  after_archive: ["/nonexistent/rdb-ship"]' });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-09-02T12:00:00Z') });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(logLines(r).find((l) => l.msg === 'hook failed')).toMatchObject({ level: 50, err: 'could not start /nonexistent/rdb-ship: ENOENT' });
    expect(readJson<{ counters: Record<string, number> }>(env.state).counters.hook_failures_after_archive).toBe(1);
  });

  it('a hook that outlives hooks.timeout is stopped with its whole process group', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    const pidFile = join(env.root, 'bg.pid');
    env.writeConfig({ extra: `hooks:\n  timeout: 1s\n  after_archive: ["sh", "-c", "sleep 60 & echo $! > ${pidFile}; wait"]` });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-09-03T10:00:00Z') });
    const started = Date.now();
    const r = await runCli(['once', '-c', env.config]);
    const took = Date.now() - started;
    expect(r.code, r.stderr).toBe(0);
    expect(took).toBeGreaterThanOrEqual(1000);
    expect(took).toBeLessThan(8000);
    expect(logLines(r).find((l) => l.msg === 'hook failed')).toMatchObject({ timedOut: true, err: 'timed out after 1000 ms and was killed' });
    const bg = Number(readFileSync(pidFile, 'utf8'));
    await until(() => isGone(bg), 3000, `background process ${bg} of the hook to be gone`);
    expect(readJson<{ counters: Record<string, number> }>(env.state).counters.hook_failures_after_archive).toBe(1);
  });

  it('processes a hook leaves behind are stopped when it exits', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    const pidFile = join(env.root, 'left.pid');
    env.writeConfig({ extra: `hooks:\n  after_archive: ["sh", "-c", "sleep 60 & echo $! > ${pidFile}"]` });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-09-03T12:00:00Z') });
    const started = Date.now();
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(Date.now() - started).toBeLessThan(5000);
    const line = r.stderr.split('\n').find((l) => l.includes('"hook left processes behind: SIGTERM to its process group"'));
    expect(line, r.stderr).toBeDefined();
    // The hook's pid is not pino's "pid" (the archiver's) a second time.
    expect(duplicateKeys(line!)).toEqual([]);
    expect(JSON.parse(line!)).toMatchObject({ pid: expect.any(Number), hookPid: expect.any(Number), hook: 'after_archive' });
    for (const l of r.stderr.split('\n').filter((x) => x.startsWith('{'))) expect(duplicateKeys(l), l).toEqual([]);
    const left = Number(readFileSync(pidFile, 'utf8'));
    await until(() => isGone(left), 3000, `process ${left} left by the hook to be gone`);
  });

  it('a hook that ignores SIGTERM is killed with SIGKILL after the grace period', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    const pidFile = join(env.root, 'stubborn.pid');
    env.writeConfig({ extra: `hooks:\n  timeout: 1s\n  after_archive: ["sh", "-c", "trap '' TERM; echo $$ > ${pidFile}; while :; do sleep 1; done"]` });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-09-04T10:00:00Z') });
    const started = Date.now();
    const r = await runCli(['once', '-c', env.config]);
    const took = Date.now() - started;
    expect(r.code, r.stderr).toBe(0);
    expect(took).toBeGreaterThanOrEqual(1000 + 3000); // timeout + grace
    expect(took).toBeLessThan(12_000);
    expect(logLines(r).some((l) => l.msg === 'hook still running: SIGKILL to its process group')).toBe(true);
    expect(logLines(r).find((l) => l.msg === 'hook failed')).toMatchObject({ timedOut: true, signal: 'SIGKILL' });
    expect(isGone(Number(readFileSync(pidFile, 'utf8')))).toBe(true);
    unlinkSync(pidFile);
  });
});
