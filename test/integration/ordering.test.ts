/**
 * Archive order through the real CLI (issue 10, items 1, 2, 3, 14, 15):
 * "latest" is the snapshot most recently taken from the source, whatever its
 * mtime says; retention never loses recent snapshots to a wrong clock, a lost
 * state file, a deleted or corrupt event, or two saves in one second.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli, type CliResult } from '../helpers/cli.js';
import { setupArchive, writeSnapshot, type ArchiveEnv, type Snapshot } from '../helpers/snapshots.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const ago = (ms: number) => new Date(Date.now() - ms);

interface OnceJson {
  status: string;
  snapshot: { ts: string; sha256: string; outcome: string } | null;
  exitCode: number;
  error?: { kind: string; message: string };
  warnings: string[];
}

async function once(env: ArchiveEnv, ...extra: string[]): Promise<CliResult & { json: OnceJson }> {
  const r = await runCli(['once', '--json', ...extra, '-c', env.config]);
  return { ...r, json: jsonOf<OnceJson>(r) };
}

const rdbs = (env: ArchiveEnv, rule: string) =>
  existsSync(join(env.archive, rule)) ? readdirSync(join(env.archive, rule)).filter((n) => n.endsWith('.rdb')).sort() : [];

/** Restores `latest` to a fresh path and returns the restored bytes. */
async function restoreLatest(env: ArchiveEnv, name: string): Promise<Buffer> {
  const to = join(env.root, name);
  const r = await runCli(['restore', 'latest', '--to', to, '--json', '-c', env.config]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return readFileSync(to);
}

async function statusJson(env: ArchiveEnv): Promise<{ lastSnapshot: { ts: string; ageSeconds: number } | null; clock: unknown }> {
  const r = await runCli(['status', '--json', '-c', env.config]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return jsonOf(r);
}

describe('archive order: "latest" is the snapshot taken last, whatever its mtime', () => {
  it('item 1: a future-stamped snapshot never becomes "latest", check warns about it, and it rotates out', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 24 }, { name: 'last', count: 2 }] });
    writeSnapshot(env.source, { seed: 'v1', mtime: ago(2 * HOUR) });
    expect((await once(env)).code).toBe(0);
    const future = new Date(Date.now() + 200 * DAY);
    writeSnapshot(env.source, { seed: 'v2', mtime: future });
    const v2 = await once(env);
    expect(v2.code, v2.stdout).toBe(0);
    const futureTs = v2.json.snapshot!.ts;
    const v3 = writeSnapshot(env.source, { seed: 'v3', mtime: ago(MIN) });
    const r3 = await once(env);
    expect(r3.code, r3.stdout).toBe(0);
    const v3Ts = r3.json.snapshot!.ts;

    expect((await restoreLatest(env, 'latest.rdb')).equals(v3.bytes)).toBe(true);
    const list = jsonOf<Record<string, Array<{ ts: string }>>>(await runCli(['list', '--json', '-c', env.config]));
    for (const rule of ['hourly', 'last']) expect(list[rule]![0]!.ts, rule).toBe(v3Ts);
    expect((await statusJson(env)).lastSnapshot!.ts).toBe(v3Ts);

    // The newest snapshot is a minute old: past --crit-age 2s, never "age 0" because of the future event.
    const check = await runCli(['check', '--warn-age', '1s', '--crit-age', '2s', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
    const warnOnly = await runCli(['check', '--warn-age', '1h', '--crit-age', '2h', '-c', env.config]);
    expect(warnOnly.code, warnOnly.stdout).toBe(1);
    expect(warnOnly.stdout).toContain(futureTs);
    expect(warnOnly.stdout).toMatch(/future/);

    // The future event is not "the newest of its folder" forever: the next snapshots push it out.
    writeSnapshot(env.source, { seed: 'v4', mtime: ago(30_000) });
    expect((await once(env)).code).toBe(0);
    for (const rule of ['hourly', 'last']) expect(rdbs(env, rule), rule).not.toContain(`dump-${futureTs}.rdb`);
  });

  it('item 1: a source mtime in the future is a WARNING naming it, not "age 0, OK"', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    const future = new Date(Date.now() + 3 * HOUR);
    writeSnapshot(env.source, { seed: 'f', mtime: future });
    expect((await once(env)).code).toBe(0);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/future/);
    expect(check.stdout).toContain(env.source);
  });

  it('item 2: after the source clock steps back, the recent snapshots all survive; the jump is in status and check', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 3 }] });
    for (const h of [3, 2, 1]) {
      writeSnapshot(env.source, { seed: `before-${h}`, mtime: ago(h * HOUR) });
      expect((await once(env)).code).toBe(0);
    }
    const after: string[] = [];
    let last: Snapshot | undefined;
    for (const h of [3, 2, 1]) {
      last = writeSnapshot(env.source, { seed: `after-${h}`, mtime: ago(DAY + h * HOUR) });
      const r = await once(env);
      expect(r.code, r.stdout).toBe(0);
      after.push(r.json.snapshot!.ts);
    }
    for (const ts of after) expect(rdbs(env, 'hourly'), `${ts} was pruned`).toContain(`dump-${ts}.rdb`);
    expect((await restoreLatest(env, 'latest.rdb')).equals(last!.bytes)).toBe(true);

    const dry = jsonOf<{ retention: Record<string, { keep: Array<{ ts: string; reason: string }> }> }>(
      await runCli(['prune', '--dry-run', '--json', '-c', env.config]));
    const reason = dry.retention.hourly!.keep.find((k) => k.ts === after[0])!.reason;
    expect(reason).toMatch(/most recently archived/);

    const status = await runCli(['status', '-c', env.config]);
    expect(status.stdout).toMatch(/clock/i);
    expect(status.stdout).toContain(after[0]!);
    const check = await runCli(['check', '--warn-age', '1d', '--crit-age', '3d', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/stepped back/);
  });

  it('item 2: a step back that retention already evened out (count 1) is still a WARNING in check, and counted in the metrics', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 1 }] });
    const prom = join(env.root, 'metrics', 'rdb.prom');
    env.writeConfig({ extra: `metrics:\n  textfile: ${prom}` });
    writeSnapshot(env.source, { seed: 'a', mtime: ago(HOUR) });
    expect((await once(env)).code).toBe(0);
    writeSnapshot(env.source, { seed: 'b', mtime: ago(DAY) });
    const r = await once(env);
    expect(r.code, r.stdout).toBe(0);
    expect(r.json.warnings.join()).toMatch(/stepped back/);
    expect(rdbs(env, 'last')).toEqual([`dump-${r.json.snapshot!.ts}.rdb`]);
    const check = await runCli(['check', '--warn-age', '2d', '--crit-age', '3d', '-c', env.config]);
    expect(check.code, check.stdout).toBe(1);
    expect(check.stdout).toMatch(/stepped back: snapshot \S+ .* before /);
    expect(readFileSync(prom, 'utf8')).toMatch(/^rdb_archiver_source_clock_jumps_total\{[^}]*\} 1$/m);
  });

  it('item 3: prune with a corrupt or missing state file keeps the current source content and the newest archived event', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 2 }] });
    for (const h of [3, 2, 1]) {
      writeSnapshot(env.source, { seed: `s${h}`, mtime: ago(h * HOUR) });
      expect((await once(env)).code).toBe(0);
    }
    // The source clock steps back: the current content has the oldest name in the folder.
    const current = writeSnapshot(env.source, { seed: 'current', mtime: ago(5 * HOUR) });
    const r = await once(env);
    expect(r.code).toBe(0);
    const ts = r.json.snapshot!.ts;

    for (const damage of ['corrupt', 'missing'] as const) {
      if (damage === 'corrupt') writeFileSync(env.state, '{"version": 1, "archived": {tru');
      else unlinkSync(env.state);
      const p = await runCli(['prune', '--json', '-c', env.config]);
      expect(p.code, p.stdout + p.stderr).toBe(0);
      expect(p.stdout + p.stderr, damage).toMatch(/state/);
      expect(rdbs(env, 'last'), damage).toContain(`dump-${ts}.rdb`);
      expect(readFileSync(join(env.archive, 'last', `dump-${ts}.rdb`)).equals(current.bytes)).toBe(true);
    }
  });

  it('item 3: without companions (an archive from an older version) and without state, the event matching the source is kept', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 2 }] });
    for (const h of [3, 2, 1]) {
      writeSnapshot(env.source, { seed: `s${h}`, mtime: ago(h * HOUR) });
      expect((await once(env)).code).toBe(0);
    }
    const current = writeSnapshot(env.source, { seed: 'current', mtime: ago(5 * HOUR) });
    const r = await once(env);
    const ts = r.json.snapshot!.ts;
    const dir = join(env.archive, 'last');
    for (const name of readdirSync(dir)) if (name.endsWith('.json')) unlinkSync(join(dir, name));
    writeFileSync(env.state, 'not json');
    const p = await runCli(['prune', '--json', '-c', env.config]);
    expect(p.code, p.stdout + p.stderr).toBe(0);
    expect(rdbs(env, 'last')).toContain(`dump-${ts}.rdb`);
    expect(readFileSync(join(dir, `dump-${ts}.rdb`)).equals(current.bytes)).toBe(true);
  });
});

describe('damaged or colliding events', () => {
  it('item 14: an archived event deleted behind our back is archived again by the next once', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 5 }, { name: 'last', count: 5 }] });
    const snap = writeSnapshot(env.source, { seed: 'a', mtime: ago(MIN) });
    const first = await once(env);
    const ts = first.json.snapshot!.ts;
    for (const rule of ['hourly', 'last']) {
      for (const name of readdirSync(join(env.archive, rule))) unlinkSync(join(env.archive, rule, name));
    }
    const r = await once(env);
    expect(r.code, r.stdout).toBe(0);
    expect(r.json.status).toBe('archived');
    for (const rule of ['hourly', 'last']) {
      expect(readFileSync(join(env.archive, rule, `dump-${ts}.rdb`)).equals(snap.bytes)).toBe(true);
      execFileSync('sha256sum', ['-c', `dump-${ts}.sha256`], { cwd: join(env.archive, rule) });
    }
    // Only the .rdb of one folder gone: completed from the other folder.
    unlinkSync(join(env.archive, 'last', `dump-${ts}.rdb`));
    const again = await once(env);
    expect(again.code, again.stdout).toBe(0);
    expect(again.json.status).toBe('archived');
    expect(readFileSync(join(env.archive, 'last', `dump-${ts}.rdb`)).equals(snap.bytes)).toBe(true);
    expect((await once(env)).json.status).toBe('unchanged');
  });

  it('item 14: once --force on an identical source replaces a corrupt event and quarantines the corrupt files', async () => {
    const env = setupArchive({ rules: [{ name: 'hourly', every: 'hour', count: 5 }, { name: 'last', count: 5 }] });
    const snap = writeSnapshot(env.source, { seed: 'a', mtime: ago(MIN) });
    const ts = (await once(env)).json.snapshot!.ts;
    const path = join(env.archive, 'last', `dump-${ts}.rdb`);
    const bad = Buffer.from(snap.bytes);
    bad[20] = bad[20]! ^ 0xff;
    writeFileSync(path, bad); // in place: every hard link of the event sees it
    expect((await runCli(['verify', '-c', env.config])).code).toBe(1);

    const r = await once(env, '--force');
    expect(r.code, r.stdout).toBe(0);
    expect(r.json.status).toBe('archived');
    for (const rule of ['hourly', 'last']) {
      expect(readFileSync(join(env.archive, rule, `dump-${ts}.rdb`)).equals(snap.bytes), rule).toBe(true);
    }
    expect((await runCli(['verify', '-c', env.config])).code).toBe(0);
    const quarantine = join(env.archive, '.quarantine');
    expect(statSync(quarantine).mode & 0o777).toBe(0o700);
    const kept = execFileSync('find', [quarantine, '-type', 'f', '-name', `dump-${ts}.rdb`]).toString().trim().split('\n').filter(Boolean);
    expect(kept.length).toBeGreaterThan(0);
    expect(readFileSync(kept[0]!).equals(bad)).toBe(true);
    // The quarantine is not a rule folder: list, verify and retention ignore it.
    const list = jsonOf<Record<string, unknown>>(await runCli(['list', '--json', '-c', env.config]));
    expect(Object.keys(list).sort()).toEqual(['hourly', 'last']);
  });

  it('item 14: a .quarantine that is a symlink out of the archive is refused (74): nothing moved there, its mode untouched', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    const snap = writeSnapshot(env.source, { seed: 'a', mtime: ago(MIN) });
    const ts = (await once(env)).json.snapshot!.ts;
    const path = join(env.archive, 'last', `dump-${ts}.rdb`);
    const bad = Buffer.from(snap.bytes);
    bad[20] = bad[20]! ^ 0xff;
    writeFileSync(path, bad);
    const outside = join(env.root, 'outside');
    mkdirSync(outside, { mode: 0o755 });
    chmodSync(outside, 0o755);
    symlinkSync(outside, join(env.archive, '.quarantine'));

    const r = await once(env, '--force');
    expect(r.code, r.stdout).toBe(74);
    expect(r.json.error?.message).toContain('.quarantine');
    expect(statSync(outside).mode & 0o777).toBe(0o755);
    expect(readdirSync(outside)).toEqual([]);
    // The corrupt event stays where it was (not replaced, not moved): verify still names it.
    expect(readFileSync(path).equals(bad)).toBe(true);
    expect((await runCli(['verify', '-c', env.config])).code).toBe(1);
  });

  it('a planted record with the highest sequence number a name can hold stops archiving loudly (73) instead of writing unreadable names', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 5 }] });
    const first = writeSnapshot(env.source, { seed: 'a', mtime: ago(3 * HOUR) });
    const ts = (await once(env)).json.snapshot!.ts;
    const record = readdirSync(join(env.archive, 'last')).find((n) => n.endsWith('.json'))!;
    const planted = join(env.archive, 'last', `dump-${ts}.seq999999999999999.json`);
    renameSync(join(env.archive, 'last', record), planted);

    writeSnapshot(env.source, { seed: 'b', mtime: ago(HOUR) });
    const r = await once(env);
    expect(r.code, r.stdout).toBe(73);
    expect(r.json.error?.message).toContain(planted);
    // Nothing with an unreadable (16-digit) name was written; the old event is intact and still latest.
    expect(readdirSync(join(env.archive, 'last')).filter((n) => /seq\d{16,}/.test(n))).toEqual([]);
    expect((await restoreLatest(env, 'latest.rdb')).equals(first.bytes)).toBe(true);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
  });

  it('item 15: two saves in the same second are both archived; the second is "latest"; retention goes on', async () => {
    const env = setupArchive({ rules: [{ name: 'last', count: 2 }, { name: 'all', count: 5 }] });
    const second = new Date(Math.floor((Date.now() - HOUR) / 1000) * 1000);
    const a = writeSnapshot(env.source, { seed: 'first', mtime: new Date(second.getTime() + 100) });
    const ra = await once(env);
    expect(ra.code).toBe(0);
    const ts = ra.json.snapshot!.ts;
    const b = writeSnapshot(env.source, { seed: 'second', mtime: new Date(second.getTime() + 900) });
    const rb = await once(env);
    expect(rb.code, rb.stdout).toBe(0);
    expect(rb.json.snapshot!.ts).toBe(`${ts}_1`);
    for (const rule of ['last', 'all']) {
      expect(readFileSync(join(env.archive, rule, `dump-${ts}.rdb`)).equals(a.bytes)).toBe(true);
      expect(readFileSync(join(env.archive, rule, `dump-${ts}_1.rdb`)).equals(b.bytes)).toBe(true);
      execFileSync('sha256sum', ['-c', `dump-${ts}_1.sha256`], { cwd: join(env.archive, rule) });
    }
    expect((await restoreLatest(env, 'latest.rdb')).equals(b.bytes)).toBe(true);
    // Idle server: every later run is fine, not 73 forever.
    for (let i = 0; i < 2; i += 1) {
      const idle = await once(env);
      expect(idle.code, idle.stdout).toBe(0);
      expect(idle.json.status).toBe('unchanged');
    }
    expect((await runCli(['verify', '-c', env.config])).code).toBe(0);
    // A lost state does not archive the second save a third time.
    unlinkSync(env.state);
    const lost = await once(env);
    expect(lost.code, lost.stdout).toBe(0);
    expect(lost.json.snapshot!.ts).toBe(`${ts}_1`);
    expect(lost.json.snapshot!.outcome).toBe('already-archived');
    // Retention continues: a later snapshot pushes the oldest out of "last" (count 2).
    writeSnapshot(env.source, { seed: 'third', mtime: new Date(second.getTime() + 5000) });
    expect((await once(env)).code).toBe(0);
    expect(rdbs(env, 'last')).not.toContain(`dump-${ts}.rdb`);
    expect(rdbs(env, 'last')).toContain(`dump-${ts}_1.rdb`);
  });
});
