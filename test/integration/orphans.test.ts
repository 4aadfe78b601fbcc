/**
 * Orphan rule folders: a rule renamed (or removed) in the config leaves its
 * old folder in the archive root, full of events that no rule prunes any
 * more. `status` and `check` report it with its size; nothing deletes it.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const ago = (ms: number) => new Date(Date.now() - ms);

interface Orphan {
  folder: string;
  dir: string;
  events: number;
  bytes: number;
  newest: string | null;
  oldest: string | null;
}

describe('orphan rule folders', () => {
  it('a renamed rule\'s old folder is reported by status and check (WARNING, with its size) and never pruned', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', count: 5 }] });
    writeSnapshot(env.source, { seed: 'a', mtime: ago(3 * 60_000) });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    writeSnapshot(env.source, { seed: 'b', mtime: ago(2 * 60_000) });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    const before = readdirSync(join(env.archive, 'hourly')).sort();
    expect(before).toHaveLength(6); // two events: .rdb + .sha256 + archive record each

    // The operator renames the rule: `hourly` becomes `recent`.
    env.writeConfig({ rules: [{ name: 'recent', count: 1 }] });
    writeSnapshot(env.source, { seed: 'c', mtime: ago(60_000) });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    expect((await runCli(['prune', '-c', env.config])).code).toBe(0);
    // A folder without event files is not an orphan; a hidden folder is never one.
    mkdirSync(join(env.archive, 'notes'));
    writeFileSync(join(env.archive, 'notes', 'README.txt'), 'hello\n');

    const status = await runCli(['status', '--json', '-c', env.config]);
    expect(status.code, status.stderr).toBe(0);
    const orphans = jsonOf<{ orphans: Orphan[] }>(status).orphans;
    expect(orphans).toHaveLength(1);
    expect(orphans[0]).toMatchObject({ folder: 'hourly', dir: join(env.archive, 'hourly'), events: 2 });
    expect(orphans[0]!.bytes).toBeGreaterThan(0);
    expect(orphans[0]!.newest).toMatch(/^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d/);

    const text = await runCli(['status', '-c', env.config]);
    expect(text.stdout).toMatch(/^orphans:\s+hourly: 2 events, [\d.]+ (B|KiB|MiB), newest .*not in the config: never pruned/m);

    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/^RDB-ARCHIVER WARNING - default: orphan rule folder hourly \(2 events, [\d.]+ (B|KiB)\) is in no rule/);
    expect(check.stdout).toMatch(/ orphans=1;;;0 orphan_bytes=\d+B;;;0/);

    // Nothing deleted it.
    expect(readdirSync(join(env.archive, 'hourly')).sort()).toEqual(before);

    // The metrics textfile has it too.
    env.writeConfig({ rules: [{ name: 'recent', count: 1 }], extra: `metrics:\n  textfile: ${join(env.root, 'rdb.prom')}` });
    expect((await runCli(['prune', '-c', env.config])).code).toBe(0);
    const prom = readFileSync(join(env.root, 'rdb.prom'), 'utf8');
    expect(prom).toMatch(/^rdb_archiver_orphan_folder_events\{redis_instance="default",folder="hourly"\} 2$/m);
    expect(prom).toMatch(/^rdb_archiver_orphan_folder_bytes\{redis_instance="default",folder="hourly"\} [1-9]\d*$/m);
    expect(prom).not.toMatch(/folder="notes"/);

    // Re-adding the rule makes it a rule folder again: OK.
    env.writeConfig({ rules: [{ name: 'recent', count: 1 }, { name: 'hourly', count: 5 }] });
    const ok = await runCli(['check', '-c', env.config]);
    expect(ok.code, ok.stdout).toBe(0);
    expect(existsSync(join(env.archive, 'hourly'))).toBe(true);
  });
});
