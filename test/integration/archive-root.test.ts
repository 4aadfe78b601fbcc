/**
 * The archive root, through the real CLI (issue 10 items 7 and 11): it must
 * exist unless archive.create is set (an unmounted disk must not fill the
 * root filesystem), a writing run must be its owner's (a run as root into
 * redis's archive must not leave root-owned files), and sharing the source's
 * filesystem is reported.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { CLI } from '../helpers/cli.js';
import { listTree, setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/** A config with one rule `last` and extra lines under `archive:`. */
function writeConfigWithArchive(env: ArchiveEnv, dir: string, archiveLines: string[]): void {
  writeFileSync(env.config, [
    'source:', `  rdb: ${env.source}`, 'archive:', `  dir: ${dir}`, ...archiveLines.map((l) => `  ${l}`),
    'rules:', '  - name: last', '    count: 3', '',
  ].join('\n'));
}

describe('archive root must exist (archive.create)', () => {
  it('once, once --dry-run and prune exit 69 when the root is missing, and create nothing', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    rmSync(env.archive, { recursive: true });
    writeSnapshot(env.source, { seed: 'm', mtime: new Date('2025-06-01T10:00:00Z') });
    for (const args of [['once'], ['once', '--dry-run'], ['prune']]) {
      const r = await runCli([...args, '-c', env.config]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(69);
      expect(r.stdout + r.stderr).toContain(`${env.archive}: archive root does not exist: is the backup disk mounted? Nothing was written.`);
      expect(r.stdout + r.stderr).toContain('archive.create: true');
      expect(existsSync(env.archive), 'the root was created').toBe(false);
    }
  });

  it('with archive.create: true a missing root is made (0700) and the run archives', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    rmSync(env.archive, { recursive: true });
    writeConfigWithArchive(env, join(env.archive, 'sub'), ['create: true']);
    writeSnapshot(env.source, { seed: 'c', mtime: new Date('2025-06-01T10:00:00Z') });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(statSync(join(env.archive, 'sub')).mode & 0o7777).toBe(0o700);
    expect(readdirSync(join(env.archive, 'sub', 'last')).some((n) => n.endsWith('.rdb'))).toBe(true);
  });

  it('check is CRITICAL, naming the missing root; status says so', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    writeSnapshot(env.source, { seed: 'k', mtime: new Date() });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    rmSync(env.archive, { recursive: true });
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
    expect(check.stdout).toContain(`archive root ${env.archive} is missing (is the backup disk mounted?)`);
    const status = await runCli(['status', '-c', env.config]);
    expect(status.stdout).toContain(`warning: the archive root ${env.archive} does not exist`);
  });
});

describe('archive on the same filesystem as the source', () => {
  it('once notes it (output, --json notes, warn log), status warns, check stays OK with a note', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    writeSnapshot(env.source, { seed: 's', mtime: new Date() });
    const r = await runCli(['once', '-c', env.config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const warning = `the archive ${env.archive} is on the same filesystem as the source ${env.source}`;
    expect(jsonOf<{ notes: string[] }>(r).notes.some((w) => w.startsWith(warning))).toBe(true);
    expect(r.stderr).toContain(warning);
    const text = await runCli(['once', '--force', '-c', env.config]);
    expect(text.stdout).toContain(`note: ${warning}`);
    const status = await runCli(['status', '-c', env.config, '--json']);
    expect(jsonOf<{ archive: { sameFilesystemAsSource: boolean } }>(status).archive.sameFilesystemAsSource).toBe(true);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(0);
    expect(check.stdout).toContain('note: archive on the same filesystem as the source');
  });
});

describe.skipIf(!isRoot)('a writing run must be the archive owner\'s (needs root to chown)', () => {
  it('once, prune and daemon as root into an archive owned by nobody exit 77 at once, naming both users and the fix; nothing is written', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    chownSync(env.archive, NOBODY, NOBODY);
    writeSnapshot(env.source, { seed: 'o', mtime: new Date('2025-06-01T10:00:00Z') });
    const before = listTree(env.archive);
    for (const args of [['once'], ['prune'], ['daemon', '--schedule', '* * * * * *']]) {
      const r = await runCli([...args, '-c', env.config], { timeoutMs: 20_000 });
      expect(r.signal, `${args[0]} did not stop at once`).toBeNull();
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(77);
      const out = r.stdout + r.stderr;
      expect(out).toContain(`${env.archive}: the archive belongs to nobody (uid ${NOBODY}), but this run is root (uid 0)`);
      expect(out).toContain('sudo -u nobody rdb-archiver');
      expect(out).toContain('--allow-owner-mismatch');
      expect(listTree(env.archive)).toEqual(before);
    }
  });

  it('--allow-owner-mismatch overrides; read-only commands (list, verify, status, check) work as root on nobody\'s archive', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: new Date() });
    chownSync(env.archive, NOBODY, NOBODY);
    const r = await runCli(['--allow-owner-mismatch', 'once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    for (const command of ['list', 'verify', 'status', 'check']) {
      const ro = await runCli([command, '-c', env.config]);
      expect(ro.code, `${command}: ${ro.stdout}${ro.stderr}`).toBe(0);
    }
  });

  it('read-only commands work as another user (nobody) with read access to root\'s archive', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    writeSnapshot(env.source, { seed: 'n', mtime: new Date() });
    writeConfigWithArchive(env, env.archive, ['dir_mode: "0755"', 'file_mode: "0644"']);
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    for (const path of [env.root, env.archive, join(env.root, 'data')]) chmodSync(path, 0o755);
    chmodSync(env.source, 0o644);
    chmodSync(env.state, 0o644);
    chmodSync(join(env.archive, '.rdb-archiver'), 0o755);
    for (const command of ['list', 'verify', 'status']) {
      const ro = spawnSync(process.execPath, [CLI, command, '-c', env.config], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
      expect(ro.status, `${command}: ${ro.stdout}${ro.stderr}`).toBe(0);
    }
    // A writing command as nobody is refused by the owner check, before any permission error.
    const once = spawnSync(process.execPath, [CLI, 'once', '-c', env.config], { uid: NOBODY, gid: NOBODY, encoding: 'utf8' });
    expect(once.status, once.stderr).toBe(77);
    expect(once.stdout + once.stderr).toContain('the archive belongs to root (uid 0), but this run is nobody (uid 65534)');
  });
});
