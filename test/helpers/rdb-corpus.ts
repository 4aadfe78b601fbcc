/**
 * Real RDB files for the structural walker's tests: dumps written by a real
 * redis-server holding every data type it has (strings in every encoding,
 * lists, sets, sorted sets, hashes, streams with consumer groups, PELs and
 * deleted entries, functions), in both the compact encodings (listpack,
 * intset) and the large ones (hash tables, skiplists, quicklists of many
 * nodes, plain quicklist nodes), with expiries, LRU/LFU metadata, several
 * databases, with and without compression, and DEBUG POPULATE bulk.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RedisServer } from './redis.js';

/** Settings that make Redis pick the compact (small) or the general (big) encoding of every collection. */
const SMALL_ENCODINGS: Array<[string, string]> = [
  ['hash-max-listpack-entries', '512'],
  ['hash-max-listpack-value', '64'],
  ['zset-max-listpack-entries', '128'],
  ['zset-max-listpack-value', '64'],
  ['set-max-intset-entries', '512'],
  ['list-max-listpack-size', '-2'],
];
const BIG_ENCODINGS: Array<[string, string]> = [
  ['hash-max-listpack-entries', '0'],
  ['zset-max-listpack-entries', '0'],
  ['set-max-intset-entries', '0'],
  ['list-max-listpack-size', '4'],
];

/** Config names differ before Redis 7 (ziplist); try the listpack name, then the ziplist one. */
async function configSet(server: RedisServer, name: string, value: string): Promise<void> {
  try {
    await server.call('CONFIG', 'SET', name, value);
  } catch {
    await server.call('CONFIG', 'SET', name.replace('listpack', 'ziplist'), value);
  }
}

/** Writes keys of every type into db (prefix keeps the two encodings' keys apart). */
export async function populateEveryType(server: RedisServer, prefix: string, db: number): Promise<void> {
  const c = (...args: Array<string | number>) => server.call(...args);
  await c('SELECT', db);
  const k = (name: string) => `${prefix}:${name}`;
  // Strings: integer encodings (int8/16/32 and beyond), short, long, compressible (LZF) and binary.
  await c('SET', k('int8'), '-100');
  await c('SET', k('int16'), '30000');
  await c('SET', k('int32'), '-2000000000');
  await c('SET', k('int64'), '9000000000000000000');
  await c('SET', k('short'), 'hello');
  await c('SET', k('empty'), '');
  await c('SET', k('compressible'), 'abcabcabc'.repeat(2000));
  await c('SET', k('binary'), '\u00ff\u0000\u00fe'.repeat(300));
  await c('SET', k('ttl-ms'), 'expiring', 'PX', 86_400_000);
  await c('SET', k('ttl-s'), 'expiring', 'EX', 86_400);
  // Lists: a few elements, many elements (several quicklist nodes), long elements.
  await c('RPUSH', k('list-small'), 'a', 'b', 'c', '1', '2', '-3');
  await c('RPUSH', k('list-big'), ...Array.from({ length: 600 }, (_, i) => `element-${i}`));
  await c('RPUSH', k('list-long'), 'x'.repeat(20_000), 'y'.repeat(100), 'z'.repeat(9000));
  // Sets: integers only (intset), strings (listpack / hash table), many members.
  await c('SADD', k('set-int'), 1, 2, 3, -40000, 70000, 5_000_000_000);
  await c('SADD', k('set-str'), 'a', 'b', 'c');
  await c('SADD', k('set-big'), ...Array.from({ length: 700 }, (_, i) => `member-${i}`));
  // Sorted sets.
  await c('ZADD', k('zset-small'), 1, 'one', 2.5, 'two and a half', -3, 'minus three', 'inf', 'top');
  const zargs: Array<string | number> = [];
  for (let i = 0; i < 300; i++) zargs.push(i * 1.5, `m${i}`);
  await c('ZADD', k('zset-big'), ...zargs);
  await c('ZADD', k('zset-long'), 1, 'v'.repeat(200));
  // Hashes.
  await c('HSET', k('hash-small'), 'f1', 'v1', 'f2', '2', 'f3', '');
  const hargs: string[] = [];
  for (let i = 0; i < 700; i++) hargs.push(`field-${i}`, `value-${i}`);
  await c('HSET', k('hash-big'), ...hargs);
  await c('HSET', k('hash-long'), 'f', 'w'.repeat(300));
  // Streams: entries with the same and with different fields, deletions, consumer groups, PELs.
  const s = k('stream');
  for (let i = 0; i < 250; i++) await c('XADD', s, '*', 'temp', i, 'host', `h${i % 3}`);
  for (let i = 0; i < 20; i++) await c('XADD', s, '*', `other-${i}`, 'x', 'extra', 'y'.repeat(i * 10));
  const ids = (await c('XRANGE', s, '-', '+', 'COUNT', 10)) as string[][];
  await c('XDEL', s, ids[2]![0]!, ids[5]![0]!);
  await c('XGROUP', 'CREATE', s, 'g1', '0');
  await c('XGROUP', 'CREATE', s, 'g2', '$');
  await c('XREADGROUP', 'GROUP', 'g1', 'alice', 'COUNT', 5, 'STREAMS', s, '>');
  await c('XREADGROUP', 'GROUP', 'g1', 'bob', 'COUNT', 3, 'STREAMS', s, '>');
  await c('XACK', s, 'g1', ids[0]![0]!);
  await c('XGROUP', 'CREATECONSUMER', s, 'g2', 'idle-consumer');
  await c('XADD', k('stream-empty'), '*', 'a', 'b');
  await c('XTRIM', k('stream-empty'), 'MAXLEN', 0);
}

export interface DumpCase {
  name: string;
  /** Server settings for this dump. */
  config: Array<[string, string]>;
  /** Also DEBUG POPULATE this many keys into db 0. */
  populate?: number;
}

/** Each dump holds every key written (both encodings); the cases differ in compression, LRU/LFU metadata and bulk. */
export const DUMP_CASES: DumpCase[] = [
  { name: 'compressed', config: [['rdbcompression', 'yes']] },
  { name: 'uncompressed-lru', config: [['rdbcompression', 'no'], ['maxmemory-policy', 'allkeys-lru']] },
  { name: 'lfu-populate', config: [['rdbcompression', 'yes'], ['maxmemory-policy', 'allkeys-lfu']], populate: 5000 },
];

/**
 * Fills a fresh server (several DBs, every type in both encodings, a
 * function library), then for each case applies its settings, SAVEs and
 * copies dump.rdb to `<outDir>/<case>.rdb`. Returns the paths.
 */
export async function writeDumpCorpus(server: RedisServer, outDir: string, cases: DumpCase[] = DUMP_CASES): Promise<Map<string, string>> {
  for (const [name, value] of SMALL_ENCODINGS) await configSet(server, name, value);
  await populateEveryType(server, 'small', 0);
  await populateEveryType(server, 'small', 3);
  for (const [name, value] of BIG_ENCODINGS) await configSet(server, name, value);
  await populateEveryType(server, 'big', 0);
  await populateEveryType(server, 'big', 15);
  // Plain quicklist nodes: elements above the packed threshold (DEBUG, Redis >= 7).
  try {
    await server.call('DEBUG', 'QUICKLIST-PACKED-THRESHOLD', '100');
    await server.call('SELECT', 0);
    await server.call('RPUSH', 'plain-nodes', 'p'.repeat(150), 'small', 'q'.repeat(5000));
  } catch {
    // older servers have no plain nodes
  }
  try {
    await server.call('FUNCTION', 'LOAD', "#!lua name=walkerlib\nredis.register_function('echo1', function(keys, args) return args[1] end)");
  } catch {
    // no functions before Redis 7
  }
  const out = new Map<string, string>();
  for (const dumpCase of cases) {
    for (const [name, value] of dumpCase.config) await configSet(server, name, value);
    if (dumpCase.populate) {
      await server.call('SELECT', 0);
      await server.call('DEBUG', 'POPULATE', dumpCase.populate, 'pop', 32);
    }
    await server.call('SAVE');
    const path = join(outDir, `${dumpCase.name}.rdb`);
    copyFileSync(join(server.dir, 'dump.rdb'), path);
    out.set(dumpCase.name, path);
  }
  return out;
}
