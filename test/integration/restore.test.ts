/**
 * `restore` through the real CLI: finds the event, verifies it, writes it
 * atomically, never overwrites without --force, and says how to load it.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, logLines, runCli } from '../helpers/cli.js';
import { NODES_CONF, writeEvent } from '../helpers/events.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';
import type { RestoreReport } from '../../src/commands/restore.js';

/** What `restore --json` prints: the report without its instance name. */
type RestoreJson = Omit<RestoreReport, 'instance'>;

describe('rdb-archiver restore', () => {
  it('restores latest: verified, mode 0600, no temp file left, and prints the steps to load it into Redis', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 48 }, { name: 'last', count: 5 }] });
    writeSnapshot(env.source, { seed: 'old', mtime: new Date('2025-02-24T22:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const latest = writeSnapshot(env.source, { seed: 'new', mtime: new Date('2025-02-24T23:59:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);

    const target = join(env.root, 'restore');
    mkdirSync(target);
    const r = await runCli(['restore', 'latest', '--to', join(target, 'dump.rdb'), '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(jsonOf<RestoreJson>(r)).toMatchObject({
      status: 'restored', ts: '2025-02-24T23-59-00', rule: 'hourly', to: join(target, 'dump.rdb'), bytes: latest.length,
      sha256: latest.sha256, redisVersion: '7.2.4', ctime: '2025-01-01T00:00:00Z', nodes: null, replaced: [], exitCode: 0,
    });
    expect(readFileSync(join(target, 'dump.rdb')).equals(latest.bytes)).toBe(true);
    expect(statSync(join(target, 'dump.rdb')).mode & 0o777).toBe(0o600);
    expect(readdirSync(target)).toEqual(['dump.rdb']);

    // Human output: the exact follow-up steps, with this path.
    const other = join(env.root, "it's here");
    mkdirSync(other);
    const human = await runCli(['restore', 'latest', '--to', other, '-c', env.config]);
    expect(human.code, human.stderr).toBe(0);
    const out = human.stdout;
    expect(out).toContain('restored 2025-02-24T23-59-00 from hourly (verified: sha256 and RDB CRC-64)');
    for (const step of ['redis-cli CONFIG GET dir', 'redis-cli CONFIG GET dbfilename', 'redis-cli CONFIG GET appendonly', 'loads the AOF at startup, NOT the RDB',
      'systemctl stop redis-server', `mv '${other}/dump.rdb' "$DIR/$DBFILENAME"`.replace("it's", "it'\\''s"), 'chown redis:redis "$DIR/$DBFILENAME"', 'systemctl start redis-server']) {
      expect(out).toContain(step);
    }
    // Stop comes before placing the file, which comes before the start.
    expect(out.indexOf('systemctl stop')).toBeLessThan(out.indexOf('mv '));
    expect(out.indexOf('mv ')).toBeLessThan(out.indexOf('systemctl start'));
  });

  it('refuses to overwrite an existing file without --force (exit 73); --force replaces it atomically', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    const first = writeEvent(env.archive, ['all'], '2025-01-01T00-00-00', { seed: 'first' });
    writeEvent(env.archive, ['all'], '2025-01-02T00-00-00', { seed: 'second' });
    const target = join(env.root, 'dump.rdb');
    writeFileSync(target, 'precious');

    const refused = await runCli(['restore', 'latest', '--to', target, '--json', '-c', env.config]);
    expect(refused.code).toBe(73);
    expect(jsonOf<RestoreJson>(refused).error!.message).toMatch(/exists; refusing to overwrite it \(add --force/);
    expect(readFileSync(target, 'utf8')).toBe('precious');
    expect(readdirSync(env.root).filter((f) => f.startsWith('.tmp'))).toEqual([]);

    // A specific event, named in ISO form.
    const forced = await runCli(['restore', '2025-01-01T00:00:00Z', '--to', target, '--force', '--json', '-c', env.config]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(jsonOf<RestoreJson>(forced)).toMatchObject({ ts: '2025-01-01T00-00-00', replaced: [target] });
    expect(readFileSync(target).equals(first.rdb)).toBe(true);
    expect(statSync(target).mode & 0o777).toBe(0o600);
  });

  it('finds events by rule, and fails clearly: unknown event 66, bad timestamp 2, missing folder 2, target inside the archive 2', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 5 }, { name: 'b', count: 5 }] });
    const older = writeEvent(env.archive, ['a', 'b'], '2025-01-01T00-00-00');
    writeEvent(env.archive, ['a'], '2025-01-02T00-00-00');
    const dir = join(env.root, 'out');
    mkdirSync(dir);

    const fromB = await runCli(['restore', 'latest', '--rule', 'b', '--to', dir, '--json', '-c', env.config]);
    expect(fromB.code, fromB.stderr).toBe(0);
    expect(jsonOf<RestoreJson>(fromB)).toMatchObject({ ts: '2025-01-01T00-00-00', rule: 'b', to: join(dir, 'dump.rdb') });
    expect(readFileSync(join(dir, 'dump.rdb')).equals(older.rdb)).toBe(true);

    const unknown = await runCli(['restore', '2025-01-05T00-00-00', '--to', join(dir, 'x.rdb'), '--json', '-c', env.config]);
    expect(unknown.code).toBe(66);
    expect(jsonOf<RestoreJson>(unknown).error!.message).toMatch(/no archived event 2025-01-05T00-00-00 in a, b/);
    expect((await runCli(['restore', 'last-tuesday', '--to', join(dir, 'x.rdb'), '-c', env.config])).code).toBe(2);
    const noFolder = await runCli(['restore', 'latest', '--to', join(env.root, 'missing', 'dump.rdb'), '-c', env.config]);
    expect(noFolder.code).toBe(2);
    expect(noFolder.stderr + noFolder.stdout).toMatch(/does not exist: create it first/);
    const intoArchive = await runCli(['restore', 'latest', '--to', join(env.archive, 'a', 'restored.rdb'), '-c', env.config]);
    expect(intoArchive.code).toBe(2);
    expect((await runCli(['restore', 'latest', '-c', env.config])).code).toBe(2); // --to is required
    expect(readdirSync(dir)).toEqual(['dump.rdb']);
  });

  it('verifies first: a corrupt event is not restored (exit 65, nothing written); an intact independent copy is used instead', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 5 }, { name: 'b', count: 5 }] });
    const ev = writeEvent(env.archive, ['a', 'b'], '2025-01-01T00-00-00', { size: 200_000 });
    const corrupt = Buffer.from(ev.rdb);
    corrupt[100_000]! ^= 0xff;
    writeFileSync(ev.files.a!.rdb, corrupt); // in place: both hard links are corrupt
    const dir = join(env.root, 'out');
    mkdirSync(dir);

    const r = await runCli(['restore', 'latest', '--to', dir, '--json', '-c', env.config]);
    expect(r.code).toBe(65);
    expect(jsonOf<RestoreJson>(r).error!.message).toMatch(/failed verification; nothing restored: a\/dump-2025-01-01T00-00-00\.rdb: CRC mismatch/);
    expect(readdirSync(dir)).toEqual([]);

    // b gets its own intact copy (another inode, as after an EXDEV fallback): restore uses it and says so.
    unlinkSync(ev.files.b!.rdb);
    writeFileSync(ev.files.b!.rdb, ev.rdb, { mode: 0o600 });
    const fallback = await runCli(['restore', 'latest', '--to', dir, '--json', '-c', env.config]);
    expect(fallback.code, fallback.stderr).toBe(0);
    const out = jsonOf<RestoreJson>(fallback);
    expect(out.rule).toBe('b');
    expect(out.warnings.join('\n')).toMatch(/skipped a bad copy of event 2025-01-01T00-00-00: a\/dump-2025-01-01T00-00-00\.rdb: CRC mismatch/);
    expect(readFileSync(join(dir, 'dump.rdb')).equals(ev.rdb)).toBe(true);

    // A sha256 mismatch (sidecar) is a verification failure too.
    const tampered = writeEvent(env.archive, ['a'], '2025-01-02T00-00-00');
    writeFileSync(tampered.files.a!.sidecar, `${'1'.repeat(64)}  dump-2025-01-02T00-00-00.rdb\n`);
    const sha = await runCli(['restore', '2025-01-02T00-00-00', '--to', join(dir, 'other.rdb'), '--json', '-c', env.config]);
    expect(sha.code).toBe(65);
    expect(jsonOf<RestoreJson>(sha).error!.message).toMatch(/sha256 mismatch: dump-2025-01-02T00-00-00\.rdb/);
    expect(readdirSync(dir)).toEqual(['dump.rdb']);
  });

  it('restores nodes.conf with --nodes-to; without it, warns and says how to restore it', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    const ev = writeEvent(env.archive, ['all'], '2025-01-01T00-00-00', { nodes: NODES_CONF });
    const dir = join(env.root, 'out');
    mkdirSync(dir);

    const withNodes = await runCli(['restore', 'latest', '--to', dir, '--nodes-to', join(dir, 'nodes.conf'), '--json', '-c', env.config]);
    expect(withNodes.code, withNodes.stderr).toBe(0);
    expect(jsonOf<RestoreJson>(withNodes).nodes).toEqual({ from: ev.files.all!.nodes, to: join(dir, 'nodes.conf') });
    expect(readFileSync(join(dir, 'nodes.conf'), 'utf8')).toBe(NODES_CONF);
    expect(statSync(join(dir, 'nodes.conf')).mode & 0o777).toBe(0o600);
    expect(jsonOf<RestoreJson>(withNodes).steps.join('\n')).toContain('mv ' + join(dir, 'nodes.conf') + ' "$DIR/$NODESFILE"');

    const other = join(env.root, 'other');
    mkdirSync(other);
    const without = await runCli(['restore', 'latest', '--to', other, '--json', '-c', env.config]);
    expect(without.code, without.stderr).toBe(0);
    const out = jsonOf<RestoreJson>(without);
    expect(out.nodes).toEqual({ from: ev.files.all!.nodes, to: null });
    expect(out.warnings.join('\n')).toMatch(/has a nodes\.conf .* that was NOT restored: add --nodes-to PATH/);
    expect(out.steps.join('\n')).toContain(`cp ${ev.files.all!.nodes} "$DIR/$NODESFILE"`);
    expect(logLines(without).some((l) => l.level === 40 && String(l.msg).includes('NOT restored'))).toBe(true);
    expect(readdirSync(other)).toEqual(['dump.rdb']);

    // The nodes target is checked before anything is written.
    const clash = join(env.root, 'clash');
    mkdirSync(clash);
    writeFileSync(join(clash, 'nodes.conf'), 'existing');
    const refused = await runCli(['restore', 'latest', '--to', clash, '--nodes-to', clash, '-c', env.config]);
    expect(refused.code).toBe(73);
    expect(readdirSync(clash)).toEqual(['nodes.conf']);
  });

  describe('targets are compared by what they are, not by how they are spelled (symlinks)', () => {
    /** Two events in rule folder `all`; returns the archive listing to compare against. */
    function twoEvents() {
      const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
      const older = writeEvent(env.archive, ['all'], '2025-01-01T00-00-00', { seed: 'older', nodes: NODES_CONF });
      const newer = writeEvent(env.archive, ['all'], '2025-01-02T00-00-00', { seed: 'newer', nodes: NODES_CONF });
      return { env, older, newer };
    }
    const archivedFiles = (archive: string) => readdirSync(join(archive, 'all')).sort();

    it('--force through a symlinked folder onto an archived event: refused (2), the event is untouched, no temp left in the archive', async () => {
      const { env, newer } = twoEvents();
      const before = archivedFiles(env.archive);
      const alias = join(env.root, 'alias');
      symlinkSync(join(env.archive, 'all'), alias);
      const r = await runCli(['restore', '2025-01-01T00-00-00', '--to', join(alias, 'dump-2025-01-02T00-00-00.rdb'), '--force', '--json', '-c', env.config]);
      expect(r.code, r.stdout + r.stderr).toBe(2);
      expect(jsonOf<RestoreJson>(r).error!.message).toMatch(/--to: .* is inside the archive/);
      expect(readFileSync(newer.files.all!.rdb).equals(newer.rdb)).toBe(true);
      expect(archivedFiles(env.archive)).toEqual(before);

      // A symlink to the archive root, and a new name in a rule folder: refused too.
      const rootAlias = join(env.root, 'root-alias');
      symlinkSync(env.archive, rootAlias);
      const intoRoot = await runCli(['restore', 'latest', '--to', join(rootAlias, 'all', 'restored.rdb'), '-c', env.config]);
      expect(intoRoot.code).toBe(2);
      const intoState = await runCli(['restore', 'latest', '--to', join(rootAlias, 'restored.rdb'), '-c', env.config]);
      expect(intoState.code).toBe(2);
      expect(archivedFiles(env.archive)).toEqual(before);
      expect(readdirSync(env.archive).sort()).toEqual(['all']);
    });

    it('--to that is a symlink onto an archived file: refused (2) with or without --force', async () => {
      const { env, newer } = twoEvents();
      const out = join(env.root, 'out');
      mkdirSync(out);
      symlinkSync(newer.files.all!.rdb, join(out, 'dump.rdb'));
      for (const extra of [[], ['--force']]) {
        const r = await runCli(['restore', '2025-01-01T00-00-00', '--to', join(out, 'dump.rdb'), ...extra, '--json', '-c', env.config]);
        expect(r.code, r.stdout + r.stderr).toBe(2);
        expect(jsonOf<RestoreJson>(r).error!.message).toMatch(/is a symlink/);
      }
      expect(readFileSync(newer.files.all!.rdb).equals(newer.rdb)).toBe(true);
      expect(lstatSync(join(out, 'dump.rdb')).isSymbolicLink()).toBe(true);
    });

    it('--nodes-to aliasing --to through a symlinked folder: refused (2) before anything is written', async () => {
      const { env } = twoEvents();
      const out = join(env.root, 'out');
      mkdirSync(out);
      const alias = join(env.root, 'out-alias');
      symlinkSync(out, alias);
      const r = await runCli(['restore', 'latest', '--to', join(out, 'dump.rdb'), '--nodes-to', join(alias, 'dump.rdb'), '--json', '-c', env.config]);
      expect(r.code, r.stdout + r.stderr).toBe(2);
      expect(jsonOf<RestoreJson>(r).error!.message).toMatch(/--nodes-to: .* is the same file as --to/);
      expect(readdirSync(out)).toEqual([]);

      // Existing files that alias each other (with --force): refused, both untouched.
      writeFileSync(join(out, 'dump.rdb'), 'precious');
      const forced = await runCli(['restore', 'latest', '--to', join(alias, 'dump.rdb'), '--nodes-to', join(out, 'dump.rdb'), '--force', '-c', env.config]);
      expect(forced.code).toBe(2);
      expect(readFileSync(join(out, 'dump.rdb'), 'utf8')).toBe('precious');
    });

    it('--to a symlink to a folder outside the archive writes dump.rdb into that folder', async () => {
      const { env, newer } = twoEvents();
      const real = join(env.root, 'real');
      mkdirSync(real);
      const link = join(env.root, 'link');
      symlinkSync(real, link);
      const r = await runCli(['restore', 'latest', '--to', link, '--json', '-c', env.config]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(readFileSync(join(real, 'dump.rdb')).equals(newer.rdb)).toBe(true);
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
    });
  });
});
