/**
 * The structural RDB walk under long seeded fuzzing (the short version runs
 * in npm test: test/unit/rdb-walker.test.ts).
 *
 * Corpus: crafted files holding every value type and opcode (with a correct
 * and with a zero checksum), the redis-server 7.0 fixture, and fresh dumps of
 * a real redis-server with every data type (when it is installed). Each
 * trial mutates one of them (a truncation, random bytes, a run of zeros, a
 * flipped bit; half the time with a zeroed trailer, so only the walk can
 * catch it) and validates it whole and in random chunks. A trial fails if
 * anything but InvalidSnapshotError is thrown, if the outcome depends on the
 * chunking (a read past a chunk's end, or a bad carry between chunks, would
 * show that way), or if an accepted file was not walked to its end. A hang
 * fails the test case by its timeout.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import { buildRdb, prng } from '../helpers/rdb-builder.js';
import { writeDumpCorpus } from '../helpers/rdb-corpus.js';
import { everyOpcodeBody } from '../helpers/rdb-encodings.js';
import { fuzzOne, mutate } from '../helpers/rdb-fuzz.js';
import { redisAvailability, startRedis, stopAllRedis } from '../helpers/redis.js';
import { FULL, Figures, SEED } from './common.js';

const figures = new Figures('walker', 'Structural RDB walk under fuzzing');
const TRIALS_PER_FILE = FULL ? 3000 : 200;
const tmp = mkdtempSync(join(tmpdir(), 'walker-fuzz-'));
afterAll(async () => {
  await stopAllRedis();
  rmSync(tmp, { recursive: true, force: true });
});

async function corpus(): Promise<Array<[string, Uint8Array]>> {
  const files: Array<[string, Uint8Array]> = [
    ['crafted, every type', buildRdb({ body: everyOpcodeBody() })],
    ['crafted, every type, checksum 0', buildRdb({ body: everyOpcodeBody(), checksum: 'zero' })],
    ['crafted, every type, RDB 4 (no trailer)', buildRdb({ version: 4, aux: [], body: everyOpcodeBody() })],
    ['redis 7.0 fixture', new Uint8Array(readFileSync(resolve(import.meta.dirname, '../fixtures/redis-7.0-small.rdb')))],
  ];
  if (!redisAvailability.ok) {
    if (process.env.CI === 'true') throw new Error(`redis-server is required in CI: ${redisAvailability.reason}`);
    figures.note(`no redis-server (${redisAvailability.reason}): fuzzed the crafted files and the fixture only`);
    return files;
  }
  const serverDir = join(tmp, 'server');
  mkdirSync(serverDir);
  const server = await startRedis(serverDir);
  try {
    for (const [name, path] of await writeDumpCorpus(server, tmp, [{ name: 'compressed', config: [['rdbcompression', 'yes']] }, { name: 'uncompressed-lfu', config: [['rdbcompression', 'no'], ['maxmemory-policy', 'allkeys-lfu']] }])) {
      files.push([`redis-server dump (${name}, every type)`, new Uint8Array(readFileSync(path))]);
    }
  } finally {
    await server.stop();
  }
  return files;
}

describe('structural walk fuzzing', () => {
  it('mutated files never crash the walk, never depend on the chunking, and an accepted file is walked to its end', async () => {
    const files = await corpus();
    figures.plan(files.flatMap(([name]) => Array.from({ length: TRIALS_PER_FILE }, (_, i) => `${name} #${i + 1}`)));
    const r = prng(SEED ^ 0x5a17);
    for (const [name, file] of files) {
      figures.input(name, TRIALS_PER_FILE);
      for (let i = 0; i < TRIALS_PER_FILE; i++) {
        const m = mutate(file, r);
        const { outcome, violations } = fuzzOne(m, r);
        figures.outcome(typeof outcome === 'string' ? (outcome.startsWith('structure:') ? 'rejected by the walk' : 'rejected by the header, EOF or CRC check') : 'accepted (damage inside value bytes under a correct or zero checksum)');
        figures.check(`${name} #${i + 1}`, violations);
      }
    }
  }, 1_800_000);
});
