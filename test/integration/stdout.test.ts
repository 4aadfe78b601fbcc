/**
 * A closed stdout (`rdb-archiver list | head -1`): the reader went away, the
 * run must not. Each command runs through the real CLI with stdout a pipe the
 * test closes before the CLI writes to it, so every write gets EPIPE. The
 * exit code must be the run's own, with no stack trace, and `once` must still
 * write its state and the metrics textfile.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, runCli } from '../helpers/cli.js';
import { readJson, setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

interface Closed {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs the CLI with stdout a pipe whose reading end is closed at once. */
function runWithClosedStdout(args: string[]): Promise<Closed> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.RDB_ARCHIVER_CONFIG;
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader is gone before the CLI has loaded
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr });
    });
  });
}

/** An archive with three events in `last` (enough output for several lines). */
async function filled(extra?: string): Promise<ArchiveEnv> {
  const env = setupArchive({ rules: [{ name: 'last', count: 5 }], extra });
  for (const [i, hour] of ['08', '09', '10'].entries()) {
    writeSnapshot(env.source, { seed: `s${i}`, mtime: new Date(`2025-06-01T${hour}:00:00Z`) });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
  }
  return env;
}

function expectNoCrash(r: Closed): void {
  expect(r.signal).toBeNull();
  expect(r.stderr).not.toMatch(/EPIPE|Unhandled 'error' event|\n\s+at /);
}

describe('a closed stdout', () => {
  it.each([
    ['list', [] as string[]],
    ['verify', []],
    ['prune', ['--dry-run']],
    ['status', []],
    ['list', ['--json']],
  ])('%s %s exits 0 without a stack trace', async (command, flags) => {
    const env = await filled();
    const r = await runWithClosedStdout([command, ...flags, '-c', env.config]);
    expectNoCrash(r);
    expect(r.code, r.stderr).toBe(0);
  });

  it('check keeps its plugin exit code', async () => {
    const env = await filled();
    // The newest snapshot is from 2025: CRITICAL by age, whatever happens to stdout.
    const r = await runWithClosedStdout(['check', '-c', env.config]);
    expectNoCrash(r);
    expect(r.code).toBe(2);
  });

  it('once archives, writes its state and the metrics textfile, and exits 0', async () => {
    const env = await filled();
    const prom = join(env.root, 'metrics', 'rdb.prom');
    env.writeConfig({ extra: `metrics:\n  textfile: ${prom}` });
    writeSnapshot(env.source, { seed: 'new', mtime: new Date('2025-06-01T11:00:00Z') });
    const r = await runWithClosedStdout(['once', '-c', env.config]);
    expectNoCrash(r);
    expect(r.code, r.stderr).toBe(0);
    const state = readJson<{ archived: { ts: string }; lastRun: { exitCode: number } }>(env.state);
    expect(state.archived.ts).toBe('2025-06-01T11-00-00');
    expect(state.lastRun.exitCode).toBe(0);
    expect(existsSync(join(env.archive, 'last', 'dump-2025-06-01T11-00-00.rdb'))).toBe(true);
    expect(readFileSync(prom, 'utf8')).toMatch(/^rdb_archiver_last_snapshot_timestamp_seconds\{redis_instance="default"\} 1748775600$/m);
  });

  it('once keeps the failed run\'s own exit code (65 for an invalid source)', async () => {
    const env = await filled();
    writeSnapshot(env.source, { seed: 'x', mtime: new Date('2025-06-01T11:00:00Z') });
    // Corrupt the magic: not an RDB file any more.
    const bytes = readFileSync(env.source);
    bytes.write('XXXXX', 0);
    writeFileSync(env.source, bytes);
    utimesSync(env.source, new Date('2025-06-01T11:00:00Z'), new Date('2025-06-01T11:00:00Z'));
    const r = await runWithClosedStdout(['once', '-c', env.config]);
    expectNoCrash(r);
    expect(r.code, r.stderr).toBe(65);
    expect(readJson<{ lastRun: { exitCode: number } }>(env.state).lastRun.exitCode).toBe(65);
  });

  it('`list | true` under pipefail gives the CLI\'s own exit code, 0', async () => {
    const env = await filled();
    // `true` exits without reading: the CLI (slower to start) writes into a closed pipe.
    const r = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${CLI}" list -c "${env.config}" | true`], { encoding: 'utf8' });
    expect(r.stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(r.status, r.stderr).toBe(0);
  });
});
