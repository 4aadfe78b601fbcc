/**
 * Off-site copies through the real CLI against a real S3 protocol server
 * (s3rver on loopback), cross-checked with an independent client (awscli:
 * downloads, HEAD, and the strays put under the prefix). Listings come from
 * the test's own S3 client (an awscli start costs about 2 s of CPU).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { bucketAccess, remoteYaml, runAws, s3Env, startS3, TEST_BUCKET, type BucketAccess, type S3Server } from '../helpers/s3.js';
import { readJson, setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

let s3: S3Server;
let bucket: BucketAccess;
beforeAll(async () => {
  s3 = await startS3();
  bucket = await bucketAccess(s3.endpoint);
});
afterAll(() => bucket?.close());

let prefixes = 0;
/** A fresh prefix per test: tests share the server, never a prefix. */
function newPrefix(): string {
  prefixes += 1;
  return `t${prefixes}-${process.pid}/cache-01/`;
}

function withRemote(options: { prefix: string; rules?: string[]; extra?: string[]; endpoint?: string; localRules?: Array<{ name: string; every?: string; count: number }> }): ArchiveEnv {
  const env = setupArchive({ rules: options.localRules ?? [{ name: 'all', count: 50 }] });
  env.writeConfig({ extra: remoteYaml({ endpoint: options.endpoint ?? s3.endpoint, prefix: options.prefix, rules: options.rules, extra: options.extra }) });
  return env;
}

const cli = (args: string[], env: Record<string, string | undefined> = {}) => runCli(args, { env: s3Env(env) });

/** The keys under the prefix, read from this process (listing needs no awscli start, about 2 s of CPU each). */
const keysUnder = (prefix: string): Promise<string[]> => bucket.keysUnder(prefix);

// Each test runs the CLI and awscli many times: generous on a loaded machine (never a timing assertion).
describe('off-site copies to an S3-compatible server', { timeout: 240_000 }, () => {
  it('once archives, then uploads: the manifest is last, awscli downloads what sha256sum -c accepts, list and verify --read-data agree', async () => {
    const prefix = newPrefix();
    const env = withRemote({ prefix });
    const snap = writeSnapshot(env.source, { seed: 'first', mtime: new Date('2025-03-01T10:00:00Z'), size: 300_000 });
    const r = await cli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    const out = jsonOf<{ offsite: Array<{ remote: string; status: string; uploaded: string[]; pending: string[] }> }>(r);
    expect(out.offsite).toMatchObject([{ remote: 'offsite', status: 'uploaded', uploaded: ['2025-03-01T10-00-00'], pending: [] }]);
    expect(r.stderr).not.toMatch(/Warning|NodeVersionSupport|deprecat/i);

    expect(await keysUnder(prefix)).toEqual(['dump-2025-03-01T10-00-00.rdb', 'dump-2025-03-01T10-00-00.sha256', 'manifest-2025-03-01T10-00-00.seq1.json']);
    // The manifest records the copy pass's sha256 and the empty encoding chain.
    const dl = tempDir();
    expect(runAws(['s3', 'cp', `s3://${TEST_BUCKET}/${prefix}`, dl, '--recursive'], s3.endpoint).code).toBe(0);
    const manifest = readJson<{ ts: string; seq: number; archivedAt: string; rdb: { sha256: string; bytes: number; encoding: string[] }; nodes: null; rdbVersion: number }>(join(dl, 'manifest-2025-03-01T10-00-00.seq1.json'));
    // Its archive sequence number is the local archive record's (dump-<ts>.seq1.json): the remote's archive order.
    expect(readdirSync(join(env.archive, 'all'))).toContain('dump-2025-03-01T10-00-00.seq1.json');
    expect(manifest.archivedAt).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    expect(manifest).toMatchObject({ ts: '2025-03-01T10-00-00', seq: 1, rdb: { sha256: snap.sha256, bytes: snap.length, encoding: [] }, nodes: null });
    expect(readFileSync(join(dl, 'dump-2025-03-01T10-00-00.rdb')).equals(snap.bytes)).toBe(true);
    const check = spawnSync('sha256sum', ['-c', 'dump-2025-03-01T10-00-00.sha256'], { cwd: dl, encoding: 'utf8' });
    expect(check.status, check.stdout + check.stderr).toBe(0);

    const list = await cli(['list', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(list.code, list.stderr).toBe(0);
    expect(jsonOf(list)).toMatchObject({ remote: 'offsite', events: [{ ts: '2025-03-01T10-00-00', seq: 1, bytes: snap.length, nodes: false }], incomplete: [] });
    const verify = await cli(['verify', '--remote', 'offsite', '--read-data', '--json', '-c', env.config]);
    expect(verify.code, verify.stderr).toBe(0);
    expect(jsonOf(verify)).toMatchObject({ ok: true, readData: true, events: [{ ts: '2025-03-01T10-00-00', ok: true, checked: 'data' }], bytesRead: snap.length + 95 });

    // The queue (in the state file, written by the local cycle only) drops the event at the next run.
    expect(readJson<{ offsite: { queue: Array<{ ts: string }> } }>(env.state).offsite.queue.map((q) => q.ts)).toEqual(['2025-03-01T10-00-00']);
    expect((await cli(['once', '-c', env.config])).code).toBe(0);
    expect(readJson<{ offsite: { queue: unknown[] } }>(env.state).offsite.queue).toEqual([]);
    const rstate = readJson<{ uploaded: string[]; counters: { uploads: number; bytesUploaded: number } }>(join(env.archive, '.rdb-archiver', 'remote-offsite.json'));
    expect(rstate.counters.uploads).toBe(1);
  });

  it('multipart upload above part_size: every part carries Content-MD5, restore --from gives the same bytes back', async () => {
    const prefix = newPrefix();
    const env = withRemote({ prefix, extra: ['part_size: 5MiB', 'concurrency: 2'] });
    const snap = writeSnapshot(env.source, { seed: 'big', mtime: new Date('2025-03-02T10:00:00Z'), size: 12 * 1024 * 1024 + 123 });
    const r = await cli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    const head = runAws(['s3api', 'head-object', '--bucket', TEST_BUCKET, '--key', `${prefix}dump-2025-03-02T10-00-00.rdb`], s3.endpoint);
    expect(JSON.parse(head.stdout).ContentLength).toBe(snap.length);

    rmSync(env.archive, { recursive: true, force: true }); // the host is gone
    const target = join(env.root, 'restored');
    mkdirSync(target);
    const restored = await cli(['restore', 'latest', '--from', 'offsite', '--to', target, '--json', '-c', env.config]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(jsonOf(restored)).toMatchObject({ status: 'restored', ts: '2025-03-02T10-00-00', sha256: snap.sha256, bytes: snap.length, to: join(target, 'dump.rdb') });
    expect(readFileSync(join(target, 'dump.rdb')).equals(snap.bytes)).toBe(true);
    expect(readdirSync(target)).toEqual(['dump.rdb']); // no temp file left
    // Never overwrites without --force.
    const again = await cli(['restore', 'latest', '--from', 'offsite', '--to', target, '-c', env.config]);
    expect(again.code).toBe(73);
  });

  it('what awscli puts under the prefix without a manifest is ignored by list, verify, restore and retention, and removed after the grace period', async () => {
    const prefix = newPrefix();
    const env = withRemote({ prefix, extra: ['incomplete_grace: 1s'], rules: ['{ name: last, count: 1 }'] });
    const snap = writeSnapshot(env.source, { seed: 'real', mtime: new Date('2025-03-03T10:00:00Z') });
    expect((await cli(['once', '-c', env.config])).code).toBe(0);
    // A newer "event" without a manifest, and a file that is not ours at all.
    const stray = join(env.root, 'stray.rdb');
    writeFileSync(stray, 'not a snapshot');
    expect(runAws(['s3', 'cp', stray, `s3://${TEST_BUCKET}/${prefix}dump-2025-03-04T10-00-00.rdb`], s3.endpoint).code).toBe(0);
    expect(runAws(['s3', 'cp', stray, `s3://${TEST_BUCKET}/${prefix}notes.txt`], s3.endpoint).code).toBe(0);

    const list = jsonOf<{ events: Array<{ ts: string }>; incomplete: Array<{ ts: string }> }>(await cli(['list', '--remote', 'offsite', '--json', '-c', env.config]));
    expect(list.events.map((e) => e.ts)).toEqual(['2025-03-03T10-00-00']);
    expect(list.incomplete.map((e) => e.ts)).toEqual(['2025-03-04T10-00-00']);
    const verify = await cli(['verify', '--remote', 'offsite', '--read-data', '--json', '-c', env.config]);
    expect(verify.code, verify.stdout).toBe(0);
    const target = join(env.root, 'out.rdb');
    const restored = await cli(['restore', 'latest', '--from', 'offsite', '--to', target, '--json', '-c', env.config]);
    expect(jsonOf(restored)).toMatchObject({ status: 'restored', ts: '2025-03-03T10-00-00', sha256: snap.sha256 });

    await new Promise((r) => setTimeout(r, 2100)); // past the grace period
    const dry = await cli(['prune', '--remote', 'offsite', '--dry-run', '--json', '-c', env.config]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(jsonOf(dry)).toMatchObject({ dryRun: true, deleted: [], incompleteRemoved: ['2025-03-04T10-00-00'] });
    expect(await keysUnder(prefix)).toContain('dump-2025-03-04T10-00-00.rdb');
    const pruned = await cli(['prune', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(pruned.code, pruned.stderr).toBe(0);
    // The complete event stays (newest, kept by the rule); the stray name that is not ours is left alone.
    expect(await keysUnder(prefix)).toEqual(['dump-2025-03-03T10-00-00.rdb', 'dump-2025-03-03T10-00-00.sha256', 'manifest-2025-03-03T10-00-00.seq1.json', 'notes.txt']);
  });

  it('remote retention over days of events: its own rules, a dry run with reasons, manifest-first deletion', async () => {
    const prefix = newPrefix();
    const env = withRemote({ prefix, rules: ['{ name: daily, every: day, count: 2 }'] });
    const days = ['2025-04-01T10:00:00Z', '2025-04-01T22:00:00Z', '2025-04-02T10:00:00Z', '2025-04-03T09:00:00Z', '2025-04-03T21:00:00Z'];
    for (const [i, day] of days.entries()) {
      writeSnapshot(env.source, { seed: `day${i}`, mtime: new Date(day) });
      const r = await cli(['once', '-c', env.config]);
      expect(r.code, r.stderr).toBe(0);
    }
    // Each once applied the remote's retention after its upload: 2 days kept, their newest event each.
    const list = jsonOf<{ events: Array<{ ts: string }> }>(await cli(['list', '--remote', 'offsite', '--json', '-c', env.config]));
    expect(list.events.map((e) => e.ts)).toEqual(['2025-04-03T21-00-00', '2025-04-02T10-00-00']);
    // The local rule kept everything: each side has its own retention.
    expect(readdirSync(join(env.archive, 'all')).filter((n) => n.endsWith('.rdb'))).toHaveLength(5);

    // A tighter rule, dry run first: the reasons come from the same planner as local retention.
    env.writeConfig({ extra: remoteYaml({ endpoint: s3.endpoint, prefix, rules: ['{ name: daily, every: day, count: 1 }'] }) });
    const dry = await cli(['prune', '--remote', 'offsite', '--dry-run', '-c', env.config]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('remote retention plan (dry run: nothing deleted) for offsite: keep 1, would delete 1');
    expect(dry.stdout).toMatch(/delete +2025-04-02T10-00-00 +daily: older than the 1 most recent day periods that have events/);
    expect(dry.stdout).toMatch(/keep +2025-04-03T21-00-00 +daily: .*\(day 2025-04-03, 1 of 1\)/);
    expect(await keysUnder(prefix)).toContain('manifest-2025-04-02T10-00-00.seq3.json');
    const real = await cli(['prune', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(real.code, real.stderr).toBe(0);
    expect(jsonOf(real)).toMatchObject({ deleted: [{ ts: '2025-04-02T10-00-00' }], refused: [] });
    expect((await keysUnder(prefix)).filter((k) => k.includes('2025-04-02'))).toEqual([]);
  });

  it('a skewed source clock (named in the future, then stepped back): restore latest --from, list, verify and remote retention follow the archive order, not the names', async () => {
    const prefix = newPrefix();
    const roomy = ['{ name: last, count: 10 }'];
    const env = withRemote({ prefix, rules: roomy });
    // In archive order: a clock years ahead, then corrected, then stepped back further; the last two
    // within one second (a same-second ordinal, _1, which the remote must list as complete too).
    const named = ['2099-01-01T00:00:00Z', '2025-06-01T10:00:00Z', '2025-05-01T10:00:00Z', '2025-04-01T10:00:00Z', '2025-04-01T10:00:00Z'];
    const snaps = [];
    for (const [i, at] of named.entries()) {
      snaps.push(writeSnapshot(env.source, { seed: `skew${i}`, mtime: new Date(at), size: 100_000 + i * 1000 }));
      const r = await cli(['once', '--json', '-c', env.config]);
      expect(r.code, r.stderr).toBe(0);
      expect(jsonOf<{ offsite: Array<{ status: string }> }>(r).offsite[0]!.status, `${i}: ${r.stdout}`).toBe('uploaded');
    }
    const archiveOrder = ['2025-04-01T10-00-00_1', '2025-04-01T10-00-00', '2025-05-01T10-00-00', '2025-06-01T10-00-00', '2099-01-01T00-00-00'];
    expect((await keysUnder(prefix)).filter((k) => k.startsWith('manifest-'))).toEqual([
      'manifest-2025-04-01T10-00-00.seq4.json', 'manifest-2025-04-01T10-00-00_1.seq5.json', 'manifest-2025-05-01T10-00-00.seq3.json',
      'manifest-2025-06-01T10-00-00.seq2.json', 'manifest-2099-01-01T00-00-00.seq1.json',
    ]);
    const list = jsonOf<{ events: Array<{ ts: string; seq: number }>; incomplete: unknown[] }>(await cli(['list', '--remote', 'offsite', '--json', '-c', env.config]));
    expect(list.events.map((e) => e.ts)).toEqual(archiveOrder);
    expect(list.incomplete).toEqual([]);
    const verify = await cli(['verify', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(verify.code, verify.stdout).toBe(0);
    expect(jsonOf<{ events: Array<{ ts: string }> }>(verify).events.map((e) => e.ts)).toEqual(archiveOrder);

    // The host is gone: "latest" is what was archived last, not the highest name (2099).
    rmSync(env.archive, { recursive: true, force: true });
    mkdirSync(env.archive, { mode: 0o700 });
    const out = join(env.root, 'latest.rdb');
    const restored = await cli(['restore', 'latest', '--from', 'offsite', '--to', out, '--json', '-c', env.config]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(jsonOf(restored)).toMatchObject({ status: 'restored', ts: '2025-04-01T10-00-00_1', sha256: snaps[4]!.sha256 });
    expect(readFileSync(out).equals(snaps[4]!.bytes)).toBe(true);

    // Remote retention keeps the 2 most recently archived, whatever their names; the dry run says why.
    env.writeConfig({ extra: remoteYaml({ endpoint: s3.endpoint, prefix, rules: ['{ name: last, count: 2 }'] }) });
    const dry = await cli(['prune', '--remote', 'offsite', '--dry-run', '-c', env.config]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('keep 2, would delete 3');
    expect(dry.stdout).toMatch(/keep +2025-04-01T10-00-00_1 +last: most recently archived event/);
    expect(dry.stdout).toMatch(/keep +2025-04-01T10-00-00 +last: snapshot 2 of 2/);
    for (const ts of ['2025-05-01T10-00-00', '2025-06-01T10-00-00', '2099-01-01T00-00-00']) {
      expect(dry.stdout).toMatch(new RegExp(`delete +${ts} +last: older than the 2 most recently archived snapshots`));
    }
    const real = await cli(['prune', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(real.code, real.stderr).toBe(0);
    expect(jsonOf<{ deleted: Array<{ ts: string }> }>(real).deleted.map((d) => d.ts).sort()).toEqual(['2025-05-01T10-00-00', '2025-06-01T10-00-00', '2099-01-01T00-00-00']);
    expect(jsonOf<{ events: Array<{ ts: string }> }>(await cli(['list', '--remote', 'offsite', '--json', '-c', env.config])).events.map((e) => e.ts))
      .toEqual(['2025-04-01T10-00-00_1', '2025-04-01T10-00-00']);
  });

  it('once --dry-run prints the off-site plan the real run then executes: the uploads pending, then the remote prunes, with reasons', async () => {
    const prefix = newPrefix();
    const env = withRemote({ prefix, rules: ['{ name: last, count: 1 }'] });
    writeSnapshot(env.source, { seed: 'plan-a', mtime: new Date('2025-09-01T10:00:00Z') });
    expect((await cli(['once', '-c', env.config])).code).toBe(0);
    const before = await keysUnder(prefix);
    writeSnapshot(env.source, { seed: 'plan-b', mtime: new Date('2025-09-02T10:00:00Z') });
    const dry = await cli(['once', '--dry-run', '-c', env.config]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('off-site offsite plan (dry run: nothing uploaded or deleted): would upload 2025-09-02T10-00-00');
    expect(dry.stdout).toContain('remote retention plan: keep 1, would delete 1');
    expect(dry.stdout).toMatch(/keep +2025-09-02T10-00-00 +last: most recently archived event/);
    expect(dry.stdout).toMatch(/delete +2025-09-01T10-00-00 +last: older than the 1 most recently archived snapshots/);
    const dryJson = jsonOf<{ status: string; offsite: Array<{ status: string; pending: string[]; retention: { deleted: Array<{ ts: string }>; kept: Array<{ ts: string }> } }> }>(await cli(['once', '--dry-run', '--json', '-c', env.config]));
    expect(dryJson.status).toBe('would-archive');
    expect(dryJson.offsite[0]).toMatchObject({ status: 'planned', pending: ['2025-09-02T10-00-00'], retention: { kept: [{ ts: '2025-09-02T10-00-00' }], deleted: [{ ts: '2025-09-01T10-00-00' }] } });
    expect(await keysUnder(prefix)).toEqual(before); // nothing uploaded, nothing deleted

    // The real run does exactly that.
    const real = await cli(['once', '--json', '-c', env.config]);
    expect(real.code, real.stderr).toBe(0);
    expect(jsonOf(real)).toMatchObject({ offsite: [{ status: 'uploaded', uploaded: ['2025-09-02T10-00-00'], retention: { deleted: [{ ts: '2025-09-01T10-00-00' }] } }] });
    expect((await keysUnder(prefix)).filter((k) => k.startsWith('manifest-'))).toEqual(['manifest-2025-09-02T10-00-00.seq2.json']);
    // Nothing pending: the dry run plans nothing off-site (and never contacts the remote).
    const idle = jsonOf<{ offsite: Array<{ status: string; pending: string[] }> }>(await cli(['once', '--dry-run', '--json', '-c', env.config]));
    expect(idle.offsite).toMatchObject([{ status: 'idle', pending: [] }]);
  });

  it('a no-change once with a remote configured and nothing pending never loads the S3 SDK', async () => {
    const prefix = newPrefix();
    const env = withRemote({ prefix });
    writeSnapshot(env.source, { seed: 'x', mtime: new Date('2025-05-01T10:00:00Z') });
    const record = join(env.root, 'required.txt');
    const preload = join(env.root, 'preload.cjs');
    writeFileSync(preload, `const M = require('node:module'); const fs = require('node:fs'); const orig = M._load;
M._load = function (request, ...rest) { if (String(request).startsWith('@aws-sdk/')) fs.appendFileSync(${JSON.stringify(record)}, request + '\\n'); return orig.call(this, request, ...rest); };\n`);
    const withPreload = { NODE_OPTIONS: `--require ${preload}` };
    const first = await cli(['once', '-c', env.config], withPreload);
    expect(first.code, first.stderr).toBe(0);
    expect(readFileSync(record, 'utf8')).toContain('@aws-sdk/client-s3'); // the probe sees the SDK when it is loaded
    rmSync(record);
    const second = await cli(['once', '--json', '-c', env.config], withPreload);
    expect(second.code, second.stderr).toBe(0);
    expect(jsonOf(second)).toMatchObject({ status: 'unchanged', offsite: [{ status: 'idle', pending: [] }] });
    expect(existsSync(record)).toBe(false);
  });

  it('a dead remote never blocks local archiving: exit 76, the event pending in the state, check warns, push recovers', async () => {
    const prefix = newPrefix();
    const dead = 'http://127.0.0.1:9'; // discard port: connection refused
    const env = withRemote({ prefix, endpoint: dead, extra: ['timeout: 5s'] });
    const snap = writeSnapshot(env.source, { seed: 'dead', mtime: new Date('2025-06-01T10:00:00Z') });
    const r = await cli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(76);
    const out = jsonOf<{ status: string; offsite: Array<{ status: string; pending: string[]; error: { message: string }; nextAttemptAt: string }> }>(r);
    expect(out.status).toBe('archived');
    expect(out.offsite[0]).toMatchObject({ status: 'failed', pending: ['2025-06-01T10-00-00'] });
    expect(out.offsite[0]!.nextAttemptAt).toBeTruthy();
    expect(readFileSync(join(env.archive, 'all', 'dump-2025-06-01T10-00-00.rdb')).equals(snap.bytes)).toBe(true);
    expect(readJson<{ offsite: { queue: Array<{ ts: string; sha256: string }> } }>(env.state).offsite.queue).toMatchObject([{ ts: '2025-06-01T10-00-00', sha256: snap.sha256 }]);

    // status shows what waits, and why.
    const status = await cli(['status', '--json', '-c', env.config]);
    expect(jsonOf<{ remotes: Array<{ remote: string; pending: number; oldestPending: string; lastError: { message: string } }> }>(status).remotes[0])
      .toMatchObject({ remote: 'offsite', pending: 1, oldestPending: '2025-06-01T10-00-00', lastError: { message: expect.stringContaining('ECONNREFUSED') } });

    // The next cron run is in the backoff window: no attempt, still 76, and quick.
    const backoff = await cli(['once', '--json', '-c', env.config]);
    expect(backoff.code).toBe(76);
    expect(jsonOf<{ offsite: Array<{ status: string }> }>(backoff).offsite[0]!.status).toBe('backoff');

    // check and the metrics show it (the thresholds are the monitor's offsite_* keys).
    env.writeConfig({ extra: `monitor:\n  warn_age: 1000w\n  crit_age: 1000w\n  offsite_warn_lag: 1s\n  offsite_crit_lag: 1h\n${remoteYaml({ endpoint: dead, prefix, extra: ['timeout: 5s'] })}` });
    await new Promise((res) => setTimeout(res, 1100));
    const check = await cli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/off-site offsite: 1 event pending/);

    // The remote comes back: push ignores the backoff and uploads the pending event.
    env.writeConfig({ extra: `monitor:\n  warn_age: 1000w\n  crit_age: 1000w\n${remoteYaml({ endpoint: s3.endpoint, prefix })}` });
    const push = await cli(['push', '--json', '-c', env.config]);
    expect(push.code, push.stderr).toBe(0);
    expect(jsonOf(push)).toMatchObject({ remotes: [{ remote: 'offsite', uploaded: ['2025-06-01T10-00-00'], pending: [] }], exitCode: 0 });
    const ok = await cli(['check', '-c', env.config]);
    expect(ok.code, ok.stdout).toBe(0);
    const again = await cli(['once', '-c', env.config]);
    expect(again.code, again.stderr).toBe(0);
  });

  it('profile: credentials from a named profile of the shared files (not [default], not the environment); a missing profile fails clearly', async () => {
    const prefix = newPrefix();
    const env = withRemote({ prefix, extra: ['profile: archiver'] });
    const credentials = join(env.root, 'aws-credentials');
    const awsConfig = join(env.root, 'aws-config');
    // [default] holds keys the server refuses: only the named profile's work.
    writeFileSync(credentials, '[default]\naws_access_key_id = WRONGKEY\naws_secret_access_key = wrong-secret-default\n\n[archiver]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n', { mode: 0o600 });
    writeFileSync(awsConfig, '[default]\nregion = us-east-1\n\n[profile archiver]\nregion = us-east-1\n', { mode: 0o600 });
    const files = { AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_SHARED_CREDENTIALS_FILE: credentials, AWS_CONFIG_FILE: awsConfig };
    writeSnapshot(env.source, { seed: 'profile', mtime: new Date('2025-08-02T10:00:00Z') });
    const r = await cli(['once', '--json', '-c', env.config], files);
    expect(r.code, r.stderr).toBe(0);
    expect(jsonOf(r)).toMatchObject({ offsite: [{ remote: 'offsite', status: 'uploaded', uploaded: ['2025-08-02T10-00-00'] }] });
    expect(await keysUnder(prefix)).toContain('manifest-2025-08-02T10-00-00.seq1.json');

    // Without `profile:` the [default] keys are used, and the server refuses them: 77, no secret shown.
    env.writeConfig({ extra: remoteYaml({ endpoint: s3.endpoint, prefix }) });
    const refused = await cli(['list', '--remote', 'offsite', '-c', env.config], files);
    expect(refused.code).toBe(77);
    expect(refused.stdout + refused.stderr).not.toContain('wrong-secret-default');
    // A profile the files do not have: a clear error naming it, not a silent fallback to other credentials.
    env.writeConfig({ extra: remoteYaml({ endpoint: s3.endpoint, prefix, extra: ['profile: nosuch'] }) });
    const missing = await cli(['list', '--remote', 'offsite', '-c', env.config], files);
    expect(missing.code).toBe(77);
    expect(missing.stdout + missing.stderr).toContain('no credentials from profile "nosuch" of the shared AWS config/credentials files');
  });

  it('hooks of an instance with remotes never see the AWS credentials', async () => {
    const prefix = newPrefix();
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    const dump = join(env.root, 'hook-env.txt');
    env.writeConfig({ extra: `hooks:\n  after_archive: ["/bin/sh", "-c", "env > ${dump}"]\n${remoteYaml({ endpoint: s3.endpoint, prefix })}` });
    writeSnapshot(env.source, { seed: 'hook', mtime: new Date('2025-08-01T10:00:00Z') });
    const r = await cli(['once', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    const seen = readFileSync(dump, 'utf8');
    expect(seen).toContain('RDB_ARCHIVER_TS=2025-08-01T10-00-00');
    expect(seen).not.toMatch(/^AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)=/m);
  });
});
