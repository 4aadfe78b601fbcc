/**
 * Off-site faults, injected by an HTTP proxy between the CLI and a real S3
 * server (s3rver): dropped connections, 500/503 SlowDown, a server slower
 * than the timeout, refused credentials, a missing bucket, a delete refused
 * by object lock, and SIGKILL during an upload. After each, the local archive
 * is intact and the event is pending or complete; never listed without its
 * manifest.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI, jsonOf, runCli } from '../helpers/cli.js';
import { startFaultProxy, type FaultProxy, type SeenRequest } from '../helpers/fault-proxy.js';
import { remoteYaml, s3Env, startS3, type S3Server } from '../helpers/s3.js';
import { readJson, setupArchive, writeSnapshot, type ArchiveEnv, type Snapshot } from '../helpers/snapshots.js';

let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3();
});

let n = 0;
interface Setup {
  env: ArchiveEnv;
  proxy: FaultProxy;
  snap: Snapshot;
  ts: string;
}

/** An archive with one source snapshot and a remote reached through a fresh proxy. */
async function setup(options: { size?: number; extra?: string[]; bucket?: string } = {}): Promise<Setup> {
  n += 1;
  const proxy = await startFaultProxy(s3.port);
  const env = setupArchive({ rules: [{ name: 'all', count: 10 }] });
  env.writeConfig({ extra: remoteYaml({ endpoint: proxy.endpoint, prefix: `f${n}-${process.pid}/`, bucket: options.bucket, extra: ['part_size: 5MiB', 'concurrency: 2', ...(options.extra ?? [])] }) });
  const snap = writeSnapshot(env.source, { seed: `fault${n}`, mtime: new Date('2025-07-01T10:00:00Z'), size: options.size ?? 11 * 1024 * 1024 });
  return { env, proxy, snap, ts: '2025-07-01T10-00-00' };
}

const cli = (args: string[], env: Record<string, string | undefined> = {}) => runCli(args, { env: s3Env(env) });
const isPart = (r: SeenRequest) => r.method === 'PUT' && r.url.includes('partNumber=');
const isManifestPut = (r: SeenRequest) => r.method === 'PUT' && r.url.includes('/manifest-');

async function expectLocalIntact(s: Setup): Promise<void> {
  expect(readFileSync(join(s.env.archive, 'all', `dump-${s.ts}.rdb`)).equals(s.snap.bytes)).toBe(true);
}

async function remoteEvents(s: Setup): Promise<{ events: string[]; incomplete: string[] }> {
  const r = await cli(['list', '--remote', 'offsite', '--json', '-c', s.env.config]);
  expect(r.code, r.stderr).toBe(0);
  const out = jsonOf<{ events: Array<{ ts: string }>; incomplete: Array<{ ts: string }> }>(r);
  return { events: out.events.map((e) => e.ts), incomplete: out.incomplete.map((e) => e.ts) };
}

/** After a fault: the event is either pending (no manifest, not listed) or complete and verified. */
async function expectPendingNotListed(s: Setup): Promise<void> {
  await expectLocalIntact(s);
  expect((await remoteEvents(s)).events).toEqual([]);
  expect(readJson<{ offsite: { queue: Array<{ ts: string }> } }>(s.env.state).offsite.queue.map((q) => q.ts)).toEqual([s.ts]);
}

async function expectRecovered(s: Setup): Promise<void> {
  s.proxy.setRule(() => ({ kind: 'pass' }));
  const push = await cli(['push', '--json', '-c', s.env.config]);
  expect(push.code, push.stdout + push.stderr).toBe(0);
  expect((await remoteEvents(s)).events).toEqual([s.ts]);
  const verify = await cli(['verify', '--remote', 'offsite', '--read-data', '-c', s.env.config]);
  expect(verify.code, verify.stdout).toBe(0);
}

// Generous: each test runs the CLI several times against the proxy (never a timing assertion).
describe('off-site faults', { timeout: 240_000 }, () => {
  it('a connection reset mid-part is retried: the upload completes, and the manifest is the last write, after HEAD checks', async () => {
    const s = await setup();
    let resets = 0;
    s.proxy.setRule((req) => (isPart(req) && req.url.includes('partNumber=2') && resets++ === 0 ? { kind: 'reset', afterBytes: 1024 * 1024 } : { kind: 'pass' }));
    const r = await cli(['once', '--json', '-c', s.env.config]);
    expect(r.code, r.stderr).toBe(0);
    const byOnce = [...s.proxy.seen]; // the upload's requests (list --remote below reads the manifest: a HEAD and a GET)
    expect(resets).toBeGreaterThan(0);
    expect((await remoteEvents(s)).events).toEqual([s.ts]);
    // Every part carried Content-MD5; the manifest PUT came after the data PUTs and the HEADs.
    const parts = byOnce.filter(isPart);
    expect(parts.length).toBeGreaterThanOrEqual(3);
    for (const p of parts) expect(p.headers['content-md5']).toMatch(/^[A-Za-z0-9+/]{22}==$/);
    const writes = byOnce.filter((q) => q.method === 'PUT' || q.method === 'POST' || q.method === 'HEAD');
    const manifestAt = writes.findIndex(isManifestPut);
    expect(manifestAt).toBe(writes.length - 1);
    expect(writes.slice(0, manifestAt).some((q) => q.method === 'HEAD' && q.url.includes('.rdb'))).toBe(true);
    await expectLocalIntact(s);
  });

  it('connections reset on every part: exit 76, the event stays pending and unlisted; the next push completes it', async () => {
    const s = await setup();
    s.proxy.setRule((req) => (isPart(req) ? { kind: 'reset', afterBytes: 64 * 1024 } : { kind: 'pass' }));
    const r = await cli(['once', '--json', '-c', s.env.config]);
    expect(r.code, r.stderr).toBe(76);
    expect(jsonOf<{ status: string }>(r).status).toBe('archived');
    await expectPendingNotListed(s);
    await expectRecovered(s);
  });

  it('500 and 503 SlowDown answers are retried with backoff; when they persist, the event stays pending', async () => {
    const s = await setup({ size: 200_000 });
    let errors = 0;
    s.proxy.setRule((req) => {
      if (req.method !== 'PUT' || errors >= 2) return { kind: 'pass' };
      errors += 1;
      return errors === 1 ? { kind: 'error', status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' } : { kind: 'error', status: 500, code: 'InternalError' };
    });
    const ok = await cli(['once', '-c', s.env.config]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(errors).toBe(2);
    expect((await remoteEvents(s)).events).toEqual([s.ts]);

    const t = await setup({ size: 200_000 });
    t.proxy.setRule((req) => (req.method === 'PUT' ? { kind: 'error', status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' } : { kind: 'pass' }));
    const failed = await cli(['once', '--json', '-c', t.env.config]);
    expect(failed.code).toBe(76);
    expect(jsonOf<{ offsite: Array<{ error: { message: string } }> }>(failed).offsite[0]!.error.message).toContain('SlowDown');
    await expectPendingNotListed(t);
    await expectRecovered(t);
  });

  it('a part whose ETag is not the MD5 of what was sent: the upload fails as an integrity error, nothing is listed, the retry completes it', async () => {
    const s = await setup();
    s.proxy.setRule((req) => (isPart(req) && req.url.includes('partNumber=2') ? { kind: 'rewrite', headers: { ETag: '"0123456789abcdef0123456789abcdef"' } } : { kind: 'pass' }));
    const r = await cli(['once', '--json', '-c', s.env.config]);
    expect(r.code, r.stderr).toBe(76);
    const error = jsonOf<{ offsite: Array<{ status: string; error: { kind: string; message: string } }> }>(r).offsite[0]!;
    expect(error).toMatchObject({ status: 'failed', error: { kind: 'remote-integrity' } });
    expect(error.error.message).toMatch(/part 2: the server stored other bytes than sent \(ETag 0123456789abcdef0123456789abcdef, sent MD5 [0-9a-f]{32}\)/);
    expect(s.proxy.seen.some(isManifestPut)).toBe(false);
    // Every part carried Content-MD5, a signed header, and so needs no signed payload hash (README).
    const parts = s.proxy.seen.filter(isPart);
    expect(parts.length).toBeGreaterThan(0);
    for (const part of parts) {
      expect(part.headers['content-md5']).toMatch(/^[A-Za-z0-9+/]{22}==$/);
      expect(part.headers['x-amz-content-sha256']).toBe('UNSIGNED-PAYLOAD');
      expect(String(part.headers.authorization)).toMatch(/SignedHeaders=[^,]*content-md5/);
    }
    // The failed multipart upload was aborted, not completed.
    expect(s.proxy.seen.some((q) => q.method === 'DELETE' && q.url.includes('uploadId='))).toBe(true);
    expect(s.proxy.seen.some((q) => q.method === 'POST' && q.url.includes('uploadId='))).toBe(false);
    await expectPendingNotListed(s);
    await expectRecovered(s);
  });

  it('a server slower than the timeout: the upload is abandoned at the timeout, exit 76, pending', async () => {
    const s = await setup({ size: 200_000, extra: ['timeout: 2s'] });
    s.proxy.setRule((req) => (req.method === 'PUT' ? { kind: 'delay', ms: 8000 } : { kind: 'pass' }));
    const started = Date.now();
    const r = await cli(['once', '--json', '-c', s.env.config]);
    expect(r.code).toBe(76);
    expect(Date.now() - started).toBeLessThan(7000);
    const out = jsonOf<{ offsite: Array<{ error: { kind: string; message: string } }> }>(r);
    expect(out.offsite[0]!.error.kind).toBe('remote-timeout');
    expect(out.offsite[0]!.error.message).toContain('timeout (2 s)');
    await expectPendingNotListed(s);
    await expectRecovered(s);
  });

  it('wrong credentials: once exits 76, push exits 77 saying the credentials were refused, and the secret appears nowhere', async () => {
    const s = await setup({ size: 200_000 });
    const secret = 'Wr0ngSecretValue-do-not-print-1234567890';
    const bad = { AWS_ACCESS_KEY_ID: 'NOTAKEY', AWS_SECRET_ACCESS_KEY: secret };
    const once = await cli(['once', '--json', '-c', s.env.config], bad);
    expect(once.code).toBe(76);
    const push = await cli(['push', '-c', s.env.config], bad);
    expect(push.code).toBe(77);
    expect(push.stdout).toContain('refused the credentials');
    const files = [s.env.state, join(s.env.archive, '.rdb-archiver', 'remote-offsite.json')].map((f) => readFileSync(f, 'utf8'));
    for (const text of [once.stdout, once.stderr, push.stdout, push.stderr, ...files]) expect(text).not.toContain(secret);
    // Never on the command line either: the remote commands take no credential flags.
    const help = await cli(['push', '--help']);
    expect(help.stdout).not.toMatch(/secret|access-key/i);
    await expectPendingNotListed(s);
    await expectRecovered(s);
  });

  it('a missing bucket: exit 76 with a message naming it; the local archive is intact', async () => {
    const s = await setup({ size: 200_000, bucket: 'no-such-bucket-here' });
    const r = await cli(['once', '--json', '-c', s.env.config]);
    expect(r.code).toBe(76);
    expect(jsonOf<{ offsite: Array<{ error: { kind: string; message: string } }> }>(r).offsite[0]!.error).toMatchObject({ kind: 'remote-no-bucket' });
    const push = await cli(['push', '-c', s.env.config]);
    expect(push.code).toBe(76);
    expect(push.stdout).toContain('bucket no-such-bucket-here does not exist');
    await expectLocalIntact(s);
  });

  it('SIGKILL during an upload: nothing is listed or restorable; the next run completes the event', async () => {
    const s = await setup();
    let sawPart!: () => void;
    const partSeen = new Promise<void>((resolve) => (sawPart = resolve));
    s.proxy.setRule((req) => {
      if (isPart(req)) {
        sawPart();
        return { kind: 'delay', ms: 30_000 };
      }
      return { kind: 'pass' };
    });
    const child = spawn(process.execPath, [CLI, 'once', '-c', s.env.config], { env: { ...process.env, ...s3Env() } as NodeJS.ProcessEnv, stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, sig) => resolve(sig)));
    await partSeen;
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    s.proxy.setRule(() => ({ kind: 'pass' }));

    await expectLocalIntact(s);
    expect((await remoteEvents(s)).events).toEqual([]);
    const restore = await cli(['restore', 'latest', '--from', 'offsite', '--to', join(s.env.root, 'x.rdb'), '-c', s.env.config]);
    expect(restore.code).toBe(66);
    expect(readdirSync(s.env.root)).not.toContain('x.rdb');
    // The killed run recorded its open multipart upload; the next run aborts it and uploads the event.
    expect(readJson<{ openUploads: unknown[] }>(join(s.env.archive, '.rdb-archiver', 'remote-offsite.json')).openUploads).toHaveLength(1);
    const next = await cli(['once', '--json', '-c', s.env.config]);
    expect(next.code, next.stderr).toBe(0);
    expect(jsonOf(next)).toMatchObject({ status: 'unchanged', offsite: [{ uploaded: [s.ts], pending: [] }] });
    expect(readJson<{ openUploads: unknown[] }>(join(s.env.archive, '.rdb-archiver', 'remote-offsite.json')).openUploads).toEqual([]);
    expect((await remoteEvents(s)).events).toEqual([s.ts]);
  });

  it('a delete refused by object lock (AccessDenied) keeps the event, reported with that reason', async () => {
    const s = await setup({ size: 100_000, extra: ['rules: [{ name: last, count: 1 }]'] });
    expect((await cli(['once', '-c', s.env.config])).code).toBe(0);
    writeSnapshot(s.env.source, { seed: 'second', mtime: new Date('2025-07-02T10:00:00Z') });
    s.proxy.setRule((req) => (req.method === 'DELETE' && req.url.includes(`manifest-${s.ts}`) ? { kind: 'error', status: 403, code: 'AccessDenied', message: 'Access Denied because object protected by object lock.' } : { kind: 'pass' }));
    const r = await cli(['once', '--json', '-c', s.env.config]);
    expect(r.code, r.stderr).toBe(0);
    const retention = jsonOf<{ offsite: Array<{ retention: { refused: Array<{ ts: string; reason: string }>; deleted: unknown[] } }> }>(r).offsite[0]!.retention;
    expect(retention.deleted).toEqual([]);
    expect(retention.refused).toMatchObject([{ ts: s.ts }]);
    expect(retention.refused[0]!.reason).toMatch(/refused to delete its manifest \(object-lock retention or legal hold\?\)/);
    expect((await remoteEvents(s)).events).toEqual(['2025-07-02T10-00-00', s.ts]);
  });
});
