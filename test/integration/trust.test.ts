/**
 * What the CLI refuses to trust, through the real CLI: a config file that is
 * not a small regular file (issue 10, item 13), and a config or hook
 * executable another user could change (item 8, sshd's StrictModes).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

describe('config file: a regular file under 1 MiB', () => {
  it('-c /dev/zero exits 2 at once instead of reading until out of memory', async () => {
    const r = await runCli(['list', '-c', '/dev/zero'], { timeoutMs: 15_000 });
    expect(r.signal, 'killed by the test timeout').toBeNull();
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/\/dev\/zero: is a character device: the config must be a regular file/);
  });

  it('a FIFO exits 2 at once instead of blocking on a writer that never comes', async () => {
    const env = setupArchive();
    const fifo = join(env.root, 'config.fifo');
    execFileSync('mkfifo', [fifo]);
    const r = await runCli(['once', '-c', fifo], { timeoutMs: 15_000 });
    expect(r.signal, 'killed by the test timeout: the open blocked').toBeNull();
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/is a FIFO \(named pipe\): the config must be a regular file/);
  });

  it('a config larger than 1 MiB exits 2, naming the limit; nothing is archived', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    writeSnapshot(env.source, { seed: 'big', mtime: new Date('2025-06-01T10:00:00Z') });
    env.writeConfig({ extra: `# ${'x'.repeat(1024 * 1024)}` });
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/must not be larger than 1048576 bytes \(1 MiB\)/);
    expect(existsSync(join(env.archive, 'last'))).toBe(false);
  });
});

describe('StrictModes: config and hook executables another user could change', () => {
  it('a world-writable config is refused with exit 2 and the reason; chmod go-w makes it work', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    writeSnapshot(env.source, { seed: 'ww', mtime: new Date('2025-06-01T10:00:00Z') });
    chmodSync(env.config, 0o666);
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`the config file ${env.config} is writable by its group and by everyone (mode 0666)`);
    expect(r.stderr).toContain(`chmod go-w ${env.config}`);
    expect(existsSync(join(env.archive, 'last'))).toBe(false);
    chmodSync(env.config, 0o644);
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
  });

  it('a group-writable config is refused by read-only commands too (list: 2, check: UNKNOWN 3)', async () => {
    const env = setupArchive();
    chmodSync(env.config, 0o660);
    const list = await runCli(['list', '-c', env.config]);
    expect(list.code, list.stderr).toBe(2);
    expect(list.stderr).toContain('is writable by its group (mode 0660)');
    // check is a monitoring plugin: a config it cannot use is UNKNOWN, as for any config error.
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stderr).toBe(3);
    expect(check.stdout).toContain('is writable by its group (mode 0660)');
  });

  it('a config in a folder others can write (no sticky bit) is refused: the file could be replaced', async () => {
    const env = setupArchive();
    const dir = join(env.root, 'conf.d');
    mkdirSync(dir);
    const config = join(dir, 'config.yaml');
    writeFileSync(config, `source:\n  rdb: ${env.source}\narchive:\n  dir: ${env.archive}\n`);
    chmodSync(dir, 0o777);
    const r = await runCli(['list', '-c', config]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`the folder holding the config file ${dir} is writable by its group and by everyone (mode 0777)`);
    chmodSync(dir, 0o1777); // sticky, like /tmp: others cannot replace a file they do not own
    expect((await runCli(['list', '-c', config])).code).toBe(0);
  });

  it.skipIf(!isRoot)('a config owned by another user (nobody) is refused when root runs it, naming both users', async () => {
    const env = setupArchive();
    chownSync(env.config, NOBODY, NOBODY);
    const r = await runCli(['list', '-c', env.config]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`the config file ${env.config} is owned by nobody (uid ${NOBODY}), not by root (uid 0) (who runs rdb-archiver) or root`);
  });

  it('a world-writable on_failure hook executable is refused with exit 2 before anything runs', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 3 }] });
    const hook = join(env.root, 'alert.sh');
    const marker = join(env.root, 'hook-ran');
    writeFileSync(hook, `#!/bin/sh\ntouch ${marker}\n`);
    chmodSync(hook, 0o777);
    env.writeConfig({ extra: `hooks:\n  on_failure: ["${hook}"]` });
    // The source is missing: without the check the run would fail (66) and run the hook.
    const r = await runCli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`hooks.on_failure: refused: the hook executable ${hook} is writable by its group and by everyone (mode 0777)`);
    expect(existsSync(marker)).toBe(false);
    // Read-only commands run no hooks, and do not refuse over them.
    expect((await runCli(['list', '-c', env.config])).code).toBe(0);
    chmodSync(hook, 0o755);
    const ok = await runCli(['once', '-c', env.config]);
    expect(ok.code, ok.stderr).toBe(66);
    expect(existsSync(marker)).toBe(true);
  });
});
