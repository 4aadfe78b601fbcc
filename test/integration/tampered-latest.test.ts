/**
 * "latest" against files changed by hand in the archive: a deleted archive
 * record, an .rdb and sidecar replaced together, a planted record, a rule
 * folder replaced by a symlink. `restore latest` never returns older or other
 * data silently; `list`, `check`, `status` and the metrics say what happened.
 */
import { cpSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { jsonOf, runCli } from '../helpers/cli.js';
import { setupArchive, writeSnapshot, type ArchiveEnv } from '../helpers/snapshots.js';
import type { RestoreReport } from '../../src/commands/restore.js';

type RestoreJson = Omit<RestoreReport, 'instance'>;

// Recent, whole seconds (check's age thresholds), a minute apart.
const base = Math.floor(Date.now() / 1000) * 1000 - 10 * 60_000;
const T1 = new Date(base);
const T2 = new Date(base + 60_000);
const T3 = new Date(base + 120_000);
const tsOf = (d: Date) => d.toISOString().slice(0, 19).replace(/:/g, '-');
const TS1 = tsOf(T1);
const TS2 = tsOf(T2);
const TS3 = tsOf(T3);

/** Two snapshots archived by `once` (seq 1 and 2) into rules a and b, with a metrics textfile. */
async function twoEvents(): Promise<{ env: ArchiveEnv; prom: string; out: string; second: ReturnType<typeof writeSnapshot> }> {
  const env = setupArchive({ rules: [{ name: 'a', count: 5 }, { name: 'b', count: 5 }] });
  const prom = join(env.root, 'rdb.prom');
  env.writeConfig({ extra: `metrics:\n  textfile: ${prom}` });
  writeSnapshot(env.source, { seed: 'one', mtime: T1 });
  expect((await runCli(['once', '-c', env.config])).code).toBe(0);
  const second = writeSnapshot(env.source, { seed: 'two', mtime: T2 });
  expect((await runCli(['once', '-c', env.config])).code).toBe(0);
  const out = join(env.root, 'out');
  mkdirSync(out);
  return { env, prom, out, second };
}

function restoreLatest(env: ArchiveEnv, to: string, extra: string[] = []) {
  return runCli(['restore', 'latest', '--to', to, '--json', '-c', env.config, ...extra]);
}

const metric = (prom: string, name: string) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(readFileSync(prom, 'utf8'))?.[1]);

describe('the newest event\'s archive record deleted by hand', () => {
  it('restore latest refuses (66, nothing written) instead of giving the previous event; list, check, status and the metrics say so; once repairs it', async () => {
    const { env, prom, out, second } = await twoEvents();
    for (const rule of ['a', 'b']) unlinkSync(join(env.archive, rule, `dump-${TS2}.seq2.json`));

    const refused = await restoreLatest(env, out);
    expect(refused.code, refused.stdout + refused.stderr).toBe(66);
    const error = jsonOf<RestoreJson>(refused).error!;
    expect(error.kind).toBe('latest-missing');
    expect(error.message).toContain(`refusing to restore older data as "latest": the event archived last, ${TS2} (seq 2), its archive record dump-${TS2}.seq2.json is missing`);
    expect(error.message).toContain(`the newest event left, ${TS1} (seq 1), was archived before it`);
    expect(readdirSync(out)).toEqual([]);

    const list = await runCli(['list', '-c', env.config]);
    expect(list.stdout).toContain(`the event archived last, ${TS2} (seq 2), its archive record dump-${TS2}.seq2.json is missing`);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(2);
    expect(check.stdout).toMatch(/^RDB-ARCHIVER CRITICAL/);
    expect(check.stdout).toContain(`the event archived last, ${TS2} (seq 2), its archive record dump-${TS2}.seq2.json is missing`);
    const status = jsonOf<{ lostLatest: string | null }>(await runCli(['status', '--json', '-c', env.config]));
    expect(status.lostLatest).toContain('is missing');
    expect((await runCli(['prune', '-c', env.config])).code).toBe(0); // writes the metrics textfile
    expect(metric(prom, 'rdb_archiver_last_archived_missing')).toBe(1);

    // Naming an event, or --fallback, is an explicit choice: it restores the older event.
    const fallback = await restoreLatest(env, out, ['--fallback']);
    expect(fallback.code, fallback.stderr).toBe(0);
    expect(jsonOf<RestoreJson>(fallback).ts).toBe(TS1);
    expect(jsonOf<RestoreJson>(fallback).warnings.join('\n')).toContain('--fallback: the event archived last');
    rmSync(join(out, 'dump.rdb'));
    const named = await runCli(['restore', TS1, '--to', out, '--json', '-c', env.config]);
    expect(named.code, named.stderr).toBe(0);
    rmSync(join(out, 'dump.rdb'));

    // The next run notices the record is gone and archives the source again: a new record, latest again.
    const repaired = await runCli(['once', '--json', '-c', env.config]);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(repaired.stdout).toContain('is missing');
    // (a new record with the next seq; the event without one ranks below, so it may come under the next ordinal name)
    expect(readdirSync(join(env.archive, 'a')).filter((n) => n.startsWith(`dump-${TS2}`) && n.endsWith('.seq3.json'))).toHaveLength(1);
    const restored = await restoreLatest(env, out);
    expect(restored.code, restored.stderr).toBe(0);
    expect(jsonOf<RestoreJson>(restored).sha256).toBe(second.sha256);
    expect(jsonOf<RestoreJson>(restored).ts).toMatch(new RegExp(`^${TS2}(_1)?$`));
    expect((await runCli(['check', '-c', env.config])).code).toBe(0);
    expect(metric(prom, 'rdb_archiver_last_archived_missing')).toBe(0);
  });

  it('the newest event\'s .rdb deleted by hand: the same refusal, naming the .rdb', async () => {
    const { env, out } = await twoEvents();
    for (const rule of ['a', 'b']) unlinkSync(join(env.archive, rule, `dump-${TS2}.rdb`));
    const refused = await restoreLatest(env, out);
    expect(refused.code).toBe(66);
    expect(jsonOf<RestoreJson>(refused).error!.message).toContain(`its .rdb (dump-${TS2}.rdb) is missing`);
    expect(readdirSync(out)).toEqual([]);
  });
});

describe('restore checks the archive record\'s sha256, as verify does', () => {
  it('an .rdb and its sidecar replaced together by other valid content: refused (65; latest: 79), nothing written', async () => {
    const { env, out } = await twoEvents();
    // Other content that passes the RDB check, with a sidecar that matches it (hard links: both folders change).
    const other = join(env.root, 'other.rdb');
    const planted = writeSnapshot(other, { seed: 'planted', mtime: T2 });
    for (const rule of ['a', 'b']) {
      const dir = join(env.archive, rule);
      unlinkSync(join(dir, `dump-${TS2}.rdb`));
      cpSync(other, join(dir, `dump-${TS2}.rdb`));
      unlinkSync(join(dir, `dump-${TS2}.sha256`));
      writeFileSync(join(dir, `dump-${TS2}.sha256`), `${planted.sha256}  dump-${TS2}.rdb\n`, { mode: 0o600 });
    }
    const named = await runCli(['restore', TS2, '--to', out, '--json', '-c', env.config]);
    expect(named.code, named.stdout).toBe(65);
    expect(jsonOf<RestoreJson>(named).error!.message).toContain(`sha256 mismatch: dump-${TS2}.rdb: dump-${TS2}.seq2.json says`);
    // latest: the newest event is bad, and the message names the newest good one (exit 79, see restore --fallback).
    const latest = await restoreLatest(env, out);
    expect(latest.code, latest.stdout).toBe(79);
    expect(jsonOf<RestoreJson>(latest).error!.message).toContain(`sha256 mismatch: dump-${TS2}.rdb: dump-${TS2}.seq2.json says`);
    expect(readdirSync(out)).toEqual([]);
  });
});

describe('records rdb-archiver did not write are not trusted', () => {
  it('a planted record for the next snapshot (matching sha256, low seq) does not rank it below older events', async () => {
    const { env, out } = await twoEvents();
    const third = writeSnapshot(env.source, { seed: 'three', mtime: T3 });
    const record = {
      format: 1, seq: 1, ts: TS3, archivedAt: T3.toISOString(), sha256: third.sha256, bytes: third.length, rdbVersion: 11,
      source: { path: env.source, mtime: T3.toISOString(), mtimeNs: '0', size: third.length, dev: '0', ino: '0' }, nodes: null,
    };
    writeFileSync(join(env.archive, 'a', `dump-${TS3}.seq1.json`), JSON.stringify(record), { mode: 0o600 });

    const once = await runCli(['once', '--json', '-c', env.config]);
    expect(once.code, once.stderr).toBe(0);
    const r = await restoreLatest(env, out);
    expect(r.code, r.stdout).toBe(0);
    expect(jsonOf<RestoreJson>(r).sha256).toBe(third.sha256);
    // The snapshot gets the next seq (never the planted one, never a number handed out before).
    expect(readdirSync(join(env.archive, 'b')).filter((n) => n.startsWith(`dump-${TS3}`) && n.endsWith('.seq3.json'))).toHaveLength(1);
    expect(readdirSync(join(env.archive, 'b')).filter((n) => n.endsWith('.seq1.json') && n.startsWith(`dump-${TS3}`))).toEqual([]);
    const check = await runCli(['check', '-c', env.config]);
    expect(check.code, check.stdout).toBe(0);
  });

  it('a rule folder replaced by a symlink is skipped and reported, never followed; latest comes from a safe folder', async () => {
    const { env, out, second } = await twoEvents();
    const elsewhere = join(env.root, 'elsewhere');
    renameSync(join(env.archive, 'b'), elsewhere);
    symlinkSync(elsewhere, join(env.archive, 'b'));

    const r = await restoreLatest(env, out);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const report = jsonOf<RestoreJson>(r);
    expect(report).toMatchObject({ ts: TS2, rule: 'a', sha256: second.sha256 });
    expect(report.warnings.join('\n')).toMatch(/rule folder b skipped: .*symlink/);

    // Only the symlinked folder, or every folder unsafe: nothing to restore from (74, as before).
    rmSync(join(out, 'dump.rdb'));
    const onlyB = await restoreLatest(env, out, ['--rule', 'b']);
    expect(onlyB.code).toBe(74);
    expect(readdirSync(out)).toEqual([]);
  });
});
