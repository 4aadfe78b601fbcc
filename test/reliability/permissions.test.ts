/**
 * Promise 8, permissions: archived files are 0600 and folders 0700 by
 * default, or exactly as configured, whatever the umask; another user
 * (nobody) cannot read them, while the same user can read a file the test
 * makes world-readable next to them (so the refusal comes from our modes,
 * not from the test setup).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';
import { CLI_JS, Figures } from './common.js';

const figures = new Figures('permissions', 'Permissions of archived files and folders');

const NOBODY = { uid: 65534, gid: 65534 };
const isRoot = process.getuid?.() === 0;

/** Runs the CLI under a given umask (through sh, which can set it). */
function onceWithUmask(env: ArchiveEnv, umask: string): { status: number | null; out: string } {
  const r = spawnSync('sh', ['-c', `umask ${umask} && exec "${process.execPath}" "${CLI_JS}" once -c "${env.config}"`], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

const mode = (path: string) => statSync(path).mode & 0o7777;

/** Every path the tool created: archive dir, rule folders, their files, the state folder and file. */
function created(env: ArchiveEnv, rules: string[]): { dirs: string[]; files: string[] } {
  const dirs = [env.archive, ...rules.map((r) => join(env.archive, r)), join(env.archive, '.rdb-archiver')];
  const files = [
    ...rules.flatMap((r) => readdirSync(join(env.archive, r)).map((n) => join(env.archive, r, n))),
    env.state,
  ];
  return { dirs, files };
}

/** Tries to read a file as nobody; returns cat's exit status and stderr. */
function readAsNobody(path: string): { status: number | null; stderr: string } {
  const r = spawnSync('cat', [path], { ...NOBODY, encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

function listAsNobody(path: string): { status: number | null; stderr: string } {
  const r = spawnSync('ls', [path], { ...NOBODY, encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

describe('permissions', () => {
  it.each(['000', '022', '077'])('default modes under umask %s: files 0600 (state too), folders 0700', (umask) => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 3 }, { name: 'daily', every: 'day', count: 3 }], nodes: true });
    writeSnapshot(env.source, { seed: 'p', mtime: new Date('2025-06-01T10:00:00Z') });
    writeFileSync(env.nodes!, 'abc 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\nvars currentEpoch 1 lastVoteEpoch 0\n');
    const r = onceWithUmask(env, umask);
    figures.input(`umask ${umask}, default modes`);
    expect(r.status, r.out).toBe(0);
    const { dirs, files } = created(env, ['hourly', 'daily']);
    expect(files.length).toBe(9); // rdb + sha256 + nodes + archive record in two folders, and the state
    for (const d of dirs) expect(mode(d).toString(8), d).toBe('700');
    for (const f of files) expect(mode(f).toString(8), f).toBe('600');
  });

  it.each([['0640', '0750'], ['0400', '0500'], ['0644', '0755']])('configured file_mode %s and dir_mode %s are applied exactly, under umask 077 and 000', (fileMode, dirMode) => {
    for (const umask of ['077', '000']) {
      const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
      // archive.create: the tool makes the root, so dir_mode applies to it too.
      rmSync(env.archive, { recursive: true });
      const text = `source:\n  rdb: ${env.source}\narchive:\n  dir: ${env.archive}\n  create: true\n  file_mode: "${fileMode}"\n  dir_mode: "${dirMode}"\nrules:\n  - name: last\n    count: 3\n`;
      writeFileSync(env.config, text);
      writeSnapshot(env.source, { seed: 'q', mtime: new Date('2025-06-01T10:00:00Z') });
      const r = onceWithUmask(env, umask);
      figures.input(`file_mode ${fileMode}, dir_mode ${dirMode}, umask ${umask}`);
      expect(r.status, r.out).toBe(0);
      for (const d of [env.archive, join(env.archive, 'last')]) expect(mode(d).toString(8).padStart(4, '0'), d).toBe(dirMode);
      for (const n of readdirSync(join(env.archive, 'last'))) expect(mode(join(env.archive, 'last', n)).toString(8).padStart(4, '0'), n).toBe(fileMode);
      // The state stays private whatever the archive modes.
      expect(mode(env.state).toString(8)).toBe('600');
    }
  });

  it.runIf(isRoot)('another user (nobody) cannot read an archived snapshot or list a rule folder; the same user can read a world-readable control file', () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    writeSnapshot(env.source, { seed: 'secret', mtime: new Date('2025-06-01T10:00:00Z') });
    const r = onceWithUmask(env, '022');
    expect(r.status, r.out).toBe(0);
    // Let nobody walk down to the archive: the temp root and its parents are traversable.
    for (let d = env.root; d !== dirname(d); d = dirname(d)) {
      if ((statSync(d).mode & 0o001) === 0) chmodSync(d, statSync(d).mode | 0o055);
    }
    const control = join(env.root, 'control.txt');
    writeFileSync(control, 'readable', { mode: 0o644 });
    chmodSync(control, 0o644);
    expect(readAsNobody(control).status, 'the control file must be readable by nobody').toBe(0);

    const rdb = join(env.archive, 'last', 'dump-2025-06-01T10-00-00.rdb');
    figures.input('read by another user');
    const asNobody = readAsNobody(rdb);
    expect(asNobody.status).not.toBe(0);
    expect(asNobody.stderr).toMatch(/Permission denied/);
    expect(listAsNobody(join(env.archive, 'last')).stderr).toMatch(/Permission denied/);
    expect(readAsNobody(env.state).status).not.toBe(0);
    // Even with the rule folder opened up, the file's own 0600 refuses.
    chmodSync(env.archive, 0o755);
    chmodSync(join(env.archive, 'last'), 0o755);
    const direct = readAsNobody(rdb);
    expect(direct.status).not.toBe(0);
    expect(direct.stderr).toMatch(/Permission denied/);
  });
});
