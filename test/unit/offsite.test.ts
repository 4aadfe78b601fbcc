/**
 * The pure parts of off-site copies: the remotes config, the manifest and
 * listing formats, the combined remote retention plan, the upload queue and
 * its backoff, and both targets feeding the one retention planner.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/core/config.js';
import { ConfigError } from '../../src/core/errors.js';
import { OSFS } from '../../src/core/fs.js';
import { planRetention } from '../../src/pipeline/retention.js';
import type { Timestamp } from '../../src/core/timestamp.js';
import { writtenByText } from '../../src/sources/facts.js';
import { groupListing, MANIFEST_FORMAT, parseManifest, parseRemoteName, remoteName, serializeManifest, staleIncomplete, staleUploads, type Manifest } from '../../src/targets/manifest.js';
import { LocalFolderTarget } from '../../src/targets/local.js';
import { retentionInput } from '../../src/targets/target.js';
import { MAX_PARTS, partSizeFor, scrubSecrets } from '../../src/targets/s3.js';
import { encodedSizeBound } from '../../src/offsite/encoded.js';
import { planRemoteRetention } from '../../src/offsite/prune.js';
import { backoffMs, emptyRemoteState, enqueue, inBackoff, lagMs, pendingFor, settleQueue, trimToQueue, type OffsiteItem } from '../../src/offsite/state.js';

const T = (s: string) => s as Timestamp;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rdb-archiver-offsite-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function load(yaml: string) {
  const file = join(dir, 'config.yaml');
  writeFileSync(file, `source:\n  rdb: /var/lib/redis/dump.rdb\narchive:\n  dir: /var/backups/redis\n${yaml}`);
  return loadConfig({ config: file }, {});
}

function loadError(yaml: string): ConfigError {
  try {
    load(yaml);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('remotes config', () => {
  it('resolves defaults: prefix <hostname>/<instance>/, 16 MiB parts, 4 in parallel, 10m timeout, the instance rules', () => {
    const inst = load('remotes:\n  - { name: offsite, type: s3, bucket: acme-redis-backups }\n').instances[0]!;
    expect(inst.remotes).toEqual([expect.objectContaining({
      name: 'offsite', bucket: 'acme-redis-backups', prefix: `${hostname().toLowerCase().replace(/[^a-z0-9._-]/g, '-')}/default/`,
      partSize: 16 * 1024 * 1024, concurrency: 4, timeoutMs: 600_000, forcePathStyle: false, incompleteGraceMs: 86_400_000, rules: inst.rules,
    })]);
    expect(inst.monitor).toMatchObject({ offsiteWarnLagMs: 3_600_000, offsiteCritLagMs: 21_600_000 });
  });

  it('takes every key of the issue, and a prefix without its trailing slash gets one', () => {
    const r = load(`remotes:
  - name: offsite
    type: s3
    bucket: acme-redis-backups
    prefix: prod/cache-01
    endpoint: https://s3.eu-central-1.amazonaws.com
    region: eu-central-1
    force_path_style: true
    storage_class: STANDARD_IA
    sse: { type: aws:kms, kms_key_id: alias/redis-backups }
    part_size: 16MiB
    concurrency: 8
    timeout: 5m
    rules:
      - { name: daily, every: day, count: 30 }
`).instances[0]!.remotes[0]!;
    expect(r).toMatchObject({ prefix: 'prod/cache-01/', region: 'eu-central-1', forcePathStyle: true, storageClass: 'STANDARD_IA', sse: { type: 'aws:kms', kmsKeyId: 'alias/redis-backups' }, partSize: 16 * 1024 * 1024, concurrency: 8, timeoutMs: 300_000 });
    expect(r.rules).toEqual([{ name: 'daily', every: { kind: 'calendar', unit: 'day' }, count: 30 }]);
  });

  it.each([
    ['bucket: b', 'remotes[0].bucket', 'not a valid bucket name'],
    ['bucket: Acme_Backups', 'remotes[0].bucket', 'not a valid bucket name'],
    ['bucket: acme, part_size: 1MiB', 'remotes[0].part_size', 'between 5MiB and 5GiB'],
    ['bucket: acme, concurrency: 0', 'remotes[0].concurrency', 'from 1 to 64'],
    ['bucket: acme, prefix: /abs/', 'remotes[0].prefix', 'no leading "/"'],
    ['bucket: acme, prefix: "a/../b/"', 'remotes[0].prefix', '".."'],
    ['bucket: acme, endpoint: "https://key:secret@minio.local"', 'remotes[0].endpoint', 'without credentials in it'],
    ['bucket: acme, sse: { type: AES256, kms_key_id: k }', 'remotes[0].sse.kms_key_id', 'only applies to sse type aws:kms'],
    ['bucket: acme, access_key: AKIA', 'remotes[0].access_key', 'unknown key'],
  ])('refuses %s (exit 2, naming the key)', (keys, keyPath, detail) => {
    const err = loadError(`remotes:\n  - { name: offsite, type: s3, ${keys} }\n`);
    expect(err.keyPath).toBe(keyPath);
    expect(err.message).toContain(detail);
  });

  it('refuses two remotes with one name, and two instances sharing a bucket prefix', () => {
    expect(loadError('remotes:\n  - { name: a, type: s3, bucket: acme }\n  - { name: a, type: s3, bucket: acme }\n').message).toContain('duplicate remote name "a"');
    const file = join(dir, 'multi.yaml');
    writeFileSync(file, `archive:\n  dir: ${dir}/archive\nremotes:\n  - { name: offsite, type: s3, bucket: acme, prefix: shared/ }\ninstances:\n  - { name: a, source: { rdb: /a/dump.rdb } }\n  - { name: b, source: { rdb: /b/dump.rdb } }\n`);
    let err: unknown;
    try {
      loadConfig({ config: file }, {});
    } catch (e) {
      err = e;
    }
    expect((err as Error).message).toContain('share a bucket prefix');
  });
});

describe('manifest and listing', () => {
  const manifest: Manifest = {
    format: MANIFEST_FORMAT, version: 1, ts: T('2025-01-02T03-04-05'), instance: 'default', host: 'h', seq: 7, archivedAt: '2025-01-02T03:04:30Z', uploadedAt: '2025-01-02T03:05:00Z', rdbVersion: 11, redisVersion: '7.2.4',
    rdb: { name: 'dump-2025-01-02T03-04-05.rdb', bytes: 10, storedBytes: 10, sha256: 'a'.repeat(64), etag: 'x', encoding: [] },
    nodes: null,
    sidecar: { name: 'dump-2025-01-02T03-04-05.sha256', bytes: 95, storedBytes: 95, sha256: 'b'.repeat(64), etag: null, encoding: [] },
  };

  it('round-trips, and refuses another event, another format, or an encoding this version cannot undo', () => {
    const text = serializeManifest(manifest).toString();
    expect(parseManifest(text, T('2025-01-02T03-04-05'), 7)).toEqual({ manifest });
    expect(parseManifest(text, T('2025-01-02T03-04-06'), 7)).toMatchObject({ error: expect.stringContaining('names event') });
    // The sequence number in its name and in its body must agree (a copied or renamed manifest is not trusted).
    expect(parseManifest(text, T('2025-01-02T03-04-05'), 8)).toMatchObject({ error: expect.stringContaining('archive sequence number 7') });
    expect(parseManifest(text, T('2025-01-02T03-04-05'))).toMatchObject({ error: expect.stringContaining('archive sequence number 7') });
    // A manifest from before sequence numbers (no seq, no archivedAt) still reads, with nulls.
    const { seq: _s, archivedAt: _a, ...old } = manifest;
    expect(parseManifest(JSON.stringify(old), T('2025-01-02T03-04-05'))).toEqual({ manifest: { ...manifest, seq: null, archivedAt: null } });
    expect(parseManifest('{"format":"other"}', T('2025-01-02T03-04-05'))).toMatchObject({ error: 'not an rdb-archiver manifest' });
    expect(parseManifest('not json', T('2025-01-02T03-04-05'))).toMatchObject({ error: 'not valid JSON' });
    const encoded = JSON.parse(text) as Manifest;
    encoded.rdb.encoding = ['zstd', 'age'];
    encoded.rdb.storedSha256 = 'c'.repeat(64);
    // The object's name must be the one its encoding gives this event's file.
    expect(parseManifest(JSON.stringify(encoded), T('2025-01-02T03-04-05'), 7)).toMatchObject({ error: expect.stringContaining("not this event's dump-2025-01-02T03-04-05.rdb.zst.age") });
    encoded.rdb.name = 'dump-2025-01-02T03-04-05.rdb.zst.age';
    expect(parseManifest(JSON.stringify(encoded), T('2025-01-02T03-04-05'), 7)).toEqual({ manifest: encoded });
    encoded.rdb.encoding = ['lz4', 'age'];
    expect(parseManifest(JSON.stringify(encoded), T('2025-01-02T03-04-05'), 7)).toMatchObject({ error: expect.stringContaining('encoding lz4 is not supported') });
    encoded.rdb.encoding = ['zstd'];
    encoded.rdb.storedSha256 = 'not hex';
    expect(parseManifest(JSON.stringify(encoded), T('2025-01-02T03-04-05'), 7)).toMatchObject({ error: expect.stringContaining('malformed') });
  });

  it('carries the server facts of a pulled snapshot; a manifest without them (a file source, an older version) reads as before; malformed facts are dropped, not the event', () => {
    const server = {
      url: 'redis://10.0.0.5:6379', redisVersion: '7.0.15', runId: 'f'.repeat(40), replId: 'e'.repeat(40), replOffset: 123456,
      transfer: 'disk' as const, takenAt: '2025-01-02T03:04:05.000Z',
    };
    const withFacts: Manifest = { ...manifest, server };
    expect(parseManifest(serializeManifest(withFacts).toString(), T('2025-01-02T03-04-05'), 7)).toEqual({ manifest: withFacts });
    // Without: no server key at all (the manifest of a file source is what it was before).
    const plain = parseManifest(serializeManifest(manifest).toString(), T('2025-01-02T03-04-05'), 7);
    expect(plain).toEqual({ manifest });
    expect('server' in (plain as { manifest: Manifest }).manifest).toBe(false);
    for (const bad of ['a string', 42, [], { ...server, url: 'http://x' }, { ...server, transfer: 'pigeon' }, { ...server, takenAt: undefined }]) {
      expect(parseManifest(JSON.stringify({ ...manifest, server: bad }), T('2025-01-02T03-04-05'), 7)).toEqual({ manifest });
    }
    // A field of the wrong type loses only itself.
    const odd = parseManifest(JSON.stringify({ ...manifest, server: { ...server, replOffset: -1, runId: 7 } }), T('2025-01-02T03-04-05'), 7);
    expect((odd as { manifest: Manifest }).manifest.server).toEqual({ ...server, replOffset: null, runId: null });
  });

  it('says who wrote a snapshot: the pulling server\'s facts, else the RDB\'s redis-ver, else nothing', () => {
    const server = { url: 'redis://10.0.0.5:6379', redisVersion: '7.0.15', runId: 'abc', replId: null, replOffset: 99, transfer: 'diskless' as const, takenAt: '2025-01-02T03:04:05.000Z' };
    expect(writtenByText(server, '7.0.14')).toBe('server 7.0.15 (redis://10.0.0.5:6379, run_id abc, master_repl_offset 99, pulled 2025-01-02T03:04:05.000Z)');
    expect(writtenByText({ ...server, redisVersion: null, runId: null, replOffset: null }, '7.0.14')).toBe('server 7.0.14 (redis://10.0.0.5:6379, pulled 2025-01-02T03:04:05.000Z)');
    expect(writtenByText(null, '7.2.4')).toBe("server 7.2.4 (the RDB's redis-ver field)");
    expect(writtenByText(undefined, null)).toBeNull();
  });

  it('refuses a manifest whose objects are not its own event\'s: another event\'s object, a name with .., an encoded sidecar', () => {
    const swapped = JSON.parse(serializeManifest(manifest).toString()) as Manifest;
    swapped.rdb.name = 'dump-2025-01-01T00-00-00.rdb';
    expect(parseManifest(JSON.stringify(swapped), T('2025-01-02T03-04-05'), 7)).toMatchObject({ error: expect.stringContaining('rdb: names the object "dump-2025-01-01T00-00-00.rdb"') });
    swapped.rdb.name = '..';
    expect(parseManifest(JSON.stringify(swapped), T('2025-01-02T03-04-05'), 7)).toMatchObject({ error: expect.stringContaining('rdb: names the object ".."') });
    const sidecar = JSON.parse(serializeManifest(manifest).toString()) as Manifest;
    sidecar.sidecar.name = 'dump-2025-01-02T03-04-05.sha256.gz';
    sidecar.sidecar.encoding = ['gzip'];
    expect(parseManifest(JSON.stringify(sidecar), T('2025-01-02T03-04-05'), 7)).toMatchObject({ error: expect.stringContaining('sidecar: names') });
    const nodes = JSON.parse(serializeManifest(manifest).toString()) as Manifest;
    nodes.nodes = { ...nodes.sidecar, name: 'dump-2025-01-02T03-04-05.rdb' };
    expect(parseManifest(JSON.stringify(nodes), T('2025-01-02T03-04-05'), 7)).toMatchObject({ error: expect.stringContaining('nodes: names') });
    nodes.nodes = { ...nodes.sidecar, name: 'nodes-2025-01-02T03-04-05.config' };
    expect(parseManifest(JSON.stringify(nodes), T('2025-01-02T03-04-05'), 7)).toMatchObject({ manifest: { nodes: { name: 'nodes-2025-01-02T03-04-05.config' } } });
  });

  it('groups a listing into events: complete only with a manifest; foreign names are dropped', () => {
    expect(parseRemoteName('dump-2025-01-02T03-04-05.rdb.zst.age')).toEqual({ ts: '2025-01-02T03-04-05', manifest: false });
    expect(parseRemoteName('manifest-2025-01-02T03-04-05.json.bak')).toBeUndefined();
    expect(parseRemoteName('manifest-2025-01-02T03-04-05.seq12.json')).toEqual({ ts: '2025-01-02T03-04-05', manifest: true, seq: 12 });
    expect(parseRemoteName('manifest-2025-01-02T03-04-05.json')).toEqual({ ts: '2025-01-02T03-04-05', manifest: true });
    expect(parseRemoteName('manifest-2025-01-02T03-04-05.seq0.json')).toBeUndefined();
    expect(parseRemoteName('manifest-2025-01-02T03-04-05.seq1.json.tmp')).toBeUndefined();
    // A same-second ordinal is part of the event's name, at the remote too.
    expect(parseRemoteName('manifest-2025-01-02T03-04-05_2.seq3.json')).toEqual({ ts: '2025-01-02T03-04-05_2', manifest: true, seq: 3 });
    expect(parseRemoteName('dump-2025-01-02T03-04-05_2.rdb')).toEqual({ ts: '2025-01-02T03-04-05_2', manifest: false });
    expect(remoteName('manifest', T('2025-01-02T03-04-05'), 12)).toBe('manifest-2025-01-02T03-04-05.seq12.json');
    expect(remoteName('manifest', T('2025-01-02T03-04-05'))).toBe('manifest-2025-01-02T03-04-05.json');
    expect(parseRemoteName('notes.txt')).toBeUndefined();
    expect(parseRemoteName('dump-2025-13-02T03-04-05.rdb')).toBeUndefined();
    const events = groupListing([
      { name: 'dump-2025-01-01T00-00-00.rdb', bytes: 5, modifiedMs: 1000 },
      { name: 'manifest-2025-01-01T00-00-00.json', bytes: 1, modifiedMs: 2000 },
      { name: 'dump-2025-01-03T00-00-00.rdb', bytes: 7, modifiedMs: 5000 },
      { name: 'README', bytes: 1, modifiedMs: 1 },
    ]);
    expect(events.map((e) => [e.ts, e.complete, e.bytes])).toEqual([['2025-01-03T00-00-00', false, 7], ['2025-01-01T00-00-00', true, 6]]);
    expect(staleIncomplete(events, 5000 + 999, 1000)).toEqual([]);
    expect(staleIncomplete(events, 5000 + 1000, 1000).map((e) => e.ts)).toEqual(['2025-01-03T00-00-00']);
  });

  it('orders a listing by archive sequence number, whatever clock named the events; manifests without one rank below', () => {
    const events = groupListing([
      { name: 'manifest-2030-01-01T00-00-00.seq2.json', bytes: 1, modifiedMs: 0 }, // a clock in the future
      { name: 'manifest-2020-01-01T00-00-00.seq3.json', bytes: 1, modifiedMs: 0 }, // then stepped far back: archived last
      { name: 'manifest-2025-01-01T00-00-00.seq1.json', bytes: 1, modifiedMs: 0 },
      { name: 'manifest-2026-01-01T00-00-00.json', bytes: 1, modifiedMs: 0 }, // written before sequence numbers
      { name: 'manifest-2024-01-01T00-00-00.json', bytes: 1, modifiedMs: 0 },
      { name: 'dump-2031-01-01T00-00-00.rdb', bytes: 1, modifiedMs: 0 }, // incomplete
    ]);
    expect(events.filter((e) => e.complete).map((e) => [e.ts, e.seq])).toEqual([
      ['2020-01-01T00-00-00', 3], ['2030-01-01T00-00-00', 2], ['2025-01-01T00-00-00', 1], ['2026-01-01T00-00-00', undefined], ['2024-01-01T00-00-00', undefined],
    ]);
    // Two manifests of one event (an upgrade re-uploaded it): the one with the sequence number names it.
    const twice = groupListing([{ name: 'manifest-2025-01-01T00-00-00.json', bytes: 1, modifiedMs: 0 }, { name: 'manifest-2025-01-01T00-00-00.seq4.json', bytes: 1, modifiedMs: 0 }]);
    expect(twice).toMatchObject([{ ts: '2025-01-01T00-00-00', seq: 4, manifest: 'manifest-2025-01-01T00-00-00.seq4.json', complete: true }]);
  });

  it('aborts only our own unfinished uploads directly under the prefix, once older than the grace period', () => {
    const now = Date.parse('2025-01-02T00:00:00Z');
    const hour = 3_600_000;
    const uploads = [
      { key: 'p/dump-2025-01-01T00-00-00.rdb', uploadId: 'old', initiatedMs: now - hour },
      { key: 'p/dump-2025-01-01T23-30-00.rdb', uploadId: 'young', initiatedMs: now - hour + 1 }, // still within the grace period
      { key: 'p/backup.tar', uploadId: 'foreign', initiatedMs: 0 },
      { key: 'p/sub/dump-2025-01-01T00-00-00.rdb', uploadId: 'deeper', initiatedMs: 0 },
      { key: 'q/dump-2025-01-01T00-00-00.rdb', uploadId: 'other-prefix', initiatedMs: 0 },
    ];
    expect(staleUploads(uploads, 'p/', now, hour).map((u) => u.uploadId)).toEqual(['old']);
  });

  it('a local rule folder and a remote listing feed the same planner the same way', async () => {
    const folder = join(dir, 'daily');
    mkdirSync(folder);
    const names = ['2025-01-01T00-00-00', '2025-01-02T00-00-00', '2025-01-03T00-00-00'];
    for (const ts of names) writeFileSync(join(folder, `dump-${ts}.rdb`), 'x');
    writeFileSync(join(folder, 'dump-2025-01-04T00-00-00.sha256'), 'incomplete'); // no .rdb: not complete
    const local = await new LocalFolderTarget(new OSFS(), folder).listEvents();
    const remote = groupListing([...names.map((ts) => ({ name: `manifest-${ts}.json`, bytes: 1, modifiedMs: 0 })), { name: 'dump-2025-01-04T00-00-00.rdb', bytes: 1, modifiedMs: 0 }]);
    const rule = { every: { kind: 'snapshot' as const }, count: 2 };
    expect(planRetention(retentionInput(local), rule, 'UTC')).toEqual(planRetention(retentionInput(remote), rule, 'UTC'));
    expect(planRetention(retentionInput(remote), rule, 'UTC').delete.map((d) => d.ts)).toEqual(['2025-01-01T00-00-00']);
  });
});

describe('remote retention plan', () => {
  const events = groupListing(['2025-03-01T10-00-00', '2025-03-02T10-00-00', '2025-03-02T20-00-00', '2025-03-10T10-00-00']
    .map((ts) => ({ name: `manifest-${ts}.json`, bytes: 1, modifiedMs: 0 })));

  it('keeps an event when any rule keeps it, and deletes it only when every rule lets it go, with each rule\'s reason', () => {
    const plan = planRemoteRetention(events, [
      { name: 'last', every: { kind: 'snapshot' }, count: 1 },
      { name: 'daily', every: { kind: 'calendar', unit: 'day' }, count: 2 },
    ], 'UTC');
    expect(plan.keep.map((d) => d.ts)).toEqual(['2025-03-10T10-00-00', '2025-03-02T20-00-00']);
    expect(plan.delete.map((d) => d.ts)).toEqual(['2025-03-02T10-00-00', '2025-03-01T10-00-00']);
    // Each rule's own reason, as the shared planner words it.
    expect(plan.delete[0]!.reason).toMatch(/^last: older than the 1 .*snapshots; daily: day 2025-03-02 already kept .*2025-03-02T20-00-00/);
    expect(plan.keep[1]!.reason).toMatch(/^daily: .*day 2025-03-02/);
  });

  it('never plans to delete the event the source holds now, nor an incomplete one (cleanup handles those)', () => {
    const withIncomplete = groupListing([{ name: 'manifest-2025-03-10T10-00-00.json', bytes: 1, modifiedMs: 0 }, { name: 'dump-2025-03-11T00-00-00.rdb', bytes: 1, modifiedMs: 0 }, { name: 'manifest-2025-03-01T10-00-00.json', bytes: 1, modifiedMs: 0 }]);
    const plan = planRemoteRetention(withIncomplete, [{ name: 'last', every: { kind: 'snapshot' }, count: 1 }], 'UTC', T('2025-03-01T10-00-00'));
    expect(plan.delete).toEqual([]);
    expect(plan.keep.map((d) => d.ts)).toEqual(['2025-03-10T10-00-00', '2025-03-01T10-00-00']);
  });
});

describe('upload queue and backoff', () => {
  const item = (ts: string, archivedAt = '2025-01-01T00:00:00Z'): OffsiteItem => ({ ts: T(ts), bytes: 1, sha256: 'c'.repeat(64), rdbVersion: 11, redisVersion: null, archivedAt });

  it('keeps items oldest first, once per timestamp; a remote\'s pending are those it neither holds nor lost', () => {
    let q = enqueue([], item('2025-01-02T00-00-00'));
    q = enqueue(q, item('2025-01-01T00-00-00'));
    q = enqueue(q, item('2025-01-02T00-00-00'));
    expect(q.map((i) => i.ts)).toEqual(['2025-01-01T00-00-00', '2025-01-02T00-00-00']);
    const a = { ...emptyRemoteState(), uploaded: [T('2025-01-01T00-00-00')] };
    const b = { ...emptyRemoteState(), lost: [{ ts: T('2025-01-01T00-00-00'), reason: 'pruned', at: '' }], uploaded: [T('2025-01-02T00-00-00')] };
    expect(pendingFor(q, a).map((i) => i.ts)).toEqual(['2025-01-02T00-00-00']);
    expect(pendingFor(q, b)).toEqual([]);
    // An item leaves the queue only when every remote is done with it.
    expect(settleQueue(q, [a, b]).map((i) => i.ts)).toEqual(['2025-01-02T00-00-00']);
    expect(trimToQueue(b, settleQueue(q, [a, b])).lost).toEqual([]);
  });

  it('backs off 1, 2, 4 ... minutes, bounded at 30, and measures lag from the oldest pending event', () => {
    expect([0, 1, 2, 3, 5, 6, 50].map(backoffMs)).toEqual([0, 60_000, 120_000, 240_000, 960_000, 1_800_000, 1_800_000]);
    const s = { ...emptyRemoteState(), nextAttemptAt: '2025-01-01T00:10:00Z' };
    expect(inBackoff(s, Date.parse('2025-01-01T00:09:59Z'))).toBe(true);
    expect(inBackoff(s, Date.parse('2025-01-01T00:10:00Z'))).toBe(false);
    expect(lagMs([item('2025-01-01T00-00-00', '2025-01-01T00:00:00Z')], Date.parse('2025-01-01T01:00:00Z'))).toBe(3_600_000);
    expect(lagMs([], Date.now())).toBe(0);
  });

  it('blanks the secret key and session token of the environment out of any message', () => {
    const saved = { ...process.env };
    process.env.AWS_SECRET_ACCESS_KEY = 'sekrit-value-123';
    process.env.AWS_SESSION_TOKEN = 'token-value-456';
    try {
      expect(scrubSecrets('x sekrit-value-123 y token-value-456')).toBe('x [redacted] y [redacted]');
    } finally {
      process.env = saved;
    }
  });
});

describe('multipart part size', () => {
  const MiB = 1024 * 1024;

  it('keeps the configured part size while the object fits in 10,000 parts, and grows it in whole MiB beyond', () => {
    expect(partSizeFor(64 * MiB, 1024 * MiB)).toBe(64 * MiB);
    expect(partSizeFor(64 * MiB, 64 * MiB * MAX_PARTS)).toBe(64 * MiB);
    // 700 GiB: 64 MiB parts would need 11,200 of them.
    const grown = partSizeFor(64 * MiB, 700 * 1024 * MiB);
    expect(grown % MiB).toBe(0);
    expect(Math.ceil((700 * 1024 * MiB) / grown)).toBeLessThanOrEqual(MAX_PARTS);
    expect(Math.ceil((700 * 1024 * MiB) / (grown - MiB))).toBeGreaterThan(MAX_PARTS);
    expect(partSizeFor(5 * MiB, 5 * MiB * MAX_PARTS + 1)).toBe(6 * MiB);
  });

  it('bounds what an encoding can yield above the zstd worst case (1/256 more) and age\'s 16 bytes per 64 KiB', () => {
    for (const size of [0, 1, 64 * 1024, 1024 * MiB, 700 * 1024 * MiB]) {
      const zstdWorst = size + Math.floor(size / 256) + 128 * 1024;
      const ageOver = Math.ceil(zstdWorst / 65536) * 16 + 4096;
      expect(encodedSizeBound(size)).toBeGreaterThanOrEqual(zstdWorst + ageOver);
    }
  });
});
