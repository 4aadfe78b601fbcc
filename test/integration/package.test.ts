/**
 * The release tarball, the way an operator installs it: `npm pack`, then
 * `npm install -g --prefix DIR ./rdb-archiver-<v>.tgz` into a fresh prefix,
 * then the installed command runs the demo.
 *
 * `npm test` has just built dist/, so the pack runs with --ignore-scripts:
 * its prepack script would rebuild dist/ under the other test files running
 * in parallel. The install is --offline with an empty npm cache: the runtime
 * dependencies are inside the tarball (bundleDependencies), so it installs
 * on a host without access to the registry.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
};

// The installed CLI starts with `#!/usr/bin/env node`: let that be the node
// running the tests, which made the code cache (CI also runs the suite under
// other Node versions).
const NODE_FIRST_PATH = `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`;

function run(cmd: string, args: string[], options: { cwd?: string; env?: Record<string, string | undefined> } = {}) {
  const env = { ...process.env, PATH: NODE_FIRST_PATH, RDB_ARCHIVER_CONFIG: undefined, ...options.env };
  const r = spawnSync(cmd, args, { cwd: options.cwd ?? ROOT, env, encoding: 'utf8', timeout: 300_000 });
  if (r.error) throw r.error;
  return r;
}

describe('release tarball (npm pack), installed with npm install -g on a fresh prefix', () => {
  let work: string;
  let tarball: string;
  let packed: string[];
  let prefix: string;

  // One folder for the whole describe (the install is shared by its tests).
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'rdb-archiver-pack-'));
    const pack = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work]);
    expect(pack.status, pack.stderr).toBe(0);
    const [info] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    tarball = join(work, info!.filename);
    packed = info!.files.map((f) => f.path).sort();
    prefix = join(work, 'prefix');
    const install = run('npm', ['install', '-g', '--prefix', prefix, '--offline', '--cache', join(work, 'empty-npm-cache'), '--no-audit', '--no-fund', tarball]);
    expect(install.status, install.stdout + install.stderr).toBe(0);
    // npm warns about a package's install-time scripts (prepare) on a global install; we have none.
    expect(install.stderr).not.toMatch(/install-scripts/);
  }, 360_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it(`is named rdb-archiver-<version>.tgz and holds the built CLI, not the sources`, () => {
    expect(tarball.endsWith(`rdb-archiver-${pkg.version}.tgz`)).toBe(true);
    for (const f of ['dist/cli.cjs', 'dist/cli.js', 'dist/cli.bundle.cjs', 'dist/cli.bundle.cache', 'dist/validate-worker.cjs', 'package.json', 'README.md', 'systemd/rdb-archiver.service', 'systemd/rdb-archiver-daemon.service', 'systemd/rdb-archiver.timer', 'examples/config.yaml']) {
      expect(packed).toContain(f);
    }
    expect(packed.filter((f) => f.startsWith('src/') || f.startsWith('test/') || f.startsWith('scripts/'))).toEqual([]);
    // The build runs when packing, so a tarball never ships a stale or missing dist/.
    expect(pkg.scripts.prepack).toBe('node scripts/build.mjs');
    expect(pkg.scripts.prepare).toBeUndefined();
  });

  it('carries its runtime dependencies, and only those (the rest is bundled into dist/cli.bundle.cjs)', () => {
    for (const dep of Object.keys(pkg.dependencies)) expect(packed).toContain(`node_modules/${dep}/package.json`);
    const modules = join(prefix, 'lib/node_modules/rdb-archiver/node_modules');
    const top = readdirSync(modules).filter((n) => !n.startsWith('.'));
    for (const dep of Object.keys(pkg.dependencies)) expect(top).toContain(dep.split('/')[0]);
    for (const bundled of ['commander', 'yaml', 'zod', 'croner']) expect(top).not.toContain(bundled);
  });

  it('the installed rdb-archiver --version prints the package version, from the code cache', () => {
    const bin = join(prefix, 'bin/rdb-archiver');
    expect(lstatSync(bin).isSymbolicLink()).toBe(true);
    expect(realpathSync(bin)).toBe(realpathSync(join(prefix, 'lib/node_modules/rdb-archiver/dist/cli.cjs')));
    const r = run(bin, ['--version'], { env: { RDB_ARCHIVER_DEBUG_CODE_CACHE: '1' } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
    expect(r.stderr).toContain('code cache used');
  });

  it('the installed rdb-archiver once archives the demo, then finds nothing new', () => {
    const demo = join(work, 'demo');
    mkdirSync(join(demo, 'examples/data'), { recursive: true });
    copyFileSync(join(ROOT, 'examples/demo.yaml'), join(demo, 'examples/demo.yaml'));
    copyFileSync(join(ROOT, 'examples/data/dump.rdb'), join(demo, 'examples/data/dump.rdb'));
    const bin = join(prefix, 'bin/rdb-archiver');
    const first = run(bin, ['once', '-c', join(demo, 'examples/demo.yaml'), '--json'], { cwd: work });
    expect(first.status, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ status: 'archived', snapshot: { rules: ['hourly', 'daily', 'last'] } });
    const archive = join(demo, 'demo-archive');
    for (const rule of ['hourly', 'daily', 'last']) {
      const files = readdirSync(join(archive, rule));
      expect(files.filter((f) => /^dump-.*\.rdb$/.test(f)), rule).toHaveLength(1);
      expect(files.filter((f) => /^dump-.*\.sha256$/.test(f)), rule).toHaveLength(1);
    }
    const again = run(bin, ['once', '-c', join(demo, 'examples/demo.yaml'), '--json'], { cwd: work });
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ status: 'unchanged' });
    expect(readdirSync(join(archive, 'last')).filter((f) => f.endsWith('.rdb'))).toHaveLength(1);
    expect(existsSync(join(archive, '.rdb-archiver/state.json'))).toBe(true);
  });
});
