/**
 * The published CLI: dist/cli.js loads the CommonJS bundle from the V8 code
 * cache that `npm run build` saved (scripts/cli-loader.mjs). The cache only
 * makes start-up faster: a missing, damaged or foreign cache must not change
 * what the CLI does.
 */
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const ROOT = resolve(import.meta.dirname, '../..');
const DIST = join(ROOT, 'dist');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const firstLine = (path: string): string => {
  const text = readFileSync(path, 'utf8');
  return text.slice(0, text.indexOf('\n'));
};

/** A copy of the built CLI in its own folder, with the cache given (or none). */
function cliCopy(cache: Buffer | undefined): string {
  const root = tempDir('rdb-archiver-cli-copy-');
  mkdirSync(join(root, 'dist'));
  copyFileSync(join(DIST, 'cli.js'), join(root, 'dist', 'cli.js'));
  copyFileSync(join(DIST, 'cli.bundle.cjs'), join(root, 'dist', 'cli.bundle.cjs'));
  if (cache) writeFileSync(join(root, 'dist', 'cli.bundle.cache'), cache);
  copyFileSync(join(ROOT, 'package.json'), join(root, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules')); // pino is required at run time
  return join(root, 'dist', 'cli.js');
}

describe('the built CLI and its code cache', () => {
  it('the build saved a code cache made for this very bundle', () => {
    const id = firstLine(join(DIST, 'cli.bundle.cjs'));
    expect(id).toMatch(/^\/\/ rdb-archiver build [0-9a-f-]{36}$/);
    const cache = readFileSync(join(DIST, 'cli.bundle.cache'));
    expect(cache.subarray(0, id.length + 10).toString()).toMatch(new RegExp(`^${id}\\n[0-9a-f]{8}\\n$`));
    expect(cache.length).toBeGreaterThan(64 * 1024); // the functions of a real run, not only the top level
  });

  const real = (): Buffer => readFileSync(join(DIST, 'cli.bundle.cache'));
  const headerLength = (): number => firstLine(join(DIST, 'cli.bundle.cjs')).length + 10; // id, checksum, two newlines
  const caches: Array<[string, () => Buffer | undefined]> = [
    ['no cache', () => undefined],
    ['a cache with the right header and a damaged body', () => {
      const c = Buffer.from(real());
      for (let i = headerLength() + 64; i < c.length; i += 97) c[i] = c[i]! ^ 0x5a;
      return c;
    }],
    ['a cache of another build', () => Buffer.concat([Buffer.from('// rdb-archiver build 00000000-0000-4000-8000-000000000000\n'), real().subarray(firstLine(join(DIST, 'cli.bundle.cjs')).length + 1)])],
    ['an empty cache file', () => Buffer.alloc(0)],
  ];

  it.each(caches)('with %s it runs exactly the same: --version, archive, unchanged', async (_what, makeCache) => {
    const cli = cliCopy(makeCache());
    const version = await runCli(['--version'], { cli });
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(VERSION);

    const env = setupArchive();
    const snap = writeSnapshot(env.source, { seed: 'cache', mtime: new Date('2025-05-01T08:00:00Z') });
    const first = await runCli(['once', '--json', '-c', env.config], { cli });
    expect(first.code, first.stderr).toBe(0);
    expect(jsonOf(first)).toMatchObject({ status: 'archived', snapshot: { sha256: snap.sha256 } });
    const second = await runCli(['once', '--json', '-c', env.config], { cli });
    expect(second.code, second.stderr).toBe(0);
    expect(jsonOf(second)).toMatchObject({ status: 'unchanged' });
  });
});
