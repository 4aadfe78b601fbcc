/**
 * Compressed and encrypted off-site copies (issue 12) through the real CLI,
 * against a real S3 protocol server (s3rver on loopback), a real
 * redis-server, and the reference tools: Debian's age and zstd decrypt and
 * decompress what we uploaded (downloaded with awscli) back to the source.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { bgsaveAndWait, describeWithRedis, registerRedisCleanup, startRedis } from '../helpers/redis.js';
import { remoteYaml, runAws, s3Env, startS3, TEST_BUCKET, type S3Server } from '../helpers/s3.js';
import { setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

registerRedisCleanup();

/** age, age-keygen and zstd (Debian's packages): required in CI (.ci/run installs them), a loud skip elsewhere. */
const tools = ['age', 'age-keygen', 'zstd'].filter((t) => spawnSync(t, ['--version']).status !== 0);
const describeWithTools = (name: string, body: () => void) => {
  if (tools.length === 0) return describe(name, body);
  if (process.env.CI === 'true') {
    return describe(name, () => it(`needs ${tools.join(', ')} (.ci/run installs them)`, () => { throw new Error(`missing in CI: ${tools.join(', ')}`); }));
  }
  console.warn(`\n!! SKIPPING "${name}": ${tools.join(', ')} not installed (apt-get install age zstd)\n`);
  return describe.skip(name, body);
};

/** Several CLI runs, uploads and downloads each: generous for a loaded machine; never a duration assertion. */
const SLOW = { timeout: 240_000 };

let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3();
});

/** A fresh age key pair in its own 0600 file (age-keygen, as an operator makes one). */
function keyPair(dir: string, name = 'key.txt'): { file: string; recipient: string; secret: string } {
  const file = join(dir, name);
  const gen = spawnSync('age-keygen', ['-o', file], { encoding: 'utf8' });
  expect(gen.status, gen.stderr).toBe(0);
  chmodSync(file, 0o600);
  const recipient = spawnSync('age-keygen', ['-y', file], { encoding: 'utf8' }).stdout.trim();
  const secret = readFileSync(file, 'utf8').split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-'))!;
  return { file, recipient, secret };
}

let prefixes = 0;
function withRemote(extra: string[], options: { nodes?: boolean } = {}): ArchiveEnv & { prefix: string } {
  prefixes += 1;
  const prefix = `enc${prefixes}-${process.pid}/`;
  const env = setupArchive({ rules: [{ name: 'all', count: 50 }], nodes: options.nodes });
  env.writeConfig({ extra: remoteYaml({ endpoint: s3.endpoint, prefix, extra }) });
  return Object.assign(env, { prefix });
}

const cli = (args: string[], env: Record<string, string | undefined> = {}) => runCli(args, { env: s3Env(env) });

function download(prefix: string): string {
  const dl = tempDir();
  const r = runAws(['s3', 'cp', `s3://${TEST_BUCKET}/${prefix}`, dl, '--recursive'], s3.endpoint);
  expect(r.code, r.stderr).toBe(0);
  return dl;
}

/** The object file s3rver keeps for a key (to damage it in place, as a failing disk or a tampering provider would). */
function storedFile(key: string): string {
  const path = join(s3.dir, TEST_BUCKET, `${key}._S3rver_object`);
  expect(existsSync(path), path).toBe(true);
  return path;
}

const agePipeline = (identity: string, encrypted: string, out: string, decompress: string) =>
  spawnSync('sh', ['-c', `age -d -i "$1" "$2" | ${decompress} > "$3"`, 'sh', identity, encrypted, out], { encoding: 'utf8' });

describeWithTools('compressed and encrypted off-site copies', () => {
  describeWithRedis('round trip with a real redis-server', () => {
    it('zstd+age: once uploads dump-<ts>.rdb.zst.age; age -d | zstd -d gives the archived file back; local archive lost -> restore --from --identity -> same DEBUG DIGEST', SLOW, async () => {
      const keys = keyPair(tempDir());
      const env = withRemote(['compression: zstd', 'encryption:', '  type: age', `  recipients: ["${keys.recipient}"]`]);
      const source = await startRedis(join(env.root, 'data'));
      const cmds: Array<Array<string | number>> = [];
      for (let i = 0; i < 20000; i++) cmds.push(['SET', `session:${i}`, `user-${i % 500}:token`]);
      cmds.push(['HSET', 'h', 'a', '1', 'b', '2'], ['RPUSH', 'l', 'x', 'y']);
      await source.client.pipeline(cmds);
      const digest = await source.call('DEBUG', 'DIGEST');
      await bgsaveAndWait(source);

      const once = await cli(['once', '--json', '-c', env.config]);
      expect(once.code, once.stderr).toBe(0);
      const out = jsonOf<{ snapshot: { ts: string; sha256: string; bytes: number }; offsite: Array<{ uploaded: string[] }> }>(once);
      const ts = out.snapshot.ts;
      expect(out.offsite[0]!.uploaded).toEqual([ts]);

      // The reference tools read what we stored: a standard age file holding a zstd stream.
      const dl = download(env.prefix);
      expect(readdirSync(dl).sort()).toEqual([`dump-${ts}.rdb.zst.age`, `dump-${ts}.sha256`, `manifest-${ts}.seq1.json`]);
      const manifest = JSON.parse(readFileSync(join(dl, `manifest-${ts}.seq1.json`), 'utf8')) as { rdb: { encoding: string[]; sha256: string; bytes: number; storedBytes: number } };
      expect(manifest.rdb).toMatchObject({ encoding: ['zstd', 'age'], sha256: out.snapshot.sha256, bytes: out.snapshot.bytes });
      expect(manifest.rdb.storedBytes).toBe(statSync(join(dl, `dump-${ts}.rdb.zst.age`)).size);
      expect(manifest.rdb.storedBytes).toBeLessThan(out.snapshot.bytes); // many small keys: zstd pays
      const plain = join(dl, `dump-${ts}.rdb`);
      const dec = agePipeline(keys.file, join(dl, `dump-${ts}.rdb.zst.age`), plain, 'zstd -d');
      expect(dec.status, dec.stderr).toBe(0);
      const archived = join(env.archive, 'all', `dump-${ts}.rdb`);
      expect(spawnSync('cmp', [plain, archived]).status).toBe(0);
      expect(spawnSync('sha256sum', ['-c', `dump-${ts}.sha256`], { cwd: dl }).status).toBe(0);
      // No plaintext key name in the stored object.
      expect(readFileSync(join(dl, `dump-${ts}.rdb.zst.age`)).includes('session:1')).toBe(false);

      // list shows the encoding, and with the identity that it opens the event.
      const list = await cli(['list', '--remote', 'offsite', '--identity', keys.file, '--json', '-c', env.config]);
      expect(list.code, list.stderr).toBe(0);
      expect(jsonOf(list)).toMatchObject({ events: [{ ts, encoding: ['zstd', 'age'], identityOpens: 'yes' }] });
      // verify --read-data: with the identity, the content (plaintext sha256, RDB CRC-64); without, only the stored bytes, and it says so.
      const full = await cli(['verify', '--remote', 'offsite', '--read-data', '--json', '-c', env.config], { RDB_ARCHIVER_AGE_IDENTITY_FILE: keys.file });
      expect(full.code, full.stdout + full.stderr).toBe(0);
      expect(jsonOf(full)).toMatchObject({ ok: true, events: [{ ts, ok: true, checked: 'data', encoding: ['zstd', 'age'] }] });
      const blind = await cli(['verify', '--remote', 'offsite', '--read-data', '-c', env.config]);
      expect(blind.code, blind.stderr).toBe(0);
      expect(blind.stdout).toMatch(/content was NOT checked/);

      await source.stop();
      rmSync(env.archive, { recursive: true, force: true });
      const restoreDir = join(env.root, 'restored');
      mkdirSync(restoreDir);
      const restore = await cli(['restore', 'latest', '--from', 'offsite', '--identity', keys.file, '--to', restoreDir, '--json', '-c', env.config]);
      expect(restore.code, restore.stdout + restore.stderr).toBe(0);
      expect(jsonOf(restore)).toMatchObject({ status: 'restored', ts, sha256: out.snapshot.sha256 });
      const copy = await startRedis(restoreDir);
      expect(await copy.call('DEBUG', 'DIGEST')).toBe(digest);
      for (const r of [once, list, full, blind, restore]) expect(r.stdout + r.stderr).not.toContain(keys.secret);
    });
  });

  it('gzip + age, multipart (part_size 5MiB) with a nodes.conf: age -d | gzip -d gives both back; restore --from brings both', SLOW, async () => {
    const keys = keyPair(tempDir());
    const env = withRemote(['compression: "gzip:6"', 'part_size: 5MiB', 'concurrency: 2', 'encryption:', '  type: age', `  recipients: ["${keys.recipient}"]`], { nodes: true });
    const snap = writeSnapshot(env.source, { seed: 'multipart', mtime: new Date('2025-04-01T10:00:00Z'), size: 13 * 1024 * 1024 });
    writeFileSync(env.nodes!, 'abc 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\nvars currentEpoch 1 lastVoteEpoch 0\n');
    const once = await cli(['once', '-c', env.config]);
    expect(once.code, once.stderr).toBe(0);
    const ts = '2025-04-01T10-00-00';
    const dl = download(env.prefix);
    expect(readdirSync(dl).sort()).toEqual([`dump-${ts}.rdb.gz.age`, `dump-${ts}.sha256`, `manifest-${ts}.seq1.json`, `nodes-${ts}.config.gz.age`]);
    const rdb = join(dl, `dump-${ts}.rdb`);
    expect(agePipeline(keys.file, join(dl, `dump-${ts}.rdb.gz.age`), rdb, 'gzip -d').status).toBe(0);
    expect(readFileSync(rdb).equals(snap.bytes)).toBe(true);
    expect(agePipeline(keys.file, join(dl, `nodes-${ts}.config.gz.age`), join(dl, 'nodes.conf'), 'gzip -d').status).toBe(0);
    expect(readFileSync(join(dl, 'nodes.conf'), 'utf8')).toBe(readFileSync(env.nodes!, 'utf8'));

    const to = tempDir();
    const restore = await cli(['restore', ts, '--from', 'offsite', '--identity', keys.file, '--to', to, '--nodes-to', to, '-c', env.config]);
    expect(restore.code, restore.stdout + restore.stderr).toBe(0);
    expect(readFileSync(join(to, 'dump.rdb')).equals(snap.bytes)).toBe(true);
    expect(readFileSync(join(to, 'nodes.conf'), 'utf8')).toBe(readFileSync(env.nodes!, 'utf8'));
  });

  it('a flipped byte in the stored object: verify --read-data reports it (with and without identity), restore exits 65 and writes nothing', SLOW, async () => {
    const keys = keyPair(tempDir());
    const env = withRemote(['compression: zstd:3', 'encryption:', '  type: age', `  recipients: ["${keys.recipient}"]`]);
    writeSnapshot(env.source, { seed: 'tamper', mtime: new Date('2025-05-01T10:00:00Z'), size: 600_000 });
    expect((await cli(['once', '-c', env.config])).code).toBe(0);
    const ts = '2025-05-01T10-00-00';
    const path = storedFile(`${env.prefix}dump-${ts}.rdb.zst.age`);
    const bytes = readFileSync(path);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(path, bytes);

    const withKey = await cli(['verify', '--remote', 'offsite', '--read-data', '--identity', keys.file, '--json', '-c', env.config]);
    expect(withKey.code, withKey.stdout).toBe(1);
    expect(jsonOf(withKey)).toMatchObject({ ok: false, bad: [{ ts }] });
    const blind = await cli(['verify', '--remote', 'offsite', '--read-data', '--json', '-c', env.config]);
    expect(blind.code, blind.stdout).toBe(1);
    expect(JSON.stringify(jsonOf(blind))).toMatch(/stored bytes have sha256/);

    const to = tempDir();
    const restore = await cli(['restore', ts, '--from', 'offsite', '--identity', keys.file, '--to', to, '--json', '-c', env.config]);
    expect(restore.code, restore.stdout + restore.stderr).toBe(65);
    expect(jsonOf(restore)).toMatchObject({ status: 'failed', error: { kind: 'invalid-source' } });
    expect(readdirSync(to)).toEqual([]);
  });

  it('a wrong or missing identity: restore exits 67 and writes nothing; the identity never appears in the output; a group-readable identity file is warned about', SLOW, async () => {
    const dir = tempDir();
    const keys = keyPair(dir);
    const other = keyPair(dir, 'other.txt');
    const env = withRemote(['encryption:', '  type: age', `  recipients: ["${keys.recipient}"]`]);
    writeSnapshot(env.source, { seed: 'keys', mtime: new Date('2025-06-01T10:00:00Z'), size: 50_000 });
    expect((await cli(['once', '-c', env.config])).code).toBe(0);
    const to = tempDir();
    const wrong = await cli(['restore', 'latest', '--from', 'offsite', '--identity', other.file, '--to', to, '-c', env.config]);
    expect(wrong.code, wrong.stdout + wrong.stderr).toBe(67);
    expect(wrong.stdout + wrong.stderr).toMatch(/none of the identities is a recipient/);
    const missing = await cli(['restore', 'latest', '--from', 'offsite', '--to', to, '-c', env.config]);
    expect(missing.code).toBe(67);
    expect(missing.stdout + missing.stderr).toMatch(/encrypted \(age\): give the identity file/);
    const absent = await cli(['restore', 'latest', '--from', 'offsite', '--identity', join(dir, 'nope.txt'), '--to', to, '-c', env.config]);
    expect(absent.code).toBe(67);
    expect(readdirSync(to)).toEqual([]);
    const verifyWrong = await cli(['verify', '--remote', 'offsite', '--read-data', '--identity', other.file, '-c', env.config]);
    expect(verifyWrong.code).toBe(67);
    const list = await cli(['list', '--remote', 'offsite', '--identity', other.file, '--json', '-c', env.config]);
    expect(jsonOf(list)).toMatchObject({ events: [{ encoding: ['age'], identityOpens: 'no' }] });

    chmodSync(keys.file, 0o640);
    const loose = await cli(['restore', 'latest', '--from', 'offsite', '--identity', keys.file, '--to', to, '-c', env.config]);
    expect(loose.code, loose.stdout + loose.stderr).toBe(0);
    expect(loose.stdout + loose.stderr).toMatch(/can be read by its group \(mode 0640\).*chmod 600/);
    for (const r of [wrong, missing, absent, verifyWrong, list, loose]) {
      expect(r.stdout + r.stderr).not.toContain(keys.secret);
      expect(r.stdout + r.stderr).not.toContain(other.secret);
    }
  });

  it('mixed encodings: a remote that changed its encoding keeps every old event readable by its own manifest', SLOW, async () => {
    const keys = keyPair(tempDir());
    const env = withRemote([]);
    const encodings: Array<{ extra: string[]; ts: string; suffix: string }> = [
      { extra: [], ts: '2025-07-01T10-00-00', suffix: '' },
      { extra: ['compression: gzip'], ts: '2025-07-02T10-00-00', suffix: '.gz' },
      { extra: ['compression: zstd:19', 'encryption:', '  type: age', '  recipients_file: recipients.txt'], ts: '2025-07-03T10-00-00', suffix: '.zst.age' },
    ];
    writeFileSync(join(env.root, 'recipients.txt'), `# the restore key, kept offline\n${keys.recipient}\n`);
    const snaps = [];
    for (const e of encodings) {
      env.writeConfig({ extra: remoteYaml({ endpoint: s3.endpoint, prefix: env.prefix, extra: e.extra }) });
      snaps.push(writeSnapshot(env.source, { seed: e.ts, mtime: new Date(`${e.ts.slice(0, 10)}T10:00:00Z`), size: 200_000 }));
      const r = await cli(['once', '-c', env.config]);
      expect(r.code, r.stderr).toBe(0);
    }
    const list = await cli(['list', '--remote', 'offsite', '--json', '-c', env.config]);
    expect(jsonOf<{ events: Array<{ ts: string; encoding: string[] }> }>(list).events.map((e) => e.encoding)).toEqual([['zstd', 'age'], ['gzip'], []]);
    const verify = await cli(['verify', '--remote', 'offsite', '--read-data', '--identity', keys.file, '--json', '-c', env.config]);
    expect(verify.code, verify.stdout).toBe(0);
    expect(jsonOf<{ events: Array<{ checked: string }> }>(verify).events.map((e) => e.checked)).toEqual(['data', 'data', 'data']);
    for (const [i, e] of encodings.entries()) {
      const to = tempDir();
      const r = await cli(['restore', e.ts, '--from', 'offsite', '--identity', keys.file, '--to', to, '-c', env.config]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(readFileSync(join(to, 'dump.rdb')).equals(snaps[i]!.bytes)).toBe(true);
    }
  });

  it('a no-change once with a zstd+age remote and nothing pending loads neither age-encryption nor zstd-napi', SLOW, async () => {
    const keys = keyPair(tempDir());
    const env = withRemote(['compression: zstd', 'encryption:', '  type: age', `  recipients: ["${keys.recipient}"]`]);
    writeSnapshot(env.source, { seed: 'lazy', mtime: new Date('2025-08-01T10:00:00Z') });
    const record = join(env.root, 'required.txt');
    const preload = join(env.root, 'preload.cjs');
    writeFileSync(preload, `const M = require('node:module'); const fs = require('node:fs'); const orig = M._load;
M._load = function (request, ...rest) { if (/^(age-encryption|zstd-napi)$/.test(String(request))) fs.appendFileSync(${JSON.stringify(record)}, request + '\\n'); return orig.call(this, request, ...rest); };\n`);
    const withPreload = { NODE_OPTIONS: `--require ${preload}` };
    const first = await cli(['once', '-c', env.config], withPreload);
    expect(first.code, first.stderr).toBe(0);
    expect(readFileSync(record, 'utf8')).toContain('age-encryption'); // the probe sees the codecs when they are loaded
    rmSync(record);
    const second = await cli(['once', '--json', '-c', env.config], withPreload);
    expect(second.code, second.stderr).toBe(0);
    expect(jsonOf(second)).toMatchObject({ status: 'unchanged', offsite: [{ status: 'idle', pending: [] }] });
    expect(existsSync(record)).toBe(false);
  });

  it('config errors exit 2 and name the key: an invalid recipient, an empty list, an unknown level, a secret key as recipient', SLOW, async () => {
    const keys = keyPair(tempDir());
    const cases: Array<{ extra: string[]; key: RegExp; why: RegExp }> = [
      { extra: ['encryption:', '  type: age', `  recipients: ["${keys.recipient}", "${keys.recipient.slice(0, -1)}x"]`], key: /remotes\[0\]\.encryption\.recipients\[1\]/, why: /not a valid age recipient/ },
      { extra: ['encryption:', '  type: age', '  recipients: []'], key: /remotes\[0\]\.encryption\.recipients/, why: /is empty/ },
      { extra: ['compression: "zstd:42"'], key: /remotes\[0\]\.compression/, why: /42 is not a zstd level/ },
      { extra: ['compression: brotli'], key: /remotes\[0\]\.compression/, why: /must be none, gzip or zstd/ },
      { extra: ['encryption:', '  type: age', `  recipients: ["${keys.secret}"]`], key: /recipients\[0\]/, why: /is an age identity \(a secret key\)/ },
    ];
    for (const c of cases) {
      const env = withRemote(c.extra);
      const r = await cli(['list', '--remote', 'offsite', '-c', env.config]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(c.key);
      expect(r.stderr).toMatch(c.why);
      expect(r.stderr).not.toContain(keys.secret);
    }
  });
});
