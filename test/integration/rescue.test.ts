/**
 * The self-describing archive (issue 13 item 5) and `restore latest` that
 * never restores an older event silently (item 4), through the real CLI.
 *
 * A rescue host has the archive and nothing else: no config, no source.
 * list, verify and restore work from --archive alone and find every rule
 * folder: from the index the runs wrote (also renamed rules) and by scanning.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { writeEvent } from '../helpers/events.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';
import type { ArchiveIndex } from '../../src/pipeline/archive-index.js';
import type { RestoreReport } from '../../src/commands/restore.js';
import type { VerifyReport } from '../../src/commands/catalog.js';

type ListJson = Record<string, Array<{ ts: string; seq: number | null; origin: string }>>;

describe('a self-describing archive', () => {
  it('once writes the index; list, verify and restore work from --archive alone and find renamed rules and unknown folders', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 48 }, { name: 'daily', every: 'day', count: 7 }] });
    writeSnapshot(env.source, { seed: 'one', mtime: new Date('2025-05-01T10:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);

    const indexFile = join(env.archive, '.rdb-archiver-index.json');
    const first = JSON.parse(readFileSync(indexFile, 'utf8')) as ArchiveIndex;
    expect(first).toMatchObject({
      format: 'rdb-archiver-index', version: 1, tool: { name: 'rdb-archiver' }, instance: 'default',
      source: { rdb: env.source, nodes: null },
      rules: [{ name: 'hourly', every: 'hour', count: 48 }, { name: 'daily', every: 'day', count: 7 }],
      formerRules: [],
    });
    expect(first.tool.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(statSync(indexFile).mode & 0o777).toBe(0o600);

    // An unchanged run does not rewrite it.
    const mtime = statSync(indexFile).mtimeMs;
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    expect(statSync(indexFile).mtimeMs).toBe(mtime);

    // The rules are renamed: the index keeps the old ones as former rules.
    env.writeConfig({ rules: [{ name: 'keep', count: 10 }] });
    const newest = writeSnapshot(env.source, { seed: 'two', mtime: new Date('2025-05-01T11:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const second = JSON.parse(readFileSync(indexFile, 'utf8')) as ArchiveIndex;
    expect(second.rules).toEqual([{ name: 'keep', every: 'snapshot', count: 10 }]);
    expect(second.formerRules.map((r) => [r.name, r.every, r.count])).toEqual([['daily', 'day', 7], ['hourly', 'hour', 48]]);
    expect(readdirSync(env.archive).filter((n) => !n.startsWith('.')).sort()).toEqual(['daily', 'hourly', 'keep']);

    // A folder no index names, holding an event: found by scanning.
    writeEvent(env.archive, ['manual'], '2025-04-01T00-00-00', { seed: 'manual' });

    // The rescue host: --archive only. No config exists, no source.
    const list = await runCli(['list', '--archive', env.archive, '--json']);
    expect(list.code, list.stderr).toBe(0);
    const listed = jsonOf<ListJson>(list);
    expect(Object.keys(listed)).toEqual(['keep', 'daily', 'hourly', 'manual']);
    expect(listed.keep!.map((e) => [e.ts, e.origin])).toEqual([['2025-05-01T11-00-00', 'index']]);
    expect(listed.hourly!.map((e) => e.ts)).toEqual(['2025-05-01T10-00-00']);
    expect(listed.manual!.map((e) => [e.ts, e.origin])).toEqual([['2025-04-01T00-00-00', 'found']]);
    const human = await runCli(['list', '--archive', env.archive]);
    expect(human.stdout).toContain('manual: 1 event [not in the config: found in the archive]');
    expect(human.stdout).toMatch(/folder hourly: a former rule \(every hour, count 48; configured until /);

    // With the config: the folders it does not name are listed and marked.
    const withConfig = await runCli(['list', '-c', env.config]);
    expect(withConfig.code).toBe(0);
    expect(withConfig.stdout).toContain('hourly: 1 event [not in the config: named by the archive index]');
    expect(withConfig.stdout).toContain('keep: 1 event\n');

    const verify = await runCli(['verify', '--archive', env.archive, '--json']);
    expect(verify.code, verify.stderr).toBe(0);
    const verified = jsonOf<VerifyReport>(verify);
    expect(Object.keys(verified.events).sort()).toEqual(['daily', 'hourly', 'keep', 'manual']);
    expect(Object.values(verified.events).flat().every((e) => e.ok)).toBe(true);

    // --rule names a folder found in the archive.
    const one = await runCli(['verify', '--archive', env.archive, '--rule', 'manual', '--json']);
    expect(Object.keys(jsonOf<VerifyReport>(one).events)).toEqual(['manual']);
    expect((await runCli(['verify', '--archive', env.archive, '--rule', 'nope'])).code).toBe(2);

    // latest = the highest archive sequence number, in whichever folder.
    const out = join(env.root, 'out');
    mkdirSync(out);
    const restore = await runCli(['restore', 'latest', '--archive', env.archive, '--to', out, '--json']);
    expect(restore.code, restore.stderr).toBe(0);
    expect(jsonOf<RestoreReport>(restore)).toMatchObject({ status: 'restored', ts: '2025-05-01T11-00-00', rule: 'keep', fallback: null });
    expect(readFileSync(join(out, 'dump.rdb')).equals(newest.bytes)).toBe(true);
    const older = await runCli(['restore', '2025-05-01T10-00-00', '--archive', env.archive, '--to', join(out, 'older.rdb'), '--json']);
    expect(older.code, older.stderr).toBe(0);
    expect(jsonOf<RestoreReport>(older).rule).toBe('daily');
  });

  it('--archive alone without an index (an archive of an older version): every folder holding events is found by scanning', async () => {
    const env = setupArchive({ rules: [{ name: 'x', count: 5 }] });
    writeEvent(env.archive, ['a', 'b'], '2025-01-01T00-00-00');
    writeEvent(env.archive, ['b'], '2025-01-02T00-00-00');
    mkdirSync(join(env.archive, 'empty'));
    mkdirSync(join(env.archive, 'Upper'));
    writeEvent(env.archive, ['Upper'], '2025-01-03T00-00-00');
    const r = await runCli(['list', '--archive', env.archive, '--json']);
    expect(r.code, r.stderr).toBe(0);
    // No rule can be named "Upper" or "empty"-without-events: neither is a rule folder.
    expect(Object.keys(jsonOf<ListJson>(r))).toEqual(['a', 'b']);
    expect(existsSync(join(env.archive, '.rdb-archiver-index.json'))).toBe(false); // read-only commands write nothing
  });
});

describe('restore latest never restores an older event silently', () => {
  it('names the newest good event and exits 79 without --fallback; restores it with --fallback and says so', async () => {
    const env = setupArchive({ rules: [{ name: 'a', count: 5 }, { name: 'b', count: 5 }] });
    const good = writeEvent(env.archive, ['a', 'b'], '2025-01-01T00-00-00', { seed: 'good' });
    const bad = writeEvent(env.archive, ['a', 'b'], '2025-01-02T00-00-00', { seed: 'bad', size: 50_000 });
    const corrupt = Buffer.from(bad.rdb);
    corrupt[20_000]! ^= 0x01;
    writeFileSync(bad.files.a!.rdb, corrupt); // in place: the hard link in b is the same file
    const out = join(env.root, 'out');
    mkdirSync(out);

    const refused = await runCli(['restore', 'latest', '--to', out, '--json', '-c', env.config]);
    expect(refused.code, refused.stderr).toBe(79);
    const message = jsonOf<RestoreReport>(refused).error!.message;
    expect(message).toContain('the newest event 2025-01-02T00-00-00 failed verification');
    expect(message).toContain('The newest event that passes is 2025-01-01T00-00-00');
    expect(message).toContain('--fallback');
    expect(readdirSync(out)).toEqual([]);

    const human = await runCli(['restore', 'latest', '--to', out, '-c', env.config]);
    expect(human.code).toBe(79);

    const fallback = await runCli(['restore', 'latest', '--fallback', '--to', out, '--json', '-c', env.config]);
    expect(fallback.code, fallback.stderr).toBe(0);
    const report = jsonOf<RestoreReport>(fallback);
    expect(report).toMatchObject({ status: 'restored', ts: '2025-01-01T00-00-00' });
    expect(report.fallback!.skipped.map((s) => s.ts)).toEqual(['2025-01-02T00-00-00']);
    expect(report.warnings.join('\n')).toMatch(/--fallback: restored 2025-01-01T00-00-00, an OLDER event: the newer 2025-01-02T00-00-00 failed verification/);
    expect(readFileSync(join(out, 'dump.rdb')).equals(good.rdb)).toBe(true);
    expect(readdirSync(out)).toEqual(['dump.rdb']);

    // --fallback applies to latest only; a named bad event is still 65.
    expect((await runCli(['restore', '2025-01-02T00-00-00', '--fallback', '--to', join(out, 'x.rdb'), '-c', env.config])).code).toBe(2);
    expect((await runCli(['restore', '2025-01-02T00-00-00', '--to', join(out, 'x.rdb'), '-c', env.config])).code).toBe(65);

    // Nothing passes at all: 65, even with --fallback.
    writeFileSync(good.files.a!.rdb, Buffer.alloc(good.rdb.length));
    const none = await runCli(['restore', 'latest', '--fallback', '--to', join(out, 'y.rdb'), '--json', '-c', env.config]);
    expect(none.code).toBe(65);
    expect(jsonOf<RestoreReport>(none).error!.message).toContain('no archived event passes verification');
    expect(existsSync(join(out, 'y.rdb'))).toBe(false);
  });
});
