/**
 * The published CLI: dist/cli.cjs (the bin; dist/cli.js, the entry point of
 * old, runs it) loads the CommonJS bundle from the V8 code cache that
 * `npm run build` saved (scripts/cli-loader.cjs). The cache only
 * makes start-up faster: a missing, damaged or foreign cache must not change
 * what the CLI does, and a cache made for another bundle must never run.
 */
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const ROOT = resolve(import.meta.dirname, '../..');
const DIST = join(ROOT, 'dist');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const DEBUG = { RDB_ARCHIVER_DEBUG_CODE_CACHE: '1' };
const HEADER = /^rdb-archiver code cache 2 [0-9a-f]{8} \d+ [0-9a-f]{8} *\n/;

const realCache = (): Buffer => readFileSync(join(DIST, 'cli.bundle.cache'));
const headerLength = (cache: Buffer): number => cache.indexOf(0x0a) + 1;
/** The cache with its header's fields (rdb-archiver code cache 2 BUNDLE-SUM BUNDLE-LENGTH DATA-SUM) edited, at the same length. */
function editHeader(cache: Buffer, edit: (fields: string[]) => void): Buffer {
  const line = cache.toString('latin1', 0, headerLength(cache) - 1);
  const fields = line.trimEnd().split(' ');
  edit(fields);
  const out = Buffer.from(cache);
  out.write(fields.join(' ').padEnd(line.length), 0, 'latin1');
  return out;
}
const cacheState = (stderr: string): string | undefined => /rdb-archiver: code cache (.*)/.exec(stderr)?.[1];

/** A copy of the built CLI in its own folder, with the cache given (or none) and the bundle as given. */
function cliCopy(cache: Buffer | undefined, bundle: Buffer = readFileSync(join(DIST, 'cli.bundle.cjs'))): string {
  const root = tempDir('rdb-archiver-cli-copy-');
  mkdirSync(join(root, 'dist'));
  copyFileSync(join(DIST, 'cli.cjs'), join(root, 'dist', 'cli.cjs'));
  copyFileSync(join(DIST, 'cli.js'), join(root, 'dist', 'cli.js'));
  writeFileSync(join(root, 'dist', 'cli.bundle.cjs'), bundle);
  if (cache) writeFileSync(join(root, 'dist', 'cli.bundle.cache'), cache);
  copyFileSync(join(ROOT, 'package.json'), join(root, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules')); // the external runtime dependencies (AWS SDK, codecs) are required at run time
  return join(root, 'dist', 'cli.cjs');
}

describe('the built CLI and its code cache', () => {
  it('the build saved a code cache that V8 accepts for this bundle', async () => {
    const cache = realCache();
    expect(cache.subarray(0, headerLength(cache)).toString()).toMatch(HEADER);
    expect(cache.length).toBeGreaterThan(64 * 1024); // the functions of a real run, not only the top level
    const r = await runCli(['--version'], { env: DEBUG });
    expect(r.code, r.stderr).toBe(0);
    expect(cacheState(r.stderr)).toBe('used');
  });

  it('dist/cli.js, the entry point of old, runs the same CLI from the same cache', async () => {
    const r = await runCli(['--version'], { cli: join(DIST, 'cli.js'), env: DEBUG });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(VERSION);
    expect(cacheState(r.stderr)).toBe('used');
  });

  // The loader checks the data with a WebAssembly function, or the same
  // checksum in JavaScript where there is no WebAssembly (--jitless: the
  // test below, where the checksum must match for V8 to be asked at all).
  const caches: Array<[string, () => Buffer | undefined, string]> = [
    ['no cache', () => undefined, 'not used: no cache file'],
    ['a cache whose data is damaged', () => {
      const c = Buffer.from(realCache());
      const dataStart = headerLength(c);
      for (let i = dataStart + 64; i < c.length; i += 97) c[i] = c[i]! ^ 0x5a;
      return c;
    }, 'not used: made for another bundle, or damaged'],
    ['a cache whose header is damaged', () => editHeader(realCache(), (f) => { f[6] = '00000000'; }), 'not used: made for another bundle, or damaged'], // another checksum of the data
    ['a cache cut short', () => realCache().subarray(0, headerLength(realCache()) + 1000), 'not used: made for another bundle, or damaged'],
    ['a cache made for a bundle of another length', () => editHeader(realCache(), (f) => { f[5] = String(Number(f[5]) + 1); }), 'not used: made for another bundle, or damaged'],
    ['an empty cache file', () => Buffer.alloc(0), 'not used: made for another bundle, or damaged'],
  ];

  it.each(caches)('with %s it runs exactly the same: --version, archive, unchanged', async (_what, makeCache, state) => {
    const cli = cliCopy(makeCache());
    const version = await runCli(['--version'], { cli, env: DEBUG });
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(VERSION);
    expect(cacheState(version.stderr)).toBe(state);

    const env = setupArchive();
    const snap = writeSnapshot(env.source, { seed: 'cache', mtime: new Date('2025-05-01T08:00:00Z') });
    const first = await runCli(['once', '--json', '-c', env.config], { cli });
    expect(first.code, first.stderr).toBe(0);
    expect(jsonOf(first)).toMatchObject({ status: 'archived', snapshot: { sha256: snap.sha256 } });
    const second = await runCli(['once', '--json', '-c', env.config], { cli });
    expect(second.code, second.stderr).toBe(0);
    expect(jsonOf(second)).toMatchObject({ status: 'unchanged' });
  });

  // --jitless changes the code V8 makes, so every Node line refuses the cache
  // under it. (Memory flags such as --max-old-space-size were part of the
  // cache's identity on Node 20 only: Node 24 and 26 use the cache under them.)
  it('a cache made with other V8 flags is refused by V8, and the CLI runs the same', async () => {
    const r = await runCli(['--version'], { env: { ...DEBUG, NODE_OPTIONS: '--jitless' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(VERSION);
    expect(cacheState(r.stderr)).toMatch(/^rejected by V8/);
  });

  it('never runs the cached code of another bundle of the same length (V8 only compares lengths)', async () => {
    const original = readFileSync(join(DIST, 'cli.bundle.cjs'));
    const text = original.toString('latin1');
    const from = 'Archive Redis/Valkey dump.rdb';
    expect(text).toContain(from);
    const edited = Buffer.from(text.replace(from, 'ARCHIVE Redis/Valkey dump.rdb'), 'latin1');
    expect(edited.length).toBe(original.length);
    const cli = cliCopy(realCache(), edited);
    const help = await runCli(['--help'], { cli, env: DEBUG });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toContain('ARCHIVE Redis/Valkey dump.rdb');
    expect(cacheState(help.stderr)).toBe('not used: made for another bundle, or damaged');
  });
});
