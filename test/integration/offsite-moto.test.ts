/**
 * The off-site paths s3rver cannot serve, against moto's S3 server on
 * loopback (test/helpers/moto.ts): unfinished multipart uploads listed and
 * aborted at the server, and storage_class / sse as the server reports them
 * on HEAD. Cross-checked with awscli.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { CLI, jsonOf, runCli } from '../helpers/cli.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { describeWithMoto, startMoto, type MotoServer } from '../helpers/moto.js';
import { bucketAccess, remoteYaml, runAws, s3Env } from '../helpers/s3.js';
import { readJson, setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const BUCKET = 'rdb-archiver-moto';
/** Generous: every awscli call starts a Python interpreter, which takes seconds on a loaded machine (never a timing assertion). */
const SLOW = 300_000;
let moto: MotoServer;
let n = 0;
const newPrefix = () => `m${++n}-${process.pid}/`;
const cli = (args: string[]) => runCli(args, { env: s3Env() });
const aws = (args: string[]) => {
  const r = runAws(args, moto.endpoint);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim() === '' ? {} : JSON.parse(r.stdout);
};
const openUploads = (prefix: string): string[] =>
  ((aws(['s3api', 'list-multipart-uploads', '--bucket', BUCKET, '--prefix', prefix, '--output', 'json']) as { Uploads?: Array<{ Key: string }> }).Uploads ?? [])
    .map((u) => u.Key.slice(prefix.length)).sort();

describeWithMoto('off-site copies against moto (multipart listing, storage class, SSE)', () => {
  beforeAll(async () => {
    moto = await startMoto([BUCKET]);
  }, SLOW);

  it('stale multipart uploads of ours under the prefix are aborted after the grace period (dry run first); other tools\' uploads are left alone', async () => {
    const prefix = newPrefix();
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    env.writeConfig({ extra: remoteYaml({ endpoint: moto.endpoint, bucket: BUCKET, prefix, extra: ['incomplete_grace: 1h'] }) });
    writeSnapshot(env.source, { seed: 'moto', mtime: new Date('2025-07-09T10:00:00Z') });
    const first = await cli(['once', '--json', '-c', env.config]);
    expect(first.code, first.stderr).toBe(0);
    // A run on another host died mid-upload (one of ours), and two uploads that are not ours.
    // (Started from this process: awscli would cost a Python start, about 2 s of CPU, each.)
    const access = await bucketAccess(moto.endpoint, BUCKET);
    for (const key of ['dump-2025-07-08T10-00-00.rdb', 'backup.tar', 'sub/dump-2025-07-08T10-00-00.rdb']) await access.startMultipartUpload(`${prefix}${key}`);
    access.close();
    expect(openUploads(prefix)).toEqual(['backup.tar', 'dump-2025-07-08T10-00-00.rdb', 'sub/dump-2025-07-08T10-00-00.rdb']);
    // moto lists every upload as initiated on 2010-11-10, long past the 1 h grace period
    // (that an upload younger than it is kept is proven by the unit test of staleUploads).
    const dry = await cli(['prune', '--remote', 'offsite', '--dry-run', '--json', '-c', env.config]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(jsonOf(dry)).toMatchObject({ dryRun: true, uploadsAborted: 1, uploadsUnsupported: false, errors: [] });
    expect(openUploads(prefix)).toHaveLength(3);
    const dryText = await cli(['prune', '--remote', 'offsite', '--dry-run', '-c', env.config]);
    expect(dryText.stdout).toContain('would abort 1 stale multipart upload');

    const real = await cli(['prune', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(real.code, real.stderr).toBe(0);
    expect(jsonOf(real)).toMatchObject({ dryRun: false, uploadsAborted: 1, errors: [] });
    expect(openUploads(prefix)).toEqual(['backup.tar', 'sub/dump-2025-07-08T10-00-00.rdb']);
    // The complete event is untouched.
    const list = jsonOf<{ events: Array<{ ts: string }> }>(await cli(['list', '--remote', 'offsite', '--json', '-c', env.config]));
    expect(list.events.map((e) => e.ts)).toEqual(['2025-07-09T10-00-00']);
  }, SLOW);

  it('a run killed mid-upload leaves a multipart upload at the server; the next run aborts it there and completes the event', async () => {
    const prefix = newPrefix();
    const proxy = await startFaultProxy(moto.port);
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    env.writeConfig({ extra: remoteYaml({ endpoint: proxy.endpoint, bucket: BUCKET, prefix, extra: ['part_size: 5MiB', 'concurrency: 2'] }) });
    writeSnapshot(env.source, { seed: 'killed', mtime: new Date('2025-07-10T10:00:00Z'), size: 11 * 1024 * 1024 });
    let sawPart!: () => void;
    const partSeen = new Promise<void>((resolve) => (sawPart = resolve));
    proxy.setRule((req) => {
      if (req.method === 'PUT' && req.url.includes('partNumber=')) {
        sawPart();
        return { kind: 'delay', ms: 60_000 };
      }
      return { kind: 'pass' };
    });
    const child = spawn(process.execPath, [CLI, 'once', '-c', env.config], { env: { ...process.env, ...s3Env() } as NodeJS.ProcessEnv, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, sig) => resolve(sig)));
    await partSeen;
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    proxy.setRule(() => ({ kind: 'pass' }));
    expect(openUploads(prefix)).toEqual(['dump-2025-07-10T10-00-00.rdb']);
    const recorded = readJson<{ openUploads: Array<{ uploadId: string }> }>(join(env.archive, '.rdb-archiver', 'remote-offsite.json')).openUploads;
    expect(recorded).toHaveLength(1);

    const next = await cli(['once', '--json', '-c', env.config]);
    expect(next.code, next.stderr).toBe(0);
    expect(jsonOf(next)).toMatchObject({ offsite: [{ uploaded: ['2025-07-10T10-00-00'], pending: [] }] });
    // The killed run's upload id was aborted at the server (not merely forgotten), and the new upload completed.
    expect(proxy.seen.some((r) => r.method === 'DELETE' && r.url.includes(`uploadId=${encodeURIComponent(recorded[0]!.uploadId)}`))).toBe(true);
    expect(openUploads(prefix)).toEqual([]);
    const verify = await cli(['verify', '--remote', 'offsite', '--read-data', '-c', env.config]);
    expect(verify.code, verify.stdout).toBe(0);
    await proxy.close();
  }, SLOW);

  it('storage_class and sse (aws:kms with a key id, and AES256) reach the server on every object, multipart included; verify --read-data accepts them', async () => {
    const prefix = newPrefix();
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    const kms = remoteYaml({ endpoint: moto.endpoint, bucket: BUCKET, prefix: `${prefix}kms/`, extra: ['part_size: 5MiB', 'storage_class: STANDARD_IA', 'sse: { type: aws:kms, kms_key_id: alias/redis-backups }'] });
    const aes = remoteYaml({ endpoint: moto.endpoint, bucket: BUCKET, prefix: `${prefix}aes/`, name: 'aes', extra: ['sse: { type: AES256 }'] });
    env.writeConfig({ extra: `${kms}\n${aes.split('\n').slice(1).join('\n')}` });
    writeSnapshot(env.source, { seed: 'sse', mtime: new Date('2025-07-11T10:00:00Z'), size: 6 * 1024 * 1024 + 17 });
    const r = await cli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    expect(jsonOf<{ offsite: Array<{ remote: string; status: string }> }>(r).offsite.map((o) => [o.remote, o.status])).toEqual([['offsite', 'uploaded'], ['aes', 'uploaded']]);

    const head = (key: string) => aws(['s3api', 'head-object', '--bucket', BUCKET, '--key', key, '--output', 'json']) as Record<string, unknown>;
    // The .rdb (multipart: 6 MiB > part_size 5 MiB), a single PUT (the sidecar) and the manifest.
    for (const name of ['dump-2025-07-11T10-00-00.rdb', 'dump-2025-07-11T10-00-00.sha256', 'manifest-2025-07-11T10-00-00.seq1.json']) {
      const h = head(`${prefix}kms/${name}`);
      expect(h, name).toMatchObject({ StorageClass: 'STANDARD_IA', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: 'alias/redis-backups' });
      if (name.endsWith('.rdb')) expect(h.ETag).toMatch(/-2"$/); // two parts
    }
    for (const name of ['dump-2025-07-11T10-00-00.rdb', 'manifest-2025-07-11T10-00-00.seq1.json']) {
      const h = head(`${prefix}aes/${name}`);
      expect(h, name).toMatchObject({ ServerSideEncryption: 'AES256' });
      expect(h.StorageClass ?? 'STANDARD', name).toBe('STANDARD');
    }
    for (const remote of ['offsite', 'aes']) {
      const verify = await cli(['verify', '--remote', remote, '--read-data', '--json', '-c', env.config]);
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
      expect(jsonOf(verify)).toMatchObject({ ok: true, events: [{ ts: '2025-07-11T10-00-00', ok: true, checked: 'data' }] });
    }
  }, SLOW);
});
