/**
 * The structural walk on real dumps: a real redis-server writes every data
 * type (both encodings of each collection, streams with consumer groups and
 * PELs, expiries, several DBs, LRU/LFU metadata, functions, DEBUG POPULATE),
 * and every dump passes the walk in chunks of any size, as redis-check-rdb
 * agrees. Damage with a recomputed CRC (so that only a structural check can
 * see it) that redis-check-rdb refuses is refused too. The two attacks of
 * issue 13 exit 65 through the CLI and archive nothing.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { InvalidSnapshotError } from '../../src/core/errors.js';
import { RdbValidator, validateRdbFile, type RdbInfo } from '../../src/rdb/validate.js';
import { jsonOf, runCli } from '../helpers/cli.js';
import { writeDumpCorpus } from '../helpers/rdb-corpus.js';
import { buildRdb, chunksOf, prng, tableCrc64 } from '../helpers/rdb-builder.js';
import { describeWithRedis, registerRedisCleanup, startRedis } from '../helpers/redis.js';
import { listTree, setupArchive } from '../helpers/snapshots.js';

registerRedisCleanup();

const REDIS_CHECK_RDB = process.env.REDIS_CHECK_RDB ?? 'redis-check-rdb';
if (process.env.CI === 'true' && spawnSync(REDIS_CHECK_RDB, ['--version']).error) throw new Error('CI: redis-check-rdb must be installed');

function checkRdb(path: string): { ok: boolean; out: string } {
  const r = spawnSync(REDIS_CHECK_RDB, [path], { encoding: 'utf8', timeout: 60_000 });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

function outcome(data: Uint8Array, sizes: readonly number[] | null): RdbInfo | string {
  const v = new RdbValidator('f.rdb');
  for (const c of sizes ? chunksOf(data, sizes) : [data]) v.update(c);
  try {
    return v.finish();
  } catch (err) {
    if (err instanceof InvalidSnapshotError) return err.reason;
    throw err;
  }
}

/** The file with its CRC-64 trailer recomputed over the (damaged) content. */
function withFreshCrc(file: Uint8Array): Uint8Array {
  const out = file.slice();
  new DataView(out.buffer).setBigUint64(out.length - 8, tableCrc64(out.subarray(0, out.length - 8)), true);
  return out;
}

describeWithRedis('structural RDB validation on real dumps', () => {
  let dir: string;
  let dumps: Map<string, string>;

  beforeAll(async () => {
    // Shared by the tests of this file (the helpers' temp folders go after each test).
    dir = mkdtempSync(join(tmpdir(), 'rdb-structure-'));
    const serverDir = join(dir, 'server');
    mkdirSync(serverDir);
    const server = await startRedis(serverDir);
    dumps = await writeDumpCorpus(server, dir);
    await server.stop();
  }, 180_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('every dump passes the walk, whole and in chunks, and redis-check-rdb agrees', async () => {
    const seen = new Set<string>();
    const r = prng(7);
    for (const [name, path] of dumps) {
      const info = await validateRdbFile(path);
      expect(info.checksum, name).toBe('verified');
      expect(info.structure!.expires, name).toBeGreaterThan(0);
      for (const t of Object.keys(info.structure!.types)) seen.add(t);
      const data = new Uint8Array(readFileSync(path));
      for (const sizes of [[1 + Math.floor(r() * 50)], [4093], [65_536, 17]]) {
        expect(outcome(data, sizes), `${name} in chunks of ${sizes.join(',')}`).toEqual(outcome(data, null));
      }
      const check = checkRdb(path);
      expect(check.ok, `${name}: ${check.out}`).toBe(true);
    }
    // Both encodings of every collection, and streams (Redis 7.0 writes these type numbers).
    for (const t of ['string', 'list (quicklist 2)', 'set', 'set (intset)', 'zset (binary scores)', 'zset (listpack)', 'hash', 'hash (listpack)', 'stream (v2)']) {
      expect([...seen], t).toContain(t);
    }
    const populated = await validateRdbFile(dumps.get('lfu-populate')!);
    expect(populated.structure!.keys).toBeGreaterThan(5000);
  });

  it('damage under a recomputed CRC that redis-check-rdb refuses is refused by the walk too', () => {
    const file = new Uint8Array(readFileSync(dumps.get('compressed')!));
    const r = prng(1302);
    let refusedByBoth = 0;
    let refusedByWalkOnly = 0;
    for (let i = 0; i < 14; i++) {
      const damaged = file.slice();
      const at = 200 + Math.floor(r() * (file.length - 300));
      const span = 1 + Math.floor(r() * 40);
      for (let k = 0; k < span; k++) damaged[at + k] = i % 2 ? 0 : Math.floor(r() * 256);
      const bad = withFreshCrc(damaged);
      const path = join(dir, `damaged-${i}.rdb`);
      writeFileSync(path, bad);
      const ours = outcome(bad, null);
      const theirs = checkRdb(path);
      if (!theirs.ok) {
        expect(typeof ours, `damage at ${at}+${span}: redis-check-rdb refuses (${theirs.out.split("\n").filter((l) => /error|invalid|wrong|unexpected|fail/i.test(l)).join(" | ")}), we accepted`).toBe('string');
        refusedByBoth++;
      } else if (typeof ours === 'string') {
        refusedByWalkOnly++; // the walk's listpack/ziplist checks are deep; redis-check-rdb's are shallow by default
      }
    }
    expect(refusedByBoth).toBeGreaterThan(5);
    console.log(`damaged real dumps: ${refusedByBoth} refused by both, ${refusedByWalkOnly} by the walk only, ${14 - refusedByBoth - refusedByWalkOnly} accepted by both (damage inside string bytes)`);
  });

  it('seeded fuzzing of a real dump: truncations and flips never crash and do not depend on chunking', () => {
    const file = new Uint8Array(readFileSync(dumps.get('compressed')!));
    const r = prng(99);
    for (let i = 0; i < 60; i++) {
      const m = file.slice(0, r() < 0.3 ? Math.floor(r() * file.length) : file.length);
      for (let k = 0; k < 3; k++) m[Math.floor(r() * m.length)] = Math.floor(r() * 256);
      if (r() < 0.5 && m.length > 8) m.fill(0, m.length - 8);
      expect(outcome(m, [1 + Math.floor(r() * 8000)])).toEqual(outcome(m, null));
    }
  });

  it('the two attacks of issue 13 exit 65 and archive nothing; validation crc alone would have archived the first', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    // 1. A valid header, random bytes, an EOF byte and a correct CRC-64.
    const r = prng(34);
    const junk = Uint8Array.from({ length: 50_000 }, () => Math.floor(r() * 256));
    const forged = buildRdb({ body: junk });
    // 2. A real dump with 100 bytes zeroed and a zeroed trailer ("checksum disabled").
    const real = new Uint8Array(readFileSync(dumps.get('compressed')!));
    const zeroed = real.slice();
    zeroed.fill(0, real.length >> 1, (real.length >> 1) + 100);
    zeroed.fill(0, real.length - 8);

    for (const [i, [what, bytes]] of ([['forged CRC around random bytes', forged], ['zeroed bytes and trailer', zeroed]] as const).entries()) {
      writeFileSync(env.source, bytes);
      const t = new Date(Date.UTC(2025, 6, 1, i));
      utimesSync(env.source, t, t);
      expect(checkRdb(env.source).ok, `${what}: redis-check-rdb refuses it`).toBe(false);
      const run = await runCli(['once', '--json', '-c', env.config]);
      expect(run.code, `${what}: ${run.stderr}`).toBe(65);
      const out = jsonOf<{ error: { kind: string; message: string } }>(run);
      expect(out.error.kind).toBe('invalid-source');
      expect(out.error.message, what).toMatch(/not a valid RDB snapshot: structure: .* at offset \d+/);
      expect(existsSync(join(env.archive, 'all')) ? listTree(join(env.archive, 'all')) : [], what).toEqual([]);
    }

    // The same forged file under validation: crc (header and CRC only) is archived: the walk is what refuses it.
    const crcOnly = setupArchive({ rules: [{ name: 'all', count: 5 }], extra: 'validation: crc' });
    writeFileSync(crcOnly.source, forged);
    const archived = await runCli(['once', '--json', '-c', crcOnly.config]);
    expect(archived.code, archived.stderr).toBe(0);
    expect(listTree(join(crcOnly.archive, 'all')).some((f) => /^dump-\S+\.rdb /.test(f))).toBe(true);
  }, 60_000);
});
