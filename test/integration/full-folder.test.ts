/**
 * A full or failing rule folder (issue 10 item 9), on real small tmpfs
 * mounts: one folder that cannot take the new event fails alone, is reported
 * per rule (once --json, text, status, check), is still pruned, keeps nothing
 * partial; the other folders are archived into and pruned; the next run
 * links the event into the folder once it has room. Inodes exhausted by
 * leftovers are cleaned up by retention, so the archive is not stuck.
 *
 * Needs root (mount -t tmpfs); skipped, with the reason printed, elsewhere.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { jsonOf, runCli, tempDir } from '../helpers/cli.js';
import { writeEvent } from '../helpers/events.js';
import { readJson, setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';

const mounted: string[] = [];

function unmountAll(): void {
  for (const dir of mounted.splice(0).reverse()) {
    try {
      execFileSync('umount', [dir], { stdio: 'pipe' });
    } catch {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
    }
  }
}

function mountTmpfs(dir: string, options: string): void {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `${options},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
  mounted.push(dir);
}

/** Why tmpfs mounts cannot be made here, or undefined when they can. */
function cannotMount(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root: mounting a tmpfs needs root';
  const probe = join(tempDir('rdb-archiver-mount-probe-'), 'm');
  try {
    mountTmpfs(probe, 'size=16k');
    return undefined;
  } catch (err) {
    return `mount -t tmpfs failed: ${(err as Error).message.split('\n')[0]}`;
  } finally {
    unmountAll();
  }
}

const skipReason = cannotMount();
if (skipReason) process.stderr.write(`full-folder tests skipped: ${skipReason}\n`);

// Unmount before the helper removes the temp folders (hooks run in reverse order), and at the end whatever happens.
afterEach(unmountAll);
afterAll(unmountAll);

interface RuleError { rule: string; stage: 'archive' | 'retention'; kind: string; message: string; exitCode: number }
interface OnceJson {
  status: string;
  snapshot: { ts: string; rules: string[] } | null;
  retention: Record<string, { keep: Array<{ ts: string }>; delete: Array<{ ts: string; reason: string }> }>;
  ruleErrors: RuleError[];
  error?: { kind: string; message: string };
  exitCode: number;
}

const names = (dir: string) => readdirSync(dir).sort();
const temps = (dir: string) => readdirSync(dir).filter((n) => n.startsWith('.tmp'));
const eventsIn = (dir: string) => names(dir).filter((n) => n.endsWith('.rdb')).map((n) => n.slice(5, -4));

function env3(): ArchiveEnv {
  const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 2 }, { name: 'daily', every: 'day', count: 2 }, { name: 'last', count: 2 }] });
  env.writeConfig({ extra: `metrics:\n  textfile: ${join(env.root, 'metrics.prom')}` });
  mkdirSync(env.archive, { recursive: true, mode: 0o700 });
  return env;
}

describe.skipIf(skipReason !== undefined)('a rule folder on a full filesystem (real tmpfs mounts)', () => {
  it('fails alone: the other folders get the event and are pruned, the full one is pruned and keeps nothing partial; reported per rule; the next run completes it', async () => {
    const env = env3();
    const daily = join(env.archive, 'daily');
    mountTmpfs(daily, 'size=100k');
    for (const ts of ['2025-01-01T00-00-00', '2025-01-02T00-00-00', '2025-01-03T00-00-00']) {
      writeEvent(env.archive, ['hourly', 'last'], ts);
      writeEvent(env.archive, ['daily'], ts); // another filesystem: its own copy
    }
    writeSnapshot(env.source, { seed: 'big', mtime: new Date('2025-02-01T10:00:00Z'), size: 200 * 1024 });

    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const out = jsonOf<OnceJson>(r);
    expect(out.status).toBe('archived');
    expect(out.snapshot!.rules).toEqual(['hourly', 'last']);
    expect(out.ruleErrors).toHaveLength(1);
    expect(out.ruleErrors[0]).toMatchObject({ rule: 'daily', stage: 'archive', kind: 'no-space', exitCode: 1 });
    expect(out.ruleErrors[0]!.message).toMatch(/daily: not enough free space/);
    expect(out.error).toMatchObject({ kind: 'no-space' });
    // The other folders: the event, and pruned to their counts.
    for (const rule of ['hourly', 'last']) expect(eventsIn(join(env.archive, rule))).toEqual(['2025-01-03T00-00-00', '2025-02-01T10-00-00']);
    // The full folder: pruned too, and nothing of the new event (no orphan .sha256, no temp).
    expect(names(daily)).toEqual(['dump-2025-01-02T00-00-00.rdb', 'dump-2025-01-02T00-00-00.sha256', 'dump-2025-01-03T00-00-00.rdb', 'dump-2025-01-03T00-00-00.sha256']);
    expect(out.retention.daily!.delete.map((d) => d.ts)).toEqual(['2025-01-01T00-00-00']);

    // Text output names the folder.
    writeSnapshot(env.source, { seed: 'big2', mtime: new Date('2025-02-01T11:00:00Z'), size: 200 * 1024 });
    const text = await runCli(['once', '-c', env.config]);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/^error: .*\/daily: not enough free space: .* \(rule daily, archive\)$/m);
    for (const rule of ['hourly', 'last']) expect(eventsIn(join(env.archive, rule))).toEqual(['2025-02-01T10-00-00', '2025-02-01T11-00-00']);
    expect(temps(daily)).toEqual([]);
    expect(names(daily).filter((n) => n.includes('2025-02-01'))).toEqual([]);

    // Visible to status and check, by rule.
    const status = await runCli(['status', '--json', '-c', env.config]);
    const st = jsonOf<{ lastRun: { exitCode: number; ruleErrors: RuleError[] } }>(status);
    expect(st.lastRun.exitCode).toBe(1);
    expect(st.lastRun.ruleErrors.map((e) => [e.rule, e.stage, e.kind])).toEqual([['daily', 'archive', 'no-space']]);
    const check = await runCli(['check', '-c', env.config, '--warn-age', '1000d', '--crit-age', '2000d']);
    expect(check.code, check.stdout).toBe(2);
    expect(check.stdout).toMatch(/rule daily: archive failed/);
    const prom = readFileSync(join(env.root, 'metrics.prom'), 'utf8');
    expect(prom).toMatch(/^rdb_archiver_rule_last_run_failed\{\w*instance="default",rule="daily"\} 1$/m);
    expect(prom).toMatch(/^rdb_archiver_rule_last_run_failed\{\w*instance="default",rule="hourly"\} 0$/m);

    // Room again (the disk is replaced by a bigger one): the next run links the existing event in, exit 0.
    unmountAll();
    const again = await runCli(['once', '--json', '-c', env.config]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(jsonOf<OnceJson>(again).ruleErrors).toEqual([]);
    expect(eventsIn(daily)).toEqual(['2025-02-01T11-00-00']);
    expect(statSync(join(daily, 'dump-2025-02-01T11-00-00.rdb')).ino).toBe(statSync(join(env.archive, 'hourly', 'dump-2025-02-01T11-00-00.rdb')).ino);
    expect(readJson<{ archived: { missingIn?: string[] } }>(env.state).archived.missingIn).toBeUndefined();
    expect(readFileSync(join(env.root, 'metrics.prom'), 'utf8')).toMatch(/^rdb_archiver_rule_last_run_failed\{\w*instance="default",rule="daily"\} 0$/m);
    const unchanged = await runCli(['once', '--json', '-c', env.config]);
    expect(jsonOf<OnceJson>(unchanged).status).toBe('unchanged');
  });

  it('the free-space check covers every filesystem of the rule folders, not only the first', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }, { name: 'small', count: 5 }] });
    mkdirSync(env.archive, { recursive: true, mode: 0o700 });
    mountTmpfs(join(env.archive, 'small'), 'size=100k');
    writeSnapshot(env.source, { seed: 'big', mtime: new Date('2025-02-01T10:00:00Z'), size: 120 * 1024 });
    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const out = jsonOf<OnceJson>(r);
    // Refused before any byte was written there: the check, not an ENOSPC half-way.
    expect(out.ruleErrors[0]!.message).toMatch(/small: not enough free space: need \d+ bytes \(snapshot \+ reserve\), \d+ available/);
    expect(names(join(env.archive, 'small'))).toEqual([]);
    expect(eventsIn(join(env.archive, 'last'))).toEqual(['2025-02-01T10-00-00']);
  });

  it('inodes exhausted by leftovers: retention cleans them up although the write failed, and the next run archives', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 1 }] });
    mkdirSync(env.archive, { recursive: true, mode: 0o700 });
    const last = join(env.archive, 'last');
    mountTmpfs(last, 'size=1m,nr_inodes=8'); // the folder itself + 7 files (on tmpfs a hard link takes one too)
    writeEvent(env.archive, ['last'], '2025-01-01T00-00-00');
    const old = new Date('2025-01-01T00:00:00Z');
    const orphans = ['2025-01-02T00-00-00', '2025-01-03T00-00-00', '2025-01-04T00-00-00', '2025-01-05T00-00-00', '2025-01-06T00-00-00'];
    for (const ts of orphans) {
      const orphan = join(last, `dump-${ts}.sha256`); // left by failed runs: a sidecar without its .rdb
      writeFileSync(orphan, `${'0'.repeat(64)}  dump-${ts}.rdb\n`, { mode: 0o600 });
      utimesSync(orphan, old, old);
    }
    writeSnapshot(env.source, { seed: 'new', mtime: new Date('2025-02-01T10:00:00Z'), size: 4096 });

    const r = await runCli(['once', '--json', '-c', env.config]);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const out = jsonOf<OnceJson>(r);
    expect(out.status).toBe('failed');
    expect(out.ruleErrors[0]).toMatchObject({ rule: 'last', stage: 'archive', kind: 'no-space' });
    expect(out.retention.last!.delete.map((d) => d.ts).sort()).toEqual(orphans);
    expect(names(last)).toEqual(['dump-2025-01-01T00-00-00.rdb', 'dump-2025-01-01T00-00-00.sha256']);

    const again = await runCli(['once', '--json', '-c', env.config]);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(eventsIn(last)).toEqual(['2025-02-01T10-00-00']);
    expect(names(last).every((n) => n.includes('2025-02-01T10-00-00'))).toBe(true);
  });
});

describe('incomplete events (a .sha256 or nodes file without its .rdb)', () => {
  it('are deleted by retention when older than the run; one just written (a run may still be adding its .rdb) is kept, with its reason', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    writeEvent(env.archive, ['last'], '2025-01-01T00-00-00');
    const dir = join(env.archive, 'last');
    const orphan = (ts: string, mtime: Date) => {
      const path = join(dir, `dump-${ts}.sha256`);
      writeFileSync(path, `${'0'.repeat(64)}  dump-${ts}.rdb\n`, { mode: 0o600 });
      utimesSync(path, mtime, mtime);
    };
    orphan('2025-01-02T00-00-00', new Date(Date.now() - 3_600_000));
    orphan('2025-01-03T00-00-00', new Date(Date.now() + 60_000)); // written "now" as far as this run can tell
    const r = await runCli(['prune', '--json', '-c', env.config]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const out = jsonOf<{ retention: OnceJson['retention'] & Record<string, { keep: Array<{ ts: string; reason: string }> }> }>(r);
    expect(out.retention.last!.delete.map((d) => d.ts)).toEqual(['2025-01-02T00-00-00']);
    expect(out.retention.last!.keep.find((k) => k.ts === '2025-01-03T00-00-00')?.reason).toMatch(/incomplete event .* modified during this run: left for a later run/);
    expect(names(dir)).toEqual(['dump-2025-01-01T00-00-00.rdb', 'dump-2025-01-01T00-00-00.sha256', 'dump-2025-01-03T00-00-00.sha256']);
  });
});
