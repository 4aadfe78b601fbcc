/**
 * The off-site read path against a bucket someone else can write to: the
 * manifest tampered (sha256, sizes, an object name pointing at another event
 * or outside the prefix), objects swapped between events, a zstd stream cut
 * short or inflated to a bomb, an encrypted object re-encrypted to another
 * recipient, a planted "newer" event (corrupt, or uploaded by another
 * instance), hostile object names, a --to that is a symlink. Real s3rver,
 * awscli to tamper, the real CLI. restore never writes a byte under the
 * target's name unless it is the event's own content, and never takes a bad
 * or foreign event as "latest" silently.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { bucketAccess, remoteYaml, s3Env, startS3, type BucketAccess, type S3Server } from '../helpers/s3.js';
import { setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

let s3: S3Server;
// The tampering is someone else writing to the bucket: done from this process (the SDK), not
// through awscli, whose every start costs about 2 s of CPU.
let bucket: BucketAccess;
beforeAll(async () => {
  s3 = await startS3();
  bucket = await bucketAccess(s3.endpoint);
});
afterAll(() => bucket?.close());

let prefixes = 0;
function withRemote(extra: string[] = []): ArchiveEnv & { prefix: string } {
  prefixes += 1;
  const prefix = `tamper${prefixes}-${process.pid}/`;
  const env = setupArchive({ rules: [{ name: 'all', count: 50 }] });
  env.writeConfig({ extra: remoteYaml({ endpoint: s3.endpoint, prefix, extra }) });
  return Object.assign(env, { prefix });
}

const cli = (args: string[], env: Record<string, string | undefined> = {}) => runCli(args, { env: s3Env(env) });

const getBytes = (key: string): Promise<Buffer> => bucket.get(key);
const putBytes = (key: string, body: Buffer | string): Promise<void> => bucket.put(key, body);
const keysUnder = (prefix: string): Promise<string[]> => bucket.keysUnder(prefix);
type ManifestJson = { ts: string; seq: number; instance: string; rdb: { name: string; bytes: number; sha256: string; storedBytes: number; storedSha256?: string; etag: string | null; encoding: string[] } };
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Two events uploaded: 2025-07-01T10-00-00 (seq 1) and 2025-07-01T11-00-00 (seq 2). */
async function twoEvents(extra: string[] = []) {
  const env = withRemote(extra);
  const first = writeSnapshot(env.source, { seed: 'first', mtime: new Date('2025-07-01T10:00:00Z'), size: 200_000 });
  expect((await cli(['once', '-c', env.config])).code).toBe(0);
  const second = writeSnapshot(env.source, { seed: 'second', mtime: new Date('2025-07-01T11:00:00Z'), size: 200_000 });
  const r = await cli(['once', '-c', env.config]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  const m1 = `${env.prefix}manifest-2025-07-01T10-00-00.seq1.json`;
  const m2 = `${env.prefix}manifest-2025-07-01T11-00-00.seq2.json`;
  expect(await keysUnder(env.prefix)).toContain('manifest-2025-07-01T11-00-00.seq2.json');
  return { env, first, second, m1, m2 };
}

/** restore --from into an empty folder; the folder's names afterwards. */
async function restoreInto(env: ArchiveEnv, which: string, extra: string[] = [], envVars: Record<string, string> = {}) {
  const to = tempDir();
  const r = await cli(['restore', which, '--from', 'offsite', '--to', to, '--json', '-c', env.config, ...extra], envVars);
  return { r, to, names: readdirSync(to) };
}

describe('a tampered bucket, read back by restore --from, verify and list', { timeout: 240_000 }, () => {
  it('manifest sha256 or sizes changed: restore exits 65 writing nothing (also a size far beyond the real one), verify --read-data names the event', async () => {
    const { env, m2 } = await twoEvents();
    const original = (await getBytes(m2)).toString();
    const cases: Array<[string, (m: ManifestJson) => void]> = [
      ['sha256', (m) => { m.rdb.sha256 = 'f'.repeat(64); }],
      ['bytes larger', (m) => { m.rdb.bytes += 1000; }],
      ['bytes smaller', (m) => { m.rdb.bytes -= 1000; }],
    ];
    for (const [label, change] of cases) {
      const m = JSON.parse(original) as ManifestJson;
      change(m);
      await putBytes(m2, JSON.stringify(m));
      const { r, names } = await restoreInto(env, 'latest');
      expect(r.code, `${label}: ${r.stdout}${r.stderr}`).toBe(65);
      expect(names, label).toEqual([]);
    }
    // (the last one, a smaller size: the download stops there)
    const v = await cli(['verify', '--remote', 'offsite', '--read-data', '--json', '-c', env.config]);
    expect(v.code, v.stdout).toBe(1);
    expect(jsonOf<{ bad: Array<{ ts: string; problems: string[] }> }>(v).bad).toMatchObject([{ ts: '2025-07-01T11-00-00', problems: [expect.stringMatching(/go on past/)] }]);
  });

  it('a manifest pointing at another event\'s object (or a name with ..) is not trusted: restore latest exits 65, never restores the other event\'s bytes as this one', async () => {
    const { env, first, m2 } = await twoEvents();
    const original = (await getBytes(m2)).toString();
    const m = JSON.parse(original) as ManifestJson;
    const m1 = JSON.parse((await getBytes(`${env.prefix}manifest-2025-07-01T10-00-00.seq1.json`)).toString()) as ManifestJson;
    m.rdb = m1.rdb; // every field of event 1's object: its name, sha256 and sizes agree with each other
    await putBytes(m2, JSON.stringify(m));
    const swapped = await restoreInto(env, 'latest');
    expect(swapped.r.code, swapped.r.stdout + swapped.r.stderr).toBe(65);
    expect(swapped.names).toEqual([]);
    expect(swapped.r.stdout).toMatch(/not this event's dump-2025-07-01T11-00-00\.rdb/);
    expect(swapped.r.stdout).not.toContain(first.sha256);
    for (const name of ['..', '../tamper-other/dump-2025-07-01T11-00-00.rdb']) {
      const bad = JSON.parse(original) as ManifestJson;
      bad.rdb.name = name;
      await putBytes(m2, JSON.stringify(bad));
      const { r, names } = await restoreInto(env, '2025-07-01T11-00-00');
      expect(r.code, `${name}: ${r.stdout}${r.stderr}`).toBe(65);
      expect(names).toEqual([]);
    }
    const v = await cli(['verify', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(jsonOf<{ bad: Array<{ ts: string }> }>(v).bad.map((b) => b.ts)).toEqual(['2025-07-01T11-00-00']);
  });

  it('objects swapped between events (manifests untouched): each restore exits 65, nothing written; verify flags both', async () => {
    const { env } = await twoEvents();
    const a = `${env.prefix}dump-2025-07-01T10-00-00.rdb`;
    const b = `${env.prefix}dump-2025-07-01T11-00-00.rdb`;
    const bytesA = await getBytes(a);
    const bytesB = await getBytes(b);
    await putBytes(a, bytesB);
    await putBytes(b, bytesA);
    for (const ts of ['latest', '2025-07-01T10-00-00']) {
      const { r, names } = await restoreInto(env, ts);
      expect(r.code, `${ts}: ${r.stdout}${r.stderr}`).toBe(65);
      expect(names).toEqual([]);
    }
    const v = await cli(['verify', '--remote', 'offsite', '--read-data', '--json', '-c', env.config]);
    expect(jsonOf<{ bad: Array<{ ts: string }> }>(v).bad.map((x) => x.ts).sort()).toEqual(['2025-07-01T10-00-00', '2025-07-01T11-00-00']);
  });

  it('zstd: a stored object cut short exits 65; one replaced by a decompression bomb (manifest\'s stored size and digest made to match) is stopped at the manifest\'s plaintext size, nothing written', async () => {
    const { env, m2 } = await twoEvents(['compression: zstd']);
    const key = `${env.prefix}dump-2025-07-01T11-00-00.rdb.zst`;
    const stored = await getBytes(key);
    await putBytes(key, stored.subarray(0, Math.floor(stored.length / 2)));
    const cut = await restoreInto(env, 'latest');
    expect(cut.r.code, cut.r.stdout + cut.r.stderr).toBe(65);
    expect(cut.names).toEqual([]);

    const zeros = spawnSync('zstd', ['-c', '-q'], { input: Buffer.alloc(64 * 1024 * 1024) });
    expect(zeros.status, String(zeros.stderr)).toBe(0);
    const bomb = zeros.stdout as Buffer;
    await putBytes(key, bomb);
    const m = JSON.parse((await getBytes(m2)).toString()) as ManifestJson;
    m.rdb.storedBytes = bomb.length;
    m.rdb.storedSha256 = sha256(bomb);
    m.rdb.etag = null;
    await putBytes(m2, JSON.stringify(m));
    const exploded = await restoreInto(env, 'latest');
    expect(exploded.r.code, exploded.r.stdout + exploded.r.stderr).toBe(65);
    expect(exploded.names).toEqual([]);
    expect(exploded.r.stdout).toMatch(/decoded bytes go on past the \d+ bytes the manifest says/);
  });

  it('an encrypted object re-encrypted to another recipient: restore with our identity exits 67, nothing written', async (ctx) => {
    if (spawnSync('age-keygen', ['--version']).status !== 0) return ctx.skip('age-keygen is not installed (apt-get install age)');
    const dir = tempDir();
    const keygen = (name: string) => {
      const file = join(dir, name);
      expect(spawnSync('age-keygen', ['-o', file]).status).toBe(0);
      chmodSync(file, 0o600);
      return { file, recipient: spawnSync('age-keygen', ['-y', file], { encoding: 'utf8' }).stdout.trim() };
    };
    const ours = keygen('ours.txt');
    const theirs = keygen('theirs.txt');
    const { env, second } = await twoEvents(['encryption:', '  type: age', `  recipients: ["${ours.recipient}"]`]);
    const plain = join(dir, 'plain.rdb');
    writeFileSync(plain, second.bytes);
    const enc = spawnSync('age', ['-r', theirs.recipient, plain]);
    expect(enc.status, String(enc.stderr)).toBe(0);
    await putBytes(`${env.prefix}dump-2025-07-01T11-00-00.rdb.age`, enc.stdout as Buffer);
    const { r, names } = await restoreInto(env, 'latest', ['--identity', ours.file]);
    expect(r.code, r.stdout + r.stderr).toBe(67);
    expect(names).toEqual([]);
  });

  it('a planted "newer" event: corrupt, restore latest exits 65 (never silently the older one); consistent but from another instance, restored with warnings saying so', async () => {
    const { env, second } = await twoEvents();
    const planted = '2099-01-01T00-00-00';
    // Corrupt: a manifest with a high sequence number and an object that is not what it says.
    const m = JSON.parse((await getBytes(`${env.prefix}manifest-2025-07-01T11-00-00.seq2.json`)).toString()) as ManifestJson & { sidecar: { name: string } };
    m.ts = planted;
    m.seq = 99;
    m.rdb.name = `dump-${planted}.rdb`;
    m.sidecar.name = `dump-${planted}.sha256`;
    await putBytes(`${env.prefix}dump-${planted}.rdb`, 'REDIS0011 not really');
    await putBytes(`${env.prefix}dump-${planted}.sha256`, await getBytes(`${env.prefix}dump-2025-07-01T11-00-00.sha256`));
    await putBytes(`${env.prefix}manifest-${planted}.seq99.json`, JSON.stringify(m));
    const corrupt = await restoreInto(env, 'latest');
    expect(corrupt.r.code, corrupt.r.stdout + corrupt.r.stderr).toBe(65);
    expect(corrupt.names).toEqual([]);

    // Consistent, but another instance's (a prefix shared by mistake): restored, never silently.
    await putBytes(`${env.prefix}dump-${planted}.rdb`, second.bytes);
    m.instance = 'someone-else';
    await putBytes(`${env.prefix}manifest-${planted}.seq99.json`, JSON.stringify(m));
    const foreign = await restoreInto(env, 'latest');
    expect(foreign.r.code, foreign.r.stdout + foreign.r.stderr).toBe(0);
    const out = jsonOf<{ ts: string; warnings: string[] }>(foreign.r);
    expect(out.ts).toBe(planted);
    expect(out.warnings.join('\n')).toMatch(/uploaded by instance "someone-else"/);
    expect(out.warnings.join('\n')).toMatch(/sequence number 99, above any this archive handed out \(2\)/);
  });

  it('restore --from --to a symlink (to a file, to the archive\'s .rdb): refused with exit 2, what it points to untouched', async () => {
    const { env, second } = await twoEvents();
    const dir = tempDir();
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious');
    const link = join(dir, 'dump.rdb');
    symlinkSync(victim, link);
    for (const force of [[], ['--force']]) {
      const r = await cli(['restore', 'latest', '--from', 'offsite', '--to', link, '--json', '-c', env.config, ...force]);
      expect(r.code, r.stdout + r.stderr).toBe(2);
      expect(readFileSync(victim, 'utf8')).toBe('precious');
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(readlinkSync(link)).toBe(victim);
    }
    const archived = join(env.archive, 'all', 'dump-2025-07-01T10-00-00.rdb');
    const intoArchive = join(dir, 'into-archive.rdb');
    symlinkSync(archived, intoArchive);
    const before = readFileSync(archived);
    const r = await cli(['restore', 'latest', '--from', 'offsite', '--to', intoArchive, '--force', '--json', '-c', env.config]);
    expect(r.code, r.stdout + r.stderr).toBe(2);
    expect(readFileSync(archived).equals(before)).toBe(true);
    expect(before.equals(second.bytes)).toBe(false);
  });

  it('hostile object names under the prefix: list, verify and prune --remote neither crash nor touch what is not theirs; a garbage manifest is reported, never restored', async () => {
    const { env, second } = await twoEvents();
    const strays = [
      'notours.txt',
      'sub/manifest-2025-07-01T12-00-00.seq7.json',
      'dump-2025-07-01T11-00-00.rdb.evil',
      'manifest-2025-07-01T11-00-00.seq2.json.bak',
      'manifest-2025-13-45T99-00-00.seq9.json',
      'manifest-2025-07-01T12-00-00.seq0.json',
      'manifest-2025-07-01T12-00-00.seq99999999999999999.json',
      'dump-2025-07-01T12-00-00 .rdb',
    ];
    for (const s of strays) await putBytes(`${env.prefix}${s}`, 'junk');
    const garbage = 'manifest-2025-07-01T13-00-00.seq3.json';
    await putBytes(`${env.prefix}${garbage}`, '{"format":"rdb-archiver remote event","version":1,"ts":"2025-07-01T13-00-00","seq":3,"rdb":{"name":"../../etc/passwd"}}');
    const list = await cli(['list', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(list.code, list.stdout + list.stderr).toBe(0);
    expect(jsonOf<{ events: Array<{ ts: string }> }>(list).events.map((e) => e.ts)).toEqual(['2025-07-01T13-00-00', '2025-07-01T11-00-00', '2025-07-01T10-00-00']);
    const v = await cli(['verify', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(v.code, v.stdout + v.stderr).toBe(1);
    expect(jsonOf<{ bad: Array<{ ts: string }> }>(v).bad.map((b) => b.ts)).toEqual(['2025-07-01T13-00-00']);
    const { r, names } = await restoreInto(env, 'latest');
    expect(r.code, r.stdout + r.stderr).toBe(65);
    expect(names).toEqual([]);
    const named = await restoreInto(env, '2025-07-01T11-00-00');
    expect(named.r.code, named.r.stdout + named.r.stderr).toBe(0);
    expect(readFileSync(join(named.to, 'dump.rdb')).equals(second.bytes)).toBe(true);
    const pruned = await cli(['prune', '--remote', 'offsite', '--json', '-c', env.config]);
    expect([0, 1, 65], pruned.stdout + pruned.stderr).toContain(pruned.code);
    const left = await keysUnder(env.prefix);
    for (const s of ['notours.txt', 'sub/manifest-2025-07-01T12-00-00.seq7.json', 'manifest-2025-13-45T99-00-00.seq9.json', 'manifest-2025-07-01T12-00-00.seq0.json', 'manifest-2025-07-01T12-00-00.seq99999999999999999.json', 'dump-2025-07-01T12-00-00 .rdb']) {
      expect(left, s).toContain(s);
    }
    expect(left).toContain('manifest-2025-07-01T11-00-00.seq2.json');
    expect(existsSync(join(env.archive, 'all', 'dump-2025-07-01T11-00-00.rdb'))).toBe(true);
  });
});
