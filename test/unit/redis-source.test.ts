/** The pure parts of source.redis: RESP parsing, payload headers, change detection, config. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, type RedisSourceConfig } from '../../src/core/config.js';
import { ConfigError } from '../../src/core/errors.js';
import { decide } from '../../src/sources/poll.js';
import { redisIdentity, type ServerInfo } from '../../src/sources/redis.js';
import { encodeCommand, parseFullResync, parseInfo, parsePayloadHeader, parseReply, ProtocolError, ReplyError } from '../../src/sources/resp.js';

describe('RESP', () => {
  it('parses every reply type, and waits for a reply that is not complete yet', () => {
    const buf = Buffer.from('*3\r\n+OK\r\n:42\r\n$5\r\nhello\r\n');
    expect(parseReply(buf)).toEqual({ value: ['OK', 42, 'hello'], end: buf.length });
    expect(parseReply(buf.subarray(0, buf.length - 3))).toBeUndefined();
    expect(parseReply(Buffer.from('$-1\r\n'))?.value).toBeNull();
    const err = parseReply(Buffer.from('-NOPERM this user has no permissions to run the \'psync\' command\r\n'))!.value as ReplyError;
    expect(err).toBeInstanceOf(ReplyError);
    expect(err.code).toBe('NOPERM');
    expect(() => parseReply(Buffer.from('HTTP/1.1 400\r\n'))).toThrow(ProtocolError);
    expect(encodeCommand(['AUTH', 'u', 'p']).toString()).toBe('*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n');
    expect(parseInfo('# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n')).toEqual({ redis_version: '7.0.15', run_id: 'abc' });
  });

  it('reads the payload header of a disk-based and a diskless transfer, and +FULLRESYNC', () => {
    expect(parsePayloadHeader('$12345')).toEqual({ kind: 'length', bytes: 12345 });
    const mark = 'a'.repeat(40);
    expect(parsePayloadHeader(`$EOF:${mark}`)).toEqual({ kind: 'eof', mark: Buffer.from(mark) });
    expect(() => parsePayloadHeader('$EOF:short')).toThrow(/40/);
    expect(() => parsePayloadHeader('+OK')).toThrow(/payload header/);
    expect(parseFullResync('+FULLRESYNC 8ea620a0af0520fd9144ed389571facc7e41aa12 1234')).toEqual({ replid: '8ea620a0af0520fd9144ed389571facc7e41aa12', offset: 1234 });
    expect(parseFullResync('+CONTINUE')).toBeUndefined();
  });
});

describe('change detection from INFO', () => {
  const info: ServerInfo = {
    redisVersion: '7.0.15', runId: 'r1', role: 'master', lastSaveTime: 1000, changesSinceSave: 3, bgsaveInProgress: false,
    lastBgsaveStatus: 'ok', saves: 0, replOffset: 0, clusterEnabled: false,
  };
  const cfg = { minIntervalMs: undefined } as unknown as RedisSourceConfig;
  const archived = (at: string) => ({ identity: redisIdentity(info), ts: 'x', sha256: 'y', bytes: 1, at });

  it('same run_id, save time and change count: unchanged; any of them moved: changed', () => {
    const last = archived(new Date().toISOString());
    expect(decide(info, cfg, last, false, Date.now()).changed).toBe(false);
    expect(decide({ ...info, changesSinceSave: 4 }, cfg, last, false, Date.now()).changed).toBe(true);
    expect(decide({ ...info, lastSaveTime: 1001, changesSinceSave: 0 }, cfg, last, false, Date.now()).changed).toBe(true);
    expect(decide({ ...info, runId: 'r2' }, cfg, last, false, Date.now()).changed).toBe(true);
    expect(decide(info, cfg, undefined, false, Date.now())).toMatchObject({ changed: true, reason: 'first-snapshot' });
    expect(decide(info, cfg, last, true, Date.now())).toMatchObject({ changed: true, reason: 'forced' });
    // An INFO without the change count cannot say "unchanged".
    expect(decide({ ...info, changesSinceSave: -1 }, cfg, archived(new Date().toISOString()), false, Date.now()).changed).toBe(true);
  });

  it('min_interval: an unchanged server is pulled once that long has passed since the last archive', () => {
    const withInterval = { minIntervalMs: 3_600_000 } as unknown as RedisSourceConfig;
    const now = Date.parse('2026-01-01T12:00:00Z');
    expect(decide(info, withInterval, archived('2026-01-01T11:30:00Z'), false, now).changed).toBe(false);
    expect(decide(info, withInterval, archived('2026-01-01T10:59:59Z'), false, now)).toMatchObject({ changed: true, reason: 'min-interval' });
  });
});

describe('source.redis config', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const load = (source: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'redis-config-'));
    dirs.push(dir);
    const file = join(dir, 'config.yaml');
    writeFileSync(file, `source:\n${source}\narchive:\n  dir: ${dir}/archive\n`, { mode: 0o600 });
    return loadConfig({ config: file }).instances[0]!;
  };
  const error = (source: string): ConfigError => {
    try {
      load(source);
    } catch (err) {
      if (err instanceof ConfigError) return err;
      throw err;
    }
    throw new Error('no error');
  };

  it('resolves the URL without credentials, with defaults', () => {
    const i = load('  redis:\n    url: rediss://backup@10.0.0.5\n    password_file: pass\n    min_interval: 6h');
    expect(i.redis).toMatchObject({ url: 'rediss://10.0.0.5:6379', host: '10.0.0.5', port: 6379, username: 'backup', mode: 'replicate', timeoutMs: 600_000, minIntervalMs: 21_600_000, tls: {} });
    expect(i.redis!.passwordFile).toMatch(/\/pass$/);
    expect(i.sourceRdb).toBe('rediss://10.0.0.5:6379');
  });

  it('refuses a password in the URL, rdb beside replicate, bgsave without rdb, tls on redis://, cluster with bgsave, max_parallel without cluster', () => {
    expect(error('  redis:\n    url: redis://u:secret@h:6379').message).toMatch(/source\.redis\.url: must not carry a password/);
    expect(error('  redis:\n    url: redis://u:secret@h:6379').message).not.toContain('secret');
    expect(error('  rdb: /x/dump.rdb\n  redis:\n    url: redis://h').keyPath).toBe('source.rdb');
    expect(error('  redis:\n    url: redis://h\n    mode: bgsave').message).toMatch(/source\.rdb: is required with source\.redis mode bgsave/);
    expect(error('  redis:\n    url: redis://h\n    tls: { ca: /x }').keyPath).toBe('source.redis.tls');
    expect(error('  redis:\n    url: http://h').keyPath).toBe('source.redis.url');
    expect(error('  redis:\n    url: redis://h/2').message).toMatch(/no database number/);
    expect(error('  rdb: /x/dump.rdb\n  redis:\n    url: redis://h\n    mode: bgsave\n    cluster: true').keyPath).toBe('source.redis.cluster');
    expect(error('  redis:\n    url: redis://h\n    max_parallel: 2').keyPath).toBe('source.redis.max_parallel');
    expect(error('  redis:\n    url: redis://h\n    cluster: true\n    max_parallel: 17').keyPath).toBe('source.redis.max_parallel');
    expect(error('  nodes: /x/nodes.conf\n  redis:\n    url: redis://h\n    cluster: true').keyPath).toBe('source.nodes');
  });
});
