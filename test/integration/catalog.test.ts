/**
 * `list` and `verify` through the real CLI.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, logLines, runCli } from '../helpers/cli.js';
import { NODES_CONF, writeEvent } from '../helpers/events.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

type ListJson = Record<string, Array<{ ts: string; bytes: number; nodes: boolean; redisVersion: string | null; ctime: string | null }>>;
interface VerifyJson {
  ok: boolean;
  events: Record<string, Array<{ ts: string; ok: boolean; problems: string[]; warnings: string[] }>>;
  bad: Array<{ rule: string; ts: string; problems: string[] }>;
  filesRead: number;
  bytesRead: number;
  durationMs: number;
  error?: { kind: string; message: string };
  exitCode: number;
}

/** Replaces a (possibly hard-linked) file by a new inode with other content, in this folder only. */
function replaceFile(path: string, content: string | Buffer): void {
  unlinkSync(path);
  writeFileSync(path, content, { mode: 0o600 });
}

describe('rdb-archiver list', () => {
  it('lists every event per rule, newest first, with size, nodes, version and ctime from the header', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 48 }, { name: 'last', count: 2 }], nodes: true });
    const sizes: number[] = [];
    for (const [i, t] of ['2025-02-24T21:00:00Z', '2025-02-24T22:00:00Z', '2025-02-24T23:59:00Z'].entries()) {
      sizes.push(writeSnapshot(env.source, { seed: `e${i}`, mtime: new Date(t), size: 1000 * (i + 1) }).length);
      if (i === 1) unlinkSync(env.nodes!);
      else writeFileSync(env.nodes!, NODES_CONF);
      const r = await runCli(['once', '-c', env.config]);
      expect(r.code, r.stderr).toBe(0);
    }
    const r = await runCli(['list', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    // The builder writes redis-ver 7.2.4 and ctime 1735689600 into every header.
    // copy: a reflink where the temp filesystem clones, else the O_DIRECT pass ('direct') or a kernel copy; shared only while the source is that file, unchanged (the newest).
    const kernel = expect.stringMatching(/^(reflink|direct|copy_file_range)$/);
    const common = { redisVersion: '7.2.4', ctime: '2025-01-01T00:00:00Z', copy: kernel, origin: 'config' };
    const e3 = { ts: '2025-02-24T23-59-00', seq: 3, bytes: sizes[2], nodes: true, ...common, shared: expect.any(Boolean) };
    const e2 = { ts: '2025-02-24T22-00-00', seq: 2, bytes: sizes[1], nodes: false, ...common, shared: false };
    const e1 = { ts: '2025-02-24T21-00-00', seq: 1, bytes: sizes[0], nodes: true, ...common, shared: false };
    expect(jsonOf<ListJson>(r)).toEqual({ hourly: [e3, e2, e1], last: [e3, e2] });

    const one = await runCli(['list', '--rule', 'last', '--json', '-c', env.config]);
    expect(jsonOf<ListJson>(one)).toEqual({ last: [e3, e2] });

    const human = await runCli(['list', '-c', env.config]);
    expect(human.code).toBe(0);
    const lines = human.stdout.split('\n');
    expect(lines[0]).toBe('hourly: 3 events');
    expect(lines[1]).toMatch(/^ {2}2025-02-24T23-59-00 +\d\.\d KiB +nodes +7\.2\.4 +ctime 2025-01-01T00:00:00Z$/);
    expect(lines[2]).toMatch(/^ {2}2025-02-24T22-00-00 +\d\.\d KiB +- +7\.2\.4/);
    expect(human.stdout).toContain('last: 2 events');
  });

  it('lists an event whose header is unreadable with null version and a warning; unknown --rule exits 2', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    writeEvent(env.archive, ['all'], '2025-01-01T00-00-00', { rdb: Buffer.from('this is not an RDB file at all') });
    writeEvent(env.archive, ['all'], '2025-01-02T00-00-00', { seed: 'ok' });
    const r = await runCli(['list', '--json', '-c', env.config]);
    expect(r.code, r.stderr).toBe(0);
    const all = jsonOf<ListJson>(r).all!;
    expect(all.map((e) => [e.ts, e.redisVersion, e.ctime])).toEqual([
      ['2025-01-02T00-00-00', '7.2.4', '2025-01-01T00:00:00Z'],
      ['2025-01-01T00-00-00', null, null],
    ]);
    expect(logLines(r).some((l) => l.level === 40 && String(l.msg).includes('bad magic'))).toBe(true);

    const unknown = await runCli(['list', '--rule', 'nope', '-c', env.config]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('no rule named "nope" (rules: all)');
  });

  it('reads only the header: a 256 GiB (sparse) archived dump is listed at once', async () => {
    const env = setupArchive({ rules: [{ name: 'all', count: 5 }] });
    const ev = writeEvent(env.archive, ['all'], '2025-01-01T00-00-00', { seed: 'huge' });
    const big = 256 * 1024 ** 3;
    const fd = openSync(ev.files.all!.rdb, 'r+');
    writeSync(fd, Buffer.from([0]), 0, 1, big - 1); // a hole up to 256 GiB: reading it all would take minutes
    closeSync(fd);
    const started = Date.now();
    const r = await runCli(['list', '--json', '-c', env.config], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    // (written by hand, without an archive record: as by a version before records existed)
    expect(jsonOf<ListJson>(r).all).toEqual([{ ts: '2025-01-01T00-00-00', seq: null, bytes: big, nodes: false, redisVersion: '7.2.4', ctime: '2025-01-01T00:00:00Z', copy: null, shared: false, origin: 'config' }]);
  });
});

describe('rdb-archiver verify', () => {
  it('passes a real archive (also sha256sum -c), and names every bad event and what is wrong with it', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 10 }, { name: 'b', count: 10 }], nodes: true });
    writeFileSync(env.nodes!, NODES_CONF);
    writeSnapshot(env.source, { seed: 'real', mtime: new Date('2025-03-01T00:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const good = await runCli(['verify', '--json', '-c', env.config]);
    expect(good.code, good.stdout).toBe(0);
    expect(jsonOf<VerifyJson>(good)).toMatchObject({ ok: true, bad: [], events: { a: [{ ts: '2025-03-01T00-00-00', ok: true, problems: [] }], b: [{ ok: true }] } });
    expect(execFileSync('sha256sum', ['-c', 'dump-2025-03-01T00-00-00.sha256'], { cwd: join(env.archive, 'a') }).toString()).toContain('OK');

    // Five broken events, each in its own way, and one good one.
    const rules = ['a', 'b'];
    const crc = writeEvent(env.archive, rules, '2025-03-02T00-00-00', { seed: 'crc' });
    const flipped = readFileSync(crc.files.a!.rdb);
    flipped[flipped.length >> 1]! ^= 0x10;
    writeFileSync(crc.files.a!.rdb, flipped); // in place: every hard link sees it
    const sha = writeEvent(env.archive, rules, '2025-03-03T00-00-00', { seed: 'sha' });
    replaceFile(sha.files.b!.sidecar, `${'0'.repeat(64)}  dump-2025-03-03T00-00-00.rdb\n`); // only in b
    const nosidecar = writeEvent(env.archive, rules, '2025-03-04T00-00-00', { seed: 'nosidecar' });
    unlinkSync(nosidecar.files.a!.sidecar);
    const nonodes = writeEvent(env.archive, rules, '2025-03-05T00-00-00', { seed: 'nonodes', nodes: NODES_CONF });
    unlinkSync(nonodes.files.a!.nodes!);
    const badnodes = writeEvent(env.archive, rules, '2025-03-06T00-00-00', { seed: 'badnodes', nodes: NODES_CONF });
    replaceFile(badnodes.files.b!.nodes!, NODES_CONF.replace('currentEpoch 1', 'currentEpoch 2'));
    writeEvent(env.archive, rules, '2025-03-07T00-00-00', { seed: 'fine', nodes: NODES_CONF });

    const r = await runCli(['verify', '--json', '-c', env.config]);
    expect(r.code, r.stdout).toBe(1);
    const out = jsonOf<VerifyJson>(r);
    expect(out.ok).toBe(false);
    const bad = Object.fromEntries(out.bad.map((b) => [`${b.rule} ${b.ts}`, b.problems.join(' | ')]));
    expect(Object.keys(bad).sort()).toEqual([
      'a 2025-03-02T00-00-00', 'a 2025-03-04T00-00-00', 'a 2025-03-05T00-00-00',
      'b 2025-03-02T00-00-00', 'b 2025-03-03T00-00-00', 'b 2025-03-06T00-00-00',
    ]);
    expect(bad['a 2025-03-02T00-00-00']).toMatch(/dump-2025-03-02T00-00-00\.rdb: RDB check failed: CRC mismatch: stored [0-9a-f]{16}, computed [0-9a-f]{16}/);
    expect(bad['b 2025-03-03T00-00-00']).toBe(`sha256 mismatch: dump-2025-03-03T00-00-00.rdb: dump-2025-03-03T00-00-00.sha256 says ${'0'.repeat(64)}, the file has ${sha.sha256}`);
    expect(bad['a 2025-03-04T00-00-00']).toMatch(/^missing sidecar dump-2025-03-04T00-00-00\.sha256/);
    expect(bad['a 2025-03-05T00-00-00']).toBe('missing companion nodes-2025-03-05T00-00-00.config: listed in dump-2025-03-05T00-00-00.sha256 but absent');
    expect(bad['b 2025-03-06T00-00-00']).toMatch(/^sha256 mismatch: nodes-2025-03-06T00-00-00\.config/);
    expect(out.events.a!.find((e) => e.ts === '2025-03-07T00-00-00')!.ok).toBe(true);
    expect(out.events.b!.find((e) => e.ts === '2025-03-03T00-00-00')).toBeDefined();
    expect(out.events.a!.find((e) => e.ts === '2025-03-03T00-00-00')!.ok).toBe(true); // a's own sidecar is intact

    const human = await runCli(['verify', '-c', env.config]);
    expect(human.code).toBe(1);
    expect(human.stdout).toMatch(/verified 14 events .*: 8 ok, 6 bad/);
    expect(human.stdout).toContain('bad events:');
    expect(human.stdout).toMatch(/ {2}a 2025-03-04T00-00-00\n {4}- missing sidecar/);
  });

  it('reads each inode once: one event hard-linked into 4 rule folders costs one read', async () => {
    const rules = ['r1', 'r2', 'r3', 'r4'];
    const env = setupArchive({ rules: rules.map((name) => ({ name, count: 5 })) });
    const snap = writeSnapshot(env.source, { seed: 'big', mtime: new Date('2025-04-01T00:00:00Z'), size: 48 * 1024 * 1024 });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);

    const r = await runCli(['verify', '--json', '-c', env.config]);
    expect(r.code, r.stdout).toBe(0);
    const out = jsonOf<VerifyJson>(r);
    expect(rules.map((rule) => out.events[rule]!.map((e) => e.ok))).toEqual([[true], [true], [true], [true]]);
    expect(out.filesRead).toBe(1);
    expect(out.bytesRead).toBe(snap.length);

    // A copy that is not a hard link (e.g. after EXDEV) is a second inode, read separately.
    const path = join(env.archive, 'r3', 'dump-2025-04-01T00-00-00.rdb');
    copyFileSync(path, `${path}.new`);
    renameSync(`${path}.new`, path);
    const again = jsonOf<VerifyJson>(await runCli(['verify', '--json', '-c', env.config]));
    expect(again.ok).toBe(true);
    expect(again.filesRead).toBe(2);
    expect(again.bytesRead).toBe(2 * snap.length);
  });

  it('verify TS checks only that event (file-name or ISO form); an unknown TS exits 66, a malformed one 2', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 5 }, { name: 'b', count: 5 }] });
    writeEvent(env.archive, ['a', 'b'], '2025-01-01T00-00-00');
    const broken = writeEvent(env.archive, ['a', 'b'], '2025-01-02T00-00-00');
    unlinkSync(broken.files.a!.sidecar);

    const one = await runCli(['verify', '2025-01-01T00-00-00', '--json', '-c', env.config]);
    expect(one.code, one.stdout).toBe(0);
    expect(jsonOf<VerifyJson>(one).events).toMatchObject({ a: [{ ts: '2025-01-01T00-00-00', ok: true }], b: [{ ts: '2025-01-01T00-00-00', ok: true }] });
    const iso = await runCli(['verify', '2025-01-02T00:00:00Z', '--rule', 'a', '--json', '-c', env.config]);
    expect(iso.code).toBe(1);
    expect(Object.keys(jsonOf<VerifyJson>(iso).events)).toEqual(['a']);
    const onlyB = await runCli(['verify', '2025-01-02T00-00-00', '--rule', 'b', '-c', env.config]);
    expect(onlyB.code).toBe(0);

    const missing = await runCli(['verify', '2025-01-09T00-00-00', '--json', '-c', env.config]);
    expect(missing.code).toBe(66);
    expect(jsonOf<VerifyJson>(missing).error!.message).toMatch(/no archived event 2025-01-09T00-00-00/);
    const malformed = await runCli(['verify', 'yesterday', '-c', env.config]);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/"yesterday" is not a timestamp/);
  });
});
