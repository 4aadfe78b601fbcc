/**
 * Several instances in one config, through the real CLI: every command
 * processes each instance, one failing never stops the others, the exit code
 * is the worst, and --json reports each.
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { holdLock } from '../helpers/daemon.js';
import { writeSnapshot } from '../helpers/snapshots.js';

interface Multi<T> {
  instances: Array<{ instance: string } & T>;
  exitCode: number;
}

function setupInstances(names: string[], extra: string[] = []): { root: string; config: string; source: (n: string) => string; archive: (n: string) => string } {
  const root = tempDir();
  mkdirSync(join(root, 'archive'), { mode: 0o700 }); // the shared archive.dir must exist; instance folders are made in it
  const lines = ['archive:', `  dir: ${join(root, 'archive')}`, 'rules:', '  - name: last', '    count: 2', ...extra, 'instances:'];
  for (const name of names) {
    mkdirSync(join(root, name));
    lines.push(`  - name: ${name}`, '    source:', `      rdb: ${join(root, name, 'dump.rdb')}`);
  }
  const config = join(root, 'config.yaml');
  writeFileSync(config, lines.join('\n') + '\n');
  return { root, config, source: (n) => join(root, n, 'dump.rdb'), archive: (n) => join(root, 'archive', n) };
}

describe('several instances', () => {
  it('list --json nests each instance\'s rules under "rules", so a rule named "instance" keeps its events', async () => {
    const s = setupInstances(['a', 'b'], ['  - name: instance', '    count: 3']);
    writeSnapshot(s.source('a'), { seed: 'a', mtime: new Date(Date.now() - 60_000) });
    writeSnapshot(s.source('b'), { seed: 'b', mtime: new Date(Date.now() - 90_000) });
    expect((await runCli(['once', '-c', s.config])).code).toBe(0);
    const r = await runCli(['list', '--json', '-c', s.config]);
    expect(r.code, r.stderr).toBe(0);
    const list = jsonOf<Multi<{ rules: Record<string, Array<{ ts: string }>> }>>(r);
    expect(list.instances.map((i) => i.instance)).toEqual(['a', 'b']);
    for (const entry of list.instances) {
      expect(Object.keys(entry.rules).sort()).toEqual(['instance', 'last']);
      expect(entry.rules['instance']).toHaveLength(1);
      expect(entry.rules['instance']![0]!.ts).toBe(entry.rules['last']![0]!.ts);
    }
    // One instance keeps the single-instance shape, keyed by rule.
    const one = jsonOf<Record<string, Array<{ ts: string }>>>(await runCli(['list', '--json', '--instance', 'a', '-c', s.config]));
    expect(Object.keys(one).sort()).toEqual(['instance', 'last']);
  });

  it('once, prune, status and check process every instance; one failing stops none; exit code and --json per instance', async () => {
    const s = setupInstances(['a', 'b', 'c']);
    writeSnapshot(s.source('a'), { seed: 'a', mtime: new Date(Date.now() - 60_000) });
    writeSnapshot(s.source('c'), { seed: 'c', mtime: new Date(Date.now() - 120_000) });
    // b has no source: it fails, a and c (before and after it) are archived.

    let r = await runCli(['once', '--json', '-c', s.config]);
    expect(r.code).toBe(66);
    const once = jsonOf<Multi<{ status: string; exitCode: number }>>(r);
    expect(once.exitCode).toBe(66);
    expect(once.instances.map((i) => [i.instance, i.status, i.exitCode])).toEqual([['a', 'archived', 0], ['b', 'failed', 66], ['c', 'archived', 0]]);
    for (const name of ['a', 'c']) expect(readdirSync(join(s.archive(name), 'last')).filter((f) => f.endsWith('.rdb'))).toHaveLength(1);

    // --instance picks one.
    r = await runCli(['once', '--json', '--instance', 'a', '-c', s.config]);
    expect(r.code).toBe(0);
    expect(jsonOf(r)).toMatchObject({ status: 'unchanged' }); // one instance: the single-instance shape

    r = await runCli(['prune', '--json', '-c', s.config]);
    expect(r.code).toBe(0);
    expect(jsonOf<Multi<{ dryRun: boolean }>>(r).instances.map((i) => i.instance)).toEqual(['a', 'b', 'c']);

    r = await runCli(['status', '--json', '-c', s.config]);
    expect(r.code).toBe(0);
    const status = jsonOf<Multi<{ source: { exists: boolean }; lastSnapshot: unknown }>>(r);
    expect(status.instances.map((i) => [i.instance, i.source.exists, i.lastSnapshot !== null])).toEqual([['a', true, true], ['b', false, false], ['c', true, true]]);

    // check: the worst instance decides, and the line names it (and only it).
    r = await runCli(['check', '-c', s.config]);
    expect(r.code).toBe(2);
    const line = r.stdout.trim();
    expect(line).toMatch(/^RDB-ARCHIVER CRITICAL - b: source unavailable: .* \| /);
    expect(line).not.toMatch(/ - .*\ba: /);
    expect(line).toMatch(/ a_age=\d+s;7200;21600;0 .* b_age=U;7200;21600;0 .* c_age=\d+s;/);

    r = await runCli(['check', '--instance', 'a', '-c', s.config]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^RDB-ARCHIVER OK - a: newest snapshot /);
  });

  it('a real failure outranks "try again later" (75) in the exit code', async () => {
    const s = setupInstances(['a', 'b']);
    writeSnapshot(s.source('a'), { seed: 'a', mtime: new Date('2025-10-01T10:00:00Z') });
    holdLock(join(s.archive('a'), '.rdb-archiver'));
    // a: locked (75), b: no source (66).
    let r = await runCli(['once', '--json', '-c', s.config]);
    expect(r.code).toBe(66);
    expect(jsonOf<Multi<{ exitCode: number }>>(r).instances.map((i) => i.exitCode)).toEqual([75, 66]);

    writeSnapshot(s.source('b'), { seed: 'b', mtime: new Date('2025-10-01T10:00:00Z') });
    r = await runCli(['once', '-c', s.config]);
    expect(r.code).toBe(75); // only the lock remains
  });

  it('instances may never share an archive folder (config error, exit 2)', async () => {
    const root = tempDir();
    writeFileSync(join(root, 'config.yaml'), [
      'instances:',
      '  - name: a',
      `    source: { rdb: ${join(root, 'a.rdb')} }`,
      `    archive: { dir: ${join(root, 'archive')} }`,
      '  - name: b',
      `    source: { rdb: ${join(root, 'b.rdb')} }`,
      `    archive: { dir: ${join(root, 'archive', 'b')} }`,
    ].join('\n') + '\n');
    const r = await runCli(['once', '-c', join(root, 'config.yaml')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('instances can never share an archive folder or a state file');
  });
});
