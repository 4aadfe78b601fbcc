/**
 * The node_exporter textfile: written by `once` and `prune` through the real
 * CLI, read back with a strict exposition-format parser (test/helpers/prom.ts)
 * and with the independent npm parser parse-prometheus-text-format.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { describe, expect, it } from 'vitest';
import { runCli, tempDir } from '../helpers/cli.js';
import { parseExposition, promtoolCheck, promtoolSkipReason, sampleValue, type MetricFamily } from '../helpers/prom.js';
import { setupArchive, writeSnapshot } from '../helpers/snapshots.js';

const REQUIRED: Record<string, 'gauge' | 'counter'> = {
  rdb_archiver_last_run_timestamp_seconds: 'gauge',
  rdb_archiver_last_success_timestamp_seconds: 'gauge',
  rdb_archiver_last_snapshot_timestamp_seconds: 'gauge',
  rdb_archiver_last_snapshot_bytes: 'gauge',
  rdb_archiver_run_duration_seconds: 'gauge',
  rdb_archiver_runs_total: 'counter',
  rdb_archiver_events: 'gauge',
  rdb_archiver_archive_bytes: 'gauge',
  rdb_archiver_source_invalid: 'gauge',
  rdb_archiver_hook_failures_total: 'counter',
};

/** Parses the file with both parsers, checks they agree and that every family is well-formed. */
function readMetrics(path: string): Map<string, MetricFamily> {
  const text = readFileSync(path, 'utf8');
  const families = parseExposition(text);
  const other = parsePrometheusTextFormat(text) as Array<{ name: string; type: string; help: string; metrics: Array<{ value: string; labels?: Record<string, string> }> }>;
  expect(other.map((f) => f.name)).toEqual([...families.keys()]);
  for (const f of other) {
    const mine = families.get(f.name)!;
    expect(f.type.toLowerCase()).toBe(mine.type);
    expect(f.help).toBe(mine.help);
    // That parser drops the labels of a histogram's samples (and so merges the instances'):
    // histograms are checked by the strict parser above and by promtool only.
    if (mine.type === 'histogram') continue;
    expect(f.metrics.map((m) => [m.labels ?? {}, Number(m.value)])).toEqual(mine.samples.map((s) => [s.labels, s.value]));
  }
  for (const [name, f] of families) {
    expect(f.help, name).toBeTruthy();
    expect(f.type, name).not.toBe('untyped');
    if (f.type === 'counter') expect(name).toMatch(/_total$/);
    for (const s of f.samples) {
      expect(s.labels.redis_instance, `${name} has a redis_instance label`).toBeTruthy();
      // Prometheus owns "instance" (the scrape target): ours would become exported_instance.
      expect(s.labels, `${name} carries no instance label`).not.toHaveProperty('instance');
      expect(Number.isFinite(s.value)).toBe(true);
    }
  }
  for (const [name, type] of Object.entries(REQUIRED)) expect(families.get(name)?.type, name).toBe(type);
  return families;
}

describe('metrics textfile', () => {
  it('the strict parser rejects what node_exporter would', () => {
    const ok = '# HELP a_total x\n# TYPE a_total counter\na_total{instance="i",l="q\\"\\\\\\n"} 1\n';
    expect(sampleValue(parseExposition(ok), 'a_total', { instance: 'i' })).toBe(1);
    for (const bad of [
      'a{instance="x} 1\n', // unterminated label value
      'a 1 2 3\n', // trailing junk
      'a{b="1"} x\n', // not a number
      'a{b="\\t"} 1\n', // bad escape
      '# TYPE a gauge\n# TYPE a gauge\na 1\n', // TYPE twice
      'a 1\n# TYPE a gauge\n', // TYPE after samples
      '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n', // family not contiguous
      'a{x="1"} 1\na{x="1"} 2\n', // duplicate series
      'a 1', // no final newline
    ]) {
      expect(() => parseExposition(bad), bad).toThrow();
    }
  });

  it('is written atomically (0644) by every once and prune, with counters that survive across runs', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 5 }, { name: 'last', count: 1 }] });
    const promDir = join(env.root, 'textfile');
    const prom = join(promDir, 'rdb-archiver.prom');
    env.writeConfig({ extra: `metrics:\n  textfile: ${prom}` });

    const snap = writeSnapshot(env.source, { seed: 'a', mtime: new Date('2025-08-01T10:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    expect(statSync(prom).mode & 0o777).toBe(0o644);
    let m = readMetrics(prom);
    const i = { redis_instance: 'default' };
    expect(sampleValue(m, 'rdb_archiver_runs_total', { ...i, result: 'ok' })).toBe(1);
    expect(sampleValue(m, 'rdb_archiver_runs_total', { ...i, result: 'failed' })).toBe(0);
    expect(sampleValue(m, 'rdb_archiver_last_snapshot_timestamp_seconds', i)).toBe(Date.parse('2025-08-01T10:00:00Z') / 1000);
    expect(sampleValue(m, 'rdb_archiver_last_snapshot_bytes', i)).toBe(snap.length);
    expect(sampleValue(m, 'rdb_archiver_events', { ...i, rule: 'hourly' })).toBe(1);
    expect(sampleValue(m, 'rdb_archiver_events', { ...i, rule: 'last' })).toBe(1);
    expect(sampleValue(m, 'rdb_archiver_archive_bytes', { ...i, rule: 'hourly' })).toBeGreaterThan(snap.length);
    expect(sampleValue(m, 'rdb_archiver_source_invalid', i)).toBe(0);
    const lastRun = sampleValue(m, 'rdb_archiver_last_run_timestamp_seconds', i)!;
    expect(Math.abs(lastRun - Date.now() / 1000)).toBeLessThan(60);
    expect(sampleValue(m, 'rdb_archiver_last_success_timestamp_seconds', i)).toBe(lastRun);

    // A second process, nothing new: the counter continues from the state file.
    writeSnapshot(env.source, { seed: 'b', mtime: new Date('2025-08-01T11:00:00Z') });
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    expect((await runCli(['once', '-c', env.config])).code).toBe(0);
    m = readMetrics(prom);
    expect(sampleValue(m, 'rdb_archiver_runs_total', { ...i, result: 'ok' })).toBe(3);
    expect(sampleValue(m, 'rdb_archiver_events', { ...i, rule: 'hourly' })).toBe(2);
    expect(sampleValue(m, 'rdb_archiver_events', { ...i, rule: 'last' })).toBe(1);

    // An invalid source: source_invalid 1, a failed run counted, the last success unchanged.
    writeFileSync(env.source, 'not an rdb');
    expect((await runCli(['once', '-c', env.config])).code).toBe(65);
    m = readMetrics(prom);
    expect(sampleValue(m, 'rdb_archiver_source_invalid', i)).toBe(1);
    expect(sampleValue(m, 'rdb_archiver_runs_total', { ...i, result: 'failed' })).toBe(1);
    expect(sampleValue(m, 'rdb_archiver_last_run_exit_code', i)).toBe(65);
    expect(sampleValue(m, 'rdb_archiver_last_success_timestamp_seconds', i)).toBeLessThan(sampleValue(m, 'rdb_archiver_last_run_timestamp_seconds', i)!);

    // prune writes it too; a dry run does not.
    unlinkSync(prom);
    expect((await runCli(['prune', '--dry-run', '-c', env.config])).code).toBe(0);
    expect(existsSync(prom)).toBe(false);
    expect((await runCli(['prune', '-c', env.config])).code).toBe(0);
    readMetrics(prom);
    // Only the .prom file: no temp file left, none ever named *.prom.
    expect(readdirSync(promDir)).toEqual(['rdb-archiver.prom']);
  });

  it('labels every series with its instance, keeps all instances with --instance, and counts hook failures', async () => {
    const root = tempDir();
    const prom = join(root, 'metrics', 'rdb.prom');
    for (const name of ['a', 'b', 'archive']) mkdirSync(join(root, name)); // the shared archive.dir must exist
    writeFileSync(join(root, 'config.yaml'), [
      'archive:',
      `  dir: ${join(root, 'archive')}`,
      'metrics:',
      `  textfile: ${prom}`,
      'instances:',
      '  - name: a',
      '    source:',
      `      rdb: ${join(root, 'a', 'dump.rdb')}`,
      '    hooks:',
      '      after_archive: ["false"]',
      '  - name: b',
      '    source:',
      `      rdb: ${join(root, 'b', 'dump.rdb')}`,
    ].join('\n') + '\n');
    writeSnapshot(join(root, 'a', 'dump.rdb'), { seed: 'a', mtime: new Date('2025-08-02T10:00:00Z') });
    writeSnapshot(join(root, 'b', 'dump.rdb'), { seed: 'b', mtime: new Date('2025-08-02T11:00:00Z') });
    expect((await runCli(['once', '-c', join(root, 'config.yaml')])).code).toBe(0);
    let m = readMetrics(prom);
    expect(sampleValue(m, 'rdb_archiver_hook_failures_total', { redis_instance: 'a', hook: 'after_archive' })).toBe(1);
    expect(sampleValue(m, 'rdb_archiver_hook_failures_total', { redis_instance: 'b', hook: 'after_archive' })).toBe(0);
    expect(sampleValue(m, 'rdb_archiver_last_snapshot_timestamp_seconds', { redis_instance: 'b' })).toBe(Date.parse('2025-08-02T11:00:00Z') / 1000);

    writeSnapshot(join(root, 'b', 'dump.rdb'), { seed: 'b2', mtime: new Date('2025-08-02T12:00:00Z') });
    expect((await runCli(['once', '--instance', 'b', '-c', join(root, 'config.yaml')])).code).toBe(0);
    m = readMetrics(prom);
    expect(sampleValue(m, 'rdb_archiver_runs_total', { redis_instance: 'a', result: 'ok' })).toBe(1);
    expect(sampleValue(m, 'rdb_archiver_runs_total', { redis_instance: 'b', result: 'ok' })).toBe(2);
    expect(sampleValue(m, 'rdb_archiver_last_snapshot_timestamp_seconds', { redis_instance: 'b' })).toBe(Date.parse('2025-08-02T12:00:00Z') / 1000);
  });

  const promtoolSkip = promtoolSkipReason();
  if (promtoolSkip) console.warn(`metrics.test.ts: ${promtoolSkip}`);
  it.skipIf(promtoolSkip !== undefined)('passes promtool check metrics: every family, several instances, a failed run, failing hooks, an orphan folder', async () => {
    // The control: promtool does fail a file with a lint problem (a counter without _total).
    const bad = promtoolCheck('# HELP x_runs Runs.\n# TYPE x_runs counter\nx_runs{redis_instance="a"} 1\n');
    expect(bad, 'promtool must be installed (CI=true: .ci/run installs Debian\'s prometheus package)').toBeDefined();
    expect(bad!.code, bad!.output).not.toBe(0);

    const root = tempDir();
    const prom = join(root, 'metrics', 'rdb.prom');
    for (const name of ['a', 'b']) mkdirSync(join(root, name));
    for (const name of ['a', 'b']) mkdirSync(join(root, 'archive', name), { recursive: true }); // archive roots must exist
    const writeConfig = (rulesOfA: string) => writeFileSync(join(root, 'config.yaml'), [
      'metrics:',
      `  textfile: ${prom}`,
      'instances:',
      '  - name: a',
      '    archive:',
      `      dir: ${join(root, 'archive', 'a')}`,
      '    source:',
      `      rdb: ${join(root, 'a', 'dump.rdb')}`,
      `    rules: [${rulesOfA}]`,
      '    hooks:',
      '      after_archive: ["false"]',
      '  - name: b',
      '    archive:',
      `      dir: ${join(root, 'archive', 'b')}`,
      '    source:',
      `      rdb: ${join(root, 'b', 'dump.rdb')}`,
    ].join('\n') + '\n');
    // a archives into "old", then the rule is renamed: "old" is an orphan folder.
    writeConfig('{ name: old, count: 3 }');
    writeSnapshot(join(root, 'a', 'dump.rdb'), { seed: 'a', mtime: new Date('2025-08-02T10:00:00Z') });
    writeFileSync(join(root, 'b', 'dump.rdb'), 'not an rdb');
    expect((await runCli(['once', '-c', join(root, 'config.yaml')])).code).toBe(65);
    writeConfig('{ name: new, count: 3 }');
    writeSnapshot(join(root, 'a', 'dump.rdb'), { seed: 'a2', mtime: new Date('2025-08-02T11:00:00Z') });
    expect((await runCli(['once', '-c', join(root, 'config.yaml')])).code).toBe(65);
    const text = readFileSync(prom, 'utf8');
    const families = readMetrics(prom);
    expect(families.size).toBeGreaterThanOrEqual(Object.keys(REQUIRED).length);
    expect(text).toMatch(/^rdb_archiver_source_invalid\{redis_instance="b"\} 1$/m);
    expect(text).toMatch(/^rdb_archiver_orphan_folder_events\{redis_instance="a",folder="old"\} 1$/m);
    expect(text).toMatch(/^rdb_archiver_hook_failures_total\{redis_instance="a",hook="after_archive"\} 2$/m);
    const checked = promtoolCheck(text)!;
    expect(checked.code, `promtool check metrics:\n${checked.output}\n${text}`).toBe(0);
  });
});

